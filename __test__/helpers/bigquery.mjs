// The BigQuery emulator (bqemulator, started by scripts/services/bigquery.sh) set up and read
// back through its REST API (the same paths as Google's): datasets, tables, jobs.query. The
// emulator keeps datasets per project: pass the project the replicator's config names.

export const BIGQUERY_URL = process.env.S3DB_REPLICATOR_BIGQUERY_URL ?? 'http://127.0.0.1:45680';
export const PROJECT = 'test-proj';

let counter = 0;
/** A dataset name of its own. */
export const uniqueDataset = (prefix) => `${prefix}_${process.pid}_${++counter}_${Math.floor(Math.random() * 1e6)}`;

async function rest(method, path, body, project = PROJECT) {
  const res = await fetch(`${BIGQUERY_URL}/bigquery/v2/projects/${project}${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

export async function createDataset(datasetId, project = PROJECT) {
  const r = await rest('POST', '/datasets', { datasetReference: { projectId: project, datasetId } }, project);
  if (r.status !== 200 && r.status !== 409) throw new Error(`datasets.insert ${datasetId}: ${JSON.stringify(r.body)}`);
}

/** Creates a table; `fields` is `{ name: 'TYPE' }`. */
export async function createTable(datasetId, tableId, fields, project = PROJECT) {
  const schema = { fields: Object.entries(fields).map(([name, type]) => ({ name, type, mode: name === 'id' ? 'REQUIRED' : 'NULLABLE' })) };
  const r = await rest('POST', `/datasets/${datasetId}/tables`, { tableReference: { projectId: project, datasetId, tableId }, schema }, project);
  if (r.status !== 200) throw new Error(`tables.insert ${tableId}: ${JSON.stringify(r.body)}`);
}

/** `{ column: 'TYPE' }` of a table (standard-SQL names). */
export async function tableFields(datasetId, tableId, project = PROJECT) {
  const r = await rest('GET', `/datasets/${datasetId}/tables/${tableId}`, undefined, project);
  if (r.status !== 200) throw new Error(`tables.get ${tableId}: ${JSON.stringify(r.body)}`);
  const norm = { FLOAT: 'FLOAT64', INTEGER: 'INT64', BOOLEAN: 'BOOL' };
  return Object.fromEntries(r.body.schema.fields.map((f) => [f.name, norm[f.type] ?? f.type]));
}

/** Rows of a standard-SQL query (jobs.query), each `{ column: value as text | null }`. */
export async function query(sql) {
  const r = await rest('POST', '/queries', { query: sql, useLegacySql: false });
  if (r.status !== 200) throw new Error(`${sql}: ${JSON.stringify(r.body)}`);
  const names = r.body.schema.fields.map((f) => f.name);
  return (r.body.rows ?? []).map((row) => Object.fromEntries(names.map((n, i) => [n, row.f[i].v])));
}

/** `project.dataset.table`, quoted for a query. */
export const tablePath = (datasetId, tableId, project = PROJECT) => `\`${project}.${datasetId}.${tableId}\``;
