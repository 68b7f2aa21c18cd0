// The replication log (persistReplicatorLog): failed replications kept as entries of an s3db
// resource of the source database (default name 'replicator_log'), listed with
// getReplicatorLogs() and re-sent with retryFailedReplicators().
//
// What is logged: every failure a replicator reports (status 'error'), when persistReplicatorLog
// and logErrors are on. Successes are not logged (that would cost one s3db write per change);
// retryFailedReplicators() updates the entries it retries ('success', 'error', 'superseded',
// 'skipped'). Log writes run in the background, a few at a time: they never hold replication
// back and never throw into the host; a write that fails emits 'replicator_log_error'.
//
// Entry ids are time-ordered (newest first in key order), so listing the resource lists the
// newest entries first and a query stops reading as soon as it has the page it was asked for.

import { messageOf } from './callbacks.js';
import { deadLetterIndex, checkPaging, withTicket } from './dead-letters.js';
import { ReplicatorError } from './errors.js';
import { recordFields } from './records.js';

export const LOG_ATTRIBUTES = {
  replicator: 'string',
  resource: 'string|optional',
  resourceName: 'string|optional',
  action: 'string|optional',
  operation: 'string|optional',
  recordId: 'string|optional',
  destination: 'string|optional',
  data: 'json|optional',
  timestamp: 'string',
  createdAt: 'string|optional',
  status: 'string',
  error: 'string|optional',
  code: 'string|optional',
  retryCount: 'number|optional',
  lastAttempt: 'string|optional',
  lastSuccessAt: 'string|optional',
  deadLetterId: 'number|optional',
};

const WRITE_CONCURRENCY = 4;
const MAX_KNOWN_DEAD_LETTERS = 100_000;
const MAX_QUEUED_WRITES = 10_000;
const ID_PAGE = 1000;
const READ_CHUNK = 100;
const CHANGE_OPS = new Set(['inserted', 'updated', 'deleted']);
const OP_ALIASES = { insert: 'inserted', update: 'updated', delete: 'deleted' };
// The stock plugin writes status 'failed'; the spec's docs query status 'error'. Same thing.
const FAILED = new Set(['error', 'failed']);

/**
 * Creates (or reuses) the log resource. Returns a ReplicationLog, or null when the resource could
 * not be created ('replicator_log_resource_creation_error' is emitted, replication goes on).
 */
export async function createReplicationLog(plugin) {
  const name = plugin.config.replicatorLogResource;
  const db = plugin.database;
  try {
    const existing = db.resources?.[name];
    if (existing) return new ReplicationLog(plugin, withLogAttributes(existing));
    const resource = await db.createResource({ name, attributes: LOG_ATTRIBUTES, behavior: 'body-overflow', timestamps: false });
    return new ReplicationLog(plugin, resource);
  } catch (error) {
    const existing = db.resources?.[name];
    if (existing) return new ReplicationLog(plugin, withLogAttributes(existing));
    safeEmit(plugin, 'replicator_log_resource_creation_error', { resourceName: name, error: messageOf(error) });
    plugin.logger?.warn?.({ resourceName: name, error: messageOf(error) }, 'ReplicatorPlugin: could not create the replication log resource; failures will not be persisted');
    return null;
  }
}

/**
 * An existing log resource (e.g. one the stock plugin created) keeps its definition; attributes
 * it lacks (recordId, code, deadLetterId, ...) are added in memory, after its own, so its stored
 * entries read as before and new entries keep every field (s3db.js would otherwise store unknown
 * fields as lower-cased strings).
 */
function withLogAttributes(resource) {
  const current = resource.attributes ?? {};
  const missing = Object.entries(LOG_ATTRIBUTES).filter(([key]) => !(key in current));
  if (missing.length > 0 && typeof resource.updateAttributes === 'function') {
    resource.updateAttributes({ ...current, ...Object.fromEntries(missing) });
  }
  return resource;
}

export class ReplicationLog {
  constructor(plugin, resource) {
    this.plugin = plugin;
    this.resource = resource;
    /** Tickets of retries in progress: their failures update entries instead of adding new ones. */
    this.retryTickets = new Set();
    this.queue = [];
    this.active = 0;
    this.unsettled = new Set(); // one promise per queued or running write
    this.retrying = null;
    // Dead letters created while this engine runs (id → record key), and those the user
    // discarded: a known dead letter that vanished without being discarded was dropped by the
    // engine because a newer change of its record reached the destination (superseded).
    this.knownDeadLetters = new Map();
    this.discarded = new Set();
  }

  // ---- writing ----

  /** Queues an entry for a reported failure (never throws, never waits). */
  recordFailure(event, outcome = {}) {
    try {
      if (Number.isInteger(outcome.deadLetterId)) this.remember(outcome);
      if (outcome.ticket !== undefined && this.retryTickets.has(outcome.ticket)) return;
      // With an outbox on disk, a change cut off by stop() is replayed on the next start: not a failure.
      if (outcome.code === 'ERR_STOPPED' && this.outboxOnDisk()) return;
      const entry = newEntry(event, outcome);
      this.enqueue(() => this.resource.insert(entry), event);
    } catch (error) {
      this.writeFailed(event, error);
    }
  }

  remember(outcome) {
    const { knownDeadLetters } = this;
    if (knownDeadLetters.size >= MAX_KNOWN_DEAD_LETTERS) knownDeadLetters.delete(knownDeadLetters.keys().next().value);
    knownDeadLetters.set(outcome.deadLetterId, letterKey(outcome.replicator, outcome.resourceName, outcome.recordId, outcome.destination));
  }

  /** discardDeadLetters(ids) went through the plugin. */
  discardedDeadLetters(ids) {
    for (const id of ids) this.discarded.add(id);
  }

  outboxOnDisk() {
    try {
      return this.plugin._engine?.outbox?.()?.mode === 'disk';
    } catch {
      return false;
    }
  }

  /** Returns false when the write was dropped (too many waiting; 'replicator_log_error' emitted). */
  enqueue(write, about) {
    if (this.queue.length >= MAX_QUEUED_WRITES) {
      this.writeFailed(about, new Error(`${MAX_QUEUED_WRITES} log writes are already waiting; this one was dropped`));
      return false;
    }
    let done;
    const settled = new Promise((resolve) => (done = resolve));
    this.unsettled.add(settled);
    this.queue.push({ write, about, done: () => (this.unsettled.delete(settled), done()) });
    this.pump();
    return true;
  }

  pump() {
    while (this.active < WRITE_CONCURRENCY && this.queue.length > 0) {
      const { write, about, done } = this.queue.shift();
      this.active++;
      Promise.resolve()
        .then(write)
        .catch((error) => this.writeFailed(about, error))
        .finally(() => {
          this.active--;
          done();
          this.pump();
        });
    }
  }

  /** Resolves once the log writes queued so far have finished (later ones are not waited for). */
  async idle() {
    if (this.unsettled.size > 0) await Promise.all([...this.unsettled]);
  }

  writeFailed(about, error) {
    const payload = {
      replicator: about?.replicator ?? null,
      resourceName: about?.resourceName ?? null,
      recordId: about?.recordId ?? null,
      logError: messageOf(error),
    };
    this.plugin.logger?.warn?.(payload, `ReplicatorPlugin: could not write the replication log: ${payload.logError}`);
    safeEmit(this.plugin, 'replicator_log_error', payload);
  }

  /** Applies `fields` to an entry (through the write queue); resolves when done, never rejects. */
  update(entry, fields) {
    const about = { replicator: entry.replicator, resourceName: resourceNameOf(entry), recordId: entry.recordId };
    return new Promise((resolve) => {
      const queued = this.enqueue(() => this.resource.patch(entry.id, fields).finally(resolve), about);
      if (!queued) resolve();
    });
  }

  // ---- reading ----

  /**
   * Entries matching `keep`, newest first, skipping `offset` matches and returning at most `limit`
   * (all when limit is Infinity). Reads the resource page by page and stops once it has enough.
   */
  async scan(keep, { limit = Infinity, offset = 0 } = {}) {
    const out = [];
    const seen = new Set();
    let skipped = 0;
    for (let at = 0; ; at += ID_PAGE) {
      const ids = await this.resource.listIds({ limit: ID_PAGE, offset: at });
      for (let i = 0; i < ids.length; i += READ_CHUNK) {
        const chunk = ids.slice(i, i + READ_CHUNK).filter((id) => !seen.has(id));
        chunk.forEach((id) => seen.add(id));
        if (chunk.length === 0) continue;
        const byId = new Map((await this.resource.getMany(chunk)).filter((r) => r && r.id && !r._error).map((r) => [r.id, r]));
        for (const id of chunk) {
          const entry = byId.get(id);
          if (!entry || !keep(entry)) continue;
          if (skipped < offset) {
            skipped++;
            continue;
          }
          out.push(recordFields(entry));
          if (out.length >= limit) return out;
        }
      }
      if (ids.length < ID_PAGE) return out;
    }
  }

  async query({ resourceName, operation, status, replicator, limit, offset }) {
    await this.idle();
    const op = operation === undefined ? undefined : normalizeOp(operation);
    const wantFailed = status !== undefined && FAILED.has(status);
    return this.scan((e) => (resourceName === undefined || resourceNameOf(e) === resourceName)
      && (op === undefined || normalizeOp(e.operation ?? e.action) === op)
      && (status === undefined || e.status === status || (wantFailed && FAILED.has(e.status)))
      && (replicator === undefined || e.replicator === replicator), { limit, offset });
  }

  // ---- retrying ----

  /** Retries run one after another (a second call waits for the first, then retries what is left). */
  retryFailed() {
    const run = (this.retrying ?? Promise.resolve()).catch(() => {}).then(() => this.retryOnce());
    this.retrying = run;
    return run.finally(() => {
      if (this.retrying === run) this.retrying = null;
    });
  }

  async retryOnce() {
    const plugin = this.plugin;
    const engine = plugin._requireEngine('retryFailedReplicators');
    const result = { retried: 0, success: 0, failed: 0, superseded: 0, skipped: 0 };
    await this.idle();
    const infos = new Map(engine.replicators().map((info) => [info.id, info]));
    // Entries that name no known replicator, record or change (e.g. a schema-sync failure, or a
    // replicator removed from the configuration) cannot be re-sent and are left as they are.
    const entries = await this.scan((e) => FAILED.has(e.status) && infos.has(e.replicator)
      && e.recordId !== undefined && e.recordId !== null && e.recordId !== ''
      && CHANGE_OPS.has(normalizeOp(e.operation ?? e.action)) && Boolean(resourceNameOf(e)));
    if (entries.length === 0) return result;

    const verdicts = new Map(); // entry id → { status, error?, code?, deadLetterId? }
    const deadLetters = entries.some((e) => Number.isInteger(e.deadLetterId)) ? deadLetterIndex(engine) : new Map();
    const viaDeadLetter = [];
    const viaSource = [];
    for (const e of entries) {
      const id = Number.isInteger(e.deadLetterId) ? e.deadLetterId : undefined;
      const dl = id === undefined ? undefined : deadLetters.get(id);
      // Ids restart with a memory outbox: the dead letter must be this entry's change.
      const key = letterKey(e.replicator, resourceNameOf(e), e.recordId, e.destination);
      if (dl && letterKey(dl.replicator, dl.resourceName, dl.recordId, e.destination ? dl.destination : undefined) === key) {
        viaDeadLetter.push(e);
      } else if (!dl && id !== undefined && this.knownDeadLetters.get(id) === key && !this.discarded.has(id)) {
        // Dropped by the engine: a newer change of the record reached the destination.
        verdicts.set(e.id, { status: 'superseded' });
      } else {
        viaSource.push(e);
      }
    }
    if (viaDeadLetter.length > 0) {
      const ids = [...new Set(viaDeadLetter.map((e) => e.deadLetterId))];
      const { outcomes } = await withTicket(plugin, (ticket) => engine.retryDeadLetters(ids, null, ticket));
      const byId = groupBy(outcomes.filter((o) => o.deadLetterId !== undefined), (o) => o.deadLetterId);
      for (const e of viaDeadLetter) {
        const found = byId.get(e.deadLetterId);
        if (found) verdicts.set(e.id, verdictOf(found, e.deadLetterId));
        else viaSource.push(e); // gone between listing and retrying
      }
    }
    if (viaSource.length > 0) await this.resendCurrent(viaSource, infos, verdicts);

    const now = new Date().toISOString();
    await Promise.all(entries.map((e) => {
      const v = verdicts.get(e.id);
      if (!v) return undefined;
      result.retried++;
      const fields = { status: v.status, lastAttempt: now, retryCount: (Number(e.retryCount) || 0) + 1 };
      if (v.status === 'success') {
        result.success++;
        Object.assign(fields, { error: null, code: null, lastSuccessAt: now });
      } else if (v.status === 'error') {
        result.failed++;
        Object.assign(fields, { error: v.error, code: v.code ?? null });
        if (v.deadLetterId !== undefined) fields.deadLetterId = v.deadLetterId;
      } else if (v.status === 'superseded') {
        result.superseded++;
      } else {
        result.skipped++;
        if (v.error) fields.error = v.error;
      }
      return this.update(e, fields);
    }));
    return result;
  }

  /**
   * Re-sends the CURRENT state of each entry's record (read again from the source resource) to
   * the entry's replicator only: one change per (replicator, record), never the logged data.
   */
  async resendCurrent(entries, infos, verdicts) {
    const plugin = this.plugin;
    const engine = plugin._engine;
    const db = plugin.database;
    const snapshots = typeof engine.pushSnapshot === 'function' && typeof engine.beginSync === 'function';
    const groups = groupBy(entries, (e) => recordKey(e.replicator, resourceNameOf(e), e.recordId));
    const sent = new Map(); // record key → entries
    const recheck = []; // deletes sent while the source was changing: the record may be back
    if (snapshots) engine.beginSync();
    try {
      const { outcomes } = await withTicket(plugin, async (ticket) => {
        for (const [key, group] of groups) {
          const first = group[0];
          const name = resourceNameOf(first);
          const resource = db?.resources?.[name];
          if (!resource) {
            setAll(verdicts, group, { status: 'error', error: `source resource '${name}' does not exist`, code: 'ERR_NOT_FOUND' });
            continue;
          }
          if (!infos.get(first.replicator)?.resources?.some((r) => r.source === name)) {
            setAll(verdicts, group, { status: 'skipped', error: `replicator '${first.replicator}' no longer replicates '${name}'` });
            continue;
          }
          try {
            const how = await pushCurrent(engine, resource, first, ticket, snapshots);
            if (how === 'recheck') recheck.push(group);
            sent.set(key, group);
          } catch (error) {
            setAll(verdicts, group, { status: 'error', error: `could not re-send the record: ${messageOf(error)}`, code: error?.code ?? 'ERR_RETRY' });
          }
        }
      });
      assignVerdicts(outcomes, sent, verdicts);
      if (recheck.length > 0) {
        const again = new Map();
        const { outcomes: more } = await withTicket(plugin, async (ticket) => {
          for (const group of recheck) {
            const first = group[0];
            const resource = db.resources[resourceNameOf(first)];
            const readAfter = engine.lastSeq();
            const record = await readRecord(resource, first.recordId);
            if (!record) continue;
            const json = JSON.stringify(record);
            if (snapshots) engine.pushSnapshot(resourceNameOf(first), json, first.replicator, ticket, readAfter);
            else engine.pushTo(resourceNameOf(first), 'inserted', json, first.replicator, ticket);
            again.set(recordKey(first.replicator, resourceNameOf(first), first.recordId), group);
          }
        });
        assignVerdicts(more, again, verdicts);
      }
    } finally {
      if (snapshots) engine.endSync();
    }
  }

  /** After plugin.retryDeadLetters(): entries of those dead letters follow their outcome. */
  async settleDeadLetters(outcomes) {
    const byId = groupBy(outcomes.filter((o) => o.deadLetterId !== undefined), (o) => o.deadLetterId);
    if (byId.size === 0) return;
    try {
      await this.idle();
      // A superseded re-send is dropped before routing: its outcome names no replicator.
      const entries = await this.scan((e) => FAILED.has(e.status) && byId.has(e.deadLetterId)
        && byId.get(e.deadLetterId).some((o) => (!o.replicator || o.replicator === e.replicator)
          && o.resourceName === resourceNameOf(e) && String(o.recordId) === String(e.recordId)));
      const now = new Date().toISOString();
      await Promise.all(entries.map((e) => {
        const v = verdictOf(byId.get(e.deadLetterId), e.deadLetterId);
        const fields = { status: v.status, lastAttempt: now, retryCount: (Number(e.retryCount) || 0) + 1 };
        if (v.status === 'success') Object.assign(fields, { error: null, code: null, lastSuccessAt: now });
        else if (v.status === 'error') Object.assign(fields, { error: v.error, code: v.code ?? null });
        return this.update(e, fields);
      }));
    } catch (error) {
      this.writeFailed({}, error);
    }
  }
}

/**
 * Reads the record and hands its current state to the engine for one replicator.
 * Returns 'recheck' when a delete was sent while the source kept changing.
 */
async function pushCurrent(engine, resource, entry, ticket, snapshots) {
  const name = resourceNameOf(entry);
  const replicator = entry.replicator;
  const loggedOp = normalizeOp(entry.operation ?? entry.action);
  const hasSeq = typeof engine.lastSeq === 'function';
  let readAfter = 0;
  let record = null;
  // No change accepted between reading the record and handing it over → nothing newer can be
  // overtaken (a later change is accepted, and delivered, after this one).
  for (let attempt = 0; attempt < 3; attempt++) {
    readAfter = hasSeq ? engine.lastSeq() : 0;
    record = await readRecord(resource, entry.recordId);
    if (!hasSeq || engine.lastSeq() === readAfter) {
      if (record) {
        const op = loggedOp === 'deleted' ? 'inserted' : loggedOp;
        await handOver(engine, engine.pushTo(name, op, JSON.stringify(record), replicator, ticket));
      } else {
        await handOver(engine, engine.pushTo(name, 'deleted', JSON.stringify(deleteImage(entry)), replicator, ticket));
      }
      return 'sent';
    }
  }
  // The source kept changing (not necessarily this record).
  if (record) {
    const json = JSON.stringify(record);
    // A snapshot is skipped by the engine when a newer change of the record was accepted after readAfter.
    if (snapshots) await handOver(engine, engine.pushSnapshot(name, json, replicator, ticket, readAfter));
    else await handOver(engine, engine.pushTo(name, loggedOp === 'deleted' ? 'inserted' : loggedOp, json, replicator, ticket));
    return 'sent';
  }
  await handOver(engine, engine.pushTo(name, 'deleted', JSON.stringify(deleteImage(entry)), replicator, ticket));
  return 'recheck';
}

async function handOver(engine, saturated) {
  if (saturated) await engine.waitForCapacity();
}

async function readRecord(resource, id) {
  const record = typeof resource.getOrNull === 'function'
    ? await resource.getOrNull(id)
    : (await resource.exists(id)) ? await resource.get(id) : null;
  return record ? recordFields(record, true) : null;
}

/** What a delete carries: the last known image of the record (the logged data), with its id. */
function deleteImage(entry) {
  const data = entry.data && typeof entry.data === 'object' && !Array.isArray(entry.data) ? recordFields(entry.data, true) : {};
  return { ...data, id: entry.recordId };
}

function assignVerdicts(outcomes, sent, verdicts) {
  const byKey = groupBy(outcomes, (o) => recordKey(o.replicator, o.resourceName, o.recordId));
  // Changes the engine drops before routing them (stale snapshots) name no replicator.
  const unrouted = groupBy(outcomes.filter((o) => !o.replicator), (o) => recordKey('', o.resourceName, o.recordId));
  for (const [key, group] of sent) {
    const first = group[0];
    const found = [...(byKey.get(key) ?? []), ...(unrouted.get(recordKey('', resourceNameOf(first), first.recordId)) ?? [])];
    for (const e of group) {
      // With several destinations in one replicator, an entry follows its own destination.
      const own = e.destination ? found.filter((o) => o.destination === e.destination) : [];
      const relevant = own.length > 0 ? own : found;
      verdicts.set(e.id, relevant.length > 0
        ? verdictOf(relevant)
        : { status: 'skipped', error: 'the current state of the record is not replicated to this replicator (filtered)' });
    }
  }
}

function verdictOf(outcomes, deadLetterId) {
  const failed = outcomes.find((o) => o.status === 'failed');
  if (failed) return { status: 'error', error: failed.error ?? 'replication failed', code: failed.code, deadLetterId: failed.deadLetterId ?? deadLetterId };
  if (outcomes.some((o) => o.status === 'replicated')) return { status: 'success' };
  if (outcomes.some((o) => o.reason === 'superseded')) return { status: 'superseded' };
  return { status: 'skipped' };
}

function letterKey(replicator, resourceName, recordId, destination) {
  return `${replicator}\u0000${resourceName}\u0000${recordId}\u0000${destination ?? ''}`;
}

function setAll(verdicts, group, verdict) {
  for (const e of group) verdicts.set(e.id, verdict);
}

/** The entry written for one failure outcome. */
export function newEntry(event, outcome = {}) {
  const timestamp = new Date().toISOString();
  const operation = event.operation ?? 'unknown';
  const resourceName = event.resourceName ?? '';
  const entry = {
    id: newLogId(),
    // Failures not tied to one replicator (e.g. a change the engine could not read) name 'plugin'.
    replicator: event.replicator || 'plugin',
    resource: resourceName,
    resourceName,
    action: operation,
    operation,
    recordId: event.recordId === undefined || event.recordId === null ? undefined : String(event.recordId),
    destination: outcome.destination ?? undefined,
    // Kept for reading and as the image of a deleted record; retries re-read the source instead.
    // Always an object: the stock plugin's log resource requires `data`.
    data: event.data && typeof event.data === 'object' && !Array.isArray(event.data) ? recordFields(event.data, true) : {},
    timestamp,
    createdAt: timestamp.slice(0, 10),
    status: 'error',
    error: event.error ?? 'replication failed',
    code: event.code ?? undefined,
    retryCount: 0,
    lastAttempt: timestamp,
    deadLetterId: Number.isInteger(outcome.deadLetterId) ? outcome.deadLetterId : undefined,
  };
  for (const key of Object.keys(entry)) if (entry[key] === undefined) delete entry[key];
  return entry;
}

// Newest first in key order: 13 digits of (max - now), 4 of (max - counter within the ms), and a
// random tail so that several processes never collide.
let lastMs = 0;
let inMs = 0;
export function newLogId(now = Date.now()) {
  if (now === lastMs) inMs = Math.min(inMs + 1, 9999);
  else {
    lastMs = now;
    inMs = 0;
  }
  const time = String(9_999_999_999_999 - now).padStart(13, '0');
  const seq = String(9999 - inMs).padStart(4, '0');
  const tail = Math.floor(Math.random() * 36 ** 6).toString(36).padStart(6, '0');
  return `${time}${seq}-${tail}`;
}

/** Checks getReplicatorLogs() options; throws a ReplicatorError naming the bad option. */
export function checkLogQuery(options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new ReplicatorError('getReplicatorLogs() takes an options object', {
      code: 'ERR_CONFIG',
      description: "How to fix: getReplicatorLogs({ status: 'error', resourceName: 'users', limit: 100, offset: 0 }).",
      context: { operation: 'getReplicatorLogs' },
    });
  }
  const { resourceName, operation, status, replicator, limit = 100, offset = 0 } = options;
  for (const [name, value] of Object.entries({ resourceName, operation, status, replicator })) {
    if (value !== undefined && value !== null && typeof value !== 'string') {
      throw new ReplicatorError(`getReplicatorLogs(): ${name} must be a string`, {
        code: 'ERR_CONFIG',
        description: `${name} was a ${typeof value}. How to fix: pass a string (or leave it out to match every entry), e.g. getReplicatorLogs({ ${name}: '...' }).`,
        context: { operation: 'getReplicatorLogs', option: name },
      });
    }
  }
  checkPaging('getReplicatorLogs', { limit, offset });
  const clean = (v) => (v === null || v === '' ? undefined : v);
  return { resourceName: clean(resourceName), operation: clean(operation), status: clean(status), replicator: clean(replicator), limit, offset };
}

/** plugin.getReplicatorLogs(options) */
export async function getReplicatorLogs(plugin, options = {}) {
  const query = checkLogQuery(options ?? {});
  if (!plugin._replicationLog || query.limit === 0) return [];
  return plugin._replicationLog.query(query);
}

/** plugin.retryFailedReplicators() */
export async function retryFailedReplicators(plugin) {
  if (!plugin._replicationLog) return { retried: 0, success: 0, failed: 0, superseded: 0, skipped: 0 };
  return plugin._replicationLog.retryFailed();
}

function normalizeOp(op) {
  return OP_ALIASES[op] ?? op;
}

function resourceNameOf(entry) {
  return entry.resourceName || entry.resource;
}

function recordKey(replicator, resourceName, recordId) {
  return `${replicator}\u0000${resourceName}\u0000${recordId}`;
}

function groupBy(items, keyOf) {
  const out = new Map();
  for (const item of items) {
    const key = keyOf(item);
    const list = out.get(key);
    if (list) list.push(item);
    else out.set(key, [item]);
  }
  return out;
}

function safeEmit(plugin, event, payload) {
  try {
    plugin.emit(event, payload);
  } catch (error) {
    plugin.logger?.warn?.({ event, error: messageOf(error) }, 'ReplicatorPlugin: a listener threw');
  }
}
