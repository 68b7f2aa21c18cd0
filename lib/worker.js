// `s3db-replicator worker --config options.mjs`: a delivery worker of the JetStream outbox
// (README "Scaling out"). It runs the plugin in mode 'deliver' on an empty in-memory database:
// the changes come from the stream, the replicators (sinks, transforms, shouldReplicate, an s3db
// destination opened from its connectionString) come from the same options module the
// application instances use. Stops on SIGTERM / SIGINT after draining what it has read.

import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { redact, secretsIn } from './redact.js';

export const WORKER_USAGE = `Usage: s3db-replicator worker --config <file.mjs>

Delivers the changes that application instances (mode 'publish') store in the JetStream outbox:
takes a fair share of the stream's partitions (leases that expire when a worker dies), reads each
in order and acknowledges a change (commits the partition's offset) only once every destination
has it. Run as many as you like; they share the partitions.

Options:
  --config <file.mjs>     module exporting the ReplicatorPlugin options, with
                          outbox: { jetstream: { url, ... } } (default export, or a named
                          export \`options\`; may be a function); its mode is ignored
  -h, --help              show this help

Prints JSON lines: {"event":"ready",...} once started, {"event":"partitions","owned":[...]}
whenever the partitions it owns change; stops on SIGTERM or SIGINT.
`;

export async function runWorker(argv, { stdout = process.stdout, stderr = process.stderr } = {}) {
  const secrets = new Set();
  const say = (stream, text) => stream.write(`${redact(text, secrets)}\n`);
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (error) {
    say(stderr, `error: ${error.message}\n\n${WORKER_USAGE}`);
    return 1;
  }
  if (values.help) {
    stdout.write(WORKER_USAGE);
    return 0;
  }
  if (!values.config) {
    say(stderr, `error: --config is required\n\n${WORKER_USAGE}`);
    return 1;
  }
  let db = null;
  let plugin = null;
  try {
    const options = await loadOptions(values.config, secrets);
    const [{ Database }, { ReplicatorPlugin }] = await Promise.all([import('s3db.js/lite'), import('../plugin.js')]);
    db = new Database({ connectionString: 'memory://s3db-replicator-worker/db', logLevel: 'silent' });
    await db.connect();
    plugin = new ReplicatorPlugin({ ...options, mode: 'deliver' });
    await db.usePlugin(plugin);
    plugin.on('plg:replicator:error', (e) => say(stderr, `replication failed: ${e.replicator ?? ''} ${e.resourceName ?? ''}/${e.recordId ?? ''}: ${e.error}`));
    // One line whenever the set of partitions this worker owns changes (takeovers are visible).
    let owned = '';
    const keepAlive = setInterval(() => {
      const partitions = plugin._engine?.outbox().partitions ?? [];
      if (partitions.join(',') === owned) return;
      owned = partitions.join(',');
      say(stdout, JSON.stringify({ event: 'partitions', pid: process.pid, owned: partitions }));
    }, 250);
    const signal = await new Promise((done) => {
      process.once('SIGTERM', () => done('SIGTERM'));
      process.once('SIGINT', () => done('SIGINT'));
      say(stdout, JSON.stringify({ event: 'ready', pid: process.pid, stream: options.outbox.jetstream.stream ?? 'S3DB_REPLICATOR' }));
    });
    clearInterval(keepAlive);
    say(stderr, `${signal}: draining and handing the partitions back`);
    await plugin.stop();
    await db.disconnect().catch(() => {});
    return 0;
  } catch (error) {
    say(stderr, `error: ${error?.message ?? error}`);
    if (error?.description && error.description !== error.message) say(stderr, error.description);
    if (plugin?._engine) await plugin.stop().catch(() => {});
    await db?.disconnect().catch(() => {});
    return 1;
  }
}

async function loadOptions(file, secrets) {
  let mod;
  try {
    mod = await import(pathToFileURL(resolve(file)).href);
  } catch (error) {
    throw new Error(`cannot load --config ${file}: ${error.message}`);
  }
  let options = mod.default ?? mod.options;
  if (typeof options === 'function') options = await options();
  if (!options || typeof options !== 'object' || Array.isArray(options)) {
    throw new Error(`--config ${file} must export the ReplicatorPlugin options (export default { replicators: [...], outbox: { jetstream: { url } } })`);
  }
  secretsIn(options, secrets);
  if (!options.outbox?.jetstream) {
    throw new Error(`--config ${file}: a worker needs outbox: { jetstream: { url: 'nats://127.0.0.1:4222' } } (the stream the application instances publish to)`);
  }
  return options;
}

