// plugin.d.ts under `tsc --strict`: __test__/types/usage.ts uses the public API as an application
// does and must type-check; its @ts-expect-error lines (wrong payload fields) must be rejected.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = createRequire(import.meta.url).resolve('typescript/bin/tsc');

test('plugin.d.ts: the API and every event payload type-check under --strict; wrong payload fields do not', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 's3db-typings-'));
  try {
    const config = path.join(dir, 'tsconfig.json');
    await writeFile(config, JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', types: [] },
      // 's3db-replicator' resolves to this package itself (package.json "exports").
      files: [path.join(ROOT, '__test__', 'types', 'usage.ts')],
    }));
    const { code, stdout } = await new Promise((resolve) => {
      execFile(process.execPath, [TSC, '-p', config, '--pretty', 'false'], { cwd: ROOT, timeout: 110_000 }, (error, out) => resolve({ code: error?.code ?? 0, stdout: out }));
    });
    // s3db.js 21.6.2's own declarations have errors against the `recker` version its overrides
    // pin here; only errors in this package's files count.
    const ours = stdout.split('\n').filter((line) => /^[^\s(]+\(\d+,\d+\): error/.test(line) && !line.startsWith('node_modules/'));
    assert.deepEqual(ours, [], stdout);
    assert.ok(code === 0 || stdout.includes('node_modules/'), `tsc exited ${code}:\n${stdout}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
