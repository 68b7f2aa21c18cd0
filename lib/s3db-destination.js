// Applies batches from the engine to destination s3db.js databases (the `s3db` driver).
// Ordering, batching and retries are the engine's; this file only performs writes:
//   inserted / updated → resource.replace(id, data)  (a full put: idempotent, no read first)
//   deleted            → resource.delete(id)         (a missing record counts as deleted)
// Changes of one record run one after another; different records run concurrently.

import { messageOf } from './callbacks.js';

export class S3dbDestinations {
  /**
   * @param {{ sourceDb: () => object, logger?: object }} opts
   */
  constructor({ sourceDb }) {
    this.sourceDb = sourceDb;
    /** replicator id → { connect(): Promise<Database>, owned: boolean, createResources: boolean } */
    this.targets = new Map();
    /** destination Database → { tail: Promise (the last creation queued), pending: Map<name, Promise<resource>> } */
    this.creations = new WeakMap();
  }

  /** Registers the destination of one s3db replicator. Connection is lazy and retried. */
  add(id, { connectionString, client, createResources = true, logLevel }) {
    let pending = null;
    const target = {
      db: client ?? null,
      owned: !client,
      createResources,
      async connect() {
        if (target.db) return target.db;
        if (!pending) {
          pending = (async () => {
            const { Database } = await import('s3db.js/lite');
            const db = new Database({ connectionString, logLevel: logLevel ?? 'silent' });
            await db.connect();
            target.db = db;
            return db;
          })().catch((error) => {
            pending = null;
            throw error;
          });
        }
        return pending;
      },
    };
    this.targets.set(id, target);
  }

  /** The engine's `deliver` bridge: returns null when all changes applied, else per-item results. */
  async deliver(json) {
    const { replicator, changes } = JSON.parse(json);
    const target = this.targets.get(replicator);
    if (!target) throw new Error(`no s3db destination is registered for replicator '${replicator}'`);
    let db;
    try {
      db = await target.connect();
    } catch (error) {
      // Not connected yet: the whole batch is retryable.
      return JSON.stringify(changes.map(() => ({ error: `Failed to replicate to s3db: Connection failed (${messageOf(error)})`, retryable: true })));
    }
    const chains = new Map();
    changes.forEach((change, index) => {
      const key = `${change.dest}\u0000${change.id}`;
      const chain = chains.get(key);
      if (chain) chain.push(index);
      else chains.set(key, [index]);
    });
    const results = new Array(changes.length).fill(null);
    let failures = 0;
    await Promise.all([...chains.values()].map(async (chain) => {
      let failed = null;
      for (const index of chain) {
        if (failed) {
          // A later change of a record must not overtake the retry of an earlier one.
          results[index] = failed;
          failures++;
          continue;
        }
        try {
          await this.apply(target, db, changes[index]);
        } catch (error) {
          const result = { error: messageOf(error), retryable: error?.retriable !== false };
          results[index] = result;
          failures++;
          // A permanent failure (e.g. validation) gives that change up; the next one proceeds.
          if (result.retryable) failed = result;
        }
      }
    }));
    return failures === 0 ? null : JSON.stringify(results);
  }

  async apply(target, db, change) {
    const resource = await this.resourceFor(target, db, change);
    if (change.op === 'deleted') {
      try {
        await resource.delete(change.id);
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
      return;
    }
    await resource.replace(change.id, change.data);
  }

  async resourceFor(target, db, change) {
    const existing = db.resources[change.dest];
    if (existing) return existing;
    if (!target.createResources) {
      const error = new Error(`Destination resource '${change.dest}' not found in the target database (createResources is false)`);
      error.retriable = false;
      throw error;
    }
    return this.createOnce(db, change);
  }

  /**
   * Creates destination resources one at a time per destination database: s3db.js writes the
   * database's whole `s3db.json` on every createResource, so two creations at once can each
   * write a list without the other and one resource disappears from the metadata (its data
   * stays, but a new connection cannot see it). Concurrent requests for one name share a creation.
   */
  createOnce(db, change) {
    let queue = this.creations.get(db);
    if (!queue) {
      queue = { tail: Promise.resolve(), pending: new Map() };
      this.creations.set(db, queue);
    }
    const name = change.dest;
    const pending = queue.pending.get(name);
    if (pending) return pending;
    const created = queue.tail.then(() => this.createResource(db, change));
    queue.pending.set(name, created);
    // The next creation waits for this one, whether it succeeds or fails.
    queue.tail = created.then(() => {}, () => {});
    created.then(() => queue.pending.delete(name), () => queue.pending.delete(name));
    return created;
  }

  /** Creates a missing destination resource: the source's attributes (when the route has no
   * transform) plus attributes inferred from the record's fields. */
  async createResource(db, change) {
    if (db.resources[change.dest]) return db.resources[change.dest];
    const attributes = {};
    for (const [name, value] of Object.entries(change.data ?? {})) {
      if (name === 'id') continue;
      attributes[name] = `${inferType(value)}|optional`;
    }
    const source = this.sourceDb()?.resources?.[change.resource];
    if (source && change.dest === change.resource && source.attributes) {
      Object.assign(attributes, source.attributes);
    }
    if (Object.keys(attributes).length === 0) attributes.replicatedAt = 'string|optional';
    try {
      return await db.createResource({ name: change.dest, attributes, behavior: 'body-overflow', timestamps: false });
    } catch (error) {
      if (db.resources[change.dest]) return db.resources[change.dest];
      throw error;
    }
  }

  /** Disconnects the databases this plugin opened (not the clients the user passed). */
  async close(onError = () => {}) {
    for (const [id, target] of this.targets) {
      if (target.owned && target.db && typeof target.db.disconnect === 'function') {
        await target.db.disconnect().catch((error) => onError(id, error));
      }
    }
    this.targets.clear();
  }
}

function inferType(value) {
  if (typeof value === 'number') return 'number';
  if (typeof value === 'boolean') return 'boolean';
  if (value !== null && typeof value === 'object') return 'json';
  return 'string';
}

function isNotFound(error) {
  return error?.statusCode === 404 || error?.name === 'NoSuchKey' || error?.code === 'NoSuchKey' || error?.name === 'NotFound';
}
