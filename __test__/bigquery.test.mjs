// The bigquery driver inside a real s3db.js database, against a real BigQuery REST emulator
// (bqemulator on loopback, read back through its REST API with jobs.query): the spec's
// BigQuery examples, with `endpoint` pointing at the emulator. The examples without schemaSync
// write to tables the test creates first, as a user would.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ReplicatorPlugin } from '../plugin.js';
import { BIGQUERY_URL, createDataset, createTable, query, tableFields, tablePath, uniqueDataset } from './helpers/bigquery.mjs';
import { collect, memoryDb } from './helpers/db.mjs';

async function start(t, replicators) {
  const db = await memoryDb('bq');
  const plugin = new ReplicatorPlugin({ replicators });
  const events = collect(plugin, 'plg:replicator:error', 'plg:replicator:replicated', 'table_created', 'table_altered');
  await db.usePlugin(plugin);
  t.after(async () => {
    await plugin.stop();
    await db.disconnect();
  });
  return { db, plugin, events };
}

const failures = (events) => events['plg:replicator:error'];
const APPEND_ONLY = { _operation_type: 'STRING', _operation_timestamp: 'TIMESTAMP' };
const IMMUTABLE = { ...APPEND_ONLY, _is_deleted: 'BOOL', _version: 'INT64' };

test("bigquery: the spec's basic configuration (projectId, datasetId, location, credentials), append-only by default", async (t) => {
  const datasetId = uniqueDataset('production_data');
  const P = 'my-analytics-project';
  await createDataset(datasetId, P);
  await createTable(datasetId, 'user_profiles', { id: 'STRING', name: 'STRING', ...APPEND_ONLY }, P);
  await createTable(datasetId, 'order_history', { id: 'STRING', total: 'FLOAT64', ...APPEND_ONLY }, P);
  const { db, plugin, events } = await start(t, [{
    driver: 'bigquery',
    config: {
      projectId: 'my-analytics-project',
      datasetId,
      location: 'US',
      credentials: {
        // Service account key or application default credentials
      },
      endpoint: BIGQUERY_URL, // the emulator (no credentials are sent to it)
    },
    resources: {
      users: 'user_profiles',
      orders: 'order_history',
    },
  }]);
  const users = await db.createResource({ name: 'users', attributes: { name: 'string' } });
  const orders = await db.createResource({ name: 'orders', attributes: { total: 'number' } });
  await users.insert({ id: 'u1', name: 'John' });
  await orders.insert({ id: 'o1', total: 12.5 });
  await plugin.flush();
  await users.update('u1', { name: 'Jane' });
  await plugin.flush();
  assert.deepEqual(failures(events), []);
  const rows = await query(`SELECT id, name, _operation_type FROM \`my-analytics-project.${datasetId}.user_profiles\` ORDER BY _operation_timestamp`);
  assert.deepEqual(rows, [
    { id: 'u1', name: 'John', _operation_type: 'insert' },
    { id: 'u1', name: 'Jane', _operation_type: 'update' },
  ]);
  assert.deepEqual(await query(`SELECT id, total FROM \`my-analytics-project.${datasetId}.order_history\``), [{ id: 'o1', total: '12.5' }]);
  const [info] = await plugin.listReplicators();
  assert.match(JSON.stringify(info), new RegExp(datasetId), 'listReplicators() shows the dataset');
});

test("bigquery: the spec's per-resource override: append-only events, immutable transactions with _version, mutable cache by MERGE", async (t) => {
  const datasetId = uniqueDataset('mixed');
  const P = 'analytics';
  await createDataset(datasetId, P);
  await createTable(datasetId, 'events_table', { id: 'STRING', kind: 'STRING', ...APPEND_ONLY }, P);
  await createTable(datasetId, 'transactions_audit', { id: 'STRING', amount: 'FLOAT64', ...IMMUTABLE }, P);
  await createTable(datasetId, 'cache_table', { id: 'STRING', value: 'STRING' }, P);
  const { db, plugin, events } = await start(t, [{
    driver: 'bigquery',
    config: {
      projectId: 'analytics',
      datasetId,
      mutability: 'append-only', // Global default
      endpoint: BIGQUERY_URL,
    },
    resources: {
      // Use default append-only
      events: 'events_table',

      // Override to immutable for audit trail
      transactions: {
        table: 'transactions_audit',
        mutability: 'immutable',
        actions: ['inserted', 'updated', 'deleted'],
      },

      // Override to mutable for traditional behavior
      cache: {
        table: 'cache_table',
        mutability: 'mutable',
        actions: ['inserted', 'updated', 'deleted'],
      },
    },
  }]);
  const ev = await db.createResource({ name: 'events', attributes: { kind: 'string' } });
  const tx = await db.createResource({ name: 'transactions', attributes: { amount: 'number' } });
  const cache = await db.createResource({ name: 'cache', attributes: { value: 'string' } });
  await ev.insert({ id: 'e1', kind: 'click' });
  await tx.insert({ id: 't1', amount: 100 });
  await cache.insert({ id: 'k1', value: 'a' });
  await cache.insert({ id: 'k2', value: 'b' });
  await plugin.flush();
  await ev.update('e1', { kind: 'view' });
  await tx.update('t1', { amount: 150 });
  await cache.update('k1', { value: "it's new" });
  await plugin.flush();
  await ev.delete('e1');
  await tx.delete('t1');
  await cache.delete('k2');
  await plugin.flush();
  assert.deepEqual(failures(events), []);

  const evRows = await query(`SELECT id, _operation_type FROM ${tablePath(datasetId, 'events_table', P)} ORDER BY _operation_timestamp`);
  assert.deepEqual(evRows.map((r) => r._operation_type), ['insert', 'update', 'delete']);

  const audit = await query(`SELECT id, amount, _operation_type, _is_deleted, _version FROM ${tablePath(datasetId, 'transactions_audit', P)} ORDER BY _version`);
  assert.deepEqual(audit.map(({ _version, ...r }) => r), [
    { id: 't1', amount: '100.0', _operation_type: 'insert', _is_deleted: 'false' },
    { id: 't1', amount: '150.0', _operation_type: 'update', _is_deleted: 'false' },
    { id: 't1', amount: '150.0', _operation_type: 'delete', _is_deleted: 'true' },
  ]);
  const versions = audit.map((r) => Number(r._version));
  assert.ok(versions[0] < versions[1] && versions[1] < versions[2], `versions increase: ${versions}`);

  // Mutable: one row per record; the update replaced it, the delete removed it.
  assert.deepEqual(await query(`SELECT id, value FROM ${tablePath(datasetId, 'cache_table', P)} ORDER BY id`), [{ id: 'k1', value: "it's new" }]);
});

test("bigquery: the spec's schema sync example creates the table with the tracking fields; a new attribute adds a column", async (t) => {
  const datasetId = uniqueDataset('events');
  const { db, plugin, events } = await start(t, [{
    driver: 'bigquery',
    config: {
      projectId: 'analytics',
      datasetId,
      mutability: 'append-only',
      schemaSync: {
        enabled: true,
        strategy: 'alter',
        autoCreateTable: true,
        autoCreateColumns: true,
      },
      endpoint: BIGQUERY_URL,
    },
    resources: {
      users: 'users_table',
    },
  }]);
  const users = await db.createResource({ name: 'users', attributes: { name: 'string|required', age: 'number', active: 'boolean', meta: 'json' } });
  await plugin.flush();
  assert.equal(events.table_created.length, 1);
  assert.equal(events.table_created[0].tableName, 'users_table');
  assert.deepEqual([...events.table_created[0].attributes].sort(), ['active', 'age', 'meta', 'name']);
  assert.deepEqual(await tableFields(datasetId, 'users_table', 'analytics'), {
    id: 'STRING', name: 'STRING', age: 'FLOAT64', active: 'BOOL', meta: 'JSON', ...APPEND_ONLY,
  });
  await users.insert({ id: 'u1', name: 'Ann', age: 30, active: true, meta: { plan: 'pro' } });
  await plugin.flush();
  assert.deepEqual(failures(events), []);
  const [row] = await query(`SELECT id, name, age, active, TO_JSON_STRING(meta) AS meta, _operation_type FROM ${tablePath(datasetId, 'users_table', 'analytics')}`);
  assert.deepEqual({ ...row, meta: JSON.parse(row.meta) }, { id: 'u1', name: 'Ann', age: '30.0', active: 'true', meta: { plan: 'pro' }, _operation_type: 'insert' });

  // The resource gains an attribute: syncSchemas() adds the column (table_altered).
  await db.createResource({ name: 'users', attributes: { name: 'string|required', age: 'number', active: 'boolean', meta: 'json', email: 'string' } });
  await plugin.syncSchemas();
  assert.ok(events.table_altered.some((e) => e.tableName === 'users_table' && e.addedColumns.includes('email')), JSON.stringify(events.table_altered));
  assert.equal((await tableFields(datasetId, 'users_table', 'analytics')).email, 'STRING');
});

test('bigquery: a bad mutability or table name fails at construction, naming the option', async () => {
  const bad = (resources) => new ReplicatorPlugin({ replicators: [{ driver: 'bigquery', config: { projectId: 'p', datasetId: 'd' }, resources }] });
  assert.throws(() => bad({ users: { table: 't', mutability: 'sometimes' } }), /resources\.users\.mutability: unknown mutability 'sometimes'/);
  assert.throws(() => bad({ users: 'a.b' }), /resources\.users: 'a\.b' is not a valid BigQuery table name/);
});
