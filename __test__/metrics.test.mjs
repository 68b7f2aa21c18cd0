// Prometheus metrics, end to end: a real s3db.js Database (memory://), the plugin with a healthy
// replicator (s3db to memory://) and a webhook replicator whose endpoint (a server on
// 127.0.0.1 in this test) fails one change once (retried) and rejects another (400: failed, dead
// letter). After a known workload and flush(), plugin.metrics() is parsed with the reference
// parser (the official Python client, scripts/tools/prometheus-parse.sh) and every counter must
// equal what happened. The built-in listener is checked over real HTTP.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Database } from 's3db.js/lite';

import { METRICS_CONTENT_TYPE, ReplicatorError, ReplicatorPlugin } from '../plugin.js';
import { startWebhookServer } from './helpers/http-server.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TEST = { timeout: 120_000 };

/** Every family: its type and label names. Adding, renaming or relabelling one is a change users see. */
const FAMILIES = {
  s3db_replicator_changes_received_total: ['counter', ['driver', 'replicator', 'resource']],
  s3db_replicator_changes_delivered_total: ['counter', ['driver', 'replicator', 'resource']],
  s3db_replicator_changes_failed_total: ['counter', ['driver', 'replicator', 'resource']],
  s3db_replicator_changes_skipped_total: ['counter', ['driver', 'replicator', 'resource']],
  s3db_replicator_changes_retried_total: ['counter', ['driver', 'replicator', 'resource']],
  s3db_replicator_changes_dead_lettered_total: ['counter', ['driver', 'replicator', 'resource']],
  s3db_replicator_changes_held_total: ['counter', ['driver', 'replicator', 'resource']],
  s3db_replicator_batches_total: ['counter', ['driver', 'replicator']],
  s3db_replicator_batch_size: ['histogram', ['driver', 'replicator']],
  s3db_replicator_delivery_duration_seconds: ['histogram', ['driver', 'replicator']],
  s3db_replicator_queue_depth: ['gauge', ['driver', 'replicator']],
  s3db_replicator_lag_seconds: ['gauge', ['driver', 'replicator']],
  s3db_replicator_in_flight_batches: ['gauge', ['driver', 'replicator']],
  s3db_replicator_circuit_state: ['gauge', ['driver', 'replicator', 'state']],
  s3db_replicator_enabled: ['gauge', ['driver', 'replicator']],
  s3db_replicator_outbox_bytes: ['gauge', []],
  s3db_replicator_outbox_segments: ['gauge', []],
  s3db_replicator_outbox_pending_changes: ['gauge', []],
  s3db_replicator_outbox_append_errors_total: ['counter', []],
  s3db_replicator_outbox_replayed_total: ['counter', []],
  s3db_replicator_outbox_fsync_duration_seconds: ['histogram', []],
  s3db_replicator_dead_letters: ['gauge', []],
  s3db_replicator_engine_uptime_seconds: ['gauge', []],
};

/** The exposition parsed by the reference parser: [{ name, type, help, samples }]. */
function parse(text) {
  return new Promise((resolve, reject) => {
    const child = execFile(path.join(ROOT, 'scripts/tools/prometheus-parse.sh'), [], { maxBuffer: 16 << 20, timeout: 100_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`prometheus-parse.sh failed: ${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout));
    });
    child.stdin.end(text);
  });
}

/** Prometheus' family name of a metric (the Python client drops a counter's `_total`). */
const familyName = (name) => name.replace(/_total$/, '');

/** The value of the sample `name` whose labels include `labels` (exactly one must match). */
function sample(families, name, labels = {}) {
  const all = families.flatMap((f) => f.samples).filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(all.length, 1, `one sample ${name} ${JSON.stringify(labels)}, got ${JSON.stringify(all)}`);
  return all[0].value;
}

/** Per-test resources, released in one `after` hook. */
function scope(t) {
  const cleanups = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await c();
  });
  return {
    defer: (fn) => cleanups.push(fn),
    async db() {
      const db = new Database({ connectionString: `memory://metrics-${randomUUID()}/src`, logLevel: 'silent' });
      await db.connect();
      cleanups.push(() => db.disconnect().catch(() => {}));
      return db;
    },
  };
}

describe('plugin.metrics()', () => {
  test('after a known workload the exposition parses and every counter equals what happened', TEST, async (t) => {
    const s = scope(t);
    // The webhook endpoint: 503 once for u-retry (retried, then delivered), 400 for u-bad.
    const seen = new Map();
    const hook = await startWebhookServer({
      respond: (r) => {
        const id = r.body?.data?.id;
        seen.set(id, (seen.get(id) ?? 0) + 1);
        if (id === 'u-bad') return { status: 400, body: 'rejected' };
        if (id === 'u-retry' && seen.get(id) === 1) return { status: 503, body: 'try again' };
        return undefined;
      },
    });
    s.defer(() => hook.close());
    const dir = await mkdtemp(path.join(tmpdir(), 's3db-metrics-'));
    s.defer(() => rm(dir, { recursive: true, force: true }));
    const db = await s.db();
    const plugin = new ReplicatorPlugin({
      outbox: { dir },
      replicators: [
        { id: 'backup', driver: 's3db', resources: { users: 'users', orders: { resource: 'orders', shouldReplicate: (d) => d.keep !== false } }, config: { connectionString: 'memory://KEYID:s3cr3t-value@backup/b' } },
        { id: 'hook', driver: 'webhook', resources: ['users'], config: { url: hook.url, retries: 3, retryDelay: 5 } },
      ],
    });
    s.defer(() => plugin.stop());
    const errors = [];
    plugin.on('plg:replicator:error', (e) => errors.push(e));
    await db.usePlugin(plugin);
    const users = await db.createResource({ name: 'users', attributes: { name: 'string' } });
    const orders = await db.createResource({ name: 'orders', attributes: { total: 'number', keep: 'boolean|optional' } });

    for (const id of ['u1', 'u2', 'u-retry', 'u-bad']) await users.insert({ id, name: id });
    await users.update('u1', { name: 'Ana' });
    await users.delete('u2');
    await orders.insert({ id: 'o1', total: 1 });
    await orders.insert({ id: 'o2', total: 2, keep: false });
    await orders.insert({ id: 'o3', total: 3 });
    await plugin.flush();
    assert.deepEqual(errors.map((e) => [e.replicator, e.recordId]), [['hook', 'u-bad']], 'the workload went as planned');
    assert.equal(seen.get('u-retry'), 2, 'u-retry took one retry');

    const text = plugin.metrics();
    assert.equal(typeof text, 'string');
    assert.ok(!text.includes('s3cr3t'), 'no secret in the metrics');
    const families = await parse(text);

    // Names, types and label sets are exactly the documented ones.
    const byName = new Map(families.map((f) => [f.name, f]));
    assert.deepEqual([...byName.keys()].sort(), Object.keys(FAMILIES).map(familyName).sort());
    for (const [name, [type, labels]] of Object.entries(FAMILIES)) {
      const f = byName.get(familyName(name));
      assert.equal(f.type, type, `${name} is a ${type}`);
      assert.ok(f.help.length > 0, `${name} has a help text`);
      for (const smp of f.samples) {
        const names = Object.keys(smp.labels).filter((l) => l !== 'le').sort();
        assert.deepEqual(names, labels, `${smp.name} labels`);
      }
    }

    const counter = (name, replicator, resource) => sample(families, name, { replicator, resource });
    const expected = {
      // replicator, resource: received, delivered, failed, skipped, retried, dead-lettered, held
      'backup users': [6, 6, 0, 0, 0, 0, 0],
      'backup orders': [3, 2, 0, 1, 0, 0, 0],
      'hook users': [6, 5, 1, 0, 1, 1, 0],
    };
    const kinds = ['received', 'delivered', 'failed', 'skipped', 'retried', 'dead_lettered', 'held'];
    for (const [key, values] of Object.entries(expected)) {
      const [replicator, resource] = key.split(' ');
      const got = kinds.map((k) => counter(`s3db_replicator_changes_${k}_total`, replicator, resource));
      assert.deepEqual(got, values, `${key}: ${kinds.join(', ')}`);
    }
    assert.equal(sample(families, 's3db_replicator_changes_received_total', { replicator: 'backup', resource: 'users', driver: 's3db' }), 6, 'driver label');
    assert.equal(sample(families, 's3db_replicator_changes_received_total', { replicator: 'hook', resource: 'users', driver: 'webhook' }), 6);
    assert.equal(families.flatMap((f) => f.samples).filter((x) => x.labels.replicator === 'hook' && x.labels.resource === 'orders').length, 0, 'only routed resources have series');

    // Histograms: one batch-size observation per batch, summing to the changes; one latency
    // observation per delivered change.
    const stats = await plugin.getReplicatorStats();
    for (const [replicator, received, delivered] of [['backup', 9, 8], ['hook', 6, 5]]) {
      const batches = sample(families, 's3db_replicator_batches_total', { replicator });
      const st = stats.replicators.find((r) => r.id === replicator).status;
      assert.equal(batches, st.batches, 'the same count as getReplicatorStats()');
      assert.ok(batches >= 1 && batches <= received);
      assert.equal(sample(families, 's3db_replicator_batch_size_count', { replicator }), batches);
      assert.equal(sample(families, 's3db_replicator_batch_size_sum', { replicator }), received);
      assert.equal(sample(families, 's3db_replicator_batch_size_bucket', { replicator, le: '+Inf' }), batches);
      assert.equal(sample(families, 's3db_replicator_delivery_duration_seconds_count', { replicator }), delivered);
      assert.equal(sample(families, 's3db_replicator_delivery_duration_seconds_bucket', { replicator, le: '+Inf' }), delivered);
      const sum = sample(families, 's3db_replicator_delivery_duration_seconds_sum', { replicator });
      assert.ok(sum > 0 && sum < 60 * delivered, `latency sum ${sum}`);
      // Cumulative buckets never decrease.
      const buckets = families.flatMap((f) => f.samples).filter((x) => x.name === 's3db_replicator_delivery_duration_seconds_bucket' && x.labels.replicator === replicator);
      assert.ok(buckets.length >= 10, 'buckets from milliseconds to minutes');
      assert.ok(buckets.some((b) => b.labels.le === '0.001') && buckets.some((b) => b.labels.le === '600'));
      assert.ok(buckets.every((b, i) => i === 0 || b.value >= buckets[i - 1].value));
      assert.equal(st.delivered, delivered);
      assert.equal(st.received, received);

      // Gauges after flush(): nothing queued or in flight, closed circuit, enabled.
      assert.equal(sample(families, 's3db_replicator_queue_depth', { replicator }), 0);
      assert.equal(sample(families, 's3db_replicator_in_flight_batches', { replicator }), 0);
      assert.equal(sample(families, 's3db_replicator_lag_seconds', { replicator }), 0);
      assert.equal(sample(families, 's3db_replicator_enabled', { replicator }), 1);
      assert.equal(sample(families, 's3db_replicator_circuit_state', { replicator, state: 'closed' }), 1);
      assert.equal(sample(families, 's3db_replicator_circuit_state', { replicator, state: 'open' }), 0);
      assert.equal(sample(families, 's3db_replicator_circuit_state', { replicator, state: 'half-open' }), 0);
    }
    assert.equal(sample(families, 's3db_replicator_dead_letters'), 1);
    assert.equal(sample(families, 's3db_replicator_outbox_pending_changes'), 0, 'everything settled');
    assert.ok(sample(families, 's3db_replicator_outbox_bytes') > 0, 'the disk outbox holds the log');
    assert.ok(sample(families, 's3db_replicator_outbox_segments') >= 1);
    assert.equal(sample(families, 's3db_replicator_outbox_append_errors_total'), 0);
    assert.equal(sample(families, 's3db_replicator_outbox_replayed_total'), 0);
    const uptime = sample(families, 's3db_replicator_engine_uptime_seconds');
    assert.ok(uptime > 0 && uptime < 120, `uptime ${uptime}`);

    // A disabled replicator says so; counters only grow.
    await plugin.disableReplicator('hook');
    await users.insert({ id: 'u5', name: 'five' });
    await plugin.flush();
    const after = await parse(plugin.metrics());
    assert.equal(sample(after, 's3db_replicator_enabled', { replicator: 'hook' }), 0);
    assert.equal(sample(after, 's3db_replicator_changes_received_total', { replicator: 'hook', resource: 'users' }), 6);
    assert.equal(sample(after, 's3db_replicator_changes_received_total', { replicator: 'backup', resource: 'users' }), 7);
  });

  test('metricsJSON() holds the same numbers as the text, in the documented shape', TEST, async (t) => {
    const s = scope(t);
    const db = await s.db();
    const plugin = new ReplicatorPlugin({ replicators: [{ id: 'b', driver: 's3db', resources: ['users'], config: { connectionString: 'memory://b/b' } }] });
    s.defer(() => plugin.stop());
    assert.equal(plugin.metrics(), '', 'empty before install');
    assert.deepEqual(plugin.metricsJSON(), {});
    await db.usePlugin(plugin);
    const users = await db.createResource({ name: 'users', attributes: { name: 'string' } });
    await users.insert({ id: 'a', name: 'A' });
    await users.insert({ id: 'b', name: 'B' });
    await plugin.flush();

    const json = plugin.metricsJSON();
    const families = await parse(plugin.metrics());
    assert.deepEqual(Object.keys(json).sort(), Object.keys(FAMILIES).sort());
    const delivered = json.s3db_replicator_changes_delivered_total;
    assert.equal(delivered.type, 'counter');
    assert.match(delivered.help, /acknowledged/);
    assert.deepEqual(delivered.samples, [{ labels: { driver: 's3db', replicator: 'b', resource: 'users' }, value: 2 }]);
    const latency = json.s3db_replicator_delivery_duration_seconds;
    assert.equal(latency.type, 'histogram');
    const [h] = latency.samples;
    assert.deepEqual(h.labels, { driver: 's3db', replicator: 'b' });
    assert.equal(h.count, 2);
    assert.equal(h.count, sample(families, 's3db_replicator_delivery_duration_seconds_count', { replicator: 'b' }));
    assert.equal(h.buckets.at(-1).le, '+Inf');
    assert.equal(h.buckets.at(-1).count, 2);
    for (const b of h.buckets) {
      assert.equal(b.count, sample(families, 's3db_replicator_delivery_duration_seconds_bucket', { replicator: 'b', le: b.le }), `bucket ${b.le}`);
    }
    assert.equal(json.s3db_replicator_queue_depth.type, 'gauge');
    assert.deepEqual(json.s3db_replicator_queue_depth.samples, [{ labels: { driver: 's3db', replicator: 'b' }, value: 0 }]);
    assert.deepEqual(json.s3db_replicator_outbox_bytes.samples, [{ labels: {}, value: 0 }], 'memory outbox for a memory:// source');

    await plugin.stop();
    assert.equal(plugin.metricsJSON().s3db_replicator_changes_delivered_total.samples[0].value, 2, 'still readable after stop()');
  });

  test('the README metrics table lists exactly these metrics', () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const section = /^### Metrics\n([\s\S]*?)(?=^##)/m.exec(readme)?.[1];
    assert.ok(section, 'README has a "### Metrics" section');
    const listed = [...section.matchAll(/^\| `(s3db_replicator_\w+)` \| (\w+) \|/gm)].map((m) => [m[1], m[2]]);
    assert.deepEqual(Object.fromEntries(listed), Object.fromEntries(Object.entries(FAMILIES).map(([n, [type]]) => [n, type])));
  });
});

describe('built-in metrics listener', () => {
  test('serves GET /metrics on the chosen address, 404 elsewhere, and closes at stop()', TEST, async (t) => {
    const s = scope(t);
    const db = await s.db();
    const plugin = new ReplicatorPlugin({ metrics: { port: 0 }, replicators: [{ id: 'b', driver: 's3db', resources: ['users'], config: { connectionString: 'memory://b/b' } }] });
    s.defer(() => plugin.stop());
    assert.equal(plugin.metricsAddress(), null, 'not listening before install');
    await db.usePlugin(plugin);
    const address = plugin.metricsAddress();
    assert.equal(address.host, '127.0.0.1', 'loopback by default');
    assert.ok(address.port > 0);
    assert.equal(address.url, `http://127.0.0.1:${address.port}/metrics`);
    const users = await db.createResource({ name: 'users', attributes: { name: 'string' } });
    await users.insert({ id: 'a', name: 'A' });
    await plugin.flush();

    const res = await fetch(address.url);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), METRICS_CONTENT_TYPE);
    assert.equal(METRICS_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
    const families = await parse(await res.text());
    assert.equal(sample(families, 's3db_replicator_changes_delivered_total', { replicator: 'b', resource: 'users' }), 1);
    assert.equal((await fetch(new URL('/', address.url))).status, 404);
    assert.equal((await fetch(new URL('/metricsx', address.url))).status, 404);
    assert.equal((await fetch(address.url, { method: 'POST' })).status, 405);
    assert.equal((await fetch(`${address.url}?name[]=x`)).status, 200, 'a query string is ignored');

    await plugin.stop();
    assert.equal(plugin.metricsAddress(), null);
    await assert.rejects(fetch(address.url), 'the port is closed after stop()');
  });

  test('a port in use fails the installation with a ReplicatorError naming metrics.port', TEST, async (t) => {
    const s = scope(t);
    const busy = net.createServer();
    await new Promise((resolve) => busy.listen(0, '127.0.0.1', resolve));
    s.defer(() => new Promise((resolve) => busy.close(resolve)));
    const { port } = busy.address();
    const db = await s.db();
    const plugin = new ReplicatorPlugin({ metrics: { port }, replicators: [{ driver: 's3db', resources: ['users'], config: { connectionString: 'memory://b/b' } }] });
    s.defer(() => plugin.stop());
    const error = await db.usePlugin(plugin).then(() => null, (e) => e);
    assert.ok(error instanceof ReplicatorError, `a ReplicatorError, got ${error}`);
    assert.equal(error.code, 'ERR_CONFIG');
    assert.equal(error.context.option, 'metrics.port');
    assert.match(error.message, new RegExp(`metrics\\.port: port ${port} on 127\\.0\\.0\\.1 is already in use`));
    assert.match(error.description, /choose another metrics\.port \(0 picks a free one\)/);
    assert.equal(plugin.metricsAddress(), null);
  });

  test('a bad metrics option is rejected at construction, naming it', () => {
    const replicators = [{ driver: 's3db', resources: ['users'], config: { connectionString: 'memory://b/b' } }];
    const cases = [
      [{ metrics: true }, 'metrics', /port/],
      [{ metrics: {} }, 'metrics.port', /no port is given/],
      [{ metrics: { port: 70000 } }, 'metrics.port', /70000 is out of range/],
      [{ metrics: { port: '9464' } }, 'metrics.port', /string/],
      [{ metrics: { port: 9464, host: '' } }, 'metrics.host', /not a host/],
      [{ metrics: { prot: 9464 } }, 'metrics', /port/],
      [{ metrics: 9464 }, 'metrics', /false or an object/],
    ];
    for (const [options, option, says] of cases) {
      assert.throws(() => new ReplicatorPlugin({ ...options, replicators }), (e) => {
        assert.ok(e instanceof ReplicatorError, String(e));
        assert.equal(e.code, 'ERR_CONFIG');
        assert.equal(e.context.option, option, `${JSON.stringify(options)}: ${e.message}`);
        assert.match(`${e.message} ${e.description}`, says);
        return true;
      });
    }
    assert.throws(() => new ReplicatorPlugin({ metrcs: { port: 1 }, replicators }), (e) => /did you mean 'metrics'/.test(e.description));
    assert.doesNotThrow(() => new ReplicatorPlugin({ metrics: false, replicators }));
  });
});
