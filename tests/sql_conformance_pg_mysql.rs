//! The SQL conformance suite (`tests/sql_conformance`) against the real servers, for the
//! `postgresql`, `mysql` (MariaDB) and `planetscale` (through MariaDB's protocol, TLS off)
//! drivers, plus driver-specific checks.
//!
//! Servers: `S3DB_REPLICATOR_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and
//! `S3DB_REPLICATOR_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). The tests fail,
//! not skip, when a server is unreachable.

mod common;
#[macro_use]
mod sql_conformance;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use sqlx::{MySqlPool, PgPool, Row};

use s3db_replicator::error::ErrorKind;
use s3db_replicator::schema::parse_attributes;
use s3db_replicator::schema::Dialect;
use s3db_replicator::sinks::sql::KeyColumns;
use s3db_replicator::sinks::{mysql, postgres, BatchOutcome, SchemaEvent, Sink};
use sql_conformance::TestDb;

fn pg_url() -> String {
    std::env::var("S3DB_REPLICATOR_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn mysql_url() -> String {
    std::env::var("S3DB_REPLICATOR_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            base[k] = v;
        }
    }
    base
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

pub struct PgDb {
    pool: PgPool,
}

#[async_trait]
impl TestDb for PgDb {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn sink_keyed(&self, extra: Value, keys: KeyColumns) -> Arc<dyn Sink> {
        let config: postgres::PostgresConfig = serde_json::from_value(merge(
            json!({ "connectionString": pg_url(), "connectionLimit": 4 }),
            extra,
        ))
        .unwrap();
        postgres::build(&config.validated().unwrap(), keys).unwrap()
    }

    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn rows(&self, table: &str) -> BTreeMap<String, Map<String, Value>> {
        let sql = format!(
            "SELECT row_to_json(t)::text FROM {} AS t",
            Dialect::Postgres.quote_table(table)
        );
        let rows: Vec<(String,)> = sqlx::query_as(&sql)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|(j,)| {
                let m: Map<String, Value> = serde_json::from_str(&j).unwrap();
                // Keyed by `id`, or by the first column (a table with another key column).
                let id = match m
                    .get("id")
                    .or_else(|| m.values().next())
                    .unwrap_or(&Value::Null)
                {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (id, m)
            })
            .collect()
    }

    async fn columns(&self, table: &str) -> Option<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1")
            .bind(table)
            .fetch_all(&self.pool)
            .await
            .unwrap();
        (!rows.is_empty()).then(|| rows.into_iter().map(|(c,)| c).collect())
    }
}

async fn pg() -> Box<dyn TestDb> {
    let pool = PgPool::connect(&pg_url()).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {} is required for these tests: {e}",
            pg_url()
        )
    });
    Box::new(PgDb { pool })
}

// ---------------------------------------------------------------------------------------------
// MySQL / MariaDB / PlanetScale

pub struct MyDb {
    pool: MySqlPool,
    planetscale: bool,
}

#[async_trait]
impl TestDb for MyDb {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }

    fn sink_keyed(&self, extra: Value, keys: KeyColumns) -> Arc<dyn Sink> {
        if self.planetscale {
            // The dashboard's shape: host / username / password, TLS off for the local server.
            let u = reqwest::Url::parse(&mysql_url()).unwrap();
            let base = json!({
                "host": u.host_str().unwrap(), "port": u.port().unwrap_or(3306), "username": u.username(),
                "password": u.password().unwrap_or(""), "database": u.path().trim_start_matches('/'), "ssl": false, "connectionLimit": 4
            });
            let config: mysql::PlanetScaleConfig =
                serde_json::from_value(merge(base, extra)).unwrap();
            mysql::build_planetscale(&config.validated().unwrap(), keys).unwrap()
        } else {
            let config: mysql::MySqlConfig = serde_json::from_value(merge(
                json!({ "connectionString": mysql_url(), "connectionLimit": 4 }),
                extra,
            ))
            .unwrap();
            mysql::build(&config.validated().unwrap(), keys).unwrap()
        }
    }

    async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn rows(&self, table: &str) -> BTreeMap<String, Map<String, Value>> {
        let d = Dialect::MySql;
        let cols: Vec<(String, String)> = sqlx::query_as(
            "SELECT CONVERT(COLUMN_NAME USING utf8mb4), CONVERT(COLUMN_TYPE USING utf8mb4) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND CONVERT(TABLE_NAME USING utf8mb4) COLLATE utf8mb4_bin = ? ORDER BY ORDINAL_POSITION",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        assert!(!cols.is_empty(), "table {table} does not exist");
        // MariaDB's JSON columns are LONGTEXT with a json_valid check.
        let checks: Vec<(String,)> = sqlx::query_as(
            "SELECT CONVERT(CHECK_CLAUSE USING utf8mb4) FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let is_json = |c: &str, ty: &str| {
            ty == "json"
                || checks
                    .iter()
                    .any(|(k,)| k == &format!("json_valid({})", d.quote(c)))
        };
        let select = cols
            .iter()
            .map(|(c, _)| format!("CAST({} AS CHAR)", d.quote(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {select} FROM {}", d.quote_table(table));
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut out = BTreeMap::new();
        for row in rows {
            let mut m = Map::new();
            for (i, (c, ty)) in cols.iter().enumerate() {
                let text: Option<String> = row.try_get(i).unwrap();
                let base = ty.split(['(', ' ']).next().unwrap_or("");
                let v = match text {
                    None => Value::Null,
                    Some(s) if is_json(c, ty) => {
                        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{c}: {s}: {e}"))
                    }
                    Some(s) if ty.starts_with("tinyint(1)") => json!(s == "1"),
                    Some(s)
                        if matches!(
                            base,
                            "tinyint"
                                | "smallint"
                                | "mediumint"
                                | "int"
                                | "bigint"
                                | "double"
                                | "float"
                                | "decimal"
                        ) =>
                    {
                        s.parse::<i64>()
                            .map(Value::from)
                            .unwrap_or_else(|_| json!(s.parse::<f64>().unwrap()))
                    }
                    Some(s) => Value::String(s),
                };
                m.insert(c.clone(), v);
            }
            // Keyed by `id`, or by the first column (a table with another key column).
            let id = match m
                .get("id")
                .or_else(|| m.values().next())
                .unwrap_or(&Value::Null)
            {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(id, m);
        }
        out
    }

    async fn columns(&self, table: &str) -> Option<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT CONVERT(COLUMN_NAME USING utf8mb4) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND CONVERT(TABLE_NAME USING utf8mb4) COLLATE utf8mb4_bin = ?",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        (!rows.is_empty()).then(|| rows.into_iter().map(|(c,)| c).collect())
    }
}

async fn my_db(planetscale: bool) -> Box<dyn TestDb> {
    let pool = MySqlPool::connect(&mysql_url()).await.unwrap_or_else(|e| {
        panic!(
            "MySQL/MariaDB at {} is required for these tests: {e}",
            mysql_url()
        )
    });
    Box::new(MyDb { pool, planetscale })
}

async fn mariadb() -> Box<dyn TestDb> {
    my_db(false).await
}

async fn planetscale() -> Box<dyn TestDb> {
    my_db(true).await
}

mod pg_conformance {
    sql_conformance_suite!(super::pg);
}

mod mysql_conformance {
    sql_conformance_suite!(super::mariadb);
}

mod planetscale_conformance {
    sql_conformance_suite!(super::planetscale);
}

// ---------------------------------------------------------------------------------------------
// Driver-specific

/// An unreachable server: the build succeeds at once (lazy pool), the healthcheck and writes
/// fail retryably within the connect timeout, and no message shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_fail_retryably_without_leaking_the_password() {
    let pg: postgres::PostgresConfig =
        serde_json::from_value(json!({ "connectionString": "postgres://u:hunter2@127.0.0.1:1/db", "ssl": false, "connectionTimeoutMillis": 300 })).unwrap();
    let my: mysql::MySqlConfig = serde_json::from_value(json!({ "host": "127.0.0.1", "port": 1, "user": "u", "password": "hunter2", "connectTimeout": 300 })).unwrap();
    let ps: mysql::PlanetScaleConfig = serde_json::from_value(
        json!({ "url": "mysql://u:hunter2@127.0.0.1:1/db", "connectTimeout": 300 }),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let sinks = [
        postgres::build(&pg.validated().unwrap(), Default::default()).unwrap(),
        mysql::build(&my.validated().unwrap(), Default::default()).unwrap(),
        mysql::build_planetscale(&ps.validated().unwrap(), Default::default()).unwrap(),
    ];
    assert!(
        started.elapsed() < std::time::Duration::from_millis(100),
        "building never connects"
    );
    for sink in sinks {
        let e = sink.healthcheck().await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(!e.message.contains("hunter2"), "{e}");
        let e = sink
            .write_batch(&[sql_conformance::ins("t", "a", json!({ "v": 1 }))])
            .await
            .unwrap_err();
        assert!(e.is_retryable() && !e.message.contains("hunter2"), "{e}");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn wrong_credentials_are_reported_without_the_password() {
    let u = reqwest::Url::parse(&mysql_url()).unwrap();
    let my: mysql::MySqlConfig = serde_json::from_value(json!({
        "host": u.host_str().unwrap(), "port": u.port().unwrap_or(3306), "user": "no_such_user_x", "password": "hunter2", "database": "test"
    }))
    .unwrap();
    let e = mysql::build(&my.validated().unwrap(), Default::default())
        .unwrap()
        .healthcheck()
        .await
        .unwrap_err();
    assert!(!e.message.contains("hunter2"), "{e}");
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    let pg: postgres::PostgresConfig =
        serde_json::from_value(json!({ "connectionString": pg_url(), "database": "no_such_database_x", "password": "hunter2" })).unwrap();
    let e = postgres::build(&pg.validated().unwrap(), Default::default())
        .unwrap()
        .healthcheck()
        .await
        .unwrap_err();
    assert!(
        !e.message.contains("hunter2") && e.message.contains("no_such_database_x"),
        "{e}"
    );
}

/// PostgreSQL: a `schema.table` destination, value types only PostgreSQL has (UUID, INET,
/// TIMESTAMPTZ from epoch milliseconds), and constraint violations failing permanently.
#[tokio::test]
async fn postgres_schemas_and_native_types() {
    let db = pg().await;
    let schema = sql_conformance::table("repl_schema");
    db.exec(&format!(
        "CREATE SCHEMA {}",
        Dialect::Postgres.quote(&schema)
    ))
    .await;
    let t = format!("{schema}.{}", sql_conformance::table("native"));
    let sink = db.sink(json!({ "schemaSync": { "enabled": true } }));
    let attrs = json!({ "uid": "uuid", "ip": "ip4", "at": "datetime", "email": "string|maxlength:5", "n": "number|required" });
    sink.sync_schema(&t, &s3db_replicator::schema::parse_attributes(&attrs))
        .await
        .unwrap();
    let ok = sql_conformance::ins(
        &t,
        "a",
        json!({ "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "ip": "10.0.0.1", "at": 1_760_783_400_000u64, "n": 1 }),
    );
    match sink.write_batch(&[ok]).await {
        Ok(s3db_replicator::sinks::BatchOutcome::Delivered) => {}
        other => panic!("{other:?}"),
    }
    let rows: Vec<(String, String, String)> = sqlx::query_as(&format!(
        "SELECT uid::text, host(ip), to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') FROM {}",
        Dialect::Postgres.quote_table(&t)
    ))
    .fetch_all(&PgPool::connect(&pg_url()).await.unwrap())
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![(
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            "10.0.0.1".into(),
            "2025-10-18T10:30:00".into()
        )]
    );
    for bad in [
        json!({ "uid": "not-a-uuid", "n": 1 }),
        json!({ "email": "too long", "n": 1 }),
        json!({ "n": null }),
        json!({ "ip": "999.1.1.1", "n": 1 }),
    ] {
        let e = sink
            .write_batch(&[sql_conformance::ins(&t, "b", bad.clone())])
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{bad}: {e}");
        assert!(e.message.contains("SQLSTATE"), "{e}");
    }
    sink.close().await;
    db.exec(&format!(
        "DROP SCHEMA {} CASCADE",
        Dialect::Postgres.quote(&schema)
    ))
    .await;
}

/// MySQL: values the column cannot take fail permanently; DATETIME/DATE conversion from ISO
/// strings with offsets and epoch milliseconds; JSON columns keep strings as JSON strings.
#[tokio::test]
async fn mysql_conversions_and_rejections() {
    let db = mariadb().await;
    let t = sql_conformance::table("conv");
    let sink = db.sink(json!({ "schemaSync": { "enabled": true } }));
    let attrs = json!({ "at": "datetime", "born": "date", "code": "string|maxlength:3", "n": "number", "on": "boolean", "meta": "json" });
    sink.sync_schema(&t, &s3db_replicator::schema::parse_attributes(&attrs))
        .await
        .unwrap();
    let batch = [
        sql_conformance::ins(
            &t,
            "a",
            json!({ "at": "2025-10-18T12:30:00.5+02:00", "born": "2024-02-29T00:00:00.000Z", "n": 1e300, "on": true, "meta": "x" }),
        ),
        sql_conformance::ins(
            &t,
            "b",
            json!({ "at": 0, "born": 86_400_000, "n": -7, "on": false, "meta": [1] }),
        ),
    ];
    match sink.write_batch(&batch).await {
        Ok(s3db_replicator::sinks::BatchOutcome::Delivered) => {}
        other => panic!("{other:?}"),
    }
    let rows = db.rows(&t).await;
    assert_eq!(rows["a"]["at"], "2025-10-18 10:30:00.500");
    assert_eq!(rows["a"]["born"], "2024-02-29");
    assert_eq!(
        (rows["a"]["on"].clone(), rows["a"]["meta"].clone()),
        (json!(true), json!("x"))
    );
    assert_eq!(rows["a"]["n"].as_f64(), Some(1e300));
    assert_eq!(
        (rows["b"]["at"].clone(), rows["b"]["born"].clone()),
        (json!("1970-01-01 00:00:00.000"), json!("1970-01-02"))
    );
    for bad in [
        json!({ "code": "toolong" }),
        json!({ "n": "abc" }),
        json!({ "at": "not a date" }),
        json!({ "on": "yes" }),
    ] {
        let e = sink
            .write_batch(&[sql_conformance::ins(&t, "c", bad.clone())])
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{bad}: {e}");
    }
    sink.close().await;
    db.exec(&format!("DROP TABLE {}", Dialect::MySql.quote_table(&t)))
        .await;
}

/// Concurrent lanes writing to a table that does not exist yet: the races of
/// `CREATE TABLE IF NOT EXISTS` / `ADD COLUMN` never fail a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_table_creation_does_not_fail_writes() {
    for db in [pg().await, mariadb().await] {
        for _ in 0..3 {
            let t = sql_conformance::table("race");
            let sink = db.sink(json!({ "schemaSync": { "enabled": true } }));
            let tasks: Vec<_> = (0..6)
                .map(|i| {
                    let sink = sink.clone();
                    let t = t.clone();
                    tokio::spawn(async move {
                        sink.write_batch(&[sql_conformance::ins(
                            &t,
                            &format!("r{i}"),
                            json!({ "v": i, format!("c{}", i % 2): "x" }),
                        )])
                        .await
                    })
                })
                .collect();
            for task in tasks {
                match task.await.unwrap() {
                    Ok(s3db_replicator::sinks::BatchOutcome::Delivered) => {}
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(db.rows(&t).await.len(), 6);
            db.exec(&s3db_replicator::schema::drop_table(db.dialect(), &t))
                .await;
        }
    }
}

/// A `logTable` the original s3db.js drivers created (`resource_name`, `timestamp`, `source`)
/// keeps working after switching to this engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_tables_of_the_original_drivers_keep_working() {
    let ddl = [
        (
            pg().await,
            "CREATE TABLE {t} (id SERIAL PRIMARY KEY, resource_name VARCHAR(255) NOT NULL, operation VARCHAR(50) NOT NULL, record_id VARCHAR(255) NOT NULL, \
             data JSONB, timestamp TIMESTAMP WITH TIME ZONE DEFAULT NOW(), source VARCHAR(100) DEFAULT 's3db-replicator', created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW())",
        ),
        (
            mariadb().await,
            "CREATE TABLE {t} (id INT AUTO_INCREMENT PRIMARY KEY, resource_name VARCHAR(255) NOT NULL, operation VARCHAR(50) NOT NULL, record_id VARCHAR(255) NOT NULL, \
             data JSON, timestamp DATETIME DEFAULT CURRENT_TIMESTAMP, source VARCHAR(100) DEFAULT 's3db-replicator')",
        ),
    ];
    for (db, create) in ddl {
        let log = sql_conformance::table("stock_log");
        let t = sql_conformance::table("stock_logged");
        db.exec(&create.replace("{t}", &db.dialect().quote_table(&log)))
            .await;
        let sink = db.sink(json!({ "logTable": log, "schemaSync": { "enabled": true } }));
        for batch in [
            vec![sql_conformance::ins(&t, "a", json!({ "v": 1 }))],
            vec![sql_conformance::del(&t, "a")],
        ] {
            match sink.write_batch(&batch).await {
                Ok(s3db_replicator::sinks::BatchOutcome::Delivered) => {}
                other => panic!("{other:?}"),
            }
        }
        let mut rows: Vec<(String, String, String)> = db
            .rows(&log)
            .await
            .into_values()
            .map(|r| {
                (
                    r["resource_name"].as_str().unwrap().into(),
                    r["operation"].as_str().unwrap().into(),
                    r["source"].as_str().unwrap().into(),
                )
            })
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                ("users".into(), "deleted".into(), "s3db-replicator".into()),
                ("users".into(), "inserted".into(), "s3db-replicator".into())
            ]
        );
        sink.close().await;
        for x in [&t, &log] {
            db.exec(&s3db_replicator::schema::drop_table(db.dialect(), x))
                .await;
        }
    }
}

/// Forwards connections on `port` to `target` from now on (the server "comes back").
async fn proxy(port: u16, target: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server that is down when the plugin starts: without schemaSync nothing is asked of it;
/// with schemaSync the sync is deferred (an event naming the real cause, not "pool timed
/// out"), writes fail retryably with that cause, and once the server answers the first write
/// runs the sync (creating the table) and is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_sync_waits_for_a_server_that_is_down() {
    let port = free_port();
    let real = reqwest::Url::parse(&pg_url()).unwrap();
    let mut url = real.clone();
    url.set_port(Some(port)).unwrap();
    let t = sql_conformance::table("later");
    let config = |sync: bool| {
        let c: postgres::PostgresConfig = serde_json::from_value(json!({
            "connectionString": url.as_str(), "ssl": false, "connectionTimeoutMillis": 500,
            "schemaSync": { "enabled": sync }
        }))
        .unwrap();
        postgres::build(&c.validated().unwrap(), Default::default()).unwrap()
    };
    let attrs = parse_attributes(&json!({ "name": "string" }));
    let started = std::time::Instant::now();
    assert!(config(false)
        .sync_schema(&t, &attrs)
        .await
        .unwrap()
        .is_empty());
    assert!(started.elapsed() < std::time::Duration::from_millis(200));

    let sink = config(true);
    let events = sink.sync_schema(&t, &attrs).await.unwrap();
    let [SchemaEvent::SchemaSyncDeferred { table_name, error }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(table_name, &t);
    assert!(
        error.to_lowercase().contains("refused"),
        "the real cause: {error}"
    );
    let e = sink
        .write_batch(&[sql_conformance::ins(&t, "a", json!({ "name": "x" }))])
        .await
        .unwrap_err();
    assert!(
        e.is_retryable() && e.message.to_lowercase().contains("refused"),
        "{e}"
    );

    let server = proxy(
        port,
        format!(
            "{}:{}",
            real.host_str().unwrap(),
            real.port().unwrap_or(5432)
        ),
    )
    .await;
    let outcome = sink
        .write_batch(&[sql_conformance::ins(&t, "a", json!({ "name": "x" }))])
        .await
        .unwrap();
    assert!(matches!(outcome, BatchOutcome::Delivered), "{outcome:?}");
    let db = pg().await;
    assert_eq!(db.rows(&t).await["a"]["name"], "x");
    db.exec(&format!("DROP TABLE \"{t}\"")).await;
    server.abort();
}
