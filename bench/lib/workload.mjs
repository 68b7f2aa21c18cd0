// The workload: a deterministic script of inserts, updates of the same records and deletes,
// and the writers that apply it to the source (sequential, concurrent, and "yielding" variants
// that give the event loop a turn between writes, as a real S3 round trip would).

/** Version of a delete (newer than any write of the record). */
export const DELETED = Number.MAX_SAFE_INTEGER;

const MIX = { insert: 0.5, update: 0.35 }; // the rest are deletes
const WINDOW = 32; // records being worked on at once: updates land close to their insert

/** Small seeded PRNG (mulberry32), so every variant gets the very same script. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function record(id, n) {
  return { id, name: `user ${id} version ${n}`.padEnd(40, '.'), n };
}

/**
 * `n` changes: ops `{ k, op, id, n }` in global order, where `k` is the op's index and `n`
 * the record version it writes (`k` for inserts/updates, DELETED for deletes).
 * Also returns the expected final state (id → version) of the destination.
 */
export function makeScript(n, { seed = 42, prefix = 'u' } = {}) {
  const random = rng(seed);
  const inserts = Math.max(1, Math.round(n * MIX.insert));
  const updates = Math.min(n - inserts, Math.round(n * MIX.update));
  const deletes = Math.min(inserts, n - inserts - updates);
  const plan = Array.from({ length: inserts }, () => ({ updates: 0, delete: false }));
  for (let i = 0; i < updates; i++) plan[Math.floor(random() * inserts)].updates++;
  // Delete a random subset of the records (a partial Fisher-Yates pick).
  const order = plan.map((_, i) => i);
  for (let i = 0; i < deletes; i++) {
    const j = i + Math.floor(random() * (inserts - i));
    [order[i], order[j]] = [order[j], order[i]];
    plan[order[i]].delete = true;
  }
  const ops = [];
  const active = [];
  let next = 0;
  const final = new Map();
  const emit = (slot) => {
    const s = active[slot];
    const k = ops.length;
    if (s.done === 0) ops.push({ k, op: 'insert', id: s.id, n: k });
    else if (s.done <= s.updates) ops.push({ k, op: 'update', id: s.id, n: k });
    else ops.push({ k, op: 'delete', id: s.id, n: DELETED });
    s.done++;
    final.set(s.id, ops[k].n);
    if (s.done > s.updates + (s.delete ? 1 : 0)) active.splice(slot, 1);
  };
  while (next < inserts || active.length > 0) {
    while (active.length < WINDOW && next < inserts) {
      active.push({ id: `${prefix}${next}`, ...plan[next], done: 0 });
      next++;
    }
    emit(Math.floor(random() * active.length));
  }
  for (const [id, v] of final) if (v === DELETED) final.delete(id);
  return { ops, final };
}

function apply(resource, o) {
  if (o.op === 'insert') return resource.insert(record(o.id, o.n));
  if (o.op === 'update') return resource.update(o.id, { name: record(o.id, o.n).name, n: o.n });
  return resource.delete(o.id);
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

/** `paced-1000` → 1000 (changes per second), anything else → null. */
export function pacedRate(writer) {
  const m = /^paced-(\d+)$/.exec(writer);
  return m ? Number(m[1]) : null;
}

/** Resolves at `at` (performance.now() ms), or on the next turn when that has passed. */
const until = (at) => new Promise((resolve) => {
  const wait = at - performance.now();
  if (wait > 0) setTimeout(resolve, wait);
  else setImmediate(resolve);
});

/**
 * Applies the script. `writer`: seq | conc | seq-yield | conc-yield | paced-<rate>. With `conc`,
 * the ops are split by record over `concurrency` workers, each applying its share in order, so
 * one record's writes never overlap and `concurrency` writes are in flight. `paced-<rate>` is
 * an open-loop writer at a fixed rate (op k starts at k / rate seconds, on the same record
 * split, so a slow write delays only its record's next ones): the light, steady load of a
 * real application, where lag rather than throughput is what matters.
 * Records, per op, when its write resolved (`resolved[k]`, performance.now() ms).
 */
export async function runWriter(resource, ops, { writer, concurrency = 64 }) {
  const rate = pacedRate(writer);
  const yielding = writer.endsWith('-yield');
  const workers = writer.startsWith('conc') || rate ? concurrency : 1;
  const resolved = new Float64Array(ops.length);
  const queues = Array.from({ length: workers }, () => []);
  const workerOf = new Map();
  for (const o of ops) {
    let w = workerOf.get(o.id);
    if (w === undefined) {
      w = workerOf.size % workers;
      workerOf.set(o.id, w);
    }
    queues[w].push(o);
  }
  const started = performance.now();
  await Promise.all(queues.map(async (queue) => {
    for (const o of queue) {
      if (rate) await until(started + (o.k * 1000) / rate);
      await apply(resource, o);
      resolved[o.k] = performance.now();
      if (yielding) await turn();
    }
  }));
  return { started, ended: performance.now(), resolved };
}
