//! Conformance suite of the SQL sinks (PostgreSQL, MySQL/MariaDB, PlanetScale, Turso, ...).
//!
//! A driver's test file implements [`TestDb`] (how to build its sink and how to read a table
//! back with typed values) and instantiates every case with
//! `sql_conformance_suite!(path::to::async_fn_returning_Box_dyn_TestDb);` inside a module.
//! The file must declare `mod common;` (the engine test host) before `#[macro_use] mod
//! sql_conformance;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use s3db_replicator::engine::OutcomeStatus;
use s3db_replicator::error::ErrorKind;
use s3db_replicator::event::{Change, Op};
use s3db_replicator::schema::{self, parse_attributes, Dialect};
use s3db_replicator::sinks::sql::KeyColumns;
use s3db_replicator::sinks::{BatchOutcome, SchemaEvent, Sink};

/// One destination database as the suite sees it.
#[async_trait]
pub trait TestDb: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// A sink of the driver under test with `extra` (e.g. `schemaSync`, `logTable`) merged
    /// into its connection config.
    fn sink(&self, extra: Value) -> Arc<dyn Sink> {
        self.sink_keyed(extra, KeyColumns::new())
    }
    /// `sink`, with tables whose key column is not `id` (`primaryKey`).
    fn sink_keyed(&self, extra: Value, keys: KeyColumns) -> Arc<dyn Sink>;
    /// Runs raw SQL (hand-made tables, cleanup); panics on failure.
    async fn exec(&self, sql: &str);
    /// Every row of `table` by its `id` (as text), values typed: JSON columns parsed,
    /// booleans as booleans, numbers as numbers, dates and times as text.
    async fn rows(&self, table: &str) -> BTreeMap<String, Map<String, Value>>;
    /// Column names of `table`, `None` when it does not exist.
    async fn columns(&self, table: &str) -> Option<Vec<String>>;
}

/// Instantiates one `#[tokio::test]` per listed case for the database `$make` returns.
#[macro_export]
macro_rules! sql_conformance_tests {
    ($make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let db = $make().await;
                $crate::sql_conformance::$case(&*db).await;
            }
        )*
    };
}

/// Every case of the suite.
#[macro_export]
macro_rules! sql_conformance_suite {
    ($make:path) => {
        $crate::sql_conformance_tests!($make;
            insert_update_delete,
            redelivery_is_harmless,
            last_change_of_a_record_wins_within_a_batch,
            a_bad_row_fails_its_batch_permanently_and_atomically,
            a_bad_row_fails_only_its_record_through_the_engine,
            odd_identifiers_and_values,
            types_round_trip,
            inferred_columns_keep_types,
            schema_sync_alter,
            schema_sync_drop_create,
            schema_sync_validate_only,
            hand_made_table_with_extra_columns,
            log_table_gets_one_row_per_operation,
            missing_table_without_schema_sync_fails_each_record,
            several_tables_in_one_batch,
            another_key_column,
            many_rows_and_columns,
            healthcheck_passes,
        );
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A unique table name: `prefix_<random>`.
pub fn table(prefix: &str) -> String {
    format!("{prefix}_{}", fastrand::u64(..) % 1_000_000_000_000)
}

pub fn change(op: Op, dest: &str, id: &str, data: Value) -> Change {
    let mut data = data;
    if let Value::Object(m) = &mut data {
        m.entry("id").or_insert(json!(id));
    }
    let seq = SEQ.fetch_add(1, SeqCst);
    Change {
        seq,
        change_id: format!("0000000000000000:{seq}"),
        op,
        resource: "users".into(),
        dest: dest.into(),
        id: id.into(),
        data,
        before: None,
        ts_ms: 1_760_783_400_000,
    }
}

pub fn ins(dest: &str, id: &str, data: Value) -> Change {
    change(Op::Inserted, dest, id, data)
}
pub fn upd(dest: &str, id: &str, data: Value) -> Change {
    change(Op::Updated, dest, id, data)
}
pub fn del(dest: &str, id: &str) -> Change {
    change(Op::Deleted, dest, id, json!({ "id": id }))
}

fn alter() -> Value {
    json!({ "schemaSync": { "enabled": true, "strategy": "alter" } })
}

async fn delivered(sink: &dyn Sink, batch: &[Change]) {
    match sink.write_batch(batch).await {
        Ok(BatchOutcome::Delivered) => {}
        other => panic!("expected the batch to be delivered: {other:?}"),
    }
}

async fn drop(db: &dyn TestDb, tables: &[&str]) {
    for t in tables {
        db.exec(&schema::drop_table(db.dialect(), t)).await;
    }
}

/// Milliseconds since the epoch of `YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|±HH[:MM]]`.
pub fn instant_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (y, mo, d): (i64, i64, i64) = (
        s.get(0..4)?.parse().ok()?,
        s.get(5..7)?.parse().ok()?,
        s.get(8..10)?.parse().ok()?,
    );
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy.rem_euclid(400);
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let rest = s.get(10..).unwrap_or("");
    let rest = rest.trim_start_matches(['T', ' ']);
    let (mut h, mut mi, mut sec, mut ms) = (0, 0, 0, 0);
    let mut zone = rest;
    if rest.len() >= 5 {
        h = rest[0..2].parse().ok()?;
        mi = rest[3..5].parse().ok()?;
        zone = &rest[5..];
        if let Some(r) = zone.strip_prefix(':') {
            sec = r.get(0..2)?.parse().ok()?;
            zone = &r[2..];
            if let Some(f) = zone.strip_prefix('.') {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                let digits: String = f[..n]
                    .chars()
                    .chain(std::iter::repeat('0'))
                    .take(3)
                    .collect();
                ms = digits.parse().ok()?;
                zone = &f[n..];
            }
        }
    }
    let offset_min: i64 = match zone {
        "" | "Z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let z = z[1..].replace(':', "");
            sign * (z.get(0..2)?.parse::<i64>().ok()? * 60
                + z.get(2..4).map_or(Some(0), |m| m.parse().ok())?)
        }
    };
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + ms)
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Cases

pub async fn insert_update_delete(db: &dyn TestDb) {
    let t = table("crud");
    let sink = db.sink(alter());
    let events = sink
        .sync_schema(
            &t,
            &parse_attributes(&json!({ "name": "string", "age": "number" })),
        )
        .await
        .unwrap();
    assert!(
        matches!(&events[..], [SchemaEvent::TableCreated { .. }]),
        "{events:?}"
    );
    delivered(
        &*sink,
        &[
            ins(&t, "a", json!({ "name": "Ann", "age": 30 })),
            ins(&t, "b", json!({ "name": "Bob", "age": 40 })),
        ],
    )
    .await;
    let rows = db.rows(&t).await;
    assert_eq!(rows.keys().cloned().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(rows["a"]["name"], "Ann");
    assert_eq!(num(&rows["b"]["age"]), 40.0);

    delivered(
        &*sink,
        &[upd(&t, "a", json!({ "name": "Anna", "age": 31 }))],
    )
    .await;
    let rows = db.rows(&t).await;
    assert_eq!(
        (rows["a"]["name"].clone(), num(&rows["a"]["age"])),
        (json!("Anna"), 31.0)
    );
    assert_eq!(rows["b"]["name"], "Bob", "other rows untouched");

    delivered(&*sink, &[del(&t, "b")]).await;
    let rows = db.rows(&t).await;
    assert_eq!(rows.keys().cloned().collect::<Vec<_>>(), ["a"]);
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn redelivery_is_harmless(db: &dyn TestDb) {
    let t = table("redeliver");
    let sink = db.sink(alter());
    let batch = [
        ins(&t, "a", json!({ "v": 1 })),
        upd(&t, "a", json!({ "v": 2 })),
        ins(&t, "b", json!({ "v": 1 })),
        del(&t, "gone"),
    ];
    delivered(&*sink, &batch).await;
    let first = db.rows(&t).await;
    delivered(&*sink, &batch).await;
    delivered(&*sink, &batch[..1]).await;
    delivered(&*sink, &batch[1..]).await;
    assert_eq!(db.rows(&t).await, first);
    assert_eq!(num(&first["a"]["v"]), 2.0);
    // A delete delivered twice.
    delivered(&*sink, &[del(&t, "b")]).await;
    delivered(&*sink, &[del(&t, "b")]).await;
    assert_eq!(db.rows(&t).await.keys().cloned().collect::<Vec<_>>(), ["a"]);
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn last_change_of_a_record_wins_within_a_batch(db: &dyn TestDb) {
    let t = table("order");
    let sink = db.sink(alter());
    delivered(&*sink, &[ins(&t, "pre", json!({ "v": 0 }))]).await;
    delivered(
        &*sink,
        &[
            ins(&t, "a", json!({ "v": 1 })),
            upd(&t, "a", json!({ "v": 2 })),
            upd(&t, "a", json!({ "v": 3 })),
            ins(&t, "b", json!({ "v": 1 })),
            del(&t, "b"),
            del(&t, "pre"),
            ins(&t, "pre", json!({ "v": 9 })),
            del(&t, "c"),
            ins(&t, "c", json!({ "v": 5 })),
            del(&t, "c"),
        ],
    )
    .await;
    let rows = db.rows(&t).await;
    assert_eq!(rows.keys().cloned().collect::<Vec<_>>(), ["a", "pre"]);
    assert_eq!(num(&rows["a"]["v"]), 3.0);
    assert_eq!(num(&rows["pre"]["v"]), 9.0);
    sink.close().await;
    drop(db, &[&t]).await;
}

async fn number_table(sink: &dyn Sink) -> String {
    let t = table("bad");
    sink.sync_schema(
        &t,
        &parse_attributes(&json!({ "name": "string", "score": "number" })),
    )
    .await
    .unwrap();
    t
}

pub async fn a_bad_row_fails_its_batch_permanently_and_atomically(db: &dyn TestDb) {
    let sink = db.sink(alter());
    let t = number_table(&*sink).await;
    let batch = [
        ins(&t, "a", json!({ "score": 1 })),
        ins(&t, "bad", json!({ "score": "not a number" })),
        ins(&t, "c", json!({ "score": 3 })),
    ];
    match sink.write_batch(&batch).await {
        Err(e) => assert_eq!(e.kind, ErrorKind::Permanent, "{e}"),
        Ok(o) => panic!("a string in a number column must fail: {o:?}"),
    }
    assert!(
        db.rows(&t).await.is_empty(),
        "nothing of a failed batch is applied"
    );
    delivered(&*sink, &[batch[0].clone(), batch[2].clone()]).await;
    assert_eq!(db.rows(&t).await.len(), 2);
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn a_bad_row_fails_only_its_record_through_the_engine(db: &dyn TestDb) {
    use crate::common::{one_replicator, push, rec, start, within, TestHost};
    let sink = db.sink(alter());
    let t = number_table(&*sink).await;
    let host = TestHost::new();
    let engine = start(
        one_replicator(
            json!({ "users": t }),
            json!({ "concurrency": 1, "batchSize": 50, "lingerMs": 20, "retryDelay": 1, "maxRetries": 2 }),
        ),
        host.clone(),
        vec![sink.clone()],
    );
    for i in 0..9 {
        let score = if i == 4 { json!("oops") } else { json!(i) };
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(
                &format!("r{i}"),
                json!({ "name": format!("n{i}"), "score": score }),
            ),
        );
    }
    within("flush", Duration::from_secs(20), engine.flush()).await;
    let bad = host.one_for("r4");
    assert_eq!(bad.status, OutcomeStatus::Failed, "{bad:?}");
    for i in (0..9).filter(|i| *i != 4) {
        assert_eq!(
            host.one_for(&format!("r{i}")).status,
            OutcomeStatus::Replicated
        );
    }
    let rows = db.rows(&t).await;
    assert_eq!(rows.len(), 8);
    assert!(!rows.contains_key("r4"));
    engine.stop(Duration::from_secs(5)).await;
    drop(db, &[&t]).await;
}

pub async fn odd_identifiers_and_values(db: &dyn TestDb) {
    let t = table("odd \"q\" 'x' `b` ü");
    let sink = db.sink(alter());
    let long: String = "abcdefghij".repeat(6_000);
    let data = json!({
        "select": "keyword",
        "order": 3,
        "from": true,
        "group": null,
        "na\"me": "double \" quote",
        "it's": "single ' quote",
        "back`tick": "`tick`",
        "名前": "ünïcödé ✓ 日本語 😀",
        "Mixed Case": "'); DROP TABLE users; -- \\ backslash \n newline \t tab",
        "long": long,
    });
    delivered(&*sink, &[ins(&t, "id 'with' \"quotes\" ✓", data.clone())]).await;
    let rows = db.rows(&t).await;
    let row = rows
        .get("id 'with' \"quotes\" ✓")
        .unwrap_or_else(|| panic!("row not found: {:?}", rows.keys()));
    for (k, v) in data.as_object().unwrap() {
        match v {
            Value::Number(_) => assert_eq!(num(&row[k]), num(v), "{k}"),
            _ => assert_eq!(&row[k], v, "{k}"),
        }
    }
    let cols = db.columns(&t).await.unwrap();
    for k in data.as_object().unwrap().keys() {
        assert!(cols.contains(k), "column {k:?} in {cols:?}");
    }
    // Again through an update, and a delete by the odd id.
    delivered(
        &*sink,
        &[upd(
            &t,
            "id 'with' \"quotes\" ✓",
            json!({ "select": "again", "名前": "二" }),
        )],
    )
    .await;
    let rows = db.rows(&t).await;
    let row = &rows["id 'with' \"quotes\" ✓"];
    assert_eq!(
        (
            row["select"].clone(),
            row["名前"].clone(),
            row["long"].as_str().map(str::len)
        ),
        (json!("again"), json!("二"), Some(60_000))
    );
    delivered(&*sink, &[del(&t, "id 'with' \"quotes\" ✓")]).await;
    assert!(db.rows(&t).await.is_empty());
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn types_round_trip(db: &dyn TestDb) {
    let t = table("types");
    let sink = db.sink(alter());
    let attrs = json!({
        "name": "string", "email": "string|maxlength:255", "meta": "json", "tags": "array", "vec": "embedding:3",
        "active": "boolean", "score": "number", "born": "date", "at": "datetime", "profile": { "bio": "string" }
    });
    sink.sync_schema(&t, &parse_attributes(&attrs))
        .await
        .unwrap();
    let full = json!({
        "name": "Ann", "email": "a@example.com",
        "meta": { "a": 1, "nested": { "b": [1, "x", null, true, 2.5] }, "s": "quote \" and ' and ✓" },
        "tags": ["a", "b", "c"], "vec": [0.1, 0.2, 0.3], "active": true, "score": 1.5, "born": "2024-02-29",
        "at": "2025-10-18T10:30:00.123Z", "profile": { "bio": "hi" }
    });
    let falsy = json!({ "name": "", "meta": {}, "tags": [], "active": false, "score": 0, "born": null, "at": null, "profile": null });
    let int = json!({ "score": 42, "meta": "just a string", "tags": [{ "k": "v" }] });
    delivered(
        &*sink,
        &[
            ins(&t, "full", full.clone()),
            ins(&t, "falsy", falsy.clone()),
            ins(&t, "int", int.clone()),
        ],
    )
    .await;
    let rows = db.rows(&t).await;
    let r = &rows["full"];
    for k in [
        "name", "email", "meta", "tags", "vec", "active", "born", "profile",
    ] {
        assert_eq!(r[k], full[k], "{k}");
    }
    assert_eq!(num(&r["score"]), 1.5);
    assert_eq!(
        instant_ms(r["at"].as_str().unwrap()),
        instant_ms("2025-10-18T10:30:00.123Z"),
        "{}",
        r["at"]
    );
    let r = &rows["falsy"];
    for k in ["name", "meta", "tags", "active", "born", "at", "profile"] {
        assert_eq!(r[k], falsy[k], "{k}");
    }
    assert_eq!(num(&r["score"]), 0.0);
    assert_eq!(
        r["email"],
        Value::Null,
        "a field the record lacks stays NULL"
    );
    let r = &rows["int"];
    assert_eq!(num(&r["score"]), 42.0);
    assert_eq!(
        r["meta"],
        json!("just a string"),
        "a string in a JSON column stays a string"
    );
    assert_eq!(r["tags"], int["tags"]);
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn inferred_columns_keep_types(db: &dyn TestDb) {
    let t = table("inferred");
    let sink = db.sink(alter());
    let data = json!({ "obj": { "x": [1, { "y": null }] }, "arr": [1, "two"], "flag": true, "n": 2.5, "i": 7, "s": "text" });
    delivered(&*sink, &[ins(&t, "a", data.clone())]).await;
    // A later record brings a new field: a column is added on the write path.
    delivered(
        &*sink,
        &[ins(&t, "b", json!({ "s": "b", "extra": { "new": true } }))],
    )
    .await;
    let rows = db.rows(&t).await;
    for k in ["obj", "arr", "flag", "s"] {
        assert_eq!(rows["a"][k], data[k], "{k}");
    }
    assert_eq!((num(&rows["a"]["n"]), num(&rows["a"]["i"])), (2.5, 7.0));
    assert_eq!(rows["b"]["extra"], json!({ "new": true }));
    assert_eq!(rows["a"]["extra"], Value::Null);
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn schema_sync_alter(db: &dyn TestDb) {
    let t = table("alter");
    let sink = db.sink(alter());
    let v1 = parse_attributes(&json!({ "name": "string|required", "age": "number" }));
    let events = sink.sync_schema(&t, &v1).await.unwrap();
    assert_eq!(
        events,
        vec![SchemaEvent::TableCreated {
            table_name: t.clone(),
            attributes: vec!["age".into(), "name".into()]
        }]
    );
    assert_eq!(sorted(db.columns(&t).await.unwrap()), ["age", "id", "name"]);
    delivered(&*sink, &[ins(&t, "a", json!({ "name": "Ann", "age": 1 }))]).await;
    assert!(
        sink.sync_schema(&t, &v1).await.unwrap().is_empty(),
        "nothing to do the second time"
    );

    let v2 = parse_attributes(
        &json!({ "name": "string|required", "age": "number", "phoneNumber": "string|maxlength:20" }),
    );
    let events = sink.sync_schema(&t, &v2).await.unwrap();
    assert_eq!(
        events,
        vec![SchemaEvent::TableAltered {
            table_name: t.clone(),
            added_columns: vec!["phoneNumber".into()],
            dropped_columns: vec![]
        }]
    );
    assert_eq!(
        sorted(db.columns(&t).await.unwrap()),
        ["age", "id", "name", "phoneNumber"]
    );
    assert_eq!(db.rows(&t).await["a"]["name"], "Ann", "data preserved");
    delivered(
        &*sink,
        &[upd(
            &t,
            "a",
            json!({ "name": "Ann", "age": 1, "phoneNumber": "+1 555" }),
        )],
    )
    .await;
    assert_eq!(db.rows(&t).await["a"]["phoneNumber"], "+1 555");
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn schema_sync_drop_create(db: &dyn TestDb) {
    let t = table("dropcreate");
    let s = parse_attributes(&json!({ "name": "string" }));
    let sink = db.sink(json!({ "schemaSync": { "enabled": true, "strategy": "drop-create" } }));
    let events = sink.sync_schema(&t, &s).await.unwrap();
    assert!(
        matches!(&events[..], [SchemaEvent::TableCreated { .. }]),
        "{events:?}"
    );
    delivered(&*sink, &[ins(&t, "a", json!({ "name": "x" }))]).await;
    assert_eq!(db.rows(&t).await.len(), 1);
    let events = sink
        .sync_schema(
            &t,
            &parse_attributes(&json!({ "name": "string", "age": "number" })),
        )
        .await
        .unwrap();
    assert_eq!(
        events,
        vec![SchemaEvent::TableRecreated {
            table_name: t.clone()
        }]
    );
    assert!(db.rows(&t).await.is_empty(), "drop-create loses the data");
    assert_eq!(sorted(db.columns(&t).await.unwrap()), ["age", "id", "name"]);
    delivered(&*sink, &[ins(&t, "b", json!({ "name": "y", "age": 2 }))]).await;
    assert_eq!(db.rows(&t).await.len(), 1);
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn schema_sync_validate_only(db: &dyn TestDb) {
    let t = table("validate");
    let s = parse_attributes(
        &json!({ "name": "string", "age": "number", "on": "boolean", "meta": "json", "at": "datetime", "email": "string|maxlength:100" }),
    );
    let validate = |on: &str| {
        db.sink(json!({ "schemaSync": { "enabled": true, "strategy": "validate-only", "onMismatch": on } }))
    };

    // The table does not exist.
    let e = validate("error").sync_schema(&t, &s).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.contains(&t), "{e}");
    let events = validate("warn").sync_schema(&t, &s).await.unwrap();
    assert!(
        matches!(&events[..], [SchemaEvent::SchemaMismatch { .. }]),
        "{events:?}"
    );
    assert!(validate("ignore")
        .sync_schema(&t, &s)
        .await
        .unwrap()
        .is_empty());
    assert!(
        db.columns(&t).await.is_none(),
        "validate-only never creates"
    );
    // Nor does its write path.
    let sink = validate("ignore");
    match sink
        .write_batch(&[ins(&t, "a", json!({ "name": "x" }))])
        .await
    {
        Ok(BatchOutcome::Partial(f)) => {
            assert!(f.len() == 1 && f[0].1.kind == ErrorKind::Permanent, "{f:?}")
        }
        other => panic!("expected a per-record failure: {other:?}"),
    }
    assert!(db.columns(&t).await.is_none());

    // A table matching the schema validates; a column the table lacks does not.
    db.sink(alter()).sync_schema(&t, &s).await.unwrap();
    assert!(
        validate("error")
            .sync_schema(&t, &s)
            .await
            .unwrap()
            .is_empty(),
        "the types alter creates validate"
    );
    let mut s2 = s.clone();
    s2.attributes
        .extend(parse_attributes(&json!({ "phone": "string" })).attributes);
    let e = validate("error").sync_schema(&t, &s2).await.unwrap_err();
    assert!(e.message.contains("phone"), "{e}");
    let events = validate("warn").sync_schema(&t, &s2).await.unwrap();
    assert!(
        matches!(&events[..], [SchemaEvent::SchemaMismatch { message, .. }] if message.contains("phone")),
        "{events:?}"
    );
    assert!(validate("ignore")
        .sync_schema(&t, &s2)
        .await
        .unwrap()
        .is_empty());
    assert!(!db.columns(&t).await.unwrap().contains(&"phone".to_string()));
    // Writes that fit the table still work under validate-only.
    let sink = validate("error");
    delivered(
        &*sink,
        &[ins(&t, "a", json!({ "name": "x", "age": 1, "on": true }))],
    )
    .await;
    assert_eq!(db.rows(&t).await["a"]["on"], true);
    drop(db, &[&t]).await;
}

/// A table whose key column is not `id` (`primaryKey: 'order_id'`): a hand-made one takes
/// upserts and deletes by that column (no `id` column is added), and schema sync creates one
/// keyed by it.
pub async fn another_key_column(db: &dyn TestDb) {
    let d = db.dialect();
    let t = table("orders");
    let keyed = |t: &str| KeyColumns::from([(t.to_string(), "order_id".to_string())]);
    let mut schema = parse_attributes(&json!({ "total": "number" }));
    schema.key = Some("order_id".into());
    db.exec(&schema::create_table(d, &t, &schema).unwrap())
        .await;
    let sink = db.sink_keyed(alter(), keyed(&t));
    assert!(sink
        .sync_schema(&t, &parse_attributes(&json!({ "total": "number" })))
        .await
        .unwrap()
        .is_empty());
    delivered(
        &*sink,
        &[
            ins(&t, "o1", json!({ "total": 5 })),
            ins(&t, "o2", json!({ "total": 7 })),
        ],
    )
    .await;
    delivered(
        &*sink,
        &[upd(&t, "o1", json!({ "total": 6 })), del(&t, "o2")],
    )
    .await;
    let rows = db.rows(&t).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(num(&rows["o1"]["total"]), 6.0);
    let cols = db.columns(&t).await.unwrap();
    assert!(
        !cols.iter().any(|c| c.eq_ignore_ascii_case("id")),
        "no id column added: {cols:?}"
    );

    // Created by schema sync with the key column.
    let t2 = table("orders_new");
    let sink = db.sink_keyed(alter(), keyed(&t2));
    sink.sync_schema(&t2, &parse_attributes(&json!({ "total": "number" })))
        .await
        .unwrap();
    delivered(&*sink, &[ins(&t2, "o9", json!({ "total": 1 }))]).await;
    let mut cols = db.columns(&t2).await.unwrap();
    cols.sort();
    assert_eq!(cols, ["order_id", "total"]);
    assert_eq!(num(&db.rows(&t2).await["o9"]["total"]), 1.0);
    for t in [t, t2] {
        db.exec(&schema::drop_table(d, &t)).await;
    }
}

pub async fn hand_made_table_with_extra_columns(db: &dyn TestDb) {
    let d = db.dialect();
    let t = table("handmade");
    db.exec(&schema::create_table(d, &t, &parse_attributes(&json!({ "name": "string" }))).unwrap())
        .await;
    db.exec(&schema::add_column(d, &t, "legacy", "VARCHAR(20) DEFAULT 'keep'").unwrap())
        .await;
    db.exec(&schema::add_column(d, &t, "Notes", "TEXT").unwrap())
        .await;
    let sink = db.sink(alter());
    let events = sink
        .sync_schema(&t, &parse_attributes(&json!({ "name": "string" })))
        .await
        .unwrap();
    assert!(
        events.is_empty(),
        "extra columns are left alone: {events:?}"
    );
    delivered(
        &*sink,
        &[ins(
            &t,
            "a",
            json!({ "name": "x", "notes": "case-insensitive match" }),
        )],
    )
    .await;
    delivered(&*sink, &[upd(&t, "a", json!({ "name": "y" }))]).await;
    let rows = db.rows(&t).await;
    assert_eq!(
        (rows["a"]["name"].clone(), rows["a"]["legacy"].clone()),
        (json!("y"), json!("keep"))
    );
    assert_eq!(
        rows["a"]["Notes"], "case-insensitive match",
        "a field absent from a change leaves its column alone"
    );
    // A new field adds a column under alter.
    delivered(&*sink, &[upd(&t, "a", json!({ "name": "z", "age": 3 }))]).await;
    assert_eq!(num(&db.rows(&t).await["a"]["age"]), 3.0);
    assert_eq!(
        sorted(db.columns(&t).await.unwrap()),
        ["Notes", "age", "id", "legacy", "name"]
    );
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn log_table_gets_one_row_per_operation(db: &dyn TestDb) {
    let t = table("logged");
    let log = table("replication_log");
    let mut cfg = alter();
    cfg["logTable"] = json!(log);
    let sink = db.sink(cfg);
    let first = [
        ins(&t, "a", json!({ "name": "x" })),
        upd(&t, "a", json!({ "name": "y" })),
    ];
    let second = [del(&t, "a"), ins(&t, "b", json!({ "name": "b" }))];
    delivered(&*sink, &first).await;
    delivered(&*sink, &second).await;
    let rows = db.rows(&log).await;
    // Each row names its change's identity.
    let mut logged: Vec<String> = rows
        .values()
        .map(|r| r["change_id"].as_str().unwrap().to_string())
        .collect();
    let mut sent: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|c| c.change_id.clone())
        .collect();
    logged.sort();
    sent.sort();
    assert_eq!(logged, sent);
    let mut ops: Vec<(String, String, String)> = rows
        .values()
        .map(|r| {
            (
                r["record_id"].as_str().unwrap().to_string(),
                r["operation"].as_str().unwrap().to_string(),
                r["resource"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ops.sort();
    let want = |id: &str, op: &str| (id.to_string(), op.to_string(), "users".to_string());
    assert_eq!(
        ops,
        vec![
            want("a", "deleted"),
            want("a", "inserted"),
            want("a", "updated"),
            want("b", "inserted")
        ]
    );
    let data: Vec<&Value> = rows.values().map(|r| &r["data"]).collect();
    assert!(
        data.contains(&&json!({ "id": "a", "name": "y" })),
        "{data:?}"
    );
    assert!(rows.values().all(|r| !r["replicated_at"].is_null()));
    assert_eq!(db.rows(&t).await.keys().cloned().collect::<Vec<_>>(), ["b"]);
    sink.close().await;
    drop(db, &[&t, &log]).await;
}

pub async fn missing_table_without_schema_sync_fails_each_record(db: &dyn TestDb) {
    let t = table("missing");
    let sink = db.sink(json!({}));
    match sink
        .write_batch(&[ins(&t, "a", json!({ "v": 1 })), del(&t, "b")])
        .await
    {
        Ok(BatchOutcome::Partial(f)) => {
            assert_eq!(f.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
            assert!(
                f.iter()
                    .all(|(_, e)| e.kind == ErrorKind::Permanent
                        && e.message.contains("does not exist")),
                "{f:?}"
            );
        }
        other => panic!("expected per-record failures: {other:?}"),
    }
    assert!(db.columns(&t).await.is_none());
}

pub async fn several_tables_in_one_batch(db: &dyn TestDb) {
    let (t1, t2) = (table("multi_a"), table("multi_b"));
    let sink = db.sink(alter());
    sink.sync_schema(&t2, &parse_attributes(&json!({ "n": "number" })))
        .await
        .unwrap();
    delivered(
        &*sink,
        &[
            ins(&t1, "a", json!({ "s": "x" })),
            ins(&t2, "a", json!({ "n": 1 })),
            ins(&t1, "b", json!({ "s": "y" })),
        ],
    )
    .await;
    assert_eq!(db.rows(&t1).await.len(), 2);
    assert_eq!(db.rows(&t2).await.len(), 1);
    // One transaction: a bad row in one table leaves the other untouched too.
    let r = sink
        .write_batch(&[
            ins(&t1, "c", json!({ "s": "z" })),
            ins(&t2, "b", json!({ "n": "NaN?" })),
        ])
        .await;
    assert!(
        matches!(&r, Err(e) if e.kind == ErrorKind::Permanent),
        "{r:?}"
    );
    assert!(!db.rows(&t1).await.contains_key("c"));
    sink.close().await;
    drop(db, &[&t1, &t2]).await;
}

pub async fn many_rows_and_columns(db: &dyn TestDb) {
    let t = table("wide");
    let sink = db.sink(alter());
    // 1,500 rows × 46 columns = 69,000 values: more than one MySQL statement may bind.
    let batch: Vec<Change> = (0..1500)
        .map(|i| {
            let mut m = Map::new();
            for c in 0..45 {
                m.insert(
                    format!("c{c:02}"),
                    if c % 2 == 0 {
                        json!(i * c)
                    } else {
                        json!(format!("r{i}c{c}"))
                    },
                );
            }
            ins(&t, &format!("r{i:04}"), Value::Object(m))
        })
        .collect();
    delivered(&*sink, &batch).await;
    let rows = db.rows(&t).await;
    assert_eq!(rows.len(), 1500);
    assert_eq!(rows["r1499"]["c43"], "r1499c43");
    assert_eq!(num(&rows["r1499"]["c44"]), (1499 * 44) as f64);
    let deletes: Vec<Change> = (0..1500)
        .step_by(2)
        .map(|i| del(&t, &format!("r{i:04}")))
        .collect();
    delivered(&*sink, &deletes).await;
    assert_eq!(db.rows(&t).await.len(), 750);
    sink.close().await;
    drop(db, &[&t]).await;
}

pub async fn healthcheck_passes(db: &dyn TestDb) {
    let sink = db.sink(json!({}));
    sink.healthcheck().await.unwrap();
    sink.close().await;
}
