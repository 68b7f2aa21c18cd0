// A local webhook receiver for the benchmark, run in its own process (so its CPU does not
// compete inside the process being measured). Counts requests and records, for every change
// received, the record id, the record version (data.n, or "deleted") and the arrival time
// (performance.timeOrigin + performance.now(), ms: the same clock as the bench processes).
//
// Also counts TCP connections accepted and its own CPU time. Control endpoints: GET /__now
// (clock), POST /__reset, GET /__results.
// Started by compare.mjs with child_process.fork; prints nothing; exits with its parent.

import http from 'node:http';

const now = () => performance.timeOrigin + performance.now();

let requests = 0;
let connections = 0; // TCP connections accepted (keep-alive reuse keeps this low)
let bytes = 0;
let ids = [];
let versions = [];
let times = [];
let cpuAtReset = process.cpuUsage(); // this process's CPU since the last reset

function record(payload, t) {
  const items = Array.isArray(payload?.batch) ? payload.batch : [payload];
  for (const item of items) {
    const data = item?.data ?? {};
    ids.push(String(data.id ?? ''));
    versions.push(item?.action === 'delete' ? -1 : Number(data.n ?? -2));
    times.push(t);
  }
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0 }, (req, res) => {
  if (req.url === '/__now') return reply(res, 200, { t: now() });
  if (req.url === '/__results') {
    const cpu = process.cpuUsage(cpuAtReset);
    return reply(res, 200, { requests, connections, bytes, cpuSec: (cpu.user + cpu.system) / 1e6, ids, versions, times });
  }
  if (req.url === '/__reset') {
    requests = 0;
    connections = 0;
    bytes = 0;
    ids = [];
    versions = [];
    times = [];
    cpuAtReset = process.cpuUsage();
    req.resume();
    return reply(res, 200, { ok: true });
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const t = now();
    requests++;
    const body = Buffer.concat(chunks);
    bytes += body.length;
    try {
      record(JSON.parse(body.toString('utf8')), t);
    } catch {
      return reply(res, 400, { error: 'invalid JSON' });
    }
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
    res.end('{}');
  });
});
server.on('connection', () => {
  connections++;
});
server.maxRequestsPerSocket = 0;
server.headersTimeout = 60_000;

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  if (process.send) process.send({ port });
  else console.log(`webhook server on http://127.0.0.1:${port}/hook`);
});
// Never outlive the benchmark.
process.on('disconnect', () => process.exit(0));
