//! MySQL / MariaDB / PlanetScale statements: multi-row `INSERT … ON DUPLICATE KEY UPDATE`,
//! `DELETE … WHERE id IN (…)` and a multi-row insert into `logTable`, chunked so that no
//! statement binds more than 65,535 parameters (the protocol's limit) or grows past a few
//! megabytes (`max_allowed_packet`).

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::mysql::{MySql, MySqlArguments, MySqlPool};
use sqlx::query::Query;

use super::retry::{classify, ddl_already_done};
use super::values::{convert, kind_of, ColKind, Param};
use crate::error::SinkError;
use crate::schema::{Dialect, LiveColumn};
use crate::sinks::postgres::{group_rows, log_resource_column, split_table, ColumnIndex};
use crate::sinks::sql::{SqlBackend, TableColumns, WritePlan};

/// Most parameters one statement may bind.
pub(crate) const MAX_PARAMS: usize = 65_535;
/// Soft limit of a statement's parameter bytes (servers default to 16–64 MiB packets).
pub(crate) const MAX_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MyStatement {
    /// What it does, for error messages.
    pub what: String,
    pub sql: String,
    pub params: Vec<Param>,
}

/// Splits `rows` (each `width` parameters) into runs that respect both limits; at least one
/// row per run.
fn chunks(
    rows: Vec<Vec<Param>>,
    width: usize,
    max_params: usize,
    max_bytes: usize,
) -> Vec<Vec<Vec<Param>>> {
    let per = (max_params / width.max(1)).max(1);
    let mut out: Vec<Vec<Vec<Param>>> = Vec::new();
    let mut cur: Vec<Vec<Param>> = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let size: usize = row.iter().map(Param::wire_size).sum();
        if !cur.is_empty() && (cur.len() >= per || bytes + size > max_bytes) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(row);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn placeholders(width: usize, rows: usize) -> String {
    let one = format!("({})", vec!["?"; width].join(", "));
    vec![one; rows].join(", ")
}

/// The statements of a plan with explicit limits (tests use small ones).
pub(crate) fn plan_statements_with(
    plan: &WritePlan,
    columns: &TableColumns,
    log_resource: &str,
    max_params: usize,
    max_bytes: usize,
) -> Vec<MyStatement> {
    let d = Dialect::MySql;
    let empty = HashMap::new();
    let mut out = Vec::new();
    for tw in &plan.tables {
        let t = d.quote_table(&tw.table);
        let live = columns.get(&tw.table).unwrap_or(&empty);
        let idx = ColumnIndex::new(live);
        for g in group_rows(&tw.upserts, &tw.key, &idx) {
            let kinds: Vec<ColKind> = g.columns.iter().map(|c| kind_of(idx.type_of(c))).collect();
            let rows: Vec<Vec<Param>> = g
                .rows
                .iter()
                .map(|r| {
                    g.columns
                        .iter()
                        .zip(&kinds)
                        .map(|(c, k)| r.get(c).map_or(Param::Null, |v| convert(v, *k)))
                        .collect()
                })
                .collect();
            let list = g
                .columns
                .iter()
                .map(|c| d.quote(c))
                .collect::<Vec<_>>()
                .join(", ");
            let update = if g.columns.len() == 1 {
                format!("{0} = {0}", d.quote(&g.columns[0]))
            } else {
                g.columns[1..]
                    .iter()
                    .map(|c| format!("{0} = VALUES({0})", d.quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for chunk in chunks(rows, g.columns.len(), max_params, max_bytes) {
                out.push(MyStatement {
                    what: format!("upsert into {t}"),
                    sql: format!(
                        "INSERT INTO {t} ({list}) VALUES {} ON DUPLICATE KEY UPDATE {update}",
                        placeholders(g.columns.len(), chunk.len())
                    ),
                    params: chunk.into_iter().flatten().collect(),
                });
            }
        }
        if !tw.deletes.is_empty() {
            let id = d.quote(&idx.resolve(&tw.key));
            let rows = tw
                .deletes
                .iter()
                .map(|i| vec![Param::Text(i.clone())])
                .collect();
            for chunk in chunks(rows, 1, max_params, max_bytes) {
                out.push(MyStatement {
                    what: format!("delete from {t}"),
                    sql: format!(
                        "DELETE FROM {t} WHERE {id} IN ({})",
                        vec!["?"; chunk.len()].join(", ")
                    ),
                    params: chunk.into_iter().flatten().collect(),
                });
            }
        }
    }
    if let Some((log, rows)) = &plan.log {
        let t = d.quote_table(log);
        let rows = rows
            .iter()
            .map(|r| {
                vec![
                    Param::Text(r.resource.clone()),
                    Param::Text(r.operation.to_string()),
                    Param::Text(r.record_id.clone()),
                    Param::Text(r.data.to_string()),
                    Param::Text(r.change_id.clone()),
                ]
            })
            .collect();
        for chunk in chunks(rows, 5, max_params, max_bytes) {
            out.push(MyStatement {
                what: format!("insert into logTable {t}"),
                sql: format!(
                    "INSERT INTO {t} ({}, `operation`, `record_id`, `data`, `change_id`) VALUES {}",
                    d.quote(log_resource),
                    placeholders(5, chunk.len())
                ),
                params: chunk.into_iter().flatten().collect(),
            });
        }
    }
    out
}

pub(crate) fn plan_statements(
    plan: &WritePlan,
    columns: &TableColumns,
    log_resource: &str,
) -> Vec<MyStatement> {
    plan_statements_with(plan, columns, log_resource, MAX_PARAMS, MAX_BYTES)
}

fn bind_all<'q>(
    mut q: Query<'q, MySql, MySqlArguments>,
    params: &'q [Param],
) -> Query<'q, MySql, MySqlArguments> {
    for p in params {
        q = match p {
            Param::Null => q.bind(None::<&str>),
            Param::Bool(b) => q.bind(*b),
            Param::Int(i) => q.bind(*i),
            Param::UInt(u) => q.bind(*u),
            Param::Float(f) => q.bind(*f),
            Param::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

/// Column names of MariaDB's JSON columns (LONGTEXT with a `json_valid` check) from the
/// table's check clauses, e.g. "json_valid(`meta`)".
pub(crate) fn json_columns_from_checks(clauses: &[String]) -> Vec<String> {
    clauses
        .iter()
        .filter_map(|c| {
            let rest = c.trim().strip_prefix("json_valid(`")?;
            let name = rest.strip_suffix("`)")?;
            Some(name.replace("``", "`"))
        })
        .collect()
}

/// The MySQL side of a `mysql`, `mariadb` or `planetscale` replicator.
pub struct MySqlBackend {
    pool: MySqlPool,
    /// `logTable` → its resource column, looked up once.
    log_resource: tokio::sync::Mutex<HashMap<String, String>>,
}

impl MySqlBackend {
    pub fn new(pool: MySqlPool) -> Self {
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

async fn run<'e, E: sqlx::MySqlExecutor<'e>>(ex: E, s: &MyStatement) -> Result<(), SinkError> {
    bind_all(sqlx::query(&s.sql), &s.params)
        .execute(ex)
        .await
        .map(|_| ())
        .map_err(|e| with_context(&s.what, &e))
}

#[async_trait]
impl SqlBackend for MySqlBackend {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
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
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT CONVERT(TABLE_NAME USING utf8mb4), CONVERT(COLUMN_NAME USING utf8mb4), CONVERT(COLUMN_TYPE USING utf8mb4) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(schema)
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| with_context(&format!("describe table '{table}'"), &e))?;
        // information_schema compares names case-insensitively: keep the exact table when
        // several differ only in case.
        let exact = rows.iter().any(|(t, _, _)| t == name);
        let first = rows.first().map(|(t, _, _)| t.clone());
        let mut cols: Vec<LiveColumn> = rows
            .into_iter()
            .filter(|(t, _, _)| {
                if exact {
                    t == name
                } else {
                    Some(t) == first.as_ref()
                }
            })
            .map(|(_, name, data_type)| LiveColumn { name, data_type })
            .collect();
        if cols.is_empty() {
            return Ok(None);
        }
        if cols
            .iter()
            .any(|c| c.data_type.eq_ignore_ascii_case("longtext"))
        {
            // MariaDB's JSON is LONGTEXT + CHECK (json_valid(col)). MySQL has no TABLE_NAME in
            // CHECK_CONSTRAINTS (and real JSON columns): the query fails there, harmlessly.
            let checks: Result<Vec<(String,)>, _> = sqlx::query_as(
                "SELECT CONVERT(CHECK_CLAUSE USING utf8mb4) FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
            )
            .bind(schema)
            .bind(first.as_deref().filter(|_| !exact).unwrap_or(name))
            .fetch_all(&self.pool)
            .await;
            if let Ok(checks) = checks {
                let json =
                    json_columns_from_checks(&checks.into_iter().map(|(c,)| c).collect::<Vec<_>>());
                for c in &mut cols {
                    if c.data_type.eq_ignore_ascii_case("longtext") && json.contains(&c.name) {
                        c.data_type = "json".into();
                    }
                }
            }
        }
        Ok(Some(cols))
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
    use serde_json::{json, Map, Value};

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn table(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn upserts_deletes_and_log_rows() {
        let plan = WritePlan {
            tables: vec![TableWrite {
                key: "id".into(),
                table: "we`ird".into(),
                upserts: vec![
                    (
                        "a".into(),
                        obj(
                            json!({ "id": "a", "order": 1, "on": true, "meta": { "k": [1] }, "at": "2025-10-18T10:30:00Z" }),
                        ),
                    ),
                    (
                        "b".into(),
                        obj(
                            json!({ "id": "b", "order": null, "on": false, "meta": null, "at": null }),
                        ),
                    ),
                ],
                deletes: vec!["c".into(), "d".into()],
            }],
            log: Some((
                "log".into(),
                vec![LogRow {
                    resource: "r".into(),
                    operation: "deleted",
                    record_id: "c".into(),
                    data: json!({ "id": "c" }),
                    timestamp_ms: 0,
                    change_id: "0000000000000000:1".into(),
                }],
            )),
        };
        let cols = TableColumns::from([(
            "we`ird".to_string(),
            table(&[
                ("id", "varchar(255)"),
                ("order", "double"),
                ("on", "tinyint(1)"),
                ("meta", "json"),
                ("at", "datetime(3)"),
            ]),
        )]);
        let s = plan_statements(&plan, &cols, "resource");
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].sql,
            "INSERT INTO `we``ird` (`id`, `at`, `meta`, `on`, `order`) VALUES (?, ?, ?, ?, ?), (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE `at` = VALUES(`at`), `meta` = VALUES(`meta`), `on` = VALUES(`on`), `order` = VALUES(`order`)"
        );
        assert_eq!(
            s[0].params[..5],
            [
                Param::Text("a".into()),
                Param::Text("2025-10-18 10:30:00.000000".into()),
                Param::Text("{\"k\":[1]}".into()),
                Param::Bool(true),
                Param::Int(1)
            ]
        );
        assert_eq!(
            s[0].params[5..],
            [
                Param::Text("b".into()),
                Param::Null,
                Param::Null,
                Param::Bool(false),
                Param::Null
            ]
        );
        assert_eq!(s[1].sql, "DELETE FROM `we``ird` WHERE `id` IN (?, ?)");
        assert_eq!(
            s[2].sql,
            "INSERT INTO `log` (`resource`, `operation`, `record_id`, `data`, `change_id`) VALUES (?, ?, ?, ?, ?)"
        );
        assert_eq!(s[2].params[3], Param::Text("{\"id\":\"c\"}".into()));
    }

    #[test]
    fn statements_are_chunked_under_the_parameter_limit() {
        let upserts: Vec<(String, Map<String, Value>)> = (0..1000)
            .map(|i| (format!("r{i}"), obj(json!({ "a": i, "b": "x" }))))
            .collect();
        let deletes: Vec<String> = (0..70_000).map(|i| format!("d{i}")).collect();
        let plan = WritePlan {
            tables: vec![TableWrite {
                key: "id".into(),
                table: "t".into(),
                upserts,
                deletes,
            }],
            log: None,
        };
        let s = plan_statements(&plan, &TableColumns::new(), "resource");
        let deletes: Vec<&MyStatement> = s.iter().filter(|s| s.sql.starts_with("DELETE")).collect();
        assert_eq!(deletes.len(), 2);
        assert!(s
            .iter()
            .all(|s| s.params.len() <= MAX_PARAMS && s.sql.matches('?').count() == s.params.len()));
        let small = plan_statements_with(&plan, &TableColumns::new(), "resource", 300, MAX_BYTES);
        let ups: Vec<&MyStatement> = small
            .iter()
            .filter(|s| s.sql.starts_with("INSERT"))
            .collect();
        assert_eq!(ups.len(), 10, "100 rows of 3 parameters per statement");
        assert_eq!(ups.iter().map(|s| s.params.len()).sum::<usize>(), 3000);
        let by_bytes =
            plan_statements_with(&plan, &TableColumns::new(), "resource", MAX_PARAMS, 64);
        assert!(
            by_bytes
                .iter()
                .filter(|s| s.sql.starts_with("INSERT"))
                .count()
                > 100
        );
    }

    #[test]
    fn id_only_rows_and_mariadb_json_columns() {
        let plan = WritePlan {
            tables: vec![TableWrite {
                key: "id".into(),
                table: "t".into(),
                upserts: vec![("a".into(), obj(json!({})))],
                deletes: vec![],
            }],
            log: None,
        };
        let s = plan_statements(&plan, &TableColumns::new(), "resource");
        assert_eq!(
            s[0].sql,
            "INSERT INTO `t` (`id`) VALUES (?) ON DUPLICATE KEY UPDATE `id` = `id`"
        );
        assert_eq!(
            json_columns_from_checks(&[
                "json_valid(`m e`)".into(),
                "json_valid(`we``ird`)".into(),
                "`n` > 0".into()
            ]),
            vec!["m e", "we`ird"]
        );
    }
}
