// `s3db-replicator dead-letters list | show ID | retry [ID...] | discard [ID...]`.
// list and show read <outbox dir>/dead-letters.jsonl (read-only: safe beside a running app).
// retry and discard change the outbox, which one process owns at a time: the command opens the
// plugin itself (as `sync` does: retried changes are delivered, then it stops) and refuses, naming
// the pid, while the app runs; there, call plugin.retryDeadLetters() / discardDeadLetters().
import { createInterface } from 'node:readline/promises';

import { SOURCE_HELP, SOURCE_OPTIONS, loadOptions, openPlugin, outboxDir } from './config.js';
import { clean, err, out, UsageError } from './output.js';
import { readDeadLetters, readStatus, stateOf } from './outbox-files.js';
import { ago, table } from './table.js';

export const usage = `Usage: s3db-replicator dead-letters <list | show ID | retry [ID...] | discard [ID...]>
                      --connection <connection string> --config <file.mjs> [options]

Dead letters are changes a destination failed for good (kept in <outbox dir>/dead-letters.jsonl).
  list              id, replicator, resource, record id, operation, error, attempts, age
  show ID           one dead letter in full (JSON, with the change's data)
  retry [ID...]     re-send them (default: all that match the filters) to the replicator and
                    destination that failed them; waits until each is delivered or fails again
  discard [ID...]   delete them for good (default: all that match the filters); asks first on a
                    terminal, and needs --yes otherwise

list and show work while the app runs. retry and discard open the outbox, which belongs to one
process at a time: stop the app first, or call plugin.retryDeadLetters() /
plugin.discardDeadLetters() from it. Needs a disk outbox (file:// or s3:// source, or
outbox: { dir }).

Options:
${SOURCE_HELP}
  --replicator <id>       only this replicator's dead letters
  --resource <name>       only dead letters of this source resource
  --limit <n>             list: at most n (default 50; the oldest first)
  --json                  list / show / retry: JSON output
  -y, --yes               discard without asking
  -h, --help              show this help

Exit status: 0 on success, 1 on an error, a refused discard, or a retry that failed again.
`;

export const summary = 'list, show, retry or discard dead letters';

export const options = {
  ...SOURCE_OPTIONS,
  replicator: { type: 'string' },
  resource: { type: 'string' },
  limit: { type: 'string' },
  json: { type: 'boolean' },
  yes: { type: 'boolean', short: 'y' },
};

const ACTIONS = ['list', 'show', 'retry', 'discard'];

function parseIds(words) {
  return words.map((w) => {
    if (!/^\d+$/.test(w)) throw new UsageError(`'${w}' is not a dead-letter id (ids are the numbers in the ID column of dead-letters list)`, usage);
    return Number(w);
  });
}

function matching(letters, values) {
  return letters.filter((l) => (!values.replicator || l.replicator === values.replicator) && (!values.resource || l.resourceName === values.resource));
}

function filtersText(values) {
  const parts = [];
  if (values.replicator) parts.push(`replicator '${values.replicator}'`);
  if (values.resource) parts.push(`resource '${values.resource}'`);
  return parts.length > 0 ? ` of ${parts.join(' and ')}` : '';
}

/** The dead letters the ids (or, without ids, the filters) name; an unknown id is an error. */
function select(letters, ids, values) {
  const candidates = matching(letters, values);
  if (ids.length === 0) return candidates;
  const byId = new Map(candidates.map((l) => [l.id, l]));
  const missing = ids.filter((id) => !byId.has(id));
  if (missing.length > 0) {
    throw new Error(`no dead letter${missing.length > 1 ? 's' : ''} ${missing.join(', ')}${filtersText(values)} (see: s3db-replicator dead-letters list)`);
  }
  return [...new Set(ids)].map((id) => byId.get(id));
}

export function renderList(letters, total, now = Date.now()) {
  if (total === 0) return 'no dead letters';
  const rows = letters.map((l) => [l.id, l.replicator, l.resourceName, l.recordId, l.operation, l.code ? `${l.code}: ${l.error}` : l.error, l.attempts, ago(l.failedAt, now)]);
  const shown = letters.length < total ? `\n(${letters.length} of ${total}; --limit to see more)` : '';
  return `${table(['ID', 'REPLICATOR', 'RESOURCE', 'RECORD', 'OPERATION', 'ERROR', 'ATTEMPTS', 'AGE'], rows, { maxWidth: 50 })}${shown}`;
}

/** Refuses while a process runs the plugin on this outbox (it owns the dead letters). */
async function requireIdle(dir, action) {
  const status = await readStatus(dir);
  if (stateOf(status) === 'running') {
    throw new Error(`the outbox ${dir} is in use by a running process (pid ${status.pid}): ${action} dead letters from that app (plugin.${action}DeadLetters(...)), or stop it and run this command again`);
  }
}

async function openOwned(values, pluginOptions, dir, action) {
  try {
    return await openPlugin(values.connection, pluginOptions);
  } catch (error) {
    if (error?.code === 'ERR_CONFIG' && /outbox/i.test(`${error.message} ${error.context?.option ?? ''}`)) {
      const status = await readStatus(dir).catch(() => null);
      throw new Error(`the outbox ${dir} is in use by another process${status?.pid ? ` (pid ${status.pid})` : ''}: ${action} dead letters from that app (plugin.${action}DeadLetters(...)), or stop it and run this command again (${error.message})`);
    }
    throw error;
  }
}

async function confirm(question) {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(question)).trim());
  } finally {
    rl.close();
  }
}

export async function run(values, positionals) {
  const [action, ...rest] = positionals;
  if (!action) throw new UsageError(`missing action (${ACTIONS.join(', ')})`, usage);
  if (!ACTIONS.includes(action)) throw new UsageError(`unknown action '${action}' (actions: ${ACTIONS.join(', ')})`, usage);
  if (!values.connection) throw new UsageError('--connection is required', usage);
  if (!values.config) throw new UsageError('--config is required', usage);
  let limit = 50;
  if (values.limit !== undefined) {
    if (action !== 'list') throw new UsageError('--limit goes with list', usage);
    if (!/^\d+$/.test(values.limit) || Number(values.limit) < 1) throw new UsageError(`--limit must be a positive integer (got '${values.limit}')`, usage);
    limit = Number(values.limit);
  }
  if (action === 'list' && rest.length > 0) throw new UsageError(`unexpected argument '${rest[0]}' (list takes filters: --replicator, --resource)`, usage);
  if (action === 'show' && rest.length !== 1) throw new UsageError('show takes one dead-letter id: dead-letters show ID', usage);
  const ids = parseIds(rest);
  const pluginOptions = await loadOptions(values.config);
  const dir = outboxDir(values.connection, pluginOptions);
  if (!dir) {
    throw new Error('dead letters outlive the process only with a disk outbox: with a memory:// source or outbox: false they are in the app\'s memory (plugin.getDeadLetters()). Use a file:// or s3:// source, or set outbox: { dir } in the config');
  }
  const letters = await readDeadLetters(dir);

  if (action === 'list') {
    const found = matching(letters, values);
    const page = found.slice(0, limit);
    out(values.json ? JSON.stringify(page, null, 2) : renderList(page, found.length));
    return 0;
  }
  if (action === 'show') {
    const [letter] = select(letters, ids, values);
    out(JSON.stringify(letter, null, 2));
    return 0;
  }

  const chosen = select(letters, ids, values);
  if (chosen.length === 0) {
    out(`no dead letters${filtersText(values)} to ${action}`);
    return 0;
  }
  await requireIdle(dir, action);
  if (action === 'discard' && !values.yes) {
    if (!process.stdin.isTTY) {
      throw new Error(`refusing to discard ${chosen.length} dead letter${chosen.length > 1 ? 's' : ''} without confirmation: stdin is not a terminal; add --yes`);
    }
    if (!(await confirm(clean(`Discard ${chosen.length} dead letter${chosen.length > 1 ? 's' : ''}${filtersText(values)} for good (ids ${chosen.map((l) => l.id).join(', ')})? [y/N] `)))) {
      err('nothing discarded');
      return 1;
    }
  }
  const { plugin, close } = await openOwned(values, pluginOptions, dir, action);
  try {
    const selected = chosen.map((l) => l.id);
    if (action === 'discard') {
      const removed = await plugin.discardDeadLetters(selected);
      out(`discarded ${removed} dead letter${removed === 1 ? '' : 's'}`);
      return 0;
    }
    const result = await plugin.retryDeadLetters({ ids: selected });
    if (values.json) out(JSON.stringify(result, null, 2));
    else {
      out(`retried ${result.retried}: ${result.delivered} delivered, ${result.failed} failed again, ${result.superseded} superseded, ${result.skipped} skipped`);
      for (const e of result.errors.slice(0, 10)) err(`  ${e.id} ${e.replicator} ${e.recordId}: ${e.error}${e.code ? ` [${e.code}]` : ''}`);
    }
    return result.failed > 0 ? 1 : 0;
  } finally {
    await close().catch((error) => err(`warning: could not stop the plugin cleanly: ${error.message}`));
  }
}
