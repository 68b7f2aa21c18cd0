// The options every command shares: --connection (the source database) and --config (a module
// exporting the ReplicatorPlugin options), and what follows from them (the outbox directory).
import { access } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

import { resolveOutbox } from '../outbox.js';
import { addSecrets } from './output.js';

/** `--connection` and `--config` as parseArgs options. */
export const SOURCE_OPTIONS = {
  connection: { type: 'string' },
  config: { type: 'string' },
};

export const SOURCE_HELP = `  --connection <string>   s3db.js connection string of the SOURCE database
                          (s3://KEY:SECRET@bucket/prefix, file:///path, memory://bucket/path, ...)
  --config <file.mjs>     module exporting the ReplicatorPlugin options
                          (default export, or a named export \`options\`; may be a function)
                          Run from the app's working directory: the default outbox directory
                          (./.s3db-replicator/<source>) is relative to it, as in the app.`;

/** Loads the plugin options from `file`, with an error saying what is wrong with it. */
export async function loadOptions(file) {
  const path = resolve(file);
  try {
    await access(path);
  } catch {
    throw new Error(`--config ${file}: no such file (give the path of a module exporting the ReplicatorPlugin options)`);
  }
  let mod;
  try {
    mod = await import(pathToFileURL(path).href);
  } catch (error) {
    throw new Error(`cannot load --config ${file}: ${error.message}`);
  }
  let options = mod.default ?? mod.options;
  if (typeof options === 'function') options = await options();
  if (!options || typeof options !== 'object' || Array.isArray(options)) {
    throw new Error(`--config ${file} must export the ReplicatorPlugin options (export default { replicators: [...] } or export const options = {...})`);
  }
  addSecrets(options.replicators);
  return options;
}

/**
 * The outbox directory of this source and configuration (the rule of lib/outbox.js), or
 * `null` when the outbox is in memory (memory:// source, outbox: false). The default directory
 * is under the working directory, as in the app: run the command from the app's directory.
 */
export function outboxDir(connection, options) {
  const outbox = resolveOutbox(options.outbox, connection);
  return outbox === false ? null : outbox.dir;
}

/** Opens the source database and installs the plugin on it (as the app would). */
export async function openPlugin(connection, options) {
  const [{ Database }, { ReplicatorPlugin }] = await Promise.all([import('s3db.js/lite'), import('../../plugin.js')]);
  const db = new Database({ connectionString: connection, logLevel: 'silent' });
  let plugin = null;
  const close = async () => {
    // The engine drains what it accepted (db.disconnect() does not stop plugins added with
    // usePlugin in s3db.js 21), then the databases close.
    if (plugin?._engine) await plugin.stop();
    await db.disconnect().catch(() => {});
  };
  try {
    await db.connect();
    // The command's own output is the report: the app's log settings would mix lines into it.
    plugin = new ReplicatorPlugin({ ...options, logLevel: 'silent' });
    await db.usePlugin(plugin);
  } catch (error) {
    await close().catch(() => {});
    throw error;
  }
  return { db, plugin, close };
}
