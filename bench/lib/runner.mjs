// Process plumbing for compare.mjs: the webhook server child, and one child per variant.

import { fork } from 'node:child_process';

const here = (file) => new URL(`../${file}`, import.meta.url).pathname;

/** Starts a bench server (`file`, which sends `{ port }` once listening) in its own process. */
function startServerProcess(file, args, path) {
  return new Promise((resolve, reject) => {
    const child = fork(here(file), args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`${file} did not start within 10 s`));
    }, 10_000);
    child.once('error', reject);
    child.once('message', ({ port }) => {
      clearTimeout(timer);
      resolve({
        url: `http://127.0.0.1:${port}${path}`,
        pid: child.pid,
        stop: () => {
          child.disconnect?.();
          child.kill();
        },
      });
    });
  });
}

/** Starts bench/webhook-server.mjs in its own process; resolves with its URL and a stop(). */
export const startWebhookServer = () => startServerProcess('webhook-server.mjs', [], '/hook');

/** Starts bench/aws-proxy.mjs (the recording proxy in front of `awsUrl`) in its own process. */
export const startAwsProxy = (awsUrl) => startServerProcess('aws-proxy.mjs', [awsUrl], '');

/**
 * Runs one job in a fresh `node bench/variant.mjs` process. Its stdout/stderr (library log
 * lines) are kept and shown only if it fails. Killed after `hardMs`.
 */
export function runChild(job, hardMs) {
  return new Promise((resolve) => {
    const child = fork(here('variant.mjs'), [], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], execArgv: ['--max-old-space-size=4096'] });
    let output = '';
    const keep = (chunk) => {
      output = (output + chunk).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let answer = null;
    const timer = setTimeout(() => {
      answer ??= { ok: false, error: `killed after ${hardMs} ms` };
      child.kill('SIGKILL');
    }, hardMs);
    child.on('message', (m) => {
      answer = m;
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const a = answer ?? { ok: false, error: `exited (${signal ?? code}) without an answer` };
      if (!a.ok) a.output = output;
      resolve(a);
    });
    child.send(job);
  });
}
