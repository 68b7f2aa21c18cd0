// The native binding on its own, and how the addon behaves inside a Node process.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Database } from 's3db.js/lite';
import { ReplicationEngine, checkConfig } from '../index.js';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const valid = { replicators: [{ driver: 's3db', resources: ['users'], config: { connectionString: 'memory://x' } }] };

test('checkConfig: null when valid, the option path, reason and hint when not', () => {
  assert.equal(checkConfig(JSON.stringify(valid)), null);
  const problem = checkConfig(JSON.stringify({ ...valid, concurrency: 0 }));
  assert.equal(problem.path, 'concurrency');
  assert.match(problem.reason, /out of range/);
  assert.match(problem.hint, /from 1 to 256/);
  assert.match(checkConfig('{not json').reason, /key must be a string|expected/);
});

function engine(delivered = []) {
  const deliver = async (json) => {
    delivered.push(...JSON.parse(json).changes);
    return null;
  };
  return new ReplicationEngine(JSON.stringify(valid), async () => '[]', deliver, () => {});
}

test('push → flush → stop on the native engine, with stable error codes', async () => {
  const delivered = [];
  const e = engine(delivered);
  assert.equal(e.push('users', 'inserted', JSON.stringify({ id: 'a', name: 'x', _internal: 1, $meta: 2 })), false);
  e.push('users', 'update', JSON.stringify({ id: 'a', name: 'y', $before: { id: 'a', name: 'x' } }));
  e.push('other', 'inserted', JSON.stringify({ id: 'b' }));
  await e.flush();
  assert.deepEqual(delivered.map((c) => [c.op, c.id, c.data.name]), [['inserted', 'a', 'x'], ['updated', 'a', 'y']]);
  assert.deepEqual(delivered[0].data, { id: 'a', name: 'x' });
  assert.deepEqual(delivered[1].before, { id: 'a', name: 'x' });
  assert.equal(e.pending(), 0);
  assert.throws(() => e.push('users', 'upserted', '{}'), (err) => err.code === 'ERR_CONFIG' && /unknown operation/.test(err.message));
  const report = await e.stop();
  assert.deepEqual(report, { drained: true, abandoned: 0 });
  assert.throws(() => e.push('users', 'inserted', '{"id":"c"}'), (err) => err.code === 'ERR_STOPPED');
  assert.throws(() => e.setEnabled('nope', true), (err) => err.code === 'ERR_NOT_FOUND' && /Replicator not found: nope/.test(err.message));
});

test('a bridge that throws synchronously fails the batch, never the process', async () => {
  const outcomes = [];
  const e = new ReplicationEngine(
    JSON.stringify({ ...valid, maxRetries: 1, circuitBreaker: false }),
    async () => '[]',
    () => {
      throw new Error('bridge exploded');
    },
    (json) => {
      const m = JSON.parse(json);
      if (m.outcomes) outcomes.push(...m.outcomes);
    },
  );
  e.push('users', 'inserted', JSON.stringify({ id: 'z' }));
  await e.flush();
  assert.equal(outcomes.length, 1);
  assert.equal(outcomes[0].status, 'failed');
  assert.match(outcomes[0].error, /bridge exploded/);
  await e.stop();
});

function runNode(script, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child did not exit within 20 s:\n${out}`));
    }, 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

test('a process that writes and returns without stopping the plugin exits by itself after delivering', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 's3db-replicator-exit-'));
  try {
    const script = `
      import { Database } from 's3db.js/lite';
      import { ReplicatorPlugin } from './plugin.js';
      const db = new Database({ connectionString: 'memory://exit-test/x', logLevel: 'silent' });
      await db.connect();
      await db.usePlugin(new ReplicatorPlugin({ replicators: [{ driver: 's3db', resources: ['users'], config: { connectionString: 'file://${dir}' } }] }));
      const users = await db.createResource({ name: 'users', attributes: { name: 'string' } });
      for (let i = 0; i < 200; i++) await users.insert({ id: 'u' + i, name: 'n' + i });
      console.log('wrote');
    `;
    const started = Date.now();
    const { code, out } = await runNode(script, root);
    assert.equal(code, 0, out);
    assert.match(out, /wrote/);
    assert.ok(Date.now() - started < 20_000);
    const check = new Database({ connectionString: `file://${dir}`, logLevel: 'silent' });
    await check.connect();
    assert.equal(await check.resources.users.count(), 200, 'every accepted change was delivered before the process exited');
    await check.disconnect();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a process whose last change is filtered out by actions still exits by itself', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 's3db-replicator-exit-filtered-'));
  try {
    const script = `
      import { Database } from 's3db.js/lite';
      import { ReplicatorPlugin } from './plugin.js';
      const db = new Database({ connectionString: 'memory://exit-filtered/x', logLevel: 'silent' });
      await db.connect();
      const plugin = new ReplicatorPlugin({ replicators: [{ driver: 's3db', resources: { users: { resource: 'users', actions: ['inserted'] } }, config: { connectionString: 'file://${dir}' } }] });
      await db.usePlugin(plugin);
      const users = await db.createResource({ name: 'users', attributes: { name: 'string' } });
      await users.insert({ id: 'u1', name: 'a' });
      await plugin.flush();
      // The last change goes nowhere: no outcome will ever report it.
      await users.update('u1', { name: 'b' });
      console.log('wrote');
    `;
    const { code, out } = await runNode(script, root);
    assert.equal(code, 0, out);
    assert.match(out, /wrote/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
