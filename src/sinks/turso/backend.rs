//! The libSQL [`SqlBackend`]: one connection (opened on first use, reopened after a transient
//! failure) behind a mutex, one `BEGIN IMMEDIATE … COMMIT` transaction per plan.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use libsql::{Connection, Database, TransactionBehavior, Value};
use serde_json::Value as Json;
use tokio::sync::Mutex;

use super::config::{Target, TursoConfig};
use super::retry::classify;
use crate::error::{ConfigError, ErrorKind, SinkError};
use crate::schema::{Dialect, LiveColumn};
use crate::sinks::sql::{LogRow, SqlBackend, TableColumns, TableWrite, WritePlan};

/// Most bound parameters in one statement (SQLite's default limit is 32766).
const MAX_PARAMS: usize = 8_000;
/// Most rows in one multi-row INSERT.
const MAX_ROWS: usize = 500;
/// How long a local file waits for another writer's lock before reporting SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// A remote connection unused this long is replaced before use: libSQL servers expire an idle
/// stream after about 10 s (`STREAM_EXPIRED`). Opening one costs no round trip.
const REMOTE_IDLE: Duration = Duration::from_secs(5);

struct Open {
    // Keeps the database (local file handle or HTTP client) alive with its connection.
    _db: Database,
    conn: Connection,
    last_used: Instant,
}

pub struct TursoBackend {
    target: Target,
    token: String,
    /// The connection, serialising every use (SQLite has one writer anyway). `None` until the
    /// first use, and after a transient failure or an abandoned call: the next use reconnects.
    state: Mutex<Option<Open>>,
}

/// One statement of a plan, with what it does for error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
    pub context: String,
}

/// Whether the server dropped the connection's stream (it does after ~10 s of inactivity).
/// The call is then run again on a new connection: a statement refused that way did not run,
/// and a plan's upserts and deletes are idempotent anyway.
fn stream_gone(e: &SinkError) -> bool {
    e.message.contains("STREAM_EXPIRED")
        || e.message.contains("stream closed")
        || e.message.contains("stream has expired")
}

impl TursoBackend {
    /// Does not touch the network or the file: the connection opens on first use.
    pub fn new(config: &TursoConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            target: config.target()?,
            token: config
                .auth_token
                .as_ref()
                .map(|t| t.expose().to_string())
                .unwrap_or_default(),
            state: Mutex::new(None),
        })
    }

    fn is_remote(&self) -> bool {
        matches!(self.target, Target::Remote { .. })
    }

    async fn open(&self) -> Result<Open, SinkError> {
        let connecting = |e: libsql::Error| {
            let mut e = classify(&e, "connecting");
            // Whatever stops a connection from opening is the destination's state, not a record's.
            e.kind = ErrorKind::Retryable;
            e
        };
        let db = match &self.target {
            Target::Local(path) => libsql::Builder::new_local(path)
                .build()
                .await
                .map_err(connecting)?,
            Target::Remote { url } => libsql::Builder::new_remote(url.clone(), self.token.clone())
                .build()
                .await
                .map_err(connecting)?,
        };
        let conn = db.connect().map_err(connecting)?;
        if !self.is_remote() {
            conn.busy_timeout(BUSY_TIMEOUT).map_err(connecting)?;
        }
        Ok(Open {
            _db: db,
            conn,
            last_used: Instant::now(),
        })
    }

    /// Runs `f` with the connection, holding the lock. A remote connection idle for a while is
    /// replaced first (the server expires idle streams), and `f` runs once more on a new
    /// connection when the server says the stream is gone. The connection is kept only when
    /// `f` finished with success or a permanent error: after a transient failure, or when the
    /// call is abandoned mid-way (the engine's timeout drops it), the next call reconnects.
    async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T, SinkError>
    where
        F: Fn(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>>,
    {
        let mut state = self.state.lock().await;
        let mut retried = false;
        loop {
            let mut open = match state.take() {
                Some(o) if !(self.is_remote() && o.last_used.elapsed() > REMOTE_IDLE) => o,
                _ => self.open().await?,
            };
            let result = f(open.conn.clone()).await;
            match &result {
                Err(e) if self.is_remote() && !retried && stream_gone(e) => {
                    tracing::debug!(message = "The libSQL server dropped the stream; reconnecting.", error = %e.message);
                    retried = true;
                }
                Err(e) if e.is_retryable() => return result,
                _ => {
                    open.last_used = Instant::now();
                    *state = Some(open);
                    return result;
                }
            }
        }
    }
}

#[async_trait]
impl SqlBackend for TursoBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn ping(&self) -> Result<(), SinkError> {
        self.with_conn(|conn| async move {
            let mut rows = conn
                .query("SELECT 1", ())
                .await
                .map_err(|e| classify(&e, "ping"))?;
            rows.next().await.map_err(|e| classify(&e, "ping"))?;
            Ok(())
        })
        .await
    }

    async fn describe(&self, table: &str) -> Result<Option<Vec<LiveColumn>>, SinkError> {
        let context = format!("describing table '{table}'");
        // The table-valued form of `PRAGMA table_info` takes the name as a bound parameter.
        let (sql, params) = match table.rsplit_once('.') {
            Some((schema, name)) => (
                "SELECT name, type FROM pragma_table_info(?1, ?2)",
                vec![Value::Text(name.into()), Value::Text(schema.into())],
            ),
            None => (
                "SELECT name, type FROM pragma_table_info(?1)",
                vec![Value::Text(table.into())],
            ),
        };
        let (context, params) = (&context, &params);
        self.with_conn(|conn| async move {
            let err = |e: libsql::Error| classify(&e, context);
            let mut rows = conn.query(sql, params.clone()).await.map_err(err)?;
            let mut cols = Vec::new();
            while let Some(row) = rows.next().await.map_err(err)? {
                let name: String = row.get(0).map_err(err)?;
                let data_type: Option<String> = row.get(1).map_err(err)?;
                cols.push(LiveColumn {
                    name,
                    data_type: data_type.unwrap_or_default(),
                });
            }
            Ok((!cols.is_empty()).then_some(cols))
        })
        .await
    }

    async fn execute_ddl(&self, sql: &str) -> Result<(), SinkError> {
        self.with_conn(|conn| async move {
            conn.execute(sql, ())
                .await
                .map_err(|e| classify(&e, &format!("running `{sql}`")))?;
            Ok(())
        })
        .await
    }

    async fn apply(&self, plan: &WritePlan, columns: &TableColumns) -> Result<(), SinkError> {
        let statements = plan_statements(plan, columns)?;
        if statements.is_empty() {
            return Ok(());
        }
        let statements = &statements;
        self.with_conn(|conn| async move {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .await
                .map_err(|e| classify(&e, "beginning a transaction"))?;
            for s in statements {
                if let Err(e) = tx.execute(&s.sql, s.params.clone()).await {
                    let _ = tx.rollback().await;
                    return Err(classify(&e, &s.context));
                }
            }
            tx.commit().await.map_err(|e| classify(&e, "committing"))
        })
        .await
    }

    async fn close(&self) {
        self.state.lock().await.take();
    }
}

/// A JSON value as a bound SQLite value: objects and arrays as JSON text, booleans as 0/1,
/// integers as INTEGER, other numbers as REAL (integers beyond i64 as their exact digits).
pub fn sql_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.is_f64()) {
            (Some(i), _) => Value::Integer(i),
            (None, true) => Value::Real(n.as_f64().unwrap_or_default()),
            (None, false) => Value::Text(n.to_string()),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => Value::Text(v.to_string()),
    }
}

/// SQLite's type affinity of a declared column type (the rules of "Datatypes In SQLite" §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    pub fn of(declared: &str) -> Self {
        let t = declared.to_ascii_uppercase();
        if t.contains("INT") {
            Self::Integer
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Self::Text
        } else if t.contains("BLOB") || t.trim().is_empty() {
            Self::Blob
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Self::Real
        } else {
            Self::Numeric
        }
    }
}

/// The value bound for `v` in a column of `declared` type. SQLite would store a non-numeric
/// string (or JSON) in a REAL or INTEGER column as text; like the other SQL databases, the
/// driver refuses it instead (a permanent error of the record). Numeric strings are bound as
/// numbers. Columns of other affinities (TEXT, NUMERIC such as DATETIME, untyped) take anything.
pub fn bind_value(declared: Option<&str>, v: &Json) -> Result<Value, String> {
    let affinity = declared.map_or(Affinity::Blob, Affinity::of);
    if !matches!(affinity, Affinity::Integer | Affinity::Real) {
        return Ok(sql_value(v));
    }
    match v {
        Json::String(s) => {
            let t = s.trim();
            if let (Affinity::Integer, Ok(i)) = (affinity, t.parse::<i64>()) {
                return Ok(Value::Integer(i));
            }
            match t.parse::<f64>() {
                Ok(f) if f.is_finite() && t.bytes().any(|b| b.is_ascii_digit()) => {
                    Ok(Value::Real(f))
                }
                _ => {
                    let shown: String = s.chars().take(40).collect();
                    let more = if shown.len() < s.len() { "…" } else { "" };
                    Err(format!(
                        "the string {:?} is not a number",
                        format!("{shown}{more}")
                    ))
                }
            }
        }
        Json::Array(_) | Json::Object(_) => Err(format!(
            "{} is not a number",
            if v.is_array() {
                "an array"
            } else {
                "an object"
            }
        )),
        _ => Ok(sql_value(v)),
    }
}

fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(2 + 2 * n);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('?');
    }
    s.push(')');
    s
}

/// The statements of a plan, in order: per table its upserts then its deletes, then the log.
/// Upserts are grouped by the set of fields the rows have, so a row only writes its own fields
/// (an update never blanks a column the record does not carry); each group is one multi-row
/// `INSERT … ON CONFLICT("id") DO UPDATE`, chunked under the bound-parameter limit. Values are
/// checked against the live column types (`columns`); a value a column cannot take fails the
/// whole plan with a permanent error naming the record.
pub fn plan_statements(
    plan: &WritePlan,
    columns: &TableColumns,
) -> Result<Vec<Statement>, SinkError> {
    let empty = HashMap::new();
    let mut out = Vec::new();
    for t in &plan.tables {
        upserts(t, columns.get(&t.table).unwrap_or(&empty), &mut out)?;
        deletes(t, columns.get(&t.table).unwrap_or(&empty), &mut out);
    }
    if let Some((log, rows)) = &plan.log {
        log_rows(log, rows, &mut out);
    }
    Ok(out)
}

/// The live column a record key lands in: the exact name, else the one differing only in case
/// (SQLite's names are case-insensitive), else the key itself.
fn resolve<'a>(live: &'a HashMap<String, String>, key: &'a str) -> &'a str {
    if live.contains_key(key) {
        return key;
    }
    live.keys()
        .find(|c| c.eq_ignore_ascii_case(key))
        .map_or(key, String::as_str)
}

/// Upserts that set the same columns (`id` first, then the others in name order), each row
/// as its record id and its values by column.
struct Group<'a> {
    cols: Vec<&'a str>,
    rows: Vec<(&'a str, BTreeMap<&'a str, &'a Json>)>,
}

fn upserts(
    t: &TableWrite,
    live: &HashMap<String, String>,
    out: &mut Vec<Statement>,
) -> Result<(), SinkError> {
    let d = Dialect::Sqlite;
    let id_col = resolve(live, &t.key);
    let id_json: Vec<Json> = t
        .upserts
        .iter()
        .map(|(id, _)| Json::String(id.clone()))
        .collect();
    let mut groups: Vec<Group<'_>> = Vec::new();
    for ((id, row), id_value) in t.upserts.iter().zip(&id_json) {
        let mut mapped = BTreeMap::new();
        for (k, v) in row {
            let col = resolve(live, k);
            // `Name` and `name` both present: the exact match wins.
            if !mapped.contains_key(col) || k == col {
                mapped.insert(col, v);
            }
        }
        mapped.insert(id_col, id_value);
        let cols: Vec<&str> = std::iter::once(id_col)
            .chain(mapped.keys().copied().filter(|c| *c != id_col))
            .collect();
        match groups.iter_mut().find(|g| g.cols == cols) {
            Some(g) => g.rows.push((id, mapped)),
            None => groups.push(Group {
                cols,
                rows: vec![(id, mapped)],
            }),
        }
    }
    for Group { cols, rows } in groups {
        let quoted: Vec<String> = cols.iter().map(|c| d.quote(c)).collect();
        let types: Vec<Option<&str>> = cols
            .iter()
            .map(|c| live.get(*c).map(String::as_str))
            .collect();
        let update = if cols.len() == 1 {
            "DO NOTHING".to_string()
        } else {
            let sets: Vec<String> = quoted[1..]
                .iter()
                .map(|q| format!("{q} = excluded.{q}"))
                .collect();
            format!("DO UPDATE SET {}", sets.join(", "))
        };
        let per_stmt = (MAX_PARAMS / cols.len()).clamp(1, MAX_ROWS);
        let row_ph = placeholders(cols.len());
        for chunk in rows.chunks(per_stmt) {
            let mut params = Vec::with_capacity(chunk.len() * cols.len());
            for (id, row) in chunk {
                for (c, ty) in cols.iter().zip(&types) {
                    let v = bind_value(*ty, row.get(c).copied().unwrap_or(&Json::Null)).map_err(|why| {
                        SinkError::permanent(format!(
                            "Turso writing to table '{}': record '{id}': column '{c}' ({}) cannot take the value: {why}",
                            t.table,
                            ty.unwrap_or_default().to_ascii_uppercase()
                        ))
                    })?;
                    params.push(v);
                }
            }
            let values = vec![row_ph.as_str(); chunk.len()].join(",");
            out.push(Statement {
                sql: format!(
                    "INSERT INTO {} ({}) VALUES {values} ON CONFLICT({}) {update}",
                    d.quote_table(&t.table),
                    quoted.join(", "),
                    d.quote(id_col)
                ),
                params,
                context: format!("writing to table '{}'", t.table),
            });
        }
    }
    Ok(())
}

fn deletes(t: &TableWrite, live: &HashMap<String, String>, out: &mut Vec<Statement>) {
    let d = Dialect::Sqlite;
    for chunk in t.deletes.chunks(MAX_PARAMS) {
        let ph = placeholders(chunk.len());
        out.push(Statement {
            sql: format!(
                "DELETE FROM {} WHERE {} IN {ph}",
                d.quote_table(&t.table),
                d.quote(resolve(live, &t.key))
            ),
            params: chunk.iter().map(|id| Value::Text(id.clone())).collect(),
            context: format!("deleting from table '{}'", t.table),
        });
    }
}

fn log_rows(log: &str, rows: &[LogRow], out: &mut Vec<Statement>) {
    let d = Dialect::Sqlite;
    let cols = ["resource", "operation", "record_id", "data", "change_id"];
    let quoted: Vec<String> = cols.iter().map(|c| d.quote(c)).collect();
    let row_ph = placeholders(cols.len());
    for chunk in rows.chunks((MAX_PARAMS / cols.len()).min(MAX_ROWS)) {
        let mut params = Vec::with_capacity(chunk.len() * cols.len());
        for r in chunk {
            params.push(Value::Text(r.resource.clone()));
            params.push(Value::Text(r.operation.to_string()));
            params.push(Value::Text(r.record_id.clone()));
            params.push(if r.data.is_null() {
                Value::Null
            } else {
                Value::Text(r.data.to_string())
            });
            params.push(Value::Text(r.change_id.clone()));
        }
        out.push(Statement {
            sql: format!(
                "INSERT INTO {} ({}) VALUES {}",
                d.quote_table(log),
                quoted.join(", "),
                vec![row_ph.as_str(); chunk.len()].join(",")
            ),
            params,
            context: format!("writing to logTable '{log}'"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn row(v: Json) -> (String, Map<String, Json>) {
        let m = v.as_object().unwrap().clone();
        (m["id"].as_str().unwrap().to_string(), m)
    }

    fn live(cols: &[(&str, &str)]) -> HashMap<String, String> {
        cols.iter()
            .map(|(c, t)| (c.to_string(), t.to_string()))
            .collect()
    }

    fn stmts(
        tables: Vec<TableWrite>,
        columns: &[(&str, HashMap<String, String>)],
    ) -> Result<Vec<Statement>, SinkError> {
        let columns: TableColumns = columns
            .iter()
            .cloned()
            .map(|(t, c)| (t.to_string(), c))
            .collect();
        plan_statements(&WritePlan { tables, log: None }, &columns)
    }

    #[test]
    fn values_keep_their_types() {
        assert_eq!(sql_value(&json!(null)), Value::Null);
        assert_eq!(sql_value(&json!(true)), Value::Integer(1));
        assert_eq!(sql_value(&json!(false)), Value::Integer(0));
        assert_eq!(sql_value(&json!(42)), Value::Integer(42));
        assert_eq!(sql_value(&json!(-1.5)), Value::Real(-1.5));
        assert_eq!(
            sql_value(&json!(u64::MAX)),
            Value::Text(u64::MAX.to_string())
        );
        assert_eq!(sql_value(&json!("x")), Value::Text("x".into()));
        assert_eq!(
            sql_value(&json!({ "a": [1] })),
            Value::Text("{\"a\":[1]}".into())
        );
    }

    #[test]
    fn affinity_follows_sqlite_rules() {
        let a = |t| Affinity::of(t);
        assert_eq!(
            (a("INTEGER"), a("tinyint(1)"), a("BIGINT")),
            (Affinity::Integer, Affinity::Integer, Affinity::Integer)
        );
        assert_eq!(
            (a("TEXT"), a("varchar(255)"), a("CLOB")),
            (Affinity::Text, Affinity::Text, Affinity::Text)
        );
        assert_eq!((a(""), a("blob")), (Affinity::Blob, Affinity::Blob));
        assert_eq!(
            (a("REAL"), a("double precision"), a("FLOAT")),
            (Affinity::Real, Affinity::Real, Affinity::Real)
        );
        assert_eq!(
            (a("NUMERIC"), a("DATETIME"), a("DECIMAL(10,2)")),
            (Affinity::Numeric, Affinity::Numeric, Affinity::Numeric)
        );
        // "POINT" contains "INT": SQLite's rules, not intuition.
        assert_eq!(a("POINT"), Affinity::Integer);
    }

    #[test]
    fn numeric_columns_refuse_text_and_json() {
        assert_eq!(
            bind_value(Some("real"), &json!("1.5")),
            Ok(Value::Real(1.5))
        );
        assert_eq!(
            bind_value(Some("integer"), &json!(" 7 ")),
            Ok(Value::Integer(7))
        );
        assert_eq!(bind_value(Some("real"), &json!(3)), Ok(Value::Integer(3)));
        assert_eq!(
            bind_value(Some("integer"), &json!(true)),
            Ok(Value::Integer(1))
        );
        assert_eq!(bind_value(Some("real"), &json!(null)), Ok(Value::Null));
        for bad in [
            json!("not a number"),
            json!("NaN"),
            json!("inf"),
            json!(""),
            json!([1]),
            json!({ "a": 1 }),
        ] {
            assert!(bind_value(Some("real"), &bad).is_err(), "{bad}");
            assert!(bind_value(Some("integer"), &bad).is_err(), "{bad}");
        }
        // Other columns take anything, as SQLite does.
        for ty in [Some("text"), Some("datetime"), Some(""), None] {
            assert_eq!(
                bind_value(ty, &json!("2025-01-01T00:00:00Z")),
                Ok(Value::Text("2025-01-01T00:00:00Z".into()))
            );
            assert_eq!(bind_value(ty, &json!([1])), Ok(Value::Text("[1]".into())));
        }
    }

    #[test]
    fn upserts_group_by_fields_and_quote_identifiers() {
        let t = TableWrite {
            key: "id".into(),
            table: "we\"ird".into(),
            upserts: vec![
                row(json!({ "id": "a", "select": 1 })),
                row(json!({ "id": "b" })),
                row(json!({ "id": "c", "select": 2 })),
            ],
            deletes: vec!["d".into(), "e".into()],
        };
        let s = stmts(vec![t], &[]).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].sql,
            r#"INSERT INTO "we""ird" ("id", "select") VALUES (?,?),(?,?) ON CONFLICT("id") DO UPDATE SET "select" = excluded."select""#
        );
        assert_eq!(
            s[0].params,
            vec![
                Value::Text("a".into()),
                Value::Integer(1),
                Value::Text("c".into()),
                Value::Integer(2)
            ]
        );
        assert_eq!(
            s[1].sql,
            r#"INSERT INTO "we""ird" ("id") VALUES (?) ON CONFLICT("id") DO NOTHING"#
        );
        assert_eq!(s[2].sql, r#"DELETE FROM "we""ird" WHERE "id" IN (?,?)"#);
    }

    #[test]
    fn keys_resolve_to_live_columns_case_insensitively() {
        let t = TableWrite {
            key: "id".into(),
            table: "t".into(),
            upserts: vec![row(
                json!({ "id": "a", "notes": "x", "Name": "exact", "name": "other" }),
            )],
            deletes: vec![],
        };
        let s = stmts(
            vec![t],
            &[(
                "t",
                live(&[("ID", "text"), ("Notes", "text"), ("Name", "text")]),
            )],
        )
        .unwrap();
        assert_eq!(
            s[0].sql,
            r#"INSERT INTO "t" ("ID", "Name", "Notes") VALUES (?,?,?) ON CONFLICT("ID") DO UPDATE SET "Name" = excluded."Name", "Notes" = excluded."Notes""#
        );
        assert_eq!(s[0].params[1], Value::Text("exact".into()));
    }

    #[test]
    fn a_value_a_column_cannot_take_fails_the_plan_permanently() {
        let t = TableWrite {
            key: "id".into(),
            table: "t".into(),
            upserts: vec![
                row(json!({ "id": "ok", "n": 1 })),
                row(json!({ "id": "bad", "n": "x" })),
            ],
            deletes: vec![],
        };
        let e = stmts(vec![t], &[("t", live(&[("id", "text"), ("n", "real")]))]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(
            e.message.contains("'bad'") && e.message.contains("REAL"),
            "{}",
            e.message
        );
    }

    #[test]
    fn statements_stay_under_the_parameter_limit() {
        let wide: Map<String, Json> = (0..100).map(|i| (format!("c{i}"), json!(i))).collect();
        let upserts = (0..1000)
            .map(|i| {
                let mut r = wide.clone();
                r.insert("id".into(), json!(format!("r{i}")));
                (format!("r{i}"), r)
            })
            .collect();
        let deletes = (0..20_000).map(|i| format!("d{i}")).collect();
        let s = stmts(
            vec![TableWrite {
                key: "id".into(),
                table: "t".into(),
                upserts,
                deletes,
            }],
            &[],
        )
        .unwrap();
        assert!(s.iter().all(|s| s.params.len() <= MAX_PARAMS));
        assert_eq!(
            s.iter()
                .filter(|s| s.sql.starts_with("INSERT"))
                .map(|s| s.params.len())
                .sum::<usize>(),
            1000 * 101
        );
        assert_eq!(
            s.iter()
                .filter(|s| s.sql.starts_with("DELETE"))
                .map(|s| s.params.len())
                .sum::<usize>(),
            20_000
        );
    }

    #[test]
    fn log_rows_are_inserted_after_the_tables() {
        let rows = vec![LogRow {
            resource: "users".into(),
            operation: "inserted",
            record_id: "a".into(),
            data: json!({ "x": 1 }),
            timestamp_ms: 1,
            change_id: "0000000000000000:1".into(),
        }];
        let s = plan_statements(
            &WritePlan {
                tables: vec![],
                log: Some(("log".into(), rows)),
            },
            &TableColumns::new(),
        )
        .unwrap();
        assert_eq!(
            s[0].sql,
            r#"INSERT INTO "log" ("resource", "operation", "record_id", "data", "change_id") VALUES (?,?,?,?,?)"#
        );
        assert_eq!(s[0].params[3], Value::Text("{\"x\":1}".into()));
    }
}
