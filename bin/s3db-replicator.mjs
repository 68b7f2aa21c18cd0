#!/usr/bin/env node
// s3db-replicator command line.
//   s3db-replicator sync --connection <s3db connection string> --config <options.mjs>
//                        [--replicator <id> ...] [--batch-size n] [--concurrency n] [--no-resume]
//   s3db-replicator help [sync] | --help | sync --help | --version | -v
// Every message goes through redact(): credentials in connection strings never reach the terminal.

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { redact, secretsOf } from '../lib/redact.js';

// `worker` (JetStream outbox delivery) lives in its own module.
if (process.argv[2] === 'worker') process.exit(await (await import('../lib/worker.js')).runWorker(process.argv.slice(3)));

const VERSION = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;

const SYNC_USAGE = `Usage: s3db-replicator sync --connection <connection string> --config <file.mjs> [options]

Copies every existing record of the source database through the replicators (ReplicatorPlugin
syncAllData): batched, concurrent, resumable after a crash (with an outbox on disk), alongside
live changes.

Options:
  --connection <string>   s3db.js connection string of the SOURCE database
                          (s3://KEY:SECRET@bucket/prefix, file:///path, memory://bucket/path, ...)
  --config <file.mjs>     module exporting the ReplicatorPlugin options
                          (default export, or a named export \`options\`; may be a function)
  --replicator <id>       replicator to sync (repeat for several; default: all)
  --batch-size <n>        ids read per page (default 100)
  --concurrency <n>       pages read at once (default 4)
  --no-resume             ignore a saved checkpoint and start over
  -h, --help              show this help

A sync that was interrupted resumes from its checkpoint, <outbox dir>/sync/<replicator>.json: the
outbox is on disk for file:// and s3:// sources (default ./.s3db-replicator/<source>, or the
config's outbox.dir); with a memory:// source or outbox: false every run starts over.

Exit status: 0 when every record was synced (or skipped), 1 when something failed.
`;

const USAGE = `s3db-replicator ${VERSION}: replication for s3db.js (Rust engine)

Commands:
  sync              copy every existing record through the replicators (below)
  help [command]    show this help, or a command's
  -v, --version     print the version

${SYNC_USAGE}`;

const COMMANDS = { sync: SYNC_USAGE };

const secrets = new Set();
const say = (stream, text) => stream.write(`${redact(text, secrets)}\n`);
const out = (text) => say(process.stdout, text);
const err = (text) => say(process.stderr, text);

class UsageError extends Error {}

function parse(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        connection: { type: 'string' },
        config: { type: 'string' },
        replicator: { type: 'string', multiple: true },
        'batch-size': { type: 'string' },
        concurrency: { type: 'string' },
        'no-resume': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    throw new UsageError(error.message);
  }
  const { values, positionals } = parsed;
  if (values.connection) for (const s of secretsOf(values.connection)) secrets.add(s);
  const [command, ...extra] = positionals;
  if (values.version || command === 'version') return { print: `s3db-replicator ${VERSION}\n` };
  if (command === 'help') {
    if (extra.length === 0) return { print: USAGE };
    if (!COMMANDS[extra[0]]) throw new UsageError(`no help for '${extra[0]}' (commands: ${Object.keys(COMMANDS).join(', ')})`);
    return { print: COMMANDS[extra[0]] };
  }
  if (values.help) return { print: COMMANDS[command] ?? USAGE };
  if (!command) throw new UsageError('missing command (sync)');
  if (command !== 'sync') throw new UsageError(`unknown command '${command}' (commands: sync, help)`);
  if (extra.length > 0) throw new UsageError(`unexpected argument '${extra[0]}'`);
  if (!values.connection) throw new UsageError('--connection is required');
  if (!values.config) throw new UsageError('--config is required');
  const integer = (name, fallback) => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new UsageError(`--${name} must be a positive integer (got '${raw}')`);
    return Number(raw);
  };
  return {
    connection: values.connection,
    config: values.config,
    replicators: values.replicator ?? [],
    batchSize: integer('batch-size', 100),
    concurrency: integer('concurrency', 4),
    resume: !values['no-resume'],
  };
}

async function loadOptions(file) {
  let mod;
  try {
    mod = await import(pathToFileURL(resolve(file)).href);
  } catch (error) {
    throw new Error(`cannot load --config ${file}: ${error.message}`);
  }
  let options = mod.default ?? mod.options;
  if (typeof options === 'function') options = await options();
  if (!options || typeof options !== 'object' || Array.isArray(options)) {
    throw new Error(`--config ${file} must export the ReplicatorPlugin options (export default { replicators: [...] } or export const options = {...})`);
  }
  collectSecrets(options.replicators);
  return options;
}

/** Registers every credential-looking value of the replicators' configuration for redaction. */
function collectSecrets(value, key = '') {
  if (typeof value === 'string') {
    for (const s of secretsOf(value)) secrets.add(s);
    if (/secret|password|passwd|token|apikey|api_key/i.test(key) && value.length >= 4) secrets.add(value);
  } else if (Array.isArray(value)) {
    for (const v of value) collectSecrets(v, key);
  } else if (value && typeof value === 'object' && typeof value.createResource !== 'function') {
    for (const [k, v] of Object.entries(value)) collectSecrets(v, k);
  }
}

// ---- progress ----

function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '--';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

function formatRate(rate) {
  return rate >= 100 ? `${Math.round(rate)}` : rate.toFixed(1);
}

function progressReporter(stream) {
  const tty = Boolean(stream.isTTY);
  let lastLine = 0;
  let drawn = false;
  const line = (p) => {
    const pct = p.total > 0 ? Math.floor((p.done / p.total) * 100) : 100;
    const text = `${p.done}/${p.total} ${formatRate(p.rate)} rec/s ETA ${formatDuration(p.etaMs)} ${p.resourceName ?? ''}`.trimEnd();
    if (!tty) return `[${p.replicatorId}] ${String(pct).padStart(3)}% ${text}`;
    const width = 24;
    const filled = p.total > 0 ? Math.round((p.done / p.total) * width) : width;
    return `${p.replicatorId} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(pct).padStart(3)}% ${text}`;
  };
  return {
    update(p) {
      if (tty) {
        stream.write(`\r${redact(line(p), secrets)}\x1b[K`);
        drawn = true;
        return;
      }
      const now = Date.now();
      const final = p.done >= p.total;
      if (final || now - lastLine >= 2000) {
        lastLine = now;
        stream.write(`${redact(line(p), secrets)}\n`);
      }
    },
    end() {
      if (tty && drawn) stream.write('\n');
      drawn = false;
      lastLine = 0;
    },
  };
}

// ---- main ----

async function main(argv) {
  const args = parse(argv);
  if (args.print) {
    process.stdout.write(args.print);
    return 0;
  }
  const options = await loadOptions(args.config);
  const [{ Database }, { ReplicatorPlugin }] = await Promise.all([import('s3db.js/lite'), import('../plugin.js')]);
  const db = new Database({ connectionString: args.connection, logLevel: 'silent' });
  let failed = false;
  let plugin = null;
  try {
    await db.connect();
    plugin = new ReplicatorPlugin(options);
    await db.usePlugin(plugin);
    const available = await plugin.listReplicators();
    const chosen = args.replicators.length > 0 ? args.replicators : available.map((r) => r.id);
    const unknown = chosen.filter((id) => !available.some((r) => r.id === id));
    if (unknown.length > 0) {
      throw new Error(`Replicator not found: ${unknown.join(', ')} (available: ${available.map((r) => r.id).join(', ') || 'none'})`);
    }
    const progress = progressReporter(process.stderr);
    for (const id of chosen) {
      const info = available.find((r) => r.id === id);
      const routes = info.resources.map((r) => (r.source === r.destination ? r.source : `${r.source}→${r.destination}`)).join(', ');
      err(`Syncing replicator '${id}' (${info.driver}): ${routes}`);
      let result;
      try {
        result = await plugin.syncAllData(id, { batchSize: args.batchSize, concurrency: args.concurrency, resume: args.resume, onProgress: progress.update });
      } finally {
        progress.end();
      }
      const seconds = (result.durationMs / 1000).toFixed(1);
      const resumed = result.resumed ? ` (resumed after ${result.resumedFrom} records)` : '';
      out(`${id}: ${result.total} records: ${result.synced} synced, ${result.skipped} skipped, ${result.superseded} superseded, ${result.failed} failed in ${seconds}s${resumed}`);
      if (result.failed > 0) {
        failed = true;
        for (const e of result.errors.slice(0, 10)) err(`  ${e.resourceName}/${e.id}: ${e.error}${e.code ? ` [${e.code}]` : ''}`);
        if (result.errors.length > 10) err(`  ... and ${result.errors.length - 10} more`);
      }
    }
  } finally {
    // The engine drains what it accepted (db.disconnect() does not stop plugins added with
    // usePlugin in s3db.js 21), then the databases close.
    if (plugin?._engine) await plugin.stop().catch((error) => err(`warning: could not stop the plugin cleanly: ${error.message}`));
    await db.disconnect().catch(() => {});
  }
  if (failed) {
    err('error: some records failed to sync (see above); run the command again to retry them');
    return 1;
  }
  return 0;
}

process.on('SIGINT', () => {
  err('\ninterrupted; run the same command again to resume from the checkpoint');
  process.exit(130);
});

let code;
try {
  code = await main(process.argv.slice(2));
} catch (error) {
  if (error instanceof UsageError) {
    err(`error: ${error.message}\n`);
    process.stderr.write(USAGE);
    code = 1;
  } else {
    err(`error: ${error?.message ?? error}`);
    if (error?.description && error.description !== error.message) err(error.description);
    code = 1;
  }
}
process.exit(code);
