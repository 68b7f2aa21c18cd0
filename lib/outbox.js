// Where the engine's durable outbox lives. The rule (README, "Durability"):
//   outbox: false                → memory only
//   outbox: { dir, ... }         → on disk in `dir`
//   not set, memory:// source    → memory only: the source's own data dies with the process,
//                                  so there is nothing to resume against after a crash
//   not set, any other source    → <cwd>/.s3db-replicator/<source without credentials>
//   outbox: { jetstream: {...} } → the shared JetStream log; `dir`, only if given, keeps a
//                                  worker's dead letters
import { createHash } from 'node:crypto';
import path from 'node:path';

import { ReplicatorError } from './errors.js';

/** The `outbox` option as the engine reads it, given the source database's connection string. */
export function resolveOutbox(option, connectionString) {
  if (option === false) return false;
  if (option !== undefined && (option === null || typeof option !== 'object' || Array.isArray(option))) {
    const given = option === null ? 'null' : `${Array.isArray(option) ? 'array' : typeof option} ${JSON.stringify(option)}`;
    throw new ReplicatorError(`Invalid ReplicatorPlugin configuration: outbox: expected false or an object such as { dir: './.s3db-replicator' }, got ${given}`, {
      code: 'ERR_CONFIG',
      description: "Use outbox: { dir: './.s3db-replicator' } to keep accepted changes on disk, or outbox: false for memory only.",
      context: { option: 'outbox', received: option === null ? 'null' : typeof option },
    });
  }
  const source = String(connectionString ?? '');
  if (option === undefined && (source === '' || source.startsWith('memory://'))) return false;
  const settings = { ...(option ?? {}) };
  if (settings.jetstream !== undefined) {
    if (settings.dir !== undefined) settings.dir = path.resolve(settings.dir);
    return settings;
  }
  settings.dir = path.resolve(settings.dir ?? defaultDir(source));
  return settings;
}

/** `.s3db-replicator/<readable slug>-<hash>` under the working directory. */
export function defaultDir(connectionString) {
  const safe = withoutCredentials(connectionString);
  const slug = safe.replace(/\?.*$/, '').replace(/^[a-z0-9+.-]+:\/\//i, '').replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 60) || 'default';
  const hash = createHash('sha256').update(safe).digest('hex').slice(0, 8);
  return path.join(process.cwd(), '.s3db-replicator', `${slug}-${hash}`);
}

/** `scheme://user:secret@host` → `scheme://host` (credentials never reach a path or a log). */
export function withoutCredentials(connectionString) {
  return String(connectionString ?? '').replace(/^([a-z0-9+.-]+:\/\/)[^@/]*@/i, '$1');
}
