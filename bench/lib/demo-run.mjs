// The README demo as a bench section (`--only demo`): examples/demo.mjs with 20,000 changes
// (64 writes in flight to a memory:// source, replicated to a file:// s3db database and a local
// webhook), run in its own process with the addon the bench measures. Its figure: how long after
// the last write every change was delivered (issue #12's aim: within 0.5 s), next to the file://
// destination's own write rate, which bounds it (a file:// replace() is a temp file, a rename
// and a metadata file: see bench/README.md).

import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Database } from 's3db.js/lite';

import { pool } from './limits-run.mjs';

const DEMO = fileURLToPath(new URL('../../examples/demo.mjs', import.meta.url));
export const DEMO_CHANGES = 20_000;

/** One demo run: its JSON figures (examples/demo.mjs --json). */
function runDemoScript(changes, timeoutMs) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [DEMO, String(changes), '--json'], { timeout: timeoutMs, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop();
      if (error) return reject(new Error(`${error.message}\n${stderr}`));
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`the demo printed no figures: ${stdout}\n${stderr}`));
      }
    });
  });
}

/** replace() rate of a file:// resource of the demo's shape, 64 in flight: the backup's own limit. */
async function fileReplaceRate(n) {
  const dir = join(tmpdir(), `s3dbr-bench-file-${process.pid}`);
  await rm(dir, { recursive: true, force: true });
  const db = new Database({ connectionString: `file://${dir}`, logLevel: 'silent' });
  await db.connect();
  const users = await db.createResource({ name: 'users', attributes: { email: 'string', plan: 'string', logins: 'number' }, behavior: 'body-overflow', timestamps: false });
  const rate = await pool(n, 64, Infinity, (i) => users.replace(`u${i}`, { id: `u${i}`, email: `user${i}@example.com`, plan: 'free', logins: i }));
  await db.disconnect().catch(() => {});
  await rm(dir, { recursive: true, force: true });
  return rate;
}

export async function runDemo(job) {
  const result = await runDemoScript(DEMO_CHANGES, job.timeoutMs);
  return { ...result, fileReplaceRate: await fileReplaceRate(5_000) };
}

/** The demo section's table (medians over --repeat). */
export function renderDemo(a) {
  const g = (path) => a.get('demo', 'ours', '-', '-', path);
  const f = (v, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : '—');
  const rows = [
    ['changes written (memory://, 64 in flight)', f(g('writes'), 0)],
    ['source writes/s', f(g('writes') / (g('writeMs') / 1000), 0)],
    ['all delivered after the last write (s)', f(g('afterLastWriteMs') / 1000)],
    ['file backup lag p50 / p99 (ms)', `${f(g('lag.file-backup.p50'), 1)} / ${f(g('lag.file-backup.p99'), 1)}`],
    ['webhook lag p50 / p99 (ms)', `${f(g('lag.crm-webhook.p50'), 1)} / ${f(g('lag.crm-webhook.p99'), 1)}`],
    ['file:// replace() rate, 64 in flight: the backup\'s own limit (writes/s)', f(g('fileReplaceRate'), 0)],
    ['errors (worst run)', f(a.worst('demo', 'ours', '-', '-', 'errors'), 0)],
    ['backup users = source users (every run)', a.runs.filter((r) => r.kind === 'demo').every((r) => r.result.backupUsers === r.result.sourceUsers) ? 'yes' : 'NO'],
  ];
  return [
    '## The README demo (`./scripts/demo.sh`)',
    '',
    `examples/demo.mjs --json, ${DEMO_CHANGES.toLocaleString('en-US')} changes, in its own process with the measured addon; medians of ${a.opts.repeat}.`,
    '',
    '| figure | value |',
    '| --- | --- |',
    ...rows.map(([k, v]) => `| ${k} | ${v} |`),
    '',
  ].join('\n');
}
