// The two plugins under test behind one interface: install, then settle() = wait until every
// change so far is delivered or failed. Ours has flush(); the stock plugin has none, so we
// count its per-change outcome events (exactly one replicated or error per change).
// Ours with the durable outbox is ours with an `outbox` option: see lib/durability.mjs.

/** `pluginUrl`: the module of our plugin (file URL); `options`: extra plugin options. */
export async function installPlugin(kind, db, replicator, { pluginUrl, options = {} } = {}) {
  const counts = { replicated: 0, errors: 0, firstErrors: [] };
  const onError = (e) => {
    counts.errors++;
    if (counts.firstErrors.length < 3) counts.firstErrors.push(String(e?.error ?? e?.message ?? e));
  };
  if (kind === 'none') return { plugin: null, counts, settle: async () => true };
  let plugin;
  if (kind === 'stock') {
    const { ReplicatorPlugin } = await import('s3db.js/plugins/replicator.plugin');
    plugin = new ReplicatorPlugin({ logLevel: 'silent', ...options, replicators: [replicator] });
  } else if (kind === 'ours') {
    const { ReplicatorPlugin } = await import(pluginUrl ?? new URL('../../plugin.js', import.meta.url).href);
    plugin = new ReplicatorPlugin({ ...options, replicators: [replicator] });
  } else {
    throw new Error(`unknown plugin kind '${kind}'`);
  }
  await db.usePlugin(plugin);
  let lastReplicatorError = null;
  if (kind === 'stock') {
    for (const r of plugin.replicators ?? []) r.on?.('replication_error', (e) => { lastReplicatorError = String(e?.error ?? e); });
  }
  let wake = null;
  const tick = () => wake?.();
  plugin.on('plg:replicator:replicated', (e) => {
    // The stock webhook replicator reports an HTTP failure as a resolved { success: false }
    // (so does the stock PostgreSQL one); the stock MySQL one resolves null after a failed write.
    if (e?.result && e.result.success === false) onError({ error: e.result.error ?? JSON.stringify(e.result.errors) });
    else if (kind === 'stock' && e?.result === null) onError({ error: lastReplicatorError ?? 'replicate() resolved null (failed write)' });
    else counts.replicated++;
    tick();
  });
  plugin.on('plg:replicator:error', (e) => {
    onError(e);
    tick();
  });
  /** Resolves true when `total` outcomes arrived (stock) / flush() resolved (ours), false at the deadline. */
  async function settle(total, deadlineMs) {
    let timer;
    const expired = new Promise((resolve) => {
      timer = setTimeout(() => resolve(false), deadlineMs);
    });
    const done = kind === 'ours'
      ? plugin.flush().then(() => true)
      : new Promise((resolve) => {
        wake = () => {
          if (counts.replicated + counts.errors >= total) resolve(true);
        };
        wake();
      });
    const ok = await Promise.race([done, expired]);
    clearTimeout(timer);
    wake = null;
    return ok;
  }
  return { plugin, counts, settle };
}
