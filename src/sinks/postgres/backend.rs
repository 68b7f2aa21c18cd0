//! PostgreSQL statements: each table's upserts go to the server as ONE `jsonb` parameter that
//! PostgreSQL itself turns into typed rows of the table (`jsonb_populate_recordset`), so every
//! value is converted by the column's own input function (numbers, booleans, JSONB, dates,
//! UUID, INET, arrays) and no value is ever interpolated into SQL.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::PgPool;

use super::retry::{classify, ddl_already_done};
use crate::error::SinkError;
use crate::schema::{Dialect, LiveColumn};
use crate::sinks::sql::{SqlBackend, TableColumns, WritePlan};

/// A connection idle for longer than this is pinged before use; busier ones are not (the
/// ping would cost a round trip per batch, and a dead connection fails retryably anyway).
const PING_AFTER_IDLE: Duration = Duration::from_secs(30);

/// Pool settings shared by the SQL drivers: `connectionLimit` connections, opened on demand;
/// getting one (connecting, with sqlx's retries) gives up after `connect_timeout_ms`.
pub(crate) fn pool_options<DB: sqlx::Database>(
    limit: u32,
    connect_timeout_ms: u64,
) -> sqlx::pool::PoolOptions<DB> {
    use sqlx::Connection;
    let o = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(limit.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_millis(connect_timeout_ms.max(1)))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        });
    if tokio::runtime::Handle::try_current().is_ok() {
        // Below the idle cut-off of common load balancers (e.g. 350 s on AWS NLB).
        o.idle_timeout(Duration::from_secs(120))
    } else {
        // The idle reaper is a task; without a runtime there is nowhere to spawn it.
        o.idle_timeout(None).max_lifetime(None)
    }
}

/// `schema.table` → `(Some(schema), table)`; `table` → `(None, table)`.
pub(crate) fn split_table(table: &str) -> (Option<&str>, &str) {
    match table.rsplit_once('.') {
        Some((schema, name)) => (Some(schema.rsplit('.').next().unwrap_or(schema)), name),
        None => (None, table),
    }
}

/// Resolves record keys to a table's column names: the exact name first, else the one that
/// differs only in case (the SQL layer matches columns case-insensitively).
pub(crate) struct ColumnIndex<'a> {
    live: &'a HashMap<String, String>,
    lower: HashMap<String, &'a str>,
}

impl<'a> ColumnIndex<'a> {
    pub(crate) fn new(live: &'a HashMap<String, String>) -> Self {
        let mut lower = HashMap::new();
        for name in live.keys() {
            lower.entry(name.to_lowercase()).or_insert(name.as_str());
        }
        Self { live, lower }
    }

    /// The column `key` lands in (`key` itself when the table has no such column).
    pub(crate) fn resolve(&self, key: &str) -> String {
        if self.live.contains_key(key) {
            return key.to_string();
        }
        self.lower
            .get(&key.to_lowercase())
            .map_or_else(|| key.to_string(), |c| (*c).to_string())
    }

    /// The live type of a column (lowercase), if known.
    pub(crate) fn type_of(&self, column: &str) -> Option<&'a str> {
        self.live.get(column).map(String::as_str)
    }
}

/// Rows that set the same columns, written by one statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RowGroup {
    /// `id` column first, then the others in name order.
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
}

/// Groups a table's upserts by the set of columns they carry, keys renamed to column names.
/// A record without some field leaves that column alone (as the original driver's UPDATE of
/// the given fields did) instead of setting it to NULL.
pub(crate) fn group_rows(
    upserts: &[(String, Map<String, Value>)],
    key: &str,
    idx: &ColumnIndex<'_>,
) -> Vec<RowGroup> {
    let id_col = idx.resolve(key);
    let mut groups: Vec<RowGroup> = Vec::new();
    let mut by_sig: HashMap<Vec<String>, usize> = HashMap::new();
    for (id, row) in upserts {
        let mut mapped = Map::new();
        for (k, v) in row {
            let col = idx.resolve(k);
            // `Name` and `name` both present: the exact match wins.
            if !mapped.contains_key(&col) || *k == col {
                mapped.insert(col, v.clone());
            }
        }
        mapped.insert(id_col.clone(), Value::String(id.clone()));
        let mut columns: Vec<String> = mapped.keys().filter(|c| **c != id_col).cloned().collect();
        columns.insert(0, id_col.clone());
        match by_sig.get(&columns) {
            Some(&g) => groups[g].rows.push(mapped),
            None => {
                by_sig.insert(columns.clone(), groups.len());
                groups.push(RowGroup {
                    columns,
                    rows: vec![mapped],
                });
            }
        }
    }
    groups
}

/// One statement of a plan, with its single `jsonb` parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PgStatement {
    /// What it does, for error messages (`upsert into "t"`).
    pub what: String,
    pub sql: String,
    pub param: Value,
}

fn is_temporal(ty: &str) -> bool {
    ty == "date" || ty.starts_with("timestamp")
}

/// The column of `logTable` that names the resource: `resource` (the tables this engine
/// creates) or `resource_name` (tables the original s3db.js driver created).
pub(crate) fn log_resource_column(columns: &[LiveColumn]) -> String {
    let find = |want: &str| {
        columns
            .iter()
            .find(|c| c.name == want)
            .or_else(|| columns.iter().find(|c| c.name.eq_ignore_ascii_case(want)))
    };
    find("resource")
        .or_else(|| find("resource_name"))
        .map_or_else(|| "resource".to_string(), |c| c.name.clone())
}

/// The statements of a plan, in order: per table its upserts then its deletes, then the log
/// (`log_resource` names its resource column).
pub(crate) fn plan_statements(
    plan: &WritePlan,
    columns: &TableColumns,
    log_resource: &str,
) -> Vec<PgStatement> {
    let d = Dialect::Postgres;
    let empty = HashMap::new();
    let mut out = Vec::new();
    for tw in &plan.tables {
        let t = d.quote_table(&tw.table);
        let live = columns.get(&tw.table).unwrap_or(&empty);
        let idx = ColumnIndex::new(live);
        for mut g in group_rows(&tw.upserts, &tw.key, &idx) {
            // Epoch milliseconds into DATE / TIMESTAMP columns (PostgreSQL reads ISO 8601 text).
            for row in &mut g.rows {
                for (col, v) in row.iter_mut() {
                    if let (Some(ms), Some(ty)) = (v.as_u64(), idx.type_of(col)) {
                        if is_temporal(ty) {
                            *v = Value::String(crate::time::iso8601(ms));
                        }
                    }
                }
            }
            let list = g
                .columns
                .iter()
                .map(|c| d.quote(c))
                .collect::<Vec<_>>()
                .join(", ");
            let action = if g.columns.len() == 1 {
                "DO NOTHING".to_string()
            } else {
                let sets = g.columns[1..]
                    .iter()
                    .map(|c| format!("{0} = EXCLUDED.{0}", d.quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("DO UPDATE SET {sets}")
            };
            out.push(PgStatement {
                what: format!("upsert into {t}"),
                sql: format!(
                    "INSERT INTO {t} ({list}) SELECT {list} FROM jsonb_populate_recordset(NULL::{t}, $1) ON CONFLICT ({}) {action}",
                    d.quote(&g.columns[0])
                ),
                param: Value::Array(g.rows.into_iter().map(Value::Object).collect()),
            });
        }
        if !tw.deletes.is_empty() {
            let id_col = idx.resolve(&tw.key);
            let id = d.quote(&id_col);
            // The ids are typed by the table's own key column, whatever its type.
            let keys = tw
                .deletes
                .iter()
                .map(|i| {
                    Value::Object(Map::from_iter([(id_col.clone(), Value::String(i.clone()))]))
                })
                .collect();
            out.push(PgStatement {
                what: format!("delete from {t}"),
                sql: format!("DELETE FROM {t} WHERE {id} IN (SELECT {id} FROM jsonb_populate_recordset(NULL::{t}, $1))"),
                param: Value::Array(keys),
            });
        }
    }
    if let Some((log, rows)) = &plan.log {
        if !rows.is_empty() {
            let t = d.quote_table(log);
            let param = rows
                .iter()
                .map(|r| serde_json::json!({ "resource": r.resource, "operation": r.operation, "record_id": r.record_id, "data": r.data, "change_id": r.change_id }))
                .collect();
            out.push(PgStatement {
                what: format!("insert into logTable {t}"),
                sql: format!(
                    "INSERT INTO {t} ({}, \"operation\", \"record_id\", \"data\", \"change_id\") SELECT x.resource, x.operation, x.record_id, x.data, x.change_id \
                     FROM jsonb_to_recordset($1) AS x(resource text, operation text, record_id text, data jsonb, change_id text)",
                    d.quote(log_resource)
                ),
                param: Value::Array(param),
            });
        }
    }
    out
}

/// The PostgreSQL side of a `postgresql` replicator.
pub struct PgBackend {
    pool: PgPool,
    /// `logTable` → its resource column, looked up once.
    log_resource: tokio::sync::Mutex<HashMap<String, String>>,
}

impl PgBackend {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            log_resource: Default::default(),
        }
    }

    async fn log_resource(&self, plan: &WritePlan) -> Result<String, SinkError> {
        let Some((log, _)) = &plan.log else {
            return Ok("resource".into());
        };
        if let Some(c) = self.log_resource.lock().await.get(log) {
            return Ok(c.clone());
        }
        let Some(cols) = self.describe(log).await? else {
            return Ok("resource".into());
        };
        let c = log_resource_column(&cols);
        self.log_resource
            .lock()
            .await
            .insert(log.clone(), c.clone());
        Ok(c)
    }
}

fn with_context(what: &str, e: &sqlx::Error) -> SinkError {
    let mut s = classify(e);
    s.message = format!("{what}: {}", s.message);
    s
}

async fn run<'e, E: sqlx::PgExecutor<'e>>(ex: E, s: &PgStatement) -> Result<(), SinkError> {
    sqlx::query(&s.sql)
        .bind(sqlx::types::Json(&s.param))
        .execute(ex)
        .await
        .map(|_| ())
        .map_err(|e| with_context(&s.what, &e))
}

#[async_trait]
impl SqlBackend for PgBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn connect_error(&self) -> Option<String> {
        crate::sinks::sql::connect_error(self.pool.connect_options().as_ref()).await
    }

    async fn ping(&self) -> Result<(), SinkError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }

    async fn describe(&self, table: &str) -> Result<Option<Vec<LiveColumn>>, SinkError> {
        let (schema, name) = split_table(table);
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, (CASE WHEN data_type IN ('ARRAY', 'USER-DEFINED') THEN udt_name ELSE data_type END)::text \
             FROM information_schema.columns WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2 ORDER BY ordinal_position",
        )
        .bind(schema)
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| with_context(&format!("describe table '{table}'"), &e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .map(|(name, data_type)| LiveColumn { name, data_type })
                .collect(),
        ))
    }

    async fn execute_ddl(&self, sql: &str) -> Result<(), SinkError> {
        match sqlx::raw_sql(sql).execute(&self.pool).await {
            Ok(_) => Ok(()),
            Err(e) if ddl_already_done(&e, sql) => Ok(()),
            Err(e) => Err(with_context("schema change", &e)),
        }
    }

    async fn apply(&self, plan: &WritePlan, columns: &TableColumns) -> Result<(), SinkError> {
        let log_resource = self.log_resource(plan).await?;
        let stmts = plan_statements(plan, columns, &log_resource);
        match stmts.as_slice() {
            [] => Ok(()),
            // One statement is atomic on its own: no BEGIN/COMMIT round trips.
            [one] => run(&self.pool, one).await,
            many => {
                let mut tx = self
                    .pool
                    .begin()
                    .await
                    .map_err(|e| with_context("begin", &e))?;
                for s in many {
                    run(&mut *tx, s).await?;
                }
                tx.commit().await.map_err(|e| with_context("commit", &e))
            }
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::sql::{LogRow, TableWrite};
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn cols(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn upserts_are_one_statement_per_column_set_with_quoted_identifiers() {
        let plan = WritePlan {
            tables: vec![TableWrite {
                key: "id".into(),
                table: "we\"ird".into(),
                upserts: vec![
                    (
                        "a".into(),
                        obj(json!({ "id": "a", "select": 1, "Name": "x" })),
                    ),
                    (
                        "b".into(),
                        obj(json!({ "id": "b", "select": 2, "Name": "y" })),
                    ),
                    ("c".into(), obj(json!({ "id": "c" }))),
                ],
                deletes: vec!["d".into()],
            }],
            log: None,
        };
        let columns = TableColumns::from([(
            "we\"ird".to_string(),
            cols(&[
                ("id", "character varying"),
                ("select", "double precision"),
                ("name", "text"),
            ]),
        )]);
        let s = plan_statements(&plan, &columns, "resource");
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].sql,
            "INSERT INTO \"we\"\"ird\" (\"id\", \"name\", \"select\") SELECT \"id\", \"name\", \"select\" FROM jsonb_populate_recordset(NULL::\"we\"\"ird\", $1) \
             ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\", \"select\" = EXCLUDED.\"select\""
        );
        assert_eq!(
            s[0].param,
            json!([{ "id": "a", "select": 1, "name": "x" }, { "id": "b", "select": 2, "name": "y" }]),
            "keys renamed to the live column"
        );
        assert!(
            s[1].sql.ends_with("ON CONFLICT (\"id\") DO NOTHING"),
            "{}",
            s[1].sql
        );
        assert_eq!(s[2].sql, "DELETE FROM \"we\"\"ird\" WHERE \"id\" IN (SELECT \"id\" FROM jsonb_populate_recordset(NULL::\"we\"\"ird\", $1))");
        assert_eq!(s[2].param, json!([{ "id": "d" }]));
    }

    #[test]
    fn log_tables_of_the_original_driver_are_written_too() {
        let col = |n: &str| LiveColumn {
            name: n.into(),
            data_type: "text".into(),
        };
        assert_eq!(
            log_resource_column(&[col("id"), col("resource"), col("operation")]),
            "resource"
        );
        assert_eq!(
            log_resource_column(&[
                col("id"),
                col("resource_name"),
                col("timestamp"),
                col("source")
            ]),
            "resource_name"
        );
        assert_eq!(
            log_resource_column(&[col("RESOURCE_NAME")]),
            "RESOURCE_NAME"
        );
        assert_eq!(log_resource_column(&[]), "resource");
        let plan = WritePlan {
            tables: vec![],
            log: Some((
                "log".into(),
                vec![LogRow {
                    resource: "r".into(),
                    operation: "inserted",
                    record_id: "a".into(),
                    data: json!(null),
                    timestamp_ms: 0,
                    change_id: "0000000000000000:1".into(),
                }],
            )),
        };
        assert!(
            plan_statements(&plan, &TableColumns::new(), "resource_name")[0]
                .sql
                .starts_with("INSERT INTO \"log\" (\"resource_name\", \"operation\"")
        );
    }

    #[test]
    fn the_exact_column_wins_over_a_case_variant() {
        let live = cols(&[("id", "text"), ("name", "text"), ("Name", "text")]);
        let idx = ColumnIndex::new(&live);
        let g = group_rows(
            &[("a".into(), obj(json!({ "id": "a", "name": 1, "NAME": 2 })))],
            "id",
            &idx,
        );
        assert_eq!(g[0].rows[0]["name"], json!(1));
        assert_eq!(idx.resolve("Name"), "Name");
        assert_eq!(idx.resolve("unknown"), "unknown");
    }

    #[test]
    fn epoch_millis_become_timestamps_and_schema_tables_are_split() {
        let plan = WritePlan {
            tables: vec![TableWrite {
                key: "id".into(),
                table: "analytics.t".into(),
                upserts: vec![("a".into(), obj(json!({ "at": 0, "n": 5 })))],
                deletes: vec![],
            }],
            log: Some((
                "log".into(),
                vec![LogRow {
                    resource: "r".into(),
                    operation: "inserted",
                    record_id: "a".into(),
                    data: json!({ "x": 1 }),
                    timestamp_ms: 0,
                    change_id: "0000000000000000:1".into(),
                }],
            )),
        };
        let columns = TableColumns::from([(
            "analytics.t".to_string(),
            cols(&[
                ("id", "text"),
                ("at", "timestamp with time zone"),
                ("n", "double precision"),
            ]),
        )]);
        let s = plan_statements(&plan, &columns, "resource");
        assert_eq!(
            s[0].param,
            json!([{ "id": "a", "at": "1970-01-01T00:00:00.000Z", "n": 5 }])
        );
        assert!(s[0].sql.starts_with("INSERT INTO \"analytics\".\"t\""));
        assert!(s[1].sql.starts_with(
            "INSERT INTO \"log\" (\"resource\", \"operation\", \"record_id\", \"data\", \"change_id\")"
        ));
        assert_eq!(
            s[1].param,
            json!([{ "resource": "r", "operation": "inserted", "record_id": "a", "data": { "x": 1 }, "change_id": "0000000000000000:1" }])
        );
        assert_eq!(split_table("a.b"), (Some("a"), "b"));
        assert_eq!(split_table("db.a.b"), (Some("a"), "b"));
        assert_eq!(split_table("b"), (None, "b"));
    }
}
