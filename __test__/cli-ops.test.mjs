// The command line's `status` and `dead-letters`, end to end in child processes, against a
// file:// source whose webhook replicator produced real dead letters (the receiver refused them).
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { startWebhookServer } from './helpers/http-server.mjs';

const CLI = fileURLToPath(new URL('../bin/s3db-replicator.mjs', import.meta.url));
const APP = fileURLToPath(new URL('./fixtures/ops-app.mjs', import.meta.url));
const TOKEN = 'tok-CliSekr3t-77';
/** script(1) (util-linux) runs a command on a pseudo-terminal. */
const HAS_SCRIPT = spawnSync('script', ['--version']).status === 0;
assert.ok(HAS_SCRIPT, 'script(1) (util-linux) is needed to run the CLI on a pseudo-terminal');
const SOURCE_PASSWORD = 'SrcPa55Sekr3t';

function cli(args, { cwd, input } = {}) {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { cwd, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin.end(input);
  });
}

/** The CLI on a pseudo-terminal (stdin and stdout are a TTY), `input` typed into it. */
function cliOnTerminal(args, { cwd, input = '' } = {}) {
  const quote = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;
  return new Promise((resolve) => {
    const child = execFile('script', ['-qefc', [process.execPath, CLI, ...args].map(quote).join(' '), '/dev/null'], { cwd, timeout: 60_000 }, (error, stdout) => {
      resolve({ code: error ? error.code : 0, stdout, stderr: '' });
    });
    child.stdin.end(input);
  });
}

/** Runs the app fixture; `stay` resolves once it printed `ready` (with the child, to kill). */
function app(args, mode) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [APP, ...args, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      if (mode === 'stay' && stdout.includes('\nready\n')) resolve({ child, stats: JSON.parse(stdout.split('\n')[0]) });
    });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('exit', (code) => {
      if (mode !== 'stay' && code === 0) resolve({ stats: JSON.parse(stdout.trim().split('\n').at(-1)) });
      else reject(new Error(`app exited with ${code}: ${stderr}`));
    });
  });
}

async function setup(t) {
  const dir = await mkdtemp(join(tmpdir(), 's3db-cli-ops-'));
  const hook = await startWebhookServer();
  let accepting = false;
  // Refused for good (400) until the test says otherwise: each change becomes a dead letter.
  hook.respond = () => (accepting ? { status: 200 } : { status: 400, body: '{"error":"refused"}' });
  t.after(async () => {
    await hook.close();
    await rm(dir, { recursive: true, force: true });
  });
  const config = join(dir, 'replication.mjs');
  await writeFile(config, `export const options = {
  outbox: { dir: ${JSON.stringify(join(dir, 'outbox'))} },
  circuitBreaker: false,
  replicators: [
    { id: 'backup', driver: 's3db', resources: ['users'], config: { connectionString: ${JSON.stringify(`file://${join(dir, 'dst')}`)} } },
    { id: 'hook', driver: 'webhook', resources: ['users'], config: { url: ${JSON.stringify(hook.url)}, auth: { type: 'bearer', token: ${JSON.stringify(TOKEN)} }, retries: 0 } },
  ],
};\n`);
  const connection = `file://${join(dir, 'src')}`;
  return { dir, hook, config, connection, accept: () => { accepting = true; } };
}

const noSecret = (...outputs) => {
  for (const o of outputs) {
    const text = o.stdout + o.stderr;
    assert.ok(!text.includes(TOKEN) && !text.includes(SOURCE_PASSWORD), text);
  }
};

test('status --json after the app stopped matches its getReplicatorStats(), with the dead letters on disk', { timeout: 120_000 }, async (t) => {
  const { hook, config, connection, dir } = await setup(t);
  const { stats } = await app([connection, config, '3'], 'stop');
  assert.equal(stats.replicators.find((r) => r.id === 'hook').status.deadLettered, 3, 'the receiver refused every change');

  const json = await cli(['status', '--connection', connection, '--config', config, '--json'], { cwd: dir });
  assert.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout);
  assert.equal(report.state, 'stopped');
  assert.equal(report.dir, join(dir, 'outbox'));
  assert.ok(report.stoppedAt && report.pid > 0);
  for (const key of ['replicators', 'stats', 'outbox', 'lastSync']) assert.deepEqual(report[key], stats[key], key);
  assert.deepEqual(report.deadLetters, { total: 3, byReplicator: { hook: 3 } });

  const text = await cli(['status', '--connection', connection, '--config', config], { cwd: dir });
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^stopped: \d+s ago \(pid \d+\)/);
  assert.match(text.stdout, /; 3 dead letters\n/);
  assert.match(text.stdout, /^REPLICATOR\s+DRIVER\s+HEALTH\s+QUEUED\s+LAG\s+DELIVERED\s+FAILED\s+RETRIED\s+DEAD LETTERS\s+LAST ERROR$/m);
  assert.match(text.stdout, /^backup\s+s3db\s+healthy\s+0\s+0s\s+3\s+0\s+0\s+0\s+-$/m);
  assert.match(text.stdout, /^hook\s+webhook\s+\w+\s+0\s+0s\s+0\s+3\s+0\s+3\s+\S.*400/m);
  noSecret(json, text);
  assert.ok(hook.requests.length >= 3);
});

test('dead-letters list, show, discard (confirmation) and retry work on the real dead letters', { timeout: 120_000 }, async (t) => {
  const { hook, config, connection, dir, accept } = await setup(t);
  await app([connection, config, '3'], 'stop');
  const base = ['--connection', connection, '--config', config];

  const list = await cli(['dead-letters', 'list', ...base], { cwd: dir });
  assert.equal(list.code, 0, list.stderr);
  const lines = list.stdout.trim().split('\n');
  assert.match(lines[0], /^ID\s+REPLICATOR\s+RESOURCE\s+RECORD\s+OPERATION\s+ERROR\s+ATTEMPTS\s+AGE$/);
  assert.equal(lines.length, 4, list.stdout);
  assert.match(lines[1], /^\s*\d+\s+hook\s+users\s+u\d\s+inserted\s+ERR_SINK_REJECTED: .*400.*\s1\s+\d+s ago$/);
  const json = await cli(['dead-letters', 'list', ...base, '--json'], { cwd: dir });
  const letters = JSON.parse(json.stdout);
  assert.deepEqual(letters.map((l) => l.recordId).sort(), ['u0', 'u1', 'u2']);
  const none = await cli(['dead-letters', 'list', ...base, '--replicator', 'backup'], { cwd: dir });
  assert.equal(none.stdout, 'no dead letters\n');
  const limited = await cli(['dead-letters', 'list', ...base, '--limit', '1'], { cwd: dir });
  assert.match(limited.stdout, /\(1 of 3; --limit to see more\)\n$/);

  const [first, second, third] = letters;
  const show = await cli(['dead-letters', 'show', String(first.id), ...base], { cwd: dir });
  assert.equal(show.code, 0, show.stderr);
  const shown = JSON.parse(show.stdout);
  assert.equal(shown.id, first.id);
  assert.equal(shown.data.name, `user ${first.recordId.slice(1)}`);
  assert.equal(shown.code, 'ERR_SINK_REJECTED');
  const missing = await cli(['dead-letters', 'show', '999999', ...base], { cwd: dir });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^error: no dead letter 999999 \(see: s3db-replicator dead-letters list\)/);

  {
    const declined = await cliOnTerminal(['dead-letters', 'discard', String(first.id), ...base], { cwd: dir, input: 'n\n' });
    assert.equal(declined.code, 1, declined.stdout);
    assert.match(declined.stdout, new RegExp(`Discard 1 dead letter for good \\(ids ${first.id}\\)\\? \\[y/N\\] `));
    assert.match(declined.stdout, /nothing discarded/);
  }
  const refused = await cli(['dead-letters', 'discard', String(first.id), ...base], { cwd: dir, input: '' });
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /refusing to discard 1 dead letter without confirmation: stdin is not a terminal; add --yes/);
  const discarded = await cli(['dead-letters', 'discard', String(first.id), ...base, '--yes'], { cwd: dir });
  assert.equal(discarded.code, 0, discarded.stderr);
  assert.equal(discarded.stdout, 'discarded 1 dead letter\n');

  accept();
  const before = hook.requests.length;
  const retried = await cli(['dead-letters', 'retry', ...base], { cwd: dir });
  assert.equal(retried.code, 0, retried.stderr);
  assert.equal(retried.stdout, 'retried 2: 2 delivered, 0 failed again, 0 superseded, 0 skipped\n');
  const delivered = hook.requests.slice(before).filter((r) => r.status === 200).map((r) => r.body.data.id).sort();
  assert.deepEqual(delivered, [second.recordId, third.recordId].sort(), 'only the two kept were re-sent');
  const empty = await cli(['dead-letters', 'list', ...base], { cwd: dir });
  assert.equal(empty.stdout, 'no dead letters\n');
  noSecret(list, json, show, refused, discarded, retried);
});

test('beside a running app: status says running with its pid, --watch refreshes, retry refuses naming the pid', { timeout: 120_000 }, async (t) => {
  const { config, connection, dir } = await setup(t);
  const { child } = await app([connection, config, '2'], 'stay');
  t.after(() => child.kill('SIGKILL'));
  const base = ['--connection', connection, '--config', config];

  const status = await cli(['status', ...base, '--json'], { cwd: dir });
  assert.equal(status.code, 0, status.stderr);
  const report = JSON.parse(status.stdout);
  assert.equal(report.state, 'running');
  assert.equal(report.pid, child.pid);
  assert.equal(report.stoppedAt, null);

  const watch = await cli(['status', ...base, '--watch', '--interval', '0.2', '--count', '2'], { cwd: dir });
  assert.equal(watch.code, 0, watch.stderr);
  const blocks = watch.stdout.split(/^running: /m).filter(Boolean);
  assert.equal(blocks.length, 2, watch.stdout);
  assert.ok(!watch.stdout.includes('\x1b['), 'no terminal codes when stdout is not a terminal');
  {
    const drawn = await cliOnTerminal(['status', ...base, '--watch', '--interval', '0.2', '--count', '2'], { cwd: dir });
    assert.equal(drawn.code, 0, drawn.stdout);
    assert.equal(drawn.stdout.split('\x1b[H\x1b[2J').length - 1, 2, 'each refresh redraws the screen in place');
    assert.match(drawn.stdout, /\x1b\[H\x1b\[2Jrunning: pid \d+/);
  }
  const lines = await cli(['status', ...base, '--watch', '--json', '--interval', '0.2', '--count', '2'], { cwd: dir });
  assert.deepEqual(lines.stdout.trim().split('\n').map((l) => JSON.parse(l).state), ['running', 'running']);

  const retry = await cli(['dead-letters', 'retry', ...base], { cwd: dir });
  assert.equal(retry.code, 1);
  assert.match(retry.stderr, new RegExp(`^error: the outbox .* is in use by a running process \\(pid ${child.pid}\\): retry dead letters from that app \\(plugin\\.retryDeadLetters\\(\\.\\.\\.\\)\\), or stop it`));
  const list = await cli(['dead-letters', 'list', ...base], { cwd: dir });
  assert.equal(list.code, 0, 'listing reads the file, beside the running app');
  assert.equal(list.stdout.trim().split('\n').length, 3);
});

test('status after a script that ended without stop(): stopped, with the counts of its end', { timeout: 60_000 }, async (t) => {
  const { config, connection, dir } = await setup(t);
  const { stats } = await app([connection, config, '2'], 'exit');
  const status = await cli(['status', '--connection', connection, '--config', config, '--json'], { cwd: dir });
  assert.equal(status.code, 0, status.stderr);
  const report = JSON.parse(status.stdout);
  assert.equal(report.state, 'stopped');
  assert.ok(report.stoppedAt, 'the exit is recorded');
  assert.deepEqual(report.replicators.map((r) => [r.id, r.status.delivered, r.status.deadLettered]), stats.replicators.map((r) => [r.id, r.status.delivered, r.status.deadLettered]));
});

test('status and dead-letters: clear errors for a memory outbox, a missing or broken config, bad flags; --help each', { timeout: 60_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 's3db-cli-errors-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const memoryConfig = join(dir, 'memory.mjs');
  await writeFile(memoryConfig, "export default { replicators: [{ driver: 's3db', resources: ['users'], config: { connectionString: 'memory://copy' } }] };\n");
  const broken = join(dir, 'broken.mjs');
  await writeFile(broken, 'export default { replicators: [ \n');
  const source = `s3://KEY:${SOURCE_PASSWORD}@bucket/app`;

  for (const command of [['status'], ['dead-letters', 'list']]) {
    const memory = await cli([...command, '--connection', 'memory://app/data', '--config', memoryConfig]);
    assert.equal(memory.code, 1);
    assert.match(memory.stderr, /^error: (status needs a disk outbox|dead letters outlive the process only with a disk outbox)/);
    const missing = await cli([...command, '--connection', source, '--config', join(dir, 'nope.mjs')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: --config .*nope\.mjs: no such file/);
    const bad = await cli([...command, '--connection', source, '--config', broken]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: cannot load --config .*broken\.mjs: /);
    const noConnection = await cli([...command, '--config', broken]);
    assert.equal(noConnection.code, 1);
    assert.match(noConnection.stderr, /^error: --connection is required/);
    const never = await cli([...command, '--connection', `file://${join(dir, 'src')}`, '--config', memoryConfig], { cwd: dir });
    if (command[0] === 'status') {
      assert.equal(never.code, 1);
      assert.match(never.stderr, /^error: no plugin has run on the outbox .* yet/);
    } else {
      assert.equal(never.stdout, 'no dead letters\n');
    }
    noSecret(memory, missing, bad, noConnection, never);
  }
  const action = await cli(['dead-letters', 'frob', '--connection', source, '--config', broken]);
  assert.equal(action.code, 1);
  assert.match(action.stderr, /^error: unknown action 'frob' \(actions: list, show, retry, discard\)/);
  const id = await cli(['dead-letters', 'retry', 'x1', '--connection', source, '--config', broken]);
  assert.match(id.stderr, /^error: 'x1' is not a dead-letter id/);
  const interval = await cli(['status', '--connection', source, '--config', broken, '--watch', '--interval', '0']);
  assert.match(interval.stderr, /^error: --interval must be a positive number \(got '0'\)/);
  noSecret(action, id, interval);

  for (const [args, first] of [[['status', '--help'], /^Usage: s3db-replicator status --connection/], [['help', 'status'], /^Usage: s3db-replicator status/], [['dead-letters', '-h'], /^Usage: s3db-replicator dead-letters <list \| show ID \| retry \[ID\.\.\.\] \| discard \[ID\.\.\.\]>/], [['help', 'dead-letters'], /^Usage: s3db-replicator dead-letters/]]) {
    const help = await cli(args);
    assert.equal(help.code, 0, args.join(' '));
    assert.match(help.stdout, first, args.join(' '));
  }
});
