//! The `mongodb` driver against a real MongoDB-wire server (SecantusDB on loopback, started by
//! `scripts/services/mongodb.sh`; `S3DB_REPLICATOR_MONGODB_URL` overrides it). The tests fail,
//! not skip, when the server is unreachable. Every test uses its own database.

mod common;

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Value};

use common::{
    build_sink, failures_of, push, rec, sink_change, start, unique_name, within, TestHost,
};
use s3db_replicator::config::parse_resources;
use s3db_replicator::engine::OutcomeStatus;
use s3db_replicator::event::{Change, Op};
use s3db_replicator::sinks::{Sink, SinkConfig};

const SEC: Duration = Duration::from_secs(1);

fn url() -> String {
    std::env::var("S3DB_REPLICATOR_MONGODB_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:45670/?directConnection=true".into())
}

fn unique_db(prefix: &str) -> String {
    unique_name(prefix, '_')
}

async fn db(name: &str) -> mongodb::Database {
    let client = mongodb::Client::with_uri_str(url()).await.unwrap();
    let db = client.database(name);
    db.run_command(doc! { "ping": 1 })
        .await
        .unwrap_or_else(|e| panic!("the MongoDB-wire server at {} is required: {e}", url()));
    db
}

/// Every document of a collection, by `_id`.
async fn docs(db: &mongodb::Database, coll: &str) -> Vec<Document> {
    use futures_util::TryStreamExt;
    db.collection::<Document>(coll)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn config(database: &str, extra: Value) -> Value {
    let mut c = json!({ "connectionString": url(), "database": database });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        c[k] = v;
    }
    c
}

fn sink_with(config: Value, resources: Value, per_collection: bool) -> Arc<dyn Sink> {
    let routes = parse_resources("resources", &resources, &[]).unwrap();
    let mut c = SinkConfig::parse("mongodb", config).unwrap();
    if let SinkConfig::MongoDb(m) = &mut c {
        m.per_collection_writes = per_collection;
    }
    build_sink(c, routes)
}

fn change(seq: u64, op: Op, dest: &str, id: &str, data: Value) -> Change {
    sink_change("bb", seq, op, dest, id, data)
}

/// The spec's advanced mapping through the engine: a string, `{ collection, actions }` and an
/// array of collections; `_id` is the record id, so an update replaces the inserted document
/// and a delete finds it; deleting a record that is not there succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_and_deletes_by_id_through_the_engine() {
    let name = unique_db("engine");
    let host = TestHost::new();
    let engine = start(
        json!({ "lingerMs": 20, "replicators": [{ "id": "m", "driver": "mongodb",
            "config": config(&name, json!({})),
            "resources": {
                "users": "users",
                "products": { "collection": "products", "actions": ["inserted", "updated", "deleted"] },
                "orders": [
                    { "collection": "orders_active", "actions": ["inserted", "updated"] },
                    { "collection": "orders_archive", "actions": ["inserted"] }
                ]
            } }] }),
        host.clone(),
        vec![],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("u1", json!({ "name": "Ann", "age": 30 })),
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("u2", json!({ "name": "Bob" })),
    );
    push(
        &engine,
        "users",
        Op::Updated,
        rec("u1", json!({ "name": "Ann B", "age": 31 })),
    );
    push(
        &engine,
        "orders",
        Op::Inserted,
        rec("o1", json!({ "total": 10 })),
    );
    push(
        &engine,
        "orders",
        Op::Updated,
        rec("o1", json!({ "total": 12 })),
    );
    push(
        &engine,
        "products",
        Op::Deleted,
        rec("never-there", json!({})),
    );
    within("flush", 20 * SEC, engine.flush()).await;
    push(
        &engine,
        "users",
        Op::Deleted,
        rec("u2", json!({ "name": "Bob" })),
    );
    within("flush", 20 * SEC, engine.flush()).await;
    assert_eq!(
        host.count(OutcomeStatus::Failed),
        0,
        "{:?}",
        host.outcomes()
    );
    let d = db(&name).await;
    let users = docs(&d, "users").await;
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].get_str("_id").unwrap(), "u1");
    assert_eq!(users[0].get_str("name").unwrap(), "Ann B");
    assert_eq!(users[0].get_i32("age").unwrap(), 31);
    let active = docs(&d, "orders_active").await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].get_i32("total").unwrap(), 12);
    let archive = docs(&d, "orders_archive").await;
    assert_eq!(archive.len(), 1);
    assert_eq!(
        archive[0].get_i32("total").unwrap(),
        10,
        "only the insert is archived"
    );
    assert!(docs(&d, "products").await.is_empty());
    engine.stop(SEC).await;
}

/// Numbers stay int32 / int64 / double, booleans, null, nested documents and arrays keep
/// their types (nothing is stringified).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_keep_their_types() {
    let name = unique_db("types");
    let s = sink_with(config(&name, json!({})), json!(["things"]), false);
    let data = json!({ "id": "t1", "n": 7, "big": 9_007_199_254_740_993_i64, "f": 1.25, "ok": true,
                       "none": null, "tags": ["a", 2, false], "addr": { "city": "Oslo", "geo": { "lat": 59.9 } },
                       "when": "2026-12-04T00:00:00.000Z" });
    let out = s
        .write_batch(&[change(1, Op::Inserted, "things", "t1", data)])
        .await
        .unwrap();
    assert!(failures_of(out).is_empty());
    let got = docs(&db(&name).await, "things").await;
    let t = &got[0];
    assert_eq!(t.get("_id"), Some(&Bson::String("t1".into())));
    assert_eq!(t.get("id"), Some(&Bson::String("t1".into())));
    assert_eq!(t.get("n"), Some(&Bson::Int32(7)));
    assert_eq!(t.get("big"), Some(&Bson::Int64(9_007_199_254_740_993)));
    assert_eq!(t.get("f"), Some(&Bson::Double(1.25)));
    assert_eq!(t.get("ok"), Some(&Bson::Boolean(true)));
    assert_eq!(t.get("none"), Some(&Bson::Null));
    assert_eq!(
        t.get_array("tags").unwrap(),
        &vec![
            Bson::String("a".into()),
            Bson::Int32(2),
            Bson::Boolean(false)
        ]
    );
    let addr = t.get_document("addr").unwrap();
    assert_eq!(
        addr.get_document("geo").unwrap().get_f64("lat").unwrap(),
        59.9
    );
    assert_eq!(t.get_str("when").unwrap(), "2026-12-04T00:00:00.000Z");
}

/// One batch with two updates of one record, a delete then a re-insert, an insert then a
/// delete, over two collections: each record ends as its last change says, on both write
/// paths (client-level bulkWrite, and the per-collection commands older servers get).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_each_records_order_on_both_write_paths() {
    for per_collection in [false, true] {
        let name = unique_db("order");
        let s = sink_with(config(&name, json!({})), json!(["a", "b"]), per_collection);
        let seed = [change(1, Op::Inserted, "a", "o2", json!({ "v": -1 }))];
        assert!(failures_of(s.write_batch(&seed).await.unwrap()).is_empty());
        let batch = [
            change(2, Op::Inserted, "a", "o1", json!({ "v": 0 })),
            change(3, Op::Updated, "a", "o1", json!({ "v": 1 })),
            change(4, Op::Inserted, "b", "x", json!({ "v": 5 })),
            change(5, Op::Updated, "a", "o1", json!({ "v": 2 })),
            change(6, Op::Deleted, "a", "o2", json!({})),
            change(7, Op::Inserted, "a", "o2", json!({ "v": 9 })),
            change(8, Op::Inserted, "a", "o3", json!({ "v": 3 })),
            change(9, Op::Deleted, "a", "o3", json!({})),
        ];
        let out = s.write_batch(&batch).await.unwrap();
        assert!(
            failures_of(out).is_empty(),
            "per_collection={per_collection}"
        );
        let d = db(&name).await;
        let a = docs(&d, "a").await;
        let got: Vec<(String, i32)> = a
            .iter()
            .map(|d| {
                (
                    d.get_str("_id").unwrap().to_string(),
                    d.get_i32("v").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [("o1".to_string(), 2), ("o2".to_string(), 9)],
            "per_collection={per_collection}"
        );
        assert_eq!(docs(&d, "b").await.len(), 1);
    }
}

/// Documents MongoDB does not store (a `$` field name, over 16 MiB) and a write the server
/// refuses (a duplicate on a unique index) fail their own change only, with a message naming
/// the record; the changes after them in the batch are applied, on both write paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_document_fails_alone() {
    for per_collection in [false, true] {
        let name = unique_db("refused");
        let d = db(&name).await;
        d.collection::<Document>("people")
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(
                        mongodb::options::IndexOptions::builder()
                            .unique(true)
                            .build(),
                    )
                    .build(),
            )
            .await
            .unwrap();
        let s = sink_with(config(&name, json!({})), json!(["people"]), per_collection);
        let batch = [
            change(1, Op::Inserted, "people", "p1", json!({ "email": "a@x" })),
            change(
                2,
                Op::Inserted,
                "people",
                "p2",
                json!({ "email": "b@x", "q": { "$where": "1" } }),
            ),
            change(
                3,
                Op::Inserted,
                "people",
                "p3",
                json!({ "email": "c@x", "blob": "x".repeat(17 * 1024 * 1024) }),
            ),
            change(4, Op::Inserted, "people", "p4", json!({ "email": "a@x" })),
            change(5, Op::Inserted, "people", "p5", json!({ "email": "e@x" })),
        ];
        let failed = failures_of(s.write_batch(&batch).await.unwrap());
        let at: Vec<usize> = failed.iter().map(|f| f.0).collect();
        assert_eq!(at, [1, 2, 3], "per_collection={per_collection}: {failed:?}");
        assert!(failed.iter().all(|f| !f.2), "permanent: {failed:?}");
        assert!(
            failed[0].1.contains("record 'p2'") && failed[0].1.contains("q.$where"),
            "{failed:?}"
        );
        assert!(
            failed[1].1.contains("record 'p3'") && failed[1].1.contains("16 MiB"),
            "{failed:?}"
        );
        assert!(
            failed[2].1.contains("record 'p4'") && failed[2].1.contains("11000"),
            "{failed:?}"
        );
        let ids: Vec<String> = docs(&d, "people")
            .await
            .iter()
            .map(|d| d.get_str("_id").unwrap().to_string())
            .collect();
        assert_eq!(ids, ["p1", "p5"], "per_collection={per_collection}");
    }
}

/// `logCollection`: one document per applied operation (resource, operation, record id, data,
/// time as a BSON date), indexed on time; a redelivered batch logs nothing twice, and a
/// refused change is not logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_collection_gets_one_document_per_applied_operation() {
    let name = unique_db("log");
    let s = sink_with(
        config(&name, json!({ "logCollection": "replication_log" })),
        json!({ "users": "users_collection" }),
        false,
    );
    let mut batch = vec![
        change(1, Op::Inserted, "users", "u1", json!({ "name": "Ann" })),
        change(2, Op::Updated, "users", "u1", json!({ "name": "Ann B" })),
        change(3, Op::Inserted, "users", "u2", json!({ "$bad": 1 })),
        change(4, Op::Deleted, "users", "u1", json!({ "name": "Ann B" })),
    ];
    for c in &mut batch {
        c.dest = "users_collection".into();
    }
    let failed = failures_of(s.write_batch(&batch).await.unwrap());
    assert_eq!(failed.iter().map(|f| f.0).collect::<Vec<_>>(), [2]);
    // Redelivered (e.g. after a crash before the ack): same documents, no new log entries.
    let _ = s.write_batch(&batch).await.unwrap();
    let d = db(&name).await;
    let mut log = docs(&d, "replication_log").await;
    log.sort_by_key(|l| l.get_str("_id").unwrap().to_string());
    assert_eq!(log.len(), 3, "{log:?}");
    let ops: Vec<&str> = log
        .iter()
        .map(|l| l.get_str("operation").unwrap())
        .collect();
    assert_eq!(ops, ["insert", "update", "delete"]);
    for l in &log {
        assert_eq!(l.get_str("resource_name").unwrap(), "users");
        assert_eq!(l.get_str("collection").unwrap(), "users_collection");
        assert_eq!(l.get_str("record_id").unwrap(), "u1");
        assert!(
            matches!(l.get("timestamp"), Some(Bson::DateTime(_))),
            "{l:?}"
        );
    }
    assert_eq!(
        log[1]
            .get_document("data")
            .unwrap()
            .get_str("name")
            .unwrap(),
        "Ann B"
    );
    let indexes: Vec<String> = d
        .collection::<Document>("replication_log")
        .list_index_names()
        .await
        .unwrap();
    assert!(indexes.iter().any(|i| i == "timestamp_1"), "{indexes:?}");
    assert!(docs(&d, "users_collection").await.is_empty());
}

/// An unreachable server is a retryable failure of the whole batch (the engine backs off),
/// and neither the error nor the healthcheck shows the password, in either config form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retryable_and_never_shows_the_password() {
    for config in [
        json!({ "connectionString": "mongodb://admin:hunter2@127.0.0.1:1/app?serverSelectionTimeoutMS=300" }),
        json!({ "host": "127.0.0.1", "port": 1, "database": "app", "username": "admin", "password": "hunter2",
                "options": { "serverSelectionTimeoutMS": 300 } }),
    ] {
        let s = sink_with(config, json!(["users"]), false);
        let e = s
            .write_batch(&[change(1, Op::Inserted, "users", "u1", json!({ "a": 1 }))])
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
        let h = s.healthcheck().await.unwrap_err();
        assert!(h.is_retryable() && !h.message.contains("hunter2"), "{h:?}");
    }
    let shown = SinkConfig::parse(
        "mongodb",
        json!({ "connectionString": "mongodb://admin:hunter2@h1:27017,h2:27017/app?replicaSet=rs0" }),
    )
    .unwrap()
    .redacted()
    .to_string();
    assert!(
        shown.contains("admin:***@h1") && !shown.contains("hunter2"),
        "{shown}"
    );
}

/// The spec's host/port/database/username/password form authenticates (SCRAM) as a real user
/// of the database; a wrong password is a retryable failure that does not show the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_authenticate_against_the_database() {
    let name = unique_db("auth");
    let d = db(&name).await;
    d.run_command(
        doc! { "createUser": "replicator_user", "pwd": "s3cret-pw", "roles": ["readWrite"] },
    )
    .await
    .unwrap();
    let (host, port) = {
        let opts = mongodb::options::ClientOptions::parse(url()).await.unwrap();
        match &opts.hosts[0] {
            mongodb::options::ServerAddress::Tcp { host, port } => {
                (host.clone(), port.unwrap_or(27017))
            }
            other => panic!("unexpected address {other:?}"),
        }
    };
    let form = |password: &str| {
        json!({ "host": host, "port": port, "database": name, "username": "replicator_user",
                "password": password, "options": { "serverSelectionTimeoutMS": 2000 } })
    };
    let s = sink_with(form("s3cret-pw"), json!(["users"]), false);
    let out = s
        .write_batch(&[change(1, Op::Inserted, "users", "u1", json!({ "a": 1 }))])
        .await
        .unwrap();
    assert!(failures_of(out).is_empty());
    assert_eq!(docs(&d, "users").await.len(), 1);
    let s = sink_with(form("wrong-pw"), json!(["users"]), false);
    let e = s
        .write_batch(&[change(2, Op::Inserted, "users", "u2", json!({ "a": 2 }))])
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.message.contains("check the username and password"), "{e}");
    assert!(!e.message.contains("wrong-pw"), "{e}");
    assert_eq!(docs(&d, "users").await.len(), 1);
}
