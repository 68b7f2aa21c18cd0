// The cheapest keep-alive HTTP/1.1 client we can write: pre-serialised POSTs over plain
// sockets, one request in flight per socket, responses parsed just enough to find their end.
// Used to measure the webhook server's own request rate (a client that is not the bottleneck).

import net from 'node:net';

function request(url, body) {
  return Buffer.from(`POST ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

/** One socket: sends requests one after another until `take()` returns null. */
function lane(url, take) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname);
    socket.setNoDelay(true);
    let buffer = Buffer.alloc(0);
    let done = 0;
    const next = () => {
      const body = take();
      if (body === null) {
        socket.end();
        resolve(done);
        return;
      }
      socket.write(request(url, body));
    };
    socket.on('connect', next);
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      for (;;) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buffer.subarray(0, end).toString('latin1');
        const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
        if (buffer.length < end + 4 + length) return;
        if (!head.startsWith('HTTP/1.1 200')) {
          reject(new Error(head.split('\r\n')[0]));
          return;
        }
        buffer = buffer.subarray(end + 4 + length);
        done++;
        next();
      }
    });
  });
}

/** `n` POSTs of `bodyOf(i)` with `inFlight` sockets; stops early at `deadline` (performance.now()). */
export async function rawPostRate(url, n, inFlight, deadline, bodyOf) {
  let i = 0;
  const take = () => (i < n && performance.now() < deadline ? bodyOf(i++) : null);
  const t0 = performance.now();
  const counts = await Promise.all(Array.from({ length: Math.min(inFlight, n) }, () => lane(url, take)));
  const ms = performance.now() - t0;
  const done = counts.reduce((a, b) => a + b, 0);
  return (done / ms) * 1000;
}
