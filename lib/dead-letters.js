// Dead letters: changes a destination failed for good (retries used up or a permanent error).
// The engine keeps them (in its outbox) under a numeric id; this file is the plugin-facing side:
// argument checks, parsing, and re-sending them with a ticket so the caller can wait until
// every re-sent change is settled (delivered, failed again or superseded).

import { ReplicatorError } from './errors.js';

const PAGE = 1000;

/** Checks `limit` / `offset` of a listing method (non-negative integers). */
export function checkPaging(method, { limit, offset }) {
  for (const [name, value] of [['limit', limit], ['offset', offset]]) {
    if (!Number.isInteger(value) || value < 0) {
      throw new ReplicatorError(`${method}(): ${name} must be a non-negative integer`, {
        code: 'ERR_CONFIG',
        description: `${name} was ${describe(value)}. How to fix: pass a whole number >= 0, e.g. ${method}({ limit: 100, offset: 0 }).`,
        context: { operation: method, option: name, received: describe(value) },
      });
    }
  }
}

/** Checks a list of dead-letter ids (positive integers as listed by getDeadLetters()). */
export function checkIds(method, ids, { optional, positional = false }) {
  const option = 'ids';
  if (ids === undefined || ids === null) {
    if (optional) return null;
  } else if (Array.isArray(ids) && ids.every((id) => Number.isSafeInteger(id) && id >= 0)) {
    return [...new Set(ids)];
  }
  const example = positional ? `${method}([1, 2])` : `${method}({ ids: [1, 2] })`;
  throw new ReplicatorError(`${method}(): ${option} must be an array of dead-letter ids`, {
    code: 'ERR_CONFIG',
    description: `${option} was ${describe(ids)}. How to fix: pass the numeric ids of getDeadLetters() entries, e.g. ${example}.`,
    context: { operation: method, option, received: describe(ids) },
  });
}

/** Checks an optional replicator id argument (a string naming an existing replicator). */
export function checkReplicator(plugin, method, replicator) {
  if (replicator === undefined || replicator === null) return null;
  if (typeof replicator !== 'string') {
    throw new ReplicatorError(`${method}(): replicator must be a replicator id (string)`, {
      code: 'ERR_CONFIG',
      description: `replicator was ${describe(replicator)}. How to fix: pass an id from listReplicators(), e.g. ${method}({ replicator: 's3db' }).`,
      context: { operation: method, option: 'replicator', received: describe(replicator) },
    });
  }
  plugin._requireReplicator(replicator, method);
  return replicator;
}

/** Throws a ReplicatorError when the engine was built without dead letters. */
export function requireDeadLetters(engine, method) {
  if (typeof engine.deadLetters !== 'function') {
    throw new ReplicatorError(`${method}(): this engine build has no dead letters`, {
      code: 'ERR_NOT_SUPPORTED',
      description: 'The native addon is older than this plugin. How to fix: rebuild it (npx napi build --platform --esm) or reinstall s3db-replicator.',
      context: { operation: method },
    });
  }
}

/** One page of dead letters: `{ total, items }` (oldest first). */
export function listDeadLetters(engine, replicator, limit, offset) {
  const u32 = (n) => Math.min(n, 0xffff_ffff);
  const parsed = JSON.parse(engine.deadLetters(replicator ?? null, u32(limit), u32(offset)));
  return { total: parsed.total ?? 0, items: parsed.items ?? [] };
}

/** Every dead letter, by id (empty when the engine has none or no dead-letter support). */
export function deadLetterIndex(engine) {
  const index = new Map();
  if (typeof engine.deadLetters !== 'function') return index;
  for (let offset = 0; ; offset += PAGE) {
    const { items } = listDeadLetters(engine, null, PAGE, offset);
    for (const item of items) index.set(item.id, item);
    if (items.length < PAGE) return index;
  }
}

/**
 * Runs `start(ticket)` (which hands changes to the engine under `ticket`) and resolves with the
 * outcomes carrying that ticket once they are settled. `start` may return how many outcomes to
 * expect; flush() is repeated (a few times at most) until that many arrived.
 * While it runs, failures of the ticket are not written as new replication-log entries (the
 * caller updates the entries it retries instead).
 */
export async function withTicket(plugin, start) {
  const engine = plugin._engine;
  const ticket = plugin._nextTicket++;
  const outcomes = [];
  const log = plugin._replicationLog ?? null;
  plugin._batchResults.set(ticket, outcomes);
  log?.retryTickets.add(ticket);
  try {
    const expected = await start(ticket, engine);
    if (expected !== 0) plugin._holdOpen();
    await plugin._settle();
    for (let round = 0; typeof expected === 'number' && outcomes.length < expected && round < 3; round++) {
      await plugin._settle();
    }
    return { outcomes, expected };
  } finally {
    plugin._batchResults.delete(ticket);
    log?.retryTickets.delete(ticket);
  }
}

/** getDeadLetters({ replicator, limit, offset }) */
export function getDeadLetters(plugin, { replicator, limit = 100, offset = 0 } = {}) {
  const engine = plugin._requireEngine('getDeadLetters');
  requireDeadLetters(engine, 'getDeadLetters');
  checkPaging('getDeadLetters', { limit, offset });
  const only = checkReplicator(plugin, 'getDeadLetters', replicator);
  if (limit === 0) return [];
  return listDeadLetters(engine, only, limit, offset).items;
}

/**
 * retryDeadLetters({ replicator, ids }): re-sends dead letters (all, these ids, and/or only one
 * replicator's) to the replicator that failed them, and resolves when each is settled.
 */
export async function retryDeadLetters(plugin, { replicator, ids } = {}) {
  const engine = plugin._requireEngine('retryDeadLetters');
  requireDeadLetters(engine, 'retryDeadLetters');
  const only = checkReplicator(plugin, 'retryDeadLetters', replicator);
  const wanted = checkIds('retryDeadLetters', ids, { optional: true });
  const result = { retried: 0, delivered: 0, failed: 0, superseded: 0, skipped: 0, errors: [] };
  if (wanted && wanted.length === 0) return result;
  const { outcomes, expected } = await withTicket(plugin, (ticket) => engine.retryDeadLetters(wanted, only, ticket));
  result.retried = expected;
  for (const o of outcomes) {
    if (o.status === 'replicated') result.delivered++;
    else if (o.status === 'failed') {
      result.failed++;
      result.errors.push({ id: o.deadLetterId, recordId: o.recordId, replicator: o.replicator, error: o.error, code: o.code });
    } else if (o.reason === 'superseded') result.superseded++;
    else result.skipped++;
  }
  // Log entries of these dead letters follow what happened to them.
  await plugin._replicationLog?.settleDeadLetters(outcomes);
  return result;
}

/** discardDeadLetters(ids) → how many existed and were removed. */
export function discardDeadLetters(plugin, ids) {
  const engine = plugin._requireEngine('discardDeadLetters');
  requireDeadLetters(engine, 'discardDeadLetters');
  const list = checkIds('discardDeadLetters', ids, { optional: false, positional: true });
  if (list.length === 0) return 0;
  plugin._replicationLog?.discardedDeadLetters(list);
  return engine.discardDeadLetters(list);
}

function describe(value) {
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') return 'a function';
  try {
    const text = JSON.stringify(value);
    return text.length > 60 ? `${text.slice(0, 57)}...` : text;
  } catch {
    return typeof value;
  }
}
