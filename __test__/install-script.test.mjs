// scripts/install.mjs decisions that need no build (the build itself: package.test.mjs).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { platformTriple, prebuiltPackage } from '../lib/platform.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** node_modules/s3db-replicator with the install script and what it imports. */
async function installedCopy() {
  const app = await mkdtemp(path.join(tmpdir(), 's3db-install-'));
  const pkg = path.join(app, 'node_modules', 's3db-replicator');
  await mkdir(pkg, { recursive: true });
  for (const file of ['package.json', 'lib', 'scripts']) await cp(path.join(ROOT, file), path.join(pkg, file), { recursive: true });
  return { app, pkg };
}

function install(pkg, env) {
  return new Promise((resolve) => {
    // Only node's own directory on PATH: no cargo.
    const base = { PATH: path.dirname(process.execPath), HOME: process.env.HOME };
    execFile(process.execPath, ['scripts/install.mjs'], { cwd: pkg, env: { ...base, ...env }, timeout: 20_000 }, (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
}

test('install script: without a prebuilt addon or cargo, it fails saying how to get one', async () => {
  const { app, pkg } = await installedCopy();
  try {
    const { code, stderr } = await install(pkg, {});
    assert.equal(code, 1);
    assert.match(stderr, new RegExp(`no prebuilt addon for ${platformTriple()} and no Rust toolchain \\(cargo\\)`));
    assert.match(stderr, /https:\/\/rustup\.rs.*npm rebuild s3db-replicator/);
    assert.match(stderr, new RegExp(prebuiltPackage()));
  } finally {
    await rm(app, { recursive: true, force: true });
  }
});

test('install script: an installed per-platform package or S3DB_REPLICATOR_SKIP_BUILD means nothing to build', async () => {
  const { app, pkg } = await installedCopy();
  try {
    assert.equal((await install(pkg, { S3DB_REPLICATOR_SKIP_BUILD: '1' })).code, 0);
    const prebuilt = path.join(app, 'node_modules', prebuiltPackage());
    await mkdir(prebuilt);
    await writeFile(path.join(prebuilt, 'package.json'), JSON.stringify({ name: prebuiltPackage(), version: '0.1.0', main: 'x.node' }));
    const { code, stderr } = await install(pkg, {});
    assert.equal(code, 0, stderr);
    assert.equal(stderr, '', 'silent when a prebuilt addon is there');
  } finally {
    await rm(app, { recursive: true, force: true });
  }
});
