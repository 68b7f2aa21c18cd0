// SQL destinations end to end: s3db.js → plugin → Rust engine → PostgreSQL / MariaDB / libSQL,
// read back with the servers' own clients.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { ReplicatorPlugin } from '../plugin.js';
import { collect, memoryDb } from './helpers/db.mjs';
import { closedPort } from './helpers/http-server.mjs';
import { MYSQL_URL, PG_URL, myExec, myRows, pgExec, pgRows, sqliteRows, unique } from './helpers/sql.mjs';

const ATTRIBUTES = { name: 'string|required', age: 'number|optional', active: 'boolean|optional', meta: 'json|optional' };

async function start(replicator, options = {}) {
  const db = await memoryDb('sql');
  const plugin = new ReplicatorPlugin({ ...options, replicators: [replicator] });
  const events = collect(plugin, 'table_created', 'table_altered', 'schema_sync_completed', 'plg:replicator:error', 'plg:replicator:replicated');
  await db.usePlugin(plugin);
  return { db, plugin, events };
}

test('postgresql: schema sync creates the table; inserts, updates and deletes keep their types', async () => {
  const table = unique('users');
  const { db, plugin, events } = await start({
    driver: 'postgresql',
    resources: { users: table },
    config: { connectionString: PG_URL, schemaSync: { enabled: true } },
  });
  try {
    const users = await db.createResource({ name: 'users', attributes: ATTRIBUTES });
    assert.equal(events.table_created.length, 1);
    assert.equal(events.table_created[0].tableName, table);
    assert.deepEqual(events.table_created[0].attributes.sort(), ['active', 'age', 'meta', 'name']);
    await users.insert({ id: 'a', name: "O'Brien ☃", age: 41.5, active: true, meta: { tags: ['x'], n: 1 } });
    await users.insert({ id: 'b', name: 'Bea', age: 30 });
    await users.update('a', { age: 42 });
    await users.delete('b');
    await plugin.flush();
    assert.deepEqual(events['plg:replicator:error'], []);
    const rows = pgRows(`SELECT id, name, age, active, meta FROM "${table}" ORDER BY id`);
    assert.deepEqual(rows, [{ id: 'a', name: "O'Brien ☃", age: 42, active: true, meta: { tags: ['x'], n: 1 } }]);
    const types = pgRows(`SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '${table}' ORDER BY column_name`);
    assert.deepEqual(Object.fromEntries(types.map((t) => [t.column_name, t.data_type])), {
      active: 'boolean', age: 'double precision', id: 'character varying', meta: 'jsonb', name: 'text',
    });

    // A new attribute, then syncSchemas(): the column is added and filled from then on.
    await users.updateAttributes({ ...ATTRIBUTES, phone: 'string|maxlength:20' });
    await plugin.syncSchemas();
    assert.deepEqual(events.table_altered.map((e) => e.addedColumns), [['phone']]);
    await users.update('a', { phone: '+55 11 5555' });
    await plugin.flush();
    assert.equal(pgRows(`SELECT phone FROM "${table}" WHERE id = 'a'`)[0].phone, '+55 11 5555');
  } finally {
    await db.disconnect();
    pgExec(`DROP TABLE IF EXISTS "${table}"`);
  }
});

test('postgresql: a row the database rejects fails that record only', async () => {
  const table = unique('scores');
  pgExec(`CREATE TABLE "${table}" (id VARCHAR(255) PRIMARY KEY, name TEXT, age DOUBLE PRECISION CHECK (age >= 0))`);
  const { db, plugin, events } = await start({ driver: 'postgres', resources: { users: table }, config: { connectionString: PG_URL } }, { batchSize: 50 });
  try {
    const users = await db.createResource({ name: 'users', attributes: ATTRIBUTES });
    await Promise.all(Array.from({ length: 20 }, (_, i) => users.insert({ id: `r${i}`, name: `n${i}`, age: i === 7 ? -1 : i })));
    await plugin.flush();
    assert.deepEqual(events['plg:replicator:error'].map((e) => e.recordId), ['r7']);
    assert.equal(events['plg:replicator:error'][0].code, 'ERR_SINK_REJECTED');
    assert.equal(pgRows(`SELECT count(*)::int AS n FROM "${table}"`)[0].n, 19);
  } finally {
    await db.disconnect();
    pgExec(`DROP TABLE IF EXISTS "${table}"`);
  }
});

test('postgresql: validate-only with onMismatch error stops the installation', async () => {
  const table = unique('strict');
  pgExec(`CREATE TABLE "${table}" (id VARCHAR(255) PRIMARY KEY, name TEXT)`);
  const db = await memoryDb('sql');
  await db.createResource({ name: 'users', attributes: ATTRIBUTES });
  const plugin = new ReplicatorPlugin({
    replicators: [{ driver: 'postgresql', resources: { users: table }, config: { connectionString: PG_URL, schemaSync: { enabled: true, strategy: 'validate-only', onMismatch: 'error' } } }],
  });
  try {
    await assert.rejects(db.usePlugin(plugin), (e) => {
      assert.equal(e.name, 'ReplicatorError');
      assert.match(e.message, /missing columns: active, age, meta/);
      return true;
    });
    const users = db.resources.users;
    assert.equal(users.listenerCount('inserted'), 0, 'a failed installation leaves no listener behind');
    await assert.rejects(plugin.replicateBatch('users', [{ id: 'x', name: 'x' }]), (e) => e.code === 'ERR_STOPPED');
  } finally {
    await plugin.stop().catch(() => {});
    await db.disconnect();
    pgExec(`DROP TABLE IF EXISTS "${table}"`);
  }
});

test('mariadb: every action replicates by default, with the audit logTable', async () => {
  const table = unique('orders');
  const log = unique('audit');
  const { db, plugin, events } = await start({
    driver: 'mariadb',
    resources: { orders: [{ table, actions: ['inserted', 'updated', 'deleted'] }] },
    config: { connectionString: MYSQL_URL, logTable: log, schemaSync: { enabled: true } },
  });
  try {
    const orders = await db.createResource({ name: 'orders', attributes: { total: 'number', paid: 'boolean|optional', items: 'array|optional' } });
    await orders.insert({ id: 'o1', total: 10.5, paid: false, items: [{ sku: 'a' }] });
    await orders.insert({ id: 'o2', total: 3 });
    await orders.update('o1', { paid: true });
    await orders.delete('o2');
    await plugin.flush();
    assert.deepEqual(events['plg:replicator:error'], []);
    const rows = myRows(table, ['id', 'total', 'paid', 'items']);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].id, 'o1');
    assert.equal(rows[0].total, 10.5);
    assert.equal(rows[0].paid, 1);
    assert.deepEqual(typeof rows[0].items === 'string' ? JSON.parse(rows[0].items) : rows[0].items, [{ sku: 'a' }]);
    const audit = myRows(log, ['id', 'resource', 'operation', 'record_id']);
    // One row per operation; per record in order (records in different lanes interleave freely).
    const perRecord = (id) => audit.filter((r) => r.record_id === id).map((r) => r.operation);
    assert.equal(audit.length, 4);
    assert.deepEqual(perRecord('o1'), ['inserted', 'updated']);
    assert.deepEqual(perRecord('o2'), ['inserted', 'deleted']);
  } finally {
    await db.disconnect();
    myExec(`DROP TABLE IF EXISTS \`${table}\`; DROP TABLE IF EXISTS \`${log}\``);
  }
});

test('planetscale (MySQL protocol, TLS off for the local server) and turso (local libSQL file)', async () => {
  const table = unique('ps');
  const dir = await mkdtemp(path.join(tmpdir(), 's3db-replicator-turso-'));
  const file = path.join(dir, 'replica.db');
  const my = new URL(MYSQL_URL);
  const db = await memoryDb('sql');
  const plugin = new ReplicatorPlugin({
    replicators: [
      { driver: 'planetscale', resources: { users: table }, config: { host: my.hostname, port: Number(my.port || 3306), username: decodeURIComponent(my.username), database: my.pathname.slice(1), ssl: false, schemaSync: { enabled: true } } },
      { driver: 'turso', resources: { users: 'users' }, config: { url: `file:${file}`, schemaSync: { enabled: true } } },
    ],
  });
  const errors = collect(plugin, 'plg:replicator:error');
  await db.usePlugin(plugin);
  try {
    const users = await db.createResource({ name: 'users', attributes: ATTRIBUTES });
    for (let i = 0; i < 30; i++) await users.insert({ id: `u${i}`, name: `n${i}`, age: i, active: i % 2 === 0, meta: { i } });
    await users.update('u3', { name: 'updated' });
    await users.delete('u4');
    await plugin.flush();
    assert.deepEqual(errors['plg:replicator:error'], []);
    assert.equal(myRows(table, ['id']).length, 29);
    const lite = sqliteRows(file, `SELECT id, name, age, active, meta FROM users WHERE id IN ('u3', 'u2') ORDER BY id`);
    assert.deepEqual(lite, [
      { id: 'u2', name: 'n2', age: 2, active: 1, meta: '{"i":2}' },
      { id: 'u3', name: 'updated', age: 3, active: 0, meta: '{"i":3}' },
    ]);
    assert.equal(sqliteRows(file, 'SELECT count(*) AS n FROM users')[0].n, 29);
  } finally {
    await db.disconnect();
    myExec(`DROP TABLE IF EXISTS \`${table}\``);
    await rm(dir, { recursive: true, force: true });
  }
});

test('a PostgreSQL server that is down does not block start-up: schema sync waits for it, the real cause is named, and changes arrive once it is back', { timeout: 60_000 }, async (t) => {
  const port = await closedPort();
  const table = unique('later');
  const real = new URL(PG_URL);
  const url = new URL(PG_URL);
  url.port = String(port);
  const started = performance.now();
  const { db, plugin, events } = await start(
    { driver: 'postgresql', resources: { users: table }, config: { connectionString: url.href, connectionTimeoutMillis: 1000, schemaSync: { enabled: true } } },
    { circuitBreaker: { failureThreshold: 2, resetTimeout: 100, maxResetTimeout: 200 }, retryDelay: 50 },
  );
  const deferred = [];
  plugin.on('schema_sync_deferred', (e) => deferred.push(e));
  let server = null;
  const sockets = new Set();
  t.after(async () => {
    await plugin.stop();
    await db.disconnect();
    for (const s of sockets) s.destroy();
    server?.close();
    pgExec(`DROP TABLE IF EXISTS "${table}"`);
  });
  const users = await db.createResource({ name: 'users', attributes: ATTRIBUTES });
  assert.ok(performance.now() - started < 5000, `start-up took ${Math.round(performance.now() - started)} ms`);
  assert.equal(deferred.length, 1, 'the schema sync is deferred, not failed');
  assert.equal(deferred[0].tableName, table);
  assert.match(deferred[0].error, /refused/i, 'the underlying cause, not only "pool timed out"');
  await users.insert({ id: 'a', name: 'Ana', age: 30 });
  // The server comes back (a proxy on the port the replicator uses).
  server = net.createServer((socket) => {
    const upstream = net.connect(Number(real.port || 5432), real.hostname);
    sockets.add(socket).add(upstream);
    socket.pipe(upstream).pipe(socket);
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  await plugin.flush();
  assert.deepEqual(pgRows(`SELECT id, name, age FROM "${table}"`), [{ id: 'a', name: 'Ana', age: 30 }], 'the deferred sync created the table, then the change arrived');
  assert.deepEqual(events['plg:replicator:error'].filter((e) => e.recordId !== null && !e.held), [], 'no change failed');
});

test('primaryKey: a hand-made PostgreSQL table keyed by order_id takes inserts, updates and deletes', async (t) => {
  const table = unique('orders');
  pgExec(`CREATE TABLE "${table}" (order_id TEXT PRIMARY KEY, name TEXT, age DOUBLE PRECISION)`);
  const { db, plugin, events } = await start({
    driver: 'postgresql',
    resources: { users: { table, primaryKey: 'order_id' } },
    config: { connectionString: PG_URL, schemaSync: { enabled: true } },
  });
  t.after(async () => {
    await db.disconnect();
    pgExec(`DROP TABLE IF EXISTS "${table}"`);
  });
  const users = await db.createResource({ name: 'users', attributes: { name: 'string', age: 'number|optional' } });
  await users.insert({ id: 'o1', name: 'first', age: 1 });
  await users.insert({ id: 'o2', name: 'second' });
  await users.update('o1', { age: 2 });
  await users.delete('o2');
  await plugin.flush();
  assert.deepEqual(events['plg:replicator:error'], []);
  assert.deepEqual(pgRows(`SELECT order_id, name, age FROM "${table}"`), [{ order_id: 'o1', name: 'first', age: 2 }]);
  const cols = pgRows(`SELECT column_name FROM information_schema.columns WHERE table_name = '${table}' ORDER BY column_name`).map((c) => c.column_name);
  assert.deepEqual(cols, ['age', 'name', 'order_id'], 'no id column is added');
  assert.throws(
    () => new ReplicatorPlugin({ replicators: [{ driver: 'postgresql', resources: { users: { table, primaryKy: 'order_id' } }, config: { connectionString: PG_URL } }] }),
    (e) => e.context.option === 'replicators[0].resources.users.primaryKy' && e.description.includes("did you mean 'primaryKey'?"),
  );
});
