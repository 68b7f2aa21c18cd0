// Destinations of a benchmark run. Each one gives the replicator entry (the same for the
// stock plugin and ours), observes when each change becomes visible, and reads back the final
// state. PostgreSQL and MySQL live in lib/sql.mjs, SQS and DynamoDB in lib/aws.mjs. To add one, add an entry with these methods:
//   replicator(kind)      → the `replicators[]` entry the plugin (`stock` | `ours`) gets
//   reset()               → forget what was observed so far (after the warm-up)
//   arrivals()            → [{ id, version, t }] in arrival order, t on this process's
//                            performance.now() clock; version DELETED for a delete
//   finalState()          → Map id → version as the destination holds it now
//   close()
//   countRows(prefix)     → optional: rows now at the destination (engine runs of SQL destinations)

import { Database } from 's3db.js/lite';

import { DELETED } from './workload.mjs';

export const ATTRIBUTES = { name: 'string', n: 'number' };

/**
 * memory:// → memory://. Visibility = the moment the destination resource's write call
 * (insert / update / replace / delete, whichever the plugin uses) resolves: observed by
 * wrapping those methods on the destination resource instance. (Resource events can't be used:
 * s3db.js emits none for replace(), which our driver uses, and emits the others a tick late.)
 */
async function openS3db() {
  const db = new Database({ connectionString: 'memory://bench-destination/db', logLevel: 'silent' });
  await db.connect();
  const resource = await db.createResource({ name: 'users', attributes: ATTRIBUTES });
  let seen = [];
  const observe = (name, idOf, versionOf) => {
    const original = resource[name].bind(resource);
    resource[name] = async (...args) => {
      const result = await original(...args);
      seen.push({ id: String(idOf(args)), version: versionOf(args), t: performance.now() });
      return result;
    };
  };
  observe('insert', ([data]) => data.id, ([data]) => data.n);
  observe('update', ([id]) => id, ([, data]) => data.n);
  observe('replace', ([id]) => id, ([, data]) => data.n);
  observe('patch', ([id]) => id, ([, data]) => data.n);
  observe('delete', ([id]) => id, () => DELETED);
  return {
    name: 's3db',
    replicator: () => ({ driver: 's3db', resources: ['users'], client: db }),
    reset() {
      seen = [];
    },
    arrivals: async () => seen,
    async finalState(prefix) {
      const ids = (await resource.listIds({ limit: 1e9 })).filter((id) => id.startsWith(prefix));
      const state = new Map();
      for (let i = 0; i < ids.length; i += 500) {
        for (const r of await resource.getMany(ids.slice(i, i + 500))) if (r?.id) state.set(r.id, r.n);
      }
      return state;
    },
    close: () => db.disconnect().catch(() => {}),
  };
}

/**
 * A keep-alive HTTP receiver in another process (bench/webhook-server.mjs). Visibility = the
 * moment the server has read the whole request (before it answers). Its clock is mapped onto
 * this process's with the offset of the fastest of a few /__now round trips.
 */
/**
 * The control endpoints of a bench server process (`/__now`, `/__reset`, `/__results`) at `url`,
 * and its clock mapped onto this process's: the offset of the fastest of 25 `/__now` round trips.
 */
export async function controlOf(url) {
  const control = async (path, method = 'GET') => (await fetch(new URL(path, url), { method })).json();
  let best = { rtt: Infinity, delta: 0 };
  for (let i = 0; i < 25; i++) {
    const a = performance.now();
    const { t } = await control('/__now');
    const b = performance.now();
    if (b - a < best.rtt) best = { rtt: b - a, delta: t - (a + b) / 2 };
  }
  return { control, clock: best };
}

async function openWebhook({ webhookUrl }) {
  const { control, clock: best } = await controlOf(new URL(webhookUrl));
  await control('/__reset', 'POST');
  const arrivals = async () => {
    const { ids, versions, times } = await control('/__results');
    return ids.map((id, i) => ({ id, version: versions[i] === -1 ? DELETED : versions[i], t: times[i] - best.delta }));
  };
  return {
    name: 'webhook',
    clock: best,
    replicator: () => ({ driver: 'webhook', resources: ['users'], config: { url: webhookUrl } }),
    reset: () => control('/__reset', 'POST'),
    arrivals,
    traffic: async () => {
      const { requests, connections } = await control('/__results');
      return { requests, connections };
    },
    // What a receiver applying changes in arrival order would hold.
    async finalState(prefix) {
      const state = new Map();
      for (const { id, version } of await arrivals()) {
        if (!id.startsWith(prefix)) continue;
        if (version === DELETED) state.delete(id);
        else state.set(id, version);
      }
      return state;
    },
    close: async () => {},
  };
}

export const DESTINATIONS = {
  s3db: openS3db,
  webhook: openWebhook,
  postgres: async (ctx) => (await import('./sql.mjs')).openPostgres(ctx),
  mysql: async (ctx) => (await import('./sql.mjs')).openMysql(ctx),
  sqs: async (ctx) => (await import('./aws.mjs')).openSqs(ctx),
  dynamodb: async (ctx) => (await import('./aws.mjs')).openDynamoDb(ctx),
};

export function openDestination(name, ctx) {
  const open = DESTINATIONS[name];
  if (!open) throw new Error(`unknown destination '${name}' (have: ${Object.keys(DESTINATIONS).join(', ')})`);
  return open(ctx);
}
