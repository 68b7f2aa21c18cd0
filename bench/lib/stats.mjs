// Pure figures: visibility of each write at the destination, lag percentiles, state checks.

import { DELETED } from './workload.mjs';

/**
 * When did each write become visible? A write of version v of a record is visible at the
 * first arrival, for that record, of version ≥ v (a delete is newer than everything). A
 * later version arriving first counts: the destination then holds a state at least as new.
 * @returns {{ visible: Float64Array (NaN = never), delivered: number, last: number }}
 */
export function visibility(ops, arrivals) {
  const byId = new Map();
  for (const a of arrivals) {
    const list = byId.get(a.id);
    if (list) list.push(a);
    else byId.set(a.id, [a]);
  }
  const visible = new Float64Array(ops.length).fill(NaN);
  let delivered = 0;
  let last = -Infinity;
  for (const o of ops) {
    const list = byId.get(o.id);
    if (!list) continue;
    let t = Infinity;
    for (const a of list) if (a.version >= o.n && a.t < t) t = a.t;
    if (t === Infinity) continue;
    visible[o.k] = t;
    delivered++;
    if (t > last) last = t;
  }
  return { visible, delivered, last };
}

/** Lag (ms) of each delivered write: from the write's resolution to its visibility. */
export function lags(resolved, visible) {
  const out = [];
  for (let k = 0; k < visible.length; k++) if (!Number.isNaN(visible[k])) out.push(visible[k] - resolved[k]);
  return Float64Array.from(out).sort();
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** p50/p99/max plus 101 quantiles (for the chart's distribution). */
export function summarizeLags(sorted) {
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
    quantiles: Array.from({ length: 101 }, (_, q) => percentile(sorted, q)),
  };
}

/** Records whose destination state differs from the source's final state. */
export function stateMismatches(expected, actual) {
  let bad = 0;
  for (const [id, v] of expected) if (actual.get(id) !== v) bad++;
  for (const id of actual.keys()) if (!expected.has(id)) bad++;
  return bad;
}

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export { DELETED };
