// Module hook (registered by bench/variant.mjs for the stock plugin's MySQL runs only).
//
// s3db.js 21.6.2's MySQL replicator cannot run as shipped: it gets mysql2 with
// `requirePluginDependency('mysql2', 'MySQLReplicator')`, which is an ASYNC dependency CHECKER
// keyed by plugin id (it rejects with "Unknown plugin identifier: mysql2"), so `mysql.createPool`
// is called on a Promise and initialize() fails. This hook replaces that call with the mysql2
// module itself, nothing else: the stock replicator's own logic (a pool of 10, one INSERT /
// UPDATE / DELETE per change) is what gets measured.

const CALL = "requirePluginDependency('mysql2', 'MySQLReplicator')";

export async function load(url, context, nextLoad) {
  const result = await nextLoad(url, context);
  if (!url.endsWith('/plugins/replicators/mysql-replicator.class.js')) return result;
  const source = String(result.source);
  if (!source.includes(CALL)) return result;
  return { ...result, source: `import __benchMysql2 from 'mysql2';\n${source.split(CALL).join('__benchMysql2')}` };
}
