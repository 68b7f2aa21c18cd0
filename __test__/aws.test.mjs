// AWS destinations inside a real s3db.js database, against a real AWS-compatible server
// (moto on loopback, read back with boto3): the spec's SQS and DynamoDB examples.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ReplicatorPlugin } from '../plugin.js';
import { Database } from 's3db.js/lite';

import { AWS_ENDPOINT, awsConfig, createBucket, createQueue, createTable, drainQueue, listObjects, scanTable, unique } from './helpers/aws.mjs';
import { changeFailures, installed, visible } from './helpers/db.mjs';
import { startTcpProxy } from './helpers/tcp-proxy.mjs';

const start = (t, replicators, options) => installed(t, 'aws', replicators, options);

const failures = changeFailures;

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

test('s3db on S3: an s3:// destination with endpoint (an S3-compatible server) and the path-style form both replicate; read back by s3db.js and boto3; no secret echoed', async (t) => {
  const bucket = unique('replica').toLowerCase();
  createBucket(bucket);
  const { host } = new URL(AWS_ENDPOINT);
  const { db, plugin, events } = await start(t, [
    // The spec's form, pointed at the local server: s3db.js itself would send s3:// to AWS.
    { id: 'copy', driver: 's3db', resources: ['users'], config: { connectionString: `s3://test:s3cr3t-key@${bucket}/copy`, endpoint: AWS_ENDPOINT } },
    // s3db.js's own form for a compatible server: http(s)://KEY:SECRET@host/bucket/prefix.
    { id: 'mirror', driver: 's3db', resources: { users: 'people' }, config: { connectionString: `http://test:s3cr3t-key@${host}/${bucket}/mirror` } },
  ]);
  const users = await db.createResource({ name: 'users', attributes: { name: 'string', n: 'number' } });
  for (let i = 0; i < 20; i++) await users.insert({ id: `u${i}`, name: `user ${i}`, n: i });
  await users.update('u3', { n: 300 });
  await users.delete('u7');
  await plugin.flush();
  assert.deepEqual(failures(events), []);

  for (const [prefix, resource] of [['copy', 'users'], ['mirror', 'people']]) {
    const replica = new Database({ connectionString: `http://test:s3cr3t-key@${host}/${bucket}/${prefix}`, logLevel: 'silent' });
    await replica.connect();
    try {
      const rows = (await replica.resources[resource].getAll()).map(visible).sort((a, b) => a.n - b.n);
      assert.equal(rows.length, 19, `${prefix}: every record but the deleted one`);
      assert.deepEqual(rows.find((r) => r.id === 'u3'), { id: 'u3', name: 'user 3', n: 300 });
      assert.equal(rows.find((r) => r.id === 'u7'), undefined);
    } finally {
      await replica.disconnect();
    }
    const keys = listObjects(bucket, `${prefix}/`);
    assert.ok(keys.some((k) => k.endsWith('s3db.json')), `${prefix}: the destination database's metadata is in the bucket`);
  }
  const shown = JSON.stringify(await plugin.listReplicators());
  assert.doesNotMatch(shown, /s3cr3t-key/, 'no secret in listReplicators()');
  assert.match(shown, new RegExp(bucket), 'the destination is still recognisable');
});

test('s3db on S3: endpoint with a non-s3:// destination is refused at construction, naming the option', () => {
  assert.throws(
    () => new ReplicatorPlugin({ replicators: [{ driver: 's3db', resources: ['users'], config: { connectionString: 'file://./backup', endpoint: AWS_ENDPOINT } }] }),
    (e) => e.code === 'ERR_CONFIG' && e.context.option === 'replicators[0].config.endpoint' && /only applies to an s3:\/\/ connectionString/.test(e.message),
  );
});

test('sqs, dynamodb and s3db on S3: the server stopped for 10 s mid-stream loses nothing; every change arrives once it is back', async (t) => {
  const proxy = await startTcpProxy(AWS_ENDPOINT);
  t.after(() => proxy.close());
  const queueUrl = createQueue(unique('outage'));
  const table = unique('OutageTable');
  createTable(table, 'id');
  const bucket = unique('outage').toLowerCase();
  createBucket(bucket);
  const { db, plugin, events } = await start(t, [
    { id: 'queue', driver: 'sqs', resources: ['items'], config: { ...awsConfig(proxy.url), queueUrl } },
    { id: 'table', driver: 'dynamodb', resources: { items: table }, config: awsConfig(proxy.url) },
    { id: 'bucket', driver: 's3db', resources: ['items'], config: { connectionString: `s3://test:test@${bucket}/copy`, endpoint: proxy.url } },
  ], { circuitBreaker: { failureThreshold: 2, resetTimeout: 200, maxResetTimeout: 1000 } });
  const opened = new Set();
  const allOpen = new Promise((resolve) => plugin.on('plg:replicator:circuit-open', (e) => {
    opened.add(e.replicator);
    if (opened.size === 3) resolve();
  }));
  const items = await db.createResource({ name: 'items', attributes: { v: 'number' } });
  for (let i = 0; i < 20; i++) await items.insert({ id: `i${i}`, v: 0 });
  await plugin.flush();

  await proxy.down();
  const downAt = Date.now();
  // The application keeps writing while the destination is unreachable.
  for (let i = 20; i < 40; i++) await items.insert({ id: `i${i}`, v: 0 });
  for (let i = 0; i < 40; i += 2) await items.update(`i${i}`, { v: 1 });
  await items.delete('i1');
  await allOpen;
  // The outage itself lasts 10 s (the scenario, not a synchronisation).
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, 10_000 - (Date.now() - downAt))));
  await proxy.up();
  await plugin.flush();

  assert.deepEqual(failures(events), [], 'no change failed');
  assert.deepEqual(await plugin.getDeadLetters(), [], 'nothing dead-lettered');
  const messages = drainQueue(queueUrl);
  const last = new Map();
  for (const m of messages) last.set(m.body.data.id, `${m.body.action} ${m.body.data.v}`);
  assert.equal(last.size, 40, 'every record reached the queue');
  assert.equal(last.get('i1'), 'delete 0');
  assert.equal(last.get('i38'), 'update 1');
  assert.equal(last.get('i39'), 'insert 0');
  const rows = scanTable(table);
  assert.equal(rows.length, 39, 'every record but the deleted one is in the table');
  assert.ok(rows.every((r) => r.v === (Number(r.id.slice(1)) % 2 === 0 ? 1 : 0)), 'with its last value');
  const replica = new Database({ connectionString: `${AWS_ENDPOINT.replace('//', '//test:test@')}/${bucket}/copy`, logLevel: 'silent' });
  await replica.connect();
  t.after(() => replica.disconnect());
  const copied = (await replica.resources.items.getAll()).map(visible);
  assert.equal(copied.length, 39, 'every record but the deleted one is in the S3 copy');
  assert.ok(copied.every((r) => r.v === (Number(r.id.slice(1)) % 2 === 0 ? 1 : 0)), 'with its last value');
});

test('s3db on S3: an unreachable server is reported readably (the cause, not s3db.js\'s wrapping) and without the secret', async (t) => {
  const { db, plugin, events } = await start(t, [{
    driver: 's3db', resources: ['users'],
    config: { connectionString: 's3://test:s3cr3t-key@nowhere/copy', endpoint: 'http://127.0.0.1:1' },
  }], { maxRetries: 0, circuitBreaker: false });
  const users = await db.createResource({ name: 'users', attributes: { name: 'string' } });
  await users.insert({ id: 'u1', name: 'Ana' });
  await plugin.flush();
  const [failure] = failures(events);
  assert.equal(failure?.recordId, 'u1', JSON.stringify(events['plg:replicator:error']));
  assert.match(failure.error, /ECONNREFUSED 127\.0\.0\.1:1/);
  assert.doesNotMatch(failure.error, /Unknown error|\| Stack:|s3cr3t-key/);
});
