// AWS destinations inside a real s3db.js database, against a real AWS-compatible server
// (moto on loopback, read back with boto3): the spec's SQS and DynamoDB examples.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ReplicatorPlugin } from '../plugin.js';
import { AWS_ENDPOINT, awsConfig, createBucket, createQueue, createTable, drainQueue, scanTable, unique } from './helpers/aws.mjs';
import { collect, memoryDb } from './helpers/db.mjs';

async function start(t, replicators, options = {}) {
  const db = await memoryDb('aws');
  const plugin = new ReplicatorPlugin({ ...options, replicators });
  const events = collect(plugin, 'plg:replicator:error', 'plg:replicator:replicated');
  await db.usePlugin(plugin);
  t.after(async () => {
    await plugin.stop();
    await db.disconnect();
  });
  return { db, plugin, events };
}

const failures = (events) => events['plg:replicator:error'].filter((e) => e.recordId !== null);

test("sqs: the spec's basic configuration (FIFO queue, messageGroupId, deduplicationId) delivers every change, two updates of one record included", async (t) => {
  const queueUrl = createQueue(`${unique('events')}.fifo`);
  // The spec's example, with the local server's endpoint and test credentials.
  const { db, plugin, events } = await start(t, [{
    driver: 'sqs',
    resources: ['orders', 'users'],
    config: { ...awsConfig(), queueUrl, messageGroupId: 's3db-events', deduplicationId: true },
  }]);
  const users = await db.createResource({ name: 'users', attributes: { name: 'string', n: 'number|optional' } });
  const orders = await db.createResource({ name: 'orders', attributes: { total: 'number' } });
  await users.insert({ id: 'u1', name: 'Ana', n: 0 });
  await users.update('u1', { n: 1 });
  await users.update('u1', { n: 2 });
  await orders.insert({ id: 'o.1:x', total: 9.5 });
  await users.delete('u1');
  await plugin.flush();
  assert.deepEqual(failures(events), []);
  const messages = drainQueue(queueUrl);
  const seen = (resource) => messages.filter((m) => m.body.resource === resource).map((m) => `${m.body.action} ${m.body.data.id} ${m.body.data.n ?? m.body.data.total}`);
  // Per-record order (different records travel in parallel lanes, see the README).
  assert.deepEqual(seen('users'), ['insert u1 0', 'update u1 1', 'update u1 2', 'delete u1 2'], 'both updates kept, in order');
  assert.deepEqual(seen('orders'), ['insert o.1:x 9.5']);
  const update = messages.find((m) => m.body.action === 'update');
  assert.equal(update.body.source, 's3db-replicator');
  assert.equal(update.body.before.n, 0);
  assert.match(update.body.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual(update.attributes, { resource: 'users', action: 'update' });
  assert.equal(update.groupId, 's3db-events');
  const { id: outboxId } = plugin._engine.outbox();
  assert.ok(messages.every((m) => m.dedupId.startsWith(`${outboxId}:`)), 'deduplication ids are the changes\' identities');
  assert.equal(new Set(messages.map((m) => m.dedupId)).size, 5);
});

test("sqs: the spec's advanced configuration (queues per resource, defaultQueueUrl, messageAttributes, transform)", async (t) => {
  const orderQ = createQueue(unique('order-events'));
  const general = createQueue(unique('general-events'));
  const { db, plugin, events } = await start(t, [{
    driver: 'sqs',
    config: {
      ...awsConfig(),
      queues: { orders: orderQ },
      defaultQueueUrl: general,
      messageAttributes: { source: { StringValue: 'production-db', DataType: 'String' }, version: { StringValue: '1.0', DataType: 'String' } },
    },
    resources: {
      orders: true,
      payments: { transform: (data) => ({ payment_id: data.id, amount: data.amount, is_large_payment: data.amount > 1000 }) },
    },
  }]);
  const orders = await db.createResource({ name: 'orders', attributes: { total: 'number' } });
  const payments = await db.createResource({ name: 'payments', attributes: { amount: 'number' } });
  await orders.insert({ id: 'o1', total: 1 });
  await payments.insert({ id: 'p1', amount: 5000 });
  await plugin.flush();
  assert.deepEqual(failures(events), []);
  const o = drainQueue(orderQ);
  assert.deepEqual(o.map((m) => m.body.data), [{ id: 'o1', total: 1 }]);
  assert.deepEqual(o[0].attributes, { source: 'production-db', version: '1.0', resource: 'orders', action: 'insert' });
  const p = drainQueue(general);
  assert.deepEqual(p.map((m) => m.body.data), [{ payment_id: 'p1', amount: 5000, is_large_payment: true, id: 'p1' }]);
  assert.equal(p[0].groupId, null, 'a standard queue gets no message group');
});

test('sqs: a resource without a queue fails at construction, naming it', () => {
  assert.throws(
    () => new ReplicatorPlugin({ replicators: [{ driver: 'sqs', resources: ['orders', 'users'], config: { ...awsConfig(), queues: { orders: 'http://127.0.0.1:1/1/q' } } }] }),
    (e) => e.code === 'ERR_CONFIG' && e.context.option === 'replicators[0].resources.users' && /resource 'users' has no queue/.test(e.message),
  );
});

test("dynamodb: the spec's composite-key configuration; values keep their types; deletes by key", async (t) => {
  const users = unique('UsersTable');
  const products = unique('ProductsTable');
  const ordersT = unique('OrdersTable');
  createTable(users, 'id');
  createTable(products, 'productId');
  createTable(ordersT, 'customerId', 'orderId');
  const { db, plugin, events } = await start(t, [{
    driver: 'dynamodb',
    // The spec's region is us-west-2; the test tables live in the test server's us-east-1.
    config: { region: 'us-east-1', endpoint: AWS_ENDPOINT, credentials: { accessKeyId: 'test', secretAccessKey: 's3cr3t-key', sessionToken: 'tok3n' } },
    resources: {
      users,
      products: { table: products, primaryKey: 'productId', actions: ['inserted', 'updated', 'deleted'] },
      orders: { table: ordersT, primaryKey: 'customerId', sortKey: 'orderId', actions: ['inserted', 'updated', 'deleted'] },
    },
  }]);
  const u = await db.createResource({ name: 'users', attributes: { name: 'string', age: 'number', active: 'boolean', tags: 'array|items:string', meta: 'json' } });
  const p = await db.createResource({ name: 'products', attributes: { productId: 'string', price: 'number' } });
  const o = await db.createResource({ name: 'orders', attributes: { customerId: 'string', orderId: 'string', total: 'number' } });
  await u.insert({ id: 'u1', name: 'Ana', age: 41.5, active: true, tags: ['a', 'b'], meta: { plan: { tier: 2 } } });
  await p.insert({ id: 'p1', productId: 'SKU-1', price: 10 });
  await p.update('p1', { price: 12 });
  await o.insert({ id: 'x1', customerId: 'c1', orderId: 'A', total: 3 });
  await o.insert({ id: 'x2', customerId: 'c1', orderId: 'B', total: 4 });
  await o.delete('x2');
  await plugin.flush();
  assert.deepEqual(failures(events), []);
  assert.deepEqual(scanTable(users), [{ id: 'u1', name: 'Ana', age: 41.5, active: true, tags: ['a', 'b'], meta: { plan: { tier: 2 } } }]);
  assert.deepEqual(scanTable(products), [{ id: 'p1', productId: 'SKU-1', price: 12 }]);
  assert.deepEqual(scanTable(ordersT), [{ id: 'x1', customerId: 'c1', orderId: 'A', total: 3 }]);
  const [info] = await plugin.listReplicators();
  assert.doesNotMatch(JSON.stringify(info), /s3cr3t-key|tok3n/, 'no secret in listReplicators()');
});
