// The plugin inside a real s3db.js Database, replicating to another real s3db.js Database.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ReplicatorPlugin, ReplicatorError } from '../plugin.js';
import { collect, memoryDb, usersResource, visible } from './helpers/db.mjs';

async function setup(replicatorFields, pluginOptions = {}) {
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  const plugin = new ReplicatorPlugin({
    ...pluginOptions,
    replicators: [{ driver: 's3db', client: target, ...replicatorFields }],
  });
  await source.usePlugin(plugin);
  const users = await usersResource(source);
  const close = async () => {
    await source.disconnect();
    await target.disconnect();
  };
  return { source, target, plugin, users, close };
}

async function read(db, resource, id) {
  const r = db.resources[resource];
  if (!r || !(await r.exists(id))) return null;
  return visible(await r.get(id));
}

test('array syntax: inserts, updates and deletes reach the destination', async () => {
  const { target, plugin, users, close } = await setup({ resources: ['users'] });
  try {
    await users.insert({ id: 'u1', name: 'Ana', n: 1 });
    await users.insert({ id: 'u2', name: 'Bea', n: 2 });
    await users.update('u1', { name: 'Ana Maria' });
    await users.delete('u2');
    await plugin.flush();
    assert.deepEqual(await read(target, 'users', 'u1'), { id: 'u1', name: 'Ana Maria', n: 1 });
    assert.equal(await read(target, 'users', 'u2'), null);
  } finally {
    await close();
  }
});

test('object syntax renames the destination resource', async () => {
  const { target, plugin, users, close } = await setup({ resources: { users: 'people' } });
  try {
    await users.insert({ id: 'p1', name: 'Caio' });
    await plugin.flush();
    assert.equal((await read(target, 'people', 'p1')).name, 'Caio');
    assert.equal(target.resources.users, undefined);
  } finally {
    await close();
  }
});

test('object with transform and actions: transformed, only the listed actions replicate', async () => {
  const { target, plugin, users, close } = await setup({
    resources: { users: { resource: 'people', transform: (d) => ({ ...d, name: d.name.toUpperCase() }), actions: ['inserted'] } },
  });
  try {
    await users.insert({ id: 'a', name: 'ana' });
    await users.update('a', { name: 'changed' });
    await users.insert({ id: 'b', name: 'bea' });
    await users.delete('b');
    await plugin.flush();
    assert.equal((await read(target, 'people', 'a')).name, 'ANA', 'the update was not replicated');
    assert.equal((await read(target, 'people', 'b')).name, 'BEA', 'the delete was not replicated');
  } finally {
    await close();
  }
});

test("actions accept the stock plugin's spelling ('insert', 'delete')", async () => {
  const { target, plugin, users, close } = await setup({ resources: { users: { actions: ['insert', 'delete'] } } });
  try {
    await users.insert({ id: 'a', name: 'one' });
    await users.update('a', { name: 'two' });
    await plugin.flush();
    assert.equal((await read(target, 'users', 'a')).name, 'one');
    await users.delete('a');
    await plugin.flush();
    assert.equal(await read(target, 'users', 'a'), null);
  } finally {
    await close();
  }
});

test('function syntax transforms without renaming; a transform that drops id keeps it', async () => {
  const { target, plugin, users, close } = await setup({ resources: { users: (d) => ({ name: `${d.name}!` }) } });
  try {
    await users.insert({ id: 'f1', name: 'x' });
    await plugin.flush();
    assert.deepEqual(await read(target, 'users', 'f1'), { id: 'f1', name: 'x!' });
  } finally {
    await close();
  }
});

test('multi-destination syntax fans one change out to several resources', async () => {
  const { target, plugin, users, close } = await setup({
    resources: {
      users: ['people', { resource: 'user_analytics', transform: (d) => ({ id: d.id, initial: d.name[0] }) }, { resource: 'audit', actions: ['deleted'] }],
    },
  });
  try {
    await users.insert({ id: 'm1', name: 'Zed' });
    await plugin.flush();
    assert.equal((await read(target, 'people', 'm1')).name, 'Zed');
    assert.deepEqual(await read(target, 'user_analytics', 'm1'), { id: 'm1', initial: 'Z' });
    assert.equal(target.resources.audit, undefined, 'audit only takes deletes');
  } finally {
    await close();
  }
});

test('shouldReplicate(data, action) filters, with the spec action names', async () => {
  const seen = [];
  const { target, plugin, users, close } = await setup({
    resources: {
      users: {
        shouldReplicate: (data, action) => {
          seen.push(action);
          return action !== 'deleted' && data.name !== 'skip me';
        },
      },
    },
  });
  const events = collect(plugin, 'plg:replicator:skipped');
  try {
    await users.insert({ id: 'k', name: 'keep' });
    await users.insert({ id: 's', name: 'skip me' });
    await users.delete('k');
    await plugin.flush();
    assert.ok(await read(target, 'users', 'k'), 'the delete was filtered out');
    assert.equal(await read(target, 'users', 's'), null);
    assert.deepEqual([...new Set(seen)].sort(), ['deleted', 'inserted']);
    assert.equal(events['plg:replicator:skipped'].length, 2);
  } finally {
    await close();
  }
});

test('a transform returning null or undefined skips that record only', async () => {
  const { target, plugin, users, close } = await setup({
    resources: { users: (d) => (d.name === 'draft' ? null : d.name === 'undef' ? undefined : d) },
  });
  try {
    await users.insert({ id: '1', name: 'draft' });
    await users.insert({ id: '2', name: 'undef' });
    await users.insert({ id: '3', name: 'real' });
    await plugin.flush();
    assert.equal(await read(target, 'users', '1'), null);
    assert.equal(await read(target, 'users', '2'), null);
    assert.equal((await read(target, 'users', '3')).name, 'real');
    assert.equal(plugin.stats.totalSkipped, 2);
  } finally {
    await close();
  }
});

test('internal fields (_*, $*) never reach a transform or a destination', async () => {
  const received = [];
  const { plugin, users, close } = await setup({ resources: { users: (d) => (received.push(d), d) } });
  try {
    await users.insert({ id: 'i1', name: 'a' });
    await users.update('i1', { name: 'b' });
    await users.delete('i1');
    await plugin.flush();
    assert.equal(received.length, 3);
    for (const data of received) {
      const internal = Object.keys(data).filter((k) => k.startsWith('_') || k.startsWith('$'));
      assert.deepEqual(internal, [], JSON.stringify(data));
    }
  } finally {
    await close();
  }
});

test('throwing, rejecting and wrongly typed transforms fail only their record', async () => {
  const { source, target, plugin, users, close } = await setup({
    resources: {
      users: (d) => {
        if (d.name === 'throw') throw new Error('boom sync');
        if (d.name === 'reject') return Promise.reject(new Error('boom async'));
        if (d.name === 'number') return 42;
        return d;
      },
    },
  });
  const events = collect(plugin, 'plg:replicator:error', 'replicationError');
  const dbErrors = [];
  source.on('replicator:error', (e) => dbErrors.push(e));
  try {
    for (const name of ['throw', 'ok1', 'reject', 'number', 'ok2']) await users.insert({ id: name, name });
    await plugin.flush();
    assert.ok(await read(target, 'users', 'ok1'));
    assert.ok(await read(target, 'users', 'ok2'));
    for (const bad of ['throw', 'reject', 'number']) assert.equal(await read(target, 'users', bad), null);
    const errors = events['plg:replicator:error'];
    assert.deepEqual(errors.map((e) => e.recordId).sort(), ['number', 'reject', 'throw']);
    assert.ok(errors.every((e) => e.code === 'ERR_TRANSFORM' && e.error.startsWith("Transform function failed for resource 'users'")));
    assert.match(errors.find((e) => e.recordId === 'throw').error, /boom sync/);
    assert.match(errors.find((e) => e.recordId === 'reject').error, /boom async/);
    assert.match(errors.find((e) => e.recordId === 'number').error, /must return an object/);
    assert.equal(events.replicationError.length, 3);
    assert.equal(dbErrors.length, 3);
    assert.ok(dbErrors[0].error instanceof ReplicatorError);
    assert.equal(dbErrors[0].resource, 'users');
  } finally {
    await close();
  }
});

test('concurrent updates of one record leave the destination at the last value', async () => {
  const { target, plugin, users, close } = await setup({ resources: ['users'] }, { batchSize: 7, concurrency: 4 });
  try {
    await users.insert({ id: 'c', name: 'v0', n: 0 });
    for (let round = 1; round <= 3; round++) {
      await Promise.all(Array.from({ length: 20 }, (_, i) => users.update('c', { n: round * 100 + i })));
    }
    for (let i = 1; i <= 30; i++) await users.update('c', { n: 1000 + i });
    await plugin.flush();
    const final = visible(await users.get('c'));
    assert.equal(final.n, 1030);
    assert.deepEqual(await read(target, 'users', 'c'), final);
  } finally {
    await close();
  }
});

test('replicated events carry the spec fields, and the database emits replicator:success', async () => {
  const { source, plugin, users, close } = await setup({ id: 'backup', resources: { users: 'people' } });
  const events = collect(plugin, 'plg:replicator:replicated');
  const success = [];
  source.on('replicator:success', (e) => success.push(e));
  try {
    await users.insert({ id: 'e1', name: 'x' });
    await users.update('e1', { name: 'y' });
    await users.delete('e1');
    await plugin.flush();
    const got = events['plg:replicator:replicated'];
    assert.deepEqual(got.map((e) => e.operation), ['inserted', 'updated', 'deleted']);
    for (const e of got) {
      assert.equal(e.replicator, 'backup');
      assert.equal(e.resourceName, 'users');
      assert.equal(e.recordId, 'e1');
      assert.equal(e.destination, 'people');
      assert.equal(typeof e.duration, 'number');
      assert.ok(e.duration >= 0);
    }
    assert.equal(success.length, 3);
    assert.equal(success[0].destination, 'people');
  } finally {
    await close();
  }
});

test('resources created after install are followed; unrelated resources are not', async () => {
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  const plugin = new ReplicatorPlugin({ replicators: [{ driver: 's3db', client: target, resources: ['late'] }] });
  await source.usePlugin(plugin);
  try {
    const late = await usersResource(source, 'late');
    const other = await usersResource(source, 'other');
    await late.insert({ id: 'l1', name: 'late' });
    await other.insert({ id: 'o1', name: 'other' });
    await plugin.flush();
    assert.ok(await read(target, 'late', 'l1'));
    assert.equal(target.resources.other, undefined);
    assert.equal(other.listenerCount('inserted'), 0);
  } finally {
    await source.disconnect();
    await target.disconnect();
  }
});

test('works when given to new Database({ plugins: [plugin] })', async () => {
  const target = await memoryDb('dst');
  const plugin = new ReplicatorPlugin({ replicators: [{ driver: 's3db', client: target, resources: ['users'] }] });
  const { Database } = await import('s3db.js/lite');
  const source = new Database({ connectionString: `memory://plugins-opt-${process.pid}/x`, logLevel: 'silent', plugins: [plugin] });
  await source.connect();
  try {
    const users = await usersResource(source);
    await users.insert({ id: 'x1', name: 'via plugins option' });
    await plugin.flush();
    assert.equal((await read(target, 'users', 'x1')).name, 'via plugins option');
  } finally {
    await source.disconnect();
    await target.disconnect();
  }
});

test('connectionString destinations are created, connected and disconnected by the plugin', async () => {
  const source = await memoryDb('src');
  const bucket = `memory://cs-${process.pid}/backup`;
  const plugin = new ReplicatorPlugin({ replicators: [{ driver: 's3db', resources: ['users'], config: { connectionString: bucket } }] });
  await source.usePlugin(plugin);
  try {
    const users = await usersResource(source);
    await users.insert({ id: 'cs1', name: 'one' });
    await plugin.flush();
    const { Database } = await import('s3db.js/lite');
    const check = new Database({ connectionString: bucket, logLevel: 'silent' });
    await check.connect();
    assert.equal(visible(await check.resources.users.get('cs1')).name, 'one');
    await check.disconnect();
  } finally {
    await source.disconnect();
  }
});

test('stop() right after the last write drains every change whose write resolved, and removes every listener and hook it added', async () => {
  const { target, plugin, users, source, close } = await setup({ resources: ['users'] });
  try {
    const before = {
      inserted: users.listenerCount('inserted'),
      updated: users.listenerCount('updated'),
      hooks: users.hooks.afterInsert.length,
    };
    assert.ok(before.inserted >= 1);
    const writes = Array.from({ length: 50 }, (_, i) => users.insert({ id: `s${i}`, name: `n${i}` }));
    await Promise.all(writes);
    for (let i = 0; i < 3; i++) await users.insert({ id: `q${i}`, name: `q${i}` });
    // No tick in between: s3db.js has not handed those writes' events to any listener yet.
    await plugin.stop();
    assert.equal(await target.resources.users.count(), 53, 'stop() drained every write that resolved before it');
    assert.equal(users.listenerCount('inserted'), before.inserted - 1);
    assert.equal(users.listenerCount('updated'), before.updated - 1);
    assert.equal(users.hooks.afterInsert.length, before.hooks - 1);
    await users.insert({ id: 'after', name: 'not replicated' });
    await new Promise((r) => setImmediate(r));
    assert.equal(await read(target, 'users', 'after'), null);
    await assert.rejects(plugin.replicateBatch('users', [{ id: 'z', name: 'z' }]), (e) => e.name === 'ReplicatorError' && e.code === 'ERR_STOPPED');
    assert.ok(source);
  } finally {
    await close();
  }
});

test('db.disconnect() drains and stops a plugin added with usePlugin(): nothing of it runs after', async () => {
  const { mkdtemp, readFile, readdir, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 's3db-disconnect-'));
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  try {
    await usersResource(target);
    const users = await usersResource(source);
    const plugin = new ReplicatorPlugin({ outbox: { dir }, replicators: [{ driver: 's3db', client: target, resources: ['users'] }] });
    await source.usePlugin(plugin);
    for (let i = 0; i < 20; i++) await users.insert({ id: `d${i}`, name: `n${i}` });
    await source.disconnect();
    assert.equal(await target.resources.users.count(), 20, 'disconnect() drained every change');
    const status = JSON.parse(await readFile(join(dir, 'status.json'), 'utf8'));
    assert.ok(status.stoppedAt, 'the status file says it stopped');
    await assert.rejects(plugin.replicateBatch('users', [{ id: 'z' }]), (e) => e.code === 'ERR_STOPPED');
    // Nothing writes into the outbox directory any more (the status file and the outbox thread stopped).
    const before = (await readdir(dir)).sort();
    await new Promise((resolve) => setTimeout(resolve, 1200)); // longer than the status file's 1 s interval
    assert.deepEqual((await readdir(dir)).sort(), before);
    assert.equal(JSON.parse(await readFile(join(dir, 'status.json'), 'utf8')).updatedAt, status.updatedAt);
  } finally {
    await target.disconnect();
    await rm(dir, { recursive: true, force: true });
  }
});

test('replicateBatch delivers records and reports per-record errors', async () => {
  const { target, plugin, close } = await setup({ resources: { users: (d) => (d.name === 'bad' ? 7 : d) } });
  try {
    const result = await plugin.replicateBatch('users', [
      { id: 'b1', name: 'one' },
      { id: 'b2', name: 'bad' },
      { name: 'no id' },
      { id: 'b3', name: 'three' },
    ]);
    assert.equal(result.total, 4);
    assert.equal(result.successful, 2);
    assert.equal(result.success, false);
    assert.deepEqual(result.errors.map((e) => e.id).sort(), ['', 'b2']);
    assert.ok(await read(target, 'users', 'b1'));
    assert.ok(await read(target, 'users', 'b3'));
    await assert.rejects(plugin.replicateBatch('users', [], { replicator: 'nope' }), (e) => {
      assert.equal(e.name, 'ReplicatorError');
      assert.equal(e.message, 'Replicator not found: nope');
      assert.deepEqual(e.context.availableReplicators, ['s3db']);
      return true;
    });
  } finally {
    await close();
  }
});

test('disableReplicator / enableReplicator stop and resume one replicator', async () => {
  const { target, plugin, users, close } = await setup({ id: 'main', resources: ['users'] });
  try {
    await plugin.disableReplicator('main');
    await users.insert({ id: 'd1', name: 'while disabled' });
    await plugin.flush();
    assert.equal(await read(target, 'users', 'd1'), null);
    assert.equal((await plugin.listReplicators())[0].enabled, false);
    await plugin.enableReplicator('main');
    await users.insert({ id: 'd2', name: 'after enable' });
    await plugin.flush();
    assert.ok(await read(target, 'users', 'd2'));
    await assert.rejects(plugin.disableReplicator('ghost'), /Replicator not found: ghost/);
  } finally {
    await close();
  }
});

test('getReplicatorStats and listReplicators describe the replicators without secrets', async () => {
  const source = await memoryDb('src');
  const plugin = new ReplicatorPlugin({
    replicators: [
      { driver: 's3db', resources: ['users'], config: { connectionString: `memory://stats-${process.pid}/b` } },
      { driver: 'webhook', resources: ['users'], enabled: false, config: { url: 'http://user:hunter2@127.0.0.1:9/hook', auth: { type: 'bearer', token: 'tok-secret' } } },
    ],
  });
  await source.usePlugin(plugin);
  try {
    const users = await usersResource(source);
    await users.insert({ id: 's1', name: 'x' });
    await plugin.flush();
    const stats = await plugin.getReplicatorStats();
    assert.deepEqual(stats.replicators.map((r) => [r.id, r.driver, r.enabled]), [['s3db', 's3db', true], ['webhook', 'webhook', false]]);
    assert.equal(stats.replicators[0].status.delivered, 1);
    assert.equal(stats.replicators[0].status.queued, 0);
    assert.equal(stats.stats.totalReplications, 1);
    assert.equal(stats.stats.pending, 0);
    const list = await plugin.listReplicators();
    assert.equal(list[1].resources[0].source, 'users');
    const shown = JSON.stringify(list);
    assert.ok(!shown.includes('hunter2') && !shown.includes('tok-secret'), shown);
  } finally {
    await source.disconnect();
  }
});

test('persistReplicatorLog stores failures in the log resource', async () => {
  const { source, plugin, users, close } = await setup(
    { resources: { users: (d) => (d.name === 'bad' ? 'nope' : d) } },
    { persistReplicatorLog: true, replicatorLogResource: 'repl_log' },
  );
  try {
    await users.insert({ id: 'g1', name: 'bad' });
    await plugin.flush();
    const log = source.resources.repl_log;
    assert.ok(log, 'the log resource exists');
    let logs = [];
    for (let i = 0; i < 50 && logs.length === 0; i++) {
      logs = await plugin.getReplicatorLogs({ status: 'error' });
      if (logs.length === 0) await new Promise((r) => setImmediate(r));
    }
    assert.equal(logs.length, 1);
    assert.equal(logs[0].recordId, 'g1');
    assert.equal(logs[0].resourceName, 'users');
    assert.match(logs[0].error, /must return an object/);
    assert.equal(users.listenerCount('inserted') >= 1, true);
  } finally {
    await close();
  }
});

test('invalid configurations throw a ReplicatorError naming the option', () => {
  const cases = [
    [{}, 'replicators'],
    [{ replicators: [] }, 'replicators'],
    [{ replicators: 'x' }, 'replicators'],
    [{ replicators: [{ resources: ['u'] }] }, 'replicators[0].driver'],
    [{ replicators: [{ driver: 'nope', resources: ['u'] }] }, 'replicators[0].driver'],
    [{ replicators: [{ driver: 's3db', resources: [], config: { connectionString: 'memory://a' } }] }, 'replicators[0].resources'],
    [{ replicators: [{ driver: 's3db', resources: {}, config: { connectionString: 'memory://a' } }] }, 'replicators[0].resources'],
    [{ replicators: [{ driver: 's3db', resources: ['u'] }] }, 'replicators[0].config.connectionString'],
    [{ batchSize: 'big', replicators: [{ driver: 's3db', resources: ['u'], config: { connectionString: 'memory://a' } }] }, 'batchSize'],
    [{ maxRetries: -1, replicators: [{ driver: 's3db', resources: ['u'], config: { connectionString: 'memory://a' } }] }, 'maxRetries'],
    [{ replicators: [{ driver: 's3db', resources: { u: { actions: ['upserted'] } }, config: { connectionString: 'memory://a' } }] }, 'replicators[0].resources.u.actions[0]'],
    [{ replicators: [{ driver: 'webhook', resources: ['u'], config: {} }] }, 'replicators[0].config'],
    [{ replicators: [{ driver: 'webhook', resources: ['u'], config: { url: 'http://x/', auth: { type: 'bearer' } } }] }, 'replicators[0].config.auth'],
    [{ replicators: [{ driver: 's3db', resources: ['u'], config: { connectionString: 'memory://a' }, extra: 1 }] }, 'replicators[0].extra'],
  ];
  for (const [options, option] of cases) {
    assert.throws(() => new ReplicatorPlugin(options), (e) => {
      assert.equal(e.name, 'ReplicatorError', JSON.stringify(options));
      assert.ok(e instanceof ReplicatorError);
      assert.ok(e.message.length > 0);
      assert.ok(e.description.includes('How to fix') || e.description.length > 20, e.description);
      assert.ok(String(e.context.option).startsWith(option), `${JSON.stringify(options)} → ${e.context.option}`);
      return true;
    });
  }
});

test('misspelled options are rejected with the option they resemble', () => {
  const rep = { driver: 's3db', resources: ['u'], config: { connectionString: 'memory://a' } };
  const cases = [
    [{ batchSzie: 10 }, 'batchSzie', 'batchSize'],
    [{ maxRetires: 2 }, 'maxRetires', 'maxRetries'],
    [{ verbos: true }, 'verbos', 'verbose'],
    [{ timout: 10 }, 'timout', 'timeout'],
    [{ concurency: 2 }, 'concurency', 'concurrency'],
    [{ persistReplicatorLogs: true }, 'persistReplicatorLogs', 'persistReplicatorLog'],
    [{ outbox: { fsyncIntervl: 5 } }, 'outbox', 'fsyncIntervalMs'],
    [{ circuitBreaker: { failureThreshhold: 2 } }, 'circuitBreaker', 'failureThreshold'],
  ];
  for (const [extra, option, suggestion] of cases) {
    assert.throws(() => new ReplicatorPlugin({ ...extra, replicators: [rep] }), (e) => {
      assert.equal(e.code, 'ERR_CONFIG');
      assert.ok(String(e.context.option).startsWith(option), `${JSON.stringify(extra)} → ${e.context.option}`);
      assert.ok(e.description.includes(`did you mean '${suggestion}'?`), e.description);
      return true;
    });
  }
  // Options of the stock plugin and of s3db.js's Plugin base are accepted.
  new ReplicatorPlugin({ replicatorConcurrency: 3, stopConcurrency: 2, logLevel: 'silent', namespace: 'x', replicators: [rep] });
});

test('a wrong type names the option, the type it takes and the value given (no Rust internals)', () => {
  const rep = { driver: 's3db', resources: ['u'], config: { connectionString: 'memory://a' } };
  const cases = [
    [{ batchSize: '10' }, 'batchSize', /expected a whole number \(0 or more\), got string "10"/],
    [{ outbox: 'yes' }, 'outbox', /expected false or an object such as \{ dir: '\.\/\.s3db-replicator' \}, got string "yes"/],
    [{ circuitBreaker: 3 }, 'circuitBreaker', /expected false or an object/],
    [{ lingerMs: true }, 'lingerMs', /expected a whole number \(0 or more\), got boolean true/],
  ];
  for (const [extra, option, reason] of cases) {
    assert.throws(() => new ReplicatorPlugin({ ...extra, replicators: [rep] }), (e) => {
      assert.equal(e.context.option, option);
      assert.match(e.message, reason);
      assert.doesNotMatch(`${e.message} ${e.description}`, /line \d+ column|untagged enum|usize/);
      return true;
    });
  }
  // Inside a driver's config too, without echoing the value of a string (it may be a secret).
  assert.throws(() => new ReplicatorPlugin({ replicators: [{ driver: 'webhook', resources: ['u'], config: { url: 'http://x/', timeout: 'hunter2' } }] }), (e) => {
    assert.equal(e.context.option, 'replicators[0].config.timeout');
    assert.match(e.message, /expected a whole number/);
    assert.doesNotMatch(JSON.stringify({ m: e.message, d: e.description, c: e.context }), /hunter2/);
    return true;
  });
});

test('resourceFilter / resourceAllowlist / resourceBlocklist choose the resources followed, as in the stock plugin', async () => {
  const source = await memoryDb('filter');
  const target = await memoryDb('filter-copy');
  const plugin = new ReplicatorPlugin({ resourceBlocklist: ['secrets'], replicators: [{ driver: 's3db', client: target, resources: ['users', 'secrets'] }] });
  await source.usePlugin(plugin);
  try {
    const users = await usersResource(source, 'users');
    const secrets = await usersResource(source, 'secrets');
    await users.insert({ id: 'u', name: 'u' });
    await secrets.insert({ id: 's', name: 's' });
    await plugin.flush();
    assert.deepEqual(await target.resources.users.listIds(), ['u']);
    assert.equal(target.resources.secrets, undefined, 'a blocked resource is not replicated');
  } finally {
    await plugin.stop();
  }
});

test('a connection string secret never appears in a configuration error', () => {
  assert.throws(
    () => new ReplicatorPlugin({ replicators: [{ driver: 's3db', resources: ['u'], config: { connectionString: 'KEY:SuperSecret@bucket' } }] }),
    (e) => !JSON.stringify({ m: e.message, d: e.description, c: e.context }).includes('SuperSecret'),
  );
});

test('enabled: false installs nothing', async () => {
  const source = await memoryDb('src');
  const plugin = new ReplicatorPlugin({ enabled: false, replicators: [{ driver: 's3db', resources: ['users'], config: { connectionString: 'memory://x/y' } }] });
  await source.usePlugin(plugin);
  try {
    const users = await usersResource(source);
    assert.equal(users.listenerCount('inserted'), 0);
    await users.insert({ id: 'n', name: 'n' });
    await plugin.flush();
    assert.equal((await plugin.getReplicatorStats()).replicators.length, 0);
  } finally {
    await source.disconnect();
  }
});

test('syncAllData copies records that existed before the plugin, through the engine', async () => {
  const source = await memoryDb('src');
  const target = await memoryDb('dst');
  const users = await usersResource(source);
  for (let i = 0; i < 250; i++) await users.insert({ id: `pre${i}`, name: `n${i}`, n: i });
  const plugin = new ReplicatorPlugin({ replicators: [{ id: 'copy', driver: 's3db', client: target, resources: { users: 'people' } }] });
  await source.usePlugin(plugin);
  const progress = collect(plugin, 'plg:replicator:sync-resource', 'plg:replicator:sync-completed');
  try {
    const result = await plugin.syncAllData('copy');
    assert.equal(result.total, 250);
    assert.deepEqual(result.errors, []);
    assert.equal(await target.resources.people.count(), 250);
    assert.deepEqual(await read(target, 'people', 'pre7'), { id: 'pre7', name: 'n7', n: 7 });
    assert.equal(progress['plg:replicator:sync-resource'].length, 1);
    assert.equal(progress['plg:replicator:sync-completed'][0].total, 250);
    const again = await plugin.syncAllData('copy');
    assert.equal(again.errors.length, 0, 'a second run refreshes rows instead of failing');
    await assert.rejects(plugin.syncAllData('nonexistent-id'), /Replicator not found: nonexistent-id/);
  } finally {
    await source.disconnect();
    await target.disconnect();
  }
});
