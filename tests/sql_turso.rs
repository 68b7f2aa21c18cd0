//! Integration tests of the `turso` driver against a local libSQL file (in a temp dir) and a
//! real libSQL server (`sqld`, started by `scripts/services/sqld.sh` when it does not answer).
//!
//! Every scenario runs twice (`<case>::file` and `<case>::server`). Server tests use table
//! names unique to the run and drop them at the end, so runs do not see each other's data.
//! The server tests fail (never skip) when no server can be started.

mod common;
#[macro_use]
mod sql_conformance;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libsql::Value;
use serde_json::{json, Value as Json};

use common::*;
use s3db_replicator::engine::OutcomeStatus;
use s3db_replicator::error::ErrorKind;
use s3db_replicator::event::{Change, Op};
use s3db_replicator::schema::parse_attributes;
use s3db_replicator::sinks::sql::KeyColumns;
use s3db_replicator::sinks::turso::{self, TursoConfig};
use s3db_replicator::sinks::{BatchOutcome, SchemaEvent, Sink};

const SERVER_ADDR: &str = "127.0.0.1:45691";
const SERVER_URL: &str = "http://127.0.0.1:45691";

// =============================================================================================
// Harness

fn server_answers() -> bool {
    let Ok(mut s) =
        std::net::TcpStream::connect_timeout(&SERVER_ADDR.parse().unwrap(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// Makes sure the libSQL server answers, starting it with the repository's script if needed.
fn ensure_server() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        if server_answers() {
            return Ok(());
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/services/sqld.sh");
        // Output to a file, not a pipe: nothing the script leaves running can hold the test.
        let log = std::env::temp_dir().join(format!("s3db-turso-sqld-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let status = std::process::Command::new("bash")
            .arg(&script)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if !status.success() || !server_answers() {
            return Err(format!("{} failed ({status}):\n{output}", script.display()));
        }
        Ok(())
    });
    if let Err(e) = r {
        panic!("the libSQL server at {SERVER_URL} is not available: {e}");
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn run_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{}{:x}", std::process::id(), nanos % 0xfffff)
    })
}

/// One destination database for one test: where it is, a raw connection to check what the
/// sink wrote, and the tables to drop at the end (server only).
struct Db {
    url: String,
    dir: Option<PathBuf>,
    raw: libsql::Connection,
    _raw_db: libsql::Database,
    tables: std::sync::Mutex<Vec<String>>,
}

impl Db {
    async fn file() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "s3db-turso-{}-{}",
            run_tag(),
            COUNTER.fetch_add(1, SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("replica.db");
        let db = libsql::Builder::new_local(&path).build().await.unwrap();
        let raw = db.connect().unwrap();
        raw.busy_timeout(Duration::from_secs(5)).unwrap();
        Self {
            url: format!("file:{}", path.display()),
            dir: Some(dir),
            raw,
            _raw_db: db,
            tables: Default::default(),
        }
    }

    async fn server() -> Self {
        tokio::task::spawn_blocking(ensure_server).await.unwrap();
        let db = libsql::Builder::new_remote(SERVER_URL.to_string(), String::new())
            .build()
            .await
            .unwrap();
        let raw = db.connect().unwrap();
        Self {
            url: SERVER_URL.to_string(),
            dir: None,
            raw,
            _raw_db: db,
            tables: Default::default(),
        }
    }

    /// A table name unique to this test and run (`base` may hold any characters).
    fn table(&self, base: &str) -> String {
        let name = format!("{base}_{}_{}", run_tag(), COUNTER.fetch_add(1, SeqCst));
        self.tables.lock().unwrap().push(name.clone());
        name
    }

    fn config(&self, extra: Json) -> TursoConfig {
        let mut c = json!({ "url": self.url });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        serde_json::from_value::<TursoConfig>(c)
            .unwrap()
            .validated()
            .unwrap()
    }

    fn sink(&self, extra: Json) -> Arc<dyn Sink> {
        self.sink_keyed(extra, Default::default())
    }

    fn sink_keyed(&self, extra: Json, keys: KeyColumns) -> Arc<dyn Sink> {
        turso::build(&self.config(extra), keys).unwrap()
    }

    async fn exec(&self, sql: &str) {
        self.raw
            .execute(sql, ())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn query(&self, sql: &str, params: Vec<Value>) -> Vec<BTreeMap<String, Value>> {
        let mut rows = self
            .raw
            .query(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.unwrap() {
            let mut m = BTreeMap::new();
            for i in 0..row.column_count() {
                m.insert(
                    row.column_name(i).unwrap().to_string(),
                    row.get_value(i).unwrap(),
                );
            }
            out.push(m);
        }
        out
    }

    /// `id → row` of a table. Columns are listed explicitly: sqld caches prepared statements
    /// per connection and answers a cached `SELECT *` with the columns it had when first run.
    async fn rows(&self, table: &str) -> BTreeMap<String, BTreeMap<String, Value>> {
        let cols: Vec<String> = self
            .columns(table)
            .await
            .into_iter()
            .map(|c| q(&c.0))
            .collect();
        self.query(
            &format!("SELECT {} FROM {} ORDER BY id", cols.join(", "), q(table)),
            vec![],
        )
        .await
        .into_iter()
        .map(|r| (text(&r["id"]), r))
        .collect()
    }

    async fn columns(&self, table: &str) -> Vec<(String, String)> {
        self.query(
            "SELECT name, type FROM pragma_table_info(?1)",
            vec![Value::Text(table.into())],
        )
        .await
        .into_iter()
        .map(|r| (text(&r["name"]), text(&r["type"])))
        .collect()
    }

    /// Drops the test's tables (the server keeps its data between runs).
    async fn finish(self) {
        let tables = self.tables.lock().unwrap().clone();
        for t in tables {
            let _ = self
                .raw
                .execute(&format!("DROP TABLE IF EXISTS {}", q(&t)), ())
                .await;
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A stored value as the conformance suite wants it: booleans (INTEGER columns holding 0/1)
/// as booleans, JSON text (objects and arrays) parsed, numbers as numbers.
fn typed(column: &str, declared: &str, v: Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i)
            if declared.eq_ignore_ascii_case("INTEGER")
                && !column.eq_ignore_ascii_case("id")
                && (i == 0 || i == 1) =>
        {
            Json::Bool(i == 1)
        }
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(f),
        Value::Text(s) if s.starts_with('{') || s.starts_with('[') => {
            serde_json::from_str(&s).unwrap_or(Json::String(s))
        }
        Value::Text(s) => Json::String(s),
        Value::Blob(b) => panic!("unexpected blob of {} bytes in {column}", b.len()),
    }
}

#[async_trait::async_trait]
impl sql_conformance::TestDb for Db {
    fn dialect(&self) -> s3db_replicator::schema::Dialect {
        s3db_replicator::schema::Dialect::Sqlite
    }

    fn sink_keyed(&self, extra: Json, keys: KeyColumns) -> Arc<dyn Sink> {
        Db::sink_keyed(self, extra, keys)
    }

    async fn exec(&self, sql: &str) {
        Db::exec(self, sql).await
    }

    async fn rows(&self, table: &str) -> BTreeMap<String, serde_json::Map<String, Json>> {
        let cols = self.columns(table).await;
        let list: Vec<String> = cols.iter().map(|c| q(&c.0)).collect();
        let mut rows = self
            .raw
            .query(&format!("SELECT {} FROM {}", list.join(", "), q(table)), ())
            .await
            .unwrap();
        let mut out = BTreeMap::new();
        while let Some(row) = rows.next().await.unwrap() {
            let mut m = serde_json::Map::new();
            let mut key = String::new();
            for (i, (name, declared)) in cols.iter().enumerate() {
                let v = row.get_value(i as i32).unwrap();
                // Keyed by `id`, or by the first column (a table with another key column).
                if name.eq_ignore_ascii_case("id") || (i == 0 && key.is_empty()) {
                    key = match &v {
                        Value::Text(s) => s.clone(),
                        Value::Integer(n) => n.to_string(),
                        other => panic!("id {other:?}"),
                    };
                }
                m.insert(name.clone(), typed(name, declared, v));
            }
            out.insert(key, m);
        }
        out
    }

    async fn columns(&self, table: &str) -> Option<Vec<String>> {
        let cols: Vec<String> = Db::columns(self, table)
            .await
            .into_iter()
            .map(|c| c.0)
            .collect();
        (!cols.is_empty()).then_some(cols)
    }
}

/// The shared SQL conformance suite (`tests/sql_conformance`), on a file and on the server.
mod conformance_file {
    async fn make() -> Box<dyn super::sql_conformance::TestDb> {
        Box::new(super::Db::file().await)
    }
    sql_conformance_suite!(make);
}

mod conformance_server {
    async fn make() -> Box<dyn super::sql_conformance::TestDb> {
        Box::new(super::Db::server().await)
    }
    sql_conformance_suite!(make);
}

fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn ch(seq: u64, op: Op, dest: &str, id: &str, data: Json) -> Change {
    let mut data = data;
    if op != Op::Deleted && data.get("id").is_none() {
        data["id"] = json!(id);
    }
    Change {
        seq,
        change_id: format!("0000000000000000:{seq}"),
        op,
        resource: "users".into(),
        dest: dest.into(),
        id: id.into(),
        data,
        before: None,
        ts_ms: 1_700_000_000_000 + seq,
    }
}

async fn write(sink: &Arc<dyn Sink>, batch: &[Change]) {
    match sink.write_batch(batch).await {
        Ok(BatchOutcome::Delivered) => {}
        Ok(BatchOutcome::Partial(f)) => panic!("partial: {f:?}"),
        Err(e) => panic!("write failed: {e} ({:?})", e.kind),
    }
}

fn alter() -> Json {
    json!({ "schemaSync": { "enabled": true, "strategy": "alter" } })
}

/// Runs an `async fn(Db)` scenario against a local file and against the server.
macro_rules! both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn file() {
                super::$case(super::Db::file().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn server() {
                super::$case(super::Db::server().await).await
            }
        }
    )*};
}

both!(
    insert_update_delete_and_redelivery,
    last_change_of_a_record_wins,
    updates_only_touch_the_fields_a_record_has,
    a_bad_row_fails_the_batch_permanently,
    the_engine_isolates_a_bad_row,
    odd_identifiers_and_values_round_trip,
    json_booleans_and_numbers_keep_their_types,
    alter_creates_tables_and_adds_columns,
    drop_create_recreates_the_table,
    validate_only_never_modifies,
    a_hand_made_table_with_extra_columns_keeps_working,
    log_table_gets_one_row_per_operation,
    concurrent_batches_are_serialised,
    tables_are_required_without_schema_sync,
);

// =============================================================================================
// Writes

async fn insert_update_delete_and_redelivery(db: Db) {
    let t = db.table("crud");
    let sink = db.sink(alter());
    let schema = parse_attributes(&json!({ "name": "string|required", "age": "number" }));
    let events = sink.sync_schema(&t, &schema).await.unwrap();
    assert!(
        matches!(&events[..], [SchemaEvent::TableCreated { table_name, .. }] if table_name == &t),
        "{events:?}"
    );

    let inserts = [
        ch(
            1,
            Op::Inserted,
            &t,
            "a",
            json!({ "name": "Ann", "age": 30 }),
        ),
        ch(
            2,
            Op::Inserted,
            &t,
            "b",
            json!({ "name": "Bob", "age": 40.5 }),
        ),
    ];
    write(&sink, &inserts).await;
    let rows = db.rows(&t).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows["a"]["name"], Value::Text("Ann".into()));
    assert_eq!(rows["b"]["age"], Value::Real(40.5));

    let update = [ch(
        3,
        Op::Updated,
        &t,
        "a",
        json!({ "name": "Anna", "age": 31 }),
    )];
    write(&sink, &update).await;
    assert_eq!(db.rows(&t).await["a"]["name"], Value::Text("Anna".into()));

    let delete = [ch(4, Op::Deleted, &t, "b", json!({}))];
    write(&sink, &delete).await;
    assert!(!db.rows(&t).await.contains_key("b"));

    // Redelivering any of these changes is harmless: same rows, no error.
    write(&sink, &update).await;
    write(&sink, &delete).await;
    write(&sink, &update).await;
    let rows = db.rows(&t).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows["a"]["name"], Value::Text("Anna".into()));
    assert_eq!(rows["a"]["age"], Value::Real(31.0));
    // Deleting a record that was never there is fine too.
    write(&sink, &[ch(5, Op::Deleted, &t, "nobody", json!({}))]).await;
    // An insert redelivered after a later update is an upsert, not a duplicate-key error.
    write(&sink, &inserts[..1]).await;
    assert_eq!(db.rows(&t).await["a"]["name"], Value::Text("Ann".into()));
    sink.healthcheck().await.unwrap();
    sink.close().await;
    db.finish().await;
}

async fn last_change_of_a_record_wins(db: Db) {
    let t = db.table("last");
    let sink = db.sink(alter());
    let batch = [
        ch(1, Op::Inserted, &t, "a", json!({ "v": 1 })),
        ch(2, Op::Inserted, &t, "b", json!({ "v": 1 })),
        ch(3, Op::Updated, &t, "a", json!({ "v": 2 })),
        ch(4, Op::Deleted, &t, "b", json!({})),
        ch(5, Op::Updated, &t, "a", json!({ "v": 3 })),
        ch(6, Op::Deleted, &t, "c", json!({})),
        ch(7, Op::Inserted, &t, "c", json!({ "v": 7 })),
    ];
    write(&sink, &batch).await;
    let rows = db.rows(&t).await;
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(rows["a"]["v"], Value::Real(3.0));
    assert_eq!(rows["c"]["v"], Value::Real(7.0));
    db.finish().await;
}

async fn updates_only_touch_the_fields_a_record_has(db: Db) {
    let t = db.table("partial");
    db.exec(&format!(
        "CREATE TABLE {} (id TEXT PRIMARY KEY, a TEXT, b TEXT)",
        q(&t)
    ))
    .await;
    let sink = db.sink(json!({}));
    write(
        &sink,
        &[ch(1, Op::Inserted, &t, "x", json!({ "a": "1", "b": "1" }))],
    )
    .await;
    // Rows with different field sets in one batch.
    write(
        &sink,
        &[
            ch(2, Op::Updated, &t, "x", json!({ "a": "2" })),
            ch(3, Op::Inserted, &t, "y", json!({ "b": "y" })),
            ch(4, Op::Inserted, &t, "z", json!({})),
        ],
    )
    .await;
    let rows = db.rows(&t).await;
    assert_eq!(
        (&rows["x"]["a"], &rows["x"]["b"]),
        (&Value::Text("2".into()), &Value::Text("1".into()))
    );
    assert_eq!(
        (&rows["y"]["a"], &rows["y"]["b"]),
        (&Value::Null, &Value::Text("y".into()))
    );
    assert_eq!(rows["z"]["a"], Value::Null);
    // An explicit null does clear a field.
    write(&sink, &[ch(5, Op::Updated, &t, "x", json!({ "b": null }))]).await;
    assert_eq!(db.rows(&t).await["x"]["b"], Value::Null);
    db.finish().await;
}

/// A hand-made table with CHECK and NOT NULL constraints (SQLite's typing alone is loose).
async fn strict_table(db: &Db, base: &str) -> String {
    let t = db.table(base);
    db.exec(&format!("CREATE TABLE {} (id TEXT PRIMARY KEY, n REAL, name TEXT NOT NULL CHECK(length(name) <= 10))", q(&t))).await;
    t
}

async fn a_bad_row_fails_the_batch_permanently(db: Db) {
    for (bad, why) in [
        (
            json!({ "n": 1.5, "name": "this name is too long" }),
            "CHECK constraint",
        ),
        (json!({ "n": 1.5 }), "NOT NULL constraint"),
        // SQLite would store the text in the REAL column; the driver refuses it.
        (json!({ "n": "not a number", "name": "x" }), "not a number"),
    ] {
        let t = strict_table(&db, "strict").await;
        let sink = db.sink(json!({}));
        let batch = [
            ch(
                1,
                Op::Inserted,
                &t,
                "good1",
                json!({ "n": 1.5, "name": "g" }),
            ),
            ch(2, Op::Inserted, &t, "bad", bad.clone()),
            ch(3, Op::Inserted, &t, "good2", json!({ "n": 2, "name": "g" })),
        ];
        let err = match sink.write_batch(&batch).await {
            Err(e) => e,
            Ok(o) => panic!("{bad}: expected a permanent error, got {o:?}"),
        };
        assert_eq!(err.kind, ErrorKind::Permanent, "{bad}: {err}");
        assert!(err.message.contains(why), "{err}");
        assert!(
            db.rows(&t).await.is_empty(),
            "the batch's transaction is rolled back"
        );
        // The good rows alone go through (what the engine does after splitting the batch).
        write(&sink, &[batch[0].clone(), batch[2].clone()]).await;
        assert_eq!(db.rows(&t).await.len(), 2);
        assert_eq!(
            db.rows(&t).await["good2"]["n"],
            Value::Real(2.0),
            "an integer into a REAL column is a real"
        );
    }
    db.finish().await;
}

async fn the_engine_isolates_a_bad_row(db: Db) {
    let t = strict_table(&db, "engine").await;
    let host = TestHost::new();
    let engine = start(
        one_replicator(
            json!({ "users": t }),
            json!({ "concurrency": 1, "batchSize": 50, "lingerMs": 20, "maxRetries": 2, "retryDelay": 0 }),
        ),
        host.clone(),
        vec![db.sink(json!({}))],
    );
    for i in 0..10 {
        let data = if i == 6 {
            json!({ "n": 1, "name": "a name that is too long" })
        } else {
            json!({ "n": i as f64 + 0.5, "name": format!("u{i}") })
        };
        push(&engine, "users", Op::Inserted, rec(&format!("u{i}"), data));
    }
    within("flush", Duration::from_secs(30), engine.flush()).await;
    let failed = host.with_status(OutcomeStatus::Failed);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].record_id, "u6");
    assert_eq!(failed[0].code, Some("ERR_SINK_REJECTED"));
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("CHECK constraint"),
        "{failed:?}"
    );
    assert_eq!(host.count(OutcomeStatus::Replicated), 9);
    let rows = db.rows(&t).await;
    assert_eq!(rows.len(), 9);
    assert!(!rows.contains_key("u6"));
    engine.stop(Duration::from_secs(5)).await;
    db.finish().await;
}

async fn odd_identifiers_and_values_round_trip(db: Db) {
    let t = db.table("we\"ird 'tbl' ünï");
    let sink = db.sink(alter());
    let long: String = "0123456789abcdef".repeat(16 * 1024); // 256 KiB
    let nasty = "'); DROP TABLE users; -- \" ` \\ \u{0} \n\t ünïcødé 😀 日本";
    let data = json!({
        "select": "s", "order": 2.5, "from": true, "col \"q\"": "quoted", "with space": "sp",
        "ünïcødé": "ü", "it's": "apostrophe", "long": long, "nasty": nasty, "empty": "",
    });
    write(
        &sink,
        &[ch(1, Op::Inserted, &t, "id 'one' \"1\" ü", data.clone())],
    )
    .await;
    let rows = db.rows(&t).await;
    let row = &rows["id 'one' \"1\" ü"];
    for (k, v) in data.as_object().unwrap() {
        let got = &row[k];
        match v {
            // Compared as hex: libsql's local reader stops at a NUL character (the stored text is whole).
            Json::String(s) => {
                let hex = db
                    .query(&format!("SELECT hex({}) h FROM {}", q(k), q(&t)), vec![])
                    .await;
                assert_eq!(
                    text(&hex[0]["h"]),
                    s.bytes().map(|b| format!("{b:02X}")).collect::<String>(),
                    "{k}"
                );
                if !s.contains('\0') {
                    assert_eq!(got, &Value::Text(s.clone()), "{k}");
                }
            }
            Json::Bool(b) => assert_eq!(got, &Value::Integer(i64::from(*b)), "{k}"),
            Json::Number(n) => assert_eq!(got, &Value::Real(n.as_f64().unwrap()), "{k}"),
            _ => unreachable!(),
        }
    }
    // Update and delete through the same odd names.
    write(
        &sink,
        &[ch(
            2,
            Op::Updated,
            &t,
            "id 'one' \"1\" ü",
            json!({ "select": "s2", "order": 3 }),
        )],
    )
    .await;
    assert_eq!(
        db.rows(&t).await["id 'one' \"1\" ü"]["select"],
        Value::Text("s2".into())
    );
    write(
        &sink,
        &[ch(3, Op::Deleted, &t, "id 'one' \"1\" ü", json!({}))],
    )
    .await;
    assert!(db.rows(&t).await.is_empty());
    db.finish().await;
}

async fn json_booleans_and_numbers_keep_their_types(db: Db) {
    // Columns without a declared type keep exactly the storage class bound.
    let t = db.table("types");
    db.exec(&format!(
        "CREATE TABLE {} (id TEXT PRIMARY KEY, i, f, yes, no, obj, arr, s, z, big, neg)",
        q(&t)
    ))
    .await;
    let sink = db.sink(json!({}));
    let obj = json!({ "a": 1, "nested": { "b": [1, 2, { "c": null }] }, "s": "x\"y" });
    let arr = json!([1, "two", null, true, 2.5]);
    write(
        &sink,
        &[ch(1, Op::Inserted, &t, "r", json!({ "i": 42, "f": 1.25, "yes": true, "no": false, "obj": obj, "arr": arr, "s": "42", "z": null, "big": u64::MAX, "neg": i64::MIN }))],
    )
    .await;
    let typed = db
        .query(
            &format!("SELECT typeof(i) ti, i, typeof(f) tf, f, yes, no, typeof(yes) tb, obj, arr, typeof(obj) tobj, typeof(s) ts, typeof(z) tz, neg FROM {}", q(&t)),
            vec![],
        )
        .await;
    let r = &typed[0];
    assert_eq!(
        (text(&r["ti"]), &r["i"]),
        ("integer".into(), &Value::Integer(42))
    );
    assert_eq!(
        (text(&r["tf"]), &r["f"]),
        ("real".into(), &Value::Real(1.25))
    );
    assert_eq!(
        (text(&r["tb"]), &r["yes"], &r["no"]),
        ("integer".into(), &Value::Integer(1), &Value::Integer(0))
    );
    assert_eq!(text(&r["tobj"]), "text");
    assert_eq!(serde_json::from_str::<Json>(&text(&r["obj"])).unwrap(), obj);
    assert_eq!(serde_json::from_str::<Json>(&text(&r["arr"])).unwrap(), arr);
    assert_eq!(text(&r["ts"]), "text", "a numeric string stays a string");
    assert_eq!(text(&r["tz"]), "null");
    assert_eq!(r["neg"], Value::Integer(i64::MIN));
    // SQLite's JSON functions read the stored text.
    let j = db
        .query(
            &format!(
                "SELECT json_extract(obj, '$.nested.b[1]') b, json_array_length(arr) n FROM {}",
                q(&t)
            ),
            vec![],
        )
        .await;
    assert_eq!(
        (&j[0]["b"], &j[0]["n"]),
        (&Value::Integer(2), &Value::Integer(5))
    );

    // In a table created by schema sync: REAL numbers, INTEGER booleans, TEXT JSON.
    let t2 = db.table("typed");
    let sink = db.sink(alter());
    let schema = parse_attributes(
        &json!({ "n": "number", "ok": "boolean", "meta": "json", "tags": "array", "name": "string" }),
    );
    sink.sync_schema(&t2, &schema).await.unwrap();
    let cols: BTreeMap<String, String> = db.columns(&t2).await.into_iter().collect();
    assert_eq!(
        (
            cols["n"].as_str(),
            cols["ok"].as_str(),
            cols["meta"].as_str(),
            cols["tags"].as_str()
        ),
        ("REAL", "INTEGER", "TEXT", "TEXT")
    );
    write(
        &sink,
        &[ch(
            1,
            Op::Inserted,
            &t2,
            "r",
            json!({ "n": 3, "ok": true, "meta": { "k": [1] }, "tags": ["a"], "name": "x" }),
        )],
    )
    .await;
    let r = &db
        .query(
            &format!(
                "SELECT typeof(n) tn, n, typeof(ok) tok, ok, meta, tags FROM {}",
                q(&t2)
            ),
            vec![],
        )
        .await[0];
    assert_eq!(
        (text(&r["tn"]), &r["n"]),
        ("real".into(), &Value::Real(3.0))
    );
    assert_eq!(
        (text(&r["tok"]), &r["ok"]),
        ("integer".into(), &Value::Integer(1))
    );
    assert_eq!(
        serde_json::from_str::<Json>(&text(&r["meta"])).unwrap(),
        json!({ "k": [1] })
    );
    assert_eq!(
        serde_json::from_str::<Json>(&text(&r["tags"])).unwrap(),
        json!(["a"])
    );
    db.finish().await;
}

// =============================================================================================
// Schema sync

async fn alter_creates_tables_and_adds_columns(db: Db) {
    let t = db.table("alter");
    let sink = db.sink(alter());
    let v1 =
        parse_attributes(&json!({ "email": "string|required|maxlength:255", "age": "number" }));
    let ev = sink.sync_schema(&t, &v1).await.unwrap();
    assert!(
        matches!(&ev[..], [SchemaEvent::TableCreated { attributes, .. }] if attributes.len() == 2),
        "{ev:?}"
    );
    let names: Vec<String> = db.columns(&t).await.into_iter().map(|c| c.0).collect();
    assert_eq!(names, ["id", "age", "email"]);
    // Unchanged schema: nothing to do.
    assert!(sink.sync_schema(&t, &v1).await.unwrap().is_empty());
    write(
        &sink,
        &[ch(
            1,
            Op::Inserted,
            &t,
            "a",
            json!({ "email": "a@x", "age": 1 }),
        )],
    )
    .await;

    let v2 = parse_attributes(
        &json!({ "email": "string|required|maxlength:255", "age": "number", "phoneNumber": "string|maxlength:20" }),
    );
    let ev = sink.sync_schema(&t, &v2).await.unwrap();
    assert!(
        matches!(&ev[..], [SchemaEvent::TableAltered { added_columns, .. }] if added_columns == &["phoneNumber".to_string()]),
        "{ev:?}"
    );
    assert!(db.columns(&t).await.iter().any(|c| c.0 == "phoneNumber"));
    write(
        &sink,
        &[ch(
            2,
            Op::Updated,
            &t,
            "a",
            json!({ "email": "a@x", "age": 2, "phoneNumber": "555" }),
        )],
    )
    .await;
    let rows = db.rows(&t).await;
    assert_eq!(rows["a"]["phoneNumber"], Value::Text("555".into()));

    // A field the schema does not know yet is added on the write path too.
    write(
        &sink,
        &[ch(
            3,
            Op::Updated,
            &t,
            "a",
            json!({ "email": "a@x", "brandNew": [1, 2] }),
        )],
    )
    .await;
    let rows = db.rows(&t).await;
    assert_eq!(rows["a"]["brandNew"], Value::Text("[1,2]".into()));
    db.finish().await;
}

async fn drop_create_recreates_the_table(db: Db) {
    let t = db.table("dropcreate");
    db.exec(&format!(
        "CREATE TABLE {} (id TEXT PRIMARY KEY, old TEXT)",
        q(&t)
    ))
    .await;
    db.exec(&format!("INSERT INTO {} VALUES ('x', 'old')", q(&t)))
        .await;
    let sink = db.sink(json!({ "schemaSync": { "enabled": true, "strategy": "drop-create" } }));
    let schema = parse_attributes(&json!({ "name": "string" }));
    let ev = sink.sync_schema(&t, &schema).await.unwrap();
    assert!(
        matches!(&ev[..], [SchemaEvent::TableRecreated { .. }]),
        "{ev:?}"
    );
    assert!(db.rows(&t).await.is_empty(), "drop-create loses the data");
    let names: Vec<String> = db.columns(&t).await.into_iter().map(|c| c.0).collect();
    assert_eq!(names, ["id", "name"]);
    write(
        &sink,
        &[ch(1, Op::Inserted, &t, "a", json!({ "name": "n" }))],
    )
    .await;
    assert_eq!(db.rows(&t).await.len(), 1);
    // A missing table is created (and reported as created).
    let t2 = db.table("dropcreate_new");
    let ev = sink.sync_schema(&t2, &schema).await.unwrap();
    assert!(
        matches!(&ev[..], [SchemaEvent::TableCreated { .. }]),
        "{ev:?}"
    );
    db.finish().await;
}

async fn validate_only_never_modifies(db: Db) {
    let schema = parse_attributes(&json!({ "name": "string", "age": "number" }));
    let cfg = |on: &str| json!({ "schemaSync": { "enabled": true, "strategy": "validate-only", "onMismatch": on } });

    // A missing table.
    let missing = db.table("vo_missing");
    let err = db
        .sink(cfg("error"))
        .sync_schema(&missing, &schema)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("does not exist"), "{err}");
    let ev = db
        .sink(cfg("warn"))
        .sync_schema(&missing, &schema)
        .await
        .unwrap();
    assert!(
        matches!(&ev[..], [SchemaEvent::SchemaMismatch { .. }]),
        "{ev:?}"
    );
    assert!(db
        .sink(cfg("ignore"))
        .sync_schema(&missing, &schema)
        .await
        .unwrap()
        .is_empty());
    assert!(
        db.columns(&missing).await.is_empty(),
        "validate-only never creates"
    );

    // A table lacking a column and typing another differently.
    let t = db.table("vo");
    db.exec(&format!(
        "CREATE TABLE {} (id TEXT PRIMARY KEY, name TEXT, age TEXT)",
        q(&t)
    ))
    .await;
    let err = db
        .sink(cfg("error"))
        .sync_schema(
            &t,
            &parse_attributes(&json!({ "name": "string", "age": "number", "email": "string" })),
        )
        .await
        .unwrap_err();
    assert!(
        err.message.contains("email") && err.message.contains("age"),
        "{err}"
    );
    let ev = db
        .sink(cfg("warn"))
        .sync_schema(
            &t,
            &parse_attributes(&json!({ "name": "string", "email": "string" })),
        )
        .await
        .unwrap();
    assert!(
        matches!(&ev[..], [SchemaEvent::SchemaMismatch { message, .. }] if message.contains("email")),
        "{ev:?}"
    );
    assert!(db
        .sink(cfg("ignore"))
        .sync_schema(&t, &parse_attributes(&json!({ "email": "string" })))
        .await
        .unwrap()
        .is_empty());
    let names: Vec<String> = db.columns(&t).await.into_iter().map(|c| c.0).collect();
    assert_eq!(names, ["id", "name", "age"], "validate-only never alters");
    // A matching table passes; rows are written, an unknown field fails that record only.
    let sink = db.sink(cfg("error"));
    assert!(sink
        .sync_schema(&t, &parse_attributes(&json!({ "name": "string" })))
        .await
        .unwrap()
        .is_empty());
    match sink
        .write_batch(&[
            ch(1, Op::Inserted, &t, "a", json!({ "name": "n" })),
            ch(2, Op::Inserted, &t, "b", json!({ "email": "e" })),
        ])
        .await
        .unwrap()
    {
        BatchOutcome::Partial(f) => {
            assert_eq!(f.len(), 1);
            assert_eq!((f[0].0, f[0].1.kind), (1, ErrorKind::Permanent));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(db.rows(&t).await.keys().collect::<Vec<_>>(), ["a"]);
    db.finish().await;
}

async fn a_hand_made_table_with_extra_columns_keeps_working(db: Db) {
    let t = db.table("handmade");
    db.exec(&format!("CREATE TABLE {} (id TEXT PRIMARY KEY, name TEXT, legacy TEXT NOT NULL DEFAULT 'dflt', extra INTEGER)", q(&t))).await;
    let sink = db.sink(alter());
    let ev = sink
        .sync_schema(
            &t,
            &parse_attributes(&json!({ "name": "string", "age": "number" })),
        )
        .await
        .unwrap();
    assert!(
        matches!(&ev[..], [SchemaEvent::TableAltered { added_columns, .. }] if added_columns == &["age".to_string()]),
        "{ev:?}"
    );
    let names: Vec<String> = db.columns(&t).await.into_iter().map(|c| c.0).collect();
    assert_eq!(
        names,
        ["id", "name", "legacy", "extra", "age"],
        "extra columns are kept"
    );
    write(
        &sink,
        &[ch(
            1,
            Op::Inserted,
            &t,
            "a",
            json!({ "name": "n", "age": 1 }),
        )],
    )
    .await;
    assert_eq!(db.rows(&t).await["a"]["legacy"], Value::Text("dflt".into()));
    db.exec(&format!("UPDATE {} SET legacy = 'kept', extra = 7", q(&t)))
        .await;
    write(
        &sink,
        &[ch(
            2,
            Op::Updated,
            &t,
            "a",
            json!({ "name": "m", "age": 2 }),
        )],
    )
    .await;
    let r = &db.rows(&t).await["a"];
    assert_eq!(
        (&r["name"], &r["legacy"], &r["extra"]),
        (
            &Value::Text("m".into()),
            &Value::Text("kept".into()),
            &Value::Integer(7)
        )
    );
    db.finish().await;
}

// =============================================================================================
// logTable, concurrency, configuration

async fn log_table_gets_one_row_per_operation(db: Db) {
    let t = db.table("logged");
    let log = db.table("repl_log");
    let sink = db.sink(json!({ "logTable": log, "schemaSync": { "enabled": true } }));
    let batch = [
        ch(1, Op::Inserted, &t, "a", json!({ "v": 1 })),
        ch(2, Op::Updated, &t, "a", json!({ "v": 2 })),
        ch(3, Op::Inserted, &t, "b", json!({ "v": 1 })),
        ch(4, Op::Deleted, &t, "b", json!({ "id": "b", "v": 1 })),
    ];
    write(&sink, &batch).await;
    write(&sink, &[ch(5, Op::Deleted, &t, "a", json!(null))]).await;
    let rows = db
        .query(
            &format!(
                "SELECT resource, operation, record_id, data, replicated_at FROM {} ORDER BY id",
                q(&log)
            ),
            vec![],
        )
        .await;
    let ops: Vec<(String, String)> = rows
        .iter()
        .map(|r| (text(&r["operation"]), text(&r["record_id"])))
        .collect();
    assert_eq!(
        ops,
        [
            ("inserted", "a"),
            ("updated", "a"),
            ("inserted", "b"),
            ("deleted", "b"),
            ("deleted", "a")
        ]
        .map(|(o, i)| (o.to_string(), i.to_string()))
    );
    assert!(rows
        .iter()
        .all(|r| text(&r["resource"]) == "users" && !text(&r["replicated_at"]).is_empty()));
    assert_eq!(
        serde_json::from_str::<Json>(&text(&rows[1]["data"])).unwrap(),
        json!({ "id": "a", "v": 2 })
    );
    assert_eq!(rows[4]["data"], Value::Null);
    assert!(db.rows(&t).await.is_empty());
    db.finish().await;
}

async fn concurrent_batches_are_serialised(db: Db) {
    let t = db.table("concurrent");
    let sink = db.sink(alter());
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let sink = sink.clone();
            let t = t.clone();
            tokio::spawn(async move {
                for b in 0..5 {
                    let batch: Vec<Change> = (0..20)
                        .map(|i| {
                            ch(
                                i,
                                Op::Inserted,
                                &t,
                                &format!("w{w}b{b}r{i}"),
                                json!({ "w": w, "n": i }),
                            )
                        })
                        .collect();
                    write(&sink, &batch).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(db.rows(&t).await.len(), 8 * 5 * 20);
    db.finish().await;
}

async fn tables_are_required_without_schema_sync(db: Db) {
    let t = db.table("absent");
    let sink = db.sink(json!({}));
    match sink
        .write_batch(&[ch(1, Op::Inserted, &t, "a", json!({ "v": 1 }))])
        .await
        .unwrap()
    {
        BatchOutcome::Partial(f) => assert!(
            f[0].1.message.contains("does not exist") && f[0].1.kind == ErrorKind::Permanent,
            "{f:?}"
        ),
        other => panic!("{other:?}"),
    }
    db.finish().await;
}

/// libSQL servers expire a stream idle for ~10 s; the driver must not fail (or retry) the next
/// operation because of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_connection_keeps_working() {
    let db = Db::server().await;
    let t = db.table("idle");
    let sink = db.sink(alter());
    let schema = parse_attributes(&json!({ "v": "number" }));
    sink.sync_schema(&t, &schema).await.unwrap();
    write(&sink, &[ch(1, Op::Inserted, &t, "a", json!({ "v": 1 }))]).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(sink.sync_schema(&t, &schema).await.unwrap().is_empty());
    write(&sink, &[ch(2, Op::Updated, &t, "a", json!({ "v": 2 }))]).await;
    sink.healthcheck().await.unwrap();
    assert_eq!(db.rows(&t).await["a"]["v"], Value::Real(2.0));
    db.finish().await;
}

#[tokio::test]
async fn building_never_connects_and_unreachable_destinations_are_retryable() {
    let missing_dir = std::env::temp_dir()
        .join(format!("s3db-turso-missing-{}", run_tag()))
        .join("no/such/dir/x.db");
    for url in [
        "http://127.0.0.1:9".to_string(),
        format!("file:{}", missing_dir.display()),
    ] {
        let cfg: TursoConfig = serde_json::from_value::<TursoConfig>(json!({ "url": url }))
            .unwrap()
            .validated()
            .unwrap();
        let started = std::time::Instant::now();
        let sink = turso::build(&cfg, Default::default()).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "build must not block"
        );
        let err = sink.healthcheck().await.unwrap_err();
        assert!(err.is_retryable(), "{url}: {err}");
        let err = match sink
            .write_batch(&[ch(1, Op::Inserted, "t", "a", json!({}))])
            .await
        {
            Err(e) => e,
            Ok(o) => panic!("{url}: {o:?}"),
        };
        assert!(err.is_retryable(), "{url}: {err}");
        assert!(err.message.starts_with("Turso"), "{err}");
    }
}

#[test]
fn redacted_config_hides_the_token() {
    let cfg: TursoConfig = serde_json::from_value::<TursoConfig>(
        json!({ "url": "libsql://db-org.turso.io", "authToken": "secret-token" }),
    )
    .unwrap()
    .validated()
    .unwrap();
    let shown = format!("{cfg:?} {}", cfg.redacted());
    assert!(!shown.contains("secret-token"), "{shown}");
}
