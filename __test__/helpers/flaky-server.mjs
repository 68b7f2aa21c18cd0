// A loopback webhook receiver whose availability the test controls, for the fault tests:
//   up()                    listening, answers 200 (after `delayMs`, if set)
//   refuse()                the listening socket is closed and every open connection destroyed:
//                           new connections are refused (ECONNREFUSED), in-flight requests die
//   unavailable(status)     listening, answers `status` (default 503) to everything
// It keeps one compact entry per request (not the raw body), so 10,000s of requests are cheap.

import http from 'node:http';

import { readBody } from './http-server.mjs';

/**
 * @typedef {object} Arrival
 * @property {number} index 0-based arrival order
 * @property {number} at performance.now() when the request body was complete
 * @property {string} mode the server's mode when it arrived ('up' | 'unavailable')
 * @property {number | null} status the status sent (null: the connection died before an answer)
 * @property {any} body the parsed JSON body (undefined if not JSON)
 */

/**
 * @param {{ delayMs?: number }} [opts] delayMs: answer 2xx this long after a request arrived
 */
export async function startFlakyServer({ delayMs = 0 } = {}) {
  /** @type {Arrival[]} */
  const arrivals = [];
  const sockets = new Set();
  const waiters = new Set();
  const timers = new Set();
  let mode = 'up';
  let failStatus = 503;
  let accepted = 0;
  let closed = false;

  const check = () => {
    for (const w of waiters) {
      if (w.done()) {
        waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve();
      }
    }
  };

  const server = http.createServer((req, res) => {
    readBody(req, (raw, body) => {
      /** @type {Arrival} */
      const rec = { index: arrivals.length, at: performance.now(), mode, status: null, body };
      arrivals.push(rec);
      const answer = (status) => {
        if (res.writableEnded || res.destroyed || req.socket.destroyed) return;
        rec.status = status;
        if (status >= 200 && status < 300) accepted++;
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(status < 300 ? '{"ok":true}' : '{"error":"unavailable"}');
        check();
      };
      if (mode === 'unavailable') return answer(failStatus);
      if (delayMs > 0) {
        const t = setTimeout(() => {
          timers.delete(t);
          // The outage may have started meanwhile.
          answer(mode === 'unavailable' ? failStatus : 200);
        }, delayMs);
        timers.add(t);
      } else {
        answer(200);
      }
    });
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    if (mode === 'refuse') socket.destroy();
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  const listening = () => server.listening;

  const api = {
    port,
    url: `http://127.0.0.1:${port}/hook`,
    arrivals,
    get mode() {
      return mode;
    },
    /** Requests answered with a 2xx status. */
    get accepted() {
      return accepted;
    },
    /** Connections open right now. */
    get openConnections() {
      return sockets.size;
    },
    /** Closes the listening socket and destroys every connection: new connections are refused. */
    async refuse() {
      mode = 'refuse';
      for (const t of timers) clearTimeout(t);
      timers.clear();
      const closing = listening() ? new Promise((resolve) => server.close(() => resolve())) : Promise.resolve();
      for (const s of sockets) s.destroy();
      await closing;
    },
    /** Listening, but every request is answered with `status` (default 503). */
    async unavailable(status = 503) {
      failStatus = status;
      mode = 'unavailable';
      if (!listening()) await listenAgain();
    },
    /** Back to normal. */
    async up() {
      if (!listening()) await listenAgain();
      mode = 'up';
    },
    /**
     * Resolves once `done()` holds (checked after every answer), rejects after `timeoutMs`.
     * @param {() => boolean} done
     */
    until(done, timeoutMs = 30_000, what = 'condition') {
      if (done()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const w = { done, resolve };
        w.timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`flaky server: timed out waiting for ${what} (${arrivals.length} requests, ${accepted} accepted)`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      for (const w of waiters) clearTimeout(w.timer);
      waiters.clear();
      for (const s of sockets) s.destroy();
      if (listening()) await new Promise((resolve) => server.close(() => resolve()));
    },
  };

  async function listenAgain() {
    // The same port: the engine keeps its configured URL. Loopback ports are not reused by
    // others within seconds in practice; if it fails the test fails loudly here.
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  return api;
}
