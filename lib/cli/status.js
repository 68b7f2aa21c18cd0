// `s3db-replicator status`: per replicator health, lag, queue depth, delivered / failed counts,
// the outbox and its dead letters, from <outbox dir>/status.json (written by the process that
// runs the plugin, lib/status-file.js) and the dead-letter file, so it works beside a running app
// and after it stopped, without opening the outbox (which would replay what it holds).
import { SOURCE_HELP, SOURCE_OPTIONS, loadOptions, outboxDir } from './config.js';
import { clean, UsageError } from './output.js';
import { readDeadLetters, readStatus, stateOf } from './outbox-files.js';
import { ago, formatBytes, table } from './table.js';
import { formatDuration } from './progress.js';

export const usage = `Usage: s3db-replicator status --connection <connection string> --config <file.mjs> [options]

Shows, per replicator, health (circuit breaker), queue depth, lag (age of the oldest change in
progress), delivered / failed / retried counts, the last error, and the outbox: pending changes
and dead letters. Works while the app runs (its plugin writes <outbox dir>/status.json about once
a second) and after it stopped (the last snapshot, marked stopped, plus the dead letters on disk).
Needs a disk outbox (file:// or s3:// source, or outbox: { dir }): with a memory:// source or
outbox: false nothing outlives the process.

Options:
${SOURCE_HELP}
  --json                  print one JSON document: getReplicatorStats() of the app
                          (replicators, stats, outbox, lastSync) plus state, pid, startedAt,
                          updatedAt, stoppedAt, dir and deadLetters { total, byReplicator }
  --watch                 refresh every --interval seconds (in place on a terminal; one
                          block, or one JSON line with --json, per refresh otherwise)
  --interval <seconds>    refresh interval of --watch (default 2)
  --count <n>             with --watch: stop after n refreshes (default: until Ctrl-C)
  -h, --help              show this help

Exit status: 0 when a status was shown, 1 on an error (no disk outbox, no plugin ever ran on it,
a config that cannot be loaded).
`;

export const summary = 'health, lag, queues, counts, outbox and dead letters of each replicator';

export const options = {
  ...SOURCE_OPTIONS,
  json: { type: 'boolean' },
  watch: { type: 'boolean' },
  interval: { type: 'string' },
  count: { type: 'string' },
};

/** The status document of the outbox in `dir` (what --json prints). */
export async function statusReport(dir) {
  const status = await readStatus(dir);
  const letters = await readDeadLetters(dir);
  const byReplicator = {};
  for (const l of letters) byReplicator[l.replicator] = (byReplicator[l.replicator] ?? 0) + 1;
  return {
    state: stateOf(status),
    dir,
    pid: status?.pid ?? null,
    startedAt: status?.startedAt ?? null,
    updatedAt: status?.updatedAt ?? null,
    stoppedAt: status?.stoppedAt ?? null,
    replicators: status?.replicators ?? [],
    stats: status?.stats ?? null,
    outbox: status?.outbox ?? null,
    lastSync: status?.lastSync ?? null,
    deadLetters: { total: letters.length, byReplicator },
  };
}

/** The report as text for a terminal. */
export function renderStatus(report, now = Date.now()) {
  const lines = [];
  if (report.state === 'running') {
    lines.push(`running: pid ${report.pid}, up ${formatDuration(now - Date.parse(report.startedAt))}, updated ${ago(report.updatedAt, now)}`);
  } else if (report.stoppedAt) {
    lines.push(`stopped: ${ago(report.stoppedAt, now)} (pid ${report.pid}); counts as of then, dead letters as on disk now`);
  } else {
    lines.push(`stopped: pid ${report.pid} ended without stopping the plugin (last update ${ago(report.updatedAt, now)}); counts as of then`);
  }
  const o = report.outbox ?? {};
  lines.push(`outbox: ${report.dir}: ${o.pending ?? 0} pending, ${o.segments ?? 0} segments, ${formatBytes(o.bytes ?? 0)}; ${report.deadLetters.total} dead letters`);
  const s = report.stats;
  if (s) lines.push(`totals: ${s.totalReplications} replicated, ${s.totalErrors} errors, ${s.totalSkipped} skipped${s.lastSync ? `, last sync ${s.lastSync}` : ''}`);
  lines.push('');
  const rows = report.replicators.map((r) => [
    r.id,
    r.driver,
    r.enabled ? r.health : 'disabled',
    r.status.queued,
    formatDuration(r.status.oldestPendingMs),
    r.status.delivered,
    r.status.failed,
    r.status.retried,
    report.deadLetters.byReplicator[r.id] ?? 0,
    r.status.lastError ?? '',
  ]);
  lines.push(table(['REPLICATOR', 'DRIVER', 'HEALTH', 'QUEUED', 'LAG', 'DELIVERED', 'FAILED', 'RETRIED', 'DEAD LETTERS', 'LAST ERROR'], rows));
  return lines.join('\n');
}

function positiveNumber(values, name, fallback, integer) {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${name} must be a positive ${integer ? 'integer' : 'number'} (got '${raw}')`, usage);
  }
  return n;
}

export async function run(values, positionals) {
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`, usage);
  if (!values.connection) throw new UsageError('--connection is required', usage);
  if (!values.config) throw new UsageError('--config is required', usage);
  const interval = positiveNumber(values, 'interval', 2, false);
  const count = positiveNumber(values, 'count', Infinity, true);
  if (!values.watch && (values.interval !== undefined || values.count !== undefined)) {
    throw new UsageError('--interval and --count go with --watch', usage);
  }
  const pluginOptions = await loadOptions(values.config);
  const dir = outboxDir(values.connection, pluginOptions);
  if (!dir) {
    throw new Error('status needs a disk outbox: with a memory:// source or outbox: false the plugin keeps everything in memory, so nothing outlives the process. Use a file:// or s3:// source, or set outbox: { dir } in the config (then call plugin.getReplicatorStats() in the app for a memory outbox)');
  }
  const tty = Boolean(process.stdout.isTTY) && !values.json;
  for (let round = 1; ; round++) {
    const report = await statusReport(dir);
    if (report.state === 'never-started') {
      throw new Error(`no plugin has run on the outbox ${dir} yet (no status.json there): start the app, or check --connection, the config's outbox.dir, and that this runs in the app's working directory`);
    }
    const text = values.json ? JSON.stringify(report, null, values.watch ? 0 : 2) : renderStatus(report);
    // In place on a terminal: home, clear, redraw.
    process.stdout.write(`${values.watch && tty ? '\x1b[H\x1b[2J' : ''}${clean(text)}\n${values.watch && !tty && !values.json ? '\n' : ''}`);
    if (!values.watch || round >= count) return 0;
    await new Promise((resolve) => setTimeout(resolve, interval * 1000));
  }
}
