// The command line's help and version answers, and the sync progress (its rendering, a pseudo-terminal,
// plain output); the sync command itself: full-sync.test.mjs; status and dead-letters: cli-ops.test.mjs.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../bin/s3db-replicator.mjs', import.meta.url));
const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

function cli(...args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? error.code : 0, stdout, stderr });
    });
  });
}

test('CLI: --version, -v and version print the package version and exit 0', async () => {
  for (const args of [['--version'], ['-v'], ['version']]) {
    const { code, stdout, stderr } = await cli(...args);
    assert.equal(code, 0, `${args}: ${stderr}`);
    assert.equal(stdout, `s3db-replicator ${version}\n`, args.join(' '));
  }
});

test('CLI: help and --help list the commands and the sync options', async () => {
  for (const args of [['help'], ['--help'], ['-h']]) {
    const { code, stdout, stderr } = await cli(...args);
    assert.equal(code, 0, `${args}: ${stderr}`);
    assert.match(stdout, /Commands:\n\s+sync\s/);
    assert.match(stdout, /-v, --version/);
    assert.match(stdout, /Usage: s3db-replicator sync --connection/);
  }
});

test('CLI: help sync, sync --help and sync -h print the sync usage, exit 0', async () => {
  for (const args of [['help', 'sync'], ['sync', '--help'], ['sync', '-h']]) {
    const { code, stdout, stderr } = await cli(...args);
    assert.equal(code, 0, `${args}: ${stderr}`);
    assert.match(stdout, /^Usage: s3db-replicator sync --connection <connection string> --config <file\.mjs>/);
    for (const flag of ['--replicator', '--batch-size', '--concurrency', '--no-resume']) assert.ok(stdout.includes(flag), `${args}: ${flag}`);
    assert.doesNotMatch(stdout, /Commands:/, 'only the sync usage');
  }
});

test('CLI: unknown commands and help topics exit 1 naming what exists', async () => {
  const unknown = await cli('frob');
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^error: unknown command 'frob' \(commands: sync, status, dead-letters, worker, help\)/);
  const topic = await cli('help', 'frob');
  assert.equal(topic.code, 1);
  assert.match(topic.stderr, /^error: no help for 'frob' \(commands: sync, status, dead-letters\)/);
  const none = await cli();
  assert.equal(none.code, 1);
  assert.match(none.stderr, /missing command/);
});

test('CLI progress: the rendering function draws a bar with rate and ETA for a terminal, a plain line otherwise', async () => {
  const { progressLine, formatDuration } = await import('../lib/cli/progress.js');
  const p = { replicatorId: 'backup', resourceName: 'users', done: 50, total: 200, rate: 123.4, etaMs: 1_215_000 };
  assert.equal(progressLine(p, { tty: true }), 'backup [######------------------]  25% 50/200 123 rec/s ETA 20m15s users');
  assert.equal(progressLine(p, { tty: false }), '[backup]  25% 50/200 123 rec/s ETA 20m15s users');
  assert.equal(progressLine({ ...p, done: 200, rate: 7.25, etaMs: 0 }, { tty: true }), 'backup [########################] 100% 200/200 7.3 rec/s ETA 0s users');
  assert.equal(formatDuration(null), '--');
  assert.equal(formatDuration(7_300_000), '2h01m');
});

test('CLI progress: on a terminal one line is redrawn in place; otherwise a line every 2 s and the last one', async () => {
  const { progressReporter } = await import('../lib/cli/progress.js');
  const p = (done) => ({ replicatorId: 'r', resourceName: 'users', done, total: 10, rate: 5, etaMs: (10 - done) * 200 });
  const tty = { isTTY: true, chunks: [], write(s) { this.chunks.push(s); } };
  const bar = progressReporter(tty);
  for (const done of [1, 5, 10]) bar.update(p(done));
  bar.end();
  assert.equal(tty.chunks.length, 4);
  assert.deepEqual(tty.chunks.slice(0, 3), [
    '\rr [##----------------------]  10% 1/10 5.0 rec/s ETA 2s users\x1b[K',
    '\rr [############------------]  50% 5/10 5.0 rec/s ETA 1s users\x1b[K',
    '\rr [########################] 100% 10/10 5.0 rec/s ETA 0s users\x1b[K',
  ]);
  assert.equal(tty.chunks[3], '\n', 'the finished bar stays on screen');

  let now = 0;
  const plain = { isTTY: false, chunks: [], write(s) { this.chunks.push(s); } };
  const lines = progressReporter(plain, () => now);
  lines.update(p(1)); // first line at once
  now = 1000;
  lines.update(p(3)); // within 2 s: not printed
  now = 2500;
  lines.update(p(6));
  now = 2600;
  lines.update(p(10)); // the last one always
  assert.deepEqual(plain.chunks, ['[r]  10% 1/10 5.0 rec/s ETA 2s users\n', '[r]  60% 6/10 5.0 rec/s ETA 1s users\n', '[r] 100% 10/10 5.0 rec/s ETA 0s users\n']);
});

test('CLI sync under a pseudo-terminal draws the bar in place; without one it prints plain lines', { timeout: 120_000 }, async (t) => {
  const { mkdtemp, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { Database } = await import('s3db.js/lite');
  const dir = await mkdtemp(join(tmpdir(), 's3db-cli-pty-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const db = new Database({ connectionString: `file://${join(dir, 'src')}`, logLevel: 'silent' });
  await db.connect();
  const users = await db.createResource({ name: 'users', attributes: { name: 'string' } });
  for (let i = 0; i < 30; i++) await users.insert({ id: `u${String(i).padStart(2, '0')}`, name: `n${i}` });
  await db.disconnect();
  const config = join(dir, 'replication.mjs');
  await writeFile(config, `export default { outbox: { dir: ${JSON.stringify(join(dir, 'outbox'))} }, replicators: [{ id: 'copy', driver: 's3db', resources: ['users'], config: { connectionString: 'memory://copy/data' } }] };\n`);
  const args = [CLI, 'sync', '--connection', `file://${join(dir, 'src')}`, '--config', config, '--batch-size', '10', '--no-resume'];
  const quote = (s) => `'${s.replace(/'/g, "'\\''")}'`;
  // script(1) runs the command on a pseudo-terminal and copies what it draws to stdout.
  assert.ok(spawnSync('script', ['--version']).status === 0, 'script(1) (util-linux) is needed to run the CLI on a pseudo-terminal');
  const pty = await new Promise((resolve) => {
    execFile('script', ['-qefc', [process.execPath, ...args].map(quote).join(' '), '/dev/null'], { timeout: 60_000 }, (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
  assert.equal(pty.code, 0, pty.stderr + pty.stdout);
  assert.match(pty.stdout, /\rcopy \[#{24}\] 100% 30\/30 [\d.]+ rec\/s ETA \S+ users\x1b\[K\r?\n/, JSON.stringify(pty.stdout));
  assert.match(pty.stdout, /copy: 30 records: 30 synced/);
  const plain = await cli(...args.slice(1));
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stderr, /^\[copy\] 100% 30\/30 [\d.]+ rec\/s ETA \S+ users$/m);
  assert.ok(!plain.stderr.includes('\r') && !plain.stderr.includes('\x1b['), 'no terminal codes without a terminal');
});
