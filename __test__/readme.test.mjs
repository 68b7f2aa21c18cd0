// Every ```js block of README.md runs as written, in a fresh application directory where
// `s3db-replicator` and `s3db.js` resolve (node_modules symlinks to this repository and to its
// s3db.js). A block's shape decides how:
//   - starts with `resources:`  the mapping syntaxes: each `resources:` entry becomes the
//                                resources of an s3db replicator (to memory://);
//   - starts with `{`            one replicator entry, used as it is;
//     both are then installed in a memory:// database: each source resource is created, one
//     record inserted, the plugin flushed; an error event or nothing replicated fails the block;
//   - anything else              a module, run with `node` in the fresh app: it must exit 0 by
//                                itself within a minute.
// The blocks get their servers from the environment, started here on loopback:
// process.env.POSTGRES_URL (a new database on the test PostgreSQL), MYSQL_URL (a new database on
// the test MariaDB), WEBHOOK_URL (a receiver on 127.0.0.1), MONGODB_URL (a new database on the
// test MongoDB-wire server), BIGQUERY_ENDPOINT (the test BigQuery emulator), AWS_ENDPOINT (the AWS-compatible test server, with test credentials
// in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for the default chain), SQS_QUEUE_URL (a new queue
// there), S3_BACKUP_URL (s3://KEY:SECRET@new-bucket/backup). A block reading any other variable
// fails, naming it. ```json blocks must parse; ```sh blocks (install steps) are run by
// package.test.mjs. `<!-- readme-test: skip (reason) -->` on the line before a block skips it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { AWS_ENDPOINT, createBucket, createQueue, unique as awsUnique } from './helpers/aws.mjs';
import { startWebhookServer } from './helpers/http-server.mjs';
import { readmeBlocks } from './helpers/readme.mjs';
import { BIGQUERY_URL } from './helpers/bigquery.mjs';
import { mongoUrl, uniqueDb } from './helpers/mongodb.mjs';
import { MYSQL_URL, PG_URL, myExec, pgExec, unique } from './helpers/sql.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const blocks = readmeBlocks();
const jsBlocks = blocks.filter((b) => b.lang === 'js' && !b.skip);

/** A fresh app directory: package.json, node_modules/{s3db-replicator,s3db.js} symlinks. */
async function freshApp() {
  const dir = await mkdtemp(path.join(tmpdir(), 's3db-readme-'));
  await mkdir(path.join(dir, 'node_modules'));
  await symlink(ROOT, path.join(dir, 'node_modules', 's3db-replicator'), 'dir');
  await symlink(path.join(ROOT, 'node_modules', 's3db.js'), path.join(dir, 'node_modules', 's3db.js'), 'dir');
  await writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'readme-app', private: true, type: 'module' }));
  return dir;
}

function runNode(dir, file, env) {
  return new Promise((resolve) => {
    execFile(process.execPath, [file], { cwd: dir, env: { ...process.env, ...env }, timeout: 60_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.killed ? `killed after 60 s (${error.signal})` : error.code) : 0, stdout, stderr });
    });
  });
}

/** The servers a block reads from process.env; started on first use, torn down at the end. */
class Servers {
  constructor() {
    this.env = {};
    this.cleanups = [];
  }

  async provide(code) {
    const names = [...new Set([...code.matchAll(/process\.env\.([A-Z_][A-Z0-9_]*)/g)].map((m) => m[1]))];
    for (const name of names) {
      if (name in this.env) continue;
      if (name === 'POSTGRES_URL') {
        const db = unique('readme');
        pgExec(`CREATE DATABASE ${db}`);
        this.cleanups.push(() => pgExec(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`));
        const url = new URL(PG_URL);
        url.pathname = `/${db}`;
        this.env.POSTGRES_URL = url.href;
      } else if (name === 'MYSQL_URL') {
        const db = unique('readme');
        myExec(`CREATE DATABASE ${db}`);
        this.cleanups.push(() => myExec(`DROP DATABASE IF EXISTS ${db}`));
        const url = new URL(MYSQL_URL);
        url.pathname = `/${db}`;
        this.env.MYSQL_URL = url.href;
      } else if (name === 'WEBHOOK_URL') {
        const server = await startWebhookServer();
        this.cleanups.push(() => server.close());
        this.env.WEBHOOK_URL = server.url;
      } else if (name === 'AWS_ENDPOINT' || name === 'SQS_QUEUE_URL' || name === 'S3_BACKUP_URL') {
        Object.assign(this.env, { AWS_ENDPOINT, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' });
        if (name === 'SQS_QUEUE_URL') this.env.SQS_QUEUE_URL = createQueue(awsUnique('readme'));
        if (name === 'S3_BACKUP_URL') {
          const bucket = awsUnique('readme').toLowerCase();
          createBucket(bucket);
          this.env.S3_BACKUP_URL = `s3://test:test@${bucket}/backup`;
        }
      } else if (name === 'MONGODB_URL') {
        // A database of its own on the test server (created by the first write; data is in memory).
        this.env.MONGODB_URL = mongoUrl(uniqueDb('readme'));
      } else if (name === 'BIGQUERY_ENDPOINT') {
        // The BigQuery emulator (it creates nothing until a block writes; data is in memory).
        this.env.BIGQUERY_ENDPOINT = BIGQUERY_URL;
      } else {
        throw new Error(`a README block reads process.env.${name}: provide it in __test__/readme.test.mjs (Servers) or mark the block <!-- readme-test: skip (reason) -->`);
      }
    }
    return this.env;
  }

  async close() {
    for (const cleanup of this.cleanups.reverse()) await cleanup();
  }
}

/** The resource-mapping block: one `resources: ...` entry (with its continuation lines) each. */
function mappingEntries(code) {
  const entries = [];
  for (const line of code.split('\n')) {
    if (/^resources:/.test(line)) entries.push(line);
    else if (entries.length > 0) entries[entries.length - 1] += `\n${line}`;
  }
  return entries;
}

/** A module installing `replicatorSource` (an expression) in a memory:// database and writing through it. */
function harness(replicatorSource) {
  return `import { Database } from 's3db.js/lite';
import { ReplicatorPlugin } from 's3db-replicator';

const replicator = (
${replicatorSource}
);
const plugin = new ReplicatorPlugin({ replicators: [replicator] });
const errors = [];
plugin.on('plg:replicator:error', (e) => errors.push(e));
const db = new Database({ connectionString: 'memory://readme-source/app', logLevel: 'silent' });
await db.connect();
await db.usePlugin(plugin);
const sources = Array.isArray(replicator.resources) ? replicator.resources : Object.keys(replicator.resources);
for (const name of sources) {
  const resource = await db.createResource({ name, attributes: { name: 'string', first: 'string|optional', last: 'string|optional', status: 'string|optional' } });
  await resource.insert({ name: 'Ana Lima', first: 'Ana', last: 'Lima', status: 'active' });
}
await plugin.flush();
const { stats } = await plugin.getReplicatorStats();
await plugin.stop();
await db.disconnect();
console.log(JSON.stringify({ errors, stats, sources }));
`;
}

async function runHarness(dir, servers, replicatorSource, label) {
  const env = await servers.provide(replicatorSource);
  const file = path.join(dir, `${label}.mjs`);
  await writeFile(file, harness(replicatorSource));
  const { code, stdout, stderr } = await runNode(dir, file, env);
  assert.equal(code, 0, `${label}: exit ${code}\n${stderr}`);
  const result = JSON.parse(stdout.trim().split('\n').at(-1));
  assert.deepEqual(result.errors, [], `${label}: replication errors`);
  assert.ok(result.stats.totalReplications >= 1, `${label}: nothing was replicated (${JSON.stringify(result.stats)})`);
}

test('README: the blocks are found, and only a few are skipped', () => {
  assert.ok(jsBlocks.length >= 3, `js blocks found: ${jsBlocks.length}`);
  const skipped = blocks.filter((b) => b.skip);
  assert.ok(skipped.length <= 3, `skipped: ${skipped.map((b) => `line ${b.line} (${b.skip})`).join(', ')}`);
  for (const b of skipped) assert.ok(b.skip.length > 0, `line ${b.line}: a skip marker says why`);
});

test('README: every json block parses', () => {
  for (const b of blocks.filter((x) => x.lang === 'json' && !x.skip)) {
    assert.doesNotThrow(() => JSON.parse(b.code), `README line ${b.line}`);
  }
});

test('README: every js block runs as written', { timeout: 600_000 }, async (t) => {
  const servers = new Servers();
  try {
    for (const [index, block] of jsBlocks.entries()) {
      await t.test(`js block at README line ${block.line}`, async () => {
        const dir = await freshApp();
        try {
          const code = block.code.trim();
          if (code.startsWith('resources:')) {
            const entries = mappingEntries(code);
            assert.ok(entries.length > 0);
            for (const [n, entry] of entries.entries()) {
              await runHarness(dir, servers, `{ driver: 's3db', config: { connectionString: 'memory://readme-destination-${n}/app' },\n${entry}\n}`, `mapping-${n + 1}`);
            }
          } else if (code.startsWith('{')) {
            await runHarness(dir, servers, code, 'replicator');
          } else {
            const env = await servers.provide(code);
            const file = path.join(dir, `block-${block.line}.mjs`);
            await writeFile(file, block.code);
            const { code: exit, stderr } = await runNode(dir, file, env);
            assert.equal(exit, 0, `README line ${block.line}: exit ${exit}\n${stderr}`);
            if (index === 0) await assertQuickStart(dir);
          }
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      });
    }
  } finally {
    await servers.close();
  }
});

/** The first example replicates its insert to ./backup: a new connection there sees it. */
async function assertQuickStart(dir) {
  const check = path.join(dir, 'check-backup.mjs');
  await writeFile(check, `import { Database } from 's3db.js/lite';
const backup = new Database({ connectionString: 'file://./backup', logLevel: 'silent' });
await backup.connect();
const users = backup.resources.users ? await backup.resources.users.list() : null;
console.log(JSON.stringify(users && users.map((u) => u.name)));
await backup.disconnect();
`);
  const { code, stdout, stderr } = await runNode(dir, check, {});
  assert.equal(code, 0, stderr);
  assert.deepEqual(JSON.parse(stdout.trim().split('\n').at(-1)), ['Ana'], 'the first example replicated its user to ./backup');
}
