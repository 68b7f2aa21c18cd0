// ReplicatorPlugin: a drop-in replacement for the s3db.js ReplicatorPlugin whose routing,
// queues, per-record ordering, batching, retries and destination drivers run in Rust.
//
// This file is the thin JavaScript side: it hooks resource events, hands each change to the
// engine once (synchronously, as JSON), owns user callbacks and the EventEmitter, and applies
// s3db-destination batches (s3db.js itself is JavaScript).

import { Plugin } from 's3db.js/plugins/plugin.class';

import { ReplicationEngine, checkConfig } from './lib/native.js';
import { createCallbackBridge } from './lib/callbacks.js';
import * as deadLetters from './lib/dead-letters.js';
import { ReplicatorError, configError } from './lib/errors.js';
import { fullSync } from './lib/full-sync.js';
import { openPublisher, publishChange } from './lib/jetstream.js';
import { METRICS_CONTENT_TYPE, startMetricsServer } from './lib/metrics-server.js';
import { engineLogLevel, prepareOptions } from './lib/options.js';
import { resolveOutbox } from './lib/outbox.js';
import { redact, secretsIn, secretsOf } from './lib/redact.js';
import { changePayload } from './lib/records.js';
import * as replicationLog from './lib/replication-log.js';
import { destinationConnectionString, S3dbDestinations } from './lib/s3db-destination.js';
import { startStatusFile } from './lib/status-file.js';

export { METRICS_CONTENT_TYPE, ReplicatorError };

const CHANGE_EVENTS = ['inserted', 'updated', 'deleted'];
const BACKPRESSURE_HOOKS = ['afterInsert', 'afterUpdate', 'afterDelete'];
/** How often a held process checks whether it only waits for destinations that are down. */
const OUTAGE_CHECK_MS = 1000;
/** Events that need each delivered / skipped change (on the plugin, on the database). */
const OUTCOME_EVENTS = ['plg:replicator:replicated', 'plg:replicator:skipped'];
const DATABASE_OUTCOME_EVENTS = ['replicator:success'];

export class ReplicatorPlugin extends Plugin {
  constructor(options = {}) {
    // Before s3db.js's Plugin hands logLevel to its pino logger (which fails without naming it).
    engineLogLevel(options ?? {});
    super(options);
    const {
      enabled = true,
      verbose = false,
      persistReplicatorLog = false,
      resourceNames = {},
      replicatorLogResource = resourceNames?.log ?? 'replicator_log',
      logErrors = true,
    } = options;
    this.config = { enabled, verbose, persistReplicatorLog, replicatorLogResource, logErrors };
    const prepared = prepareOptions(options);
    this._outboxOption = options.outbox;
    // The outbox's default directory depends on the database (known at install); its other
    // settings are checked now, with a stand-in directory.
    const outboxProbe = resolveOutbox(options.outbox, 'file:///check');
    const problem = checkConfig(JSON.stringify({ ...JSON.parse(prepared.json), outbox: outboxProbe }));
    if (problem) throw configError(problem);
    this._prepared = prepared;
    // The options as the engine reads them (functions replaced by { $fn }), parsed once.
    this._native = JSON.parse(prepared.json);
    /** Credential-looking values of the configuration: never in a log line (lib/redact.js). */
    this._secrets = secretsIn(options.replicators);
    this._engine = null;
    // JetStream outbox (README "Scaling out"): 'publish' only publishes, 'deliver' (the worker)
    // only delivers, 'both' does both; 'local' is the process's own outbox.
    this._mode = this._native.mode ?? (this._native.outbox?.jetstream ?? options.outbox?.jetstream ? 'both' : 'local');
    this._publisher = null;
    this._metricsServer = null;
    this._destinations = null;
    this._listeners = new Map(); // resource name → { resource, handlers, hooks }
    this._afterCreateResource = null;
    this._sources = new Set(this._native.replicators.flatMap(sourceNames));
    this._manages = resourceFilter(options);
    this._saturated = false;
    this._keepAlive = null;
    this._holding = false;
    this._batchResults = new Map(); // ticket → outcomes (replicateBatch / syncAllData)
    this._nextTicket = 1;
    this._stopping = null;
    /** Set once stop() has let the last change events in: later ones are not accepted. */
    this._intakeClosed = false;
    this.replicatorLog = null;
    this.stats = { totalReplications: 0, totalErrors: 0, totalSkipped: 0, lastSync: null };
  }

  async onInstall() {
    if (!this.config.enabled) return;
    // s3db.js's disconnect() awaits stop() of the plugins in db.pluginList, which holds only
    // those given to new Database({ plugins }). One added with usePlugin() joins them, so that
    // db.disconnect() drains and stops it too instead of leaving its outbox thread running.
    const list = this.database?.pluginList;
    if (Array.isArray(list) && !list.includes(this)) list.push(this);
    const { functions, clients } = this._prepared;
    const native = this._native;
    native.outbox = resolveOutbox(this._outboxOption, this.database?.connectionString);
    for (const s of secretsOf(this.database?.connectionString)) this._secrets.add(s);
    const jetstream = native.outbox?.jetstream;
    if (jetstream) {
      for (const s of [jetstream.password, jetstream.token, jetstream.nkey, ...secretsOf(jetstream.url)]) if (typeof s === 'string' && s) this._secrets.add(s);
    }
    if (this._mode === 'publish' || this._mode === 'both') {
      this._publisher = await openPublisher(native.outbox.jetstream);
    }
    if (this._mode === 'publish') {
      // Nothing is delivered here: no engine, no destination connections.
      this._followAll();
      this._watchCreatedResources();
      return;
    }
    this._destinations = new S3dbDestinations({ sourceDb: () => this.database });
    this._engine = new ReplicationEngine(
      JSON.stringify(native),
      createCallbackBridge(functions),
      (batch) => this._destinations.deliver(batch),
      (message) => this._onEngineMessage(message),
    );
    this._watchListeners();
    // The outbox thread records delivered changes within one fsync interval; a process that
    // ends sooner (a script that inserts and exits) records them here, so they are not
    // replayed at the next start.
    this._onExit = () => {
      try {
        this._engine?.checkpoint();
      } catch {
        // Nothing to do at exit: the changes are replayed, and writes are idempotent.
      }
      this._statusFile?.exitSync();
    };
    process.once('exit', this._onExit);
    // Changes accepted before a crash are being replayed: keep the process up until delivered.
    const { replayed, mode } = this._engine.outbox();
    this._durable = mode === 'disk';
    // What `npx s3db-replicator status` reads (a disk outbox only: it is where the CLI looks).
    if (this._durable) this._statusFile = startStatusFile(this, this._engine.outbox().dir);
    // (The engine logs the replay itself, at info.)
    if (replayed > 0) this._holdOpen();
    const infos = this._engine.replicators();
    native.replicators.forEach((rep, index) => {
      if (rep.driver !== 's3db') return;
      this._destinations.add(infos[index].id, {
        connectionString: rep.config.connectionString && destinationConnectionString(rep.config.connectionString, rep.config.endpoint),
        client: clients.get(index),
        region: rep.config.region,
        keyPrefix: rep.config.keyPrefix,
        createResources: rep.config.createResources,
        logLevel: rep.config.logLevel,
      });
    });
    // Connect destinations now (a failure only warns: deliveries retry the connection).
    await Promise.all([...this._destinations.targets.entries()].map(([id, target]) => target.connect().catch((error) => {
      this._logLine('warn', { replicator: id, error: target.describe?.(error) ?? error.message }, 'ReplicatorPlugin: destination not reachable yet; will retry');
    })));
    if (this.config.persistReplicatorLog) await this._ensureLogResource();
    this._followAll();
    // Schema sync (SQL drivers): a mismatch with onMismatch 'error' stops the installation,
    // and a plugin that failed to install leaves nothing running behind.
    try {
      await this.syncSchemas();
      if (native.metrics) this._metricsServer = await startMetricsServer(native.metrics, () => this.metrics());
    } catch (error) {
      await this._shutdown();
      throw error;
    }
    this._watchCreatedResources();
  }

  _watchCreatedResources() {
    const delivers = this._mode !== 'publish';
    this._afterCreateResource = async (event) => {
      const resource = event?.resource ?? event;
      this._follow(resource);
      if (delivers && this._listeners.has(resource?.name)) {
        await this._syncSchema(resource).catch((error) => this._schemaError(resource.name, error));
      }
    };
    this.database.addHook('afterCreateResource', this._afterCreateResource);
    // With `new Database({ plugins })` the plugin is installed before saved resources load.
    this._onConnected = () => {
      this._followAll();
      if (delivers) this.syncSchemas().catch((error) => this._schemaError(error.context?.resourceName ?? null, error));
    };
    this.database.on('db:connected', this._onConnected);
  }

  async onStop() {
    await this._shutdown();
  }

  async onUninstall() {
    await this._shutdown();
  }

  // ---- public API (the spec's methods) ----

  /** Resolves once every change accepted so far is delivered or has failed. */
  async flush() {
    // s3db.js emits change events with setImmediate: let those of writes that already
    // resolved reach the engine before taking the flush snapshot.
    await new Promise((resolve) => setImmediate(resolve));
    // JetStream outbox: what this process published is done once the workers (this one too,
    // in mode 'both') have committed past it; then this engine's own deliveries are settled.
    if (this._publisher && !this._stopping) await this._publisher.settled();
    if (this._engine && !this._stopping) await this._engine.flush();
  }

  /**
   * Per replicator: queue depth (`queued`), lag (`oldestPendingMs`), delivered / retried /
   * deadLettered / failed / skipped counts and `health` (circuit breaker state); plus the
   * plugin's totals and the outbox (where accepted changes wait, dead letters).
   */
  async getReplicatorStats() {
    return this._statsNow();
  }

  /** getReplicatorStats(), synchronously (the status file writes it as the process exits). */
  _statsNow() {
    const native = this._engine?.stats() ?? [];
    const pending = this._engine?.pending() ?? 0;
    const outbox = this._engine?.outbox() ?? null;
    return {
      replicators: native.map(({ id, driver, enabled, ...status }) => ({ id, driver, enabled, health: status.health, status })),
      stats: { ...this.stats, pending, deadLetters: outbox?.deadLetters ?? 0 },
      outbox,
      lastSync: this.stats.lastSync,
    };
  }

  /**
   * Every metric in the Prometheus text exposition format (0.0.4): serve it at /metrics with
   * the content type METRICS_CONTENT_TYPE. Synchronous and cheap; '' before install.
   */
  metrics() {
    return this._engine?.metricsText() ?? '';
  }

  /**
   * The same metrics as an object, `{ [name]: { type, help, samples } }`: a counter's or
   * gauge's sample is `{ labels, value }`, a histogram's `{ labels, count, sum, buckets:
   * [{ le, count }] }` (cumulative, `le` as in the text: '0.005', '+Inf'). {} before install.
   */
  metricsJSON() {
    return this._engine?.metricsJson() ?? {};
  }

  /** Where the built-in listener (`metrics` option) serves /metrics; null when it is off. */
  metricsAddress() {
    return this._metricsServer ? { ...this._metricsServer.address } : null;
  }

  async listReplicators() {
    return this._engine?.replicators() ?? [];
  }

  async disableReplicator(id) {
    this._setEnabled(id, false);
  }

  async enableReplicator(id) {
    this._setEnabled(id, true);
  }

  /**
   * Replicates records of a resource as inserts (to every replicator that wants them, or to
   * one with `{ replicator: id }`) and resolves when each has been delivered or has failed.
   */
  async replicateBatch(resourceName, records, { replicator } = {}) {
    if (!Array.isArray(records)) {
      throw new ReplicatorError('replicateBatch() needs an array of records', {
        code: 'ERR_CONFIG',
        description: 'Call replicateBatch(resourceName, [{ id, ...fields }, ...]).',
        context: { operation: 'replicateBatch', resourceName },
      });
    }
    const engine = this._requireEngine('replicateBatch');
    if (replicator !== undefined) this._requireReplicator(replicator, 'replicateBatch');
    const ticket = this._nextTicket++;
    const outcomes = [];
    this._batchResults.set(ticket, outcomes);
    try {
      for (const record of records) {
        const saturated = engine.pushTo(resourceName, 'inserted', JSON.stringify(record), replicator ?? null, ticket);
        if (saturated) await engine.waitForCapacity();
      }
      if (records.length > 0) this._holdOpen();
      await this._settle();
    } finally {
      this._batchResults.delete(ticket);
    }
    const errors = outcomes
      .filter((o) => o.status === 'failed')
      .map((o) => ({ id: o.recordId, replicator: o.replicator, error: o.error, code: o.code }));
    const successful = outcomes.filter((o) => o.status === 'replicated').length;
    return { success: errors.length === 0, total: records.length, successful, skipped: outcomes.filter((o) => o.status === 'skipped').length, errors };
  }

  /**
   * Copies every existing record of the replicator's source resources through the engine
   * (batched, concurrent, resumable, alongside live changes): see lib/full-sync.js.
   * @param {string} replicatorId
   * @param {{ batchSize?: number, concurrency?: number, resume?: boolean, onProgress?: (p: object) => void }} [options]
   */
  async syncAllData(replicatorId, options) {
    return fullSync(this, replicatorId, options);
  }

  /**
   * Entries of the replication log (persistReplicatorLog), newest first, filtered by
   * resourceName / operation / status / replicator; [] without a log resource.
   */
  async getReplicatorLogs(options = {}) {
    return replicationLog.getReplicatorLogs(this, options);
  }

  /**
   * Re-sends each failed log entry to the replicator that failed it (its dead letter when the
   * engine still has it, else the record's current state) and marks the entry with the outcome.
   */
  async retryFailedReplicators() {
    return replicationLog.retryFailedReplicators(this);
  }

  /** Dead letters (changes a destination failed for good), oldest first. */
  async getDeadLetters(options = {}) {
    return deadLetters.getDeadLetters(this, options);
  }

  /** Re-sends dead letters to the replicator that failed them; resolves when each is settled. */
  async retryDeadLetters(options = {}) {
    return deadLetters.retryDeadLetters(this, options);
  }

  /** Removes dead letters; resolves with how many existed. */
  async discardDeadLetters(ids) {
    return deadLetters.discardDeadLetters(this, ids);
  }

  /**
   * Creates or alters destination tables from the followed resources' attributes (drivers
   * with `schemaSync`). Runs at install and for resources created later; call it again after
   * `resource.updateAttributes(...)` to add new columns.
   */
  async syncSchemas() {
    if (!this._engine) return [];
    const names = [];
    const events = [];
    for (const { resource } of this._listeners.values()) {
      events.push(...(await this._syncSchema(resource)));
      names.push(resource.name);
    }
    if (events.length > 0 || names.length > 0) this.emit('schema_sync_completed', { resources: names, events });
    return events;
  }

  async _syncSchema(resource) {
    const { events, error } = await this._engine.syncSchema(resource.name, JSON.stringify(resource.attributes ?? {}));
    if (error) {
      throw new ReplicatorError(`Schema sync failed for resource '${resource.name}': ${error.message}`, {
        code: error.code,
        description: `${error.message}\nHow to fix: align the destination table with the resource, or change schemaSync (strategy, onMismatch) in the replicator's config.`,
        context: { resourceName: resource.name, replicator: error.replicator, operation: 'schemaSync' },
      });
    }
    for (const { event, ...payload } of events) {
      if (event === 'schema_sync_deferred') {
        this._logLine('warn', { replicator: payload.replicator, table: payload.tableName, error: payload.error }, `ReplicatorPlugin: schema sync of '${payload.tableName}' waits for its destination (${payload.error}); it runs before the first write`);
      }
      this.emit(event, payload);
    }
    return events;
  }

  _schemaError(resourceName, error) {
    this._report({ replicator: null, resourceName, operation: 'schemaSync', error: error.message, code: error.code ?? 'ERR_SCHEMA' });
  }

  // ---- resource listeners ----

  _followAll() {
    for (const resource of Object.values(this.database?.resources ?? {})) this._follow(resource);
  }

  _follow(resource) {
    // A worker follows no resource of its own: its changes come from the stream.
    if (this._mode === 'deliver') return;
    if (this._publisher) return this._followForPublishing(resource);
    if (!resource?.name || !this._sources.has(resource.name) || this._listeners.has(resource.name)) return;
    if (!this._manages(resource.name)) return;
    if (resource.name === this.config.replicatorLogResource) return;
    const name = resource.name;
    const handlers = {
      inserted: (data) => this._push(name, 'inserted', data, changePayload(data, false)),
      updated: (data) => this._push(name, 'updated', data, changePayload(data, true)),
      deleted: (data) => this._push(name, 'deleted', data, changePayload(data, false)),
    };
    // First in line: s3db.js emits events on a later tick and awaits listeners one by one, so
    // a slow user listener registered earlier must not delay the hand-over to the engine.
    for (const event of CHANGE_EVENTS) {
      if (typeof resource.prependListener === 'function') resource.prependListener(event, handlers[event]);
      else resource.on(event, handlers[event]);
    }
    // s3db.js does not await event listeners, but it awaits after* hooks: when the engine is
    // over queueCapacity, the next write waits there, so memory stays bounded and nothing drops.
    const hook = (data) => (this._saturated ? this._waitForCapacity().then(() => data) : data);
    const hooks = BACKPRESSURE_HOOKS.filter((event) => Array.isArray(resource.hooks?.[event]) && typeof resource.addHook === 'function');
    for (const event of hooks) resource.addHook(event, hook);
    this._listeners.set(name, { resource, handlers, hook, hooks });
  }

  /**
   * Modes 'publish' / 'both': the after* hooks publish the change and s3db.js awaits them, so
   * the write resolves only once JetStream has stored it (or rejects with ERR_JETSTREAM).
   */
  _followForPublishing(resource) {
    if (!resource?.name || !this._sources.has(resource.name) || this._listeners.has(resource.name)) return;
    if (!this._manages(resource.name)) return;
    if (typeof resource.addHook !== 'function') return;
    const name = resource.name;
    const ops = { afterInsert: 'inserted', afterUpdate: 'updated', afterDelete: 'deleted' };
    const publishers = {};
    for (const [event, op] of Object.entries(ops)) {
      publishers[event] = async (data) => {
        if (this._intakeClosed || !this._publisher) return data;
        await publishChange(this._publisher, name, op, changePayload(data, false));
        return data;
      };
      resource.addHook(event, publishers[event]);
    }
    this._listeners.set(name, { resource, handlers: {}, hook: null, hooks: [], publishers });
  }

  _push(resourceName, op, data, payload) {
    if (!this._engine || this._intakeClosed) return;
    try {
      this._saturated = this._engine.push(resourceName, op, JSON.stringify(payload));
      this._holdOpen();
    } catch (error) {
      this._report({
        replicator: null, resourceName, operation: op, recordId: data?.id,
        error: `could not accept the change: ${error.message}`, code: 'ERR_CONFIG', data,
      });
    }
  }

  async _waitForCapacity() {
    if (!this._engine) return;
    await this._engine.waitForCapacity();
    this._saturated = this._engine.saturated();
  }

  _unfollowAll() {
    for (const { resource, handlers, hook, hooks, publishers } of this._listeners.values()) {
      for (const [event, fn] of Object.entries(publishers ?? {})) {
        const list = resource.hooks?.[event];
        const at = Array.isArray(list) ? list.findIndex((h) => h === fn || h.__s3db_original === fn) : -1;
        if (at >= 0) list.splice(at, 1);
      }
      for (const event of CHANGE_EVENTS) if (handlers[event]) resource.off(event, handlers[event]);
      for (const event of hooks) {
        const list = resource.hooks?.[event];
        if (!Array.isArray(list)) continue;
        const at = list.findIndex((h) => h === hook || h.__s3db_original === hook);
        if (at >= 0) list.splice(at, 1);
      }
    }
    this._listeners.clear();
    if (this._afterCreateResource && this.database?.removeHook) {
      this.database.removeHook('afterCreateResource', this._afterCreateResource);
    }
    this._afterCreateResource = null;
    if (this._onConnected) this.database?.off?.('db:connected', this._onConnected);
    this._onConnected = null;
  }

  // ---- engine messages ----

  _onEngineMessage(message) {
    const { outcomes, pending, circuit, held, logs, replicated, skipped } = JSON.parse(message);
    if (logs) return this._log(logs);
    if (circuit) return this._circuit(circuit);
    if (held) return this._held(held);
    if (!outcomes) return; // a barrier from flush()
    // Changes nobody listens for one by one arrive as counts (see _watchListeners).
    if (replicated) this.stats.totalReplications += replicated;
    if (skipped) this.stats.totalSkipped += skipped;
    for (const outcome of outcomes) {
      if (outcome.ticket !== undefined) this._batchResults.get(outcome.ticket)?.push(outcome);
      if (outcome.status === 'replicated') this._replicated(outcome);
      else if (outcome.status === 'failed') this._report(outcome);
      else {
        this.stats.totalSkipped++;
        if (this.listenerCount('plg:replicator:skipped') > 0) this.emit('plg:replicator:skipped', outcome);
      }
    }
    // The message may be older than changes pushed since it was sent: ask the engine now.
    if (pending === 0 && this._engine?.pending() === 0) this._release();
  }

  /**
   * The engine's log lines (already filtered by logLevel and rate-limited in Rust), written as
   * `logger[level](fields, message)` with every credential of the configuration redacted. A
   * logger that throws must not take the engine's message channel down.
   */
  _log(records) {
    for (const { level, message, fields } of records) this._logLine(level, fields, message);
  }

  /** Every line the plugin logs: its top-level strings redacted; a logger that throws is ignored. */
  _logLine(level, fields, message) {
    const logger = this.logger;
    const write = logger?.[level];
    if (typeof write !== 'function') return;
    const clean = {};
    for (const [key, value] of Object.entries(fields)) clean[key] = typeof value === 'string' ? redact(value, this._secrets) : value;
    try {
      write.call(logger, clean, redact(message, this._secrets));
    } catch {
      // A broken logger loses this line, nothing else.
    }
  }

  /** A destination went down (its changes wait, nothing fails) or came back; the engine logs it. */
  _circuit(c) {
    if (c.state === 'open') {
      this.emit('plg:replicator:circuit-open', c);
      // An outage is an error a listener must hear of, though no change has failed (yet).
      const event = {
        replicator: c.replicator, resourceName: null, operation: null, recordId: null,
        error: `destination of '${c.replicator}' is down: ${c.error}`, code: 'ERR_SINK_UNAVAILABLE', attempts: c.failures ?? 0,
      };
      if (this.listenerCount('plg:replicator:error') > 0) this.emit('plg:replicator:error', event);
      if (this.listenerCount('replicationError') > 0) this.emit('replicationError', event);
    } else {
      this.emit('plg:replicator:circuit-closed', c);
    }
  }

  /**
   * Changes that used their retry budget while their destination is down: reported on the
   * spec's error channel, once each, saying they are held for redelivery (not failed, not
   * dead-lettered: they are delivered when the destination is back, then `replicated` follows).
   */
  _held(changes) {
    for (const h of changes) {
      this.stats.totalErrors++;
      const event = {
        replicator: h.replicator, resourceName: h.resourceName, operation: h.operation, recordId: h.recordId,
        error: `${h.error} (held for redelivery: the change waits for the destination and is not lost)`,
        code: 'ERR_SINK_UNAVAILABLE', attempts: h.attempts, data: h.data, held: true,
      };
      if (this.listenerCount('plg:replicator:error') > 0) this.emit('plg:replicator:error', event);
      if (this.listenerCount('replicationError') > 0) this.emit('replicationError', event);
    }
  }

  _replicated(o) {
    this.stats.totalReplications++;
    if (this.listenerCount('plg:replicator:replicated') > 0) {
      this.emit('plg:replicator:replicated', {
        replicator: o.replicator, resourceName: o.resourceName, operation: o.operation, recordId: o.recordId,
        destination: o.destination, duration: o.duration, attempts: o.attempts, success: true,
      });
    }
    if (this.database?.listenerCount?.('replicator:success') > 0) {
      this.database.emit('replicator:success', {
        replicator: o.replicator, resource: o.resourceName, destination: o.destination, operation: o.operation, recordId: o.recordId,
      });
    }
    if (this.config.verbose) this._logLine('info', { ...o }, `replicated ${o.operation} ${o.resourceName}/${o.recordId} via ${o.replicator}`);
  }

  _report(o) {
    this.stats.totalErrors++;
    const event = {
      replicator: o.replicator, resourceName: o.resourceName, operation: o.operation, recordId: o.recordId,
      error: o.error, code: o.code, attempts: o.attempts ?? 0, data: o.data,
      // Kept as a dead letter (persisted with a disk outbox): retryDeadLetters() re-sends it.
      ...(o.deadLetterId !== undefined ? { deadLetterId: o.deadLetterId } : {}),
    };
    if (this.listenerCount('plg:replicator:error') > 0) this.emit('plg:replicator:error', event);
    if (this.listenerCount('replicationError') > 0) this.emit('replicationError', event);
    if (this.database?.listenerCount?.('replicator:error') > 0) {
      const error = new ReplicatorError(o.error, { code: o.code, context: { replicator: o.replicator, resourceName: o.resourceName, operation: o.operation, recordId: o.recordId } });
      this.database.emit('replicator:error', { error, resource: o.resourceName, data: o.data, replicator: o.replicator, operation: o.operation, recordId: o.recordId });
    }
    if (this.config.verbose) this._logLine('warn', { replicator: o.replicator, recordId: o.recordId, code: o.code }, o.error);
    if (this.replicatorLog && this.config.logErrors) this._logFailure(event, o);
  }

  // ---- replication log (persistReplicatorLog) ----

  async _ensureLogResource() {
    this._replicationLog = await replicationLog.createReplicationLog(this);
    this.replicatorLog = this._replicationLog?.resource ?? null;
  }

  /** Queues a log entry for a failure (background write; never throws, never waits). */
  _logFailure(event, outcome = {}) {
    this._replicationLog?.recordFailure(event, outcome);
  }

  // ---- lifecycle helpers ----

  /**
   * The engine reports a delivered or skipped change one by one only while something wants
   * it (a listener, `verbose`); otherwise it sends counts, which is all the totals need and
   * saves the application's thread the parsing. Kept up to date as listeners come and go.
   */
  _watchListeners() {
    const watched = [[this, OUTCOME_EVENTS], [this.database, DATABASE_OUTCOME_EVENTS]].filter(([emitter]) => typeof emitter?.on === 'function');
    const update = (adding) => {
      const wants = (emitter, event) => (emitter?.listenerCount?.(event) ?? 0) + (adding?.emitter === emitter && adding.event === event ? 1 : 0) > 0;
      const replicated = this.config.verbose || wants(this, 'plg:replicator:replicated') || wants(this.database, 'replicator:success');
      this._engine?.setOutcomeDetail(replicated, wants(this, 'plg:replicator:skipped'));
    };
    const handlers = watched.map(([emitter, events]) => {
      // 'newListener' fires before the listener is added, 'removeListener' after it is gone.
      const added = (event) => events.includes(event) && update({ emitter, event });
      const removed = (event) => events.includes(event) && update();
      emitter.on('newListener', added);
      emitter.on('removeListener', removed);
      return () => {
        emitter.off('newListener', added);
        emitter.off('removeListener', removed);
      };
    });
    update();
    this._unwatchListeners = () => handlers.forEach((off) => off());
  }

  /**
   * Keeps the process alive while changes are undelivered (the engine's handles are weak).
   * With the outbox on disk it does not wait for a destination that is down: once every
   * undelivered change waits for one, the process may end (they are delivered after the
   * next start), with a warning naming what is kept.
   */
  _holdOpen() {
    if (this._holding) return;
    this._holding = true;
    // One timer for the plugin's life, ref'd while busy and unref'd when idle: creating and
    // clearing a timer at every idle → busy transition costs the application's thread.
    if (!this._keepAlive) {
      this._keepAlive = setInterval(() => {
        if (this._holding && this._durable) this._releaseIfOnlyOutage();
      }, OUTAGE_CHECK_MS);
    } else {
      this._keepAlive.ref();
    }
  }

  _releaseIfOnlyOutage() {
    const waiting = this._engine?.waitingOnOutage();
    if (!waiting) return;
    this._release();
    const what = waiting.map((w) => `${w.queued} for '${w.replicator}'`).join(', ');
    this._logLine('warn', { waiting, dir: this._engine.outbox().dir }, `ReplicatorPlugin: destinations are down; undelivered changes (${what}) are kept in the outbox and delivered when they are back or after the next start`);
    this.emit('plg:replicator:kept', { waiting, dir: this._engine.outbox().dir });
  }

  /**
   * engine.flush(), then lets the process go when nothing is left: the outcome message that
   * reported the engine idle may have come before this caller's _holdOpen().
   */
  async _settle() {
    await this._engine.flush();
    if (this._engine.pending() === 0) this._release();
  }

  _release() {
    if (!this._holding) return;
    this._holding = false;
    this._keepAlive?.unref();
  }

  _shutdown() {
    if (!this._stopping) {
      this._stopping = (async () => {
        // s3db.js hands a write's change event to listeners on the tick after the write
        // resolved (setImmediate): a change whose insert()/update()/delete() resolved before
        // stop() was called is still on its way. Those callbacks are queued before this one,
        // and ours runs first in each, so one turn lets every one of them in.
        await new Promise((resolve) => setImmediate(resolve));
        this._intakeClosed = true;
        this._unfollowAll();
        if (this._onExit) process.off('exit', this._onExit);
        // Publishes awaited by writes already in flight finish first (close() flushes them).
        await this._publisher?.close();
        if (this._engine) {
          const report = await this._engine.stop(this._native.timeout);
          if (!report.drained) this._logLine('warn', { abandoned: report.abandoned }, 'ReplicatorPlugin stopped before every change was delivered');
        }
        // Failures reported during the drain are still being written to the log resource.
        await this._replicationLog?.idle?.().catch(() => {});
        await this._statusFile?.stop();
        this._release();
        clearInterval(this._keepAlive);
        this._keepAlive = null;
        this._unwatchListeners?.();
        await this._metricsServer?.close();
        this._metricsServer = null;
        await this._destinations?.close((replicator, error) => {
          this.emit('replicator_cleanup_error', { replicator, error: error.message });
        });
      })();
    }
    return this._stopping;
  }

  _requireEngine(operation) {
    if (this._mode === 'publish' && !this._stopping) {
      throw new ReplicatorError(`ReplicatorPlugin: ${operation}() delivers, and mode 'publish' delivers nothing`, {
        code: 'ERR_NOT_SUPPORTED',
        description: "In mode 'publish' changes go to JetStream and the workers deliver them. Call it in a process with mode 'both', or in a worker (s3db-replicator worker --config ...).",
        context: { operation, mode: this._mode },
      });
    }
    if (!this._engine || this._stopping) {
      throw new ReplicatorError('ReplicatorPlugin is not running', {
        code: this._stopping ? 'ERR_STOPPED' : 'ERR_NOT_INSTALLED',
        description: 'Install the plugin with db.usePlugin(plugin) (and do not call it after stop()).',
        context: { operation },
      });
    }
    return this._engine;
  }

  _requireReplicator(id, operation) {
    const engine = this._requireEngine(operation);
    const info = engine.replicators().find((r) => r.id === id);
    if (!info) {
      const available = engine.replicators().map((r) => r.id);
      throw new ReplicatorError(`Replicator not found: ${id}`, {
        code: 'ERR_NOT_FOUND',
        description: `No replicator has the id '${id}'. Available: ${available.join(', ')}. Use listReplicators() to see them.`,
        context: { operation, replicatorId: id, availableReplicators: available },
      });
    }
    return info;
  }

  _setEnabled(id, enabled) {
    this._requireReplicator(id, enabled ? 'enableReplicator' : 'disableReplicator');
    this._engine.setEnabled(id, enabled);
  }
}

/**
 * The stock plugin's resource filter options: `resourceFilter(name)`, or `resourceAllowlist` /
 * `resourceBlocklist` arrays. A filter that throws lets the resource through, as stock does.
 */
function resourceFilter({ resourceFilter: filter, resourceAllowlist: allow, resourceBlocklist: block }) {
  if (typeof filter === 'function') {
    return (name) => {
      try {
        return Boolean(filter(name));
      } catch {
        return true;
      }
    };
  }
  const allowed = Array.isArray(allow) && allow.length > 0 ? new Set(allow) : null;
  const blocked = Array.isArray(block) ? new Set(block) : null;
  return (name) => (!allowed || allowed.has(name)) && !blocked?.has(name);
}

function sourceNames(rep) {
  const { resources } = rep;
  if (Array.isArray(resources)) return resources.filter((r) => typeof r === 'string');
  return resources && typeof resources === 'object' ? Object.keys(resources) : [];
}

export default ReplicatorPlugin;
