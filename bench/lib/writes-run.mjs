// One "writes" variant: the workload through the source with one plugin (or none), delivered
// to one destination. Runs in a fresh child process (see bench/variant.mjs).

import { Database } from 's3db.js/lite';

import { ATTRIBUTES, openDestination } from './destinations.mjs';
import { jsThreadCpuSec, startCost } from './measure.mjs';
import { closeOutbox } from './durability.mjs';
import { installPlugin } from './plugins.mjs';
import { lags, stateMismatches, summarizeLags, visibility } from './stats.mjs';
import { makeScript, runWriter } from './workload.mjs';

export async function runWrites(job) {
  const db = new Database({ connectionString: 'memory://bench-source/db', logLevel: 'silent' });
  await db.connect();
  const users = await db.createResource({ name: 'users', attributes: ATTRIBUTES });
  const dest = await openDestination(job.dest, job);
  const { plugin, counts, settle } = await installPlugin(job.plugin, db, dest.replicator(job.plugin), { pluginUrl: job.pluginUrl, options: job.pluginOptions });
  const writerOpts = { writer: job.writer, concurrency: job.concurrency };

  // Warm-up on other records (JIT, connections, lazily created objects), then forget it.
  const warm = makeScript(Math.min(400, job.n), { seed: job.seed + 1, prefix: 'w' });
  await runWriter(users, warm.ops, writerOpts);
  await settle(warm.ops.length, job.timeoutMs);
  await dest.reset();
  const before = { outcomes: counts.replicated + counts.errors, errors: counts.errors };

  const { ops, final } = makeScript(job.n, { seed: job.seed });
  const cost = startCost();
  const jsAtStart = jsThreadCpuSec();
  const w = await runWriter(users, ops, writerOpts);
  const jsWriteSec = jsThreadCpuSec() - jsAtStart;
  const complete = await settle(before.outcomes + ops.length, job.timeoutMs);
  const settledAt = performance.now();
  const { cpuSec, jsCpuSec, peakRssMB, writeCalls, writeBytes, storageBytes } = cost();

  const result = {
    writeRate: (ops.length / (w.ended - w.started)) * 1000,
    writeMs: w.ended - w.started,
    settleMs: settledAt - w.started,
    cpuSec,
    jsCpuSec,
    jsWriteSec, // JS-thread CPU while the writes ran (with memory:// and no yields, plugin work comes after)
    peakRssMB,
    writeCalls,
    writeBytes,
    storageBytes,
    complete,
    errors: counts.errors - before.errors,
    firstErrors: counts.firstErrors,
  };
  if (job.plugin !== 'none') {
    const arrivals = await dest.arrivals();
    const vis = visibility(ops, arrivals);
    const state = await dest.finalState('u');
    result.delivered = vis.delivered;
    if (dest.countRows) {
      // SQL row triggers only see rows that exist: a plugin that coalesces a record's insert…delete
      // into one transaction writes a DELETE of a row that never existed, which no trigger sees.
      // Such a record's writes count as delivered (the destination never held it and does not
      // now, as the source says) but have no arrival time, so they are left out of the lags.
      const seen = new Set(arrivals.map((a) => a.id));
      result.coalesced = ops.filter((o) => Number.isNaN(vis.visible[o.k]) && !seen.has(o.id) && !final.has(o.id) && !state.has(o.id)).length;
      result.delivered += result.coalesced;
    }
    // Coalesced writes have no arrival time: they were done when the plugin settled (ours: flush()).
    result.deliverMs = (result.coalesced ? Math.max(vis.last, settledAt) : vis.last) - w.started;
    result.deliveredRate = result.delivered > 0 ? (result.delivered / result.deliverMs) * 1000 : 0;
    result.lag = summarizeLags(lags(w.resolved, vis.visible));
    result.mismatches = stateMismatches(final, state);
    if (dest.traffic) Object.assign(result, await dest.traffic());
    if (dest.clock) result.clockRttMs = dest.clock.rtt;
  }
  if (job.outbox) result.outbox = await closeOutbox(plugin, job);
  await dest.close();
  return result;
}
