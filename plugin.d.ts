// Typings of the public API: the s3db.js ReplicatorPlugin's options, mapping syntaxes,
// events and methods, plus this engine's tuning options.

import { Plugin } from 's3db.js/plugins/plugin.class';

/** A change's action, as the spec names it. `'insert' | 'update' | 'delete'` are accepted in `actions` too. */
export type ReplicatorAction = 'inserted' | 'updated' | 'deleted';
export type ActionName = ReplicatorAction | 'insert' | 'update' | 'delete';

/** Receives the record (internal `_*`/`$*` fields removed); return the record to send, or null/undefined to skip it. */
export type TransformFunction = (data: Record<string, any>) => Record<string, any> | null | undefined | Promise<Record<string, any> | null | undefined>;
/** Return false to skip the change for this destination. */
export type ShouldReplicateFunction = (data: Record<string, any>, action: ReplicatorAction) => boolean | Promise<boolean>;

/** `{ users: { resource: 'people', transform, actions, shouldReplicate } }` */
export interface DestinationConfig {
  /** Destination resource (s3db) or name; defaults to the source resource's name. */
  resource?: string;
  /** Alias of `resource`, for table-based destinations. */
  table?: string;
  /** Alias of `resource`, for collection-based destinations. */
  collection?: string;
  /**
   * SQL drivers: the table's key column when it is not `id` (it receives the record id).
   * DynamoDB: the table's partition key attribute (default `id`), read from the record.
   */
  primaryKey?: string;
  /** DynamoDB: the table's sort key attribute, read from the record. */
  sortKey?: string;
  /** SQS: this destination's queue (overrides `queues` and the defaults). */
  queueUrl?: string;
  /** BigQuery: this table's mode (overrides `config.mutability`). */
  mutability?: BigQueryMutability;
  transform?: TransformFunction;
  /** Which actions reach this destination (default: all). */
  actions?: ActionName[];
  shouldReplicate?: ShouldReplicateFunction;
}

export type DestinationEntry = string | true | TransformFunction | DestinationConfig;

/**
 * The five mapping syntaxes:
 * `['users']`, `{ users: 'people' }`, `{ users: { resource, transform, actions } }`,
 * `{ users: (data) => data }`, `{ users: ['people', { resource: 'audit', transform }] }`.
 */
export type ResourceMapping = string[] | Record<string, DestinationEntry | DestinationEntry[] | false>;

export interface S3dbDriverConfig {
  /** `memory://bucket/prefix`, `file://./path`, `s3://KEY:SECRET@bucket/prefix` (credentials are never logged). */
  connectionString?: string;
  /** An existing, connected s3db.js Database (instead of connectionString). */
  client?: object;
  /**
   * An S3-compatible server (MinIO, moto, R2 ...) for an `s3://` connectionString, e.g.
   * `'http://127.0.0.1:9000'` (no credentials, no path). Without it `s3://` means AWS S3.
   */
  endpoint?: string;
  /** Passed to the destination Database, as the stock driver does. */
  region?: string;
  keyPrefix?: string;
  logLevel?: string;
  /** Create destination resources that do not exist yet. Default true. */
  createResources?: boolean;
}

export type WebhookAuth =
  | { type: 'bearer'; token: string }
  | { type: 'basic'; username: string; password: string }
  | { type: 'apikey'; header: string; value: string };

export interface WebhookDriverConfig {
  url: string;
  /** Default 'POST'. */
  method?: 'POST' | 'PUT' | 'PATCH';
  headers?: Record<string, string>;
  auth?: WebhookAuth;
  /** Per-request timeout in ms. Default 5000. */
  timeout?: number;
  /** Retries after the first attempt. Default 3. */
  retries?: number;
  /** First retry delay in ms. Default 1000. */
  retryDelay?: number;
  /** Default 'exponential'. */
  retryStrategy?: 'exponential' | 'fixed';
  /** Statuses worth retrying. Default [429, 500, 502, 503, 504]; any other non-2xx fails at once. */
  retryOnStatus?: number[];
  /** Send `{ batch: [...] }` requests. Default false. */
  batch?: boolean;
  /** Most changes per batch request. Default 100. */
  batchSize?: number;
}

export interface SchemaSyncOptions {
  /** Default false. */
  enabled?: boolean;
  /** Default 'alter'. */
  strategy?: 'alter' | 'drop-create' | 'validate-only';
  /** Default 'error'. */
  onMismatch?: 'error' | 'warn' | 'ignore';
  /** Default true. */
  autoCreateTable?: boolean;
  /** Default true. */
  autoCreateColumns?: boolean;
  /** Default false. */
  dropMissingColumns?: boolean;
}

export type SslOption = boolean | { rejectUnauthorized?: boolean; ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };

interface SqlCommonConfig {
  /** Pool size. Default 10. */
  connectionLimit?: number;
  /** Audit table with one row per applied operation. */
  logTable?: string;
  schemaSync?: SchemaSyncOptions;
  ssl?: SslOption;
}

export interface PostgresDriverConfig extends SqlCommonConfig {
  /** postgres://user:pass@host:5432/db (credentials are never logged). */
  connectionString?: string;
  host?: string;
  /** Default 5432. */
  port?: number;
  database?: string;
  user?: string;
  password?: string;
  /** Wait for a pooled connection, ms. Default 10000. */
  connectionTimeoutMillis?: number;
}

export interface MySqlDriverConfig extends SqlCommonConfig {
  /** mysql://user:pass@host:3306/db (alias: url). */
  connectionString?: string;
  url?: string;
  host?: string;
  /** Default 3306. */
  port?: number;
  database?: string;
  user?: string;
  username?: string;
  password?: string;
  /** Wait for a pooled connection, ms. Default 10000. */
  connectTimeout?: number;
}

export interface PlanetScaleDriverConfig extends SqlCommonConfig {
  /** mysql://... (alias: connectionString). */
  url?: string;
  host?: string;
  port?: number;
  database?: string;
  username?: string;
  password?: string;
  /** TLS is on by default. */
  ssl?: SslOption;
  connectTimeout?: number;
}

export interface TursoDriverConfig {
  /** libsql://db-org.turso.io, https://..., http://127.0.0.1:8080 or file:./local.db */
  url: string;
  /** Required for remote Turso hosts. */
  authToken?: string;
  logTable?: string;
  schemaSync?: SchemaSyncOptions;
}

/** Static AWS credentials; without them the AWS default chain (environment, profile, role) is used. */
export interface AwsCredentialsConfig {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

interface AwsCommonConfig {
  /** Default: the AWS default chain's region (AWS_REGION, profile), else us-east-1. */
  region?: string;
  /** A local or compatible server, e.g. `'http://127.0.0.1:4566'`. */
  endpoint?: string;
  credentials?: AwsCredentialsConfig;
  /** With `secretAccessKey`, instead of `credentials`. */
  accessKeyId?: string;
  secretAccessKey?: string;
}

/** A message attribute as SQS writes it, or a plain string. */
export type SqsMessageAttribute = string | { DataType: 'String' | 'Number' | `String.${string}` | `Number.${string}`; StringValue: string };

export interface SqsDriverConfig extends AwsCommonConfig {
  /** The queue of every resource without one of its own. */
  queueUrl?: string;
  /** Resource name → queue URL. */
  queues?: Record<string, string>;
  /** Resource name → several queue URLs (each change goes to all), as in the stock driver. */
  resourceQueueMap?: Record<string, string[]>;
  /** The queue of resources that have none (`defaultQueue` is the stock code's spelling). */
  defaultQueueUrl?: string;
  defaultQueue?: string;
  /** FIFO queues: one fixed message group (default: one group per record, `resource:id`). */
  messageGroupId?: string;
  /** FIFO queues: send the change's identity as MessageDeduplicationId. Default true. */
  deduplicationId?: boolean;
  /** Attributes of every message (at most 8; `resource` and `action` are always added). */
  messageAttributes?: Record<string, SqsMessageAttribute>;
  /** Largest message and SendMessageBatch request in bytes, 1024 to 1048576. Default 262144. */
  maxMessageBytes?: number;
}

export interface DynamoDbDriverConfig extends AwsCommonConfig {
  /** Create a missing table (on-demand billing, the configured keys). Default false. */
  createTable?: boolean;
}

/** The MongoDB write concern. */
export interface MongoDbWriteConcern {
  /** A number of nodes, `'majority'` or a tag set name. */
  w?: number | string;
  /** Journal acknowledgment. */
  j?: boolean;
  /** Write concern timeout, ms. */
  wtimeout?: number;
  wtimeoutMS?: number;
}

/** MongoDB client options (the Node driver's names); they override the connection string's. */
export interface MongoDbClientOptions extends MongoDbWriteConcern {
  maxPoolSize?: number;
  minPoolSize?: number;
  maxConnecting?: number;
  maxIdleTimeMS?: number;
  serverSelectionTimeoutMS?: number;
  connectTimeoutMS?: number;
  /** Bounds each write round trip. */
  socketTimeoutMS?: number;
  heartbeatFrequencyMS?: number;
  appName?: string;
  replicaSet?: string;
  directConnection?: boolean;
  retryWrites?: boolean;
  authSource?: string;
  writeConcern?: MongoDbWriteConcern;
  /** Accepted and ignored (Node driver 3.x flags). */
  useUnifiedTopology?: boolean;
  /** Accepted and ignored (Node driver 3.x flags). */
  useNewUrlParser?: boolean;
}

/** `mongodb`: documents with `_id` = the record id; map resources to `'collection'` or `{ collection, actions }`. */
export interface MongoDbDriverConfig {
  /** Any MongoDB URI: mongodb://user:pass@host:27017/db, mongodb+srv://..., several hosts with ?replicaSet=. */
  connectionString?: string;
  /** Default localhost (without a connection string). */
  host?: string;
  /** Default 27017. */
  port?: number;
  /** Required unless the connection string names a database. */
  database?: string;
  username?: string;
  password?: string;
  options?: MongoDbClientOptions;
  /** A collection receiving one document per applied operation, indexed on `timestamp`. */
  logCollection?: string;
}

/** How changes become BigQuery rows. */
export type BigQueryMutability = 'append-only' | 'mutable' | 'immutable';

/** A service-account key file's JSON object. */
export interface GoogleServiceAccountKey {
  type?: string;
  project_id?: string;
  private_key_id?: string;
  private_key: string;
  client_email: string;
  [key: string]: unknown;
}

/**
 * `bigquery`: streaming inserts with `insertId` (append-only, immutable) or one MERGE by id per
 * batch (mutable); map resources to `'table'` or `{ table, actions, mutability, transform }`.
 */
export interface BigQueryDriverConfig {
  projectId: string;
  /** The dataset (or `dataset`). */
  datasetId?: string;
  /** The spec's other spelling of `datasetId`. */
  dataset?: string;
  /** Where jobs run and a created dataset lives. Default 'US'. */
  location?: string;
  /** A service-account key object; absent or `{}`: Application Default Credentials. */
  credentials?: GoogleServiceAccountKey | Record<string, never>;
  /** A BigQuery-compatible REST server (an emulator), e.g. 'http://127.0.0.1:9050'. */
  endpoint?: string;
  /** Default 'append-only'; a resource's `mutability` overrides it. */
  mutability?: BigQueryMutability;
  schemaSync?: SchemaSyncOptions;
}

interface ReplicatorBase {
  /** Unique id; default: the driver name (`s3db`), or `s3db-1`, `s3db-2` when a driver is used twice. */
  id?: string;
  resources: ResourceMapping;
  /** Default true. */
  enabled?: boolean;
}

export type ReplicatorConfig =
  | (ReplicatorBase & { driver: 's3db'; config?: S3dbDriverConfig; client?: object })
  | (ReplicatorBase & { driver: 'webhook'; config: WebhookDriverConfig })
  | (ReplicatorBase & { driver: 'postgresql' | 'postgres'; config: PostgresDriverConfig })
  | (ReplicatorBase & { driver: 'mysql' | 'mariadb'; config: MySqlDriverConfig })
  | (ReplicatorBase & { driver: 'planetscale'; config: PlanetScaleDriverConfig })
  | (ReplicatorBase & { driver: 'turso'; config: TursoDriverConfig })
  | (ReplicatorBase & { driver: 'sqs'; config: SqsDriverConfig })
  | (ReplicatorBase & { driver: 'dynamodb'; config: DynamoDbDriverConfig })
  | (ReplicatorBase & { driver: 'mongodb'; config: MongoDbDriverConfig })
  | (ReplicatorBase & { driver: 'bigquery'; config: BigQueryDriverConfig });

export interface ReplicatorPluginOptions {
  /** Default true. */
  enabled?: boolean;
  replicators: ReplicatorConfig[];
  /** Log every outcome through the plugin logger, and the engine's logs from 'debug' (unless `logLevel` is set). Default false. */
  verbose?: boolean;
  /**
   * How much the plugin logs through its logger (s3db.js's pino logger, or `logger`): the
   * engine's retries, circuit transitions, schema sync, outbox replay and compaction, sink
   * warnings, with fields `replicator`, `resource`, `recordId`, `attempt`, `code`, `error`;
   * rate-limited and without secrets. Default 'warn' ('debug' with `verbose: true`).
   */
  logLevel?: ReplicatorLogLevel;
  /** A pino-style logger (`logger.warn(fields, message)`, ...) instead of s3db.js's. */
  logger?: ReplicatorLogger;
  /** Store failed replications in an s3db resource. Default false. */
  persistReplicatorLog?: boolean;
  /** Default 'replicator_log'. */
  replicatorLogResource?: string;
  /** Write failures to the log resource (when persistReplicatorLog). Default true. */
  logErrors?: boolean;
  /** Largest micro-batch per destination write. Default 100. */
  batchSize?: number;
  /** Largest write under a backlog for SQL and MongoDB destinations (one statement per table). Default 2000. */
  bulkBatchSize?: number;
  /** Attempts for a failed write (at least one). Default 3. */
  maxRetries?: number;
  /** Bound of one write attempt and of the drain on stop, in ms. Default 30000. */
  timeout?: number;
  /** Undelivered changes per replicator before writers are slowed down. Default 10000. */
  queueCapacity?: number;
  /** Under load (more than one change waiting), wait this long (ms) after routing before taking the next ones, so batches form; a lone change is sent at once. Default 2. */
  lingerMs?: number;
  /** Ordered lanes per replicator (one record's changes share a lane). Default 4. */
  concurrency?: number;
  /** First backoff delay in ms (doubles per attempt, with jitter). Default 1000. */
  retryDelay?: number;
  /** Backoff cap in ms. Default 30000. */
  maxRetryDelay?: number;
  /**
   * Where accepted changes wait until every destination has them. `false`: memory only.
   * Default: memory for a `memory://` source, else `./.s3db-replicator/<source>-<hash>`.
   */
  outbox?: false | OutboxOptions;
  /**
   * With `outbox.jetstream` (README "Scaling out"): `'publish'` (application instances: publish
   * only), `'deliver'` (what `s3db-replicator worker` runs), `'both'` (the default with
   * JetStream). `'local'` (the default without it): this process's own outbox.
   */
  mode?: 'local' | 'publish' | 'deliver' | 'both';
  /** Per-replicator circuit breaker; `false` = plain retry-then-fail. */
  circuitBreaker?: false | CircuitBreakerOptions;
  /**
   * The built-in Prometheus listener: serves `GET /metrics` from install to `stop()`.
   * Default `false` (off): mount `plugin.metrics()` on your own HTTP server instead.
   */
  metrics?: false | MetricsListenerOptions;
  /** As in the stock plugin: which source resources are followed. */
  resourceFilter?: (resourceName: string) => boolean;
  resourceAllowlist?: string[];
  resourceBlocklist?: string[];
  /** As in the stock plugin: `{ log }` names the log resource. */
  resourceNames?: { log?: string };
  /** Accepted for compatibility with the stock plugin; no effect (see `concurrency`). */
  replicatorConcurrency?: number;
  stopConcurrency?: number;
  [key: string]: unknown;
}

export type ReplicatorLogLevel = 'silent' | 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/** What the plugin calls on its logger: pino's methods, `(fields, message)`. */
export interface ReplicatorLogger {
  error(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  debug(fields: Record<string, unknown>, message: string): void;
  trace(fields: Record<string, unknown>, message: string): void;
  [key: string]: unknown;
}

export interface OutboxOptions {
  /** Directory of the log (one plugin instance per directory). */
  dir?: string;
  /** 'interval' (default): group commit, fsync every fsyncIntervalMs; 'off': leave it to the OS. */
  fsync?: 'interval' | 'off';
  /** Default 20. */
  fsyncIntervalMs?: number;
  /** Segment file size before rotating. Default 16 MiB. */
  segmentBytes?: number;
  /** A NATS JetStream stream shared by many processes instead of the local log (`dir` then only keeps a worker's dead letters). */
  jetstream?: JetStreamOutboxOptions;
}

/** `outbox.jetstream`: every publisher and worker of one stream must agree on `stream`, `subjectPrefix` and `partitions`. */
export interface JetStreamOutboxOptions {
  /** Default 'nats://127.0.0.1:4222' (credentials go in the options below, not here). */
  url?: string;
  /** One way to authenticate, at most: `user` + `password`, `token`, `nkey` or `credsFile`. */
  user?: string;
  password?: string;
  token?: string;
  /** An NKey user seed (`SU...`, as `nk -gen user` prints it); redacted from every error and log. */
  nkey?: string;
  /** A NATS `.creds` file (user JWT + NKey seed, from `nsc generate creds` or Synadia Cloud); relative paths from the working directory. */
  credsFile?: string;
  /** `true`: require TLS, trusting the system's roots. An object: PEM files of a private CA and/or a client certificate (mutual TLS). */
  tls?: boolean | JetStreamTlsOptions;
  /** Default 'S3DB_REPLICATOR' (created when missing). */
  stream?: string;
  /** Subjects are `<subjectPrefix>.<partition>`. Default 's3db-replicator'. */
  subjectPrefix?: string;
  /** A record's changes always go to partition fnv1a(resource, id) % partitions. Default 16. */
  partitions?: number;
  /** Stream and KV replicas. Default 1. */
  replicas?: number;
  /** How long the stream keeps a change. Default 7 days. */
  maxAgeMs?: number;
  /** A worker that stops renewing its partition leases for this long loses them. Default 10000. */
  leaseTtlMs?: number;
  /** How long a write waits for the server before it rejects with ERR_JETSTREAM. Default 30000. */
  publishTimeoutMs?: number;
  /** Publishes awaiting their server ack at once, per process. Default 1024. */
  maxInFlight?: number;
}

export interface JetStreamTlsOptions {
  /** The CA that signed the server's certificate (PEM). */
  ca?: string;
  /** A client certificate and its key (PEM), for servers with `verify: true`: both or neither. */
  cert?: string;
  key?: string;
}

export interface MetricsListenerOptions {
  /** TCP port; 0 picks a free one (see `metricsAddress()`). A port in use fails the installation (ERR_CONFIG, `metrics.port`). */
  port: number;
  /** Interface to listen on. Default '127.0.0.1' (this machine only); '0.0.0.0' for every interface. */
  host?: string;
}

/** Where the built-in listener serves the metrics. */
export interface MetricsAddress {
  host: string;
  port: number;
  /** `http://<host>:<port>/metrics` */
  url: string;
}

/** Labels of one sample: `replicator`, `driver`, `resource`, `state`, as the metric has them. */
export type MetricLabels = Record<string, string>;

export type MetricSample =
  | { labels: MetricLabels; value: number }
  /** A histogram's: cumulative bucket counts, `le` as in the text format ('0.005', '+Inf'). */
  | { labels: MetricLabels; count: number; sum: number; buckets: Array<{ le: string; count: number }> };

/** `plugin.metricsJSON()`: every metric family by name (e.g. `s3db_replicator_changes_delivered_total`). */
export type MetricsJSON = Record<string, { type: 'counter' | 'gauge' | 'histogram'; help: string; samples: MetricSample[] }>;

/** The content type of `plugin.metrics()`: 'text/plain; version=0.0.4; charset=utf-8'. */
export declare const METRICS_CONTENT_TYPE: string;

export interface CircuitBreakerOptions {
  /** Failed writes in a row that open the breaker. Default 5. */
  failureThreshold?: number;
  /** First probe delay in ms; doubles per failed probe. Default 1000. */
  resetTimeout?: number;
  /** Probe delay cap in ms. Default 30000. */
  maxResetTimeout?: number;
  /** How long a change may wait for a destination that is down before it is dead-lettered, ms. Default 600000. */
  holdTimeout?: number;
}

export interface DeadLetter {
  id: number;
  replicator: string;
  resourceName: string;
  destination: string;
  operation: ReplicatorAction;
  recordId: string;
  /** The record as accepted (before any transform). */
  data: Record<string, any>;
  before?: Record<string, any>;
  error: string;
  code: ErrorCode | string;
  attempts: number;
  /** ISO 8601. */
  failedAt: string;
  /** Position of the change in the outbox (orders dead letters of one record). */
  seq: number;
}

export interface OutboxInfo {
  mode: 'disk' | 'memory' | 'jetstream';
  /** 16 hex digits: the first part of every change's identity `{id}:{seq}` (Idempotency-Key, log `change_id`). */
  id: string;
  dir?: string;
  /** Accepted changes not yet settled by every destination (disk mode). */
  pending: number;
  bytes: number;
  segments: number;
  /** Changes replayed from the log at start. */
  replayed: number;
  /** Appends that failed (e.g. disk full): those changes were kept in memory only. */
  appendErrors: number;
  deadLetters: number;
  /** JetStream outbox (modes 'deliver' and 'both'): the partitions this process owns now. */
  partitions?: number[];
}

export type ErrorCode =
  | 'ERR_CONFIG'
  | 'ERR_TRANSFORM'
  | 'ERR_SINK_UNAVAILABLE'
  | 'ERR_SINK_REJECTED'
  | 'ERR_TIMEOUT'
  | 'ERR_STOPPED'
  | 'ERR_INTERNAL'
  | 'ERR_NOT_FOUND'
  | 'ERR_SCHEMA'
  /** The JetStream outbox could not store a change within publishTimeoutMs, or its server was unreachable at install. */
  | 'ERR_JETSTREAM'
  | 'ERR_NOT_INSTALLED'
  | 'ERR_NOT_SUPPORTED'
  | 'ERR_BUSY'
  | 'ERR_SYNC'
  /** No native addon could be loaded for this platform (see the message for how to build or install it). */
  | 'ERR_NATIVE_ADDON';

export declare class ReplicatorError extends Error {
  name: 'ReplicatorError';
  code: ErrorCode | string;
  /** What is wrong and how to fix it. */
  description: string;
  /** Option path, replicator, resource, operation... */
  context: Record<string, unknown>;
}

export interface ReplicatedEvent {
  replicator: string;
  resourceName: string;
  operation: ReplicatorAction;
  recordId: string;
  destination: string;
  /** Milliseconds from the change to the destination's acknowledgement. */
  duration: number;
  attempts: number;
  success: true;
}

/**
 * A change that failed, or (with `resourceName`, `operation` and `recordId` all `null` and
 * `code: 'ERR_SINK_UNAVAILABLE'`) a destination that went down: its changes wait, none failed.
 */
export interface ReplicationErrorEvent {
  replicator: string | null;
  resourceName: string | null;
  operation: ReplicatorAction | 'schemaSync' | null;
  recordId?: string | null;
  /** Error message. */
  error: string;
  code?: ErrorCode;
  attempts: number;
  /** The record as accepted. */
  data?: Record<string, any>;
  /** Set when the change was kept as a dead letter (see retryDeadLetters). */
  deadLetterId?: number;
  /**
   * Set when the change used its retries while its destination is down (`code`
   * `ERR_SINK_UNAVAILABLE`): it is held for redelivery, not lost; a `replicated` event follows
   * once the destination is back (or, after `circuitBreaker.holdTimeout`, a dead-letter error).
   */
  held?: true;
}

export type ReplicatorHealth = 'healthy' | 'degraded' | 'open' | 'half-open' | 'disabled';

export interface NativeReplicatorStats {
  id: string;
  driver: string;
  enabled: boolean;
  received: number;
  delivered: number;
  failed: number;
  skipped: number;
  retried: number;
  /** Failures kept as dead letters. */
  deadLettered: number;
  /** Changes that used their retries while the destination was down, each counted once (held, not lost). */
  held: number;
  batches: number;
  /** Queue depth: accepted and not yet settled. */
  queued: number;
  /** Age of the oldest undelivered change (lag), ms. */
  oldestPendingMs: number;
  health: ReplicatorHealth;
  breaker: { state: 'closed' | 'open' | 'half-open'; consecutiveFailures: number; nextProbeInMs?: number };
  lastError?: string;
  lastSync?: number;
}

export interface ReplicatorInfo {
  id: string;
  driver: string;
  enabled: boolean;
  resources: Array<{ source: string; destination: string; actions: ReplicatorAction[] | null; transform: boolean; shouldReplicate: boolean }>;
  /** The driver configuration with secrets replaced by ***. */
  config: Record<string, unknown>;
}

export interface ReplicatorStats {
  replicators: Array<{ id: string; driver: string; enabled: boolean; health: ReplicatorHealth; status: Omit<NativeReplicatorStats, 'id' | 'driver' | 'enabled'> }>;
  stats: { totalReplications: number; totalErrors: number; totalSkipped: number; lastSync: string | null; pending: number; deadLetters: number };
  outbox: OutboxInfo | null;
  lastSync: string | null;
}

export interface SchemaSyncEvent {
  replicator: string;
  event: 'table_created' | 'table_altered' | 'table_recreated' | 'schema_mismatch';
  tableName: string;
  /** table_created: the columns created. */
  attributes?: string[];
  /** table_altered */
  addedColumns?: string[];
  droppedColumns?: string[];
  /** schema_mismatch (onMismatch: 'warn') */
  message?: string;
}

export interface BatchResult {
  success: boolean;
  total: number;
  successful: number;
  skipped: number;
  errors: Array<{ id: string; replicator: string; error: string; code?: string }>;
}

export type ReplicatorLogStatus = 'error' | 'success' | 'superseded' | 'skipped' | 'failed';

/** An entry of the replication log resource (persistReplicatorLog). */
export interface ReplicatorLogEntry {
  id: string;
  /** Replicator id; 'plugin' for failures tied to no replicator. */
  replicator: string;
  resource: string;
  resourceName: string;
  action: string;
  operation: string;
  recordId?: string;
  destination?: string;
  data: Record<string, any>;
  timestamp: string;
  /** YYYY-MM-DD. */
  createdAt: string;
  status: ReplicatorLogStatus;
  error?: string | null;
  code?: string | null;
  retryCount: number;
  lastAttempt?: string;
  lastSuccessAt?: string;
  deadLetterId?: number;
}

export interface ReplicatorLogQuery {
  resourceName?: string;
  operation?: ActionName;
  status?: ReplicatorLogStatus | string;
  replicator?: string;
  limit?: number;
  offset?: number;
}

export interface RetryFailedResult {
  /** Entries retried. */
  retried: number;
  success: number;
  failed: number;
  superseded: number;
  skipped: number;
}

export interface RetryDeadLettersResult {
  retried: number;
  delivered: number;
  failed: number;
  superseded: number;
  skipped: number;
  errors: Array<{ id: number; recordId: string; replicator: string; error: string; code?: string }>;
}

export interface SyncAllDataOptions {
  /** Ids read per page with resource.getMany (1–10000). Default 100. */
  batchSize?: number;
  /** Pages read at once (1–256). Default 4. */
  concurrency?: number;
  /** Continue an interrupted sync from its checkpoint (disk outbox only). Default true. */
  resume?: boolean;
  /** Called with each progress report (at most every ~250 ms, plus a final one). */
  onProgress?: (progress: SyncProgress) => void;
}

export interface SyncProgress {
  replicatorId: string;
  /** The resource being read. */
  resourceName: string | null;
  /** Records handled, across the replicator's resources (a resumed sync starts at its checkpoint). */
  done: number;
  total: number;
  /** Records per second in this run. */
  rate: number;
  elapsedMs: number;
  /** Estimated time left; null until a rate is known, 0 when done. */
  etaMs: number | null;
}

export interface SyncAllDataResult {
  replicatorId: string;
  /** Records covered, including those an interrupted run had already pushed. */
  total: number;
  synced: number;
  /** Filtered by transform/shouldReplicate/actions, or deleted since they were listed. */
  skipped: number;
  /** Dropped because a live change of the record came after it was read. */
  superseded: number;
  failed: number;
  errors: Array<{ id: string; resourceName: string; error: string; code: string }>;
  resumed: boolean;
  /** Records covered by the interrupted run this one resumed (0 when not resumed). */
  resumedFrom: number;
  durationMs: number;
}

/** `plg:replicator:skipped`: a change not written to one destination. */
export interface SkippedEvent {
  replicator: string;
  resourceName: string;
  destination: string;
  operation: ReplicatorAction;
  recordId: string;
  status: 'skipped';
  /** `'superseded'`: a newer change of the record was accepted, so this older one was not written; absent: dropped by `shouldReplicate`, a null transform or `actions`. */
  reason?: 'superseded';
  /** Milliseconds from acceptance to the decision. */
  duration: number;
  attempts: number;
  /** Set when the change was a dead letter being re-sent. */
  deadLetterId?: number;
  /** Internal tag of a `replicateBatch` call. */
  ticket?: number;
}

/** `plg:replicator:circuit-open`: a destination fails every write; its changes wait, nothing fails. */
export interface CircuitOpenEvent {
  replicator: string;
  state: 'open';
  /** Failed writes in a row that opened the breaker. */
  failures: number;
  /** The last write error. */
  error?: string;
}

/** `plg:replicator:circuit-closed`: the destination is reachable again; waiting changes are delivered. */
export interface CircuitClosedEvent {
  replicator: string;
  state: 'closed';
  downForMs: number;
}

export interface SyncResourceEvent {
  replicatorId: string;
  resourceName: string;
}

export interface SyncCompletedEvent {
  replicatorId: string;
  total: number;
  synced: number;
  skipped: number;
  superseded: number;
  failed: number;
  /** How many records failed (the list is in the syncAllData result). */
  errors: number;
  resumed: boolean;
  durationMs: number;
  stats: ReplicatorPlugin['stats'];
}

export interface TableCreatedEvent {
  replicator: string;
  tableName: string;
  /** The columns created. */
  attributes: string[];
}

export interface TableAlteredEvent {
  replicator: string;
  tableName: string;
  addedColumns: string[];
  droppedColumns: string[];
}

export interface TableRecreatedEvent {
  replicator: string;
  tableName: string;
}

/** A mismatch under `onMismatch: 'warn'`. */
/** Schema sync could not reach the destination; it runs before the first write to the table. */
export interface SchemaSyncDeferredEvent {
  replicator: string;
  tableName: string;
  /** The underlying cause (e.g. `Connection refused`). */
  error: string;
}

/** With a disk outbox, every undelivered change waits for destinations that are down: the process may end. */
export interface KeptEvent {
  waiting: Array<{ replicator: string; queued: number }>;
  /** The outbox directory that keeps them for the next start. */
  dir: string;
}

export interface SchemaMismatchEvent {
  replicator: string;
  tableName: string;
  message: string;
}

export interface SchemaSyncCompletedEvent {
  /** The followed resources whose tables were checked. */
  resources: string[];
  events: SchemaSyncEvent[];
}

/** A failure could not be written to the replication log resource. */
export interface ReplicatorLogErrorEvent {
  replicator: string | null;
  resourceName: string | null;
  recordId: string | null;
  /** Why the log write failed. */
  logError: string;
}

export interface ReplicatorLogResourceCreationErrorEvent {
  /** The log resource's name (`replicatorLogResource`). */
  resourceName: string;
  error: string;
}

/** A destination database the plugin opened could not be disconnected at stop. */
export interface ReplicatorCleanupErrorEvent {
  replicator: string;
  error: string;
}

/** Every event the plugin emits, with its payload. */
export interface ReplicatorPluginEvents {
  'plg:replicator:replicated': ReplicatedEvent;
  'plg:replicator:error': ReplicationErrorEvent;
  /** Same payload as `plg:replicator:error` (the stock plugin's name). */
  replicationError: ReplicationErrorEvent;
  'plg:replicator:skipped': SkippedEvent;
  'plg:replicator:circuit-open': CircuitOpenEvent;
  'plg:replicator:circuit-closed': CircuitClosedEvent;
  'plg:replicator:sync-progress': SyncProgress;
  'plg:replicator:sync-resource': SyncResourceEvent;
  'plg:replicator:sync-completed': SyncCompletedEvent;
  table_created: TableCreatedEvent;
  table_altered: TableAlteredEvent;
  table_recreated: TableRecreatedEvent;
  schema_mismatch: SchemaMismatchEvent;
  schema_sync_deferred: SchemaSyncDeferredEvent;
  schema_sync_completed: SchemaSyncCompletedEvent;
  'plg:replicator:kept': KeptEvent;
  replicator_log_error: ReplicatorLogErrorEvent;
  replicator_log_resource_creation_error: ReplicatorLogResourceCreationErrorEvent;
  replicator_cleanup_error: ReplicatorCleanupErrorEvent;
}

export type ReplicatorEventName = keyof ReplicatorPluginEvents;
/** Any event name except the typed ones (their listeners must take the typed payload). */
export type NotAReplicatorEvent<E> = E extends ReplicatorEventName ? never : E;

export declare class ReplicatorPlugin extends Plugin {
  constructor(options: ReplicatorPluginOptions);
  // Both are set by `db.usePlugin()`. s3db.js 21.6.2 types them `| null` on its Plugin class but
  // `| undefined` on usePlugin()'s parameter, so a plugin typed like its base class cannot be
  // passed to `db.usePlugin()` under `--strict`; declared non-null here, it can.
  instanceName: string;
  cronManager: NonNullable<Plugin['cronManager']>;
  /** Called by `db.usePlugin()` (the parameter is widened for the same reason). */
  install(database: object): Promise<void>;
  stats: { totalReplications: number; totalErrors: number; totalSkipped: number; lastSync: string | null };
  /**
   * Resolves once every change accepted so far is delivered or has failed (events emitted).
   * With the JetStream outbox (modes 'publish' and 'both'): once the workers have settled every
   * change this process published (waits while no worker runs).
   */
  flush(): Promise<void>;
  getReplicatorStats(): Promise<ReplicatorStats>;
  listReplicators(): Promise<ReplicatorInfo[]>;
  disableReplicator(id: string): Promise<void>;
  enableReplicator(id: string): Promise<void>;
  replicateBatch(resourceName: string, records: Array<Record<string, any>>, options?: { replicator?: string }): Promise<BatchResult>;
  /**
   * Copies every existing record of the replicator's resources through the engine (batched,
   * concurrent, alongside live changes, resumable from a checkpoint with a disk outbox).
   * Throws ERR_NOT_FOUND, ERR_CONFIG, ERR_BUSY (already syncing), ERR_SYNC (source unreadable), ERR_STOPPED.
   */
  syncAllData(replicatorId: string, options?: SyncAllDataOptions): Promise<SyncAllDataResult>;
  /** Schema sync of the followed resources' destination tables (SQL drivers with `schemaSync`); call after `resource.updateAttributes()`. */
  syncSchemas(): Promise<SchemaSyncEvent[]>;
  /** Entries of the log resource, newest first. */
  getReplicatorLogs(options?: ReplicatorLogQuery): Promise<ReplicatorLogEntry[]>;
  /** Re-sends each failed log entry only to the replicator that failed it, and marks the entry. */
  retryFailedReplicators(): Promise<RetryFailedResult>;
  /** Dead letters, oldest first. */
  getDeadLetters(options?: { replicator?: string; limit?: number; offset?: number }): Promise<DeadLetter[]>;
  /** Re-sends dead letters to the replicator and destination that failed them; resolves when each is settled. */
  retryDeadLetters(options?: { replicator?: string; ids?: number[] }): Promise<RetryDeadLettersResult>;
  /** Removes dead letters for good; resolves with how many existed. */
  discardDeadLetters(ids: number[]): Promise<number>;
  /** Every metric in the Prometheus text exposition format 0.0.4 (serve with METRICS_CONTENT_TYPE); '' before install. */
  metrics(): string;
  /** The same metrics as an object; {} before install. */
  metricsJSON(): MetricsJSON;
  /** The built-in listener's address (`metrics` option); null when it is off or stopped. */
  metricsAddress(): MetricsAddress | null;

  /** Typed listeners for the events in {@link ReplicatorPluginEvents}; other names stay untyped. */
  on<E extends ReplicatorEventName>(event: E, listener: (payload: ReplicatorPluginEvents[E]) => void): this;
  on<E extends string | symbol>(event: NotAReplicatorEvent<E>, listener: (...args: any[]) => void): this;
  once<E extends ReplicatorEventName>(event: E, listener: (payload: ReplicatorPluginEvents[E]) => void): this;
  once<E extends string | symbol>(event: NotAReplicatorEvent<E>, listener: (...args: any[]) => void): this;
  off<E extends ReplicatorEventName>(event: E, listener: (payload: ReplicatorPluginEvents[E]) => void): this;
  off<E extends string | symbol>(event: NotAReplicatorEvent<E>, listener: (...args: any[]) => void): this;
}

export default ReplicatorPlugin;
