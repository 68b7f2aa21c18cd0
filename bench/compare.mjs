#!/usr/bin/env node
// Benchmark: the stock s3db.js ReplicatorPlugin vs ours, same workload, same run, alternating.
//
//   node bench/compare.mjs            N = 10,000 changes per run
//   node bench/compare.mjs --quick    N = 2,000 (a smoke run)
//   node bench/compare.mjs --big      N = 100,000
//   node bench/compare.mjs --only durability   only the cost of the durable outbox (ours, off vs on)
//   node bench/compare.mjs --from bench/results/results.json   re-render an earlier run
//   node bench/compare.mjs --help     all options
//
// Prints Markdown tables to stdout (progress goes to stderr) and writes bench/results/
// results.md, results.json, chart.png and durability.png. Every variant runs in a fresh child process
// (bench/variant.mjs); the webhook receiver is another process (bench/webhook-server.mjs).
// Not part of the test suite. See bench/README.md.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

import { parseArgs } from './lib/args.mjs';
import { renderChart } from './lib/chart.mjs';
import { durabilityChartData, durabilityJobs, makeOutboxRoot } from './lib/durability.mjs';
import { jetstreamJobs, startNats } from './lib/jetstream.mjs';
import { renderReport, SCENARIO_NAMES } from './lib/report.mjs';
import { runChild, startAwsProxy, startWebhookServer } from './lib/runner.mjs';
import { median } from './lib/stats.mjs';

const opts = parseArgs(process.argv.slice(2));
/** Stock drivers known not to start in this s3db.js version: their failed runs are reported, not counted as failures. */
const STOCK_CANNOT_RUN = {
  dynamodb: 'the stock DynamoDB replicator cannot start in s3db.js 21.6.2 ("Failed to connect to DynamoDB" at install)',
};
const started = Date.now();
const log = (...args) => console.error(...args);

function plan() {
  const jobs = [];
  let stockFirst = true;
  const pair = (kind, dest, writer) => {
    const order = stockFirst ? ['stock', 'ours'] : ['ours', 'stock'];
    stockFirst = !stockFirst;
    return order.map((plugin) => ({ kind, plugin, dest, writer }));
  };
  for (let r = 0; r < opts.repeat; r++) {
    if (opts.only.includes('compare')) {
      for (const writer of opts.writers) {
        // The no-plugin baseline runs next to every pair (it does not depend on the destination;
        // all its runs for a writer are pooled), so drift on a noisy machine hits all three alike.
        for (const dest of opts.dests) jobs.push({ kind: 'writes', plugin: 'none', dest: '-', writer }, ...pair('writes', dest, writer));
      }
      jobs.push({ kind: 'limits', plugin: '-', dest: '-', writer: '-' });
      for (const dest of opts.dests) jobs.push(...pair('engine', dest, '-'));
    }
    // Ours with the outbox off / on disk (lib/durability.mjs), after each repetition of the comparison.
    if (opts.only.includes('durability')) jobs.push(...durabilityJobs(opts, r));
    // Delivery workers draining a backlog from JetStream (lib/jetstream.mjs).
    if (opts.only.includes('jetstream')) jobs.push(...jetstreamJobs(opts, r));
    // The README demo, 20,000 changes (lib/demo-run.mjs).
    if (opts.only.includes('demo')) jobs.push({ kind: 'demo', plugin: 'ours', dest: '-', writer: '-' });
  }
  return jobs;
}

function describe(job, r) {
  const name = `${job.kind} ${job.plugin} ${job.dest} ${job.writer}`.replace(/ -/g, '');
  if (!r) return name;
  if (job.kind === 'limits') return `${name}: ${Object.entries(r).map(([k, v]) => `${k} ${v.toFixed(0)}/s`).join(', ')}`;
  if (job.kind === 'engine') return `${name}: ${r.rate.toFixed(0)} rows/s, ${r.delivered} delivered`;
  if (job.kind === 'demo') return `${name}: ${r.writes} changes, all delivered ${(r.afterLastWriteMs / 1000).toFixed(2)} s after the last write, ${r.errors} errors`;
  if (job.kind === 'workers') return `${name}: ${r.deliveredRate.toFixed(0)} delivered/s, ${r.delivered}/${opts.n} delivered${r.complete ? '' : ', TIMED OUT'}`;
  const f = (v, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : '—');
  const lag = r.lag ? `, delivered ${r.delivered}/${opts.n} at ${f(r.deliveredRate)}/s, lag p50 ${f(r.lag.p50, 1)} p99 ${f(r.lag.p99, 1)} ms` : '';
  return `${name}: ${r.writeRate.toFixed(0)} writes/s${lag}${r.coalesced ? `, ${r.coalesced} coalesced (no arrival time)` : ''}${r.errors ? `, ${r.errors} errors` : ''}`;
}

const at = (obj, path) => path.split('.').reduce((o, k) => o?.[k], obj);

function aggregate(runs, failures, meta) {
  // Runs recorded before coalesced SQL writes counted in the delivered rate: recompute it as
  // lib/writes-run.mjs now does (idempotent for newer runs).
  for (const { kind, result: r } of runs) {
    if (kind === 'writes' && r?.coalesced > 0 && Number.isFinite(r.settleMs)) {
      r.deliverMs = Math.max(r.deliverMs, r.settleMs);
      r.deliveredRate = (r.delivered / r.deliverMs) * 1000;
    }
  }
  const pick = (kind, plugin, dest, writer) => runs.filter((r) => r.kind === kind && r.plugin === plugin && r.dest === dest && r.writer === writer);
  const get = (kind, plugin, dest, writer, path) => median(pick(kind, plugin, dest, writer).map((r) => at(r.result, path)));
  const worst = (kind, plugin, dest, writer, path) => {
    const values = pick(kind, plugin, dest, writer).map((r) => at(r.result, path));
    if (values.length === 0) return NaN;
    if (path === 'complete') return values.every(Boolean);
    return path === 'delivered' ? Math.min(...values) : Math.max(...values);
  };
  const limits = {};
  for (const key of ['httpRaw', 'httpCapacity', 'httpRaw1', 'httpAgent', 's3dbInsert', 's3dbReplace', 'pgCopy', 'pgUpsert', 'mysqlInsert', 'mysqlUpsert', 'sqsBatch', 'ddbBatch']) limits[key] = get('limits', '-', '-', '-', key);
  const top = (...values) => Math.max(...values.filter(Number.isFinite));
  const engineLimit = (dest) => ({
    webhook: top(limits.httpRaw, limits.httpCapacity),
    s3db: top(limits.s3dbInsert, limits.s3dbReplace),
    postgres: limits.pgCopy, // ONE COPY of the same rows
    mysql: limits.mysqlInsert, // ONE multi-row INSERT of the same rows
    sqs: limits.sqsBatch, // SendMessageBatch of 10 from the JS SDK, 64 in flight
    dynamodb: limits.ddbBatch, // BatchWriteItem of 25 from the JS SDK, 64 in flight
  })[dest] ?? NaN;
  // A second, more attainable reference for the SQL destinations: multi-row upserts of 1,000 rows.
  const engineLimit2 = (dest) => ({ postgres: limits.pgUpsert, mysql: limits.mysqlUpsert })[dest] ?? NaN;
  // Which sections ran (results.json of runs before --only: the comparison alone).
  const sections = opts.only ?? ['compare'];
  return { opts, meta, runs, sections, get, worst, limits, engineLimit, engineLimit2, failures };
}

function chartData(a) {
  const scenarios = opts.dests.flatMap((dest) => opts.writers.map((writer) => {
    const r0 = a.get('writes', 'none', '-', writer, 'writeRate');
    const side = (p) => ({
      rate: a.get('writes', p, dest, writer, 'deliveredRate') / r0,
      delivered: a.worst('writes', p, dest, writer, 'delivered') / opts.n,
      lag: { p50: a.get('writes', p, dest, writer, 'lag.p50'), p99: a.get('writes', p, dest, writer, 'lag.p99'), max: a.get('writes', p, dest, writer, 'lag.max') },
    });
    return { label: `${dest} ${writer}`, stock: side('stock'), ours: side('ours') };
  }));
  const engine = opts.dests.map((dest) => ({
    label: dest,
    stock: a.get('engine', 'stock', dest, '-', 'rate') / a.engineLimit(dest),
    ours: a.get('engine', 'ours', dest, '-', 'rate') / a.engineLimit(dest),
  }));
  return {
    title: 'S3DB-REPLICATOR (OURS) VS THE STOCK REPLICATORPLUGIN',
    subtitle: `N = ${opts.n} CHANGES PER RUN, MEDIAN OF ${opts.repeat}, ${os.cpus().length} CPUS`,
    scenarios,
    engine,
  };
}

/** Which build of ours is measured: the plugin path and its repository's commit. */
function describePlugin() {
  const dir = dirname(opts.plugin);
  try {
    const commit = execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['-C', dir, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return `${opts.plugin} (commit ${commit}${dirty ? ', working tree modified' : ''})`;
  } catch {
    return opts.plugin;
  }
}

/** The native addon our plugin loads: $NAPI_RS_NATIVE_LIBRARY_PATH (inherited by every variant) or its default. */
function describeNative() {
  const path = process.env.NAPI_RS_NATIVE_LIBRARY_PATH;
  if (!path) return '';
  try {
    const { size, mtime } = statSync(path);
    return `${path} ($NAPI_RS_NATIVE_LIBRARY_PATH, ${(size / 1e6).toFixed(1)} MB, built ${mtime.toISOString().slice(0, 16).replace('T', ' ')})`;
  } catch {
    return `${path} ($NAPI_RS_NATIVE_LIBRARY_PATH, missing)`;
  }
}

const SERVER_DESTS = ['postgres', 'mysql', 'sqs', 'dynamodb'];
const awsUsed = () => opts.dests.some((d) => d === 'sqs' || d === 'dynamodb');

/** Where a destination's server is, and whether it answers (true, or why not). */
async function reachable(dest) {
  if (dest === 'sqs' || dest === 'dynamodb') {
    const { awsReachable } = await import('./lib/aws.mjs');
    return { url: opts['aws-url'], ok: await awsReachable(opts['aws-url']) };
  }
  const { sqlReachable } = await import('./lib/sql.mjs');
  return { url: dest === 'postgres' ? opts['pg-url'] : opts['mysql-url'], ok: await sqlReachable(dest, { pgUrl: opts['pg-url'], mysqlUrl: opts['mysql-url'] }) };
}

/** Drops SQL and AWS destinations whose server does not answer (an error if they were asked for by name). */
async function checkServers() {
  const used = new Set([...(opts.only.includes('compare') ? opts.dests : []), ...(opts.only.includes('durability') ? opts.durabilityDests : [])]);
  for (const dest of [...used].filter((d) => SERVER_DESTS.includes(d))) {
    const { url, ok } = await reachable(dest);
    if (ok === true) continue;
    if (opts.explicitDests) throw new Error(`--dests ${dest}: ${url} does not answer: ${ok}`);
    log(`skipping destination ${dest}: ${url} does not answer (${ok})`);
    opts.dests = opts.dests.filter((d) => d !== dest);
    opts.durabilityDests = opts.durabilityDests.filter((d) => d !== dest);
    opts.skippedDests = [...(opts.skippedDests ?? []), dest];
  }
}

async function runAll() {
  opts.plugin = resolve(opts.plugin);
  await checkServers();
  // Prefix of every SQL table of this run (each variant drops its own; leftovers are dropped at the end).
  const sqlPrefix = `s3dbr_bench_${process.pid}_${Date.now().toString(36)}`;
  if (!existsSync(opts.plugin)) throw new Error(`--plugin ${opts.plugin} does not exist`);
  for (const w of opts.writers) if (!SCENARIO_NAMES[w]) throw new Error(`unknown writer '${w}'`);
  const server = await startWebhookServer();
  const awsProxy = awsUsed() ? await startAwsProxy(opts['aws-url']) : null;
  const jobs = plan();
  // Durability variants: a fresh outbox directory each, under one temp root removed at exit.
  const usesNats = jobs.some((j) => j.outbox === 'jetstream' || j.kind === 'workers');
  const outboxRoot = jobs.some((j) => j.outbox) || usesNats ? makeOutboxRoot(opts['outbox-root']) : null;
  // The JetStream runs' own nats-server (its store under the temp root; killed at exit).
  const nats = usesNats ? await startNats(outboxRoot.root) : null;
  const runs = [];
  const failures = [];
  const stockCannotRun = {};
  const hardMs = opts.timeout * 1000 + 120_000;
  log(`N = ${opts.n}, ${jobs.length} runs, ours = ${opts.plugin}${process.env.NAPI_RS_NATIVE_LIBRARY_PATH ? ` with ${process.env.NAPI_RS_NATIVE_LIBRARY_PATH}` : ''}, webhook server pid ${server.pid} at ${server.url}${outboxRoot ? `, outbox dirs under ${outboxRoot.root}` : ''}${nats ? `, nats-server pid ${nats.pid} at ${nats.url}` : ''}`);
  try {
    for (const [i, base] of jobs.entries()) {
      const job = { ...base, n: opts.n, seed: opts.seed, concurrency: opts.concurrency, timeoutMs: opts.timeout * 1000, webhookUrl: server.url, awsUrl: opts['aws-url'], awsProxyUrl: awsProxy?.url, dests: opts.dests, sqlPrefix, pgUrl: opts['pg-url'], mysqlUrl: opts['mysql-url'], pluginUrl: pathToFileURL(opts.plugin).href };
      if (job.kind === 'writes' && job.plugin === 'none') job.dest = 's3db'; // no plugin: the destination is unused
      if (job.outbox) job.outboxDir = outboxRoot.dirFor(i);
      if (nats) Object.assign(job, { natsUrl: nats.url, index: i, workDir: outboxRoot.dirFor(i) });
      const t0 = performance.now();
      const answer = await runChild(job, hardMs);
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      if (answer.ok) {
        runs.push({ ...base, result: answer.result });
        log(`[${i + 1}/${jobs.length}] ${describe(base, answer.result)} (${secs} s)`);
      } else if (base.plugin === 'stock' && STOCK_CANNOT_RUN[base.dest]) {
        // Known and expected: reported as such, not as a failure of the benchmark.
        stockCannotRun[base.dest] = `${STOCK_CANNOT_RUN[base.dest]} (this run: ${answer.error.split('\n')[0]})`;
        log(`[${i + 1}/${jobs.length}] ${describe(base)}: the stock driver cannot run (${secs} s): ${answer.error.split('\n')[0]}`);
      } else {
        failures.push(`${describe(base)}: ${answer.error.split('\n')[0]}`);
        log(`[${i + 1}/${jobs.length}] ${describe(base)} FAILED (${secs} s): ${answer.error}\n${answer.output ?? ''}`);
      }
    }
  } finally {
    server.stop();
    awsProxy?.stop();
    nats?.stop();
    outboxRoot?.remove();
    if (opts.dests.some((d) => d === 'postgres' || d === 'mysql')) {
      const { dropSqlLeftovers } = await import('./lib/sql.mjs');
      await dropSqlLeftovers(opts.dests, { pgUrl: opts['pg-url'], mysqlUrl: opts['mysql-url'], sqlPrefix }).catch((e) => log(`dropping leftover SQL tables failed: ${e.message}`));
    }
  }
  const cpu = os.cpus();
  const meta = {
    cpus: cpu.length,
    cpuModel: cpu[0]?.model?.trim() ?? 'unknown CPU',
    node: process.versions.node,
    date: new Date().toISOString().slice(0, 16).replace('T', ' '),
    minutes: (Date.now() - started) / 60_000,
    plugin: describePlugin(),
    native: describeNative(),
    s3db: JSON.parse(readFileSync(new URL('../node_modules/s3db.js/package.json', import.meta.url), 'utf8')).version,
  };
  return { runs, failures, meta: { ...meta, stockCannotRun } };
}

async function main() {
  let saved;
  if (opts.from) {
    // Re-render the tables and the chart of an earlier run (its options, not today's).
    saved = JSON.parse(readFileSync(opts.from, 'utf8'));
    const { out } = opts;
    Object.assign(opts, { only: ['compare'] }, saved.opts, { out, from: opts.from });
  } else {
    saved = await runAll();
  }
  const { runs, failures, meta } = saved;
  mkdirSync(opts.out, { recursive: true });
  const agg = aggregate(runs, failures, meta);
  const markdown = renderReport(agg);
  writeFileSync(join(opts.out, 'results.md'), `${markdown}\n`);
  if (!opts.from) writeFileSync(join(opts.out, 'results.json'), `${JSON.stringify({ opts, meta, runs, failures }, null, 1)}\n`);
  const charts = [];
  if (agg.sections.includes('compare')) charts.push(['chart.png', chartData(agg)]);
  if (agg.sections.includes('durability')) charts.push(['durability.png', durabilityChartData(agg, meta)]);
  for (const [file, data] of charts) writeFileSync(join(opts.out, file), renderChart(data));
  console.log(markdown);
  log(`\nwrote ${join(opts.out, 'results.md')}${opts.from ? '' : ', results.json'} and ${charts.map(([file]) => file).join(', ')}`);
  if (failures.length) process.exitCode = 1;
}

main().catch((error) => {
  console.error(error?.stack ?? error);
  process.exit(1);
});
