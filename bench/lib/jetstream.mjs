// The JetStream section: the shared outbox of README "Scaling out", against a nats-server of
// the bench's own (a free loopback port, its store under the run's temp root, killed at exit).
//
// - In the durability section, the `jetstream` outbox variant (lib/durability.mjs) runs the
//   comparison's writes with `mode: 'both'`: every change is published (insert() resolves on
//   the server's ack) and delivered in-process from the stream. Next to `disk` it gives the
//   write-path cost and delivered/s of going through the server.
// - Here, `workers` runs: one process publishes N changes (mode 'publish', 64 writes in flight),
//   then K delivery workers (`s3db-replicator worker`, each its own process) drain that backlog
//   to the webhook receiver, for K = 1, 2 and 4. Delivered/s = N ÷ the time from the first
//   worker's `ready` to the last change at the receiver; completion is the publisher's
//   flush() (every change settled by the workers).
//
// Each job gets its own stream (BENCH_<i>), so runs never see each other's changes.

import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { Database } from 's3db.js/lite';

import { ATTRIBUTES, openDestination } from './destinations.mjs';
import { installPlugin } from './plugins.mjs';
import { stateMismatches, visibility } from './stats.mjs';
import { makeScript, runWriter } from './workload.mjs';

const ROOT = new URL('../../', import.meta.url).pathname;
export const WORKER_COUNTS = [1, 2, 4];
const PARTITIONS = 16;

/** The `outbox.jetstream` options of job `i` (its own stream and subjects). */
export function jetstreamOf(natsUrl, i) {
  return { url: natsUrl, stream: `BENCH_${i}`, subjectPrefix: `bench.${i}`, partitions: PARTITIONS, leaseTtlMs: 3000 };
}

const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});

/** compare.mjs: starts nats-server -js (the binary scripts/services/nats.sh --bin finds or installs). */
export async function startNats(storeRoot) {
  const bin = await new Promise((resolve, reject) => {
    const p = spawn(join(ROOT, 'scripts/services/nats.sh'), ['--bin'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.once('error', reject);
    p.once('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`scripts/services/nats.sh --bin exited ${code}`))));
  });
  const port = await freePort();
  const store = join(storeRoot, 'nats');
  mkdirSync(store, { recursive: true });
  const child = spawn(bin, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store], { stdio: 'ignore' });
  const url = `nats://127.0.0.1:${port}`;
  const stop = () => {
    child.kill('SIGKILL');
    rmSync(store, { recursive: true, force: true });
  };
  process.once('exit', stop);
  const deadline = Date.now() + 15_000;
  while (!(await jetstreamAnswers(port))) {
    if (Date.now() > deadline) {
      stop();
      throw new Error(`nats-server (${bin}) did not answer on ${url} within 15 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, pid: child.pid, stop };
}

/** The server greets a client with INFO {...}; JetStream is on when it says "jetstream":true. */
const jetstreamAnswers = (port) => new Promise((resolve) => {
  const sock = connect(port, '127.0.0.1');
  sock.once('data', (d) => {
    sock.destroy();
    resolve(String(d).includes('"jetstream":true'));
  });
  sock.once('error', () => resolve(false));
});

/** The `writer` key of a workers job (what the aggregate groups its runs by). */
const writerOf = (workers) => `workers-${workers}`;

/** The jobs of repetition `rep`: K workers, in an order that rotates per repetition. */
export function jetstreamJobs(opts, rep) {
  const counts = WORKER_COUNTS.map((_, i) => WORKER_COUNTS[(i + rep) % WORKER_COUNTS.length]);
  return counts.map((workers) => ({ kind: 'workers', plugin: 'ours', dest: 'webhook', writer: writerOf(workers), workers, rep }));
}

/** A delivery worker process; resolves `ready` at its `{"event":"ready"}` line. */
function startWorker(configFile) {
  const child = spawn(process.execPath, [join(ROOT, 'bin/s3db-replicator.mjs'), 'worker', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err = (err + d).slice(-2000); });
  const ready = new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      if (buf.includes('"event":"ready"')) resolve(performance.now());
    });
    child.once('exit', (code) => reject(new Error(`a worker exited (${code}) before it was ready: ${err}`)));
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  ready.catch(() => {});
  return { child, ready, exited, stderr: () => err };
}

/** variant.mjs: one `workers` job. */
export async function runWorkers(job) {
  const jetstream = jetstreamOf(job.natsUrl, job.index);
  const dest = await openDestination('webhook', job);
  const replicator = dest.replicator('ours');
  const db = new Database({ connectionString: 'memory://bench-source/db', logLevel: 'silent' });
  await db.connect();
  const users = await db.createResource({ name: 'users', attributes: ATTRIBUTES });
  const { plugin } = await installPlugin('ours', db, replicator, { pluginUrl: job.pluginUrl, options: { mode: 'publish', outbox: { jetstream } } });
  const { ops, final } = makeScript(job.n, { seed: job.seed });
  const w = await runWriter(users, ops, { writer: 'conc', concurrency: job.concurrency });

  // The workers' options module: the same replicator, delivering from the stream.
  mkdirSync(job.workDir, { recursive: true });
  const configFile = join(job.workDir, 'worker-options.mjs');
  writeFileSync(configFile, `export default ${JSON.stringify({ mode: 'deliver', logLevel: 'warn', outbox: { jetstream }, replicators: [replicator] })};\n`);
  await dest.reset();
  const workers = Array.from({ length: job.workers }, () => startWorker(configFile));
  let result;
  try {
    const firstReady = await Promise.race(workers.map((x) => x.ready));
    await Promise.all(workers.map((x) => x.ready));
    let timer;
    const complete = await Promise.race([
      plugin.flush().then(() => true),
      new Promise((resolve) => { timer = setTimeout(() => resolve(false), job.timeoutMs); }),
    ]);
    clearTimeout(timer);
    const arrivals = await dest.arrivals();
    const vis = visibility(ops, arrivals);
    const state = await dest.finalState('u');
    const deliverMs = vis.last - firstReady;
    result = {
      workers: job.workers,
      writeRate: (ops.length / (w.ended - w.started)) * 1000, // publish path: writes/s with mode 'publish'
      delivered: vis.delivered,
      deliverMs,
      deliveredRate: (vis.delivered / deliverMs) * 1000,
      requests: (await dest.traffic()).requests,
      complete,
      mismatches: stateMismatches(final, state),
    };
  } finally {
    for (const x of workers) x.child.kill('SIGTERM');
    await Promise.all(workers.map((x) => x.exited));
    await plugin.stop();
    await db.disconnect().catch(() => {});
    rmSync(job.workDir, { recursive: true, force: true });
  }
  return result;
}

// ---- report ----

const num = (v, digits = 0) => (Number.isFinite(v) ? v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '—');
const ratio = (v) => (Number.isFinite(v) ? v.toFixed(2) : '—');

export function renderJetstream(a) {
  const { opts } = a;
  const get = (k, path) => a.get('workers', 'ours', 'webhook', writerOf(k), path);
  const worst = (k, path) => a.worst('workers', 'ours', 'webhook', writerOf(k), path);
  const one = get(1, 'deliveredRate');
  const line = (cells) => `| ${cells.join(' | ')} |`;
  const out = ['## JetStream outbox: delivery workers', ''];
  out.push(`A backlog of ${num(opts.n)} changes (the comparison's workload, published by one process in mode 'publish' with 64 writes in flight) drained by K delivery workers (\`s3db-replicator worker\`, one process each, ${PARTITIONS} partitions) to the webhook receiver, on a nats-server of the run's own. ` +
    `Delivered/s = changes ÷ the time from the first worker's ready to the last change at the receiver. On ${a.meta?.cpus ?? '?'} CPU cores the workers, the receiver and nats-server share the cores: this shows what a worker costs, not how far delivery scales (see README "Scaling out"). ` +
    'The write-path cost and delivered/s of the JetStream outbox next to the disk outbox (mode \'both\') are in the durability section, variant jetstream.');
  out.push('');
  out.push(line(['Workers', 'Delivered/s', '÷ 1 worker', 'Webhook requests', 'Publish writes/s (mode publish)', 'Delivered', 'State diff']));
  out.push(line(Array(7).fill('---')));
  for (const k of WORKER_COUNTS) {
    const complete = worst(k, 'complete');
    out.push(line([k, num(get(k, 'deliveredRate')), ratio(get(k, 'deliveredRate') / one), num(get(k, 'requests')), num(get(k, 'writeRate')),
      `${num(worst(k, 'delivered'))}/${num(opts.n)}${complete === false ? ', TIMED OUT' : ''}`, num(worst(k, 'mismatches'))]));
  }
  out.push('');
  return out.join('\n');
}
