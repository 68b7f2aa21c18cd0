// The replication log (persistReplicatorLog, getReplicatorLogs, retryFailedReplicators) and the
// dead-letter methods, inside real s3db.js databases. Two replicators share the source's
// resources: 'good' (always works) and 'bad', whose destination resources reject the ids in
// `failing` from a beforeReplace/beforeDelete hook (a permanent error: no retries).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ReplicatorPlugin, ReplicatorError } from '../plugin.js';
import { memoryDb, nextEvents, usersResource, USER_ATTRIBUTES, visible } from './helpers/db.mjs';

function rejecting(failing, what) {
  return (payload) => {
    const id = payload?.id;
    if (failing.has(id)) throw Object.assign(new Error(`boom: destination rejects ${what} of ${id}`), { retriable: false });
    return payload;
  };
}

/** A destination database whose `names` resources reject the ids in `failing` and count writes. */
async function destination(label, names, failing) {
  const db = await memoryDb(label);
  const writes = []; // `${resource}:${op}:${id}`
  for (const name of names) {
    const resource = await db.createResource({ name, attributes: USER_ATTRIBUTES, behavior: 'body-overflow', timestamps: false });
    resource.addHook('beforeReplace', rejecting(failing, 'a write'));
    resource.addHook('beforeDelete', rejecting(failing, 'a delete'));
    resource.addHook('afterReplace', (data) => (writes.push(`${name}:replace:${data.id}`), data));
    resource.addHook('afterDelete', (data) => (writes.push(`${name}:delete:${data?.id}`), data));
  }
  return { db, writes };
}

async function setup({ resources = ['users'], goodResources = resources, pluginOptions = {}, beforeInstall } = {}) {
  const failingGood = new Set();
  const failing = new Set();
  const source = await memoryDb('src');
  const good = await destination('good', resources, failingGood);
  const bad = await destination('bad', resources, failing);
  const plugin = new ReplicatorPlugin({
    persistReplicatorLog: true,
    maxRetries: 1,
    retryDelay: 1,
    ...pluginOptions,
    replicators: [
      { id: 'good', driver: 's3db', client: good.db, resources: goodResources },
      { id: 'bad', driver: 's3db', client: bad.db, resources },
    ],
  });
  await beforeInstall?.(source, plugin);
  await source.usePlugin(plugin);
  const made = {};
  for (const name of resources) made[name] = source.resources[name] ?? await usersResource(source, name);
  const close = async () => {
    // db.disconnect() only stops plugins given to new Database({ plugins }), not usePlugin()'s.
    await plugin.stop();
    await source.disconnect();
    await good.db.disconnect();
    await bad.db.disconnect();
  };
  return { source, plugin, good, bad, failing, failingGood, users: made.users, resources: made, close };
}

async function read(db, resource, id) {
  const r = db.resources[resource];
  if (!r || !(await r.exists(id))) return null;
  return visible(await r.get(id));
}

async function rejectsWith(promise, code, option) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof ReplicatorError, `${error}`);
    assert.equal(error.code, code, error.message);
    if (option) assert.equal(error.context.option, option, error.message);
    assert.match(error.description, /How to fix|Available/);
    return true;
  });
}

test('a failure is logged with replicator, recordId, operation, status and its dead letter; successes are not', async () => {
  const t = await setup({ goodResources: ['users', 'replicator_log'] });
  try {
    t.failing.add('u1');
    await t.users.insert({ id: 'u1', name: 'Ana', n: 1 });
    await t.users.insert({ id: 'u2', name: 'Bea' });
    await t.plugin.flush();
    const logs = await t.plugin.getReplicatorLogs();
    assert.equal(logs.length, 1, JSON.stringify(logs));
    const [entry] = logs;
    assert.equal(entry.replicator, 'bad');
    assert.equal(entry.resourceName, 'users');
    assert.equal(entry.resource, 'users');
    assert.equal(entry.operation, 'inserted');
    assert.equal(entry.action, 'inserted');
    assert.equal(entry.recordId, 'u1');
    assert.equal(entry.status, 'error');
    assert.match(entry.error, /destination rejects a write of u1/);
    assert.equal(entry.retryCount, 0);
    assert.equal(entry.data.name, 'Ana');
    assert.ok(!Number.isNaN(Date.parse(entry.timestamp)));
    assert.equal(entry.createdAt, entry.timestamp.slice(0, 10));
    assert.equal(typeof entry.deadLetterId, 'number');
    const [dl] = await t.plugin.getDeadLetters();
    assert.equal(dl.id, entry.deadLetterId);
    // The stock plugin's status name finds it too, the entry lives in the source database, and
    // writes to the log resource are never replicated (even when a replicator lists it).
    assert.equal((await t.plugin.getReplicatorLogs({ status: 'failed' })).length, 1);
    assert.ok(t.source.resources.replicator_log);
    assert.equal(t.good.db.resources.replicator_log, undefined);
    assert.equal(t.plugin.replicatorLog, t.source.resources.replicator_log);
  } finally {
    await t.close();
  }
});

test('getReplicatorLogs filters by resourceName, operation, status and replicator; newest first with limit/offset', async () => {
  const t = await setup({ resources: ['users', 'orders'] });
  const reported = [];
  t.plugin.on('plg:replicator:error', (e) => reported.push(`${e.resourceName}:${e.operation}:${e.recordId}`));
  try {
    for (const id of ['u1', 'u2', 'u3', 'o1']) t.failing.add(id);
    await t.users.insert({ id: 'u1', name: 'a' });
    await t.plugin.flush();
    await t.users.insert({ id: 'u2', name: 'b' });
    await t.plugin.flush();
    await t.resources.orders.insert({ id: 'o1', name: 'order' });
    await t.plugin.flush();
    await t.users.update('u1', { name: 'a2' });
    await t.plugin.flush();
    await t.users.insert({ id: 'u3', name: 'c' });
    await t.plugin.flush();
    await t.users.delete('u2');
    await t.plugin.flush();
    assert.equal(reported.length, 6, reported.join());

    const all = await t.plugin.getReplicatorLogs();
    assert.deepEqual(all.map((e) => `${e.resourceName}:${e.operation}:${e.recordId}`), [...reported].reverse(), 'newest first');
    for (let i = 1; i < all.length; i++) assert.ok(all[i - 1].timestamp >= all[i].timestamp);

    const users = await t.plugin.getReplicatorLogs({ resourceName: 'users' });
    assert.equal(users.length, 5);
    assert.ok(users.every((e) => e.resourceName === 'users'));
    const updates = await t.plugin.getReplicatorLogs({ operation: 'updated' });
    assert.deepEqual(updates.map((e) => [e.recordId, e.data.name]), [['u1', 'a2']]);
    assert.equal((await t.plugin.getReplicatorLogs({ operation: 'update' })).length, 1, "the stock plugin's spelling");
    const deletes = await t.plugin.getReplicatorLogs({ operation: 'deleted', resourceName: 'users' });
    assert.deepEqual(deletes.map((e) => e.recordId), ['u2']);
    assert.equal((await t.plugin.getReplicatorLogs({ resourceName: 'orders', operation: 'updated' })).length, 0);
    assert.equal((await t.plugin.getReplicatorLogs({ status: 'error', replicator: 'bad' })).length, 6);
    assert.equal((await t.plugin.getReplicatorLogs({ replicator: 'good' })).length, 0);
    assert.equal((await t.plugin.getReplicatorLogs({ status: 'success' })).length, 0);

    // Paging counts matching entries, not stored ones.
    const page1 = await t.plugin.getReplicatorLogs({ resourceName: 'users', limit: 2 });
    const page2 = await t.plugin.getReplicatorLogs({ resourceName: 'users', limit: 2, offset: 2 });
    const page3 = await t.plugin.getReplicatorLogs({ resourceName: 'users', limit: 2, offset: 4 });
    assert.deepEqual([...page1, ...page2, ...page3].map((e) => e.id), users.map((e) => e.id));
    assert.equal(page3.length, 1);
    assert.deepEqual(await t.plugin.getReplicatorLogs({ offset: 6 }), []);
    assert.deepEqual(await t.plugin.getReplicatorLogs({ limit: 0 }), []);

    await rejectsWith(t.plugin.getReplicatorLogs({ limit: -1 }), 'ERR_CONFIG', 'limit');
    await rejectsWith(t.plugin.getReplicatorLogs({ offset: 1.5 }), 'ERR_CONFIG', 'offset');
    await rejectsWith(t.plugin.getReplicatorLogs({ status: 5 }), 'ERR_CONFIG', 'status');
  } finally {
    await t.close();
  }
});

test('a log write that fails emits replicator_log_error and replication goes on', async () => {
  const t = await setup({
    beforeInstall: async (source) => {
      // An existing log resource (kept as it is) whose writes fail for one record.
      const log = await source.createResource({ name: 'replicator_log', attributes: { replicator: 'string', status: 'string' }, behavior: 'body-overflow', timestamps: false });
      log.addHook('beforeInsert', (data) => {
        if (data.recordId === 'x1') throw new Error('log storage unavailable');
        return data;
      });
    },
  });
  try {
    t.failing.add('x1').add('x2');
    const logErrors = nextEvents(t.plugin, 'replicator_log_error', 1);
    await t.users.insert({ id: 'x1', name: 'one' });
    await t.users.insert({ id: 'x2', name: 'two' });
    await t.users.insert({ id: 'x3', name: 'three' });
    await t.plugin.flush();
    const [event] = await logErrors;
    assert.equal(event.replicator, 'bad');
    assert.equal(event.resourceName, 'users');
    assert.equal(event.recordId, 'x1');
    assert.match(event.logError, /log storage unavailable/);
    // Replication went on, and the other failure was logged.
    await t.users.insert({ id: 'x4', name: 'four' });
    await t.plugin.flush();
    assert.equal((await read(t.good.db, 'users', 'x4')).name, 'four');
    assert.equal((await read(t.bad.db, 'users', 'x3')).name, 'three');
    assert.deepEqual((await t.plugin.getReplicatorLogs()).map((e) => e.recordId), ['x2']);
  } finally {
    await t.close();
  }
});

test("a log resource created by the stock plugin is reused: new entries keep every field, old ones stay readable", async () => {
  const t = await setup({
    beforeInstall: async (source) => {
      const stock = await source.createResource({
        name: 'replicator_log',
        attributes: {
          id: 'string|required', replicator: 'string|required', resource: 'string|required', action: 'string|required', data: 'json',
          timestamp: 'datetime|required', createdAt: 'dateonly|required', status: 'string|required', error: 'string|optional',
        },
        behavior: 'body-only',
        partitions: { byDate: { fields: { createdAt: 'dateonly' } } },
      });
      const now = new Date().toISOString();
      await stock.insert({ id: 'users-u0-1', replicator: 'bad', resource: 'users', action: 'insert', data: { id: 'u0' }, timestamp: now, createdAt: now.slice(0, 10), status: 'failed', error: 'old failure' });
    },
  });
  try {
    t.failing.add('u1');
    await t.users.insert({ id: 'u1', name: 'Ana' });
    await t.plugin.flush();
    const logs = await t.plugin.getReplicatorLogs({ status: 'error' });
    assert.deepEqual(logs.map((e) => e.status), ['error', 'failed'], 'new entries first, the stock status counts as an error');
    assert.equal(logs[0].recordId, 'u1');
    assert.equal(logs[0].operation, 'inserted');
    assert.equal(typeof logs[0].deadLetterId, 'number');
    assert.equal(logs[0].retryCount, 0);
    assert.equal(logs[1].error, 'old failure');
    t.failing.clear();
    // The stock entry names no record: it cannot be re-sent and is left as it is.
    assert.deepEqual(await t.plugin.retryFailedReplicators(), { retried: 1, success: 1, failed: 0, superseded: 0, skipped: 0 });
    assert.deepEqual((await t.plugin.getReplicatorLogs()).map((e) => e.status), ['success', 'failed']);
  } finally {
    await t.close();
  }
});

test('a log resource that cannot be created emits replicator_log_resource_creation_error; replication goes on', async () => {
  const events = [];
  const t = await setup({
    beforeInstall: (source, plugin) => {
      plugin.on('replicator_log_resource_creation_error', (e) => events.push(e));
      const create = source.createResource.bind(source);
      source.createResource = async (config) => {
        if (config.name === 'replicator_log') throw new Error('bucket is read-only');
        return create(config);
      };
    },
  });
  try {
    assert.equal(events.length, 1);
    assert.match(events[0].error, /bucket is read-only/);
    t.failing.add('c1');
    await t.users.insert({ id: 'c1', name: 'x' });
    await t.users.insert({ id: 'c2', name: 'y' });
    await t.plugin.flush();
    assert.equal((await read(t.bad.db, 'users', 'c2')).name, 'y');
    assert.deepEqual(await t.plugin.getReplicatorLogs(), []);
    assert.deepEqual(await t.plugin.retryFailedReplicators(), { retried: 0, success: 0, failed: 0, superseded: 0, skipped: 0 });
  } finally {
    await t.close();
  }
});

test('retryFailedReplicators re-sends only to the replicator that failed, then marks the entry success', async () => {
  const t = await setup();
  try {
    t.failing.add('u1');
    await t.users.insert({ id: 'u1', name: 'Ana' });
    await t.users.insert({ id: 'u2', name: 'Bea' });
    await t.plugin.flush();
    assert.deepEqual(t.good.writes.filter((w) => w.endsWith(':u1')), ['users:replace:u1']);

    // Still failing: the same entry is updated (no new entry), retryCount goes up.
    const first = await t.plugin.retryFailedReplicators();
    assert.deepEqual(first, { retried: 1, success: 0, failed: 1, superseded: 0, skipped: 0 });
    let logs = await t.plugin.getReplicatorLogs();
    assert.equal(logs.length, 1, JSON.stringify(logs));
    assert.equal(logs[0].status, 'error');
    assert.equal(logs[0].retryCount, 1);
    assert.ok(logs[0].lastAttempt >= logs[0].timestamp);
    assert.match(logs[0].error, /rejects a write of u1/);

    t.failing.clear();
    const second = await t.plugin.retryFailedReplicators();
    assert.deepEqual(second, { retried: 1, success: 1, failed: 0, superseded: 0, skipped: 0 });
    assert.deepEqual(await read(t.bad.db, 'users', 'u1'), { id: 'u1', name: 'Ana' });
    assert.deepEqual(t.good.writes.filter((w) => w.endsWith(':u1')), ['users:replace:u1'], 'the working replicator got no duplicate');
    logs = await t.plugin.getReplicatorLogs();
    assert.equal(logs.length, 1);
    assert.equal(logs[0].status, 'success');
    assert.equal(logs[0].error, null);
    assert.equal(logs[0].retryCount, 2);
    assert.ok(logs[0].lastSuccessAt);
    assert.deepEqual(await t.plugin.getDeadLetters(), [], 'the delivered dead letter is gone');
    assert.deepEqual(await t.plugin.retryFailedReplicators(), { retried: 0, success: 0, failed: 0, superseded: 0, skipped: 0 });
  } finally {
    await t.close();
  }
});

test("retryFailedReplicators marks an entry superseded when a newer change of the record was delivered meanwhile", async () => {
  const t = await setup();
  try {
    t.failing.add('u1');
    await t.users.insert({ id: 'u1', name: 'old' });
    await t.plugin.flush();
    t.failing.clear();
    await t.users.update('u1', { name: 'new' });
    await t.plugin.flush();
    assert.equal((await read(t.bad.db, 'users', 'u1')).name, 'new');
    const writesBefore = t.bad.writes.length;

    const result = await t.plugin.retryFailedReplicators();
    assert.deepEqual(result, { retried: 1, success: 0, failed: 0, superseded: 1, skipped: 0 });
    assert.equal((await read(t.bad.db, 'users', 'u1')).name, 'new', 'the stale change was not re-sent');
    assert.equal(t.bad.writes.length, writesBefore);
    const [entry] = await t.plugin.getReplicatorLogs();
    assert.equal(entry.status, 'superseded');
    assert.deepEqual(await t.plugin.getDeadLetters(), []);
  } finally {
    await t.close();
  }
});

test('without its dead letter, retryFailedReplicators sends the current record (once per record), or its delete', async () => {
  const t = await setup();
  try {
    await t.users.insert({ id: 'u3', name: 'to delete' });
    await t.plugin.flush();
    t.failing.add('u1').add('u3');
    await t.users.insert({ id: 'u1', name: 'v1' });
    await t.plugin.flush();
    await t.users.update('u1', { name: 'v2' });
    await t.plugin.flush();
    await t.users.delete('u3');
    await t.plugin.flush();
    assert.deepEqual((await t.plugin.getReplicatorLogs()).map((e) => `${e.operation}:${e.recordId}`), ['deleted:u3', 'updated:u1', 'inserted:u1']);
    // A newer state the failing replicator never saw (it was disabled meanwhile).
    await t.plugin.disableReplicator('bad');
    await t.users.update('u1', { name: 'v3' });
    await t.plugin.flush();
    await t.plugin.enableReplicator('bad');
    // Dead letters lost (e.g. a memory outbox after a restart).
    const ids = (await t.plugin.getDeadLetters()).map((d) => d.id);
    assert.equal(ids.length, 3);
    assert.equal(await t.plugin.discardDeadLetters(ids), 3);
    t.failing.clear();
    const goodWrites = t.good.writes.length;
    const badWrites = t.bad.writes.length;

    const result = await t.plugin.retryFailedReplicators();
    assert.deepEqual(result, { retried: 3, success: 3, failed: 0, superseded: 0, skipped: 0 });
    assert.equal((await read(t.bad.db, 'users', 'u1')).name, 'v3', 'the current state, not the logged data');
    assert.equal(await read(t.bad.db, 'users', 'u3'), null);
    assert.deepEqual(t.bad.writes.slice(badWrites).sort(), ['users:delete:u3', 'users:replace:u1'], 'one change per record');
    assert.equal(t.good.writes.length, goodWrites, 'nothing went to the working replicator');
    assert.ok((await t.plugin.getReplicatorLogs()).every((e) => e.status === 'success'));
  } finally {
    await t.close();
  }
});

test('getDeadLetters, retryDeadLetters and discardDeadLetters', async () => {
  const t = await setup();
  try {
    for (const id of ['d1', 'd2', 'd3']) t.failing.add(id);
    for (const id of ['d1', 'd2', 'd3']) await t.users.insert({ id, name: id });
    await t.users.insert({ id: 'ok', name: 'ok' });
    await t.plugin.flush();

    const letters = await t.plugin.getDeadLetters();
    assert.deepEqual(letters.map((d) => d.recordId).sort(), ['d1', 'd2', 'd3']);
    for (const d of letters) {
      assert.equal(typeof d.id, 'number');
      assert.equal(d.replicator, 'bad');
      assert.equal(d.resourceName, 'users');
      assert.equal(d.operation, 'inserted');
      assert.equal(d.data.name, d.recordId);
      assert.match(d.error, /rejects a write/);
      assert.ok(d.attempts >= 1);
      assert.ok(!Number.isNaN(Date.parse(d.failedAt)));
    }
    assert.deepEqual(await t.plugin.getDeadLetters({ replicator: 'good' }), []);
    assert.equal((await t.plugin.getDeadLetters({ replicator: 'bad', limit: 2 })).length, 2);
    assert.deepEqual((await t.plugin.getDeadLetters({ limit: 2, offset: 2 })).map((d) => d.id), [letters[2].id]);

    // d1 still fails, d2 is fixed; d3 is not asked for.
    t.failing.delete('d2');
    const byRecord = Object.fromEntries(letters.map((d) => [d.recordId, d.id]));
    const result = await t.plugin.retryDeadLetters({ ids: [byRecord.d1, byRecord.d2] });
    assert.equal(result.retried, 2);
    assert.equal(result.delivered, 1);
    assert.equal(result.failed, 1);
    assert.equal(result.superseded, 0);
    assert.equal(result.errors.length, 1);
    assert.equal(result.errors[0].id, byRecord.d1);
    assert.equal(result.errors[0].recordId, 'd1');
    assert.equal(result.errors[0].replicator, 'bad');
    assert.match(result.errors[0].error, /rejects a write of d1/);
    assert.equal((await read(t.bad.db, 'users', 'd2')).name, 'd2');
    assert.deepEqual((await t.plugin.getDeadLetters()).map((d) => d.recordId).sort(), ['d1', 'd3']);
    // The log follows: d2's entry is marked success, d1's failed again (no new entries).
    const logs = await t.plugin.getReplicatorLogs();
    assert.equal(logs.length, 3);
    const status = Object.fromEntries(logs.map((e) => [e.recordId, [e.status, e.retryCount]]));
    assert.deepEqual(status, { d1: ['error', 1], d2: ['success', 1], d3: ['error', 0] });

    assert.equal(await t.plugin.discardDeadLetters([byRecord.d3]), 1);
    assert.equal(await t.plugin.discardDeadLetters([byRecord.d3]), 0);
    t.failing.clear();
    const rest = await t.plugin.retryDeadLetters({ replicator: 'bad' });
    assert.deepEqual(rest, { retried: 1, delivered: 1, failed: 0, superseded: 0, skipped: 0, errors: [] });
    assert.deepEqual(await t.plugin.getDeadLetters(), []);
    assert.deepEqual(await t.plugin.retryDeadLetters(), { retried: 0, delivered: 0, failed: 0, superseded: 0, skipped: 0, errors: [] });
  } finally {
    await t.close();
  }
});

test('dead-letter methods reject bad arguments and unknown replicators with a ReplicatorError', async () => {
  const t = await setup({ pluginOptions: { persistReplicatorLog: false } });
  try {
    await rejectsWith(t.plugin.getDeadLetters({ replicator: 'nope' }), 'ERR_NOT_FOUND');
    await rejectsWith(t.plugin.retryDeadLetters({ replicator: 'nope' }), 'ERR_NOT_FOUND');
    await rejectsWith(t.plugin.getDeadLetters({ replicator: 42 }), 'ERR_CONFIG', 'replicator');
    await rejectsWith(t.plugin.getDeadLetters({ limit: 'ten' }), 'ERR_CONFIG', 'limit');
    await rejectsWith(t.plugin.getDeadLetters({ offset: -1 }), 'ERR_CONFIG', 'offset');
    await rejectsWith(t.plugin.retryDeadLetters({ ids: 'all' }), 'ERR_CONFIG', 'ids');
    await rejectsWith(t.plugin.retryDeadLetters({ ids: [1, 'x'] }), 'ERR_CONFIG', 'ids');
    await rejectsWith(t.plugin.discardDeadLetters(), 'ERR_CONFIG', 'ids');
    await rejectsWith(t.plugin.discardDeadLetters(7), 'ERR_CONFIG', 'ids');
    assert.equal(await t.plugin.discardDeadLetters([]), 0);
    // No log resource: nothing to list or retry.
    assert.equal(t.source.resources.replicator_log, undefined);
    assert.deepEqual(await t.plugin.getReplicatorLogs(), []);
    assert.deepEqual(await t.plugin.retryFailedReplicators(), { retried: 0, success: 0, failed: 0, superseded: 0, skipped: 0 });
  } finally {
    await t.close();
  }
});
