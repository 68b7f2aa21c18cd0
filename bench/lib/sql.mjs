// PostgreSQL and MySQL (MariaDB) destinations and their physical limits.
//
// Destination tables: `id VARCHAR(255) PRIMARY KEY, name TEXT, n DOUBLE` — exactly what
// schema sync creates from the source resource's attributes — created by the bench before the
// plugin is installed, so that the bench can put its arrival trigger on it. Ours runs with
// `schemaSync: { enabled: true }` (it finds the table as it wants it); the stock replicators run
// without it, because their schema sync crashes in s3db.js 21.6.2 (`resource.config.versions` is
// undefined: "Cannot read properties of undefined (reading 'undefined')"). Stock gets
// `actions: ['insert', 'update', 'delete']` (its default is inserts only); ours replicates all
// three without `actions`.
//
// Arrival times (the "writes" runs only): a row trigger on the destination table appends
// (id, version, server time) to a side table `<table>_arr`:
//   - PostgreSQL: a CONSTRAINT TRIGGER ... DEFERRABLE INITIALLY DEFERRED, so it fires at the
//     commit of the writing transaction (the moment the change becomes visible, less the WAL
//     flush), with clock_timestamp(). Exact for single statements and for batched transactions.
//   - MySQL / MariaDB: AFTER INSERT / UPDATE / DELETE triggers with SYSDATE(6): MySQL has no
//     commit-time triggers, so this is when the row was written INSIDE its transaction. For a
//     plugin that writes one statement per change (autocommit) that is the commit time to within
//     the statement; for a batched transaction it is early by up to the rest of that
//     transaction, i.e. MySQL lags of a batching plugin are slightly underestimated.
// Server times are mapped onto this process's performance.now() clock with the fastest of 25
// `SELECT <server clock>` round trips (as the webhook receiver's clock is): ±RTT/2, ~0.1 ms.
//
// Every table name starts with `<sqlPrefix>_` (unique per compare.mjs run); each variant drops
// its own tables when it closes, and compare.mjs drops any leftovers (a killed child) at the end.

import mysql from 'mysql2/promise';
import pg from 'pg';
import copyStreams from 'pg-copy-streams';

import { DELETED, record } from './workload.mjs';

export const PG_DEFAULT_URL = 'postgres://postgres@127.0.0.1:5432/test';
export const MYSQL_DEFAULT_URL = 'mysql://root@127.0.0.1:3306/test';

/** Stock MySQL replicator config (it takes no URL): host, port, user, password, database. */
function mysqlParts(url) {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 3306),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: u.pathname.replace(/^\//, ''),
  };
}

const ACTIONS = ['insert', 'update', 'delete'];

async function pgClient(url) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

async function mysqlConn(url) {
  return mysql.createConnection({ ...mysqlParts(url), multipleStatements: false });
}

/** Offset (server ms − this process's performance.now() ms) from the fastest of 25 round trips. */
async function clockOffset(now) {
  let best = { rtt: Infinity, delta: 0 };
  for (let i = 0; i < 25; i++) {
    const a = performance.now();
    const t = await now();
    const b = performance.now();
    if (b - a < best.rtt) best = { rtt: b - a, delta: t - (a + b) / 2 };
  }
  return best;
}

const tableName = (job, tag) => `${job.sqlPrefix}_${tag}_${process.pid}`;

/**
 * PostgreSQL destination. `job.kind === 'writes'` adds the arrival trigger; the engine runs
 * count rows instead (countRows()).
 */
export async function openPostgres(job) {
  const url = job.pgUrl ?? PG_DEFAULT_URL;
  const table = tableName(job, 'pg');
  const arr = `${table}_arr`;
  const fn = `${table}_fn`;
  const client = await pgClient(url);
  const track = job.kind === 'writes';
  await client.query(`CREATE TABLE ${table} (id VARCHAR(255) PRIMARY KEY, name TEXT, n DOUBLE PRECISION)`);
  if (track) {
    await client.query(`CREATE TABLE ${arr} (id TEXT, n DOUBLE PRECISION, t DOUBLE PRECISION)`);
    await client.query(`CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'DELETE' THEN
          INSERT INTO ${arr} VALUES (OLD.id, -1, extract(epoch FROM clock_timestamp()) * 1000);
        ELSE
          INSERT INTO ${arr} VALUES (NEW.id, NEW.n, extract(epoch FROM clock_timestamp()) * 1000);
        END IF;
        RETURN NULL;
      END $$`);
    await client.query(`CREATE CONSTRAINT TRIGGER ${table}_trg AFTER INSERT OR UPDATE OR DELETE ON ${table}
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${fn}()`);
  }
  const clock = await clockOffset(async () => (await client.query('SELECT extract(epoch FROM clock_timestamp()) * 1000 AS t')).rows[0].t);
  return {
    name: 'postgres',
    table,
    clock,
    replicator: (kind) => (kind === 'stock'
      ? { driver: 'postgres', resources: { users: { table, actions: ACTIONS } }, config: { connectionString: url } }
      : { driver: 'postgresql', resources: { users: table }, config: { connectionString: url, schemaSync: { enabled: true } } }),
    reset: async () => {
      if (track) await client.query(`TRUNCATE ${arr}`);
    },
    async arrivals() {
      if (!track) return [];
      const { rows } = await client.query(`SELECT id, n, t FROM ${arr}`);
      return rows.map((r) => ({ id: r.id, version: r.n === -1 ? DELETED : r.n, t: r.t - clock.delta }));
    },
    async countRows(prefix) {
      const { rows } = await client.query(`SELECT count(*)::int AS c FROM ${table} WHERE id LIKE $1`, [`${prefix}%`]);
      return rows[0].c;
    },
    async finalState(prefix) {
      const { rows } = await client.query(`SELECT id, n FROM ${table} WHERE id LIKE $1`, [`${prefix}%`]);
      return new Map(rows.map((r) => [r.id, r.n]));
    },
    async close() {
      await client.query("SET lock_timeout = '10s'").catch(() => {});
      await client.query(`DROP TABLE IF EXISTS ${table}, ${arr} CASCADE`).catch(() => {});
      await client.query(`DROP FUNCTION IF EXISTS ${fn}()`).catch(() => {});
      await client.end().catch(() => {});
    },
  };
}

/** MySQL / MariaDB destination (see the header for what its arrival times mean). */
export async function openMysql(job) {
  const url = job.mysqlUrl ?? MYSQL_DEFAULT_URL;
  const table = tableName(job, 'my');
  const arr = `${table}_arr`;
  const conn = await mysqlConn(url);
  const track = job.kind === 'writes';
  await conn.query(`CREATE TABLE ${table} (id VARCHAR(255) PRIMARY KEY, name TEXT, n DOUBLE) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
  if (track) {
    await conn.query(`CREATE TABLE ${arr} (seq BIGINT AUTO_INCREMENT PRIMARY KEY, id VARCHAR(255), n DOUBLE, t DOUBLE) ENGINE=InnoDB`);
    const now = 'UNIX_TIMESTAMP(SYSDATE(6)) * 1000';
    await conn.query(`CREATE TRIGGER ${table}_ai AFTER INSERT ON ${table} FOR EACH ROW INSERT INTO ${arr} (id, n, t) VALUES (NEW.id, NEW.n, ${now})`);
    await conn.query(`CREATE TRIGGER ${table}_au AFTER UPDATE ON ${table} FOR EACH ROW INSERT INTO ${arr} (id, n, t) VALUES (NEW.id, NEW.n, ${now})`);
    await conn.query(`CREATE TRIGGER ${table}_ad AFTER DELETE ON ${table} FOR EACH ROW INSERT INTO ${arr} (id, n, t) VALUES (OLD.id, -1, ${now})`);
  }
  const clock = await clockOffset(async () => Number((await conn.query('SELECT UNIX_TIMESTAMP(SYSDATE(6)) * 1000 AS t'))[0][0].t));
  return {
    name: 'mysql',
    table,
    clock,
    replicator: (kind) => (kind === 'stock'
      ? { driver: 'mysql', resources: { users: { table, actions: ACTIONS } }, config: mysqlParts(url) }
      : { driver: 'mysql', resources: { users: table }, config: { connectionString: url, schemaSync: { enabled: true } } }),
    reset: async () => {
      if (track) await conn.query(`TRUNCATE TABLE ${arr}`);
    },
    async arrivals() {
      if (!track) return [];
      const [rows] = await conn.query(`SELECT id, n, t FROM ${arr}`);
      return rows.map((r) => ({ id: r.id, version: r.n === -1 ? DELETED : r.n, t: r.t - clock.delta }));
    },
    async countRows(prefix) {
      const [rows] = await conn.query(`SELECT count(*) AS c FROM ${table} WHERE id LIKE ?`, [`${prefix}%`]);
      return Number(rows[0].c);
    },
    async finalState(prefix) {
      const [rows] = await conn.query(`SELECT id, n FROM ${table} WHERE id LIKE ?`, [`${prefix}%`]);
      return new Map(rows.map((r) => [r.id, r.n]));
    },
    async close() {
      await conn.query('SET SESSION lock_wait_timeout = 10').catch(() => {});
      await conn.query(`DROP TABLE IF EXISTS ${table}, ${arr}`).catch(() => {}); // drops the triggers too
      await conn.end().catch(() => {});
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Physical limits: the same N rows (record(`u${i}`, i), as the engine path sends) into an empty
// table of the same shape, best of `trials`; each trial on a fresh table. Rows are encoded before
// the clock starts (the limit is what the server ingests, not what a client spends encoding).

const rows = (n) => Array.from({ length: n }, (_, i) => record(`u${i}`, i));

async function pgTrial(url, table, body) {
  const client = await pgClient(url);
  try {
    await client.query(`DROP TABLE IF EXISTS ${table}`);
    await client.query(`CREATE TABLE ${table} (id VARCHAR(255) PRIMARY KEY, name TEXT, n DOUBLE PRECISION)`);
    return await body(client);
  } finally {
    await client.query(`DROP TABLE IF EXISTS ${table}`).catch(() => {});
    await client.end().catch(() => {});
  }
}

/** ONE `COPY table FROM STDIN (FORMAT csv)` of all N rows (pg-copy-streams), rows/s. */
export async function pgCopyRate({ url, table, n }) {
  const csv = Buffer.from(rows(n).map((r) => `${r.id},"${r.name}",${r.n}\n`).join(''));
  return pgTrial(url, table, (client) => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const stream = client.query(copyStreams.from(`COPY ${table} (id, name, n) FROM STDIN WITH (FORMAT csv)`));
    stream.on('error', reject);
    stream.on('finish', async () => {
      const ms = performance.now() - t0;
      try {
        const { rows: [{ c }] } = await client.query(`SELECT count(*)::int AS c FROM ${table}`);
        if (c !== n) throw new Error(`COPY loaded ${c} of ${n} rows`);
        resolve((n / ms) * 1000);
      } catch (e) {
        reject(e);
      }
    });
    stream.end(csv);
  }));
}

/** Multi-row `INSERT ... ON CONFLICT (id) DO UPDATE` statements of `batch` rows, one after another, one connection, autocommit. */
export async function pgUpsertRate({ url, table, n, batch = 1000 }) {
  const all = rows(n);
  const statements = [];
  for (let i = 0; i < n; i += batch) {
    const page = all.slice(i, i + batch);
    const values = page.map((_, j) => `($${j * 3 + 1}, $${j * 3 + 2}, $${j * 3 + 3})`).join(', ');
    statements.push({
      text: `INSERT INTO ${table} (id, name, n) VALUES ${values} ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, n = EXCLUDED.n`,
      values: page.flatMap((r) => [r.id, r.name, r.n]),
    });
  }
  return pgTrial(url, table, async (client) => {
    const t0 = performance.now();
    for (const s of statements) await client.query(s);
    return (n / (performance.now() - t0)) * 1000;
  });
}

async function mysqlTrial(url, table, body) {
  const conn = await mysqlConn(url);
  try {
    await conn.query(`DROP TABLE IF EXISTS ${table}`);
    await conn.query(`CREATE TABLE ${table} (id VARCHAR(255) PRIMARY KEY, name TEXT, n DOUBLE) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
    return await body(conn);
  } finally {
    await conn.query(`DROP TABLE IF EXISTS ${table}`).catch(() => {});
    await conn.end().catch(() => {});
  }
}

/**
 * Multi-row `INSERT ... ON DUPLICATE KEY UPDATE` of `batch` rows per statement, one after
 * another, one connection, autocommit (batch = n: ONE statement, one transaction, for all rows;
 * the SQL text is built before the clock starts; max_allowed_packet permitting).
 */
export async function mysqlInsertRate({ url, table, n, batch = n }) {
  const all = rows(n);
  const statements = [];
  for (let i = 0; i < n; i += batch) {
    statements.push(mysql.format(`INSERT INTO ${table} (id, name, n) VALUES ? ON DUPLICATE KEY UPDATE name = VALUES(name), n = VALUES(n)`,
      [all.slice(i, i + batch).map((r) => [r.id, r.name, r.n])]));
  }
  return mysqlTrial(url, table, async (conn) => {
    const t0 = performance.now();
    for (const s of statements) await conn.query(s);
    return (n / (performance.now() - t0)) * 1000;
  });
}

/** Is the server there? (compare.mjs drops a destination whose server does not answer.) */
export async function sqlReachable(dest, { pgUrl, mysqlUrl }) {
  try {
    if (dest === 'postgres') {
      const c = await pgClient(pgUrl);
      await c.end();
    } else {
      const c = await mysqlConn(mysqlUrl);
      await c.end();
    }
    return true;
  } catch (e) {
    return e?.message ?? String(e);
  }
}

/** Drops every table (and PG trigger function) whose name starts with `${prefix}_`. */
export async function dropSqlLeftovers(dests, { pgUrl, mysqlUrl, sqlPrefix }) {
  const like = `${sqlPrefix.replace(/_/g, '\\_')}\\_%`;
  if (dests.includes('postgres')) {
    const c = await pgClient(pgUrl).catch(() => null);
    if (c) {
      const { rows: tables } = await c.query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE $1", [like]);
      for (const { tablename } of tables) await c.query(`DROP TABLE IF EXISTS ${tablename} CASCADE`).catch(() => {});
      const { rows: fns } = await c.query("SELECT proname FROM pg_proc WHERE proname LIKE $1", [like]);
      for (const { proname } of fns) await c.query(`DROP FUNCTION IF EXISTS ${proname}()`).catch(() => {});
      await c.end().catch(() => {});
    }
  }
  if (dests.includes('mysql')) {
    const c = await mysqlConn(mysqlUrl).catch(() => null);
    if (c) {
      const [tables] = await c.query('SELECT table_name AS t FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE ?', [like]);
      for (const { t } of tables) await c.query(`DROP TABLE IF EXISTS ${t}`).catch(() => {});
      await c.end().catch(() => {});
    }
  }
}
