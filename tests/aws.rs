//! The `sqs` and `dynamodb` drivers against a real AWS-compatible server (moto on loopback,
//! started by `scripts/services/moto.sh`; `S3DB_REPLICATOR_AWS_ENDPOINT` overrides it). The
//! tests fail, not skip, when the server is unreachable. Every test uses its own queues and
//! tables, so they run in parallel against one server.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use serde_json::{json, Value};

use common::{build_sink, push, rec, sink_change, start, unique_name, within, TestHost};
use s3db_replicator::config::parse_resources;
use s3db_replicator::engine::OutcomeStatus;
use s3db_replicator::event::{Change, Op};
use s3db_replicator::sinks::{BatchOutcome, Sink, SinkConfig};

const SEC: Duration = Duration::from_secs(1);

fn endpoint() -> String {
    std::env::var("S3DB_REPLICATOR_AWS_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:45660".into())
}

fn unique(prefix: &str) -> String {
    unique_name(prefix, '-')
}

/// Settings every test driver gets: the local server, static test credentials.
fn aws(extra: Value) -> Value {
    let mut c = json!({ "region": "us-east-1", "endpoint": endpoint(),
                        "credentials": { "accessKeyId": "test", "secretAccessKey": "test" } });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        c[k] = v;
    }
    c
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(endpoint())
        .load()
        .await
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk().await)
}

async fn ddb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk().await)
}

async fn queue(name: &str) -> String {
    let mut q = sqs().await.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        q = q.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    q.send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the AWS-compatible server at {} is required: {e:?}",
                endpoint()
            )
        })
        .queue_url()
        .unwrap()
        .to_string()
}

/// Every message of a queue (received, then deleted so a FIFO group hands out the next).
async fn drain(url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let c = sqs().await;
    let mut out = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let got = c
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let messages = got.messages().to_vec();
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        for m in &messages {
            c.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        out.extend(messages);
    }
    out
}

fn body(m: &aws_sdk_sqs::types::Message) -> Value {
    serde_json::from_str(m.body().unwrap()).unwrap()
}

fn sink(driver: &str, config: Value, resources: Value, driver_keys: &[&str]) -> Arc<dyn Sink> {
    let routes = parse_resources("resources", &resources, driver_keys).unwrap();
    build_sink(SinkConfig::parse(driver, config).unwrap(), routes)
}

fn change(seq: u64, op: Op, resource: &str, id: &str, data: Value) -> Change {
    sink_change("aa", seq, op, resource, id, data)
}

// ---- SQS ----------------------------------------------------------------------------------

/// The spec's basic configuration, through the engine: 11 changes (more than one
/// SendMessageBatch holds) with ids SQS would not take as entry ids all arrive, with the stock
/// body and the resource/action attributes; a standard queue gets no group or dedup id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_standard_queue_gets_every_change_with_the_stock_body() {
    let url = queue(&unique("events")).await;
    let host = TestHost::new();
    let engine = start(
        json!({ "lingerMs": 20, "concurrency": 1, "replicators": [{ "id": "q", "driver": "sqs", "resources": ["orders"],
                "config": aws(json!({ "queueUrl": url, "messageAttributes": { "env": { "DataType": "String", "StringValue": "test" } } })) }] }),
        host.clone(),
        vec![],
    );
    let ids: Vec<String> = (0..11).map(|i| format!("o.{i}:x/{i}")).collect();
    for id in &ids {
        push(
            &engine,
            "orders",
            Op::Inserted,
            rec(id, json!({ "total": 1.5, "ok": true })),
        );
    }
    push(
        &engine,
        "orders",
        Op::Updated,
        rec(
            &ids[0],
            json!({ "total": 2, "$before": { "id": ids[0], "total": 1.5 } }),
        ),
    );
    within("flush", 20 * SEC, engine.flush()).await;
    assert_eq!(
        host.count(OutcomeStatus::Replicated),
        12,
        "{:?}",
        host.outcomes()
    );
    let messages = drain(&url).await;
    assert_eq!(messages.len(), 12);
    let mut got: Vec<String> = messages
        .iter()
        .filter(|m| body(m)["action"] == "insert")
        .map(|m| body(m)["data"]["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    let update = messages
        .iter()
        .map(body)
        .find(|b| b["action"] == "update")
        .unwrap();
    assert_eq!(update["resource"], "orders");
    assert_eq!(update["source"], "s3db-replicator");
    assert_eq!(update["data"]["total"], 2);
    assert_eq!(update["before"]["total"], 1.5);
    let m = &messages[0];
    let attrs = m.message_attributes().unwrap();
    assert_eq!(attrs["resource"].string_value(), Some("orders"));
    assert_eq!(attrs["env"].string_value(), Some("test"));
    assert!(attrs.contains_key("action"));
    engine.stop(SEC).await;
}

/// FIFO: two updates of one record in one batch both arrive, in order (one group per record);
/// the same change sent again (a replay) is dropped by SQS's deduplication on its identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_fifo_keeps_two_updates_and_drops_a_redelivered_change() {
    let url = queue(&format!("{}.fifo", unique("orders"))).await;
    let s = sink(
        "sqs",
        aws(json!({ "queueUrl": url })),
        json!(["orders"]),
        &["queueUrl"],
    );
    let batch = [
        change(
            1,
            Op::Inserted,
            "orders",
            "o1",
            json!({ "id": "o1", "v": 0 }),
        ),
        change(
            2,
            Op::Updated,
            "orders",
            "o1",
            json!({ "id": "o1", "v": 1 }),
        ),
        change(
            3,
            Op::Updated,
            "orders",
            "o1",
            json!({ "id": "o1", "v": 2 }),
        ),
        change(
            4,
            Op::Inserted,
            "orders",
            "o2",
            json!({ "id": "o2", "v": 0 }),
        ),
    ];
    assert!(matches!(
        s.write_batch(&batch).await.unwrap(),
        BatchOutcome::Delivered
    ));
    // A replay after a crash: the same changes again.
    assert!(matches!(
        s.write_batch(&batch[1..3]).await.unwrap(),
        BatchOutcome::Delivered
    ));
    let messages = drain(&url).await;
    let o1: Vec<i64> = messages
        .iter()
        .map(body)
        .filter(|b| b["data"]["id"] == "o1")
        .map(|b| b["data"]["v"].as_i64().unwrap())
        .collect();
    assert_eq!(o1, [0, 1, 2], "both updates, in order, and no duplicate");
    assert_eq!(messages.len(), 4);
    let m = messages
        .iter()
        .find(|m| body(m)["data"]["id"] == "o2")
        .unwrap();
    assert_eq!(
        m.attributes().unwrap()[&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId],
        "orders:o2"
    );
}

/// A record larger than maxMessageBytes fails alone, with an error that says so; a resource's
/// own queue (queues / a destination's queueUrl) wins over the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_oversize_records_fail_alone_and_resources_use_their_own_queues() {
    let default = queue(&unique("default")).await;
    let users = queue(&unique("users")).await;
    let audit = queue(&unique("audit")).await;
    let s = sink(
        "sqs",
        aws(
            json!({ "defaultQueueUrl": default, "queues": { "users": users }, "maxMessageBytes": 2048 }),
        ),
        json!({ "users": true, "orders": true, "audit": { "queueUrl": audit } }),
        &["queueUrl"],
    );
    let big = "x".repeat(4096);
    let out = s
        .write_batch(&[
            change(1, Op::Inserted, "users", "u1", json!({ "id": "u1" })),
            change(
                2,
                Op::Inserted,
                "users",
                "big",
                json!({ "id": "big", "blob": big }),
            ),
            change(3, Op::Inserted, "orders", "o1", json!({ "id": "o1" })),
            change(4, Op::Inserted, "audit", "a1", json!({ "id": "a1" })),
        ])
        .await
        .unwrap();
    let BatchOutcome::Partial(failed) = out else {
        panic!("the big record fails: {out:?}")
    };
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 1);
    assert!(!failed[0].1.is_retryable());
    assert!(
        failed[0].1.message.contains("too large for an SQS message"),
        "{}",
        failed[0].1
    );
    let ids = |ms: Vec<aws_sdk_sqs::types::Message>| {
        ms.iter()
            .map(|m| body(m)["data"]["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(drain(&users).await), ["u1"]);
    assert_eq!(ids(drain(&default).await), ["o1"]);
    assert_eq!(ids(drain(&audit).await), ["a1"]);
}

/// A queue whose own limit is lower than `maxMessageBytes` (MaximumMessageSize = 1024): the
/// server refuses the whole SendMessageBatch for one oversized entry (moto, like SQS, answers
/// InvalidParameterValue for the request), the engine bisects the batch, and only that record
/// fails, permanently and saying why; its neighbours are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_a_batch_the_queue_refuses_is_bisected_down_to_the_big_record() {
    let name = unique("small");
    let url = sqs()
        .await
        .create_queue()
        .queue_name(&name)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "1024",
        )
        .send()
        .await
        .expect("the AWS-compatible server is required")
        .queue_url()
        .unwrap()
        .to_string();
    let host = TestHost::new();
    let engine = start(
        json!({ "lingerMs": 50, "concurrency": 1, "maxRetries": 0,
                "replicators": [{ "id": "q", "driver": "sqs", "resources": ["orders"],
                                  "config": aws(json!({ "queueUrl": url })) }] }),
        host.clone(),
        vec![],
    );
    for i in 0..6 {
        let blob = if i == 3 {
            "x".repeat(2000)
        } else {
            String::new()
        };
        push(
            &engine,
            "orders",
            Op::Inserted,
            rec(&format!("o{i}"), json!({ "blob": blob })),
        );
    }
    within("flush", 20 * SEC, engine.flush()).await;
    let failed = host.with_status(OutcomeStatus::Failed);
    assert_eq!(failed.len(), 1, "{:?}", host.outcomes());
    assert_eq!(failed[0].record_id, "o3");
    let error = failed[0].error.clone().unwrap_or_default();
    assert!(error.contains("InvalidParameterValue"), "{error}");
    assert_eq!(host.count(OutcomeStatus::Replicated), 5);
    let mut got: Vec<String> = drain(&url)
        .await
        .iter()
        .map(|m| body(m)["data"]["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["o0", "o1", "o2", "o4", "o5"]);
    engine.stop(SEC).await;
}

/// An unreachable server is a retryable failure of the whole write (changes wait), and the
/// secret never shows.
#[tokio::test]
async fn sqs_unreachable_server_is_retryable() {
    let s = sink(
        "sqs",
        json!({ "region": "us-east-1", "endpoint": "http://127.0.0.1:1", "queueUrl": "http://127.0.0.1:1/1/q",
                "accessKeyId": "AK", "secretAccessKey": "hunter2" }),
        json!(["orders"]),
        &["queueUrl"],
    );
    let e = s
        .write_batch(&[change(
            1,
            Op::Inserted,
            "orders",
            "o1",
            json!({ "id": "o1" }),
        )])
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(!e.message.contains("hunter2"), "{e}");
}

// ---- DynamoDB -------------------------------------------------------------------------------

async fn table(name: &str, pk: &str, sk: Option<(&str, ScalarAttributeType)>) {
    let mut t = ddb()
        .await
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(pk)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(pk)
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        );
    if let Some((sk, ty)) = sk {
        t = t
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(sk)
                    .attribute_type(ty)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(sk)
                    .key_type(KeyType::Range)
                    .build()
                    .unwrap(),
            );
    }
    t.send().await.unwrap_or_else(|e| {
        panic!(
            "the AWS-compatible server at {} is required: {e:?}",
            endpoint()
        )
    });
}

/// Every item of a table, as JSON.
async fn items(name: &str) -> Vec<Value> {
    let out = ddb().await.scan().table_name(name).send().await.unwrap();
    let to_json = |m: &HashMap<String, AttributeValue>| {
        let mut o = serde_json::Map::new();
        for (k, v) in m {
            o.insert(k.clone(), attr(v));
        }
        Value::Object(o)
    };
    let mut v: Vec<Value> = out.items().iter().map(to_json).collect();
    v.sort_by_key(|x| x.to_string());
    v
}

fn attr(a: &AttributeValue) -> Value {
    match a {
        AttributeValue::S(s) => json!(s),
        AttributeValue::N(n) => serde_json::from_str(n).unwrap(),
        AttributeValue::Bool(b) => json!(b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::L(l) => Value::Array(l.iter().map(attr).collect()),
        AttributeValue::M(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), attr(v))).collect())
        }
        other => panic!("{other:?}"),
    }
}

/// Inserts, updates and deletes through the engine; values keep their types; deleting an item
/// that is not there is a success; two writes of one item in a batch are one (last wins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_puts_deletes_and_keeps_types() {
    let t = unique("Users");
    table(&t, "id", None).await;
    let host = TestHost::new();
    let engine = start(
        json!({ "lingerMs": 20, "concurrency": 1, "replicators": [{ "id": "d", "driver": "dynamodb", "resources": { "users": t }, "config": aws(json!({})) }] }),
        host.clone(),
        vec![],
    );
    let data = json!({ "name": "Ana", "age": 41.5, "n": 7, "active": true, "none": null, "empty": "", "tags": ["a", 1], "meta": { "k": { "deep": [false] } } });
    push(&engine, "users", Op::Inserted, rec("u1", data.clone()));
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("u2", json!({ "name": "Bea" })),
    );
    push(
        &engine,
        "users",
        Op::Updated,
        rec("u2", json!({ "name": "Bea 2" })),
    );
    push(&engine, "users", Op::Deleted, rec("ghost", json!({})));
    within("flush", 20 * SEC, engine.flush()).await;
    assert_eq!(
        host.count(OutcomeStatus::Replicated),
        4,
        "{:?}",
        host.outcomes()
    );
    let mut want_u1 = data.clone();
    want_u1["id"] = json!("u1");
    assert_eq!(
        items(&t).await,
        vec![want_u1, json!({ "id": "u2", "name": "Bea 2" })]
    );
    push(
        &engine,
        "users",
        Op::Deleted,
        rec("u2", json!({ "name": "Bea 2" })),
    );
    within("flush", 20 * SEC, engine.flush()).await;
    assert_eq!(items(&t).await.len(), 1);
    engine.stop(SEC).await;
}

/// A request DynamoDB refuses as a whole for one item (here a sort key of the wrong type: the
/// table's is N, the record's a string) is halved by the sink until that item fails alone,
/// permanently; the other 29 items of the batch (two BatchWriteItem requests) are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_a_refused_item_fails_alone_and_its_request_neighbours_are_written() {
    let t = unique("Typed");
    table(&t, "id", Some(("n", ScalarAttributeType::N))).await;
    let s = sink(
        "dynamodb",
        aws(json!({})),
        json!({ "events": { "table": t, "sortKey": "n" } }),
        &["primaryKey", "sortKey"],
    );
    let batch: Vec<Change> = (0..30)
        .map(|i| {
            let n = if i == 17 {
                json!("seventeen")
            } else {
                json!(i)
            };
            Change {
                dest: t.clone(),
                ..change(
                    i + 1,
                    Op::Inserted,
                    "events",
                    &format!("e{i}"),
                    json!({ "n": n }),
                )
            }
        })
        .collect();
    let out = s.write_batch(&batch).await.unwrap();
    let BatchOutcome::Partial(failed) = out else {
        panic!("{out:?}")
    };
    assert_eq!(failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [17]);
    assert!(!failed[0].1.is_retryable(), "{}", failed[0].1);
    assert_eq!(items(&t).await.len(), 29);
}

/// The spec's composite key (primaryKey + sortKey from the record's fields); a record missing
/// its sort key fails alone with an error naming it; createTable makes a missing table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_composite_keys_missing_keys_and_create_table() {
    let t = unique("Orders");
    table(&t, "customerId", Some(("orderId", ScalarAttributeType::N))).await;
    let s = sink(
        "dynamodb",
        aws(json!({})),
        json!({ "orders": { "table": t, "primaryKey": "customerId", "sortKey": "orderId" } }),
        &["primaryKey", "sortKey"],
    );
    let mk = |seq, op, id: &str, data: Value| Change {
        dest: t.clone(),
        ..change(seq, op, "orders", id, data)
    };
    let out = s
        .write_batch(&[
            mk(
                1,
                Op::Inserted,
                "a",
                json!({ "id": "a", "customerId": "c1", "orderId": 1, "total": 10 }),
            ),
            mk(
                2,
                Op::Inserted,
                "b",
                json!({ "id": "b", "customerId": "c1", "orderId": 2, "total": 20 }),
            ),
            mk(
                3,
                Op::Inserted,
                "bad",
                json!({ "id": "bad", "customerId": "c2" }),
            ),
            mk(
                4,
                Op::Deleted,
                "b",
                json!({ "id": "b", "customerId": "c1", "orderId": 2 }),
            ),
        ])
        .await
        .unwrap();
    let BatchOutcome::Partial(failed) = out else {
        panic!("{out:?}")
    };
    assert_eq!(failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2]);
    assert!(
        failed[0]
            .1
            .message
            .contains("has no 'orderId', the sort key"),
        "{}",
        failed[0].1
    );
    assert_eq!(
        items(&t).await,
        vec![json!({ "id": "a", "customerId": "c1", "orderId": 1, "total": 10 })]
    );

    let fresh = unique("Created");
    let s = sink(
        "dynamodb",
        aws(json!({ "createTable": true })),
        json!({ "users": fresh }),
        &["primaryKey", "sortKey"],
    );
    let c = Change {
        dest: fresh.clone(),
        ..change(
            1,
            Op::Inserted,
            "users",
            "u1",
            json!({ "id": "u1", "v": 1 }),
        )
    };
    assert!(matches!(
        s.write_batch(&[c]).await.unwrap(),
        BatchOutcome::Delivered
    ));
    assert_eq!(items(&fresh).await, vec![json!({ "id": "u1", "v": 1 })]);

    // Without createTable, a missing table is a permanent error that says what to do.
    let s = sink(
        "dynamodb",
        aws(json!({})),
        json!({ "users": unique("Missing") }),
        &["primaryKey", "sortKey"],
    );
    let c = change(1, Op::Inserted, "users", "u1", json!({ "id": "u1" }));
    let e = match s
        .write_batch(&[Change {
            dest: "nope-table".into(),
            ..c
        }])
        .await
    {
        Err(e) => e,
        Ok(BatchOutcome::Partial(f)) => f[0].1.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        !e.is_retryable() && e.message.contains("createTable"),
        "{e}"
    );
}
