// syncAllData: copies every existing record of a replicator's source resources through the
// engine, alongside live changes.
//
// - Ids are listed per resource and sorted; pages of `batchSize` ids are read with
//   resource.getMany, up to `concurrency` pages at a time.
// - Each record goes in as a snapshot for this one replicator:
//     engine.pushSnapshot(resource, json, replicatorId, ticket, readAfter)
//   where readAfter = engine.lastSeq() taken right before its page was read. When a live change
//   of that record was accepted after readAfter, the engine drops the snapshot (outcome
//   'skipped', reason 'superseded'): a stale read never overwrites a newer change.
// - A full push honours backpressure (waitForCapacity), all inside beginSync()/endSync().
// - With a disk outbox, a checkpoint (see sync-checkpoint.js) is saved after every page, so an
//   interrupted sync resumes where it stopped; it is removed when the sync completes.

import { messageOf } from './callbacks.js';
import { ReplicatorError } from './errors.js';
import { CheckpointStore, CHECKPOINT_VERSION, compareIds } from './sync-checkpoint.js';

const PROGRESS_INTERVAL_MS = 250;
const READ_ATTEMPTS = 3;
const OPTION_KEYS = ['batchSize', 'concurrency', 'resume', 'onProgress'];

/** Replicators with a sync running, per plugin (one full sync per replicator at a time). */
const running = new WeakMap();

/**
 * @param {object} options
 * @returns {{ batchSize: number, concurrency: number, resume: boolean, onProgress: Function|null }}
 */
export function validateSyncOptions(options) {
  if (options === undefined || options === null) options = {};
  const problem = (option, message, hint) => new ReplicatorError(`Invalid syncAllData option: ${message}`, {
    code: 'ERR_CONFIG',
    description: `${message}.\nHow to fix: ${hint}`,
    context: { operation: 'syncAllData', option },
  });
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw problem('options', `options must be an object (got ${Array.isArray(options) ? 'an array' : typeof options})`,
      "call syncAllData(id, { batchSize: 100, concurrency: 4, resume: true, onProgress(p) {} }).");
  }
  const unknown = Object.keys(options).filter((k) => !OPTION_KEYS.includes(k));
  if (unknown.length > 0) {
    throw problem(unknown[0], `'${unknown[0]}' is not an option`, `syncAllData takes ${OPTION_KEYS.join(', ')}.`);
  }
  const { batchSize = 100, concurrency = 4, resume = true, onProgress = null } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10000) {
    throw problem('batchSize', `batchSize must be an integer from 1 to 10000 (got ${JSON.stringify(batchSize)})`,
      'batchSize is how many ids are read per page with resource.getMany; 100 is a good default.');
  }
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) {
    throw problem('concurrency', `concurrency must be an integer from 1 to 256 (got ${JSON.stringify(concurrency)})`,
      'concurrency is how many pages are read at once; 4 is a good default.');
  }
  if (typeof resume !== 'boolean') {
    throw problem('resume', `resume must be true or false (got ${JSON.stringify(resume)})`,
      'pass resume: false to ignore a saved checkpoint and start over.');
  }
  if (onProgress !== null && typeof onProgress !== 'function') {
    throw problem('onProgress', `onProgress must be a function (got ${typeof onProgress})`,
      'pass onProgress: ({ done, total, rate, etaMs }) => { ... }.');
  }
  return { batchSize, concurrency, resume, onProgress };
}

/**
 * @param {import('../plugin.js').ReplicatorPlugin} plugin
 * @param {string} replicatorId
 * @param {object} [options]
 */
export async function fullSync(plugin, replicatorId, options) {
  const info = plugin._requireReplicator(replicatorId, 'syncAllData');
  const opts = validateSyncOptions(options);
  const engine = plugin._engine;
  let busy = running.get(plugin);
  if (!busy) running.set(plugin, (busy = new Set()));
  if (busy.has(replicatorId)) {
    throw new ReplicatorError(`A full sync of replicator '${replicatorId}' is already running`, {
      code: 'ERR_BUSY',
      description: `syncAllData('${replicatorId}') was called while an earlier call for it has not finished.\nHow to fix: await the first call (its promise resolves with the result).`,
      context: { operation: 'syncAllData', replicatorId },
    });
  }
  busy.add(replicatorId);
  try {
    return await new FullSync(plugin, engine, info, opts).run();
  } finally {
    busy.delete(replicatorId);
  }
}

class FullSync {
  constructor(plugin, engine, info, opts) {
    this.plugin = plugin;
    this.engine = engine;
    this.id = info.id;
    this.opts = opts;
    this.sources = [...new Set(info.resources.map((r) => r.source))]
      .filter((name) => name !== plugin.config?.replicatorLogResource);
    // Resources with more than one route of this replicator get several outcomes per record.
    const routes = new Map();
    for (const r of info.resources) routes.set(r.source, (routes.get(r.source) ?? 0) + 1);
    this.fanOut = new Set([...routes].filter(([, n]) => n > 1).map(([name]) => name));
    this.perRecord = new Map(); // fan-out resources: `${resource}\0${id}` → worst status so far
    this.counts = { synced: 0, skipped: 0, superseded: 0, failed: 0 }; // skipped: outcomes only
    this.errors = [];
    this.started = Date.now();
    this.processed = 0; // records of this run handled (pushed, gone or unreadable)
    this.doneBefore = 0;
    this.total = 0;
    this.lastProgress = 0;
    this.current = this.sources[0] ?? null;
    this.failure = null;
  }

  async run() {
    const { plugin, engine } = this;
    plugin.stats.lastSync = new Date(this.started).toISOString();
    const outbox = typeof engine.outbox === 'function' ? engine.outbox() : null;
    this.store = outbox?.mode === 'disk' && outbox.dir ? new CheckpointStore(outbox.dir, this.id) : null;
    let checkpoint = null;
    if (this.store) {
      if (this.opts.resume) {
        const loaded = await this.store.load(this.sources);
        checkpoint = loaded.checkpoint;
        if (loaded.reason) plugin.logger?.warn?.({ replicator: this.id, reason: loaded.reason }, 'syncAllData: ignoring the saved checkpoint; starting over');
      } else {
        await this.store.remove();
      }
    }
    this.checkpoint = checkpoint;
    this.startedAt = checkpoint?.startedAt ?? new Date(this.started).toISOString();

    const ticket = plugin._nextTicket++;
    plugin._batchResults.set(ticket, { push: (outcome) => this.onOutcome(outcome) });
    let begun = false;
    try {
      engine.beginSync();
      begun = true;
      await this.plan();
      this.current = this.pages[0]?.name ?? this.sources[0] ?? null;
      this.progress(false);
      const workers = Array.from({ length: Math.min(this.opts.concurrency, Math.max(1, this.pages.length)) }, () => this.work(ticket));
      await Promise.all(workers);
      if (this.failure) throw this.failure;
      this.announce(this.sources.length - 1);
      this.ensureRunning();
      await plugin._settle();
    } catch (error) {
      // Keep the checkpoint of what was accepted: the next call resumes from it.
      await this.store?.idle().catch(() => {});
      throw this.wrap(error);
    } finally {
      if (begun) engine.endSync();
      plugin._batchResults.delete(ticket);
    }
    await this.store?.remove().catch((error) => {
      plugin.logger?.warn?.({ replicator: this.id, error: error.message }, 'syncAllData: could not remove the checkpoint');
    });
    return this.finish();
  }

  /** Lists and sorts the ids still to sync, and cuts them into pages. */
  async plan() {
    const cp = this.checkpoint;
    this.doneBefore = cp?.done ?? 0;
    this.pages = [];
    this.resources = [];
    let remaining = 0;
    for (const [index, name] of this.sources.entries()) {
      const resource = this.plugin.database?.resources?.[name] ?? null;
      this.resources.push(resource);
      if (!resource || (cp && index < cp.resourceIndex)) continue;
      this.current = name;
      let ids;
      try {
        ids = await resource.listIds({ limit: Number.MAX_SAFE_INTEGER });
      } catch (error) {
        throw Object.assign(new Error(`could not list the ids of resource '${name}': ${messageOf(error)}`), { resourceName: name, cause: error });
      }
      ids = [...new Set(ids.map(String))].sort(compareIds);
      if (cp && index === cp.resourceIndex && cp.lastId !== null) {
        const from = firstAfter(ids, cp.lastId);
        ids = ids.slice(from);
      }
      for (let at = 0; at < ids.length; at += this.opts.batchSize) {
        const pageIds = ids.slice(at, at + this.opts.batchSize);
        this.pages.push({ index, name, resource, ids: pageIds, lastId: pageIds[pageIds.length - 1], completed: false });
      }
      remaining += ids.length;
    }
    this.total = this.doneBefore + remaining;
    this.next = 0; // next page to start
    this.watermark = 0; // pages before this one all completed
    this.covered = this.doneBefore; // records in those pages (+ before the checkpoint)
    this.announced = cp ? cp.resourceIndex - 1 : -1;
  }

  async work(ticket) {
    while (!this.failure && this.next < this.pages.length) {
      const page = this.pages[this.next++];
      this.announce(page.index);
      this.current = page.name;
      try {
        this.ensureRunning();
        await this.syncPage(page, ticket);
      } catch (error) {
        if (!this.failure) this.failure = Object.assign(error instanceof Error ? error : new Error(messageOf(error)), { resourceName: error?.resourceName ?? page.name });
        return;
      }
      page.completed = true;
      this.advance();
    }
  }

  async syncPage(page, ticket) {
    const { engine } = this;
    // Anything accepted after this point may be newer than what the read below returns.
    const readAfter = engine.lastSeq();
    const records = await this.read(page);
    const byId = new Map();
    for (const record of records ?? []) {
      if (record && record.id !== undefined && record.id !== null) byId.set(String(record.id), record);
    }
    for (const id of page.ids) {
      const record = byId.get(id);
      this.processed++;
      if (!record) continue; // deleted since the ids were listed (a live change): nothing to copy
      if (record._error !== undefined) {
        this.fail(page.name, id, `could not read the record: ${record._error}`, record._decryptionFailed ? 'ERR_DECRYPT' : 'ERR_READ');
        continue;
      }
      let json;
      try {
        json = JSON.stringify(record);
      } catch (error) {
        this.fail(page.name, id, `the record is not serialisable: ${messageOf(error)}`, 'ERR_SERIALIZE');
        continue;
      }
      const saturated = engine.pushSnapshot(page.name, json, this.id, ticket, readAfter);
      this.plugin._holdOpen();
      if (saturated) {
        await engine.waitForCapacity();
        this.ensureRunning();
      }
      this.progress(false);
    }
  }

  async read(page) {
    let lastError;
    for (let attempt = 1; attempt <= READ_ATTEMPTS; attempt++) {
      try {
        return await page.resource.getMany(page.ids);
      } catch (error) {
        lastError = error;
        if (attempt < READ_ATTEMPTS) await new Promise((resolve) => setTimeout(resolve, 100 * 4 ** (attempt - 1)));
      }
    }
    throw Object.assign(new Error(`could not read records of resource '${page.name}' (${READ_ATTEMPTS} attempts): ${messageOf(lastError)}`), { cause: lastError, resourceName: page.name });
  }

  /** Moves the checkpoint over the pages completed in order, and saves it. */
  advance() {
    let moved = false;
    while (this.watermark < this.pages.length && this.pages[this.watermark].completed) {
      const page = this.pages[this.watermark++];
      this.covered += page.ids.length;
      page.ids = null; // done with them
      moved = true;
    }
    if (moved && this.store) {
      const last = this.pages[this.watermark - 1];
      this.store.save({
        version: CHECKPOINT_VERSION,
        replicatorId: this.id,
        resources: this.sources,
        resourceIndex: last.index,
        lastId: last.lastId,
        done: this.covered,
        startedAt: this.startedAt,
        updatedAt: new Date().toISOString(),
      });
    }
    this.progress(false);
  }

  /** Emits plg:replicator:sync-resource for every resource up to `index` not announced yet. */
  announce(index) {
    while (this.announced < index) {
      this.announced++;
      const name = this.sources[this.announced];
      if (this.resources?.[this.announced]) this.plugin.emit('plg:replicator:sync-resource', { resourceName: name, replicatorId: this.id });
    }
  }

  onOutcome(o) {
    const status = o.status === 'failed' ? 'failed' : o.status === 'replicated' ? 'synced' : o.reason === 'superseded' ? 'superseded' : 'skipped';
    if (this.fanOut.has(o.resourceName)) {
      const key = `${o.resourceName}\u0000${o.recordId}`;
      const seen = this.perRecord.get(key);
      if (seen !== undefined && RANK[seen] >= RANK[status]) return;
      if (seen !== undefined) this.counts[seen]--;
      this.perRecord.set(key, status);
    }
    this.counts[status]++;
    if (status === 'failed') this.errors.push({ id: o.recordId, resourceName: o.resourceName, error: o.error, code: o.code });
  }

  fail(resourceName, id, error, code) {
    this.counts.failed++;
    this.errors.push({ id, resourceName, error, code });
  }

  progress(final) {
    const now = Date.now();
    if (!final && this.lastProgress !== 0 && now - this.lastProgress < PROGRESS_INTERVAL_MS) return;
    this.lastProgress = now;
    const elapsedMs = now - this.started;
    const done = Math.min(this.total, this.doneBefore + this.processed);
    const rate = elapsedMs > 0 ? (this.processed * 1000) / elapsedMs : 0;
    const left = this.total - done;
    const event = {
      replicatorId: this.id,
      resourceName: this.current,
      done,
      total: this.total,
      rate: Math.round(rate * 10) / 10,
      elapsedMs,
      etaMs: left === 0 ? 0 : rate > 0 ? Math.round((left * 1000) / rate) : null,
    };
    this.plugin.emit('plg:replicator:sync-progress', event);
    if (this.opts.onProgress) {
      try {
        this.opts.onProgress(event);
      } catch (error) {
        this.plugin.logger?.warn?.({ replicator: this.id, error: messageOf(error) }, 'syncAllData: onProgress threw');
      }
    }
  }

  ensureRunning() {
    if (this.plugin._stopping || this.plugin._engine !== this.engine) {
      throw new ReplicatorError('ReplicatorPlugin stopped during syncAllData', {
        code: 'ERR_STOPPED',
        description: 'The plugin was stopped while a full sync was running.',
        context: { operation: 'syncAllData', replicatorId: this.id },
      });
    }
  }

  wrap(error) {
    if (error instanceof ReplicatorError) {
      if (this.store) error.context = { ...error.context, checkpoint: this.store.file };
      return error;
    }
    const resourceName = error?.resourceName ?? this.current;
    const resume = this.store
      ? `Call syncAllData('${this.id}') again to resume from the checkpoint (${this.store.file}).`
      : 'Call syncAllData again (the outbox is in memory, so it starts over; rows are upserted).';
    return new ReplicatorError(`syncAllData('${this.id}') failed on resource '${resourceName}': ${messageOf(error)}`, {
      code: error?.code && typeof error.code === 'string' && error.code.startsWith('ERR_') ? error.code : 'ERR_SYNC',
      description: `${messageOf(error)}\nHow to fix: check that the source database is reachable. ${resume}`,
      context: { operation: 'syncAllData', replicatorId: this.id, resourceName, checkpoint: this.store?.file ?? null },
      cause: error,
    });
  }

  finish() {
    this.progress(true);
    // Records neither replicated, superseded nor failed were skipped (filtered by a transform,
    // shouldReplicate or actions, or deleted since they were listed).
    const handled = this.counts.synced + this.counts.superseded + this.counts.failed;
    const skipped = Math.max(0, this.processed - handled);
    const durationMs = Date.now() - this.started;
    const result = {
      replicatorId: this.id,
      total: this.total,
      synced: this.counts.synced,
      skipped,
      superseded: this.counts.superseded,
      failed: this.counts.failed,
      errors: this.errors,
      resumed: this.checkpoint !== null,
      resumedFrom: this.doneBefore,
      durationMs,
    };
    this.plugin.emit('plg:replicator:sync-completed', {
      replicatorId: this.id,
      total: result.total,
      synced: result.synced,
      skipped: result.skipped,
      superseded: result.superseded,
      failed: result.failed,
      errors: result.errors.length,
      resumed: result.resumed,
      durationMs,
      stats: this.plugin.stats,
    });
    return result;
  }
}

const RANK = { skipped: 0, synced: 1, superseded: 2, failed: 3 };

/** Index of the first id sorting after `lastId` in sorted `ids`. */
function firstAfter(ids, lastId) {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareIds(ids[mid], lastId) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
