//! Integration tests of the replication engine: routing, ordering, batching, callbacks,
//! retries, poison isolation, flush, stop/drain, backpressure and replicator isolation.
//!
//! Every test runs the real engine (router + lanes) with the s3db driver configured and its
//! sink replaced by a test sink (`tests/common`), so nothing outside the process is contacted.
//! Tests where backoff or deadlines matter run in virtual time (`start_paused`).

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use common::*;
use s3db_replicator::engine::OutcomeStatus;
use s3db_replicator::error::EngineError;
use s3db_replicator::event::Op;
use s3db_replicator::sinks::testing::MemorySink;
use s3db_replicator::sinks::Sink;

const SEC: Duration = Duration::from_secs(1);

/// The sinks replacing the configured ones, by position.
macro_rules! sinks {
    ($($s:expr),* $(,)?) => { vec![$($s.clone() as Arc<dyn Sink>),*] };
}

// =============================================================================================
// Ordering and parallelism

/// Many updates of the same records, interleaved, across 4 lanes and batches of up to 7, with
/// a sink that randomly fails (retryably) and takes random time: every record's changes reach
/// the sink in the order they were made, each exactly once.
async fn ordering_case() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        flaky: 0.2,
        jitter_us: 300,
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 4, "batchSize": 7, "lingerMs": 1, "maxRetries": 100, "retryDelay": 0, "maxRetryDelay": 0 }),
        ),
        host.clone(),
        sinks![sink],
    );
    const RECORDS: usize = 20;
    const VERSIONS: u64 = 25;
    for v in 0..VERSIONS {
        for r in 0..RECORDS {
            let op = if v == 0 { Op::Inserted } else { Op::Updated };
            push(
                &engine,
                "users",
                op,
                rec(&format!("u{r}"), json!({ "v": v })),
            );
            if (v as usize * RECORDS + r).is_multiple_of(37) {
                tokio::task::yield_now().await;
            }
        }
    }
    within("flush", 10 * SEC, engine.flush()).await;

    let by_id = sink.by_id();
    assert_eq!(by_id.len(), RECORDS);
    for (id, changes) in &by_id {
        let versions: Vec<u64> = changes
            .iter()
            .map(|c| c.data["v"].as_u64().unwrap())
            .collect();
        assert_eq!(
            versions,
            (0..VERSIONS).collect::<Vec<_>>(),
            "order or count of {id}"
        );
        assert!(
            changes.windows(2).all(|w| w[0].seq < w[1].seq),
            "seq of {id} not increasing"
        );
        assert_eq!(changes[0].op, Op::Inserted);
    }
    // Batching happened and lanes ran side by side.
    assert!(sink.batch_sizes().iter().all(|&n| (1..=7).contains(&n)));
    assert!(sink.written.lock().unwrap().len() < RECORDS * VERSIONS as usize);
    let total = RECORDS * VERSIONS as usize;
    assert_eq!(host.count(OutcomeStatus::Replicated), total);
    assert_eq!(host.outcomes().len(), total);
    let stats = &engine.stats()[0];
    assert_eq!(
        (stats.received, stats.delivered, stats.failed, stats.queued),
        (total as u64, total as u64, 0, 0)
    );
    assert!(
        stats.retried > 0,
        "the flaky sink should have caused retries"
    );
    assert_eq!(engine.pending(), 0);
}

#[tokio::test]
async fn per_record_order_is_preserved_single_thread() {
    ordering_case().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_record_order_is_preserved_multi_thread() {
    ordering_case().await;
}

/// A write that blocks for record X does not stop records of other lanes; X's later change
/// waits behind its first one.
#[tokio::test]
async fn a_blocked_lane_does_not_block_other_lanes() {
    let lanes = 4;
    let slow = "slow";
    let others: Vec<String> = (0..100)
        .map(|i| format!("o{i}"))
        .filter(|id| lane_of("users", id, lanes) != lane_of("users", slow, lanes))
        .take(12)
        .collect();
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        hold: HashSet::from([slow.to_string()]),
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": lanes, "lingerMs": 0 }),
        ),
        host.clone(),
        sinks![sink],
    );

    push(&engine, "users", Op::Inserted, rec(slow, json!({ "v": 1 })));
    tokio::task::yield_now().await;
    for id in &others {
        push(&engine, "users", Op::Inserted, rec(id, json!({})));
    }
    push(&engine, "users", Op::Updated, rec(slow, json!({ "v": 2 })));
    wait_for("other lanes delivered", 5 * SEC, || {
        sink.changes().len() == others.len()
    })
    .await;
    assert!(!sink.ids().contains(&slow.to_string()));
    assert_eq!(
        sink.in_flight.load(SeqCst),
        1,
        "only the held write is in flight"
    );
    assert_eq!(host.count(OutcomeStatus::Replicated), others.len());
    assert_eq!(
        engine.pending(),
        2,
        "both changes of the held record are still pending"
    );

    sink.release();
    within("flush", 5 * SEC, engine.flush()).await;
    let slow_versions: Vec<u64> = sink.by_id()[slow]
        .iter()
        .map(|c| c.data["v"].as_u64().unwrap())
        .collect();
    assert_eq!(slow_versions, vec![1, 2]);
    assert_eq!(host.count(OutcomeStatus::Replicated), others.len() + 2);
}

/// With several lanes and a slow sink, writes overlap (lanes really run in parallel).
#[tokio::test(start_paused = true)]
async fn lanes_write_concurrently() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        delay: Some(Duration::from_millis(100)),
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 4, "batchSize": 1, "lingerMs": 0 }),
        ),
        host.clone(),
        sinks![sink],
    );
    let started = Instant::now();
    for i in 0..40 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    engine.flush().await;
    assert_eq!(sink.changes().len(), 40);
    assert!(
        sink.max_in_flight.load(SeqCst) > 1,
        "writes never overlapped"
    );
    // 40 writes of 100 ms on one lane would take 4 s.
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "took {:?}",
        started.elapsed()
    );
}

// =============================================================================================
// Batching

#[tokio::test]
async fn batch_size_caps_batches() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 1, "batchSize": 3, "lingerMs": 0 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..10 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    engine.flush().await;
    let sizes: Vec<usize> = sink.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![3, 3, 3, 1],
        "all ten were queued before the lane ran"
    );
    let ids: Vec<String> = sink.changes().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, (0..10).map(|i| format!("u{i}")).collect::<Vec<_>>());
    assert_eq!(engine.stats()[0].batches, 4);
}

/// A destination that prefers bulk writes gets up to `bulkBatchSize` per write while a backlog
/// waits (another full batch queued), and `batchSize` batches again once it has caught up.
#[tokio::test]
async fn a_backlog_goes_out_in_bulk_batches_where_the_sink_prefers_them() {
    for (bulk, expected) in [
        (true, vec![7usize, 7, 6, 2]),
        (false, vec![3, 3, 3, 3, 3, 3, 2, 2]),
    ] {
        let host = TestHost::new();
        let sink = Arc::new(MemorySink {
            bulk,
            ..Default::default()
        });
        let engine = start(
            one_replicator(
                json!(["users"]),
                json!({ "concurrency": 1, "batchSize": 3, "bulkBatchSize": 7, "lingerMs": 0 }),
            ),
            host.clone(),
            sinks![sink],
        );
        for i in 0..20 {
            push(
                &engine,
                "users",
                Op::Inserted,
                rec(&format!("u{i}"), json!({})),
            );
        }
        engine.flush().await;
        for i in 20..22 {
            push(
                &engine,
                "users",
                Op::Inserted,
                rec(&format!("u{i}"), json!({})),
            );
        }
        engine.flush().await;
        let sizes: Vec<usize> = sink.batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, expected, "prefers bulk: {bulk}");
        let ids: Vec<String> = sink.changes().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, (0..22).map(|i| format!("u{i}")).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn sink_max_batch_size_caps_batches_too() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        max_batch: 2,
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 1, "batchSize": 100, "lingerMs": 0 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..7 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    engine.flush().await;
    assert_eq!(sink.batch_sizes(), vec![2, 2, 2, 1]);
}

/// An idle engine writes the first burst at once; bursts arriving within `lingerMs` after it are
/// collected into one batch. Without linger each burst is its own batch.
#[tokio::test(start_paused = true)]
async fn linger_collects_a_burst_into_one_batch() {
    for (linger, expected) in [(50u64, vec![5usize, 10]), (0, vec![5, 5, 5])] {
        let host = TestHost::new();
        let sink = Arc::new(RecordingSink::default());
        let engine = start(
            one_replicator(
                json!(["users"]),
                json!({ "concurrency": 1, "batchSize": 100, "lingerMs": linger }),
            ),
            host.clone(),
            sinks![sink],
        );
        for burst in 0..3 {
            for i in 0..5 {
                push(
                    &engine,
                    "users",
                    Op::Inserted,
                    rec(&format!("b{burst}-{i}"), json!({})),
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine.flush().await;
        assert_eq!(sink.changes().len(), 15);
        assert_eq!(
            sink.batch_sizes(),
            expected,
            "lingerMs {linger}: batches {:?}",
            sink.batch_sizes()
        );
    }
}

/// Light, steady load: a change that arrives alone is routed at once, and so is the next one;
/// the linger only follows a round that found several changes waiting (virtual time).
#[tokio::test(start_paused = true)]
async fn a_lone_change_is_not_held_back_by_the_linger() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink::default());
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 1, "lingerMs": 50 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..3 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("lone{i}"), json!({})),
        );
        let pushed = Instant::now();
        engine.flush().await;
        assert!(
            pushed.elapsed() < Duration::from_millis(40),
            "change {i} waited {:?} for the linger",
            pushed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sink.batch_sizes(), vec![1, 1, 1]);
}

// =============================================================================================
// Retries and backoff

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_until_delivered() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    sink.fail_first.store(2, SeqCst);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "maxRetries": 3, "retryDelay": 100 }),
        ),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    let o = host.one_for("a");
    assert_eq!(o.status, OutcomeStatus::Replicated);
    assert_eq!(o.attempts, 3);
    assert!(o.error.is_none() && o.code.is_none() && o.data.is_none());
    assert_eq!(sink.changes().len(), 1);
    let s = &engine.stats()[0];
    assert_eq!((s.delivered, s.failed, s.retried), (1, 0, 2));
    assert!(s.last_sync.is_some());
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_fail_with_the_sink_error() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        always_fail: true,
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "maxRetries": 3, "retryDelay": 10, "batchSize": 10, "concurrency": 1, "lingerMs": 5, "circuitBreaker": false }),
        ),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "x" })),
    );
    push(&engine, "users", Op::Inserted, rec("b", json!({})));
    engine.flush().await;
    assert_eq!(
        sink.calls.lock().unwrap().len(),
        3,
        "one batch, three attempts"
    );
    for id in ["a", "b"] {
        let o = host.one_for(id);
        assert_eq!(o.status, OutcomeStatus::Failed);
        assert_eq!(o.attempts, 3);
        assert_eq!(o.code, Some("ERR_SINK_UNAVAILABLE"));
        assert_eq!(o.error.as_deref(), Some("destination unavailable"));
        assert_eq!(o.replicator, "r");
    }
    assert_eq!(
        host.one_for("a").data,
        Some(json!({ "id": "a", "name": "x" })),
        "failures carry the record"
    );
    let s = &engine.stats()[0];
    assert_eq!((s.delivered, s.failed, s.retried), (0, 2, 4));
    assert_eq!(s.last_error.as_deref(), Some("destination unavailable"));
    assert!(s.last_sync.is_none());
}

#[tokio::test(start_paused = true)]
async fn max_retries_zero_still_makes_one_attempt() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        always_fail: true,
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "maxRetries": 0, "circuitBreaker": false }),
        ),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    assert_eq!(sink.calls.lock().unwrap().len(), 1);
    assert_eq!(host.one_for("a").attempts, 1);
    assert_eq!(host.one_for("a").status, OutcomeStatus::Failed);
}

/// Backoff doubles from retryDelay (with "equal jitter": between half and all of the nominal
/// delay) and is capped by maxRetryDelay. Virtual time, so gaps are exact.
#[tokio::test(start_paused = true)]
async fn backoff_grows_exponentially_and_is_capped() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        always_fail: true,
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "maxRetries": 7, "retryDelay": 100, "maxRetryDelay": 400, "circuitBreaker": false }),
        ),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    let times = sink.call_times();
    assert_eq!(times.len(), 7);
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    let nominal = [100u128, 200, 400, 400, 400, 400];
    for (i, (&g, &n)) in gaps.iter().zip(&nominal).enumerate() {
        assert!(
            g >= n / 2 && g <= n + 1,
            "gap {i} = {g} ms, expected within [{}, {}] (gaps {gaps:?})",
            n / 2,
            n
        );
    }
    assert!(gaps[2] > gaps[0], "backoff did not grow: {gaps:?}");
    assert_eq!(host.one_for("a").attempts, 7);
}

/// Jitter off is not configurable, but with retryDelay 0 retries are immediate.
#[tokio::test(start_paused = true)]
async fn zero_retry_delay_retries_immediately() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    sink.fail_first.store(4, SeqCst);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "maxRetries": 5, "retryDelay": 0, "maxRetryDelay": 0 }),
        ),
        host.clone(),
        sinks![sink],
    );
    let t0 = Instant::now();
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    assert_eq!(host.one_for("a").attempts, 5);
    assert!(
        t0.elapsed() < Duration::from_millis(50),
        "{:?}",
        t0.elapsed()
    );
}

/// A write that does not finish within `timeout` counts as a retryable failure and ends as
/// ERR_TIMEOUT.
#[tokio::test(start_paused = true)]
async fn a_hanging_write_times_out_and_is_retried() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        hang: true,
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "maxRetries": 2, "retryDelay": 10, "timeout": 100, "circuitBreaker": false }),
        ),
        host.clone(),
        sinks![sink],
    );
    let t0 = Instant::now();
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    let o = host.one_for("a");
    assert_eq!(
        (o.status, o.attempts, o.code),
        (OutcomeStatus::Failed, 2, Some("ERR_TIMEOUT"))
    );
    assert!(o.error.unwrap().contains("timed out"));
    assert_eq!(sink.calls.lock().unwrap().len(), 2);
    assert!(t0.elapsed() >= Duration::from_millis(200));
}

/// Per-item retryable failures retry only the failed items.
#[tokio::test(start_paused = true)]
async fn partial_failures_retry_only_the_failed_items() {
    let host = TestHost::new();
    let sink = Arc::new(PartialFlakySink {
        flaky_ids: HashSet::from(["c".to_string()]),
        times: 2,
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 1, "batchSize": 10, "maxRetries": 3, "retryDelay": 10 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for id in ["a", "b", "c", "d"] {
        push(&engine, "users", Op::Inserted, rec(id, json!({})));
    }
    engine.flush().await;
    assert_eq!(
        *sink.batches.lock().unwrap(),
        vec![vec!["a", "b", "c", "d"], vec!["c"], vec!["c"]]
    );
    for id in ["a", "b", "d"] {
        assert_eq!(host.one_for(id).attempts, 1);
    }
    assert_eq!(host.one_for("c").attempts, 3);
    assert_eq!(host.count(OutcomeStatus::Replicated), 4);
    assert_eq!(engine.stats()[0].retried, 2);
}

/// A throttled write waits at least the destination's Retry-After, even beyond maxRetryDelay.
#[tokio::test(start_paused = true)]
async fn throttling_honours_retry_after() {
    let host = TestHost::new();
    let sink = Arc::new(ThrottlingSink {
        retry_after: Duration::from_millis(700),
        calls: Default::default(),
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "maxRetries": 3, "retryDelay": 10, "maxRetryDelay": 100 }),
        ),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    let calls = sink.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert!(
        calls[1] - calls[0] >= Duration::from_millis(700),
        "waited only {:?}",
        calls[1] - calls[0]
    );
    let o = host.one_for("a");
    assert_eq!((o.status, o.attempts), (OutcomeStatus::Replicated, 2));
}

// =============================================================================================
// Poison records

#[tokio::test]
async fn a_poison_record_is_isolated_by_bisection() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    sink.poison.lock().unwrap().insert("u6".into());
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 1, "batchSize": 10, "lingerMs": 20 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..10 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    engine.flush().await;
    let mut ids: Vec<String> = sink.changes().into_iter().map(|c| c.id).collect();
    ids.sort();
    let mut expected: Vec<String> = (0..10)
        .filter(|&i| i != 6)
        .map(|i| format!("u{i}"))
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "the nine good records, each exactly once");
    let bad = host.one_for("u6");
    assert_eq!(bad.status, OutcomeStatus::Failed);
    assert_eq!(bad.code, Some("ERR_SINK_REJECTED"));
    assert_eq!(bad.error.as_deref(), Some("record rejected"));
    assert!(
        bad.attempts > 1,
        "bisection attempts are counted: {}",
        bad.attempts
    );
    assert_eq!(host.count(OutcomeStatus::Replicated), 9);
    assert_eq!(
        engine.stats()[0].retried,
        0,
        "a permanent error is never retried"
    );
}

#[tokio::test]
async fn several_poison_records_in_one_batch() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    sink.poison
        .lock()
        .unwrap()
        .extend(["u0".to_string(), "u5".into(), "u9".into()]);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 1, "batchSize": 10, "lingerMs": 20 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..10 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    engine.flush().await;
    assert_eq!(sink.changes().len(), 7);
    let failed: HashSet<String> = host
        .with_status(OutcomeStatus::Failed)
        .into_iter()
        .map(|o| o.record_id)
        .collect();
    assert_eq!(
        failed,
        HashSet::from(["u0".to_string(), "u5".into(), "u9".into()])
    );
    assert_eq!(host.count(OutcomeStatus::Replicated), 7);
}

/// Bisection writes the left half before the right one, so the good changes of a batch keep
/// their order, even for a record whose other change was rejected.
#[tokio::test]
async fn bisection_keeps_the_order_of_the_good_changes() {
    let host = TestHost::new();
    let sink = Arc::new(ContentPoisonSink::default());
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 1, "batchSize": 20, "lingerMs": 20 }),
        ),
        host.clone(),
        sinks![sink],
    );
    let plan = [
        ("a", 1, false),
        ("b", 1, false),
        ("a", 2, false),
        ("c", 1, true),
        ("a", 3, false),
        ("b", 2, false),
        ("c", 2, false),
        ("a", 4, false),
    ];
    for (id, v, bad) in plan {
        push(
            &engine,
            "users",
            Op::Updated,
            rec(id, json!({ "v": v, "bad": bad })),
        );
    }
    engine.flush().await;
    let got: Vec<(String, u64)> = sink
        .written
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.id.clone(), c.data["v"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(String, u64)> = plan
        .iter()
        .filter(|p| !p.2)
        .map(|p| (p.0.to_string(), p.1 as u64))
        .collect();
    assert_eq!(got, expected);
    let failed = host.with_status(OutcomeStatus::Failed);
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (
            failed[0].record_id.as_str(),
            &failed[0].data.as_ref().unwrap()["v"]
        ),
        ("c", &json!(1))
    );
}

#[tokio::test]
async fn a_poison_record_reported_per_item() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink {
        per_item: true,
        ..Default::default()
    });
    sink.poison.lock().unwrap().insert("u3".into());
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 1, "batchSize": 10, "lingerMs": 20 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..10 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    engine.flush().await;
    assert_eq!(
        sink.batches.lock().unwrap().len(),
        1,
        "one write, no bisection"
    );
    assert_eq!(sink.changes().len(), 9);
    let bad = host.one_for("u3");
    assert_eq!(
        (bad.status, bad.attempts, bad.code),
        (OutcomeStatus::Failed, 1, Some("ERR_SINK_REJECTED"))
    );
    assert_eq!(host.count(OutcomeStatus::Replicated), 9);
    assert!(host
        .with_status(OutcomeStatus::Replicated)
        .iter()
        .all(|o| o.attempts == 1));
}

// =============================================================================================
// Callbacks

#[tokio::test]
async fn transform_is_applied_and_the_destination_renamed() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "users": { "resource": "people", "transform": { "$fn": FN_UPPER } } }),
            json!({}),
        ),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "ann" })),
    );
    engine.flush().await;
    let c = &sink.changes()[0];
    assert_eq!((c.dest.as_str(), c.resource.as_str()), ("people", "users"));
    assert_eq!(c.data, json!({ "id": "a", "name": "ANN" }));
    let o = host.one_for("a");
    assert_eq!(
        (o.status, o.destination.as_str(), o.resource_name.as_str()),
        (OutcomeStatus::Replicated, "people", "users")
    );
}

#[tokio::test]
async fn function_shorthand_is_a_transform() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!({ "users": { "$fn": FN_UPPER } }), json!({})),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "ann" })),
    );
    engine.flush().await;
    assert_eq!(sink.changes()[0].data["name"], "ANN");
    assert_eq!(sink.changes()[0].dest, "users");
}

#[tokio::test]
async fn a_transform_that_drops_the_id_keeps_the_identity() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "users": { "transform": { "$fn": FN_DROP_ID } } }),
            json!({}),
        ),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "ann" })),
    );
    engine.flush().await;
    let c = &sink.changes()[0];
    assert_eq!(c.id, "a");
    assert_eq!(
        c.data,
        json!({ "id": "a", "name": "ann", "transformed": true })
    );
}

#[tokio::test]
async fn a_transform_error_fails_only_that_record() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "users": { "transform": { "$fn": FN_THROW_IF_BAD } } }),
            json!({ "concurrency": 1, "batchSize": 10, "lingerMs": 20 }),
        ),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "ok" })),
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("b", json!({ "name": "bad" })),
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("c", json!({ "name": "ok" })),
    );
    engine.flush().await;
    assert_eq!(
        host.callback_batches.load(SeqCst),
        1,
        "one host call per batch"
    );
    let ids: Vec<String> = sink.changes().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec!["a", "c"]);
    let b = host.one_for("b");
    assert_eq!(
        (b.status, b.code, b.attempts),
        (OutcomeStatus::Failed, Some("ERR_TRANSFORM"), 0)
    );
    let msg = b.error.unwrap();
    assert!(msg.contains("bad name") && msg.contains("users"), "{msg}");
    assert_eq!(b.data, Some(json!({ "id": "b", "name": "bad" })));
    assert_eq!(host.count(OutcomeStatus::Replicated), 2);
}

#[tokio::test]
async fn a_transform_that_throws_or_returns_a_non_object_fails_with_err_transform() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "a": { "transform": { "$fn": FN_THROW } }, "b": { "transform": { "$fn": FN_NOT_OBJECT } }, "c": true }),
            json!({}),
        ),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "a", Op::Inserted, rec("1", json!({})));
    push(&engine, "b", Op::Inserted, rec("2", json!({})));
    push(&engine, "c", Op::Inserted, rec("3", json!({})));
    engine.flush().await;
    assert_eq!(host.one_for("1").code, Some("ERR_TRANSFORM"));
    assert_eq!(host.one_for("2").code, Some("ERR_TRANSFORM"));
    assert_eq!(host.one_for("3").status, OutcomeStatus::Replicated);
    assert_eq!(sink.changes().len(), 1);
}

#[tokio::test]
async fn a_transform_returning_nothing_skips_the_record() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "users": { "transform": { "$fn": FN_SKIP } } }),
            json!({}),
        ),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    let o = host.one_for("a");
    assert_eq!((o.status, o.attempts), (OutcomeStatus::Skipped, 0));
    assert!(o.error.is_none() && o.data.is_none());
    assert!(
        sink.batches.lock().unwrap().is_empty(),
        "nothing written, not even an empty batch"
    );
    let s = &engine.stats()[0];
    assert_eq!((s.received, s.skipped, s.delivered, s.queued), (1, 1, 0, 0));
}

#[tokio::test]
async fn should_replicate_false_skips_and_true_delivers() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "users": { "shouldReplicate": { "$fn": FN_NO_DELETES }, "transform": { "$fn": FN_UPPER } } }),
            json!({ "concurrency": 1 }),
        ),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "x" })),
    );
    push(
        &engine,
        "users",
        Op::Updated,
        rec("a", json!({ "name": "y" })),
    );
    push(
        &engine,
        "users",
        Op::Deleted,
        rec("a", json!({ "name": "y" })),
    );
    engine.flush().await;
    let ops: Vec<(Op, Value)> = sink
        .changes()
        .into_iter()
        .map(|c| (c.op, c.data["name"].clone()))
        .collect();
    assert_eq!(
        ops,
        vec![(Op::Inserted, json!("X")), (Op::Updated, json!("Y"))]
    );
    let statuses: Vec<(Op, OutcomeStatus)> = host
        .for_id("a")
        .into_iter()
        .map(|o| (o.operation, o.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (Op::Inserted, OutcomeStatus::Replicated),
            (Op::Updated, OutcomeStatus::Replicated),
            (Op::Deleted, OutcomeStatus::Skipped)
        ]
    );
}

#[tokio::test]
async fn should_replicate_without_transform_delivers_the_record_as_is() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "users": { "shouldReplicate": { "$fn": FN_NO_DELETES } } }),
            json!({}),
        ),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "x" })),
    );
    engine.flush().await;
    assert_eq!(sink.changes()[0].data, json!({ "id": "a", "name": "x" }));
}

/// Callbacks that never return fail their records once `timeout` passes; the engine goes on.
#[tokio::test(start_paused = true)]
async fn hanging_callbacks_time_out_and_the_engine_continues() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "slow": { "transform": { "$fn": FN_HANG } }, "users": true }),
            json!({ "timeout": 200, "concurrency": 1 }),
        ),
        host.clone(),
        sinks![sink],
    );
    let t0 = Instant::now();
    push(&engine, "slow", Op::Inserted, rec("s1", json!({})));
    push(&engine, "slow", Op::Inserted, rec("s2", json!({})));
    engine.flush().await;
    assert!(t0.elapsed() >= Duration::from_millis(200));
    for id in ["s1", "s2"] {
        let o = host.one_for(id);
        assert_eq!(
            (o.status, o.code),
            (OutcomeStatus::Failed, Some("ERR_TRANSFORM"))
        );
        assert!(
            o.error
                .as_deref()
                .unwrap()
                .contains("did not finish within 200 ms"),
            "{:?}",
            o.error
        );
    }
    push(&engine, "users", Op::Inserted, rec("u1", json!({})));
    engine.flush().await;
    assert_eq!(host.one_for("u1").status, OutcomeStatus::Replicated);
    assert_eq!(sink.changes().len(), 1);
}

// =============================================================================================
// Routing

#[tokio::test]
async fn actions_filter_what_is_replicated() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "users": { "actions": ["inserted", "delete"] } }),
            json!({}),
        ),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    push(&engine, "users", Op::Updated, rec("a", json!({})));
    push(&engine, "users", Op::Deleted, rec("a", json!({})));
    engine.flush().await;
    let ops: Vec<Op> = sink.changes().into_iter().map(|c| c.op).collect();
    assert_eq!(ops, vec![Op::Inserted, Op::Deleted]);
    assert_eq!(
        host.outcomes().len(),
        2,
        "filtered changes produce no outcome"
    );
    assert_eq!(engine.stats()[0].received, 2);
}

#[tokio::test]
async fn multiple_destinations_fan_out() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(
            json!({ "users": ["people", { "resource": "archive", "transform": { "$fn": FN_UPPER } }, { "$fn": FN_UPPER }] }),
            json!({}),
        ),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "ann" })),
    );
    engine.flush().await;
    let mut got: Vec<(String, Value)> = sink
        .changes()
        .into_iter()
        .map(|c| (c.dest, c.data["name"].clone()))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("archive".into(), json!("ANN")),
            ("people".into(), json!("ann")),
            ("users".into(), json!("ANN"))
        ]
    );
    let mut dests: Vec<String> = host
        .for_id("a")
        .into_iter()
        .map(|o| o.destination)
        .collect();
    dests.sort();
    assert_eq!(dests, vec!["archive", "people", "users"]);
    assert_eq!(engine.stats()[0].received, 3);
}

#[tokio::test]
async fn unknown_resources_are_ignored() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({})),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "orders", Op::Inserted, rec("a", json!({})));
    within("flush", SEC, engine.flush()).await;
    assert!(sink.changes().is_empty());
    assert!(host.outcomes().is_empty());
    assert_eq!(engine.stats()[0].received, 0);
    assert_eq!(engine.pending(), 0);
}

#[tokio::test]
async fn internal_fields_are_stripped_and_before_is_lifted() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({})),
        host.clone(),
        sinks![sink],
    );
    let raw = json!({ "id": "a", "name": "new", "_v": "1", "_etag": "x", "$after": { "id": "a" }, "$before": { "id": "a", "name": "old", "_v": "0" } });
    push(&engine, "users", Op::Updated, raw.to_string());
    push(
        &engine,
        "users",
        Op::Inserted,
        json!({ "id": 7, "n": 1 }).to_string(),
    );
    engine.flush().await;
    let changes = sink.changes();
    let a = changes.iter().find(|c| c.id == "a").unwrap();
    assert_eq!(a.data, json!({ "id": "a", "name": "new" }));
    assert_eq!(a.before, Some(json!({ "id": "a", "name": "old" })));
    assert_eq!(a.op, Op::Updated);
    let seven = changes
        .iter()
        .find(|c| c.id == "7")
        .expect("numeric ids are accepted");
    assert_eq!(seven.before, None);
}

#[tokio::test]
async fn unusable_changes_fail_and_the_engine_keeps_going() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({})),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        json!({ "name": "no id" }).to_string(),
    );
    push(&engine, "users", Op::Inserted, "{ not json".to_string());
    push(
        &engine,
        "users",
        Op::Inserted,
        json!({ "id": "", "name": "empty id" }).to_string(),
    );
    push(&engine, "users", Op::Inserted, rec("ok", json!({})));
    engine.flush().await;
    let failed = host.with_status(OutcomeStatus::Failed);
    assert_eq!(failed.len(), 3, "{failed:?}");
    for f in &failed {
        assert_eq!(f.code, Some("ERR_CONFIG"));
        assert_eq!(f.resource_name, "users");
        assert!(f.error.as_deref().unwrap().contains("users"));
    }
    assert!(failed[0].error.as_deref().unwrap().contains("'id'"));
    assert!(failed[1].error.as_deref().unwrap().contains("invalid JSON"));
    assert_eq!(host.one_for("ok").status, OutcomeStatus::Replicated);
    assert_eq!(sink.changes().len(), 1);
    assert_eq!(engine.pending(), 0);
}

#[tokio::test]
async fn globally_disabled_engine_accepts_and_ignores_changes() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({ "enabled": false })),
        host.clone(),
        sinks![sink],
    );
    assert!(!push(&engine, "users", Op::Inserted, rec("a", json!({}))));
    within("flush", SEC, engine.flush()).await;
    assert!(sink.changes().is_empty() && host.outcomes().is_empty());
}

// =============================================================================================
// Flush

#[tokio::test]
async fn flush_waits_for_everything_accepted_before_it() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        delay: Some(Duration::from_millis(5)),
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 2, "batchSize": 2, "lingerMs": 0 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..20 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    assert!(engine.pending() > 0);
    within("flush", 5 * SEC, engine.flush()).await;
    assert_eq!(sink.changes().len(), 20);
    assert_eq!(host.outcomes().len(), 20);
    assert_eq!(engine.pending(), 0);
    assert_eq!(engine.stats()[0].queued, 0);
    assert!(
        host.barriers.load(SeqCst) >= 1,
        "flush waits for the host's barrier"
    );
}

#[tokio::test]
async fn flush_with_nothing_pending_resolves() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({})),
        host.clone(),
        sinks![sink],
    );
    within("empty flush", SEC, engine.flush()).await;
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    within("flush", SEC, engine.flush()).await;
    within("second flush", SEC, engine.flush()).await;
    assert_eq!(host.outcomes().len(), 1);
}

/// A flush started while a change is held does not resolve until that change settles.
#[tokio::test]
async fn flush_does_not_resolve_while_a_change_is_in_flight() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        hold: HashSet::from(["held".to_string()]),
        ..Default::default()
    });
    let engine = Arc::new(start(
        one_replicator(json!(["users"]), json!({ "concurrency": 2 })),
        host.clone(),
        sinks![sink],
    ));
    push(&engine, "users", Op::Inserted, rec("held", json!({})));
    let e = engine.clone();
    let flush = tokio::spawn(async move { e.flush().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !flush.is_finished(),
        "flush resolved before the held change settled"
    );
    assert!(host.outcomes().is_empty());
    sink.release();
    within("flush", SEC, flush).await.unwrap();
    assert_eq!(host.one_for("held").status, OutcomeStatus::Replicated);
}

/// flush() promises that the host has handled the outcomes of everything it waited for. The
/// lane marks a batch settled *before* emitting its outcomes, so on a multi-threaded runtime
/// flush can see the batch settled, pass the host barrier and return while the outcomes are
/// still on their way. A slow `emit` for record "b" widens that window deterministically:
/// "a" (other lane) settles later and wakes flush while "b"'s outcomes are being emitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn flush_resolves_only_after_the_outcomes_were_emitted() {
    let lanes = 2;
    let a = "a";
    let b = (0..100)
        .map(|i| format!("b{i}"))
        .find(|id| lane_of("users", id, lanes) != lane_of("users", a, lanes))
        .unwrap();
    let host = TestHost::new();
    *host.slow_emit.lock().unwrap() = Some((b.clone(), Duration::from_millis(300)));
    let sink = Arc::new(RecordingSink {
        hold: HashSet::from([a.to_string()]),
        ..Default::default()
    });
    let engine = Arc::new(start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": lanes, "lingerMs": 0 }),
        ),
        host.clone(),
        sinks![sink],
    ));
    push(&engine, "users", Op::Inserted, rec(a, json!({})));
    push(&engine, "users", Op::Inserted, rec(&b, json!({})));
    let e = engine.clone();
    let flush = tokio::spawn(async move { e.flush().await });
    // Wait until b's batch is settled (its emit is now sleeping), then let a finish.
    wait_for("b written", 5 * SEC, || sink.ids().contains(&b)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    sink.release();
    within("flush", 5 * SEC, flush).await.unwrap();
    let seen: Vec<String> = host.outcomes().into_iter().map(|o| o.record_id).collect();
    assert!(
        seen.contains(&b),
        "flush resolved before b's outcome reached the host (outcomes: {seen:?})"
    );
    assert_eq!(seen.len(), 2);
}

// =============================================================================================
// Stop and drain

/// stop() drains what is queued, returns as soon as that is done (not at the deadline) and
/// reports drained.
#[tokio::test(start_paused = true)]
async fn stop_drains_queued_changes() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        delay: Some(Duration::from_millis(10)),
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 2, "batchSize": 5 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..30 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    let t0 = Instant::now();
    let report = engine.stop(Duration::from_secs(10)).await;
    assert_eq!(sink.changes().len(), 30, "stop delivered what was queued");
    assert_eq!(host.count(OutcomeStatus::Replicated), 30);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "stop took {:?} of virtual time for ~60 ms of work",
        t0.elapsed()
    );
    assert_eq!(report.abandoned, 0);
    assert!(report.drained, "{report:?}");
    assert_eq!(host.outcomes().len(), 30);
    assert!(engine.is_stopped());
    assert_eq!(engine.pending(), 0);
}

/// Draining includes changes waiting in backoff, and lingering batches.
#[tokio::test(start_paused = true)]
async fn stop_drain_waits_for_retries_within_the_deadline() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    sink.fail_first.store(2, SeqCst);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "maxRetries": 5, "retryDelay": 500, "lingerMs": 100, "concurrency": 1 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..3 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    let t0 = Instant::now();
    let report = engine.stop(Duration::from_secs(10)).await;
    assert!(report.drained && report.abandoned == 0, "{report:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "the retries' backoff was skipped: {:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(sink.changes().len(), 3);
    assert!(host
        .outcomes()
        .iter()
        .all(|o| o.status == OutcomeStatus::Replicated && o.attempts == 3));
}

#[tokio::test(start_paused = true)]
async fn stop_at_the_deadline_abandons_and_reports_what_is_left() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        hang: true,
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": 2, "batchSize": 2, "lingerMs": 0 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..9 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("u{i}"), json!({})),
        );
    }
    wait_for("writes started", SEC, || {
        !sink.calls.lock().unwrap().is_empty()
    })
    .await;
    let t0 = Instant::now();
    let report = engine.stop(Duration::from_millis(200)).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(1),
        "stop took {took:?}"
    );
    assert!(!report.drained);
    assert_eq!(report.abandoned, 9);
    let outcomes = host.outcomes();
    assert_eq!(outcomes.len(), 9, "every abandoned change is reported");
    for o in &outcomes {
        assert_eq!(
            (o.status, o.code),
            (OutcomeStatus::Failed, Some("ERR_STOPPED")),
            "{o:?}"
        );
        assert!(
            o.data.is_some(),
            "stopped changes carry the record so they can be re-queued"
        );
    }
    let ids: HashSet<String> = outcomes.into_iter().map(|o| o.record_id).collect();
    assert_eq!(ids.len(), 9);
    assert!(sink.changes().is_empty());
    assert_eq!(engine.stats()[0].failed, 9);
}

/// stop() during a long backoff returns at the deadline, not after the backoff.
#[tokio::test(start_paused = true)]
async fn stop_interrupts_a_backoff() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        always_fail: true,
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "maxRetries": 10, "retryDelay": 60000, "maxRetryDelay": 60000 }),
        ),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    wait_for("first attempt", SEC, || {
        !sink.calls.lock().unwrap().is_empty()
    })
    .await;
    let t0 = Instant::now();
    let report = engine.stop(Duration::from_millis(100)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stop waited for the backoff: {:?}",
        t0.elapsed()
    );
    assert!(!report.drained);
    assert_eq!(report.abandoned, 1);
    assert_eq!(host.one_for("a").status, OutcomeStatus::Failed);
}

/// Once stop() cancels, a change waiting in backoff must be reported ERR_STOPPED and the
/// destination must not be hit again. Today the backoff returns at once on cancel and the
/// write loop goes on retrying with no delay; the lane's `select!` (process vs cancel) is
/// unbiased, so with a sink that fails without awaiting, about half of the runs burn every
/// remaining attempt back to back and report ERR_SINK_UNAVAILABLE instead of ERR_STOPPED.
/// Ten engines make a pass by luck unlikely (1 in 1024).
#[tokio::test(start_paused = true)]
async fn stop_during_backoff_does_not_retry_again() {
    let mut codes = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..10 {
        let host = TestHost::new();
        let sink = Arc::new(RecordingSink {
            always_fail: true,
            ..Default::default()
        });
        let engine = start(
            one_replicator(
                json!(["users"]),
                json!({ "maxRetries": 10, "retryDelay": 60000, "maxRetryDelay": 60000 }),
            ),
            host.clone(),
            sinks![sink],
        );
        push(&engine, "users", Op::Inserted, rec("a", json!({})));
        wait_for("first attempt", SEC, || {
            !sink.calls.lock().unwrap().is_empty()
        })
        .await;
        engine.stop(Duration::from_millis(100)).await;
        codes.push(host.one_for("a").code.unwrap());
        calls.push(sink.calls.lock().unwrap().len());
    }
    assert!(
        codes.iter().all(|c| *c == "ERR_STOPPED"),
        "codes: {codes:?}"
    );
    assert!(
        calls.iter().all(|&n| n == 1),
        "sink calls per run (1 before stop): {calls:?}"
    );
}

/// Dropping the engine without stop() ends its tasks (the cancel sender goes away), so the
/// sinks are released.
#[tokio::test]
async fn dropping_the_engine_ends_its_tasks() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({})),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    drop(engine);
    wait_for("engine tasks released the sink", SEC, || {
        Arc::strong_count(&sink) == 1
    })
    .await;
}

/// A flush that is waiting (or starts) while stop() drains must still wait for its changes.
/// flush's wait gives up as soon as `tasks_finished()`, which is true once stop() has taken the
/// task handles out of `self.tasks` (an empty list is "all finished").
#[tokio::test]
async fn flush_during_stop_still_waits_for_its_changes() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        hold: HashSet::from(["held".to_string()]),
        ..Default::default()
    });
    let engine = Arc::new(start(
        one_replicator(json!(["users"]), json!({})),
        host.clone(),
        sinks![sink],
    ));
    push(&engine, "users", Op::Inserted, rec("held", json!({})));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let e = engine.clone();
    let stop = tokio::spawn(async move { e.stop(Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let e = engine.clone();
    let flush = tokio::spawn(async move { e.flush().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let early = flush.is_finished();
    sink.release();
    let report = within("stop", 5 * SEC, stop).await.unwrap();
    within("flush", 5 * SEC, flush).await.unwrap();
    assert!(report.drained);
    assert!(
        !early,
        "flush resolved while its change was still being written"
    );
}

/// A sink that panics must not wedge the engine: the batch fails (ERR_INTERNAL), later
/// changes go on, flush resolves. Today the panic kills the lane task: its batch and queue are
/// never settled (no outcome at all), later changes of that lane are silently counted settled,
/// and flush() hangs while any other lane is alive.
#[tokio::test(start_paused = true)]
async fn a_panicking_sink_does_not_wedge_the_engine() {
    let lanes = 2;
    let boom_lane = lane_of("users", "boom", lanes);
    let same = (0..100)
        .map(|i| format!("s{i}"))
        .find(|id| lane_of("users", id, lanes) == boom_lane)
        .unwrap();
    let other = (0..100)
        .map(|i| format!("o{i}"))
        .find(|id| lane_of("users", id, lanes) != boom_lane)
        .unwrap();
    let host = TestHost::new();
    let sink = Arc::new(PanickingSink::default());
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "concurrency": lanes, "lingerMs": 0, "batchSize": 1 }),
        ),
        host.clone(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("boom", json!({})));
    push(&engine, "users", Op::Inserted, rec(&same, json!({})));
    push(&engine, "users", Op::Inserted, rec(&other, json!({})));
    within("flush after a sink panic", 2 * SEC, engine.flush()).await;
    assert_eq!(host.one_for(&other).status, OutcomeStatus::Replicated);
    assert_eq!(host.one_for("boom").status, OutcomeStatus::Failed);
    assert_eq!(host.one_for("boom").code, Some("ERR_INTERNAL"));
    assert_eq!(host.one_for(&same).status, OutcomeStatus::Replicated);
}

#[tokio::test]
async fn push_after_stop_is_refused() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({})),
        host.clone(),
        sinks![sink],
    );
    let _ = within("stop", 2 * SEC, engine.stop(Duration::from_millis(50))).await;
    assert!(matches!(
        engine.push("users".into(), Op::Inserted, rec("a", json!({}))),
        Err(EngineError::Stopped)
    ));
    assert!(matches!(
        engine.push_tagged(
            "users".into(),
            Op::Inserted,
            rec("a", json!({})),
            Some("r"),
            Some(1)
        ),
        Err(EngineError::Stopped)
    ));
    assert_eq!(EngineError::Stopped.code().as_str(), "ERR_STOPPED");
    // A second stop is a no-op; flush and wait_for_capacity do not hang on a stopped engine.
    let again = within("second stop", SEC, engine.stop(Duration::from_millis(50))).await;
    assert_eq!((again.drained, again.abandoned), (true, 0));
    within("flush after stop", SEC, engine.flush()).await;
    within("capacity after stop", SEC, engine.wait_for_capacity()).await;
    assert!(host.outcomes().is_empty());
}

// =============================================================================================
// Backpressure

#[tokio::test(start_paused = true)]
async fn backpressure_signals_saturation_and_capacity_returns() {
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        delay: Some(Duration::from_millis(20)),
        ..Default::default()
    });
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "queueCapacity": 5, "concurrency": 1, "batchSize": 1, "lingerMs": 0 }),
        ),
        host.clone(),
        sinks![sink],
    );
    let flags: Vec<bool> = (0..20)
        .map(|i| {
            push(
                &engine,
                "users",
                Op::Inserted,
                rec(&format!("u{i}"), json!({})),
            )
        })
        .collect();
    assert!(flags[..5].iter().all(|f| !f), "{flags:?}");
    assert!(flags[5..].iter().all(|f| *f), "{flags:?}");
    assert!(engine.saturated());
    within("capacity", 5 * SEC, engine.wait_for_capacity()).await;
    assert!(!engine.saturated());
    let delivered = sink.changes().len();
    assert!(
        delivered >= 15,
        "capacity returned after only {delivered} deliveries"
    );
    assert!(engine.pending() <= 5);
    assert!(
        engine.pending() > 0,
        "wait_for_capacity should not wait for a full drain"
    );
    engine.flush().await;
    assert_eq!(sink.changes().len(), 20);
}

#[tokio::test]
async fn wait_for_capacity_resolves_at_once_when_not_saturated() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({ "queueCapacity": 100 })),
        host.clone(),
        sinks![sink],
    );
    assert!(!push(&engine, "users", Op::Inserted, rec("a", json!({}))));
    within("capacity", SEC, engine.wait_for_capacity()).await;
}

// =============================================================================================
// Enabling, tickets, several replicators

#[tokio::test]
async fn disabled_replicators_get_nothing_until_enabled_again() {
    let host = TestHost::new();
    let sink = Arc::new(MemorySink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({})),
        host.clone(),
        sinks![sink],
    );
    engine.set_enabled("r", false).unwrap();
    assert!(!engine.stats()[0].enabled);
    push(&engine, "users", Op::Inserted, rec("off", json!({})));
    engine.flush().await;
    engine.set_enabled("r", true).unwrap();
    assert!(engine.stats()[0].enabled);
    push(&engine, "users", Op::Inserted, rec("on", json!({})));
    engine.flush().await;
    let ids: Vec<String> = sink.changes().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec!["on"]);
    assert!(host.for_id("off").is_empty());
    assert_eq!(engine.stats()[0].received, 1);
    assert!(matches!(
        engine.set_enabled("nope", false),
        Err(EngineError::UnknownReplicator(_))
    ));
}

#[tokio::test]
async fn a_replicator_configured_disabled_starts_disabled() {
    let host = TestHost::new();
    let (s1, s2) = (
        Arc::new(MemorySink::default()),
        Arc::new(MemorySink::default()),
    );
    let opts = json!({ "replicators": [
        { "id": "on", "driver": "s3db", "resources": ["users"], "config": { "connectionString": "memory://a" } },
        { "id": "off", "driver": "s3db", "resources": ["users"], "enabled": false, "config": { "connectionString": "memory://b" } }
    ]});
    let engine = start(opts, host.clone(), sinks![s1, s2]);
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    engine.flush().await;
    assert_eq!((s1.changes().len(), s2.changes().len()), (1, 0));
}

#[tokio::test]
async fn tagged_pushes_go_to_one_replicator_and_carry_their_ticket() {
    let host = TestHost::new();
    let (s1, s2) = (
        Arc::new(MemorySink::default()),
        Arc::new(MemorySink::default()),
    );
    let opts = json!({ "replicators": [
        { "id": "one", "driver": "s3db", "resources": ["users"], "config": { "connectionString": "memory://a" } },
        { "id": "two", "driver": "s3db", "resources": ["users"], "config": { "connectionString": "memory://b" } }
    ]});
    let engine = start(opts, host.clone(), sinks![s1, s2]);
    engine
        .push_tagged(
            "users".into(),
            Op::Inserted,
            rec("a", json!({})),
            Some("two"),
            Some(42),
        )
        .unwrap();
    engine
        .push_tagged(
            "users".into(),
            Op::Inserted,
            json!({ "no": "id" }).to_string(),
            Some("two"),
            Some(43),
        )
        .unwrap();
    engine.flush().await;
    assert_eq!((s1.changes().len(), s2.changes().len()), (0, 1));
    let o = host.one_for("a");
    assert_eq!((o.replicator.as_str(), o.ticket), ("two", Some(42)));
    let rejected = host.with_status(OutcomeStatus::Failed);
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].ticket,
        Some(43),
        "rejections carry the ticket too"
    );
    assert!(matches!(
        engine.push_tagged(
            "users".into(),
            Op::Inserted,
            rec("b", json!({})),
            Some("three"),
            None
        ),
        Err(EngineError::UnknownReplicator(_))
    ));
}

/// A replicator whose destination is down (retrying with long backoff) does not delay the
/// healthy one.
#[tokio::test(start_paused = true)]
async fn a_failing_replicator_does_not_delay_a_healthy_one() {
    let host = TestHost::new();
    let bad = Arc::new(RecordingSink {
        always_fail: true,
        ..Default::default()
    });
    let good = Arc::new(RecordingSink::default());
    let opts = json!({ "maxRetries": 4, "retryDelay": 1000, "maxRetryDelay": 5000, "concurrency": 2, "batchSize": 3, "circuitBreaker": false, "replicators": [
        { "id": "bad", "driver": "s3db", "resources": ["users"], "config": { "connectionString": "memory://a" } },
        { "id": "good", "driver": "s3db", "resources": ["users"], "config": { "connectionString": "memory://b" } }
    ]});
    let engine = start(opts, host.clone(), sinks![bad, good]);
    let t0 = Instant::now();
    for round in 0..4 {
        for i in 0..5 {
            push(
                &engine,
                "users",
                Op::Updated,
                rec(&format!("u{i}"), json!({ "round": round })),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for("healthy deliveries", 10 * SEC, || {
        good.changes().len() == 20
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_millis(600),
        "healthy replicator delayed to {:?}",
        t0.elapsed()
    );
    assert!(
        host.outcomes().iter().all(|o| o.replicator == "good"),
        "the bad replicator cannot have settled anything yet"
    );
    assert!(good
        .written
        .lock()
        .unwrap()
        .iter()
        .all(|w| w.at - t0 < Duration::from_millis(500)));
    engine.flush().await;
    let bad_outcomes: Vec<_> = host
        .outcomes()
        .into_iter()
        .filter(|o| o.replicator == "bad")
        .collect();
    assert_eq!(bad_outcomes.len(), 20);
    assert!(bad_outcomes
        .iter()
        .all(|o| o.status == OutcomeStatus::Failed && o.attempts == 4));
    let stats = engine.stats();
    assert_eq!(
        (stats[0].id.as_str(), stats[0].failed, stats[0].delivered),
        ("bad", 20, 0)
    );
    assert_eq!(
        (stats[1].id.as_str(), stats[1].failed, stats[1].delivered),
        ("good", 0, 20)
    );
}
