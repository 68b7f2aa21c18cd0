// Child-process entry: runs ONE benchmark variant in a fresh process (so peak RSS and CPU
// are that variant's own) and sends its figures back over IPC. Started by compare.mjs.

import { register } from 'node:module';

import { runDemo } from './lib/demo-run.mjs';
import { runWithOutbox } from './lib/durability.mjs';
import { runEngine } from './lib/engine-run.mjs';
import { runWorkers } from './lib/jetstream.mjs';
import { runLimits } from './lib/limits-run.mjs';
import { runWrites } from './lib/writes-run.mjs';

const RUNS = { writes: runWrites, engine: runEngine, limits: runLimits, workers: runWorkers, demo: runDemo };

process.once('message', async (job) => {
  try {
    // The stock MySQL replicator needs its mysql2 loading fixed to run at all (see the hook).
    if (job.plugin === 'stock' && job.dest === 'mysql') register('./lib/stock-mysql-fix.mjs', import.meta.url);
    // Durability variants: ours with the variant's outbox option, in its own directory.
    const result = job.outbox ? await runWithOutbox(job, RUNS[job.kind]) : await RUNS[job.kind](job);
    process.send({ ok: true, result }, () => process.exit(0));
  } catch (error) {
    process.send({ ok: false, error: error?.stack ?? String(error) }, () => process.exit(1));
  }
});
process.on('disconnect', () => process.exit(2));
