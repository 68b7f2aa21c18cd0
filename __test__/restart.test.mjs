// Restarts as an application lives them, each in a child process (fixtures/app-child.mjs):
//   - a script that inserts and ends without stop() (the README's first example), three times:
//     each change reaches the receiver once, nothing is replayed at the next start;
//   - flush() then db.disconnect(): the same;
//   - a destination that is down: the script still ends by itself, says what it keeps, and the
//     next start delivers it with the Idempotency-Key it was first sent with;
//   - SIGKILL in the middle of 5,000 changes, a restart that replays and writes 5,000 more, and a
//     third start: a change sent twice has one Idempotency-Key, two changes never share one.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { closedPort, startWebhookServer } from './helpers/http-server.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(HERE, 'fixtures', 'app-child.mjs');

/** Runs the child with `plan`; resolves on exit. */
function runChild(plan, options) {
  return startChild(plan, options).done;
}

/** Starts the child with `plan`: `{ child, done }`, `done` resolving on exit. */
function startChild(plan, { cwd, onLine = () => {}, killAfterMs = 60_000 } = {}) {
  const child = spawn(process.execPath, [CHILD], {
    cwd,
    env: { ...process.env, CHILD_PLAN: JSON.stringify(plan) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = [];
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    onLine(line, child);
  });
  let guarded = false;
  const guard = setTimeout(() => {
    guarded = true;
    child.kill('SIGKILL');
  }, killAfterMs);
  const done = new Promise((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(guard);
      resolve({ code, signal, lines, stderr, guarded });
    });
  });
  return { child, done };
}

function ok(run, what) {
  assert.ok(!run.guarded, `${what}: the process did not end by itself (killed); output: ${run.lines.join(' | ')} ${run.stderr.slice(-2000)}`);
  assert.equal(run.code, 0, `${what}: exit ${run.code}: ${run.stderr.slice(-2000)}`);
}

async function tempDir(t, label) {
  const dir = await mkdtemp(path.join(tmpdir(), `s3r-${label}-`));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const segments = async (dir) => (await readdir(dir)).filter((f) => f.endsWith('.seg')).length;

for (const ending of ['none', 'flush-disconnect']) {
  test(`three runs of a one-insert script (${ending === 'none' ? 'no stop()' : 'flush() then db.disconnect()'}): the receiver gets exactly three requests`, { timeout: 120_000 }, async (t) => {
    const srv = await startWebhookServer();
    t.after(() => srv.close());
    const cwd = await tempDir(t, 'three-runs');
    const source = `file://${path.join(cwd, 'data')}`;
    let outboxDir = null;
    for (let run = 1; run <= 3; run++) {
      const r = await runChild({ source, url: `${srv.url}/hook`, records: [[`u${run}`, 0]], ending }, { cwd });
      ok(r, `run ${run}`);
      outboxDir ??= JSON.parse(r.lines.find((l) => l.startsWith('outbox ')).slice(7)).dir;
      assert.equal(srv.requests.length, run, `after run ${run}: ${srv.requests.map((q) => q.body?.data?.id).join(', ')}`);
    }
    assert.deepEqual(srv.requests.map((q) => q.body.data.id), ['u1', 'u2', 'u3'], 'each change once, in order');
    assert.ok(outboxDir.startsWith(path.join(cwd, '.s3db-replicator')), outboxDir);
    assert.ok((await segments(outboxDir)) <= 1, 'settled segments are deleted, not one left per run');
  });
}

test('a destination that is down: the script still ends, says what it keeps, and the next start delivers it with the same Idempotency-Key', { timeout: 120_000 }, async (t) => {
  const cwd = await tempDir(t, 'down');
  const source = `file://${path.join(cwd, 'data')}`;
  const plan = {
    source,
    url: `http://127.0.0.1:${await closedPort()}/hook`,
    records: [['a', 0], ['b', 0]],
    ending: 'none',
    breaker: { failureThreshold: 1, resetTimeout: 200 },
    webhook: { retryDelay: 50, timeout: 1000 },
  };
  const first = await runChild(plan, { cwd, killAfterMs: 30_000 });
  ok(first, 'run with the destination down');
  const kept = first.lines.find((l) => l.startsWith('kept '));
  assert.ok(kept, `the plugin says what it keeps: ${first.lines.join(' | ')}`);
  const info = JSON.parse(kept.slice(5));
  assert.deepEqual(info.waiting, [{ replicator: 'webhook', queued: 2 }]);
  const outbox = JSON.parse(first.lines.find((l) => l.startsWith('outbox ')).slice(7));
  assert.equal(info.dir, outbox.dir);
  const outboxId = (await readFile(path.join(outbox.dir, 'OUTBOX_ID'), 'utf8')).trim();
  assert.equal(outbox.id, outboxId);

  const srv = await startWebhookServer();
  t.after(() => srv.close());
  const second = await runChild({ ...plan, url: `${srv.url}/hook`, records: [] }, { cwd });
  ok(second, 'restart with the destination up');
  assert.deepEqual(srv.requests.map((q) => q.body.data.id).sort(), ['a', 'b'], 'the kept changes are delivered after the restart');
  assert.deepEqual(srv.requests.map((q) => q.headers['idempotency-key']).sort(), [`${outboxId}:1`, `${outboxId}:2`], 'keys are the changes\' identities');
});

test('SIGKILL mid-stream and two restarts (10,000 changes): a change sent twice keeps its Idempotency-Key, two changes never share one', { timeout: 300_000 }, async (t) => {
  const cwd = await tempDir(t, 'kill');
  // Slow answers keep many changes in flight (sent, not yet settled) when the kill comes.
  const srv = await startWebhookServer({ respond: () => ({ delayMs: 5 }) });
  t.after(() => srv.close());
  const base = { source: `memory://kill-${process.pid}/data`, url: `${srv.url}/hook`, outboxDir: path.join(cwd, 'outbox'), ending: 'none' };
  const ids = Array.from({ length: 2500 }, (_, i) => `r${i}`);
  // Run 1: 2,500 inserts and 2,500 updates, killed once the receiver has seen 1,500 requests.
  const run1 = [...ids.map((id) => [id, 0]), ...ids.map((id) => [id, 1])];
  const first = startChild({ ...base, records: run1 }, { cwd, killAfterMs: 120_000 });
  await srv.waitForRequests(1500, 120_000);
  const seenBeforeKill = srv.requests.length;
  first.child.kill('SIGKILL');
  const killedRun = first.done;
  const killed = await killedRun;
  assert.equal(killed.signal, 'SIGKILL', `run 1 was killed mid-stream (exit ${killed.code}); ${killed.stderr.slice(-1000)}`);
  const afterKill = srv.requests.length;
  assert.ok(afterKill < run1.length, `killed before everything was sent (${afterKill} of ${run1.length})`);

  // Run 2: replays what run 1 did not settle, then 5,000 more changes; ends by itself.
  // (A memory:// source starts empty: the records are inserted again, then updated to v3.)
  const run2 = [...ids.map((id) => [id, 0]), ...ids.map((id) => [id, 3])];
  const second = await runChild({ ...base, source: `memory://kill2-${process.pid}/data`, records: run2 }, { cwd, killAfterMs: 180_000 });
  ok(second, 'run 2');
  const afterSecond = srv.requests.length;
  // Run 3: nothing new; nothing may be sent again.
  const third = await runChild({ ...base, source: `memory://kill3-${process.pid}/data`, records: [] }, { cwd });
  ok(third, 'run 3');
  assert.equal(srv.requests.length, afterSecond, 'a third start sends nothing again');

  // One key = one change: every request under a key carries the same record and version.
  const byKey = new Map();
  const collisions = [];
  for (const q of srv.requests) {
    const key = q.headers['idempotency-key'];
    const change = `${q.body.action} ${q.body.data.id} v${q.body.data.v}`;
    const before = byKey.get(key);
    if (before === undefined) byKey.set(key, { change, count: 1, at: [q.index] });
    else {
      before.count++;
      before.at.push(q.index);
      if (before.change !== change) collisions.push(`${key}: ${before.change} and ${change}`);
    }
  }
  assert.deepEqual(collisions.slice(0, 5), [], 'two different changes shared an Idempotency-Key');
  const resent = [...byKey.values()].filter((v) => v.count > 1);
  const replayedAcrossTheKill = resent.filter((v) => v.at[0] < afterKill && v.at.at(-1) >= afterKill);
  t.diagnostic(`requests: ${seenBeforeKill} seen at the kill, ${afterKill} by its end, ${afterSecond} after run 2; ${byKey.size} distinct keys; ${resent.length} changes sent more than once, ${replayedAcrossTheKill.length} of them again after the restart`);
  assert.ok(replayedAcrossTheKill.length > 0, 'the restart replayed changes run 1 had sent, under the keys they had');
  // Each record ends at its last version (3), reached after the restart.
  const last = new Map();
  for (const q of srv.requests) last.set(q.body.data.id, q.body.data.v);
  assert.deepEqual([...new Set(last.values())], [3]);
});
