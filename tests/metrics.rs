//! The engine's Prometheus metrics after a known workload (test sinks, no Node): every counter
//! per (replicator, resource) equals what happened, histograms count batches and deliveries,
//! gauges read the engine, and the text rendering carries the same numbers.
//! (`__test__/metrics.test.mjs` parses the text with the reference parser inside s3db.js.)

mod common;

use std::sync::Arc;

use serde_json::{json, Value};

use common::*;
use s3db_replicator::event::Op;
use s3db_replicator::sinks::testing::MemorySink;
use s3db_replicator::sinks::Sink;

/// The sample of family `name` whose labels include `labels`.
fn sample<'a>(metrics: &'a Value, name: &str, labels: Value) -> &'a Value {
    let samples = metrics[name]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {name}"));
    let want = labels.as_object().unwrap();
    let found: Vec<&Value> = samples
        .iter()
        .filter(|s| want.iter().all(|(k, v)| &s["labels"][k] == v))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels}: {samples:?}");
    found[0]
}

fn value(metrics: &Value, name: &str, labels: Value) -> f64 {
    sample(metrics, name, labels)["value"].as_f64().unwrap()
}

#[tokio::test]
async fn counters_equal_the_workload_and_the_text_says_the_same() {
    let host = TestHost::new();
    // "main": users and orders, u-bad is a poison record (failed, dead letter), orders go
    // through a transform that skips them. "hook": users, all delivered.
    let main = Arc::new(MemorySink {
        per_item: true,
        ..Default::default()
    });
    main.poison.lock().unwrap().insert("u-bad".into());
    let hook = Arc::new(MemorySink::default());
    let engine = start(
        json!({
            "retryDelay": 0,
            "concurrency": 2,
            "replicators": [
                { "id": "main", "driver": "s3db", "config": { "connectionString": "memory://KEY:s3cr3t@b/x" },
                  "resources": { "users": "users", "orders": { "resource": "orders", "transform": { "$fn": FN_SKIP } } } },
                { "id": "hook", "driver": "webhook", "config": { "url": "http://127.0.0.1:9/hook" }, "resources": ["users"] },
            ]
        }),
        host.clone(),
        vec![main.clone() as Arc<dyn Sink>, hook.clone() as Arc<dyn Sink>],
    );
    for id in ["u1", "u2", "u-bad"] {
        push(&engine, "users", Op::Inserted, rec(id, json!({})));
    }
    push(&engine, "users", Op::Deleted, rec("u2", json!({})));
    push(&engine, "orders", Op::Inserted, rec("o1", json!({})));
    push(&engine, "orders", Op::Inserted, rec("o2", json!({})));
    engine.flush().await;

    let m = engine.metrics_json();
    let kinds = [
        "received",
        "delivered",
        "failed",
        "skipped",
        "retried",
        "dead_lettered",
        "held",
    ];
    for (replicator, driver, resource, expected) in [
        ("main", "s3db", "users", [4, 3, 1, 0, 0, 1, 0]),
        ("main", "s3db", "orders", [2, 0, 0, 2, 0, 0, 0]),
        ("hook", "webhook", "users", [4, 4, 0, 0, 0, 0, 0]),
    ] {
        let got: Vec<u64> = kinds
            .iter()
            .map(|k| {
                value(
                    &m,
                    &format!("s3db_replicator_changes_{k}_total"),
                    json!({ "replicator": replicator, "driver": driver, "resource": resource }),
                ) as u64
            })
            .collect();
        assert_eq!(got, expected, "{replicator}/{resource}: {kinds:?}");
    }
    // Histograms and gauges agree with getReplicatorStats().
    let stats = engine.stats();
    for s in &stats {
        let labels = json!({ "replicator": s.id });
        assert_eq!(
            value(&m, "s3db_replicator_batches_total", labels.clone()) as u64,
            s.batches
        );
        let size = sample(&m, "s3db_replicator_batch_size", labels.clone());
        assert_eq!(size["count"].as_u64(), Some(s.batches));
        assert_eq!(size["sum"].as_f64(), Some(s.received as f64));
        let latency = sample(
            &m,
            "s3db_replicator_delivery_duration_seconds",
            labels.clone(),
        );
        assert_eq!(latency["count"].as_u64(), Some(s.delivered));
        let buckets = latency["buckets"].as_array().unwrap();
        assert_eq!(buckets.last().unwrap()["le"], "+Inf");
        assert_eq!(buckets.last().unwrap()["count"].as_u64(), Some(s.delivered));
        assert_eq!(
            value(&m, "s3db_replicator_queue_depth", labels.clone()),
            0.0
        );
        assert_eq!(
            value(&m, "s3db_replicator_in_flight_batches", labels.clone()),
            0.0
        );
        assert_eq!(value(&m, "s3db_replicator_enabled", labels.clone()), 1.0);
        let closed = json!({ "replicator": s.id, "state": "closed" });
        assert_eq!(value(&m, "s3db_replicator_circuit_state", closed), 1.0);
    }
    assert_eq!(value(&m, "s3db_replicator_dead_letters", json!({})), 1.0);
    assert!(value(&m, "s3db_replicator_engine_uptime_seconds", json!({})) > 0.0);

    let text = engine.metrics_text();
    assert!(!text.contains("s3cr3t"), "no secret in the metrics");
    assert!(text.contains("# TYPE s3db_replicator_changes_delivered_total counter\n"));
    assert!(text.contains(
        "s3db_replicator_changes_delivered_total{driver=\"s3db\",replicator=\"main\",resource=\"users\"} 3\n"
    ));
    assert!(text.contains("# TYPE s3db_replicator_delivery_duration_seconds histogram\n"));
    assert!(text.contains(
        "s3db_replicator_delivery_duration_seconds_count{driver=\"webhook\",replicator=\"hook\"} 4\n"
    ));
    engine.stop(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_retried_change_is_counted_once_per_extra_attempt() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    sink.fail_first
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "retryDelay": 0, "maxRetries": 5 }),
        ),
        host.clone(),
        vec![sink.clone() as Arc<dyn Sink>],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    let m = engine.metrics_json();
    let labels = json!({ "replicator": "r", "resource": "users" });
    assert_eq!(
        value(&m, "s3db_replicator_changes_retried_total", labels.clone()),
        2.0
    );
    assert_eq!(
        value(&m, "s3db_replicator_changes_delivered_total", labels),
        1.0
    );
    assert_eq!(engine.stats()[0].retried, 2);
}

/// A destination that is down: the circuit gauge says `open`, the changes are queued and in
/// flight, the ones that used their retries are counted held (once each); once it is back,
/// everything is delivered and the gauges return to idle.
#[tokio::test(start_paused = true)]
async fn an_outage_shows_in_the_circuit_queue_and_held_metrics() {
    let sec = std::time::Duration::from_secs(1);
    let host = TestHost::new();
    let sink = Arc::new(SwitchSink::default());
    sink.set_down(true);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({
                "concurrency": 1, "lingerMs": 0, "maxRetries": 2, "retryDelay": 100,
                "circuitBreaker": { "failureThreshold": 2, "resetTimeout": 1000 }
            }),
        ),
        host.clone(),
        vec![sink.clone() as Arc<dyn Sink>],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    push(&engine, "users", Op::Inserted, rec("b", json!({})));
    wait_for("the circuit opens", 30 * sec, || {
        engine.stats()[0].health == "open"
    })
    .await;
    wait_for("a change is held", 30 * sec, || !host.held().is_empty()).await;
    let m = engine.metrics_json();
    let r = json!({ "replicator": "r" });
    let state = |m: &Value, s: &str| {
        value(
            m,
            "s3db_replicator_circuit_state",
            json!({ "replicator": "r", "state": s }),
        )
    };
    assert_eq!(
        (
            state(&m, "open"),
            state(&m, "closed"),
            state(&m, "half-open")
        ),
        (1.0, 0.0, 0.0)
    );
    assert_eq!(value(&m, "s3db_replicator_queue_depth", r.clone()), 2.0);
    assert_eq!(
        value(&m, "s3db_replicator_in_flight_batches", r.clone()),
        1.0
    );
    let users = json!({ "replicator": "r", "resource": "users" });
    assert_eq!(
        value(&m, "s3db_replicator_changes_held_total", users.clone()) as usize,
        host.held().len()
    );
    assert_eq!(
        value(&m, "s3db_replicator_changes_failed_total", users.clone()),
        0.0,
        "held changes wait, they do not fail"
    );
    assert!(value(&m, "s3db_replicator_changes_retried_total", users.clone()) >= 2.0);

    sink.set_down(false);
    within("flush after the outage", 60 * sec, engine.flush()).await;
    let m = engine.metrics_json();
    assert_eq!(state(&m, "closed"), 1.0);
    assert_eq!(value(&m, "s3db_replicator_queue_depth", r.clone()), 0.0);
    assert_eq!(value(&m, "s3db_replicator_in_flight_batches", r), 0.0);
    assert_eq!(
        value(&m, "s3db_replicator_changes_delivered_total", users),
        2.0
    );
    engine.stop(sec).await;
}
