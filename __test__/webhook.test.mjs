// The webhook driver, end to end: a real s3db.js Database (memory://), the ReplicatorPlugin
// with its Rust engine, and a real HTTP server on 127.0.0.1 that records what arrives.
//
// Synchronisation is by `plugin.flush()`, plugin events and the server's request log; no test
// sleeps to wait for something to happen. Timers appear only as failure guards and, in the
// retry-delay tests, as measurements.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';

import { Database } from 's3db.js/lite';

import { ReplicatorPlugin, ReplicatorError } from '../plugin.js';
import { closedPort, startWebhookServer } from './helpers/http-server.mjs';

const SOURCE = 's3db-webhook-replicator';
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const GUARD_MS = 10_000;
const TEST = { timeout: 30_000 };
const CHANGE_OPERATIONS = new Set(['inserted', 'updated', 'deleted']);

/**
 * Per-test resources, released in one `after` hook: servers first (so nothing can hang on a
 * request), then plugins (stop() must not fail), then databases.
 */
function scope(t) {
  const servers = [];
  const dbs = [];
  const plugins = [];
  t.after(async () => {
    for (const s of servers) await s.close();
    // stop() explicitly: Database.disconnect() swallows a failing stop().
    const stops = await Promise.allSettled(plugins.map((p) => p.stop()));
    for (const db of dbs) await db.disconnect().catch(() => {});
    const failed = stops.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  });
  return {
    async server(opts) {
      const s = await startWebhookServer(opts);
      servers.push(s);
      return s;
    },
    /**
     * A connected memory:// Database with the plugin installed and a `users` resource.
     * @param {{ replicators: object[], options?: object }} cfg
     */
    async harness({ replicators, options = {} }) {
      const db = new Database({ connectionString: `memory://wh-${randomUUID()}/src`, logLevel: 'silent' });
      dbs.push(db);
      await db.connect();
      // These tests pin the webhook driver's own retry policy (an endpoint that always fails
      // ends in a failure after `retries`). With the circuit breaker on, an endpoint that fails
      // everything counts as down and its changes wait for it instead: faults.test.mjs covers that.
      const plugin = new ReplicatorPlugin({ circuitBreaker: false, ...options, replicators });
      plugins.push(plugin);
      const replicated = [];
      // Failures of changes; plugin-level reports (e.g. schema sync) are kept apart.
      const errors = [];
      const otherErrors = [];
      const waiters = new Set();
      const check = () => {
        for (const w of waiters) {
          if (w.done()) {
            waiters.delete(w);
            clearTimeout(w.timer);
            w.resolve();
          }
        }
      };
      plugin.on('plg:replicator:replicated', (e) => {
        replicated.push(e);
        check();
      });
      plugin.on('plg:replicator:error', (e) => {
        (CHANGE_OPERATIONS.has(e.operation) ? errors : otherErrors).push(e);
        check();
      });
      await db.usePlugin(plugin);
      const users = await db.createResource({ name: 'users', attributes: { name: 'string', n: 'number|optional' } });
      /** Resolves when `done()` holds, checked on every plugin event; rejects after a guard time. */
      const until = (done, what = 'plugin events') => {
        if (done()) return Promise.resolve();
        return new Promise((resolve, reject) => {
          const w = { done, resolve };
          w.timer = setTimeout(() => {
            waiters.delete(w);
            reject(new Error(`timed out waiting for ${what} (replicated ${replicated.length}, errors ${errors.length})`));
          }, GUARD_MS);
          waiters.add(w);
        });
      };
      return { db, plugin, users, replicated, errors, otherErrors, until };
    },
  };
}

function withoutTimestamp(payload) {
  const { timestamp, ...rest } = payload;
  return rest;
}

/** The requests' payloads for one record id, in arrival order. */
function payloadsOf(server, id, opts) {
  return server.payloads(opts).filter((p) => p.data?.id === id);
}

function countBy(values) {
  const m = new Map();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return m;
}

// ---------------------------------------------------------------------------------------------

describe('webhook payloads', () => {
  test('insert, update and delete payloads match the spec exactly', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const h = await s.harness({ replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url } }] });
    const from = Date.now();
    await h.users.insert({ id: 'u1', name: 'Ana', n: 1 });
    await h.users.update('u1', { name: 'Bea' });
    await h.users.delete('u1');
    await h.plugin.flush();
    const to = Date.now();

    assert.equal(srv.requests.length, 3, 'one request per change');
    assert.ok(srv.requests.every((r) => r.method === 'POST' && r.url === '/hook'), 'POST to the configured URL by default');
    const [ins, upd, del] = srv.requests.map((r) => r.body);
    for (const p of [ins, upd, del]) {
      assert.match(p.timestamp, ISO);
      const ts = Date.parse(p.timestamp);
      assert.ok(ts >= from - 5 && ts <= to + 5, `timestamp ${p.timestamp} is within the test's writes`);
    }
    assert.ok(Date.parse(ins.timestamp) <= Date.parse(upd.timestamp) && Date.parse(upd.timestamp) <= Date.parse(del.timestamp));
    assert.deepEqual(withoutTimestamp(ins), { resource: 'users', action: 'insert', source: SOURCE, data: { id: 'u1', name: 'Ana', n: 1 } });
    assert.deepEqual(withoutTimestamp(upd), {
      resource: 'users', action: 'update', source: SOURCE,
      before: { id: 'u1', name: 'Ana', n: 1 },
      data: { id: 'u1', name: 'Bea', n: 1 },
    });
    assert.deepEqual(withoutTimestamp(del), { resource: 'users', action: 'delete', source: SOURCE, data: { id: 'u1', name: 'Bea', n: 1 } });
    assert.ok(!('before' in ins) && !('before' in del), 'before is sent with updates only');

    // flush() resolved after the events were emitted.
    assert.deepEqual(h.replicated.map((e) => e.operation), ['inserted', 'updated', 'deleted']);
    for (const e of h.replicated) {
      assert.equal(e.replicator, 'webhook');
      assert.equal(e.resourceName, 'users');
      assert.equal(e.recordId, 'u1');
      assert.equal(e.destination, 'users');
      assert.equal(e.attempts, 1);
      assert.equal(typeof e.duration, 'number');
    }
    assert.equal(h.errors.length, 0);
  });

  test('internal _/$ fields never reach the webhook; mapping and transform shape the payload', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const h = await s.harness({
      replicators: [
        { id: 'plain', driver: 'webhook', resources: ['users'], config: { url: `${srv.base}/plain` } },
        {
          id: 'mapped', driver: 'webhook', config: { url: `${srv.base}/mapped` },
          resources: { users: { resource: 'members', transform: (d) => ({ id: d.id, upper: String(d.name).toUpperCase() }) } },
        },
      ],
    });
    const result = await h.plugin.replicateBatch('users', [
      { id: 'r1', name: 'Rui', _etag: 'x', _v: 2, $meta: { a: 1 }, $before: { id: 'r1', name: 'old' } },
    ]);
    assert.equal(result.success, true);
    await h.users.insert({ id: 'r2', name: 'Eva' });
    await h.users.update('r2', { name: 'Ivo' });
    await h.plugin.flush();

    const plain = srv.requests.filter((r) => r.url === '/plain').map((r) => r.body);
    assert.deepEqual(plain.map((p) => [p.action, p.data]), [
      ['insert', { id: 'r1', name: 'Rui' }],
      ['insert', { id: 'r2', name: 'Eva' }],
      ['update', { id: 'r2', name: 'Ivo' }],
    ]);
    for (const p of plain) {
      for (const obj of [p.data, p.before ?? {}]) {
        assert.ok(Object.keys(obj).every((k) => !k.startsWith('_') && !k.startsWith('$')), `no internal fields in ${JSON.stringify(obj)}`);
      }
    }
    const mapped = srv.requests.filter((r) => r.url === '/mapped').map((r) => r.body);
    assert.equal(mapped.length, 3);
    assert.ok(mapped.every((p) => p.resource === 'members' && p.source === SOURCE));
    assert.deepEqual(mapped.map((p) => p.data), [{ id: 'r1', upper: 'RUI' }, { id: 'r2', upper: 'EVA' }, { id: 'r2', upper: 'IVO' }]);
  });
});

describe('webhook request', () => {
  test('custom method, URL query and headers arrive with JSON content type, User-Agent and Idempotency-Key', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const h = await s.harness({
      replicators: [
        {
          id: 'put', driver: 'webhook', resources: ['users'],
          config: { url: `${srv.base}/put?src=s3db`, method: 'PUT', headers: { 'X-Custom-Header': 'value', 'X-Environment': 'test' } },
        },
        { id: 'patch', driver: 'webhook', resources: ['users'], config: { url: `${srv.base}/patch`, method: 'patch' } },
      ],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.users.insert({ id: 'b', name: 'B' });
    await h.plugin.flush();

    const put = srv.requests.filter((r) => r.url === '/put?src=s3db');
    const patch = srv.requests.filter((r) => r.url === '/patch');
    assert.equal(put.length, 2);
    assert.equal(patch.length, 2);
    assert.equal(srv.requests.length, 4);
    for (const r of put) {
      assert.equal(r.method, 'PUT');
      assert.equal(r.headers['x-custom-header'], 'value');
      assert.equal(r.headers['x-environment'], 'test');
    }
    for (const r of patch) {
      assert.equal(r.method, 'PATCH');
      assert.equal(r.headers['x-custom-header'], undefined, 'headers of one replicator do not leak into another');
    }
    for (const r of srv.requests) {
      assert.match(r.headers['content-type'], /^application\/json\b/);
      assert.match(r.headers['user-agent'] ?? '', /s3db/);
      assert.ok(r.headers['idempotency-key'], 'an Idempotency-Key is sent');
      assert.equal(Number(r.headers['content-length']), Buffer.byteLength(r.raw));
      assert.ok(r.body && r.body.source === SOURCE);
    }
    const keys = put.map((r) => r.headers['idempotency-key']);
    assert.notEqual(keys[0], keys[1], 'different changes get different keys');
  });

  test('auth: bearer, basic and apikey', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const h = await s.harness({
      replicators: [
        { id: 'bearer', driver: 'webhook', resources: ['users'], config: { url: `${srv.base}/bearer`, auth: { type: 'bearer', token: 'tok-123' } } },
        { id: 'basic', driver: 'webhook', resources: ['users'], config: { url: `${srv.base}/basic`, auth: { type: 'basic', username: 'api_user', password: 'p@ss:w0rd' } } },
        { id: 'apikey', driver: 'webhook', resources: ['users'], config: { url: `${srv.base}/apikey`, auth: { type: 'apikey', header: 'X-API-Key', value: 'key-456' } } },
        { id: 'none', driver: 'webhook', resources: ['users'], config: { url: `${srv.base}/none` } },
      ],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();

    const one = (path) => {
      const found = srv.requests.filter((r) => r.url === path);
      assert.equal(found.length, 1, `one request on ${path}`);
      return found[0].headers;
    };
    assert.equal(one('/bearer').authorization, 'Bearer tok-123');
    assert.equal(one('/basic').authorization, `Basic ${Buffer.from('api_user:p@ss:w0rd').toString('base64')}`);
    const apikey = one('/apikey');
    assert.equal(apikey['x-api-key'], 'key-456');
    assert.equal(apikey.authorization, undefined);
    const none = one('/none');
    assert.equal(none.authorization, undefined);
    assert.equal(none['x-api-key'], undefined);
  });
});

describe('webhook batch mode', () => {
  test('batchSize bounds each { batch: [...] } request; every change arrives once, in order per record', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const h = await s.harness({
      options: { concurrency: 1, lingerMs: 20 },
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, batch: true, batchSize: 3 } }],
    });
    for (let i = 0; i < 7; i++) await h.users.insert({ id: `r${i}`, name: `n${i}`, n: 0 });
    await h.users.update('r0', { n: 1 });
    await h.users.update('r0', { n: 2 });
    await h.users.delete('r1');
    await h.plugin.flush();

    assert.ok(srv.requests.length >= 4, `10 changes need at least 4 requests of 3 (got ${srv.requests.length})`);
    for (const r of srv.requests) {
      assert.deepEqual(Object.keys(r.body), ['batch']);
      assert.ok(Array.isArray(r.body.batch));
      assert.ok(r.body.batch.length >= 1 && r.body.batch.length <= 3, `batch of ${r.body.batch.length}`);
      assert.match(r.headers['content-type'], /^application\/json\b/);
      assert.match(r.headers['idempotency-key'], /^batch:[0-9a-f]{16}$/);
      for (const p of r.body.batch) {
        // Each item carries its change's own identity: `{outbox id}:{seq}`.
        assert.match(p.idempotencyKey, /^[0-9a-f]{16}:\d+$/);
        assert.equal(p.resource, 'users');
        assert.equal(p.source, SOURCE);
        assert.match(p.timestamp, ISO);
      }
    }
    assert.ok(srv.requests.some((r) => r.body.batch.length > 1), 'changes were actually batched');
    const itemKeys = srv.requests.flatMap((r) => r.body.batch.map((p) => p.idempotencyKey));
    assert.equal(new Set(itemKeys).size, 10, 'every change has its own key');
    const { id: outboxId } = h.plugin._engine.outbox();
    assert.deepEqual(itemKeys.map((k) => k.split(':')[0]), Array(10).fill(outboxId));
    const all = srv.payloads();
    assert.equal(all.length, 10, 'every change delivered exactly once');
    const inserts = all.filter((p) => p.action === 'insert').map((p) => p.data.id);
    assert.deepEqual([...inserts].sort(), ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6']);
    assert.deepEqual(
      payloadsOf(srv, 'r0').map((p) => [p.action, p.data.n, p.before?.n]),
      [['insert', 0, undefined], ['update', 1, 0], ['update', 2, 1]],
    );
    assert.deepEqual(payloadsOf(srv, 'r1').map((p) => p.action), ['insert', 'delete']);
    assert.equal(h.replicated.length, 10);
    assert.equal(h.errors.length, 0);
  });

  test('a record the endpoint rejects (400) fails alone; the rest of its batch is delivered', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server({
      respond: (r) => (r.body.batch.some((p) => p.data.id === 'bad') ? { status: 400, body: 'bad record' } : undefined),
    });
    const h = await s.harness({
      options: { concurrency: 1, lingerMs: 20 },
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, batch: true, batchSize: 10, retries: 3, retryDelay: 5 } }],
    });
    for (const id of ['g1', 'g2', 'bad', 'g3', 'g4', 'g5']) await h.users.insert({ id, name: id });
    await h.plugin.flush();

    const delivered = srv.payloads({ accepted: true }).map((p) => p.data.id);
    assert.deepEqual([...delivered].sort(), ['g1', 'g2', 'g3', 'g4', 'g5'], 'each good record delivered exactly once');
    assert.equal(h.errors.length, 1);
    assert.equal(h.errors[0].recordId, 'bad');
    assert.match(h.errors[0].error, /400/);
    assert.equal(h.errors[0].code, 'ERR_SINK_REJECTED');
    assert.deepEqual(h.replicated.map((e) => e.recordId).sort(), ['g1', 'g2', 'g3', 'g4', 'g5']);
  });
});

describe('webhook retries', () => {
  test('a retryOnStatus status (503 twice) is retried and then delivered once, same Idempotency-Key', TEST, async (t) => {
    const s = scope(t);
    let failures = 2;
    const srv = await s.server({ respond: () => (failures-- > 0 ? { status: 503, body: 'busy' } : undefined) });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 3, retryDelay: 5 } }],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();

    assert.deepEqual(srv.requests.map((r) => r.status), [503, 503, 200]);
    assert.equal(new Set(srv.requests.map((r) => r.headers['idempotency-key'])).size, 1, 'a retry is the same delivery');
    assert.match(srv.requests[0].headers['idempotency-key'], /^[0-9a-f]{16}:1$/, 'the key is the change\'s identity: {outbox id}:{seq}');
    assert.deepEqual(srv.requests.map((r) => r.raw), Array(3).fill(srv.requests[0].raw), 'a retry resends the same payload');
    assert.equal(h.replicated.length, 1);
    assert.equal(h.replicated[0].attempts, 3);
    assert.equal(h.errors.length, 0);
  });

  test('a status not in retryOnStatus (400) is not retried and is reported with the status', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server({ respond: (r) => (r.body.data.id === 'bad' ? { status: 400, body: 'nope' } : undefined) });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 3, retryDelay: 5 } }],
    });
    await h.users.insert({ id: 'bad', name: 'B' });
    await h.plugin.flush();
    await h.users.insert({ id: 'good', name: 'G' });
    await h.plugin.flush();

    assert.equal(payloadsOf(srv, 'bad').length, 1, 'exactly one request for the rejected record');
    assert.equal(payloadsOf(srv, 'good').length, 1);
    assert.equal(h.errors.length, 1);
    const e = h.errors[0];
    assert.equal(e.replicator, 'webhook');
    assert.equal(e.recordId, 'bad');
    assert.equal(e.operation, 'inserted');
    assert.match(e.error, /\b400\b/);
    assert.equal(e.code, 'ERR_SINK_REJECTED');
    assert.equal(e.attempts, 1);
    assert.deepEqual(e.data, { id: 'bad', name: 'B' }, 'the failed record comes with the error');
    assert.deepEqual(h.replicated.map((x) => x.recordId), ['good']);
  });

  test('retryOnStatus replaces the default list', TEST, async (t) => {
    const s = scope(t);
    const seen = new Map();
    const srv = await s.server({
      respond: (r) => {
        const id = r.body.data.id;
        const k = (seen.get(id) ?? 0) + 1;
        seen.set(id, k);
        if (id === 'teapot' && k === 1) return { status: 418 };
        if (id === 'busy') return { status: 503 };
        return undefined;
      },
    });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 2, retryDelay: 5, retryOnStatus: [418] } }],
    });
    await h.users.insert({ id: 'teapot', name: 'T' });
    await h.plugin.flush();
    await h.users.insert({ id: 'busy', name: 'B' });
    await h.plugin.flush();

    assert.deepEqual(payloadsOf(srv, 'teapot').length, 2, '418 is retried once, then delivered');
    assert.deepEqual(payloadsOf(srv, 'busy').length, 1, '503 is not in the list: no retry');
    assert.deepEqual(h.replicated.map((e) => [e.recordId, e.attempts]), [['teapot', 2]]);
    assert.equal(h.errors.length, 1);
    assert.match(h.errors[0].error, /\b503\b/);
  });

  test('retries: 0 makes exactly one attempt', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server({ respond: () => ({ status: 503, body: 'down' }) });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 0, retryDelay: 5 } }],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();

    assert.equal(srv.requests.length, 1);
    assert.equal(h.errors.length, 1);
    assert.equal(h.errors[0].attempts, 1);
    assert.match(h.errors[0].error, /\b503\b/);
    assert.equal(h.errors[0].code, 'ERR_SINK_UNAVAILABLE');
  });

  test('retries are exhausted after retries + 1 attempts', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server({ respond: () => ({ status: 502 }) });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 2, retryDelay: 5 } }],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();

    assert.equal(srv.requests.length, 3);
    assert.equal(h.errors.length, 1);
    assert.equal(h.errors[0].attempts, 3);
    assert.match(h.errors[0].error, /\b502\b/);
  });

  test("retryStrategy 'fixed' waits retryDelay before every retry", TEST, async (t) => {
    const s = scope(t);
    const delay = 60;
    let failures = 3;
    const srv = await s.server({ respond: () => (failures-- > 0 ? { status: 500 } : undefined) });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 3, retryDelay: delay, retryStrategy: 'fixed' } }],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();

    assert.deepEqual(srv.requests.map((r) => r.status), [500, 500, 500, 200]);
    const gaps = srv.requests.slice(1).map((r, i) => r.at - srv.requests[i].at);
    for (const g of gaps) assert.ok(g >= delay * 0.9, `each retry waits about ${delay} ms (gaps ${gaps.map(Math.round)})`);
    assert.equal(h.replicated[0].attempts, 4);
  });

  test("retryStrategy 'exponential' (the default) doubles the delay between retries", TEST, async (t) => {
    const s = scope(t);
    const delay = 40;
    let failures = 3;
    const srv = await s.server({ respond: () => (failures-- > 0 ? { status: 504 } : undefined) });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 3, retryDelay: delay } }],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();

    assert.deepEqual(srv.requests.map((r) => r.status), [504, 504, 504, 200]);
    const gaps = srv.requests.slice(1).map((r, i) => r.at - srv.requests[i].at);
    // With jitter each wait is between half and all of retryDelay × 2^(retry - 1).
    assert.ok(gaps[0] >= delay * 0.45, `first retry waits at least half of retryDelay (gaps ${gaps.map(Math.round)})`);
    assert.ok(gaps[1] >= delay * 0.9, `second retry waits at least retryDelay (gaps ${gaps.map(Math.round)})`);
    assert.ok(gaps[2] >= delay * 1.8, `third retry waits at least 2 × retryDelay (gaps ${gaps.map(Math.round)})`);
    assert.equal(h.replicated[0].attempts, 4);
  });
});

describe('webhook connections', () => {
  test('sequential deliveries reuse keep-alive connections', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const h = await s.harness({ replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url } }] });
    for (let i = 0; i < 50; i++) {
      await h.users.insert({ id: `k${i}`, name: 'x' });
      await h.plugin.flush();
    }
    assert.equal(srv.requests.length, 50);
    assert.ok(srv.connectionCount <= 4, `50 sequential deliveries used ${srv.connectionCount} TCP connections`);
  });

  test('bursts reuse the pooled connections of earlier bursts', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const h = await s.harness({ replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url } }] });
    for (let round = 0; round < 5; round++) {
      await Promise.all(Array.from({ length: 10 }, (_, i) => h.users.insert({ id: `b${round}-${i}`, name: 'x' })));
      await h.plugin.flush();
    }
    assert.equal(srv.requests.length, 50);
    // The first burst may open up to 10 (records are sent in parallel); later ones reuse them.
    assert.ok(srv.connectionCount <= 15, `5 bursts of 10 used ${srv.connectionCount} TCP connections`);
  });
});

describe('webhook timeouts', () => {
  test('an endpoint that never answers fails the change with a timeout, and flush resolves', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server({ respond: () => ({ hang: true }) });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, timeout: 100, retries: 0 } }],
    });
    const started = performance.now();
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();
    const took = performance.now() - started;

    assert.equal(srv.requests.length, 1);
    assert.equal(h.errors.length, 1);
    assert.match(h.errors[0].error, /tim(ed|e)\s?out/i);
    assert.equal(h.errors[0].attempts, 1);
    assert.ok(['ERR_TIMEOUT', 'ERR_SINK_UNAVAILABLE'].includes(h.errors[0].code), h.errors[0].code);
    assert.ok(took >= 90, `the request was given its timeout (${Math.round(took)} ms)`);
    assert.ok(took < 5_000, `flush resolved soon after the timeout (${Math.round(took)} ms)`);
  });

  test('timeouts are retried like other transport failures', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server({ respond: (r) => (r.index < 2 ? { hang: true } : undefined) });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, timeout: 100, retries: 2, retryDelay: 5 } }],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();

    assert.equal(srv.requests.length, 3);
    assert.equal(h.errors.length, 0);
    assert.equal(h.replicated[0].attempts, 3);
  });

  test('the plugin-level timeout bounds a webhook write too', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server({ respond: () => ({ hang: true }) });
    const h = await s.harness({
      options: { timeout: 150 },
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 0 } }],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();

    assert.equal(h.errors.length, 1);
    assert.match(h.errors[0].error, /timed out/i);
    assert.equal(h.errors[0].code, 'ERR_TIMEOUT');
  });

  test('a webhook request timeout is reported with code ERR_TIMEOUT', { ...TEST }, async (t) => {
    const s = scope(t);
    const srv = await s.server({ respond: () => ({ hang: true }) });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, timeout: 100, retries: 0 } }],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();
    assert.equal(h.errors.length, 1);
    assert.equal(h.errors[0].code, 'ERR_TIMEOUT');
  });
});

describe('webhook isolation', () => {
  test('a dead destination (closed port, retrying) does not hold back healthy ones', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const dead = await closedPort();
    const retryDelay = 1_000;
    const h = await s.harness({
      replicators: [
        { id: 'dead', driver: 'webhook', resources: ['users'], config: { url: `http://127.0.0.1:${dead}/hook`, retries: 1, retryDelay, retryStrategy: 'fixed' } },
        { id: 'healthy', driver: 'webhook', resources: ['users'], config: { url: srv.url } },
        { id: 'backup', driver: 's3db', resources: ['users'], config: { connectionString: `memory://wh-backup-${randomUUID()}/dst` } },
      ],
    });
    const n = 20;
    const started = performance.now();
    for (let i = 0; i < n; i++) await h.users.insert({ id: `d${i}`, name: `n${i}` });
    const count = (id) => h.replicated.filter((e) => e.replicator === id).length;
    await h.until(() => count('healthy') === n && count('backup') === n, 'the healthy replicators');
    const healthyDone = performance.now() - started;

    // The dead replicator's first attempts failed at once, and it now waits retryDelay (fixed)
    // before its only retry: nothing of it has settled while the healthy ones finished.
    assert.equal(h.errors.length, 0, `healthy replicators finished (${Math.round(healthyDone)} ms) while the dead one was still retrying`);
    assert.equal(srv.payloads().length, n);

    await h.plugin.flush();
    const deadErrors = h.errors.filter((e) => e.replicator === 'dead');
    assert.equal(deadErrors.length, n);
    assert.equal(h.errors.length, n);
    for (const e of deadErrors) {
      assert.equal(e.attempts, 2);
      assert.equal(e.code, 'ERR_SINK_UNAVAILABLE');
      assert.match(e.error, /connect|connection/i);
    }
    assert.equal(count('healthy'), n);
  });

  test('an endpoint that hangs does not hold back a healthy one', TEST, async (t) => {
    const s = scope(t);
    const stuck = await s.server({ respond: () => ({ hang: true }) });
    const srv = await s.server();
    const h = await s.harness({
      replicators: [
        { id: 'stuck', driver: 'webhook', resources: ['users'], config: { url: stuck.url, timeout: 60_000, retries: 1, retryDelay: 5 } },
        { id: 'healthy', driver: 'webhook', resources: ['users'], config: { url: srv.url } },
      ],
    });
    const n = 20;
    for (let i = 0; i < n; i++) await h.users.insert({ id: `h${i}`, name: `n${i}` });
    await h.until(() => h.replicated.filter((e) => e.replicator === 'healthy').length === n, 'the healthy replicator');
    await stuck.until(() => stuck.requests.length >= 1, GUARD_MS, 'the stuck endpoint to be called');
    assert.equal(h.errors.length, 0, `the stuck replicator has settled nothing yet: ${JSON.stringify(h.errors[0])}`);
    assert.ok(stuck.requests.every((r) => r.status === null), 'the stuck endpoint answered nothing');

    // Release the stuck one: its connections drop, its retry finds the port closed.
    await stuck.close();
    await h.plugin.flush();
    assert.equal(h.errors.filter((e) => e.replicator === 'stuck').length, n);
    assert.equal(h.replicated.filter((e) => e.replicator === 'healthy').length, n);
  });
});

describe('webhook secrets', () => {
  const TOKEN = 'tok-SECRET-bearer-7f3a';
  const URL_PASSWORD = 'urlSECRETpw9';
  const BASIC_PASSWORD = 'basicSECRETpw4';

  function assertNoSecret(text, where) {
    for (const secret of [TOKEN, URL_PASSWORD, BASIC_PASSWORD, encodeURIComponent(URL_PASSWORD)]) {
      assert.ok(!text.includes(secret), `${where} leaks a secret: ${text}`);
    }
  }

  test('errors, stats and replicator listings never show the token or a URL password', TEST, async (t) => {
    const s = scope(t);
    const dead = await closedPort();
    const hang = await s.server({ respond: () => ({ hang: true }) });
    const failing = await s.server({ respond: () => ({ status: 500, body: 'internal error' }) });
    const h = await s.harness({
      replicators: [
        { id: 'refused', driver: 'webhook', resources: ['users'], config: { url: `http://hookuser:${URL_PASSWORD}@127.0.0.1:${dead}/hook`, auth: { type: 'bearer', token: TOKEN }, retries: 0 } },
        { id: 'timeout', driver: 'webhook', resources: ['users'], config: { url: `http://hookuser:${URL_PASSWORD}@127.0.0.1:${hang.port}/hook`, auth: { type: 'basic', username: 'u', password: BASIC_PASSWORD }, timeout: 100, retries: 0 } },
        { id: 'status', driver: 'webhook', resources: ['users'], config: { url: `http://hookuser:${URL_PASSWORD}@127.0.0.1:${failing.port}/hook`, auth: { type: 'bearer', token: TOKEN }, headers: { 'X-Token': TOKEN }, retries: 0 } },
      ],
    });
    await h.users.insert({ id: 'a', name: 'A' });
    await h.plugin.flush();

    assert.deepEqual(h.errors.map((e) => e.replicator).sort(), ['refused', 'status', 'timeout']);
    for (const e of h.errors) {
      assert.ok(e.error.length > 0);
      assertNoSecret(e.error, `the ${e.replicator} error message`);
      assertNoSecret(JSON.stringify(e), `the ${e.replicator} error event`);
    }
    assertNoSecret(JSON.stringify(await h.plugin.getReplicatorStats()), 'getReplicatorStats()');
    assertNoSecret(JSON.stringify(await h.plugin.listReplicators()), 'listReplicators()');
  });

  test('a configuration error never shows a URL password', TEST, () => {
    let thrown;
    try {
      new ReplicatorPlugin({
        replicators: [{ driver: 'webhook', resources: ['users'], config: { url: `ftp://hookuser:${URL_PASSWORD}@127.0.0.1/hook`, auth: { type: 'bearer', token: TOKEN } } }],
      });
    } catch (error) {
      thrown = error;
    }
    assert.ok(thrown instanceof ReplicatorError, 'an unsupported scheme is a configuration error');
    assert.equal(thrown.code, 'ERR_CONFIG');
    assertNoSecret(`${thrown.message} ${thrown.description} ${JSON.stringify(thrown.context)}`, 'the configuration error');
  });
});

describe('webhook ordering', () => {
  test('30 sequential updates of one record arrive in order, each with the previous value as before', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const h = await s.harness({ replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url } }] });
    await h.users.insert({ id: 'z', name: 'z', n: 0 });
    for (let i = 1; i <= 30; i++) await h.users.update('z', { n: i });
    await h.plugin.flush();

    const got = payloadsOf(srv, 'z');
    assert.deepEqual(got.map((p) => p.action), ['insert', ...Array(30).fill('update')]);
    assert.deepEqual(got.map((p) => p.data.n), Array.from({ length: 31 }, (_, i) => i));
    assert.deepEqual(got.slice(1).map((p) => p.before.n), Array.from({ length: 30 }, (_, i) => i));
    assert.equal(srv.requests.at(-1).body.data.n, 30, 'the last request carries the last value');
  });

  test('updates fired concurrently arrive in the order s3db.js emitted them', TEST, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    const h = await s.harness({ replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url } }] });
    await h.users.insert({ id: 'z', name: 'z', n: 0 });
    for (let i = 0; i < 10; i++) await h.users.insert({ id: `o${i}`, name: 'other', n: 0 });
    await h.plugin.flush();
    // Registered after the plugin, which puts its own listener first: same emission order.
    const emitted = [];
    h.users.on('updated', (data) => {
      if (data.id === 'z') emitted.push(data.n);
    });
    const writes = [];
    for (let i = 1; i <= 30; i++) {
      writes.push(h.users.update('z', { n: i }));
      writes.push(h.users.update(`o${i % 10}`, { n: i }));
    }
    await Promise.all(writes);
    await h.plugin.flush();

    assert.equal(emitted.length, 30);
    const got = payloadsOf(srv, 'z').slice(1);
    assert.deepEqual(got.map((p) => p.data.n), emitted, 'the webhook saw z changes in emission order');
    const lastForZ = srv.requests.filter((r) => r.body.data.id === 'z').at(-1);
    assert.equal(lastForZ.body.data.n, emitted.at(-1));
    assert.equal(h.errors.length, 0);
  });

  test('a retried change is not overtaken by later changes of the same record', TEST, async (t) => {
    const s = scope(t);
    let failed = false;
    const srv = await s.server({
      respond: (r) => {
        if (!failed && r.body.data.id === 'z' && r.body.data.n === 5) {
          failed = true;
          return { status: 503 };
        }
        return undefined;
      },
    });
    const h = await s.harness({
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 3, retryDelay: 20 } }],
    });
    await h.users.insert({ id: 'z', name: 'z', n: 0 });
    for (let i = 1; i <= 20; i++) await h.users.update('z', { n: i });
    await h.plugin.flush();

    assert.ok(failed, 'the endpoint refused n=5 once');
    const accepted = payloadsOf(srv, 'z', { accepted: true }).map((p) => p.data.n);
    assert.deepEqual(accepted, Array.from({ length: 21 }, (_, i) => i), 'delivered once each, in order');
    const all = payloadsOf(srv, 'z').map((p) => p.data.n);
    const firstFive = all.indexOf(5);
    assert.ok(all.slice(firstFive + 1).every((n) => n >= 5), `nothing after n=5 was sent before its retry: ${all}`);
    assert.equal(h.errors.length, 0);
  });
});

describe('webhook delivery guarantees', () => {
  test('flush() resolves only after the events of every settled change were emitted', TEST, async (t) => {
    const s = scope(t);
    // Answers go out together (same timer tick), so many lanes settle at the same moment.
    const srv = await s.server({ respond: () => ({ delayMs: 15 }) });
    const h = await s.harness({
      options: { concurrency: 16 },
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url } }],
    });
    const rounds = 30;
    const perRound = 32;
    const short = [];
    for (let round = 0; round < rounds; round++) {
      await Promise.all(Array.from({ length: perRound }, (_, i) => h.users.insert({ id: `f${round}-${i}`, name: 'x' })));
      await h.plugin.flush();
      const missing = (round + 1) * perRound - h.replicated.length;
      if (missing > 0) short.push(`round ${round}: ${missing} events came after flush()`);
      await h.until(() => h.replicated.length >= (round + 1) * perRound, 'the late events');
    }
    assert.deepEqual(short, [], 'flush() resolved before some replicated events were emitted');
    assert.equal(h.replicated.length, rounds * perRound);
    assert.equal(h.errors.length, 0);
  });


  test('non-batch: rejected records in one micro-batch are each sent exactly once', { ...TEST }, async (t) => {
    const s = scope(t);
    const srv = await s.server({ respond: (r) => (r.body.data.id.startsWith('bad') ? { status: 400, body: 'rejected' } : undefined) });
    const h = await s.harness({
      options: { concurrency: 1, lingerMs: 50 },
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 3, retryDelay: 5 } }],
    });
    await Promise.all(['bad1', 'bad2', 'bad3', 'bad4'].map((id) => h.users.insert({ id, name: id })));
    await h.plugin.flush();

    assert.equal(h.errors.length, 4);
    assert.ok(h.errors.every((e) => e.code === 'ERR_SINK_REJECTED' && /\b400\b/.test(e.error)));
    const perRecord = countBy(srv.payloads().map((p) => p.data.id));
    assert.deepEqual(Object.fromEntries(perRecord), { bad1: 1, bad2: 1, bad3: 1, bad4: 1 }, 'a 400 is never retried');
  });

  test('non-batch: a rejected record is not retried because another record of its micro-batch got a 503', { ...TEST }, async (t) => {
    const s = scope(t);
    let busy = 1;
    const srv = await s.server({
      respond: (r) => {
        if (r.body.data.id === 'bad') return { status: 400, body: 'rejected' };
        if (r.body.data.id === 'busy' && busy-- > 0) return { status: 503 };
        return undefined;
      },
    });
    const h = await s.harness({
      options: { concurrency: 1, lingerMs: 50 },
      replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url, retries: 3, retryDelay: 5 } }],
    });
    await Promise.all(['busy', 'bad'].map((id) => h.users.insert({ id, name: id })));
    await h.plugin.flush();

    assert.deepEqual(h.errors.map((e) => e.recordId), ['bad']);
    assert.deepEqual(h.replicated.map((e) => e.recordId), ['busy']);
    assert.equal(payloadsOf(srv, 'bad').length, 1, 'the 400 record is sent once');
    assert.equal(payloadsOf(srv, 'busy').length, 2, 'the 503 record is retried once');
  });

  test('Idempotency-Keys of different changes differ across plugin instances', { ...TEST }, async (t) => {
    const s = scope(t);
    const srv = await s.server();
    for (const name of ['first', 'second']) {
      const h = await s.harness({ replicators: [{ driver: 'webhook', resources: ['users'], config: { url: srv.url } }] });
      await h.users.insert({ id: 'same', name });
      await h.plugin.flush();
      await h.plugin.stop();
    }
    assert.equal(srv.requests.length, 2);
    assert.deepEqual(srv.requests.map((r) => r.body.data.name), ['first', 'second']);
    const [k1, k2] = srv.requests.map((r) => r.headers['idempotency-key']);
    assert.notEqual(k1, k2, `two different changes share the Idempotency-Key '${k1}': a deduplicating receiver drops the second`);
  });
});
