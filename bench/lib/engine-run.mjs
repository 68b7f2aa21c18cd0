// The engine path on its own: N records handed to the plugin's batch API, no source writes.
// Ours: plugin.replicateBatch('users', records) (one call; it resolves once all are delivered).
// Stock: its replicator's replicateBatch() in pages of 100, one page after another (how the
// stock syncAllData pages), since the stock plugin itself has no batch entry point.

import { Database } from 's3db.js/lite';

import { ATTRIBUTES, openDestination } from './destinations.mjs';
import { startCost } from './measure.mjs';
import { closeOutbox } from './durability.mjs';
import { installPlugin } from './plugins.mjs';
import { record } from './workload.mjs';

const PAGE = 100;

async function replicate(kind, plugin, records) {
  if (kind === 'ours') {
    const r = await plugin.replicateBatch('users', records);
    return r.errors.length;
  }
  let errors = 0;
  const replicator = plugin.replicators[0];
  for (let i = 0; i < records.length; i += PAGE) {
    const page = records.slice(i, i + PAGE).map((r) => ({ operation: 'insert', id: r.id, data: r }));
    const r = await replicator.replicateBatch('users', page);
    errors += Array.isArray(r.errors) ? r.errors.length : (r.errors ?? 0);
  }
  return errors;
}

export async function runEngine(job) {
  const db = new Database({ connectionString: 'memory://bench-source/db', logLevel: 'silent' });
  await db.connect();
  await db.createResource({ name: 'users', attributes: ATTRIBUTES });
  const dest = await openDestination(job.dest, job);
  const { plugin } = await installPlugin(job.plugin, db, dest.replicator(job.plugin), { pluginUrl: job.pluginUrl, options: job.pluginOptions });
  await replicate(job.plugin, plugin, Array.from({ length: Math.min(400, job.n) }, (_, i) => record(`w${i}`, i)));
  await dest.reset();

  const records = Array.from({ length: job.n }, (_, i) => record(`u${i}`, i));
  const cost = startCost();
  const t0 = performance.now();
  const errors = await replicate(job.plugin, plugin, records);
  const ms = performance.now() - t0;
  const { cpuSec, jsCpuSec, peakRssMB, writeCalls, writeBytes, storageBytes } = cost();
  const delivered = dest.countRows
    ? await dest.countRows('u')
    : new Set((await dest.arrivals()).filter((a) => a.id.startsWith('u')).map((a) => a.id)).size;
  const traffic = dest.traffic ? await dest.traffic() : {};
  const outbox = job.outbox ? { outbox: await closeOutbox(plugin, job) } : {};
  await dest.close();
  return { rate: (job.n / ms) * 1000, ms, errors, delivered, cpuSec, jsCpuSec, peakRssMB, writeCalls, writeBytes, storageBytes, ...traffic, ...outbox };
}
