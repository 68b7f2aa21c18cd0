// The published package, as a new user gets it: `npm pack`, then a fresh app that follows the
// README's Install section (its overrides block and stub commands, the tarball in place of the
// registry's s3db-replicator), where the install script builds the addon from source, and the
// README's first example runs and replicates.
//
// The cargo build goes to $CARGO_TARGET_DIR, default ~/.cache/s3db-replicator/target (the cache
// scripts/test.sh uses), so only this crate is recompiled after the first run. npm runs with
// --prefer-offline: nothing but the npm registry (usually its local cache) is needed.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { addonFile } from '../lib/platform.js';
import { readmeBlocks } from './helpers/readme.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PKG = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8'));
const S3DB_VERSION = JSON.parse(await readFile(path.join(ROOT, 'node_modules', 's3db.js', 'package.json'), 'utf8')).version;
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** The environment of a fresh shell: without the npm_* variables of an `npm test` that runs us. */
function cleanEnv(extra) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('npm_')));
  delete env.S3DB_REPLICATOR_SKIP_BUILD;
  delete env.NAPI_RS_NATIVE_LIBRARY_PATH;
  return { ...env, ...extra };
}

function run(cmd, args, { cwd, env = {}, timeout = 120_000 } = {}) {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env: cleanEnv(env), timeout, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.killed ? `killed after ${timeout / 1000} s` : error.code) : 0, stdout, stderr });
    });
  });
}

async function pack(dest) {
  const { code, stdout, stderr } = await run(NPM, ['pack', '--json', '--pack-destination', dest, '--ignore-scripts'], { cwd: ROOT });
  assert.equal(code, 0, stderr);
  const [info] = JSON.parse(stdout);
  return { tarball: path.join(dest, info.filename), files: info.files.map((f) => f.path) };
}

test('npm pack: exactly the published files, no local build, no test sinks, and every shipped reference resolves', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 's3db-pack-'));
  try {
    const { files } = await pack(dir);
    assert.deepEqual(files.filter((f) => f.endsWith('.node')), [], 'no .node file from the working folder');
    assert.ok(!files.includes('src/sinks/testing.rs'), 'the test sinks are not shipped');
    assert.deepEqual(files.filter((f) => /^(__test__|tests|bench|examples|scripts\/services|test|npm|target)\//.test(f)), [], 'no development folders');
    for (const required of ['LICENSE', 'README.md', 'package.json', 'plugin.js', 'plugin.d.ts', 'index.js', 'index.d.ts', 'lib/native.js', 'lib/platform.js', 'Cargo.toml', 'Cargo.lock', 'build.rs', 'src/lib.rs', 'scripts/install.mjs']) {
      assert.ok(files.includes(required), `${required} is shipped`);
    }
    // What runs at install, the entry points and the bin must be in the tarball.
    assert.equal(PKG.scripts.install, 'node scripts/install.mjs');
    for (const hook of ['preinstall', 'postinstall', 'prepare']) assert.equal(PKG.scripts[hook], undefined, `no ${hook} script`);
    const targets = [PKG.main, PKG.types, ...Object.values(PKG.bin), ...Object.values(PKG.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e)))];
    for (const target of targets) assert.ok(files.includes(target.replace(/^\.\//, '')), `${target} is shipped`);
    const license = await readFile(path.join(ROOT, 'LICENSE'), 'utf8');
    assert.match(license, /^MIT License\n\nCopyright \(c\) \d{4} s3db-replicator contributors\n/);
    assert.equal(PKG.license, 'MIT');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the packed tarball in a fresh app: installs as the README says, builds the addon outside the package, runs the first example', { timeout: 1_800_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 's3db-fresh-app-'));
  try {
    const { tarball } = await pack(dir);
    const app = path.join(dir, 'app');
    const blocks = readmeBlocks();
    const install = blocks.findIndex((b) => b.lang === 'json' && b.code.includes('"overrides"'));
    assert.ok(install >= 0, 'the README shows the overrides block');
    const stub = blocks.slice(install).find((b) => b.lang === 'sh' && b.code.includes('stubs/cli-args-parser'));
    assert.ok(stub, 'the README shows how to create the cli-args-parser stand-in');

    // The app: the README's package.json additions, its stub commands, then one npm install.
    await mkdir(app);
    await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module', ...JSON.parse(blocks[install].code) }, null, 2));
    const stubRun = await run('bash', ['-euo', 'pipefail', '-c', stub.code], { cwd: app });
    assert.equal(stubRun.code, 0, stubRun.stderr);

    const cargoTarget = process.env.CARGO_TARGET_DIR ?? path.join(homedir(), '.cache', 's3db-replicator', 'target');
    // At a lower CPU priority: the build must not starve the suites running alongside (their
    // timeouts), on CI's two cores.
    const [cmd, ...pre] = process.platform === 'win32' ? [NPM] : ['nice', '-n', '10', NPM];
    const npmInstall = await run(cmd, [...pre, 'install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', `s3db.js@${S3DB_VERSION}`, tarball], {
      cwd: app,
      env: { CARGO_TARGET_DIR: cargoTarget },
      timeout: 1_700_000,
    });
    const installed = path.join(app, 'node_modules', 's3db-replicator');
    assert.equal(npmInstall.code, 0, `npm install failed:\n${npmInstall.stdout}\n${npmInstall.stderr}`);
    const output = npmInstall.stdout + npmInstall.stderr;
    assert.match(output, /s3db-replicator: no prebuilt addon for \S+: building it from source with cargo \(release\); this takes several minutes\./);
    assert.match(output, /s3db-replicator: built s3db-replicator\.\S+\.node in /);

    // Only the addon is added to the package: no target/ directory, no partial copy.
    assert.ok(existsSync(path.join(installed, addonFile())), 'the addon was built into the package');
    assert.ok(!existsSync(path.join(installed, 'target')), 'no cargo target/ inside node_modules/s3db-replicator');
    assert.deepEqual(readdirSync(installed).filter((f) => f.endsWith('.partial')), []);
    assert.ok(existsSync(path.join(cargoTarget, 's3db-replicator-build.log')), 'the build log is in the cache directory');

    // The README's first example, as written.
    const quickStart = blocks.find((b) => b.lang === 'js' && !b.skip);
    await writeFile(path.join(app, 'quick-start.mjs'), quickStart.code);
    const example = await run(process.execPath, ['quick-start.mjs'], { cwd: app, timeout: 60_000 });
    assert.equal(example.code, 0, `the first example failed:\n${example.stderr}`);
    await writeFile(path.join(app, 'check.mjs'), `import { Database } from 's3db.js/lite';
const backup = new Database({ connectionString: 'file://./backup', logLevel: 'silent' });
await backup.connect();
console.log(JSON.stringify((await backup.resources.users.list()).map((u) => u.name)));
await backup.disconnect();
`);
    const check = await run(process.execPath, ['check.mjs'], { cwd: app, timeout: 60_000 });
    assert.equal(check.code, 0, check.stderr);
    assert.deepEqual(JSON.parse(check.stdout.trim().split('\n').at(-1)), ['Ana']);

    // The command line is linked and answers.
    const version = await run(path.join(app, 'node_modules', '.bin', 's3db-replicator'), ['--version'], { cwd: app });
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout, `s3db-replicator ${PKG.version}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
