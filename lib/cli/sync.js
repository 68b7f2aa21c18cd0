// `s3db-replicator sync`: syncAllData of the chosen replicators, with progress and a summary.
import { SOURCE_HELP, SOURCE_OPTIONS, loadOptions, openPlugin } from './config.js';
import { err, out, UsageError } from './output.js';
import { progressReporter } from './progress.js';

export const usage = `Usage: s3db-replicator sync --connection <connection string> --config <file.mjs> [options]

Copies every existing record of the source database through the replicators (ReplicatorPlugin
syncAllData): batched, concurrent, resumable after a crash (with an outbox on disk), alongside
live changes.

Options:
${SOURCE_HELP}
  --replicator <id>       replicator to sync (repeat for several; default: all)
  --batch-size <n>        ids read per page (default 100)
  --concurrency <n>       pages read at once (default 4)
  --no-resume             ignore a saved checkpoint and start over
  -h, --help              show this help

Progress goes to stderr: a bar with rate and ETA on a terminal, a plain line every 2 s otherwise.
A sync that was interrupted resumes from its checkpoint, <outbox dir>/sync/<replicator>.json: the
outbox is on disk for file:// and s3:// sources (default ./.s3db-replicator/<source>, or the
config's outbox.dir); with a memory:// source or outbox: false every run starts over.

Exit status: 0 when every record was synced (or skipped), 1 when something failed.
`;

export const summary = 'copy every existing record through the replicators';

export const options = {
  ...SOURCE_OPTIONS,
  replicator: { type: 'string', multiple: true },
  'batch-size': { type: 'string' },
  concurrency: { type: 'string' },
  'no-resume': { type: 'boolean' },
};

function positiveInteger(values, name, fallback) {
  const raw = values[name];
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new UsageError(`--${name} must be a positive integer (got '${raw}')`, usage);
  return Number(raw);
}

export async function run(values, positionals) {
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`, usage);
  if (!values.connection) throw new UsageError('--connection is required', usage);
  if (!values.config) throw new UsageError('--config is required', usage);
  const batchSize = positiveInteger(values, 'batch-size', 100);
  const concurrency = positiveInteger(values, 'concurrency', 4);
  const pluginOptions = await loadOptions(values.config);
  const { plugin, close } = await openPlugin(values.connection, pluginOptions);
  let failed = false;
  try {
    const available = await plugin.listReplicators();
    const chosen = values.replicator?.length > 0 ? values.replicator : available.map((r) => r.id);
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
        result = await plugin.syncAllData(id, { batchSize, concurrency, resume: !values['no-resume'], onProgress: progress.update });
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
    await close().catch((error) => err(`warning: could not stop the plugin cleanly: ${error.message}`));
  }
  if (failed) {
    err('error: some records failed to sync (see above); run the command again to retry them');
    return 1;
  }
  return 0;
}
