// Markdown tables from the aggregated runs. Every figure is a median over --repeat runs
// (correctness columns show the worst run). The durability section's tables are in
// lib/durability.mjs.

import { renderDemo } from './demo-run.mjs';
import { renderDurability } from './durability.mjs';
import { renderJetstream } from './jetstream.mjs';

const SCENARIO_NAMES = {
  seq: 'sequential',
  conc: 'concurrent (64)',
  'seq-yield': 'sequential, yielding',
  'conc-yield': 'concurrent (64), yielding',
  'paced-1000': 'paced, 1,000/s',
  'paced-5000': 'paced, 5,000/s',
};

const num = (v, digits = 0) => (Number.isFinite(v) ? v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '—');
const ratio = (v) => (Number.isFinite(v) ? v.toFixed(2) : '—');
const ms = (v) => (!Number.isFinite(v) ? '—' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
const times = (v) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '—');

function table(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/**
 * @param {object} a aggregate: a.get(kind, plugin, dest, writer, path) → median,
 *   a.worst(...) → worst of the runs, a.limits (medians), a.meta, a.runs,
 *   a.sections (which of compare / durability / jetstream ran)
 */
export function renderReport(a) {
  const { opts, meta } = a;
  const out = [];
  const compare = a.sections.includes('compare');

  out.push(compare ? '# s3db-replicator vs the stock ReplicatorPlugin' : '# s3db-replicator: the cost of the durable outbox');
  out.push('');
  out.push(`N = ${num(opts.n)} changes per run (50% inserts, 35% updates of the same records, 15% deletes), ` +
    `median of ${opts.repeat} run${opts.repeat > 1 ? 's' : ''} per variant, each variant in a fresh process, ${compare ? 'stock and ours' : 'the outbox variants'} alternating. ` +
    `${meta.cpus} CPUs (${meta.cpuModel}), Node ${meta.node}, ${meta.date}; the whole benchmark took ${meta.minutes.toFixed(1)} min. ` +
    'Ratios compare runs on the same noisy machine in the same session; see bench/README.md for what each figure measures.');
  out.push('');
  out.push(`Ours: ${meta.plugin}${meta.native ? `, native addon ${meta.native}` : ''}.${compare ? ` Stock: s3db.js ${meta.s3db} \`ReplicatorPlugin\`.` : ''}`);
  out.push('');
  if (compare) renderComparison(a, out);
  if (a.sections.includes('durability')) out.push(renderDurability({ ...a, scenarioNames: SCENARIO_NAMES }));
  if (a.sections.includes('jetstream')) out.push(renderJetstream(a));
  if (a.sections.includes('demo')) out.push(renderDemo(a));
  if (a.failures.length) {
    out.push('## Failed runs');
    out.push('');
    for (const f of a.failures) out.push(`- ${f}`);
    out.push('');
  }
  return out.join('\n');
}

/** The stock-vs-ours tables, appended to `out`. */
function renderComparison(a, out) {
  const { opts } = a;
  const scenarios = opts.dests.flatMap((dest) => opts.writers.map((writer) => ({ dest, writer })));
  const base = (writer, path) => a.get('writes', 'none', '-', writer, path);
  const per10k = (cpu) => (cpu / opts.n) * 10_000;
  const sql = opts.dests.filter((d) => d === 'postgres' || d === 'mysql');
  if (sql.length) {
    out.push(`SQL destinations (${sql.join(', ')}; ${[sql.includes('postgres') && opts['pg-url'], sql.includes('mysql') && opts['mysql-url']].filter(Boolean).join(', ')}): ` +
      'a fresh table per variant, `id VARCHAR(255) PRIMARY KEY, name TEXT, n DOUBLE`, created by the bench (what schema sync creates). ' +
      'Ours: driver `postgresql` / `mysql`, `{ connectionString, schemaSync: { enabled: true } }`, `resources: { users: table }` (inserts, updates and deletes), default pool of 10. ' +
      'Stock: driver `postgres` / `mysql`, `resources: { users: { table, actions: [\'insert\', \'update\', \'delete\'] } }` (its default is inserts only), ' +
      'no schema sync (it crashes in this s3db.js version; the table already exists); PostgreSQL: `{ connectionString }` (one `pg.Client`); ' +
      'MySQL: `{ host, port, user, password, database }` (a mysql2 pool of 10) and its mysql2 loading fixed by the bench (as shipped it cannot initialize: see bench/README.md).');
    out.push('');
  }
  const aws = opts.dests.filter((d) => d === 'sqs' || d === 'dynamodb');
  if (aws.length) {
    out.push(`AWS destinations (${aws.join(', ')}; the AWS-compatible test server at ${opts['aws-url']}, moto): a fresh standard queue / table (key \`id\`) per variant; ` +
      'both plugins get the same `{ region, endpoint, credentials }` (+ `queueUrl`), the endpoint being a recording proxy in its own process (bench/aws-proxy.mjs) that notes each change a request carries and forwards the request unchanged. ' +
      'moto is a Python server on the same two cores: its own rate (the limits below) bounds both plugins; its SQS slows down with every message a queue holds, so sqs rates are not a throughput measure (compare write path, CPU and correctness there).');
    out.push('');
  }
  for (const [dest, why] of Object.entries(a.meta.stockCannotRun ?? {})) {
    out.push(`Stock on ${dest}: no figures, ${why}.`);
    out.push('');
  }
  if (opts.skippedDests?.length) {
    out.push(`Skipped (server did not answer): ${opts.skippedDests.join(', ')}.`);
    out.push('');
  }

  renderAims(a, out, scenarios, base);

  out.push('## Throughput and write path');
  out.push('');
  out.push('Delivered/s = changes delivered ÷ the time from the first write to the last change visible at the destination; ÷ source = that divided by the source\'s own write rate with no plugin (1.00 = replication keeps up with the writer). Write path = source writes/s with the plugin ÷ without (1.00 = free).');
  out.push('');
  out.push(table(
    ['Destination', 'Writer', 'Source writes/s (no plugin)', 'Delivered/s: stock', 'ours', '÷ source: stock', 'ours', 'ours ÷ stock', 'Write path: stock', 'ours'],
    scenarios.map(({ dest, writer }) => {
      const r0 = base(writer, 'writeRate');
      const s = a.get('writes', 'stock', dest, writer, 'deliveredRate');
      const o = a.get('writes', 'ours', dest, writer, 'deliveredRate');
      return [dest, SCENARIO_NAMES[writer], num(r0), num(s), num(o), ratio(s / r0), ratio(o / r0), times(o / s),
        ratio(a.get('writes', 'stock', dest, writer, 'writeRate') / r0), ratio(a.get('writes', 'ours', dest, writer, 'writeRate') / r0)];
    }),
  ));
  out.push('');

  out.push('## Replication lag (ms)');
  out.push('');
  out.push('From a write\'s resolution (`await insert()` returned) to the change being visible at the destination (s3db: the destination resource\'s write call resolved; webhook: the server has read the request; ' +
    'postgres: the commit of the row\'s transaction, from a deferred constraint trigger logging `clock_timestamp()`; ' +
    'mysql: **approximate**, the row write inside its transaction, from AFTER triggers logging `SYSDATE(6)`, so a batched transaction\'s lags are underestimated by up to its remaining duration; ' +
    'sqs, dynamodb: the recording proxy in front of the server has read the request).');
  out.push('');
  out.push(table(
    ['Destination', 'Writer', 'p50 stock', 'p50 ours', 'p99 stock', 'p99 ours', 'max stock', 'max ours', 'p99: stock ÷ ours'],
    scenarios.map(({ dest, writer }) => {
      const g = (p, f) => a.get('writes', p, dest, writer, `lag.${f}`);
      return [dest, SCENARIO_NAMES[writer], ms(g('stock', 'p50')), ms(g('ours', 'p50')), ms(g('stock', 'p99')), ms(g('ours', 'p99')),
        ms(g('stock', 'max')), ms(g('ours', 'max')), times(g('stock', 'p99') / g('ours', 'p99'))];
    }),
  ));
  out.push('');

  out.push('## CPU (per variant process)');
  out.push('');
  out.push('From the first write until everything was delivered, per 10,000 changes. Process = user + system seconds of all threads (so the Rust engine\'s too; not the webhook server\'s nor the database server\'s). JS thread = the main thread alone (Linux schedstat): what the plugin takes from the application\'s event loop, and far steadier than rates on a shared machine. `none` = the source\'s own cost.');
  out.push('');
  out.push(table(
    ['Destination', 'Writer', 'Process CPU s/10k: none', 'stock', 'ours', 'ours ÷ stock', 'JS thread s/10k: none', 'stock', 'ours', 'ours ÷ stock'],
    scenarios.map(({ dest, writer }) => {
      const cpu = (p, field) => per10k(p === 'none' ? base(writer, field) : a.get('writes', p, dest, writer, field));
      return [dest, SCENARIO_NAMES[writer],
        num(cpu('none', 'cpuSec'), 2), num(cpu('stock', 'cpuSec'), 2), num(cpu('ours', 'cpuSec'), 2), times(cpu('ours', 'cpuSec') / cpu('stock', 'cpuSec')),
        num(cpu('none', 'jsCpuSec'), 2), num(cpu('stock', 'jsCpuSec'), 2), num(cpu('ours', 'jsCpuSec'), 2), times(cpu('ours', 'jsCpuSec') / cpu('stock', 'jsCpuSec'))];
    }),
  ));
  out.push('');

  out.push('## Memory and connections (per variant process)');
  out.push('');
  out.push('Peak RSS = the process\'s maximum resident set (Node and s3db.js included: see `none`). New connections = TCP connections the webhook server accepted during the measured phase (after the warm-up); 0 = keep-alive connections were reused.');
  out.push('');
  out.push(table(
    ['Destination', 'Writer', 'Peak RSS MB: none', 'stock', 'ours', 'New connections: stock', 'ours'],
    scenarios.map(({ dest, writer }) => {
      const rss = (p) => (p === 'none' ? base(writer, 'peakRssMB') : a.get('writes', p, dest, writer, 'peakRssMB'));
      const conns = (p) => (dest === 'webhook' ? num(a.get('writes', p, dest, writer, 'connections')) : '—');
      return [dest, SCENARIO_NAMES[writer], num(rss('none')), num(rss('stock')), num(rss('ours')), conns('stock'), conns('ours')];
    }),
  ));
  out.push('');

  out.push('## Correctness (worst run)');
  out.push('');
  out.push('Delivered = writes whose state (or a newer one) reached the destination; errors = error outcomes the plugin reported; state diff = records whose final destination state differs from the source\'s (webhook: applying requests in arrival order). ' +
    'SQL: "coalesced" = writes of records inserted and deleted within one of the plugin\'s transactions, so no row ever existed for the arrival trigger to see; they count as delivered (the table correctly never held the record) and have no lag.');
  out.push('');
  const correct = (p, dest, writer) => {
    const w = (path) => a.worst('writes', p, dest, writer, path);
    const complete = w('complete');
    const coalesced = w('coalesced');
    return `${num(w('delivered'))}/${num(opts.n)}${coalesced > 0 ? ` (${num(coalesced)} coalesced)` : ''}, ${num(w('errors'))} err, ${num(w('mismatches'))} diff${complete === false ? ', TIMED OUT' : ''}`;
  };
  out.push(table(
    ['Destination', 'Writer', 'stock', 'ours'],
    scenarios.map(({ dest, writer }) => [dest, SCENARIO_NAMES[writer], correct('stock', dest, writer), correct('ours', dest, writer)]),
  ));
  out.push('');

  out.push('## Engine path (batch API, no source writes)');
  out.push('');
  out.push(`The same ${num(opts.n)} records as inserts. Ours: \`plugin.replicateBatch('users', records)\` (resolves when all are delivered). Stock (no plugin-level batch API): its replicator's \`replicateBatch()\` in pages of 100, one page after another. Physical limit (best of 3 trials, SQL 5, measured next to these runs): webhook = the higher of the requests/s the same server answers to a minimal keep-alive client (raw sockets, ${opts.concurrency} in flight) and its capacity (requests per CPU-second of the server: on 2 shared cores the Node client itself can be the bottleneck); s3db = the faster of a memory:// resource's own insert()/replace() rate with ${opts.concurrency} in flight; ` +
    'postgres = ONE `COPY ... FROM STDIN (FORMAT csv)` of the same rows into an empty table of the same shape (CSV built before the clock starts), and 2nd limit = the same rows as multi-row `INSERT ... ON CONFLICT (id) DO UPDATE` statements of 1,000 rows on one connection; ' +
    'mysql = ONE multi-row `INSERT ... ON DUPLICATE KEY UPDATE` of all the rows (one statement, one transaction, SQL text built before the clock starts), and 2nd limit = statements of 1,000 rows. ' +
    'sqs = messages/s in SendMessageBatch requests of 10, dynamodb = items/s in BatchWriteItem requests of 25, from the AWS SDK for JavaScript with ' + `${opts.concurrency} in flight. ` +
    'SQL delivered = rows of the measured ids in the table afterwards.');
  out.push('');
  out.push(table(
    ['Destination', 'Physical limit rows/s', 'stock ÷ limit', 'ours ÷ limit', '2nd limit rows/s', 'stock ÷ 2nd', 'ours ÷ 2nd', 'ours ÷ stock', 'Process CPU s/10k: stock', 'ours', 'JS thread s/10k: stock', 'ours', 'New connections: stock', 'ours'],
    opts.dests.map((dest) => {
      const limit = a.engineLimit(dest);
      const limit2 = a.engineLimit2?.(dest) ?? NaN;
      const g = (p, f) => a.get('engine', p, dest, '-', f);
      const conns = (p) => (dest === 'webhook' ? num(g(p, 'connections')) : '—');
      return [dest, num(limit), ratio(g('stock', 'rate') / limit), ratio(g('ours', 'rate') / limit),
        num(limit2), ratio(g('stock', 'rate') / limit2), ratio(g('ours', 'rate') / limit2), times(g('ours', 'rate') / g('stock', 'rate')),
        num(per10k(g('stock', 'cpuSec')), 2), num(per10k(g('ours', 'cpuSec')), 2), num(per10k(g('stock', 'jsCpuSec')), 2), num(per10k(g('ours', 'jsCpuSec')), 2), conns('stock'), conns('ours')];
    }),
  ));
  out.push('');

  out.push('## Physical limits measured in this run (medians; each limit the best of 3 trials, the SQL ones of 5)');
  out.push('');
  const limitRows = opts.writers.map((w) => [`source writes/s, no plugin, ${SCENARIO_NAMES[w]} writer (mix)`, num(base(w, 'writeRate'))]);
  const L = a.limits;
  if (Number.isFinite(L.httpRaw)) limitRows.push([`webhook server, minimal keep-alive client, ${opts.concurrency} in flight (req/s)`, num(L.httpRaw)]);
  if (Number.isFinite(L.httpCapacity)) limitRows.push(['webhook server capacity: requests per CPU-second of the server process (its rate with a core to itself)', num(L.httpCapacity)]);
  if (Number.isFinite(L.httpRaw1)) limitRows.push(['webhook server, minimal keep-alive client, 1 in flight (req/s)', num(L.httpRaw1)]);
  if (Number.isFinite(L.httpAgent)) limitRows.push([`webhook server, Node http.Agent keep-alive, ${opts.concurrency} in flight (req/s)`, num(L.httpAgent)]);
  if (Number.isFinite(L.s3dbInsert)) limitRows.push([`memory:// insert(), ${opts.concurrency} in flight (writes/s)`, num(L.s3dbInsert)]);
  if (Number.isFinite(L.s3dbReplace)) limitRows.push([`memory:// replace(), ${opts.concurrency} in flight (writes/s)`, num(L.s3dbReplace)]);
  if (Number.isFinite(L.pgCopy)) limitRows.push([`PostgreSQL: ONE COPY FROM STDIN (csv) of the ${num(opts.n)} rows (rows/s)`, num(L.pgCopy)]);
  if (Number.isFinite(L.pgUpsert)) limitRows.push(['PostgreSQL: multi-row INSERT … ON CONFLICT DO UPDATE, 1,000 rows per statement, one connection (rows/s)', num(L.pgUpsert)]);
  if (Number.isFinite(L.mysqlInsert)) limitRows.push([`MySQL: ONE multi-row INSERT … ON DUPLICATE KEY UPDATE of the ${num(opts.n)} rows, one transaction (rows/s)`, num(L.mysqlInsert)]);
  if (Number.isFinite(L.mysqlUpsert)) limitRows.push(['MySQL: multi-row INSERT … ON DUPLICATE KEY UPDATE, 1,000 rows per statement, one connection (rows/s)', num(L.mysqlUpsert)]);
  if (Number.isFinite(L.sqsBatch)) limitRows.push([`SQS (moto): SendMessageBatch of 10 from the AWS SDK for JavaScript, ${opts.concurrency} in flight, into a fresh queue (its best case; moto slows as a queue fills) (messages/s)`, num(L.sqsBatch)]);
  if (Number.isFinite(L.ddbBatch)) limitRows.push([`DynamoDB (moto): BatchWriteItem of 25 from the AWS SDK for JavaScript, ${opts.concurrency} in flight (items/s)`, num(L.ddbBatch)]);
  out.push(table(['Limit', 'Rate'], limitRows));
  out.push('');
}

/**
 * The figures the performance aims are stated in, ours only (stock beside where it helps), one
 * row per destination: each cell the range over the writers it applies to.
 */
function renderAims(a, out, scenarios, base) {
  const { opts } = a;
  const range = (values) => {
    const v = values.filter(Number.isFinite);
    if (v.length === 0) return '—';
    const lo = Math.min(...v);
    const hi = Math.max(...v);
    const f = (x) => (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(2));
    return lo === hi ? f(lo) : `${f(lo)}–${f(hi)}`;
  };
  const paced = opts.writers.filter((w) => w.startsWith('paced-'));
  const yielding = opts.writers.filter((w) => w.endsWith('-yield'));
  const unpaced = opts.writers.filter((w) => !w.startsWith('paced-'));
  const rows = opts.dests.map((dest) => {
    const mine = (writer, path) => a.get('writes', 'ours', dest, writer, path);
    const delivered = unpaced.map((w) => mine(w, 'deliveredRate') / base(w, 'writeRate'));
    const writePath = yielding.map((w) => mine(w, 'writeRate') / base(w, 'writeRate'));
    // JS-thread microseconds per change the plugin adds: ours minus the no-plugin run.
    const jsUs = unpaced.map((w) => ((mine(w, 'jsCpuSec') - base(w, 'jsCpuSec')) / opts.n) * 1e6);
    const p99 = paced.map((w) => mine(w, 'lag.p99'));
    const p50 = paced.map((w) => mine(w, 'lag.p50'));
    const p50Stock = paced.map((w) => a.get('writes', 'stock', dest, w, 'lag.p50'));
    const limit = a.engineLimit(dest);
    const limit2 = a.engineLimit2?.(dest) ?? NaN;
    const engine = a.get('engine', 'ours', dest, '-', 'rate');
    return [dest, range(delivered), range(writePath), range(jsUs), range(p99), `${range(p50)} (stock ${range(p50Stock)})`, ratio(engine / limit), ratio(engine / limit2)];
  });
  out.push('## The aims in one table (ours)');
  out.push('');
  out.push(`Ranges over the writers each figure applies to. Delivered ÷ source: ${unpaced.join(', ')}; write path: ${yielding.join(', ') || '—'} (with ÷ without the plugin); JS-thread µs per change: ours minus the no-plugin run (schedstat); lag: the paced writers (${paced.join(', ') || 'none run'}); engine path: replicateBatch ÷ the destination's physical limit (postgres: one COPY, mysql: one multi-row INSERT, webhook: the server's limit) and ÷ the 2nd limit (SQL: 1,000-row statements).`);
  out.push('');
  out.push(table(['Destination', 'Delivered ÷ source', 'Write path (yielding)', 'JS-thread µs/change', 'Paced lag p99 ms', 'Paced lag p50 ms', 'Engine path ÷ limit', '÷ 2nd limit'], rows));
  out.push('');
}

export { SCENARIO_NAMES };
