// Applies batches from the engine to destination s3db.js databases (the `s3db` driver).
// Ordering, batching and retries are the engine's; this file only performs writes:
//   inserted / updated → resource.replace(id, data)  (a full put: idempotent, no read first)
//   deleted            → resource.delete(id)         (a missing record counts as deleted)
// Changes of one record run one after another; different records run concurrently.

import { messageOf } from './callbacks.js';
import { redact, secretsOf } from './redact.js';

/**
 * The connection string s3db.js gets for a destination. With `endpoint` (an S3-compatible server),
 * `s3://KEY:SECRET@bucket/prefix` becomes s3db.js's path-style form
 * `http(s)://KEY:SECRET@host:port/bucket/prefix`: s3db.js 21.6.2 sends every `s3://` string to
 * AWS (https://s3.us-east-1.amazonaws.com), whatever its query says. The engine has checked that
 * `endpoint` is a plain http(s) URL and the string an `s3://` one.
 */
export function destinationConnectionString(connectionString, endpoint) {
  if (!endpoint) return connectionString;
  const s3 = new URL(connectionString);
  const url = new URL(endpoint);
  url.username = s3.username;
  url.password = s3.password;
  const prefix = s3.pathname === '/' ? '' : s3.pathname;
  url.pathname = `/${s3.hostname}${prefix}`;
  url.search = s3.search;
  return url.toString();
}

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
  add(id, { connectionString, client, createResources = true, logLevel, region, keyPrefix }) {
    let pending = null;
    const secrets = secretsOf(connectionString);
    const target = {
      /** An error of this destination as the engine and the user see it: readable, no secret. */
      describe: (error) => redact(destinationMessage(error), secrets),
      db: client ?? null,
      owned: !client,
      createResources,
      async connect() {
        if (target.db) return target.db;
        if (!pending) {
          pending = (async () => {
            const { Database } = await import('s3db.js/lite');
            // region and keyPrefix go along as the stock driver passes them (s3db.js reads the
            // bucket, prefix and region of a connection string from the string itself).
            const db = new Database({ connectionString, region, keyPrefix, logLevel: logLevel ?? 'silent', ...clientOptionsFor(connectionString) });
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
      return JSON.stringify(changes.map(() => ({ error: `Failed to replicate to s3db: Connection failed (${target.describe(error)})`, retryable: true })));
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
          const result = { error: target.describe(error), retryable: isRetryable(error) };
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

/**
 * S3 destinations (not memory:// or file://) use the AWS SDK's own HTTP handler instead of
 * s3db.js 21.6.2's default (recker): that one failed DeleteObject against the test server,
 * whose answer is a 204 ("Response constructor: Invalid response status code 204"), and its
 * per-host circuit breaker turns a short outage into failed writes; the engine has its own breaker.
 */
function clientOptionsFor(connectionString) {
  const local = /^(memory|file):/i.test(connectionString ?? '');
  return local ? {} : { clientOptions: { httpClientOptions: { useReckerHandler: false } } };
}

/**
 * The message of a failed destination write. s3db.js wraps an unexpected error once per layer as
 * "Unknown error: <message> | Code: … | Stack: …"; the error it wraps (`original`) says what
 * happened ("connect ECONNREFUSED 127.0.0.1:9000"), so that one is shown.
 */
export function destinationMessage(error) {
  const top = messageOf(error);
  if (!/^Unknown error:/.test(top) && !top.includes(' | Stack: ')) return top;
  let deepest = error;
  for (let e = error?.original ?? error?.cause, depth = 0; e && depth < 5; e = e.original ?? e.cause, depth++) {
    if (e.message) deepest = e;
  }
  return messageOf(deepest).split(' | Stack: ')[0];
}

/** Status codes and error names of a destination that is unreachable, slow or overloaded. */
const TRANSIENT_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const PERMANENT_NAMES = /^(InvalidResourceItem|ValidationError|SchemaError|MetadataLimitError|EncryptionError|CryptoError)$/;
const TRANSIENT_NAMES = /^(NetworkError|TimeoutError|RequestTimeout|RequestTimeTooSkewed|SlowDown|ServiceUnavailable|InternalError|Throttling|ThrottlingException|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EAI_AGAIN|ENOTFOUND|UND_ERR_\w+)$/;

/**
 * Whether a failed destination write may succeed later. s3db.js marks none of its errors
 * retriable (its `retriable` defaults to false, even for a refused connection), so the cause
 * decides: a transient status or network error anywhere in the chain is retried (the change
 * waits, the circuit breaker counts it); an error s3db.js raised for the record itself
 * (validation, a missing resource) is not.
 */
export function isRetryable(error) {
  // A record the destination resource refuses fails the same way every time, whatever HTTP-ish
  // status s3db.js puts on it (21.6.2 gives InvalidResourceItem a 500).
  if (PERMANENT_NAMES.test(error?.name ?? '')) return false;
  for (let e = error, depth = 0; e && depth < 5; e = e.original ?? e.cause, depth++) {
    const status = e.statusCode ?? e.$metadata?.httpStatusCode;
    if (TRANSIENT_STATUS.has(status)) return true;
    if (TRANSIENT_NAMES.test(e.name ?? '') || TRANSIENT_NAMES.test(e.code ?? '')) return true;
  }
  return error?.retriable !== false;
}

function isNotFound(error) {
  return error?.statusCode === 404 || error?.name === 'NoSuchKey' || error?.code === 'NoSuchKey' || error?.name === 'NotFound';
}
