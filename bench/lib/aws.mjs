// SQS and DynamoDB destinations and their physical limits, on the AWS-compatible test server
// (moto, `--aws-url`, started by scripts/services/moto.sh).
//
// Both plugins get the same replicator entry: `{ region, endpoint, credentials, queueUrl }` for
// sqs (a fresh standard queue per variant), `{ region, endpoint, credentials }` and
// `resources: { users: table }` for dynamodb (a fresh table per variant, key `id`). The endpoint
// is the recording proxy (bench/aws-proxy.mjs, its own process) in front of the server: it logs,
// for every change a request carries, the record id, version and arrival time, the moment it has
// read the request (as the webhook receiver does), and forwards the request unchanged.
// Final state: sqs = the messages applied in arrival order (as for the webhook); dynamodb = a
// Scan of the table on the server itself.
//
// The stock DynamoDB replicator cannot start in s3db.js 21.6.2 ("Failed to connect to
// DynamoDB"): its runs fail, and the report says so.

import { CreateQueueCommand, DeleteQueueCommand, PurgeQueueCommand, SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import { BatchWriteItemCommand, CreateTableCommand, DeleteTableCommand, DynamoDBClient, ScanCommand } from '@aws-sdk/client-dynamodb';

import { controlOf } from './destinations.mjs';
import { DELETED, record } from './workload.mjs';

export const AWS_DEFAULT_URL = process.env.S3DB_REPLICATOR_AWS_ENDPOINT ?? 'http://127.0.0.1:45660';
const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };
// Each client gets its own copy: the SDK marks the objects it uses (`$source`).
const client = (Client, endpoint) => new Client({ region: 'us-east-1', endpoint, credentials: { ...CREDENTIALS }, maxAttempts: 1 });
const unique = (kind) => `bench-${kind}-${process.pid}-${Date.now().toString(36)}`;

/** The recording proxy's control endpoints, and its arrivals on this process's clock. */
async function proxyOf(url) {
  const { control, clock: best } = await controlOf(url);
  await control('/__reset', 'POST');
  return {
    clock: best,
    reset: () => control('/__reset', 'POST'),
    async arrivals() {
      const { ids, versions, times } = await control('/__results');
      return ids.map((id, i) => ({ id, version: versions[i] === -1 ? DELETED : versions[i], t: times[i] - best.delta }));
    },
    async traffic() {
      const { requests } = await control('/__results');
      return { requests };
    },
  };
}

export async function openSqs(job) {
  const sqs = client(SQSClient, job.awsUrl);
  const { QueueUrl: queueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: unique('sqs') }));
  const proxy = await proxyOf(job.awsProxyUrl);
  return {
    name: 'sqs',
    clock: proxy.clock,
    replicator: () => ({ driver: 'sqs', resources: ['users'], config: { region: 'us-east-1', endpoint: job.awsProxyUrl, credentials: CREDENTIALS, queueUrl } }),
    async reset() {
      await sqs.send(new PurgeQueueCommand({ QueueUrl: queueUrl }));
      await proxy.reset();
    },
    arrivals: proxy.arrivals,
    traffic: proxy.traffic,
    async finalState(prefix) {
      const state = new Map();
      for (const { id, version } of await proxy.arrivals()) {
        if (!id.startsWith(prefix)) continue;
        if (version === DELETED) state.delete(id);
        else state.set(id, version);
      }
      return state;
    },
    close: () => sqs.send(new DeleteQueueCommand({ QueueUrl: queueUrl })).catch(() => {}),
  };
}

export async function openDynamoDb(job) {
  const ddb = client(DynamoDBClient, job.awsUrl);
  const table = unique('ddb');
  await ddb.send(new CreateTableCommand({
    TableName: table,
    BillingMode: 'PAY_PER_REQUEST',
    KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
    AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
  }));
  const proxy = await proxyOf(job.awsProxyUrl);
  return {
    name: 'dynamodb',
    clock: proxy.clock,
    replicator: () => ({ driver: 'dynamodb', resources: { users: table }, config: { region: 'us-east-1', endpoint: job.awsProxyUrl, credentials: CREDENTIALS } }),
    reset: proxy.reset,
    arrivals: proxy.arrivals,
    traffic: proxy.traffic,
    async finalState(prefix) {
      const state = new Map();
      let start;
      do {
        const page = await ddb.send(new ScanCommand({ TableName: table, ExclusiveStartKey: start }));
        for (const item of page.Items ?? []) {
          if (item.id.S.startsWith(prefix)) state.set(item.id.S, Number(item.n.N));
        }
        start = page.LastEvaluatedKey;
      } while (start);
      return state;
    },
    close: () => ddb.send(new DeleteTableCommand({ TableName: table })).catch(() => {}),
  };
}

async function pool(n, inFlight, deadline, task) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < n && performance.now() < deadline) {
      const i = next;
      next += 1;
      await task(i);
    }
  }));
  return (next / (performance.now() - t0)) * 1000;
}

/**
 * The server's own rates, straight from the AWS SDK for JavaScript with `inFlight` requests in
 * flight, no proxy: sqsBatch = messages/s in SendMessageBatch requests of 10 (the stock body)
 * into a fresh queue, at most 1,000 messages (moto slows down as a queue fills: this is its best
 * case), ddbBatch = items/s in BatchWriteItem requests of 25.
 */
export async function awsLimits({ awsUrl, n, inFlight, deadline, dests }) {
  const out = {};
  if (dests.includes('sqs')) out.sqsBatch = await sqsLimit(awsUrl, Math.min(n, 1000), inFlight, deadline);
  if (dests.includes('dynamodb')) out.ddbBatch = await ddbLimit(awsUrl, n, inFlight, deadline);
  return out;
}

async function sqsLimit(awsUrl, n, inFlight, deadline) {
  const sqs = client(SQSClient, awsUrl);
  const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: unique('limit') }));
  const body = (i) => JSON.stringify({ resource: 'users', action: 'insert', timestamp: new Date().toISOString(), source: 's3db-replicator', data: record(`u${i}`, i) });
  const sendTen = (k) => sqs.send(new SendMessageBatchCommand({
    QueueUrl, Entries: Array.from({ length: 10 }, (_, j) => ({ Id: `m${j}`, MessageBody: body(k * 10 + j) })),
  }));
  const requests = Math.ceil(n / 10);
  await pool(Math.min(requests, 50), inFlight, deadline, sendTen); // warm-up
  const rate = (await pool(requests, inFlight, deadline, sendTen)) * 10;
  await sqs.send(new DeleteQueueCommand({ QueueUrl })).catch(() => {});
  return rate;
}

async function ddbLimit(awsUrl, n, inFlight, deadline) {
  const ddb = client(DynamoDBClient, awsUrl);
  const table = unique('limit');
  await ddb.send(new CreateTableCommand({
    TableName: table, BillingMode: 'PAY_PER_REQUEST',
    KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }], AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
  }));
  const item = (i) => {
    const r = record(`u${i}`, i);
    return { PutRequest: { Item: { id: { S: r.id }, name: { S: r.name }, n: { N: String(r.n) } } } };
  };
  const writeTwentyFive = (k) => ddb.send(new BatchWriteItemCommand({ RequestItems: { [table]: Array.from({ length: 25 }, (_, j) => item(k * 25 + j)) } }));
  const batches = Math.ceil(n / 25);
  await pool(Math.min(batches, 20), inFlight, deadline, writeTwentyFive);
  const rate = (await pool(batches, inFlight, deadline, writeTwentyFive)) * 25;
  await ddb.send(new DeleteTableCommand({ TableName: table })).catch(() => {});
  return rate;
}

/** true, or why the server does not answer. */
export async function awsReachable(url) {
  try {
    const res = await fetch(new URL('/moto-api/', url), { signal: AbortSignal.timeout(2000) });
    return res.ok ? true : `HTTP ${res.status}`;
  } catch (error) {
    return error.cause?.code ?? error.message;
  }
}
