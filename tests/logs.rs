//! Engine logs reach the host (`Host::log`): bounded by the rate limit when a destination fails
//! every write, with their fields, at each engine's own level, attributed to the right engine
//! when several run in one process.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;
use s3db_replicator::event::Op;
use s3db_replicator::logs::{self, LogRecord, LINES_PER_WINDOW};
use s3db_replicator::sinks::Sink;

macro_rules! sinks {
    ($($s:expr),* $(,)?) => { vec![$($s.clone() as Arc<dyn Sink>),*] };
}

const SEC: Duration = Duration::from_secs(1);

/// One replicator `id` over `users`, plain retry-then-fail, one change per write.
fn options(id: &str, extra: Value) -> Value {
    let mut o = one_replicator(
        json!(["users"]),
        json!({ "circuitBreaker": false, "maxRetries": 3, "retryDelay": 0, "concurrency": 1, "batchSize": 1, "lingerMs": 0 }),
    );
    o["replicators"][0]["id"] = json!(id);
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            o[k] = v;
        }
    }
    o
}

fn with_message<'a>(logs: &'a [LogRecord], message: &str) -> Vec<&'a LogRecord> {
    logs.iter().filter(|l| l.message == message).collect()
}

fn summary_of<'a>(logs: &'a [LogRecord], message: &str) -> Option<&'a LogRecord> {
    let prefix = format!("{message} (");
    logs.iter().find(|l| {
        l.message.starts_with(&prefix) && l.message.contains("similar messages suppressed")
    })
}

#[tokio::test]
async fn a_failing_destination_logs_a_bounded_number_of_lines_with_their_fields() {
    logs::install();
    let host = TestHost::new();
    let sink = Arc::new(SwitchSink::default());
    sink.set_down(true);
    let engine = start(options("hook", json!({})), host.clone(), sinks![sink]);
    const CHANGES: u64 = 40;
    for i in 0..CHANGES {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    within("the changes fail", 10 * SEC, engine.flush()).await;
    let retried = engine.stats()[0].retried;
    assert_eq!(retried, CHANGES * 2, "two retries per change");
    engine.stop(SEC).await;
    let logs = host.logs();

    let retries = with_message(&logs, "Retrying batch.");
    assert_eq!(retries.len(), LINES_PER_WINDOW as usize, "{logs:#?}");
    let r = retries[0];
    assert_eq!(r.level, "warn");
    assert_eq!(r.fields["replicator"], "hook");
    assert_eq!(r.fields["attempt"], 1);
    assert_eq!(r.fields["code"], "ERR_SINK_UNAVAILABLE");
    assert!(
        r.fields["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{r:?}"
    );

    let failed = with_message(&logs, "Change failed.");
    assert_eq!(failed.len(), LINES_PER_WINDOW as usize);
    let f = failed[0];
    assert_eq!(f.level, "error");
    assert_eq!(f.fields["replicator"], "hook");
    assert_eq!(f.fields["resource"], "users");
    assert_eq!(f.fields["recordId"], "u0");
    assert_eq!(f.fields["attempts"], 3);
    assert_eq!(f.fields["code"], "ERR_SINK_UNAVAILABLE");

    // What the limit held back is counted in one line each (sent at stop at the latest).
    let s = summary_of(&logs, "Retrying batch.").expect("a summary of the retries");
    assert_eq!(s.level, "warn");
    assert_eq!(s.fields["replicator"], "hook");
    assert_eq!(s.fields["suppressed"], retried - LINES_PER_WINDOW as u64);
    let s = summary_of(&logs, "Change failed.").expect("a summary of the failures");
    assert_eq!(s.fields["suppressed"], CHANGES - LINES_PER_WINDOW as u64);
    assert!(
        logs.len() <= 4 * LINES_PER_WINDOW as usize,
        "{} lines",
        logs.len()
    );
}

#[tokio::test]
async fn each_engine_logs_at_its_own_level_to_its_own_host() {
    logs::install();
    let (warn_host, error_host, silent_host) = (TestHost::new(), TestHost::new(), TestHost::new());
    let mut engines = Vec::new();
    for (id, level, host) in [
        ("w", "warn", &warn_host),
        ("e", "error", &error_host),
        ("s", "silent", &silent_host),
    ] {
        let sink = Arc::new(SwitchSink::default());
        sink.set_down(true);
        engines.push(start(
            options(id, json!({ "logLevel": level })),
            host.clone(),
            sinks![sink],
        ));
    }
    for engine in &engines {
        push(engine, "users", Op::Inserted, rec("u1", json!({})));
    }
    for engine in &engines {
        within("the change fails", 10 * SEC, engine.flush()).await;
        engine.stop(SEC).await;
    }
    let warn_logs = warn_host.logs();
    assert_eq!(with_message(&warn_logs, "Retrying batch.").len(), 2);
    assert_eq!(with_message(&warn_logs, "Change failed.").len(), 1);
    assert!(
        warn_logs
            .iter()
            .all(|l| l.fields.get("replicator") == Some(&json!("w"))),
        "{warn_logs:#?}"
    );
    let error_logs = error_host.logs();
    assert_eq!(
        with_message(&error_logs, "Retrying batch.").len(),
        0,
        "warn is below 'error'"
    );
    assert_eq!(with_message(&error_logs, "Change failed.").len(), 1);
    assert_eq!(error_logs[0].fields["replicator"], "e");
    assert!(silent_host.logs().is_empty(), "{:#?}", silent_host.logs());
}

#[tokio::test]
async fn start_up_and_circuit_events_are_attributed_to_their_engine() {
    logs::install();
    let dir = TempDir::new("logs-replay");
    let disk = |extra: Value| {
        let mut o = options(
            "disk",
            json!({ "outbox": { "dir": dir.dir() }, "maxRetries": 100, "retryDelay": 50 }),
        );
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                o[k] = v;
            }
        }
        o
    };
    // A first run leaves two changes undelivered in the outbox.
    let sink = Arc::new(SwitchSink::default());
    sink.set_down(true);
    let first = start(disk(json!({})), TestHost::new(), sinks![sink]);
    push(&first, "users", Op::Inserted, rec("u1", json!({})));
    push(&first, "users", Op::Inserted, rec("u2", json!({})));
    first.stop(Duration::from_millis(200)).await;
    drop(first);

    let host = TestHost::new();
    let sink = Arc::new(SwitchSink::default());
    sink.set_down(true);
    let breaker = json!({ "failureThreshold": 2, "resetTimeout": 50, "maxResetTimeout": 50, "holdTimeout": 600000 });
    let second = start(
        disk(json!({ "logLevel": "info", "circuitBreaker": breaker })),
        host.clone(),
        sinks![sink],
    );
    wait_for("the circuit opens", 10 * SEC, || {
        host.logs()
            .iter()
            .any(|l| l.message.contains("circuit opened"))
    })
    .await;
    sink.set_down(false);
    within(
        "the replayed changes are delivered",
        10 * SEC,
        second.flush(),
    )
    .await;
    second.stop(SEC).await;
    let logs = host.logs();
    let replay = with_message(&logs, "Replaying undelivered changes from the outbox.");
    assert_eq!(replay.len(), 1, "{logs:#?}");
    assert_eq!(replay[0].level, "info");
    assert_eq!(replay[0].fields["changes"], 2);
    let opened = logs
        .iter()
        .find(|l| l.message.contains("circuit opened"))
        .unwrap();
    assert_eq!(opened.level, "warn");
    assert_eq!(
        opened.fields["replicator"], "disk",
        "the lane's span names the replicator"
    );
    assert_eq!(opened.fields["failures"], 2);
    let closed = with_message(&logs, "Destination is reachable again; circuit closed.");
    assert_eq!(closed.len(), 1, "{logs:#?}");
    assert_eq!(closed[0].level, "info");
    assert!(closed[0].fields["downForMs"].as_u64().is_some());
}
