// The sync progress: on a terminal one line redrawn in place, a bar with rate and ETA; otherwise
// a plain line at most every 2 s and a final one (logs and CI keep a readable record).
import { clean } from './output.js';

const BAR_WIDTH = 24;
const PLAIN_EVERY_MS = 2000;

export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '--';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export function formatRate(rate) {
  return rate >= 100 ? `${Math.round(rate)}` : rate.toFixed(1);
}

/**
 * One progress line for a `plg:replicator:sync-progress` payload: with a bar for a terminal
 * (`tty`), `[replicator]  42% ...` otherwise.
 */
export function progressLine(p, { tty }) {
  const pct = p.total > 0 ? Math.floor((p.done / p.total) * 100) : 100;
  const text = `${p.done}/${p.total} ${formatRate(p.rate)} rec/s ETA ${formatDuration(p.etaMs)} ${p.resourceName ?? ''}`.trimEnd();
  if (!tty) return `[${p.replicatorId}] ${String(pct).padStart(3)}% ${text}`;
  const filled = p.total > 0 ? Math.min(BAR_WIDTH, Math.round((p.done / p.total) * BAR_WIDTH)) : BAR_WIDTH;
  return `${p.replicatorId} [${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${String(pct).padStart(3)}% ${text}`;
}

/** `update(progress)` / `end()` writing to `stream` (a terminal or not). */
export function progressReporter(stream, now = Date.now) {
  const tty = Boolean(stream.isTTY);
  let lastLine = -Infinity;
  let drawn = false;
  return {
    update(p) {
      if (tty) {
        stream.write(`\r${clean(progressLine(p, { tty }))}\x1b[K`);
        drawn = true;
        return;
      }
      const t = now();
      if (p.done >= p.total || t - lastLine >= PLAIN_EVERY_MS) {
        lastLine = t;
        stream.write(`${clean(progressLine(p, { tty }))}\n`);
      }
    },
    end() {
      if (tty && drawn) stream.write('\n');
      drawn = false;
      lastLine = -Infinity;
    },
  };
}
