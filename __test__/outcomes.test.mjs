// The engine → JavaScript outcome channel is coalesced and sends a delivered or skipped change
// one by one only while something listens for it (otherwise a count): every listener, ticket
// and statistic must still see every change.
import assert from 'node:assert/strict';
import test from 'node:test';

import { ReplicatorPlugin } from '../plugin.js';
import { memoryDb, usersResource } from './helpers/db.mjs';

/** A plugin on a fresh memory:// source with one s3db replicator, and a spy on engine messages. */
async function setup(t, options = {}) {
  const source = await memoryDb('outcomes-src');
  const target = await memoryDb('outcomes-dst');
  const users = await usersResource(source);
  const plugin = new ReplicatorPlugin({
    replicators: [{ driver: 's3db', client: target, resources: { users: { resource: 'users', shouldReplicate: (data) => data.tag !== 'skip' } } }],
    ...options,
  });
  await source.usePlugin(plugin);
  const messages = [];
  const original = plugin._onEngineMessage.bind(plugin);
  plugin._onEngineMessage = (message) => {
    messages.push(JSON.parse(message));
    return original(message);
  };
  t.after(async () => {
    await plugin.stop();
    await source.disconnect();
    await target.disconnect();
  });
  return { plugin, users, target, messages };
}

const records = (from, count, extra = {}) => Array.from({ length: count }, (_, i) => ({ id: `u${from + i}`, name: `user ${from + i}`, ...extra }));
const detailed = (messages, status) => messages.flatMap((m) => m.outcomes ?? []).filter((o) => o.status === status);

test('without listeners, delivered and skipped changes arrive as counts; the totals and stats still count each', async (t) => {
  const { plugin, users, target, messages } = await setup(t);
  await Promise.all(records(0, 200).map((r) => users.insert(r)));
  await Promise.all(records(200, 30, { tag: 'skip' }).map((r) => users.insert(r)));
  await plugin.flush();
  assert.equal(detailed(messages, 'replicated').length, 0, 'no delivered change was sent one by one');
  assert.equal(detailed(messages, 'skipped').length, 0, 'no skipped change was sent one by one');
  assert.equal(messages.reduce((n, m) => n + (m.replicated ?? 0), 0), 200);
  assert.equal(plugin.stats.totalReplications, 200);
  assert.equal(plugin.stats.totalSkipped, 30);
  const [stats] = (await plugin.getReplicatorStats()).replicators;
  assert.equal(stats.status.delivered, 200);
  assert.equal(stats.status.skipped, 30);
  assert.equal((await target.resources.users.list()).length, 200);
});

test('a listener added later hears every change settled after it subscribed, and stops hearing once removed', async (t) => {
  const { plugin, users, messages } = await setup(t);
  await Promise.all(records(0, 50).map((r) => users.insert(r)));
  await plugin.flush();
  const replicated = [];
  const skipped = [];
  const onReplicated = (e) => replicated.push(e);
  const onSkipped = (e) => skipped.push(e);
  plugin.on('plg:replicator:replicated', onReplicated);
  plugin.on('plg:replicator:skipped', onSkipped);
  await Promise.all(records(50, 100).map((r) => users.insert(r)));
  await Promise.all(records(150, 10, { tag: 'skip' }).map((r) => users.insert(r)));
  await plugin.flush();
  assert.deepEqual(replicated.map((e) => e.recordId).sort(), records(50, 100).map((r) => r.id).sort());
  assert.ok(replicated.every((e) => e.success === true && e.operation === 'inserted' && e.resourceName === 'users'));
  assert.deepEqual(skipped.map((e) => e.recordId).sort(), records(150, 10).map((r) => r.id).sort());
  plugin.off('plg:replicator:replicated', onReplicated);
  plugin.off('plg:replicator:skipped', onSkipped);
  const before = messages.length;
  await Promise.all(records(200, 40).map((r) => users.insert(r)));
  await plugin.flush();
  assert.equal(replicated.length, 100, 'no event after the listener was removed');
  assert.equal(detailed(messages.slice(before), 'replicated').length, 0, 'counts again once nobody listens');
  assert.equal(plugin.stats.totalReplications, 190);
  assert.equal(plugin.stats.totalSkipped, 10);
});

test("the database's replicator:success listeners and verbose logging get each change", async (t) => {
  const { plugin, users } = await setup(t);
  const success = [];
  plugin.database.on('replicator:success', (e) => success.push(e));
  await Promise.all(records(0, 25).map((r) => users.insert(r)));
  await plugin.flush();
  assert.equal(success.length, 25);
  assert.ok(success.every((e) => e.replicator && e.resource === 'users' && e.operation === 'inserted'));

  const { plugin: verbose, users: verboseUsers } = await setup(t, { verbose: true });
  const lines = [];
  verbose.logger = { info: (fields, message) => lines.push(message), warn() {}, error() {}, debug() {} };
  await Promise.all(records(0, 5).map((r) => verboseUsers.insert(r)));
  await verbose.flush();
  assert.equal(lines.filter((m) => /^replicated inserted users\//.test(m)).length, 5);
});

test('replicateBatch gets a result for each record and failures always arrive in full, with no listener', { timeout: 60_000 }, async (t) => {
  const { plugin, messages } = await setup(t);
  const result = await plugin.replicateBatch('users', records(0, 300));
  assert.equal(result.total, 300);
  assert.equal(result.successful, 300);
  assert.deepEqual(result.errors, []);
  const errors = [];
  plugin.on('plg:replicator:error', (e) => errors.push(e));
  // The destination's resource rejects a record without its required `name`: a permanent
  // failure at once (s3db.js labels it status 500, which must not pass for an outage).
  const bad = await plugin.replicateBatch('users', [{ id: 'bad' }]);
  assert.equal(bad.total, 1);
  assert.equal(bad.successful, 0);
  assert.equal(bad.errors.length, 1);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].recordId, 'bad');
  assert.equal(errors[0].attempts, 1);
  assert.notEqual(errors[0].held, true);
  assert.ok(detailed(messages, 'failed').length >= 1);
});

test('outcomes under load are coalesced into far fewer messages than batches', async (t) => {
  const { plugin, users, messages } = await setup(t, { batchSize: 1, concurrency: 8 });
  await Promise.all(records(0, 400).map((r) => users.insert(r)));
  await plugin.flush();
  const [stats] = (await plugin.getReplicatorStats()).replicators;
  assert.equal(stats.status.delivered, 400);
  // 400 one-change batches; at most one message per 2 ms window, plus flush()'s barrier.
  assert.ok(stats.status.batches >= 400, `batchSize 1 writes one change per batch (${stats.status.batches})`);
  assert.ok(messages.length < stats.status.batches / 2, `${messages.length} messages for ${stats.status.batches} batches`);
});
