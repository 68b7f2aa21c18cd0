// Engine logs through the plugin's logger: a destination that fails every write produces a
// bounded number of lines (rate limit + summary), with structured fields, at the `logLevel`
// asked for, and never a secret of the configuration.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ReplicatorPlugin, ReplicatorError } from '../plugin.js';
import { redact, secretsOf } from '../lib/redact.js';
import { memoryDb, usersResource } from './helpers/db.mjs';
import { closedPort, startWebhookServer } from './helpers/http-server.mjs';

const TOKEN = 'tok-Sekr3t-9931';
const HOOK_PASSWORD = 'hookPa55Sekr3t';
const LINES_PER_WINDOW = 5;

/** A pino-style logger that records every call. */
function capturingLogger() {
  const calls = [];
  const logger = {};
  for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace']) {
    logger[level] = (fields, message) => calls.push({ level, fields, message });
  }
  logger.child = () => logger;
  return { logger, calls };
}

async function failingWebhook(t, options, port) {
  port ??= await closedPort();
  const db = await memoryDb('logs');
  const plugin = new ReplicatorPlugin({
    circuitBreaker: false,
    batchSize: 1, // one change per write: one retry line per change
    ...options,
    replicators: [{
      id: 'hook',
      driver: 'webhook',
      resources: ['users'],
      config: {
        url: `http://hookuser:${HOOK_PASSWORD}@127.0.0.1:${port}/hook`,
        auth: { type: 'bearer', token: TOKEN },
        retries: 2,
        retryDelay: 1,
        timeout: 2000,
      },
    }],
  });
  await db.usePlugin(plugin);
  t.after(async () => {
    await plugin.stop();
    await db.disconnect();
  });
  const users = await usersResource(db);
  return { plugin, users };
}

const engineLines = (calls, message) => calls.filter((c) => c.message === message);
const summary = (calls, message) => calls.find((c) => c.message.startsWith(`${message} (`) && /\d+ similar messages suppressed/.test(c.message));

test('a failing destination logs a bounded number of lines, with their fields and no secret', { timeout: 60_000 }, async (t) => {
  const { logger, calls } = capturingLogger();
  const { plugin, users } = await failingWebhook(t, { logger });
  const failures = [];
  plugin.on('plg:replicator:error', (e) => failures.push(e));
  const CHANGES = 30;
  for (let i = 0; i < CHANGES; i++) await users.insert({ id: `u${i}`, name: `user ${i}` });
  await plugin.flush();
  assert.equal(failures.length, CHANGES, 'every change failed');
  await plugin.stop(); // sends what the rate limit held back

  const retries = engineLines(calls, 'Retrying batch.');
  assert.equal(retries.length, LINES_PER_WINDOW, JSON.stringify(calls, null, 1));
  assert.equal(retries[0].level, 'warn');
  assert.equal(retries[0].fields.replicator, 'hook');
  assert.equal(retries[0].fields.attempt, 1);
  assert.equal(retries[0].fields.code, 'ERR_SINK_UNAVAILABLE');
  assert.match(retries[0].fields.error, /\S/);

  const failed = engineLines(calls, 'Change failed.');
  assert.equal(failed.length, LINES_PER_WINDOW);
  assert.equal(failed[0].level, 'error');
  assert.deepEqual(
    { replicator: failed[0].fields.replicator, resource: failed[0].fields.resource, attempts: failed[0].fields.attempts, code: failed[0].fields.code },
    { replicator: 'hook', resource: 'users', attempts: 3, code: 'ERR_SINK_UNAVAILABLE' },
  );
  assert.match(failed[0].fields.recordId, /^u\d+$/);

  const { retried } = (await plugin.getReplicatorStats()).replicators[0].status;
  assert.equal(summary(calls, 'Retrying batch.')?.fields.suppressed, retried - LINES_PER_WINDOW, 'one line counts the retries held back');
  assert.equal(summary(calls, 'Change failed.')?.fields.suppressed, CHANGES - LINES_PER_WINDOW);
  assert.ok(calls.length <= 4 * LINES_PER_WINDOW, `${calls.length} lines for ${CHANGES} changes × 3 attempts`);

  const everything = JSON.stringify(calls);
  for (const secret of [TOKEN, HOOK_PASSWORD]) assert.ok(!everything.includes(secret), `${secret} was logged: ${everything}`);
});

test('logLevel sets how much reaches the logger: error drops the retries, silent drops everything', { timeout: 60_000 }, async (t) => {
  for (const [logLevel, expectRetries, expectFailures] of [['error', 0, 1], ['silent', 0, 0], [undefined, 2, 1]]) {
    const { logger, calls } = capturingLogger();
    const { plugin, users } = await failingWebhook(t, { logger, ...(logLevel ? { logLevel } : {}) });
    await users.insert({ id: 'u1', name: 'one' });
    await plugin.flush();
    await plugin.stop();
    assert.equal(engineLines(calls, 'Retrying batch.').length, expectRetries, `${logLevel}: ${JSON.stringify(calls)}`);
    assert.equal(engineLines(calls, 'Change failed.').length, expectFailures, `${logLevel}`);
  }
});

test('credentials never reach the logger, even when a destination echoes them in its error', { timeout: 60_000 }, async (t) => {
  const hook = await startWebhookServer();
  t.after(() => hook.close());
  // A receiver that answers 500 quoting the request's Authorization header and its own URL.
  hook.respond = (req) => ({ status: 500, body: JSON.stringify({ error: `rejected ${req.headers.authorization} at http://hookuser:${HOOK_PASSWORD}@127.0.0.1/hook` }) });
  const { logger, calls } = capturingLogger();
  // verbose: the plugin's own per-outcome lines (the failure's error) are redacted as well.
  const { plugin, users } = await failingWebhook(t, { logger, verbose: true }, hook.port);
  await users.insert({ id: 'u1', name: 'one' });
  await plugin.flush();
  await plugin.stop();
  const [failed] = engineLines(calls, 'Change failed.');
  assert.ok(failed, JSON.stringify(calls));
  assert.ok(calls.some((c) => c.level === 'warn' && c.fields.recordId === 'u1' && /^HTTP 500 /.test(c.message)), 'the verbose failure line');
  // (The client sends the URL's credentials as Basic auth, base64-encoded: redacted as well.)
  assert.match(failed.fields.error, /^HTTP 500 .*rejected Basic \*\*\* at http:\/\/\*\*\*@127\.0\.0\.1\/hook/, 'the error is kept, its credentials redacted');
  const everything = JSON.stringify(calls);
  for (const secret of [TOKEN, HOOK_PASSWORD, Buffer.from(`hookuser:${HOOK_PASSWORD}`).toString('base64')]) assert.ok(!everything.includes(secret), `${secret} was logged: ${everything}`);
});

test('a database URL\'s user name is not a secret; a lone token in any other URL is', () => {
  // postgres://postgres@host (trust auth): redacting 'postgres' turned the replicator id
  // 'postgresql' into '***ql' in every log line.
  assert.deepEqual(secretsOf('postgres://postgres@127.0.0.1:5432/app'), []);
  assert.deepEqual(secretsOf('mysql://root@127.0.0.1/app'), []);
  assert.equal(redact('replicator postgresql failed', new Set(secretsOf('postgresql://postgres@db/app'))), 'replicator postgresql failed');
  assert.ok(secretsOf('postgres://app:s3cret-pw@db/app').includes('s3cret-pw'), 'a password still is');
  assert.ok(secretsOf('https://tok3n-abc@hooks.example.com/x').includes('tok3n-abc'), 'an HTTP URL\'s lone userinfo is a token');
  assert.ok(secretsOf('nats://natstok3n@127.0.0.1:4222').includes('natstok3n'), 'so is a NATS URL\'s');
});

test('an unknown logLevel fails in the constructor naming the option and the levels', () => {
  assert.throws(() => new ReplicatorPlugin({ logLevel: 'wran', replicators: [] }), (error) => {
    assert.ok(error instanceof ReplicatorError);
    assert.equal(error.code, 'ERR_CONFIG');
    assert.equal(error.context.option, 'logLevel');
    assert.match(error.message, /logLevel: expected one of silent, fatal, error, warn, info, debug, trace, got "wran"/);
    assert.match(error.description, /did you mean 'warn'\?/);
    return true;
  });
});
