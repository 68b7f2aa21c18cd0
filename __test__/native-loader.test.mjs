// lib/native.js: a missing addon gives a ReplicatorError saying how to build or install it,
// instead of napi-rs's "npm has a bug related to optional dependencies".
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { platformTriple } from '../lib/platform.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

test('without an addon for the platform, importing the plugin explains how to build or install it', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 's3db-no-addon-'));
  try {
    // The package's JavaScript without any .node file next to it.
    for (const file of ['package.json', 'index.js', 'lib']) await cp(path.join(ROOT, file), path.join(dir, file), { recursive: true });
    const script = `import(${JSON.stringify(path.join(dir, 'lib', 'native.js'))}).then(() => console.log('loaded'), (e) => console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message, description: e.description })))`;
    const out = await new Promise((resolve, reject) => {
      const env = { ...process.env };
      delete env.NAPI_RS_NATIVE_LIBRARY_PATH;
      execFile(process.execPath, ['-e', script], { cwd: dir, env, timeout: 20_000 }, (error, stdout) => (error ? reject(error) : resolve(stdout)));
    });
    const e = JSON.parse(out);
    const triple = platformTriple();
    assert.equal(e.name, 'ReplicatorError');
    assert.equal(e.code, 'ERR_NATIVE_ADDON');
    assert.equal(e.message, `s3db-replicator: the native addon for ${triple} is not installed`);
    assert.match(e.description, new RegExp(`s3db-replicator\\.${triple}\\.node`));
    assert.match(e.description, /npm rebuild s3db-replicator/);
    assert.match(e.description, new RegExp(`npm install s3db-replicator-${triple}`));
    assert.match(e.description, /https:\/\/rustup\.rs/);
    assert.doesNotMatch(e.description, /npm has a bug/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
