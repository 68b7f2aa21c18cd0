// The JetStream outbox (README "Scaling out") with real processes: application instances in
// mode 'publish' (fixtures/jetstream-publisher.mjs) and delivery workers started with the CLI
// (`s3db-replicator worker --config fixtures/jetstream-options.mjs`), against a nats-server of
// this test's own (own port and store, so it can be restarted), PostgreSQL and a webhook.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

import { Database } from 's3db.js/lite';

import { ReplicatorPlugin } from '../plugin.js';
import { startWebhookServer } from './helpers/http-server.mjs';
import { PG_URL, pgExec, pgRows, unique } from './helpers/sql.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'bin', 's3db-replicator.mjs');
const OPTIONS = path.join(ROOT, '__test__', 'fixtures', 'jetstream-options.mjs');
const PUBLISHER = path.join(ROOT, '__test__', 'fixtures', 'jetstream-publisher.mjs');
const NATS_BIN = execFileSync(path.join(ROOT, 'scripts', 'services', 'nats.sh'), ['--bin'], { encoding: 'utf8' }).trim();
const PARTITIONS = 8;
const LEASE_TTL_MS = 2000;

const children = new Set();
let server;

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once the server greets a client with JetStream on. */
function answers(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.setTimeout(1000, () => socket.destroy());
    socket.on('data', (chunk) => {
      text += chunk;
      if (text.includes('\n')) {
        socket.destroy();
        resolve(text.includes('"jetstream":true'));
      }
    });
    socket.on('error', () => resolve(false));
    socket.on('close', () => resolve(false));
  });
}

/** A nats-server of our own with JetStream, on `port`, storing under `store`. */
async function startNats(port, store) {
  const child = spawn(NATS_BIN, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', store], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (c) => { log = (log + c).slice(-4000); });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const deadline = Date.now() + 15_000;
  while (!(await answers(port))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`nats-server did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    store,
    child,
    async kill() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** A child process whose stdout lines are kept and can be awaited. */
function run(args, env) {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const lines = [];
  const waiters = [];
  let stderr = '';
  let buffer = '';
  child.stdout.on('data', (chunk) => {
    buffer += chunk;
    let at;
    while ((at = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, at);
      buffer = buffer.slice(at + 1);
      lines.push(line);
      for (const w of [...waiters]) if (w.match(line)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(line); }
    }
  });
  child.stderr.on('data', (c) => { stderr = (stderr + c).slice(-8000); });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => { children.delete(child); resolve({ code, signal }); }));
  return {
    child,
    lines,
    exited,
    get stderr() { return stderr; },
    /** Resolves with the first line (already printed or to come) that `match` accepts. */
    line(match, timeoutMs = 60_000, what = 'a line') {
      const seen = lines.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = { match, resolve };
        waiters.push(w);
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; stderr:\n${stderr}`)), timeoutMs);
        exited.then(({ code, signal }) => { clearTimeout(timer); reject(new Error(`exited (${code ?? signal}) before ${what}; stderr:\n${stderr}`)); });
        const done = w.resolve;
        w.resolve = (l) => { clearTimeout(timer); done(l); };
      });
    },
    kill(signal = 'SIGKILL') {
      child.kill(signal);
      return exited;
    },
  };
}

/** One test's stream, table and webhook. */
async function setup(natsUrl, name) {
  const hook = await startWebhookServer();
  const table = unique(`js_${name}`);
  pgExec(`CREATE TABLE ${table} (id text PRIMARY KEY, name text, n integer, writer text)`);
  const stream = unique(name).toUpperCase();
  const fixture = {
    natsUrl, stream, subjectPrefix: stream.toLowerCase().replace(/_/g, '-'), partitions: PARTITIONS,
    leaseTtlMs: LEASE_TTL_MS, table, pgUrl: PG_URL, webhookUrl: hook.url,
  };
  const env = { JETSTREAM_FIXTURE: JSON.stringify(fixture) };
  return {
    hook, table, env,
    worker: async () => {
      const w = run([CLI, 'worker', '--config', OPTIONS], env);
      await w.line((l) => l.includes('"event":"ready"'), 30_000, 'the worker to be ready');
      return w;
    },
    publisher: (plan) => run([PUBLISHER], { ...env, JETSTREAM_WRITER: JSON.stringify(plan) }),
    /** The partitions a worker said it owns last. */
    owned: (w) => {
      const events = w.lines.filter((l) => l.includes('"event":"partitions"'));
      return events.length ? JSON.parse(events.at(-1)).owned : [];
    },
    async close() {
      await hook.close();
      pgExec(`DROP TABLE IF EXISTS ${table}`);
    },
  };
}

/** Per record, the `n` of every change the webhook received, in arrival order. */
function arrivals(hook) {
  const byId = new Map();
  for (const p of hook.payloads({ accepted: true })) {
    if (!byId.has(p.data.id)) byId.set(p.data.id, []);
    byId.get(p.data.id).push(p.data.n);
  }
  return byId;
}

/** Every expected change arrived; per record, changes came in order (a replay after a failure
 * restarts from an earlier change and runs forward again, so it may repeat a tail). */
function assertDelivered(hook, ids, last, { replays }) {
  const byId = arrivals(hook);
  for (const id of ids) {
    const seen = byId.get(id) ?? [];
    for (let n = 1; n <= last; n++) assert.ok(seen.includes(n), `${id}: change n=${n} arrived (got ${seen.join(',')})`);
    assert.equal(seen.at(-1), last, `${id}: the last change arrived last (got ${seen.join(',')})`);
    for (let i = 1; i < seen.length; i++) {
      if (replays) assert.ok(seen[i] === seen[i - 1] + 1 || seen[i] <= seen[i - 1], `${id}: in order (got ${seen.join(',')})`);
      else assert.equal(seen[i], seen[i - 1] + 1, `${id}: in order, once each (got ${seen.join(',')})`);
    }
  }
}

/** PostgreSQL holds the final state of every record (the webhook may finish first). */
async function assertFinalState(table, ids, last) {
  const deadline = Date.now() + 20_000;
  let rows;
  for (;;) {
    rows = pgRows(`SELECT id, name, n FROM ${table} ORDER BY id`);
    if (rows.length === ids.length && rows.every((r) => r.n === last)) break;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(rows, [...ids].sort().map((id) => ({ id, name: `${id} v${last}`, n: last })));
}

const idsOf = (writers, records) => writers.flatMap((w) => Array.from({ length: records }, (_, i) => `${w}-${i}`));
const countOk = (p) => p.lines.filter((l) => l.startsWith('ok ')).length;

before(async () => {
  const store = mkdtempSync(path.join(tmpdir(), 's3db-js-nats-'));
  server = await startNats(await freePort(), store);
});

after(async () => {
  for (const c of [...children]) c.kill('SIGKILL');
  if (server) rmSync(server.store, { recursive: true, force: true });
});

test('three application processes and two workers: every change reaches PostgreSQL and the webhook once, in order; the workers share the partitions', async () => {
  const s = await setup(server.url, 'share');
  try {
    const workers = [await s.worker(), await s.worker()];
    const writers = ['a', 'b', 'c'];
    const records = 15;
    const updates = 4;
    const publishers = writers.map((writer) => s.publisher({ writer, records, updates, flush: true }));
    for (const p of publishers) await p.line((l) => l.startsWith('done'), 60_000, 'the publisher to finish');
    const total = writers.length * records * (1 + updates);
    assert.equal(publishers.reduce((n, p) => n + countOk(p), 0), total);
    // A publisher's flush() resolves once the workers settled its changes at every destination.
    for (const p of publishers) await p.line((l) => l === 'flushed', 60_000, 'the publisher\'s flush()');
    assert.equal(s.hook.payloads({ accepted: true }).length, total, 'every change is at the webhook when flush() resolved');
    const ids = idsOf(writers, records);
    assertDelivered(s.hook, ids, 1 + updates, { replays: false });
    assert.deepEqual(pgRows(`SELECT id, name, n FROM ${s.table} ORDER BY id`), [...ids].sort().map((id) => ({ id, name: `${id} v${1 + updates}`, n: 1 + updates })), 'and in PostgreSQL');
    // Each worker ends up with its fair share, and together they cover every partition.
    const deadline = Date.now() + 10_000;
    while (!workers.every((w) => s.owned(w).length === PARTITIONS / 2) && Date.now() < deadline) {
      await workers[0].line(() => false, 250).catch(() => {});
    }
    const owned = workers.map((w) => s.owned(w));
    assert.deepEqual(owned.map((o) => o.length), [PARTITIONS / 2, PARTITIONS / 2], `owned: ${JSON.stringify(owned)}`);
    assert.deepEqual(owned.flat().sort((x, y) => x - y), Array.from({ length: PARTITIONS }, (_, i) => i));
    for (const w of workers) {
      const { code } = await w.kill('SIGTERM');
      assert.equal(code, 0, `a worker stops cleanly on SIGTERM: ${w.stderr}`);
    }
  } finally {
    await s.close();
  }
});

test('a worker killed with SIGKILL mid-stream: the other takes its partitions over and nothing is lost', async () => {
  const s = await setup(server.url, 'kill');
  try {
    const workers = [await s.worker(), await s.worker()];
    const records = 12;
    const updates = 20;
    const publisher = s.publisher({ writer: 'k', records, updates, paceMs: 15 });
    const total = records * (1 + updates);
    // Mid-stream: a third of the changes delivered, and both workers own partitions.
    await s.hook.until(() => s.hook.payloads().length >= total / 3, 60_000, 'a third of the changes');
    assert.ok(workers.every((w) => s.owned(w).length > 0), `both own partitions: ${workers.map((w) => s.owned(w)).join(' | ')}`);
    const [victim, survivor] = workers;
    const lost = s.owned(victim);
    await victim.kill('SIGKILL');
    await publisher.line((l) => l.startsWith('done'), 60_000, 'the publisher to finish');
    assert.equal(countOk(publisher), total);
    await s.hook.until(() => {
      const byId = arrivals(s.hook);
      return byId.size === records && [...byId.values()].every((seen) => seen.at(-1) === 1 + updates);
    }, 60_000, 'every record at its last change');
    const ids = idsOf(['k'], records);
    assertDelivered(s.hook, ids, 1 + updates, { replays: true });
    await assertFinalState(s.table, ids, 1 + updates);
    // Its leases expired (leaseTtlMs) and the survivor took every partition over.
    await survivor.line((l) => l.includes('"event":"partitions"') && JSON.parse(l).owned.length === PARTITIONS, 20_000, 'the survivor to own every partition');
    assert.ok(lost.length > 0 && lost.every((p) => s.owned(survivor).includes(p)), `the survivor took over ${lost} (owns ${s.owned(survivor)})`);
    await survivor.kill('SIGTERM');
  } finally {
    await s.close();
  }
});

test('the JetStream server restarted mid-stream: publishers wait and resume, workers resume, nothing accepted is lost', async () => {
  // A server of this test's own: it is killed and started again on the same port and store.
  const own = await startNats(await freePort(), mkdtempSync(path.join(tmpdir(), 's3db-js-nats-restart-')));
  const s = await setup(own.url, 'restart');
  try {
    const worker = await s.worker();
    const records = 10;
    const updates = 30;
    const publisher = s.publisher({ writer: 'r', records, updates, paceMs: 10 });
    const total = records * (1 + updates);
    await publisher.line(() => countOk(publisher) >= total / 4, 60_000, 'a quarter of the writes');
    await own.kill();
    const okAtKill = countOk(publisher);
    await new Promise((r) => setTimeout(r, 1500)); // the outage itself: nothing to wait for
    assert.ok(countOk(publisher) - okAtKill <= records, 'writes wait while the server is down (at most one in flight per record got its ack)');
    await startNats(own.port, own.store);
    await publisher.line((l) => l.startsWith('done'), 90_000, 'the publisher to finish');
    assert.equal(countOk(publisher), total, 'every write resolved once the server was back');
    await s.hook.until(() => {
      const byId = arrivals(s.hook);
      return byId.size === records && [...byId.values()].every((seen) => seen.at(-1) === 1 + updates);
    }, 60_000, 'every record at its last change');
    const ids = idsOf(['r'], records);
    assertDelivered(s.hook, ids, 1 + updates, { replays: true });
    await assertFinalState(s.table, ids, 1 + updates);
    await worker.kill('SIGTERM');
  } finally {
    await s.close();
    rmSync(own.store, { recursive: true, force: true });
  }
});

test('a publisher killed right after insert() resolved: its change is delivered by a worker', async () => {
  const s = await setup(server.url, 'pubkill');
  try {
    // No worker yet: the change can only come from the stream, after the publisher is gone.
    const publisher = s.publisher({ writer: 'p', records: 1, updates: 0, hold: true });
    await publisher.line((l) => l === 'ok p-0 1', 30_000, 'the insert to resolve');
    await publisher.kill('SIGKILL');
    const worker = await s.worker();
    await s.hook.until(() => arrivals(s.hook).get('p-0')?.includes(1), 30_000, 'the change');
    await assertFinalState(s.table, ['p-0'], 1);
    await worker.kill('SIGTERM');
  } finally {
    await s.close();
  }
});

test("mode 'both' publishes and delivers in one process; a bad option is named", async () => {
  const s = await setup(server.url, 'both');
  const fixture = JSON.parse(s.env.JETSTREAM_FIXTURE);
  const db = new Database({ connectionString: 'memory://js-both/db', logLevel: 'silent' });
  await db.connect();
  const items = await db.createResource({ name: 'items', attributes: { name: 'string', n: 'number' } });
  const jetstream = { url: fixture.natsUrl, stream: fixture.stream, subjectPrefix: fixture.subjectPrefix, partitions: 2, leaseTtlMs: LEASE_TTL_MS };
  assert.throws(() => new ReplicatorPlugin({ mode: 'both', outbox: { jetstream: { ...jetstream, partitons: 2 } }, replicators: [{ driver: 'webhook', resources: ['items'], config: { url: s.hook.url } }] }), (e) => e.code === 'ERR_CONFIG' && /did you mean 'partitions'/.test(e.description));
  assert.throws(() => new ReplicatorPlugin({ mode: 'publish', replicators: [{ driver: 'webhook', resources: ['items'], config: { url: s.hook.url } }] }), /mode 'publish' needs the JetStream outbox/);
  const plugin = new ReplicatorPlugin({
    mode: 'both',
    outbox: { jetstream },
    replicators: [{ driver: 'webhook', resources: ['items'], config: { url: s.hook.url } }],
  });
  try {
    await db.usePlugin(plugin);
    await items.insert({ id: 'x1', name: 'one', n: 1 });
    await items.update('x1', { name: 'one', n: 2 });
    await plugin.flush(); // through the stream and this process's own delivery
    assert.deepEqual(arrivals(s.hook).get('x1'), [1, 2]);
    const { outbox } = await plugin.getReplicatorStats();
    assert.equal(outbox.mode, 'jetstream');
    assert.deepEqual(outbox.partitions, [0, 1], 'the only process owns both partitions');
    const identity = s.hook.requests.find((r) => r.body?.data?.id === 'x1').headers['idempotency-key'];
    assert.match(identity, /^[0-9a-f]{16}:1$/, 'the identity is the publisher id and its seq');
  } finally {
    await plugin.stop();
    await db.disconnect();
    await s.close();
  }
});

test('a publisher whose server is unreachable fails the install with a clear error (no credentials in it)', async () => {
  const port = await freePort();
  const db = new Database({ connectionString: 'memory://js-down/db', logLevel: 'silent' });
  await db.connect();
  await db.createResource({ name: 'items', attributes: { name: 'string' } });
  const plugin = new ReplicatorPlugin({
    mode: 'publish',
    outbox: { jetstream: { url: `nats://127.0.0.1:${port}`, user: 'app', password: 'hunter2-secret' } },
    replicators: [{ driver: 'webhook', resources: ['items'], config: { url: 'http://127.0.0.1:9/hook' } }],
  });
  await assert.rejects(db.usePlugin(plugin), (error) => {
    assert.equal(error.code, 'ERR_JETSTREAM');
    assert.match(error.message, new RegExp(`could not connect to NATS at nats://127.0.0.1:${port}`));
    assert.ok(!`${error.message} ${error.description}`.includes('hunter2'), 'the password is not in the error');
    return true;
  });
  await db.disconnect();
});

test('the worker command: a missing --config or a config without outbox.jetstream is a clear error; mode publish delivers nothing', async () => {
  const missing = run([CLI, 'worker'], {});
  assert.equal((await missing.exited).code, 1);
  assert.match(missing.stderr, /--config is required/);
  const local = run([CLI, 'worker', '--config', path.join(ROOT, '__test__', 'fixtures', 'jetstream-local-options.mjs')], {});
  assert.equal((await local.exited).code, 1);
  assert.match(local.stderr, /a worker needs outbox: \{ jetstream/);
  assert.ok(!local.stderr.includes('hunter2'), 'credentials in the config are not echoed');

  const s = await setup(server.url, 'pubonly');
  const fixture = JSON.parse(s.env.JETSTREAM_FIXTURE);
  const db = new Database({ connectionString: 'memory://js-pubonly/db', logLevel: 'silent' });
  await db.connect();
  await db.createResource({ name: 'items', attributes: { name: 'string' } });
  const plugin = new ReplicatorPlugin({
    mode: 'publish',
    outbox: { jetstream: { url: fixture.natsUrl, stream: fixture.stream, subjectPrefix: fixture.subjectPrefix } },
    replicators: [{ driver: 'webhook', resources: ['items'], config: { url: s.hook.url } }],
  });
  try {
    await db.usePlugin(plugin);
    await assert.rejects(plugin.syncAllData('webhook'), (e) => e.code === 'ERR_NOT_SUPPORTED' && /mode 'publish'/.test(e.message));
    assert.equal((await plugin.getReplicatorStats()).outbox, null, 'no engine, no destination connections');
  } finally {
    await plugin.stop();
    await db.disconnect();
    await s.close();
  }
});
