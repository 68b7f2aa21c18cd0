// Physical limits, measured in the same run (each the best of TRIALS short trials, SQL: SQL_TRIALS: a limit is
// what can be reached, and the machine is noisy):
//  - httpRaw: requests/s the webhook server answers with `concurrency` keep-alive sockets
//    driven by the cheapest possible client (lib/raw-http.mjs): the server's own limit;
//  - httpAgent: the same with Node's http.Agent({ keepAlive }) (a typical JS client);
//  - httpCapacity: requests per CPU-second of the server during those trials: the rate it would
//    reach with a whole core to itself (on 2 shared cores the client takes part of its CPU);
//  - httpRaw1: one request in flight;
//  - s3dbInsert / s3dbReplace: a memory:// resource's own write rate with `concurrency`
//    writes in flight (replace() is what our s3db driver does, insert() what the stock one does);
//  - pgCopy: ONE `COPY ... FROM STDIN (FORMAT csv)` of the same N rows the engine path sends,
//    into an empty table of the destination's shape (lib/sql.mjs); pgUpsert: the same rows as
//    multi-row `INSERT ... ON CONFLICT (id) DO UPDATE` statements of 1,000 rows, one connection;
//  - mysqlInsert: ONE multi-row `INSERT ... ON DUPLICATE KEY UPDATE` of all N rows (one
//    statement, autocommit: one transaction); mysqlUpsert: statements of 1,000 rows.
//  - sqsBatch / ddbBatch: the AWS-compatible server's messages/s in SendMessageBatch requests of
//    10 (into a fresh queue, at most 1,000: moto's best case) and items/s in BatchWriteItem
//    requests of 25, from the AWS SDK for JavaScript with `concurrency` requests in flight (lib/aws.mjs).

import http from 'node:http';

import { Database } from 's3db.js/lite';

import { ATTRIBUTES } from './destinations.mjs';
import { rawPostRate } from './raw-http.mjs';
import { record } from './workload.mjs';

const TRIALS = 3;
const SQL_TRIALS = 5; // a single COPY / INSERT of a few thousand rows is dominated by one commit (fsync), which is noisy

async function best(trial, trials = TRIALS) {
  let top = 0;
  for (let i = 0; i < trials; i++) top = Math.max(top, await trial(i));
  return top;
}

/** Runs task(0 … n-1) with `inFlight` at a time until done or `deadline`; returns tasks per second. */
export async function pool(n, inFlight, deadline, task) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < n && performance.now() < deadline) await task(next++);
  }));
  return (next / (performance.now() - t0)) * 1000;
}

function post(agent, url, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const payload = (id, n) => JSON.stringify({ resource: 'users', action: 'insert', timestamp: new Date().toISOString(), source: 's3db-webhook-replicator', data: record(id, n) });

async function s3dbRate(method, n, inFlight, deadline, trial) {
  const db = new Database({ connectionString: `memory://bench-limit-${method}-${trial}/db`, logLevel: 'silent' });
  await db.connect();
  const users = await db.createResource({ name: 'users', attributes: ATTRIBUTES });
  const write = method === 'replace' ? (r) => users.replace(r.id, r) : (r) => users.insert(r);
  await pool(Math.min(500, n), inFlight, deadline, (i) => write(record(`w${i}`, i)));
  const rate = await pool(n, inFlight, deadline, (i) => write(record(`u${i}`, i)));
  await db.disconnect().catch(() => {});
  return rate;
}

export async function runLimits(job) {
  const deadline = performance.now() + job.timeoutMs;
  const c = job.concurrency;
  const n = Math.min(job.n, 20_000);
  const out = {};
  if (job.dests.includes('webhook')) {
    const url = new URL('/limit', job.webhookUrl);
    const body = (i) => payload(`u${i}`, i);
    await rawPostRate(url, Math.min(n, 2000), c, deadline, body); // warm-up
    const control = (path, method = 'GET') => fetch(new URL(path, url), { method }).then((r) => r.json());
    let capacity = 0;
    out.httpRaw = await best(async () => {
      await control('/__reset', 'POST');
      const rate = await rawPostRate(url, n, c, deadline, body);
      const { requests, cpuSec } = await control('/__results');
      if (cpuSec > 0) capacity = Math.max(capacity, requests / cpuSec);
      return rate;
    });
    out.httpCapacity = capacity;
    out.httpRaw1 = await best(() => rawPostRate(url, Math.min(n, 5000), 1, deadline, body));
    const agent = new http.Agent({ keepAlive: true, maxSockets: c });
    await pool(Math.min(n, 2000), c, deadline, (i) => post(agent, url, body(i)));
    out.httpAgent = await best(() => pool(n, c, deadline, (i) => post(agent, url, body(i))));
    agent.destroy();
    await control('/__reset', 'POST');
  }
  if (job.dests.includes('s3db')) {
    out.s3dbInsert = await best((t) => s3dbRate('insert', n, c, deadline, t));
    out.s3dbReplace = await best((t) => s3dbRate('replace', n, c, deadline, t));
  }
  const sqlN = job.n; // the engine path's N (a COPY of 100,000 rows is still well under a second)
  if (job.dests.includes('postgres')) {
    const { pgCopyRate, pgUpsertRate } = await import('./sql.mjs');
    const ctx = { url: job.pgUrl, table: `${job.sqlPrefix}_lim_${process.pid}`, n: sqlN };
    await pgUpsertRate({ ...ctx, n: Math.min(sqlN, 2000) }); // warm-up (server caches, JIT)
    out.pgCopy = await best(() => pgCopyRate(ctx), SQL_TRIALS);
    out.pgUpsert = await best(() => pgUpsertRate({ ...ctx, batch: 1000 }), SQL_TRIALS);
  }
  if (job.dests.includes('mysql')) {
    const { mysqlInsertRate } = await import('./sql.mjs');
    const ctx = { url: job.mysqlUrl, table: `${job.sqlPrefix}_lim_${process.pid}`, n: sqlN };
    await mysqlInsertRate({ ...ctx, n: Math.min(sqlN, 2000), batch: 1000 }); // warm-up
    out.mysqlInsert = await best(() => mysqlInsertRate(ctx), SQL_TRIALS);
    out.mysqlUpsert = await best(() => mysqlInsertRate({ ...ctx, batch: 1000 }), SQL_TRIALS);
  }
  if (job.dests.includes('sqs') || job.dests.includes('dynamodb')) {
    const { awsLimits } = await import('./aws.mjs');
    for (let t = 0; t < TRIALS; t++) {
      const l = await awsLimits({ awsUrl: job.awsUrl, n, inFlight: c, deadline, dests: job.dests });
      for (const [key, rate] of Object.entries(l)) out[key] = Math.max(out[key] ?? 0, rate);
    }
  }
  return out;
}
