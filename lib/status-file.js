// <outbox dir>/status.json: what `npx s3db-replicator status` shows, written by the process that
// holds the outbox (about once a second while it runs, and once more when it stops):
//   { pid, startedAt, updatedAt, stoppedAt, replicators, stats, outbox, lastSync }
// (`stoppedAt` is also set when the process exits without stop(); after a kill -9 the snapshot
// simply stops being updated, which the CLI notices after 10 s.)
// where replicators / stats / outbox / lastSync are getReplicatorStats(). Written atomically
// (a temporary file renamed over it), off the hot path, and never keeps the process alive.
import { renameSync, writeFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const STATUS_FILE = 'status.json';
export const STATUS_INTERVAL_MS = 1000;

/**
 * Starts writing the status of `plugin` into `dir`. `stop()` writes the last snapshot, with
 * `stoppedAt`, and ends the timer.
 */
export function startStatusFile(plugin, dir) {
  const path = join(dir, STATUS_FILE);
  const tmp = join(dir, `${STATUS_FILE}.${process.pid}.tmp`);
  const startedAt = new Date().toISOString();
  let writing = null;
  let stopped = false;
  const snapshot = (stoppedAt) => {
    const doc = { pid: process.pid, startedAt, updatedAt: new Date().toISOString(), stoppedAt, ...plugin._statsNow() };
    return `${JSON.stringify(doc, null, 2)}\n`;
  };
  const write = async (stoppedAt = null) => {
    await writeFile(tmp, snapshot(stoppedAt));
    await rename(tmp, path);
  };
  // A write that fails (disk full, directory removed) is tried again on the next tick.
  const tick = () => {
    if (writing || stopped) return;
    writing = write().catch(() => {}).finally(() => { writing = null; });
  };
  tick();
  const timer = setInterval(tick, STATUS_INTERVAL_MS);
  timer.unref();
  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      await writing;
      await write(new Date().toISOString()).catch(() => {});
    },
    /** The process exits without stop() (a script that ends, a crash): say so, synchronously. */
    exitSync() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      try {
        writeFileSync(tmp, snapshot(new Date().toISOString()));
        renameSync(tmp, path);
      } catch {
        // The next status shows the last snapshot, stale after a few seconds.
      }
    },
  };
}
