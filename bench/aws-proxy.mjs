// A recording proxy in front of the AWS-compatible test server (moto), run in its own process
// like the webhook receiver. For the sqs and dynamodb destinations it plays the role the webhook
// receiver plays for the webhook one: for every change a request carries, it records the record
// id, the record version (data.n, or deleted) and the arrival time (the moment the whole request
// was read, before it is forwarded; performance.timeOrigin + performance.now(), ms). Requests go
// on to the real server unchanged, so the destination's final state is read from there.
//
// Understands the JSON protocol both SDKs use (X-Amz-Target): SQS SendMessage and
// SendMessageBatch (the message body is the stock driver's JSON), DynamoDB PutItem, DeleteItem,
// UpdateItem and BatchWriteItem. Control endpoints: GET /__now, POST /__reset, GET /__results.
// Started by compare.mjs with child_process.fork (argv[2]: the server's URL); exits with its parent.

import http from 'node:http';

const target = new URL(process.argv[2] ?? 'http://127.0.0.1:45660');
const now = () => performance.timeOrigin + performance.now();
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

let requests = 0;
let ids = [];
let versions = [];
let times = [];

function push(id, version, t) {
  ids.push(String(id ?? ''));
  versions.push(version);
  times.push(t);
}

/** A DynamoDB attribute value's plain value (only S and N matter here). */
const plain = (a) => (a?.S !== undefined ? a.S : a?.N !== undefined ? Number(a.N) : undefined);

function sqsMessage(text, t) {
  try {
    const m = JSON.parse(text);
    push(m?.data?.id, m?.action === 'delete' ? -1 : Number(m?.data?.n ?? -2), t);
  } catch {
    // not one of ours
  }
}

function record(action, body, t) {
  switch (action) {
    case 'AmazonSQS.SendMessage':
      return sqsMessage(body.MessageBody, t);
    case 'AmazonSQS.SendMessageBatch':
      return (body.Entries ?? []).forEach((e) => sqsMessage(e.MessageBody, t));
    case 'DynamoDB_20120810.PutItem':
      return push(plain(body.Item?.id), Number(plain(body.Item?.n) ?? -2), t);
    case 'DynamoDB_20120810.UpdateItem':
      return push(plain(body.Key?.id), Number(plain(body.ExpressionAttributeValues?.[':n']) ?? -2), t);
    case 'DynamoDB_20120810.DeleteItem':
      return push(plain(body.Key?.id), -1, t);
    case 'DynamoDB_20120810.BatchWriteItem':
      for (const writes of Object.values(body.RequestItems ?? {})) {
        for (const w of writes) {
          if (w.PutRequest) push(plain(w.PutRequest.Item?.id), Number(plain(w.PutRequest.Item?.n) ?? -2), t);
          else if (w.DeleteRequest) push(plain(w.DeleteRequest.Key?.id), -1, t);
        }
      }
      return undefined;
    default:
      return undefined;
  }
}

function reply(res, body) {
  const text = JSON.stringify(body);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0 }, (req, res) => {
  if (req.url === '/__now') return reply(res, { t: now() });
  if (req.url === '/__results') return reply(res, { requests, ids, versions, times });
  if (req.url === '/__reset') {
    requests = 0;
    ids = [];
    versions = [];
    times = [];
    req.resume();
    return reply(res, { ok: true });
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const t = now();
    const body = Buffer.concat(chunks);
    const action = req.headers['x-amz-target'];
    if (action) {
      requests++;
      try {
        record(String(action), JSON.parse(body.toString('utf8') || '{}'), t);
      } catch {
        // forwarded anyway: the server answers what it makes of it
      }
    }
    const upstream = http.request({
      host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent,
    }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', (e) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(String(e.message));
    });
    upstream.end(body);
  });
});
server.maxRequestsPerSocket = 0;

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  if (process.send) process.send({ port });
  else console.log(`AWS recording proxy on http://127.0.0.1:${port} → ${target.href}`);
});
process.on('disconnect', () => process.exit(0));
