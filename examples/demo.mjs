// Demo on embedded defaults: an s3db.js database in memory replicated, as it is written, to
// another s3db.js database on local files and to a webhook on a local HTTP server.
// Prints what it replicated and how fast. No server to install.
//
//   node examples/demo.mjs [changes]          (default 20000)
//   node examples/demo.mjs [changes] --json   one JSON line of figures instead (bench/lib/demo-run.mjs)

import { rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Database } from 's3db.js/lite';
import { ReplicatorPlugin } from '../plugin.js';

const args = process.argv.slice(2);
const asJson = args.includes('--json');
const N = Number(args.find((a) => a !== '--json') ?? 20000);
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const backupDir = path.join(root, '.demo-data', 'backup');

// A local webhook endpoint that counts what it receives.
let webhookRequests = 0;
let webhookChanges = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString());
    webhookRequests++;
    webhookChanges += Array.isArray(body.batch) ? body.batch.length : 1;
    res.end('{"ok":true}');
  });
});
server.keepAliveTimeout = 60_000;
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}/hooks/s3db`;

await rm(backupDir, { recursive: true, force: true });
const db = new Database({ connectionString: 'memory://demo/source', logLevel: 'silent' });
await db.connect();

const plugin = new ReplicatorPlugin({
  replicators: [
    { id: 'file-backup', driver: 's3db', resources: ['users', 'orders'], config: { connectionString: `file://${backupDir}` } },
    {
      id: 'crm-webhook',
      driver: 'webhook',
      resources: { users: { transform: (u) => ({ id: u.id, email: u.email, plan: u.plan }) }, orders: { actions: ['inserted'] } },
      config: { url, batch: true, batchSize: 100, auth: { type: 'bearer', token: 'demo-token' } },
    },
  ],
});
await db.usePlugin(plugin);

const users = await db.createResource({ name: 'users', attributes: { email: 'string', plan: 'string', logins: 'number' } });
const orders = await db.createResource({ name: 'orders', attributes: { userId: 'string', total: 'number' } });

const durations = new Map(); // replicator → lag samples (ms)
let errors = 0;
plugin.on('plg:replicator:replicated', (e) => {
  if (!durations.has(e.replicator)) durations.set(e.replicator, []);
  durations.get(e.replicator).push(e.duration);
});
plugin.on('plg:replicator:error', (e) => {
  errors++;
  if (errors <= 3) console.error('replication error:', e.replicator, e.recordId, e.error);
});

// Workload: inserts, updates of the same records, deletes (about 50/30/10/10).
const userCount = Math.max(1, Math.floor(N * 0.5));
const started = performance.now();
let writes = 0;
const inFlight = new Set();
async function write(op) {
  const p = op().then(() => inFlight.delete(p));
  inFlight.add(p);
  writes++;
  if (inFlight.size >= 64) await Promise.race(inFlight);
}
for (let i = 0; i < userCount; i++) await write(() => users.insert({ id: `u${i}`, email: `user${i}@example.com`, plan: 'free', logins: 0 }));
for (let i = 0; i < Math.floor(N * 0.3); i++) await write(() => users.update(`u${i % userCount}`, { plan: 'pro', logins: i }));
for (let i = 0; i < Math.floor(N * 0.1); i++) await write(() => orders.insert({ id: `o${i}`, userId: `u${i % userCount}`, total: i }));
for (let i = 0; i < Math.floor(N * 0.1); i++) await write(() => users.delete(`u${userCount - 1 - i}`));
await Promise.all(inFlight);
const wrote = performance.now();
await plugin.flush();
const delivered = performance.now();

const stats = await plugin.getReplicatorStats();
const backup = new Database({ connectionString: `file://${backupDir}`, logLevel: 'silent' });
await backup.connect();
const [srcUsers, bakUsers, bakOrders] = await Promise.all([users.count(), backup.resources.users.count(), backup.resources.orders.count()]);

const pct = (list, p) => (list.length ? list[Math.min(list.length - 1, Math.floor((p / 100) * list.length))] : NaN);
const lagOf = (id) => (durations.get(id) ?? []).sort((a, b) => a - b);
const secs = (ms) => (ms / 1000).toFixed(2);
if (asJson) {
  const lag = Object.fromEntries(stats.replicators.map((r) => {
    const sorted = lagOf(r.id);
    return [r.id, { p50: pct(sorted, 50), p99: pct(sorted, 99), max: pct(sorted, 100) }];
  }));
  console.log(JSON.stringify({
    writes, writeMs: wrote - started, afterLastWriteMs: delivered - wrote, totalMs: delivered - started,
    delivered: stats.stats.totalReplications, errors, lag, backupUsers: bakUsers, sourceUsers: srcUsers, webhookChanges,
  }));
} else {
  const ms = (v) => (Number.isFinite(v) ? v.toFixed(1) : '-');
  console.log(`\ns3db-replicator demo: ${writes} source writes (memory://) replicated to a file:// s3db database and a local webhook\n`);
  console.log('| replicator | driver | delivered | skipped | failed | batches | lag p50 ms | lag p99 ms | lag max ms |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of stats.replicators) {
    const lag = lagOf(r.id);
    console.log(`| ${r.id} | ${r.driver} | ${r.status.delivered} | ${r.status.skipped} | ${r.status.failed} | ${r.status.batches} | ${ms(pct(lag, 50))} | ${ms(pct(lag, 99))} | ${ms(pct(lag, 100))} |`);
  }
  console.log(`\nsource writes:        ${writes} in ${secs(wrote - started)} s (${Math.round(writes / ((wrote - started) / 1000))}/s, 64 in flight)`);
  console.log(`all delivered:        ${secs(delivered - wrote)} s after the last write, ${secs(delivered - started)} s from the first (${Math.round(stats.stats.totalReplications / ((delivered - started) / 1000))} deliveries/s)`);
  console.log('lag:                  from the change reaching the engine to the destination acknowledging it');
  console.log(`webhook:              ${webhookChanges} changes in ${webhookRequests} keep-alive requests`);
  console.log(`file backup:          users ${bakUsers}/${srcUsers} (source), orders ${bakOrders}; backup at ${path.relative(process.cwd(), backupDir) || backupDir}`);
  console.log(`errors:               ${errors}`);
}

await backup.disconnect();
await db.disconnect();
server.close();
if (errors > 0 || bakUsers !== srcUsers) process.exitCode = 1;
