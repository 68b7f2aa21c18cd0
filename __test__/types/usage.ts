// Type-checked by __test__/typings.test.mjs with `tsc --strict --noEmit`: the public API as an
// application uses it. Every line must compile, except those marked @ts-expect-error, which
// must fail (proving that a wrong payload field is rejected).
import { Database } from 's3db.js/lite';
import ReplicatorPluginDefault, { METRICS_CONTENT_TYPE, ReplicatorPlugin, type ErrorCode, type MetricsJSON, type ReplicatorError, type ReplicatorPluginEvents } from 's3db-replicator';

const plugin = new ReplicatorPlugin({
  batchSize: 50,
  bulkBatchSize: 1000,
  metrics: { port: 9464, host: '127.0.0.1' },
  outbox: { dir: './outbox', fsync: 'interval' },
  replicators: [
    { driver: 's3db', resources: ['users'], config: { connectionString: 'file://./backup' } },
    { driver: 's3db', resources: { users: ['people', { resource: 'audit', transform: (d) => ({ id: d.id }) }] }, client: {} },
    { driver: 'webhook', resources: { users: { actions: ['inserted', 'delete'], shouldReplicate: (_d, action) => action !== 'deleted' } }, config: { url: 'http://127.0.0.1:1/hook', auth: { type: 'bearer', token: 't' } } },
    { driver: 'postgresql', resources: { users: 'users_table' }, config: { connectionString: 'postgres://127.0.0.1/db', schemaSync: { enabled: true, onMismatch: 'warn' } } },
    { driver: 's3db', resources: ['users'], config: { connectionString: 's3://KEY:SECRET@bucket/copy', endpoint: 'http://127.0.0.1:9000' } },
    {
      driver: 'sqs',
      resources: { orders: true, payments: { queueUrl: 'https://sqs.us-east-1.amazonaws.com/1/payments.fifo', transform: (d) => ({ id: d.id }) } },
      config: {
        region: 'us-east-1', credentials: { accessKeyId: 'AK', secretAccessKey: 'S', sessionToken: 'T' },
        queues: { orders: 'https://sqs.us-east-1.amazonaws.com/1/orders' }, defaultQueue: 'https://sqs.us-east-1.amazonaws.com/1/all',
        messageGroupId: 'g', deduplicationId: true, maxMessageBytes: 1_048_576,
        messageAttributes: { source: { DataType: 'String', StringValue: 'prod' }, version: '1' },
      },
    },
    {
      driver: 'dynamodb',
      resources: { users: 'Users', orders: { table: 'Orders', primaryKey: 'customerId', sortKey: 'orderId', actions: ['inserted'] }, events: ['E1', { table: 'E2' }] },
      config: { endpoint: 'http://127.0.0.1:8000', accessKeyId: 'AK', secretAccessKey: 'S', createTable: true },
    },
    { driver: 'mongodb', resources: { users: 'users', orders: [{ collection: 'orders_active', actions: ['inserted', 'updated'] }, { collection: 'orders_archive', actions: ['inserted'] }] },
      config: { connectionString: 'mongodb://127.0.0.1:27017/app', logCollection: 'replication_log', options: { maxPoolSize: 50, w: 'majority', j: true, wtimeout: 5000 } } },
    { driver: 'mongodb', resources: ['users'], config: { host: 'localhost', port: 27017, database: 'app', username: 'u', password: 'p' } },
    { driver: 'bigquery', resources: { events: 'events_table', transactions: { table: 'transactions_audit', mutability: 'immutable', actions: ['inserted', 'updated', 'deleted'] } },
      config: { projectId: 'analytics', datasetId: 'mixed', location: 'US', mutability: 'append-only', schemaSync: { enabled: true, strategy: 'alter' } } },
    { driver: 'bigquery', resources: ['users'], config: { projectId: 'p', dataset: 'd', endpoint: 'http://127.0.0.1:9050',
      credentials: { type: 'service_account', client_email: 'r@p.iam.gserviceaccount.com', private_key: '-----BEGIN PRIVATE KEY-----\n...' } } },
  ],
});
const same: typeof ReplicatorPlugin = ReplicatorPluginDefault;

const ms: number[] = [];
plugin
  .on('plg:replicator:replicated', (e) => ms.push(e.duration + e.attempts))
  .on('plg:replicator:error', (e) => console.log(e.error, e.code, e.deadLetterId?.toFixed(), e.data?.id, e.held === true))
  .on('replicationError', (e) => console.log(e.resourceName, e.operation))
  .on('plg:replicator:skipped', (e) => console.log(e.destination, e.recordId, e.reason === 'superseded', e.duration))
  .on('plg:replicator:circuit-open', (e) => console.log(e.failures, e.error ?? ''))
  .on('plg:replicator:circuit-closed', (e) => console.log(e.downForMs.toFixed()))
  .on('plg:replicator:sync-progress', (e) => console.log(e.done / e.total, e.etaMs ?? 0))
  .on('plg:replicator:sync-resource', (e) => console.log(e.resourceName, e.replicatorId))
  .on('plg:replicator:sync-completed', (e) => console.log(e.synced, e.errors.toFixed(), e.stats.totalErrors))
  .on('table_created', (e) => console.log(e.tableName, e.attributes.join()))
  .on('table_altered', (e) => console.log(e.addedColumns.length, e.droppedColumns.length))
  .on('table_recreated', (e) => console.log(e.replicator, e.tableName))
  .on('schema_mismatch', (e) => console.log(e.message.toUpperCase()))
  .on('schema_sync_completed', (e) => console.log(e.resources.length, e.events.map((x) => x.event)))
  .on('replicator_log_error', (e) => console.log(e.logError, e.recordId ?? 'none'))
  .on('replicator_log_resource_creation_error', (e) => console.log(e.resourceName, e.error))
  .on('replicator_cleanup_error', (e) => console.log(e.replicator, e.error))
  .on('plg:replicator:kept', (e) => console.log(e.dir, e.waiting.map((w) => w.queued + w.replicator.length)))
  .on('schema_sync_deferred', (e) => console.log(e.tableName, e.error.length))
  .once('plg:replicator:replicated', (e) => console.log(e.success))
  .on('some-other-event', (...args) => console.log(args.length));

// @ts-expect-error the mongodb driver's port is a number
new ReplicatorPlugin({ replicators: [{ driver: 'mongodb', resources: ['users'], config: { database: 'app', port: '27017' } }] });
// @ts-expect-error BigQuery's mutability is one of three modes
new ReplicatorPlugin({ replicators: [{ driver: 'bigquery', resources: { u: { table: 't', mutability: 'sometimes' } }, config: { projectId: 'p', datasetId: 'd' } }] });
// @ts-expect-error the bigquery driver needs a projectId
new ReplicatorPlugin({ replicators: [{ driver: 'bigquery', resources: ['users'], config: { datasetId: 'd' } }] });
// @ts-expect-error a skipped change has no `error` field
plugin.on('plg:replicator:skipped', (e) => console.log(e.error));
// @ts-expect-error duration is a number, not a string
plugin.on('plg:replicator:replicated', (e: { duration: string }) => console.log(e.duration));
// @ts-expect-error circuit-closed reports downForMs, not failures
plugin.on('plg:replicator:circuit-closed', (e) => e.failures);

const payload: ReplicatorPluginEvents['plg:replicator:error'] = { replicator: 'r', resourceName: 'users', operation: 'inserted', error: 'boom', attempts: 1 };

async function main(): Promise<void> {
  const db = new Database({ connectionString: 'memory://bucket/app' });
  await db.connect();
  await db.usePlugin(plugin);
  await plugin.flush();
  const stats = await plugin.getReplicatorStats();
  const batch = await plugin.replicateBatch('users', [{ id: 'a' }], { replicator: 's3db' });
  const sync = await plugin.syncAllData('s3db', { batchSize: 10, onProgress: (p) => console.log(p.rate) });
  const dead = await plugin.getDeadLetters({ limit: 5 });
  const text: string = plugin.metrics();
  const json: MetricsJSON = plugin.metricsJSON();
  const delivered = json.s3db_replicator_changes_delivered_total?.samples[0];
  const latency = json.s3db_replicator_delivery_duration_seconds?.samples[0];
  const at = plugin.metricsAddress();
  console.log(text.length, METRICS_CONTENT_TYPE, delivered && 'value' in delivered ? delivered.value : 0, latency && 'buckets' in latency ? latency.buckets[0]?.le : '', at?.url ?? 'off');
  console.log(stats.stats.pending, batch.successful, sync.synced, dead.map((d) => d.code), payload, same);
  try {
    await plugin.retryFailedReplicators();
  } catch (error) {
    const e = error as ReplicatorError;
    console.log(e.code, e.description, e.context);
  }
  await plugin.stop();
}
void main;

// @ts-expect-error the metrics listener needs a port
new ReplicatorPlugin({ metrics: { host: '0.0.0.0' }, replicators: [] });
// @ts-expect-error metrics is false or an object
new ReplicatorPlugin({ metrics: true, replicators: [] });

// @ts-expect-error maxMessageBytes is a number of bytes
new ReplicatorPlugin({ replicators: [{ driver: 'sqs', resources: ['a'], config: { queueUrl: 'https://q', maxMessageBytes: '256k' } }] });

// Engine logs: a level and a pino-style logger.
const lines: string[] = [];
new ReplicatorPlugin({
  logLevel: 'info',
  verbose: true,
  logger: {
    error: (fields, message) => lines.push(`${message} ${String(fields.replicator)}`),
    warn: (fields, message) => lines.push(`${message} ${String(fields.code)}`),
    info: (_fields, message) => lines.push(message),
    debug: (_fields, message) => lines.push(message),
    trace: () => {},
  },
  replicators: [{ driver: 's3db', resources: ['users'], config: { connectionString: 'memory://b' } }],
});
// @ts-expect-error logLevel takes pino's level names
new ReplicatorPlugin({ logLevel: 'verbose', replicators: [] });
// The JetStream outbox (README "Scaling out"): application instances publish, workers deliver.
const publisher = new ReplicatorPlugin({
  mode: 'publish',
  outbox: { jetstream: { url: 'nats://127.0.0.1:4222', stream: 'S3DB_REPLICATOR', subjectPrefix: 'app.changes', partitions: 16, user: 'app', password: 'p', leaseTtlMs: 10_000, publishTimeoutMs: 30_000, maxInFlight: 1024 } },
  replicators: [{ driver: 'webhook', resources: ['users'], config: { url: 'http://127.0.0.1:1/hook' } }],
});
async function worker(): Promise<void> {
  const { outbox } = await publisher.getReplicatorStats();
  if (outbox?.mode === 'jetstream') console.log(outbox.partitions?.length ?? 0);
}
void worker;
const jetstreamCode: ErrorCode = 'ERR_JETSTREAM';
void jetstreamCode;
// @ts-expect-error mode is one of 'local' | 'publish' | 'deliver' | 'both'
new ReplicatorPlugin({ mode: 'worker', replicators: [] });
// @ts-expect-error partitions is a number
new ReplicatorPlugin({ outbox: { jetstream: { partitions: '16' } }, replicators: [] });
// NKey or creds-file authentication, over (mutual) TLS.
new ReplicatorPlugin({ mode: 'publish', outbox: { jetstream: { url: 'nats://nats.internal:4222', nkey: 'SUA...', tls: { ca: 'ca.pem', cert: 'client.pem', key: 'client-key.pem' } } }, replicators: [] });
new ReplicatorPlugin({ mode: 'publish', outbox: { jetstream: { credsFile: './user.creds', tls: true } }, replicators: [] });
// @ts-expect-error tls is true/false or { ca, cert, key }
new ReplicatorPlugin({ outbox: { jetstream: { tls: 'yes' } }, replicators: [] });
