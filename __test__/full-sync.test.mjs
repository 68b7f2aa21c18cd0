// Full sync (syncAllData): batched, concurrent, resumable, alongside live changes, and the
// `s3db-replicator sync` command line. Real s3db.js databases (memory:// and file://).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Database } from 's3db.js/lite';

import { ReplicatorPlugin, ReplicatorError } from '../plugin.js';
import { collect, memoryDb, usersResource, visible } from './helpers/db.mjs';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const CLI = join(ROOT, 'bin', 's3db-replicator.mjs');
const CHILD = join(ROOT, '__test__', 'fixtures', 'sync-child.mjs');

async function seed(users, count, prefix = 'r') {
  for (let i = 0; i < count; i++) await users.insert({ id: `${prefix}${String(i).padStart(4, '0')}`, name: `name ${i}`, n: i, tag: i % 2 ? 'odd' : 'even' });
}

async function fileDb(dir) {
  const db = new Database({ connectionString: `file://${dir}`, logLevel: 'silent' });
  await db.connect();
  return db;
}

/** Every record of `resource`, by id, as the user sees it. */
async function snapshot(resource) {
  const all = await resource.getAll();
  return new Map(all.map((r) => [r.id, visible(r)]));
}

async function assertSameRecords(sourceResource, targetResource) {
  const [src, dst] = await Promise.all([snapshot(sourceResource), snapshot(targetResource)]);
  assert.equal(dst.size, src.size, 'record count');
  for (const [id, record] of src) assert.deepEqual(dst.get(id), record, `record ${id}`);
}

async function tempDir() {
  return mkdtemp(join(tmpdir(), 's3db-full-sync-'));
}

/** Runs node with args; resolves with { code, signal, stdout, stderr }. */
function run(args, { cwd = ROOT, onStdout } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      stdout += chunk;
      onStdout?.(stdout, child);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

test('syncAllData copies every record with its data, in concurrent pages, with progress events', async () => {
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  const users = await usersResource(source);
  await seed(users, 237);
  const plugin = new ReplicatorPlugin({ replicators: [{ id: 'copy', driver: 's3db', client: target, resources: { users: 'people' } }] });
  await source.usePlugin(plugin);
  const events = collect(plugin, 'plg:replicator:sync-progress', 'plg:replicator:sync-resource', 'plg:replicator:sync-completed');
  const viaCallback = [];
  try {
    const result = await plugin.syncAllData('copy', { batchSize: 20, concurrency: 3, onProgress: (p) => viaCallback.push(p) });
    assert.equal(result.replicatorId, 'copy');
    assert.equal(result.total, 237);
    assert.equal(result.synced, 237);
    assert.equal(result.skipped, 0);
    assert.equal(result.superseded, 0);
    assert.equal(result.failed, 0);
    assert.deepEqual(result.errors, []);
    assert.equal(result.resumed, false);
    assert.equal(typeof result.durationMs, 'number');
    await assertSameRecords(users, target.resources.people);

    const progress = events['plg:replicator:sync-progress'];
    assert.ok(progress.length >= 2, `a first and a final progress event (got ${progress.length})`);
    assert.deepEqual(viaCallback, progress, 'onProgress receives the same progress as the event');
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i].done >= progress[i - 1].done, 'done never goes back');
    assert.ok(progress[0].done < 237);
    const last = progress.at(-1);
    assert.equal(last.done, 237);
    assert.equal(last.total, 237);
    assert.equal(last.etaMs, 0);
    assert.equal(last.replicatorId, 'copy');
    assert.equal(last.resourceName, 'users');
    assert.ok(last.rate > 0 && Number.isFinite(last.rate));
    assert.ok(last.elapsedMs >= 0);
    assert.deepEqual(events['plg:replicator:sync-resource'], [{ resourceName: 'users', replicatorId: 'copy' }]);
    const [completed] = events['plg:replicator:sync-completed'];
    assert.equal(completed.total, 237);
    assert.equal(completed.errors, 0);
    assert.equal(completed.replicatorId, 'copy');
  } finally {
    await source.disconnect();
    await target.disconnect();
  }
});

test('a second run refreshes rows that drifted and never fails on existing rows', async () => {
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  const users = await usersResource(source);
  await seed(users, 60);
  const plugin = new ReplicatorPlugin({ replicators: [{ id: 'copy', driver: 's3db', client: target, resources: ['users'] }] });
  await source.usePlugin(plugin);
  try {
    assert.equal((await plugin.syncAllData('copy')).synced, 60);
    const dst = target.resources.users;
    // Drift: the destination was edited and lost a row; the source changed while the
    // replicator was disabled (so live replication missed it).
    await dst.update('r0003', { name: 'tampered' });
    await dst.delete('r0004');
    await plugin.disableReplicator('copy');
    await users.update('r0005', { name: 'changed while disabled' });
    await plugin.flush();
    await plugin.enableReplicator('copy');
    assert.equal(visible(await dst.get('r0005')).name, 'name 5');

    const again = await plugin.syncAllData('copy', { batchSize: 7 });
    assert.equal(again.total, 60);
    assert.equal(again.synced, 60);
    assert.deepEqual(again.errors, []);
    await assertSameRecords(users, dst);
    assert.equal(visible(await dst.get('r0005')).name, 'changed while disabled');
  } finally {
    await source.disconnect();
    await target.disconnect();
  }
});

test('unknown replicator ids and invalid options throw ReplicatorErrors', async () => {
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  await usersResource(source);
  const plugin = new ReplicatorPlugin({ replicators: [{ id: 'copy', driver: 's3db', client: target, resources: ['users'] }] });
  await source.usePlugin(plugin);
  try {
    await assert.rejects(plugin.syncAllData('nonexistent-id'), (e) => {
      assert.ok(e instanceof ReplicatorError);
      assert.equal(e.message, 'Replicator not found: nonexistent-id');
      assert.equal(e.code, 'ERR_NOT_FOUND');
      assert.deepEqual(e.context.availableReplicators, ['copy']);
      return true;
    });
    const cases = [
      [{ batchSize: 0 }, 'batchSize'],
      [{ batchSize: 2.5 }, 'batchSize'],
      [{ concurrency: 'x' }, 'concurrency'],
      [{ concurrency: 0 }, 'concurrency'],
      [{ resume: 'yes' }, 'resume'],
      [{ onProgress: 5 }, 'onProgress'],
      [{ batchsize: 10 }, 'batchsize'],
      ['fast', 'options'],
    ];
    for (const [options, option] of cases) {
      await assert.rejects(plugin.syncAllData('copy', options), (e) => {
        assert.ok(e instanceof ReplicatorError, JSON.stringify(options));
        assert.equal(e.code, 'ERR_CONFIG');
        assert.equal(e.context.option, option);
        assert.match(e.message, /^Invalid syncAllData option: /);
        assert.match(e.description, /How to fix/);
        return true;
      });
    }
    const empty = await plugin.syncAllData('copy');
    assert.equal(empty.total, 0);
    assert.equal(empty.synced, 0);
    assert.equal(plugin._holding, false, 'a sync with nothing to push does not hold the process open');
    const first = plugin.syncAllData('copy');
    await assert.rejects(plugin.syncAllData('copy'), (e) => e.code === 'ERR_BUSY' && /already running/.test(e.message));
    assert.equal((await first).total, 0);
  } finally {
    await source.disconnect();
    await target.disconnect();
  }
});

test('a live update made after a page was read is not overwritten by the older snapshot', async () => {
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  const users = await usersResource(source);
  await seed(users, 30);
  const plugin = new ReplicatorPlugin({ replicators: [{ id: 'copy', driver: 's3db', client: target, resources: ['users'] }] });
  await source.usePlugin(plugin);
  // The first page read returns its records, THEN (before the sync pushes them) the app
  // updates one of them and inserts a new one: the page now holds a stale copy of r0000.
  let reads = 0;
  users.addHook('afterGetMany', async (records) => {
    if (++reads === 1) {
      await users.update('r0000', { name: 'live update' });
      await users.insert({ id: 'zz-live', name: 'live insert' });
      await new Promise((resolve) => setImmediate(resolve)); // s3db.js emits change events on the next tick
    }
    return records;
  });
  try {
    const result = await plugin.syncAllData('copy', { batchSize: 10, concurrency: 1 });
    assert.equal(reads, 3);
    assert.equal(result.total, 30, 'ids listed before the live insert');
    assert.equal(result.superseded, 1, 'the stale snapshot of r0000 was dropped');
    assert.equal(result.synced, 29);
    assert.equal(result.failed, 0);
    await plugin.flush();
    const dst = target.resources.users;
    assert.equal(visible(await dst.get('r0000')).name, 'live update');
    assert.equal(visible(await dst.get('zz-live')).name, 'live insert', 'live changes keep flowing during a sync');
    await assertSameRecords(users, dst);
  } finally {
    await source.disconnect();
    await target.disconnect();
  }
});

test('a sync killed with SIGKILL resumes from its checkpoint in a new process', async () => {
  const dir = await tempDir();
  try {
    const srcDir = join(dir, 'src');
    const dstDir = join(dir, 'dst');
    const outboxDir = join(dir, 'outbox');
    const seeding = await fileDb(srcDir);
    await seed(await usersResource(seeding), 100);
    await seeding.disconnect();
    const created = await fileDb(dstDir);
    await usersResource(created);
    await created.disconnect();

    // The child syncs in pages of 10 and hangs reading page 6 (once pages 1-5 are checkpointed).
    const child = await run([CHILD, `file://${srcDir}`, `file://${dstDir}`, outboxDir, '6', '10'], {
      onStdout: (out, proc) => {
        if (out.includes('stalled')) proc.kill('SIGKILL');
      },
    });
    assert.equal(child.signal, 'SIGKILL', `the child was killed midway (stdout: ${child.stdout}; stderr: ${child.stderr})`);
    assert.ok(!child.stdout.includes('finished'));
    const checkpointFile = join(outboxDir, 'sync', 'copy.json');
    const checkpoint = JSON.parse(await readFile(checkpointFile, 'utf8'));
    assert.equal(checkpoint.done, 50);
    assert.equal(checkpoint.lastId, 'r0049');
    assert.equal(checkpoint.resourceIndex, 0);
    assert.deepEqual(checkpoint.resources, ['users']);

    const source = await fileDb(srcDir);
    const target = await fileDb(dstDir);
    const plugin = new ReplicatorPlugin({ outbox: { dir: outboxDir }, replicators: [{ id: 'copy', driver: 's3db', client: target, resources: ['users'] }] });
    await source.usePlugin(plugin);
    const progress = collect(plugin, 'plg:replicator:sync-progress');
    try {
      assert.equal(plugin._engine.outbox().mode, 'disk');
      const result = await plugin.syncAllData('copy', { batchSize: 10 });
      assert.equal(result.resumed, true);
      assert.equal(result.resumedFrom, 50);
      assert.equal(result.total, 100);
      const pushed = result.synced + result.skipped + result.superseded + result.failed;
      assert.equal(pushed, 50, 'only the records after the checkpoint were pushed again');
      assert.equal(result.failed, 0);
      assert.equal(progress['plg:replicator:sync-progress'][0].done, 50, 'progress continues from the checkpoint');
      assert.equal(progress['plg:replicator:sync-progress'].at(-1).done, 100);
      assert.equal(existsSync(checkpointFile), false, 'the checkpoint is removed when the sync completes');
      await plugin.flush();
      await assertSameRecords(source.resources.users, target.resources.users);
    } finally {
      await source.disconnect();
      await target.disconnect();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('resume: a saved checkpoint is used by default, ignored with resume: false or when unreadable', async () => {
  const dir = await tempDir();
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  try {
    const users = await usersResource(source);
    await seed(users, 40);
    const outboxDir = join(dir, 'outbox');
    const plugin = new ReplicatorPlugin({
      logLevel: 'silent', // the ignored checkpoints below are logged as warnings
      outbox: { dir: outboxDir },
      replicators: [{ id: 'copy', driver: 's3db', client: target, resources: ['users'] }],
    });
    await source.usePlugin(plugin);
    const file = join(outboxDir, 'sync', 'copy.json');
    const write = async (content) => {
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
    };
    const checkpoint = {
      version: 1, replicatorId: 'copy', resources: ['users'], resourceIndex: 0, lastId: 'r0029', done: 30,
      startedAt: new Date().toISOString(), updatedAt: new Date().toISOString(),
    };

    await write(checkpoint);
    const resumed = await plugin.syncAllData('copy', { batchSize: 4 });
    assert.equal(resumed.resumed, true);
    assert.equal(resumed.total, 40);
    assert.equal(resumed.synced, 10);
    assert.equal(await target.resources.users.count(), 10, 'only r0030..r0039 were pushed');
    assert.ok(await target.resources.users.exists('r0030'));
    assert.equal(await target.resources.users.exists('r0029'), false);
    assert.equal(existsSync(file), false);

    await write(checkpoint);
    const fresh = await plugin.syncAllData('copy', { resume: false });
    assert.equal(fresh.resumed, false);
    assert.equal(fresh.synced, 40);
    assert.equal(existsSync(file), false);

    await write('{"version":1,"replicatorId":"co'); // a write cut short
    const afterGarbage = await plugin.syncAllData('copy');
    assert.equal(afterGarbage.resumed, false);
    assert.equal(afterGarbage.synced, 40);

    await write({ ...checkpoint, resources: ['users', 'orders'] }); // the replicator changed
    assert.equal((await plugin.syncAllData('copy')).resumed, false);
    await assertSameRecords(users, target.resources.users);
  } finally {
    await source.disconnect();
    await target.disconnect();
    await rm(dir, { recursive: true, force: true });
  }
});

test('records a transform rejects are counted and listed, not thrown', async () => {
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  const users = await usersResource(source);
  await seed(users, 40);
  const plugin = new ReplicatorPlugin({
    replicators: [{
      id: 'copy', driver: 's3db', client: target,
      resources: { users: (d) => (d.n % 10 === 3 ? Promise.reject(new Error(`no ${d.id}`)) : d.n % 10 === 7 ? null : d) },
    }],
  });
  await source.usePlugin(plugin);
  try {
    const result = await plugin.syncAllData('copy', { batchSize: 9, concurrency: 2 });
    assert.equal(result.total, 40);
    assert.equal(result.failed, 4);
    assert.equal(result.skipped, 4, 'a transform returning null skips the record');
    assert.equal(result.synced, 32);
    assert.deepEqual(result.errors.map((e) => e.id).sort(), ['r0003', 'r0013', 'r0023', 'r0033']);
    for (const e of result.errors) {
      assert.equal(e.resourceName, 'users');
      assert.equal(e.code, 'ERR_TRANSFORM');
      assert.match(e.error, new RegExp(`no ${e.id}`));
    }
    assert.equal(await target.resources.users.count(), 32);
  } finally {
    await source.disconnect();
    await target.disconnect();
  }
});

test('a source read that keeps failing rejects with a ReplicatorError and keeps the checkpoint to resume from', async () => {
  const dir = await tempDir();
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  try {
    const users = await usersResource(source);
    await seed(users, 50);
    const outboxDir = join(dir, 'outbox');
    const plugin = new ReplicatorPlugin({ outbox: { dir: outboxDir }, replicators: [{ id: 'copy', driver: 's3db', client: target, resources: ['users'] }] });
    await source.usePlugin(plugin);
    let reads = 0;
    let broken = true;
    users.addHook('beforeGetMany', async (params) => {
      reads++;
      if (broken && reads >= 3) throw new Error('connection reset by peer');
      return params;
    });
    await assert.rejects(plugin.syncAllData('copy', { batchSize: 10, concurrency: 1 }), (e) => {
      assert.ok(e instanceof ReplicatorError);
      assert.equal(e.code, 'ERR_SYNC');
      assert.match(e.message, /^syncAllData\('copy'\) failed on resource 'users': could not read records of resource 'users' \(3 attempts\): connection reset by peer/);
      assert.match(e.description, /resume from the checkpoint/);
      return true;
    });
    assert.equal(reads, 5, 'pages 1-2 read, page 3 tried three times');
    const checkpoint = JSON.parse(await readFile(join(outboxDir, 'sync', 'copy.json'), 'utf8'));
    assert.equal(checkpoint.done, 20);
    assert.equal(checkpoint.lastId, 'r0019');

    broken = false;
    const resumed = await plugin.syncAllData('copy', { batchSize: 10 });
    assert.equal(resumed.resumed, true);
    assert.equal(resumed.resumedFrom, 20);
    assert.equal(resumed.synced, 30);
    await plugin.flush();
    await assertSameRecords(users, target.resources.users);
  } finally {
    await source.disconnect();
    await target.disconnect();
    await rm(dir, { recursive: true, force: true });
  }
});

test('CLI: --help prints the usage', async () => {
  const { code, stdout } = await run([CLI, '--help']);
  assert.equal(code, 0);
  assert.match(stdout, /Usage: s3db-replicator sync --connection <connection string> --config <file\.mjs>/);
  for (const flag of ['--replicator', '--batch-size', '--concurrency', '--no-resume']) assert.ok(stdout.includes(flag), flag);
});

test('CLI: sync copies a file:// database end to end and never prints credentials', async () => {
  const dir = await tempDir();
  try {
    const srcDir = join(dir, 'src');
    const dstDir = join(dir, 'dst');
    const db = await fileDb(srcDir);
    const users = await usersResource(db);
    await seed(users, 120);
    await db.disconnect();
    const config = join(dir, 'replication.mjs');
    await writeFile(config, `export const options = {
  outbox: { dir: ${JSON.stringify(join(dir, 'outbox'))} },
  replicators: [
    { id: 'backup', driver: 's3db', resources: { users: 'people' }, config: { connectionString: ${JSON.stringify(`file://${dstDir}`)} } },
    { id: 'mirror', driver: 's3db', resources: ['users'], config: { connectionString: 'memory://mirror-admin:MirrorPa55word@mirror/data' } },
  ],
};\n`);

    const ok = await run([CLI, 'sync', '--connection', `file://${srcDir}`, '--config', config, '--replicator', 'backup', '--batch-size', '25', '--concurrency', '2'], { cwd: dir });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /backup: 120 records: 120 synced, 0 skipped, 0 superseded, 0 failed in [\d.]+s/);
    assert.ok(!ok.stdout.includes('mirror:'), 'only the chosen replicator');
    assert.match(ok.stderr, /\[backup\] 100% 120\/120/, 'a final progress line (stderr is not a TTY)');
    const dst = await fileDb(dstDir);
    try {
      assert.equal(await dst.resources.people.count(), 120);
      assert.deepEqual(visible(await dst.resources.people.get('r0042')), { id: 'r0042', name: 'name 42', n: 42, tag: 'even' });
    } finally {
      await dst.disconnect();
    }

    const all = await run([CLI, 'sync', '--connection', `file://${srcDir}`, '--config', config], { cwd: dir });
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /backup: 120 records: 120 synced/);
    assert.match(all.stdout, /mirror: 120 records: 120 synced/);

    const secret = 'Sup3rS3cretPass';
    const bad = await run([CLI, 'sync', '--connection', `file://reader:${secret}@localhost${srcDir}`, '--config', config], { cwd: dir });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: /m);
    assert.match(bad.stderr, /\*\*\*@/, bad.stderr);
    const ghost = await run([CLI, 'sync', '--connection', `file://${srcDir}`, '--config', config, '--replicator', 'ghost'], { cwd: dir });
    assert.equal(ghost.code, 1);
    assert.match(ghost.stderr, /Replicator not found: ghost \(available: backup, mirror\)/);
    for (const output of [ok, all, bad, ghost]) {
      const text = output.stdout + output.stderr;
      assert.ok(!text.includes(secret) && !text.includes('MirrorPa55word'), text);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
