// The command line's help and version answers (the sync command itself: full-sync.test.mjs).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
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
  assert.match(unknown.stderr, /^error: unknown command 'frob' \(commands: sync, help\)/);
  const topic = await cli('help', 'frob');
  assert.equal(topic.code, 1);
  assert.match(topic.stderr, /^error: no help for 'frob' \(commands: sync\)/);
  const none = await cli();
  assert.equal(none.code, 1);
  assert.match(none.stderr, /missing command/);
});
