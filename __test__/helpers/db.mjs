// Real s3db.js databases for the tests: each call gets its own in-memory bucket.
import { Database } from 's3db.js/lite';

import { ReplicatorPlugin } from '../../plugin.js';

let counter = 0;

export async function memoryDb(label = 'db') {
  const db = new Database({ connectionString: `memory://${label}-${process.pid}-${++counter}/data`, logLevel: 'silent' });
  await db.connect();
  return db;
}

export const USER_ATTRIBUTES = { name: 'string', n: 'number|optional', tag: 'string|optional' };

export async function usersResource(db, name = 'users') {
  return db.createResource({ name, attributes: USER_ATTRIBUTES });
}

/** Resolves with the next `count` events of `name` on `emitter`. */
export function nextEvents(emitter, name, count) {
  return new Promise((resolve) => {
    const seen = [];
    const on = (e) => {
      seen.push(e);
      if (seen.length >= count) {
        emitter.off(name, on);
        resolve(seen);
      }
    };
    emitter.on(name, on);
  });
}

/** Collects every event of the given names into arrays. */
export function collect(emitter, ...names) {
  const out = Object.fromEntries(names.map((n) => [n, []]));
  for (const n of names) emitter.on(n, (e) => out[n].push(e));
  return out;
}

/** The user-visible fields of a record read from s3db (s3db adds `_*` bookkeeping on get). */
export function visible(record) {
  if (!record) return record;
  return Object.fromEntries(Object.entries(record).filter(([k]) => !k.startsWith('_') && !k.startsWith('$')));
}

/**
 * A memory:// database with a ReplicatorPlugin of `replicators` installed, stopped and
 * disconnected after the test `t`; its `plg:replicator:error` and `replicated` events collected.
 */
export async function installed(t, label, replicators, options = {}) {
  const db = await memoryDb(label);
  const plugin = new ReplicatorPlugin({ ...options, replicators });
  const events = collect(plugin, 'plg:replicator:error', 'plg:replicator:replicated');
  await db.usePlugin(plugin);
  t.after(async () => {
    await plugin.stop();
    await db.disconnect();
  });
  return { db, plugin, events };
}

/**
 * The errors of changes that failed: not the outage report (recordId null) nor a change held for
 * redelivery while its destination is down (`held: true`): neither is a failed change.
 */
export const changeFailures = (events) => events['plg:replicator:error'].filter((e) => e.recordId !== null && !e.held);
