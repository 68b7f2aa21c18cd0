// The s3db driver's destination writer against real file:// s3db.js databases.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { Database } from 's3db.js/lite';

import { ReplicatorPlugin } from '../plugin.js';
import { collect, memoryDb, usersResource } from './helpers/db.mjs';

test('several destination resources created at once on one database are all kept in its metadata (20 runs)', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 's3db-dest-race-'));
  try {
    const runs = 20;
    for (let run = 0; run < runs; run++) {
      const backup = `file://${path.join(dir, `backup-${run}`)}`;
      const db = await memoryDb('race');
      const plugin = new ReplicatorPlugin({
        replicators: [{
          driver: 's3db',
          // Syntax 5: one change fans out to three resources that do not exist yet.
          resources: { users: ['people', { resource: 'audit', transform: (d) => ({ id: d.id, seen: true }) }, { resource: 'names', transform: (d) => ({ id: d.id, name: d.name }) }] },
          config: { connectionString: backup },
        }],
      });
      const events = collect(plugin, 'plg:replicator:error');
      await db.usePlugin(plugin);
      const users = await usersResource(db);
      await Promise.all([users.insert({ id: 'a', name: 'Ana' }), users.insert({ id: 'b', name: 'Bea' })]);
      await plugin.flush();
      await plugin.stop();
      await db.disconnect();
      assert.deepEqual(events['plg:replicator:error'], [], `run ${run}: no replication errors`);

      // A new connection sees only what the destination's s3db.json lists.
      const reopened = new Database({ connectionString: backup, logLevel: 'silent' });
      await reopened.connect();
      try {
        assert.deepEqual(Object.keys(reopened.resources).sort(), ['audit', 'names', 'people'], `run ${run}: every destination resource is listed in s3db.json`);
        assert.equal((await reopened.resources.people.get('a')).name, 'Ana');
        assert.equal((await reopened.resources.audit.get('b')).seen, true);
      } finally {
        await reopened.disconnect();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
