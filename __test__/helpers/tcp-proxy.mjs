// A loopback TCP proxy in front of a real server, so a test can take that server "down" and
// bring it back without stopping the shared server itself:
//   down()   the listening socket is closed and every proxied connection destroyed: new
//            connections are refused (ECONNREFUSED), in-flight requests die
//   up()     listening again on the same port, forwarding to the target
import net from 'node:net';

/** @param {string} target `http://host:port` of the real server */
export async function startTcpProxy(target) {
  const { hostname, port: targetPort } = new URL(target);
  const sockets = new Set();
  let connections = 0;
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(Number(targetPort), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const listen = (port) =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  await listen(0);
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** Connections accepted so far (to tell that a client really came through the proxy). */
    get connections() {
      return connections;
    },
    async down() {
      if (!server.listening) return;
      const closed = new Promise((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
    async up() {
      if (!server.listening) await listen(port);
    },
    async close() {
      await this.down();
    },
  };
}
