// The built-in metrics listener (`metrics: { port, host }`): a small node:http server that
// answers GET /metrics with the engine's Prometheus text, for applications without an HTTP
// server of their own. The option itself is checked by the engine (src/config.rs).

import http from 'node:http';

import { ReplicatorError } from './errors.js';

/** The content type of `plugin.metrics()`: Prometheus text exposition format 0.0.4. */
export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * Listens on `host:port` (port 0 picks a free one) and serves `render()` at /metrics.
 * The server does not keep the process alive by itself.
 * @param {{ port: number, host?: string }} options
 * @param {() => string} render
 * @returns {Promise<{ address: { host: string, port: number, url: string }, close: () => Promise<void> }>}
 */
export async function startMetricsServer({ port, host = '127.0.0.1' }, render) {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('Not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('Method not allowed\n');
      return;
    }
    let body;
    try {
      body = render();
    } catch (error) {
      res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`Could not render the metrics: ${error.message}\n`);
      return;
    }
    res.writeHead(200, { 'Content-Type': METRICS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise((resolve, reject) => {
    server.once('error', (error) => reject(listenError(error, port, host)));
    server.listen(port, host, () => resolve());
  });
  // Later errors (a broken connection) must never reach the process as uncaught.
  server.on('error', () => {});
  server.unref();
  const bound = server.address();
  const address = {
    host: bound.address,
    port: bound.port,
    url: `http://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}/metrics`,
  };
  return {
    address,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      // Keep-alive connections of a scraper would hold close() open.
      server.closeAllConnections?.();
    }),
  };
}

function listenError(error, port, host) {
  const where = `${host}:${port}`;
  const [option, reason, fix] = error.code === 'EADDRINUSE'
    ? ['metrics.port', `port ${port} on ${host} is already in use`, 'choose another metrics.port (0 picks a free one), or stop what listens there']
    : error.code === 'EACCES'
      ? ['metrics.port', `no permission to listen on ${where}`, 'use a port above 1023, or run with the rights to bind it']
      : ['metrics.host', `cannot listen on ${where}: ${error.message}`, "use an address of this machine, such as '127.0.0.1' (the default) or '0.0.0.0'"];
  return new ReplicatorError(`Invalid ReplicatorPlugin configuration: ${option}: ${reason}`, {
    code: 'ERR_CONFIG',
    description: `The built-in metrics listener could not start: ${reason}.\nOption: ${option}\nHow to fix: ${fix}`,
    context: { option, reason, suggestion: fix, errno: error.code },
    cause: error,
  });
}
