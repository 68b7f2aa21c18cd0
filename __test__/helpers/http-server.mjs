// A scriptable loopback HTTP server for the webhook tests. It records every request (method,
// url, headers, parsed JSON body, the socket it came on) and answers what `respond` says.

import http from 'node:http';
import net from 'node:net';

/**
 * @typedef {object} Recorded
 * @property {string} method
 * @property {string} url
 * @property {Record<string, string | string[] | undefined>} headers
 * @property {string} raw body as text
 * @property {any} body parsed JSON (undefined if the body is not JSON)
 * @property {import('node:net').Socket} socket
 * @property {number} remotePort
 * @property {number} index 0-based arrival order
 * @property {number} at performance.now() when the request body was complete
 * @property {number | null} status the status answered (null: never answered)
 */

/**
 * `hang`: never answer (the socket is destroyed on close()); `hold`: answer when release() is called.
 * @typedef {{ status?: number, body?: string, headers?: Record<string, string>, delayMs?: number, hang?: boolean, hold?: boolean }} Answer
 */

/**
 * Starts a server on 127.0.0.1 with an ephemeral port.
 * @param {{ respond?: (req: Recorded) => Answer | undefined }} [opts]
 */
/** Calls `done(text, parsed JSON or undefined)` once the request body is complete. */
export function readBody(req, done) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    let body;
    try {
      body = raw ? JSON.parse(raw) : undefined;
    } catch {
      body = undefined;
    }
    done(raw, body);
  });
}

export async function startWebhookServer({ respond } = {}) {
  /** @type {Recorded[]} */
  const requests = [];
  const sockets = new Set();
  const hanging = new Set();
  const held = [];
  const timers = new Set();
  const waiters = [];
  let closed = false;

  const check = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i];
      if (w.done()) {
        waiters.splice(i, 1);
        clearTimeout(w.timer);
        w.resolve(requests);
      }
    }
  };

  const server = http.createServer((req, res) => {
    readBody(req, (raw, body) => {
      /** @type {Recorded} */
      const rec = {
        method: req.method,
        url: req.url,
        headers: req.headers,
        raw,
        body,
        socket: req.socket,
        remotePort: req.socket.remotePort,
        index: requests.length,
        at: performance.now(),
        status: null,
      };
      requests.push(rec);
      let answer;
      try {
        answer = (api.respond ?? (() => undefined))(rec) ?? {};
      } catch (error) {
        answer = { status: 500, body: String(error) };
      }
      rec.status = answer.hang ? null : answer.status ?? 200;
      const send = () => {
        if (res.writableEnded || res.destroyed) return;
        res.writeHead(answer.status ?? 200, { 'content-type': 'application/json', ...(answer.headers ?? {}) });
        res.end(answer.body ?? '{"ok":true}');
      };
      if (answer.hold) {
        rec.status = null;
        held.push({ rec, res });
      } else if (answer.hang) {
        hanging.add(res);
        res.on('close', () => hanging.delete(res));
      } else if (answer.delayMs) {
        const t = setTimeout(() => {
          timers.delete(t);
          send();
        }, answer.delayMs);
        timers.add(t);
      } else {
        send();
      }
      check();
    });
  });
  server.on('connection', (socket) => sockets.add(socket));
  server.keepAliveTimeout = 30_000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());

  const api = {
    port,
    base: `http://127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}/hook`,
    requests,
    /** Distinct TCP connections ever accepted. */
    get connectionCount() {
      return sockets.size;
    },
    respond,
    /** Every payload received (batch bodies flattened), in arrival order; `accepted` keeps 2xx answers only. */
    payloads({ accepted = false } = {}) {
      return requests.filter((r) => !accepted || (r.status >= 200 && r.status < 300)).flatMap((r) => (r.body && Array.isArray(r.body.batch) ? r.body.batch : r.body ? [r.body] : []));
    },
    /**
     * Resolves once `done()` holds (checked on every request), rejects after `timeoutMs`.
     * @param {() => boolean} done
     */
    until(done, timeoutMs = 10_000, what = 'condition') {
      if (done()) return Promise.resolve(requests);
      return new Promise((resolve, reject) => {
        const w = { done, resolve };
        w.timer = setTimeout(() => {
          const at = waiters.indexOf(w);
          if (at >= 0) waiters.splice(at, 1);
          reject(new Error(`webhook server: timed out waiting for ${what} (${requests.length} requests so far)`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    /** Answers every held request at once (see `hold`), with `answer` (default 200). */
    release(answer = {}) {
      for (const { rec, res } of held.splice(0)) {
        if (res.writableEnded || res.destroyed) continue;
        rec.status = answer.status ?? 200;
        res.writeHead(rec.status, { 'content-type': 'application/json', ...(answer.headers ?? {}) });
        res.end(answer.body ?? '{"ok":true}');
      }
    },
    /** Requests held and not yet released. */
    get heldCount() {
      return held.length;
    },
    /** Resolves once at least `n` requests arrived. */
    waitForRequests(n, timeoutMs) {
      return api.until(() => requests.length >= n, timeoutMs, `${n} requests`);
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      for (const res of hanging) res.destroy();
      for (const { res } of held.splice(0)) res.destroy();
      for (const w of waiters.splice(0)) clearTimeout(w.timer);
      await new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
  return api;
}

/** A loopback port with nothing listening on it (bound, then released). */
export async function closedPort() {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = /** @type {import('node:net').AddressInfo} */ (srv.address());
  await new Promise((resolve) => srv.close(resolve));
  return port;
}
