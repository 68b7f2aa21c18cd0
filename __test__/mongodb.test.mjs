// The mongodb driver inside a real s3db.js database, against a real MongoDB-wire server
// (SecantusDB on loopback, read back with pymongo): the spec's MongoDB examples.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ReplicatorPlugin } from '../plugin.js';
import { MONGODB_HOST, MONGODB_PORT, createUser, fieldTypes, findAll, indexNames, mongoUrl, uniqueDb } from './helpers/mongodb.mjs';
import { changeFailures, installed } from './helpers/db.mjs';

const start = (t, replicators, options) => installed(t, 'mongo', replicators, options);

const failures = changeFailures;
const strip = ({ _id, ...rest }) => ({ _id, ...rest });

test("mongodb: the spec's basic configuration (host/port/database/username/password, logCollection)", async (t) => {
  const database = uniqueDb('production_db');
  createUser(database, 'replicator_user', 'secure_password');
  // The spec's example, with the test server's host and port and a database of its own.
  const { db, plugin, events } = await start(t, [{
    driver: 'mongodb',
    config: {
      host: MONGODB_HOST,
      port: MONGODB_PORT,
      database,
      username: 'replicator_user',
      password: 'secure_password',
      logCollection: 'replication_log', // Optional: log all operations
    },
    resources: {
      users: 'users_collection',
      products: 'products_collection',
    },
  }]);
  const users = await db.createResource({ name: 'users', attributes: { name: 'string', n: 'number' } });
  const products = await db.createResource({ name: 'products', attributes: { title: 'string' } });
  await users.insert({ id: 'u1', name: 'Ana', n: 0 });
  await users.update('u1', { n: 1 });
  await users.update('u1', { n: 2 });
  await users.insert({ id: 'u2', name: 'Bo', n: 5 });
  await users.delete('u2');
  await products.insert({ id: 'p1', title: 'Pen' });
  await plugin.flush();
  assert.deepEqual(failures(events), []);
  // `_id` is the record id: the updates replaced the inserted document, the delete found it.
  assert.deepEqual(findAll(database, 'users_collection').map(strip), [{ _id: 'u1', id: 'u1', name: 'Ana', n: 2 }]);
  assert.deepEqual(findAll(database, 'products_collection'), [{ _id: 'p1', id: 'p1', title: 'Pen' }]);
  const log = findAll(database, 'replication_log');
  const seen = log.map((l) => `${l.resource_name} ${l.operation} ${l.record_id}`).sort();
  assert.deepEqual(seen, ['products insert p1', 'users delete u2', 'users insert u1', 'users insert u2', 'users update u1', 'users update u1']);
  assert.ok(log.every((l) => typeof l.timestamp.$date === 'string'), 'the time is a BSON date');
  assert.deepEqual(log.find((l) => l.operation === 'insert' && l.record_id === 'u1').data, { id: 'u1', name: 'Ana', n: 0 });
  assert.ok(indexNames(database, 'replication_log').includes('timestamp_1'), 'the log is indexed on time');
  const [info] = await plugin.listReplicators();
  assert.doesNotMatch(JSON.stringify(info), /secure_password/, 'no password in listReplicators()');
});

test("mongodb: the spec's advanced configuration (connection string, client options, { collection, actions }, several collections); values keep their types", async (t) => {
  const database = uniqueDb('analytics');
  createUser(database, 'admin', 'secret');
  const { db, plugin, events } = await start(t, [{
    driver: 'mongodb',
    config: {
      // The spec's connection string points at a three-host replica set; this is the test server.
      connectionString: mongoUrl(database, 'admin', 'secret'),
      options: {
        useUnifiedTopology: true,
        useNewUrlParser: true,
        maxPoolSize: 50,
        minPoolSize: 10,
        serverSelectionTimeoutMS: 5000,
        socketTimeoutMS: 45000,
      },
      logCollection: 'replication_log',
    },
    resources: {
      // Simple mapping
      users: 'users',
      // Multiple actions
      products: { collection: 'products', actions: ['inserted', 'updated', 'deleted'] },
      // Multiple collections
      orders: [
        { collection: 'orders_active', actions: ['inserted', 'updated'] },
        { collection: 'orders_archive', actions: ['inserted'] },
      ],
    },
  }]);
  const users = await db.createResource({ name: 'users', attributes: { name: 'string', age: 'number', score: 'number', active: 'boolean', tags: 'array|items:string', meta: 'json' } });
  const products = await db.createResource({ name: 'products', attributes: { price: 'number' } });
  const orders = await db.createResource({ name: 'orders', attributes: { total: 'number', status: 'string' } });
  await users.insert({ id: 'u1', name: 'Ana', age: 41, score: 9.5, active: true, tags: ['a', 'b'], meta: { plan: { tier: 2 }, note: null } });
  await products.insert({ id: 'p1', price: 10 });
  await products.update('p1', { price: 12 });
  await products.insert({ id: 'p2', price: 1 });
  await products.delete('p2');
  await orders.insert({ id: 'o1', total: 3, status: 'new' });
  await orders.update('o1', { status: 'paid' });
  await orders.delete('o1');
  await plugin.flush();
  assert.deepEqual(failures(events), []);
  assert.deepEqual(findAll(database, 'users'), [{ _id: 'u1', id: 'u1', name: 'Ana', age: 41, score: 9.5, active: true, tags: ['a', 'b'], meta: { plan: { tier: 2 }, note: null } }]);
  assert.deepEqual(fieldTypes(database, 'users', 'u1'), { _id: 'str', id: 'str', name: 'str', age: 'int', score: 'float', active: 'bool', tags: 'list', meta: 'dict' });
  assert.deepEqual(findAll(database, 'products'), [{ _id: 'p1', id: 'p1', price: 12 }]);
  // orders_active takes inserts and updates (not the delete); the archive only the insert.
  assert.deepEqual(findAll(database, 'orders_active'), [{ _id: 'o1', id: 'o1', total: 3, status: 'paid' }]);
  assert.deepEqual(findAll(database, 'orders_archive'), [{ _id: 'o1', id: 'o1', total: 3, status: 'new' }]);
  const [info] = await plugin.listReplicators();
  assert.doesNotMatch(JSON.stringify(info), /secret/, 'no password in listReplicators()');
});

test("mongodb: the spec's replica-set configuration's write concern (w: 'majority', j, wtimeout)", async (t) => {
  const database = uniqueDb('mydb');
  const { db, plugin, events } = await start(t, [{
    driver: 'mongodb',
    config: {
      // The spec's URI names a three-host replica set; the test server is a standalone.
      connectionString: mongoUrl(database),
      options: {
        w: 'majority', // Write concern
        j: true, // Journal acknowledgment
        wtimeout: 5000, // Write timeout
      },
    },
    resources: { users: 'users', sessions: 'sessions' },
  }]);
  const sessions = await db.createResource({ name: 'sessions', attributes: { user: 'string' } });
  await sessions.insert({ id: 's1', user: 'u1' });
  await plugin.flush();
  assert.deepEqual(failures(events), []);
  assert.deepEqual(findAll(database, 'sessions'), [{ _id: 's1', id: 's1', user: 'u1' }]);
});

test("mongodb: the spec's Atlas configuration is accepted at construction; bad settings fail naming the option, never the password", () => {
  const atlas = {
    driver: 'mongodb',
    config: {
      connectionString: 'mongodb+srv://user:pass@cluster0.mongodb.net/mydb?retryWrites=true&w=majority',
      database: 'production',
      logCollection: 'replication_audit',
    },
    resources: { users: 'users', orders: 'orders', analytics: 'events' },
  };
  assert.doesNotThrow(() => new ReplicatorPlugin({ replicators: [atlas] }));
  assert.throws(
    () => new ReplicatorPlugin({ replicators: [{ driver: 'mongodb', resources: ['users'], config: { connectionString: 'mongodb://u:hunter2@h:notaport/db' } }] }),
    (e) => e.code === 'ERR_CONFIG' && /connectionString/.test(e.context.option) && !/hunter2/.test(`${e.message} ${JSON.stringify(e.context)}`),
  );
  assert.throws(
    () => new ReplicatorPlugin({ replicators: [{ driver: 'mongodb', resources: ['users'], config: { host: 'h' } }] }),
    (e) => e.code === 'ERR_CONFIG' && /database/.test(e.context.option) && /no database/.test(e.message),
  );
  assert.throws(
    () => new ReplicatorPlugin({ replicators: [{ driver: 'mongodb', resources: { users: 'system.users' }, config: { database: 'd' } }] }),
    (e) => e.code === 'ERR_CONFIG' && e.context.option.endsWith('resources.users') && /system\./.test(e.message),
  );
});
