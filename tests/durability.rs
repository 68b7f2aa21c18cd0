//! Integration tests of the engine's durability features: the disk outbox (replay after a stop
//! or a crash, one engine per directory, compaction), dead letters (isolation, retry, the
//! supersede rule, persistence, discard), the circuit breaker (holding changes through an
//! outage, probing, `holdTimeout`, breaker off), the snapshot-vs-live guard of full syncs, and
//! the lag/depth stats.
//!
//! Every test runs the real engine with its sinks replaced by test sinks (`tests/common`).
//! Outbox directories are unique per test under the system temp dir and removed afterwards.
//! Waiting happens in virtual time (`start_paused`) except where the system clock or the
//! outbox's own thread is what is measured.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use common::*;
use s3db_replicator::engine::{Engine, Outcome, OutcomeStatus, PushOptions};
use s3db_replicator::error::EngineError;
use s3db_replicator::event::Op;
use s3db_replicator::sinks::Sink;

const SEC: Duration = Duration::from_secs(1);

/// The sinks replacing the configured ones, by position.
macro_rules! sinks {
    ($($s:expr),* $(,)?) => { vec![$($s.clone() as Arc<dyn Sink>),*] };
}

/// One replicator `r` over `users`, with the outbox in `dir`, plus `extra` options.
fn on_disk(dir: &TempDir, extra: Value) -> Value {
    let mut extra = extra;
    extra["outbox"] = json!({ "dir": dir.dir() });
    one_replicator(json!(["users"]), extra)
}

/// Two replicators `x` and `y` over `users` (or only those listed), outbox in `dir`.
fn replicators(dir: &TempDir, ids: &[&str]) -> Value {
    let reps: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({ "id": id, "driver": "s3db", "resources": ["users"], "config": { "connectionString": format!("memory://{id}") } })
        })
        .collect();
    json!({ "outbox": { "dir": dir.dir() }, "lingerMs": 0, "replicators": reps })
}

fn version_op(v: u64) -> Op {
    if v == 0 {
        Op::Inserted
    } else {
        Op::Updated
    }
}

fn push_opts(engine: &Engine, op: Op, json: String, opts: PushOptions<'_>) {
    engine
        .push_with("users".into(), op, json, opts)
        .expect("push accepted");
}

/// Every outcome is ERR_STOPPED, and its message says whether the change survives (disk outbox).
fn assert_stopped(outcomes: &[Outcome], durable: bool) {
    for o in outcomes {
        assert_eq!(
            (o.status, o.code),
            (OutcomeStatus::Failed, Some("ERR_STOPPED")),
            "{o:?}"
        );
        let promised = o
            .error
            .as_deref()
            .is_some_and(|e| e.contains("delivered after the next start"));
        assert_eq!(promised, durable, "{o:?}");
    }
}

/// Ids of `n` records that all land in `lane` of `lanes` (destination `users`).
fn ids_in_lane(prefix: &str, lane: usize, lanes: usize, n: usize) -> Vec<String> {
    (0..1000)
        .map(|i| format!("{prefix}{i}"))
        .filter(|id| lane_of("users", id, lanes) == lane)
        .take(n)
        .collect()
}

// =============================================================================================
// Outbox: replay

/// Changes a destination never acknowledged survive a stop: A's destination is down for the
/// whole run, A stops at its deadline (everything ERR_STOPPED, nothing dead-lettered); B on the
/// same directory delivers every change, per record in order, without anything being pushed;
/// once B has settled them and stopped, a third engine replays nothing.
#[tokio::test(start_paused = true)]
async fn undelivered_changes_are_replayed_in_order_after_a_restart() {
    let dir = TempDir::new("replay");
    let options = on_disk(
        &dir,
        json!({ "concurrency": 2, "batchSize": 4, "lingerMs": 0, "retryDelay": 100 }),
    );
    const RECORDS: u64 = 5;
    const VERSIONS: u64 = 4;
    let n = RECORDS * VERSIONS;

    let host_a = TestHost::new();
    let sink_a = Arc::new(SwitchSink::default());
    sink_a.set_down(true);
    let a = start(options.clone(), host_a.clone(), sinks![sink_a]);
    let info = a.outbox();
    assert_eq!(info.mode, "disk");
    assert_eq!(info.dir.as_deref(), Some(dir.path()));
    assert_eq!(info.replayed, 0);
    for v in 0..VERSIONS {
        for r in 0..RECORDS {
            push(
                &a,
                "users",
                version_op(v),
                rec(&format!("u{r}"), json!({ "v": v })),
            );
        }
    }
    assert_eq!(a.last_seq(), n);
    wait_for("every change routed and tried", 5 * SEC, || {
        a.stats()[0].queued == n && sink_a.call_count() > 0
    })
    .await;
    // A long outage: the changes wait (circuit breaker on by default), nothing fails.
    tokio::time::sleep(30 * SEC).await;
    let info = a.outbox();
    assert_eq!(info.pending, n, "{info:?}");
    assert!(info.bytes > 0 && info.segments >= 1, "{info:?}");
    assert_eq!(info.append_errors, 0);
    assert!(host_a.outcomes().is_empty(), "{:?}", host_a.outcomes());

    let report = a.stop(Duration::from_millis(100)).await;
    assert!(!report.drained);
    assert_eq!(report.abandoned, n);
    let outcomes = host_a.outcomes();
    assert_eq!(
        outcomes.len() as u64,
        n,
        "every abandoned change is reported"
    );
    assert_stopped(&outcomes, true);
    assert!(sink_a.applied().is_empty());
    assert_eq!(
        a.dead_letter_count(),
        0,
        "stopped changes are not dead letters"
    );
    drop(a);

    // B: nothing is pushed; the outbox hands over what A accepted.
    let host_b = TestHost::new();
    let sink_b = Arc::new(SwitchSink::default());
    let b = start(options.clone(), host_b.clone(), sinks![sink_b]);
    assert_eq!(b.outbox().replayed, n);
    assert_eq!(b.last_seq(), n, "seqs continue after the replayed ones");
    within("flush of the replay", 5 * SEC, b.flush()).await;
    assert_eq!(sink_b.applied().len() as u64, n, "each change exactly once");
    for r in 0..RECORDS {
        let id = format!("u{r}");
        assert_eq!(
            sink_b.versions(&id),
            (0..VERSIONS).collect::<Vec<_>>(),
            "order of {id}"
        );
        let changes = sink_b.applied_for(&id);
        assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(changes[0].op, Op::Inserted);
    }
    assert_eq!(host_b.count(OutcomeStatus::Replicated) as u64, n);
    assert_eq!(host_b.outcomes().len() as u64, n);
    assert_eq!(b.outbox().pending, 0);
    assert_eq!(b.stats()[0].delivered, n);
    // A change pushed now comes after the replayed ones.
    push(&b, "users", Op::Updated, rec("u0", json!({ "v": 99 })));
    within("flush", 5 * SEC, b.flush()).await;
    let last = sink_b.applied_for("u0").pop().unwrap();
    assert_eq!((last.seq, last.data["v"].as_u64()), (n + 1, Some(99)));
    let report = b.stop(SEC).await;
    assert!(report.drained && report.abandoned == 0, "{report:?}");
    drop(b);

    // C: everything was settled and compacted away.
    let host_c = TestHost::new();
    let sink_c = Arc::new(SwitchSink::default());
    let c = start(options, host_c.clone(), sinks![sink_c]);
    assert_eq!(c.outbox().replayed, 0);
    assert_eq!(c.outbox().pending, 0);
    within("flush", 5 * SEC, c.flush()).await;
    assert!(sink_c.applied().is_empty());
    assert!(host_c.outcomes().is_empty());
    assert_eq!(c.last_seq(), n + 1, "seqs are never reused");
    c.stop(SEC).await;
}

/// Replayed changes are delivered before a change of the same record pushed right after the
/// restart.
#[tokio::test(start_paused = true)]
async fn replayed_changes_go_before_new_pushes() {
    let dir = TempDir::new("replay-first");
    let options = on_disk(&dir, json!({ "lingerMs": 0 }));
    let host = TestHost::new();
    let down = Arc::new(SwitchSink::default());
    down.set_down(true);
    let a = start(options.clone(), host.clone(), sinks![down]);
    push(&a, "users", Op::Inserted, rec("a", json!({ "v": 0 })));
    push(&a, "users", Op::Updated, rec("a", json!({ "v": 1 })));
    wait_for("tried", 5 * SEC, || down.call_count() > 0).await;
    a.stop(Duration::from_millis(50)).await;
    drop(a);

    let sink = Arc::new(SwitchSink::default());
    let b = start(options, TestHost::new(), sinks![sink]);
    push(&b, "users", Op::Updated, rec("a", json!({ "v": 2 })));
    within("flush", 5 * SEC, b.flush()).await;
    assert_eq!(sink.versions("a"), vec![0, 1, 2]);
    b.stop(SEC).await;
}

/// A crash (nothing stopped or closed) loses nothing either: a copy of the directory taken
/// while A is still running, as a killed process leaves it, replays every accepted change.
#[tokio::test(start_paused = true)]
async fn changes_accepted_before_a_crash_are_replayed() {
    let dir = TempDir::new("crash");
    let copy = TempDir::new("crash-copy");
    let extra = json!({ "lingerMs": 0, "concurrency": 3 });
    let host = TestHost::new();
    let sink_a = Arc::new(SwitchSink::default());
    sink_a.set_down(true);
    let a = start(on_disk(&dir, extra.clone()), host.clone(), sinks![sink_a]);
    for v in 0..3 {
        for r in 0..4 {
            push(
                &a,
                "users",
                version_op(v),
                rec(&format!("c{r}"), json!({ "v": v })),
            );
        }
    }
    wait_for("tried", 5 * SEC, || sink_a.call_count() > 0).await;
    crash_copy(dir.path(), &copy);

    let sink_b = Arc::new(SwitchSink::default());
    let b = start(on_disk(&copy, extra), TestHost::new(), sinks![sink_b]);
    assert_eq!(b.outbox().replayed, 12);
    within("flush", 5 * SEC, b.flush()).await;
    for r in 0..4 {
        assert_eq!(sink_b.versions(&format!("c{r}")), vec![0, 1, 2]);
    }
    // Each replayed change keeps the identity it had before the crash: the outbox's id (kept
    // in its directory) and the seq it was accepted with.
    let id = a.outbox().id;
    assert_eq!(b.outbox().id, id);
    let mut ids: Vec<String> = sink_b
        .applied()
        .iter()
        .map(|c| c.change_id.clone())
        .collect();
    ids.sort_by_key(|k| k.rsplit(':').next().unwrap().parse::<u64>().unwrap());
    assert_eq!(
        ids,
        (1..=12)
            .map(|seq| format!("{id}:{seq}"))
            .collect::<Vec<_>>()
    );
    let other = TempDir::new("crash-other");
    let c = start(
        on_disk(&other, json!({})),
        TestHost::new(),
        sinks![Arc::new(SwitchSink::default())],
    );
    assert_ne!(c.outbox().id, id, "another outbox directory, another id");
    c.stop(SEC).await;
    b.stop(SEC).await;
    a.stop(Duration::from_millis(50)).await;
}

/// stop(0) right after pushing: the changes were never routed, yet they are kept for the next
/// start and B delivers them.
#[tokio::test(start_paused = true)]
async fn changes_pushed_right_before_an_immediate_stop_are_replayed() {
    let dir = TempDir::new("stop-zero");
    let options = on_disk(&dir, json!({ "lingerMs": 0 }));
    let sink_a = Arc::new(SwitchSink::default());
    sink_a.set_down(true);
    let a = start(options.clone(), TestHost::new(), sinks![sink_a]);
    for i in 0..6 {
        push(&a, "users", Op::Inserted, rec(&format!("z{i}"), json!({})));
    }
    let report = a.stop(Duration::ZERO).await;
    assert!(!report.drained);
    drop(a);

    let sink_b = Arc::new(SwitchSink::default());
    let b = start(options, TestHost::new(), sinks![sink_b]);
    assert_eq!(b.outbox().replayed, 6);
    within("flush", 5 * SEC, b.flush()).await;
    assert_eq!(sink_b.applied().len(), 6);
    b.stop(SEC).await;
}

/// Every change given up by stop() is reported with ERR_STOPPED, also those the router had not
/// handed to a lane yet when the deadline passed.
#[tokio::test(start_paused = true)]
async fn an_immediate_stop_reports_every_change_it_abandons() {
    let host = TestHost::new();
    let sink = Arc::new(SwitchSink::default());
    sink.set_down(true);
    let engine = start(
        one_replicator(json!(["users"]), json!({ "lingerMs": 0 })),
        host.clone(),
        sinks![sink],
    );
    for i in 0..6 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("z{i}"), json!({})),
        );
    }
    let report = engine.stop(Duration::ZERO).await;
    assert!(!report.drained);
    let outcomes = host.outcomes();
    assert_eq!(
        outcomes.len(),
        6,
        "every pushed change needs an outcome: {outcomes:?}"
    );
    assert_stopped(&outcomes, false);
    assert_eq!(report.abandoned, 6, "{report:?}");
}

// =============================================================================================
// Outbox: one engine per directory

/// A second engine on a directory in use fails with a Config error naming `outbox.dir`; once
/// the first is stopped and gone, the directory can be opened again.
#[tokio::test]
async fn a_second_engine_on_a_directory_in_use_is_refused() {
    let dir = TempDir::new("in-use");
    let options = on_disk(&dir, json!({}));
    let a = start(
        options.clone(),
        TestHost::new(),
        sinks![Arc::new(SwitchSink::default())],
    );
    let second = Engine::start_with_sinks(
        config(options.clone()),
        TestHost::new(),
        sinks![Arc::new(SwitchSink::default())],
    );
    match second {
        Err(EngineError::Config(e)) => {
            assert_eq!(e.path, "outbox.dir", "{e}");
            assert!(e.reason.contains("in use"), "{e}");
            assert!(e.reason.contains(&dir.dir()), "names the directory: {e}");
            assert!(!e.hint.is_empty());
            assert_eq!(EngineError::Config(e).code().as_str(), "ERR_CONFIG");
        }
        Err(other) => panic!("expected a Config error, got {other}"),
        Ok(_) => panic!("two engines opened the same outbox directory"),
    }
    a.stop(SEC).await;
    drop(a);
    let sink = Arc::new(SwitchSink::default());
    let b = start(options, TestHost::new(), sinks![sink]);
    push(&b, "users", Op::Inserted, rec("a", json!({})));
    within("flush", 5 * SEC, b.flush()).await;
    assert_eq!(sink.applied().len(), 1);
    b.stop(SEC).await;
}

/// After stop() has returned, the directory is free for a new engine (a new plugin instance),
/// even while the stopped one is still referenced (in Node it lives until garbage collection).
#[tokio::test]

async fn stop_releases_the_outbox_directory() {
    let dir = TempDir::new("release");
    let options = on_disk(&dir, json!({}));
    let a = start(
        options.clone(),
        TestHost::new(),
        sinks![Arc::new(SwitchSink::default())],
    );
    push(&a, "users", Op::Inserted, rec("a", json!({})));
    within("flush", 5 * SEC, a.flush()).await;
    let report = a.stop(SEC).await;
    assert!(report.drained);
    let b = Engine::start_with_sinks(
        config(options),
        TestHost::new(),
        sinks![Arc::new(SwitchSink::default())],
    );
    match b {
        Ok(b) => {
            b.stop(SEC).await;
        }
        Err(e) => panic!("a stopped engine still holds the outbox directory: {e}"),
    }
    drop(a);
}

/// Settled changes do not pile up on disk: with small segments, sealed segments are deleted as
/// the watermark passes them while the engine runs.
#[tokio::test]
async fn settled_segments_are_compacted_while_running() {
    let dir = TempDir::new("compact");
    let options = on_disk(&dir, json!({}));
    let mut options = options;
    options["outbox"]["segmentBytes"] = json!(4096);
    let sink = Arc::new(SwitchSink::default());
    let engine = start(options, TestHost::new(), sinks![sink]);
    let pad = "x".repeat(100);
    for i in 0..400 {
        push(
            &engine,
            "users",
            Op::Inserted,
            rec(&format!("s{i}"), json!({ "pad": pad })),
        );
    }
    let peak = engine.outbox().segments;
    assert!(
        peak >= 10,
        "400 changes of ~140 bytes in 4 KiB segments: {peak}"
    );
    within("flush", 10 * SEC, engine.flush()).await;
    assert_eq!(sink.applied().len(), 400);
    // The compactor runs on its own thread every 200 ms (real time).
    wait_for("sealed segments deleted", 10 * SEC, || {
        engine.outbox().segments <= 1
    })
    .await;
    assert_eq!(engine.outbox().pending, 0);
    assert_eq!(persisted_watermark(dir.path()), 401);
    engine.stop(SEC).await;
}

// =============================================================================================
// Outbox: `only` across a restart

/// A change pushed for one replicator is replayed to that replicator only.
#[tokio::test(start_paused = true)]
async fn only_survives_replay() {
    let dir = TempDir::new("only");
    let options = replicators(&dir, &["x", "y"]);
    let (xa, ya) = (
        Arc::new(SwitchSink::default()),
        Arc::new(SwitchSink::default()),
    );
    xa.set_down(true);
    ya.set_down(true);
    let a = start(options.clone(), TestHost::new(), sinks![xa, ya]);
    push(&a, "users", Op::Inserted, rec("all", json!({})));
    push_opts(
        &a,
        Op::Inserted,
        rec("for-x", json!({})),
        PushOptions {
            only: Some("x"),
            ..Default::default()
        },
    );
    push_opts(
        &a,
        Op::Inserted,
        rec("for-y", json!({})),
        PushOptions {
            only: Some("y"),
            ..Default::default()
        },
    );
    wait_for("tried", 5 * SEC, || {
        xa.call_count() > 0 && ya.call_count() > 0
    })
    .await;
    a.stop(Duration::from_millis(50)).await;
    drop(a);

    let (xb, yb) = (
        Arc::new(SwitchSink::default()),
        Arc::new(SwitchSink::default()),
    );
    let b = start(options, TestHost::new(), sinks![xb, yb]);
    assert_eq!(b.outbox().replayed, 3);
    within("flush", 5 * SEC, b.flush()).await;
    let ids =
        |s: &SwitchSink| -> HashSet<String> { s.applied().into_iter().map(|c| c.id).collect() };
    assert_eq!(ids(&xb), HashSet::from(["all".into(), "for-x".into()]));
    assert_eq!(ids(&yb), HashSet::from(["all".into(), "for-y".into()]));
    assert_eq!(b.outbox().pending, 0);
    b.stop(SEC).await;
}

/// A replayed change meant only for a replicator that is no longer configured is dropped:
/// nobody else gets it, flush does not hang, and it is not replayed again.
#[tokio::test(start_paused = true)]
async fn a_replayed_change_for_a_removed_replicator_is_dropped() {
    let dir = TempDir::new("only-removed");
    let (xa, ya) = (
        Arc::new(SwitchSink::default()),
        Arc::new(SwitchSink::default()),
    );
    xa.set_down(true);
    ya.set_down(true);
    let a = start(
        replicators(&dir, &["x", "y"]),
        TestHost::new(),
        sinks![xa, ya],
    );
    push_opts(
        &a,
        Op::Inserted,
        rec("for-x", json!({})),
        PushOptions {
            only: Some("x"),
            ..Default::default()
        },
    );
    push(&a, "users", Op::Inserted, rec("all", json!({})));
    wait_for("tried", 5 * SEC, || {
        xa.call_count() > 0 && ya.call_count() > 0
    })
    .await;
    a.stop(Duration::from_millis(50)).await;
    drop(a);

    // x is gone from the configuration.
    let host = TestHost::new();
    let yb = Arc::new(SwitchSink::default());
    let b = start(replicators(&dir, &["y"]), host.clone(), sinks![yb]);
    assert_eq!(b.outbox().replayed, 2);
    within(
        "flush with a change for a removed replicator",
        5 * SEC,
        b.flush(),
    )
    .await;
    let ids: Vec<String> = yb.applied().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec!["all".to_string()]);
    assert!(host
        .for_id("for-x")
        .iter()
        .all(|o| o.status != OutcomeStatus::Replicated));
    assert_eq!(b.outbox().pending, 0);
    assert_eq!(b.pending(), 0);
    b.stop(SEC).await;
    drop(b);

    let yc = Arc::new(SwitchSink::default());
    let c = start(replicators(&dir, &["y"]), TestHost::new(), sinks![yc]);
    assert_eq!(c.outbox().replayed, 0);
    c.stop(SEC).await;
}

// =============================================================================================
// Dead letters

/// One record of a batch rejected for good: only it becomes a dead letter (with everything
/// needed to understand and retry it), the rest is delivered. A retry while the destination
/// still rejects it keeps the same dead letter; after the fix, a retry delivers it and the
/// list is empty.
async fn dead_letter_case(per_item: bool) {
    let host = TestHost::new();
    let sink = Arc::new(SwitchSink {
        per_item,
        ..Default::default()
    });
    sink.set_rejecting(true);
    let engine = start(
        one_replicator(
            json!({ "users": "people" }),
            json!({ "batchSize": 10, "concurrency": 1, "lingerMs": 5, "maxRetries": 3, "retryDelay": 10 }),
        ),
        host.clone(),
        sinks![sink],
    );
    for i in 0..5 {
        let extra = if i == 2 {
            json!({ "name": "bad", REJECT: true })
        } else {
            json!({ "name": "ok" })
        };
        push(&engine, "users", Op::Inserted, rec(&format!("u{i}"), extra));
    }
    within("flush", 10 * SEC, engine.flush()).await;

    let delivered: Vec<String> = sink.applied().into_iter().map(|c| c.id).collect();
    assert_eq!(
        delivered,
        vec!["u0", "u1", "u3", "u4"],
        "per_item={per_item}"
    );
    let failed = host.one_for("u2");
    assert_eq!(failed.status, OutcomeStatus::Failed);
    assert_eq!(failed.code, Some("ERR_SINK_REJECTED"));
    let (total, letters) = engine.dead_letters(None, 10, 0);
    assert_eq!(total, 1);
    let dl = &letters[0];
    assert_eq!(failed.dead_letter_id, Some(dl.id));
    assert_eq!(dl.replicator, "r");
    assert_eq!(dl.resource_name, "users");
    assert_eq!(dl.destination, "people");
    assert_eq!(dl.operation, Op::Inserted);
    assert_eq!(dl.record_id, "u2");
    assert_eq!(dl.data, json!({ "id": "u2", "name": "bad", REJECT: true }));
    assert!(dl.error.contains("rejected"), "{}", dl.error);
    assert_eq!(dl.code, "ERR_SINK_REJECTED");
    assert!(dl.attempts >= 1, "{dl:?}");
    assert_eq!(dl.seq, 3, "the third change pushed");
    assert!(
        dl.failed_at.len() == 24 && dl.failed_at.ends_with('Z'),
        "ISO 8601: {}",
        dl.failed_at
    );
    assert_eq!(engine.dead_letters(Some("r"), 10, 0).0, 1);
    assert_eq!(engine.dead_letters(Some("other"), 10, 0).0, 0);
    assert_eq!(engine.dead_letters(None, 10, 1).1.len(), 0, "offset");
    assert_eq!(engine.dead_letter_count(), 1);
    let stats = &engine.stats()[0];
    assert_eq!(
        (stats.delivered, stats.failed, stats.dead_lettered),
        (4, 1, 1)
    );

    // Retried while the destination still rejects it: the same dead letter, updated.
    assert_eq!(engine.retry_dead_letters(None, None, Some(7)).unwrap(), 1);
    within("flush", 10 * SEC, engine.flush()).await;
    let again: Vec<Outcome> = host
        .for_id("u2")
        .into_iter()
        .filter(|o| o.ticket == Some(7))
        .collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].status, OutcomeStatus::Failed);
    assert_eq!(again[0].dead_letter_id, Some(dl.id));
    let (total, letters) = engine.dead_letters(None, 10, 0);
    assert_eq!(total, 1);
    assert_eq!(letters[0].id, dl.id);
    assert_eq!(letters[0].seq, dl.seq);
    assert_eq!(
        engine.stats()[0].dead_lettered,
        1,
        "a failed retry is not a new dead letter"
    );

    // Fixed: the retry delivers it.
    sink.set_rejecting(false);
    assert_eq!(
        engine
            .retry_dead_letters(Some(&[dl.id]), Some("r"), Some(8))
            .unwrap(),
        1
    );
    within("flush", 10 * SEC, engine.flush()).await;
    let ok: Vec<Outcome> = host
        .for_id("u2")
        .into_iter()
        .filter(|o| o.ticket == Some(8))
        .collect();
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].status, OutcomeStatus::Replicated);
    assert_eq!(ok[0].dead_letter_id, Some(dl.id));
    let written = sink.applied_for("u2");
    assert_eq!(written.len(), 1);
    assert_eq!(
        written[0].change_id,
        format!("{}:{}", engine.outbox().id, dl.seq),
        "a re-sent dead letter is the same change: the same identity"
    );
    assert_eq!(written[0].dest, "people");
    assert_eq!(written[0].data["name"], "bad");
    assert_eq!(engine.dead_letters(None, 10, 0).0, 0);
    assert_eq!(engine.dead_letter_count(), 0);
    assert!(matches!(
        engine.retry_dead_letters(None, Some("nope"), None),
        Err(EngineError::UnknownReplicator(_))
    ));
    assert_eq!(engine.retry_dead_letters(None, None, None).unwrap(), 0);
    engine.stop(SEC).await;
}

#[tokio::test(start_paused = true)]
async fn a_rejected_record_is_dead_lettered_alone_and_retried_after_the_fix() {
    dead_letter_case(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_record_rejected_per_item_is_dead_lettered_alone_and_retried_after_the_fix() {
    dead_letter_case(true).await;
}

/// A dead letter must never overwrite a newer change of its record: a newer delivered change
/// drops it (superseded); a retry racing with a newer change is skipped as superseded and
/// never written, whether both end up in one batch or not.
#[tokio::test(start_paused = true)]
async fn a_superseded_dead_letter_is_dropped_and_never_written() {
    for batch_size in [1, 10] {
        let host = TestHost::new();
        let sink = Arc::new(SwitchSink::default());
        sink.set_rejecting(true);
        let engine = start(
            one_replicator(
                json!(["users"]),
                json!({ "batchSize": batch_size, "concurrency": 2, "lingerMs": 0 }),
            ),
            host.clone(),
            sinks![sink],
        );
        push(
            &engine,
            "users",
            Op::Inserted,
            rec("p", json!({ "v": 1, REJECT: true })),
        );
        push(
            &engine,
            "users",
            Op::Inserted,
            rec("q", json!({ "v": 1, REJECT: true })),
        );
        within("flush", 5 * SEC, engine.flush()).await;
        assert_eq!(engine.dead_letter_count(), 2);
        let q_letter = engine
            .dead_letters(None, 10, 0)
            .1
            .into_iter()
            .find(|d| d.record_id == "q")
            .unwrap();
        sink.set_rejecting(false);

        // p: a newer change is delivered; the old one must not come back.
        push(&engine, "users", Op::Updated, rec("p", json!({ "v": 2 })));
        within("flush", 5 * SEC, engine.flush()).await;
        let (total, left) = engine.dead_letters(None, 10, 0);
        assert_eq!(total, 1, "p's dead letter is superseded: {left:?}");
        assert_eq!(left[0].record_id, "q");
        assert_eq!(sink.versions("p"), vec![2]);

        // q: the retry is queued right behind a newer change.
        push(&engine, "users", Op::Updated, rec("q", json!({ "v": 2 })));
        assert_eq!(
            engine
                .retry_dead_letters(Some(&[q_letter.id]), None, Some(9))
                .unwrap(),
            1
        );
        within("flush", 5 * SEC, engine.flush()).await;
        let resend: Vec<Outcome> = host
            .for_id("q")
            .into_iter()
            .filter(|o| o.ticket == Some(9))
            .collect();
        assert_eq!(resend.len(), 1, "batchSize {batch_size}: {resend:?}");
        assert_eq!(resend[0].status, OutcomeStatus::Skipped);
        assert_eq!(resend[0].reason, Some("superseded"));
        assert_eq!(resend[0].dead_letter_id, Some(q_letter.id));
        assert_eq!(
            sink.versions("q"),
            vec![2],
            "batchSize {batch_size}: the old version was written"
        );
        assert_eq!(sink.current("q").unwrap()["v"], 2);
        assert_eq!(engine.dead_letter_count(), 0);
        engine.stop(SEC).await;
    }
}

/// Dead letters are kept on disk next to the outbox: after a restart they are listed again,
/// can be retried or discarded, and what was retried or discarded stays gone.
#[tokio::test(start_paused = true)]
async fn dead_letters_survive_a_restart_and_can_be_retried_or_discarded() {
    let dir = TempDir::new("dead-letters");
    let options = on_disk(&dir, json!({ "lingerMs": 0, "concurrency": 2 }));
    let host_a = TestHost::new();
    let sink_a = Arc::new(SwitchSink::default());
    sink_a.set_rejecting(true);
    let a = start(options.clone(), host_a.clone(), sinks![sink_a]);
    push(
        &a,
        "users",
        Op::Inserted,
        rec("a", json!({ "v": 1, REJECT: true })),
    );
    push(
        &a,
        "users",
        Op::Inserted,
        rec("b", json!({ "v": 1, REJECT: true })),
    );
    push(&a, "users", Op::Inserted, rec("c", json!({ "v": 1 })));
    within("flush", 5 * SEC, a.flush()).await;
    let (total, before) = a.dead_letters(None, 10, 0);
    assert_eq!(total, 2);
    assert_eq!(a.outbox().pending, 0, "a dead letter settles its change");
    a.stop(SEC).await;
    drop(a);

    let host_b = TestHost::new();
    let sink_b = Arc::new(SwitchSink::default());
    let b = start(options.clone(), host_b.clone(), sinks![sink_b]);
    assert_eq!(
        b.outbox().replayed,
        0,
        "dead-lettered changes are not replayed"
    );
    let (total, after) = b.dead_letters(None, 10, 0);
    assert_eq!(total, 2);
    for (x, y) in before.iter().zip(&after) {
        assert_eq!(
            (x.id, &x.record_id, &x.data, x.seq, &x.code),
            (y.id, &y.record_id, &y.data, y.seq, &y.code)
        );
    }
    let id_of = |r: &str| after.iter().find(|d| d.record_id == r).unwrap().id;
    let (a_id, b_id) = (id_of("a"), id_of("b"));
    assert_eq!(b.retry_dead_letters(Some(&[a_id]), None, None).unwrap(), 1);
    assert_eq!(b.discard_dead_letters(&[b_id]), 1);
    assert_eq!(b.discard_dead_letters(&[b_id]), 0, "already gone");
    within("flush", 5 * SEC, b.flush()).await;
    let ids: Vec<String> = sink_b.applied().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec!["a".to_string()]);
    assert_eq!(b.dead_letter_count(), 0);
    b.stop(SEC).await;
    drop(b);

    let c = start(
        options,
        TestHost::new(),
        sinks![Arc::new(SwitchSink::default())],
    );
    assert_eq!(c.dead_letters(None, 10, 0).0, 0);
    assert_eq!(c.outbox().replayed, 0);
    c.stop(SEC).await;
}

/// A change already dead-lettered before a stop is settled: when the restart replays the
/// changes around it (another change was still owed), it must not become a second dead letter.
#[tokio::test(start_paused = true)]
async fn replay_does_not_dead_letter_a_change_twice() {
    let dir = TempDir::new("dl-replay");
    let lanes = 2;
    let stuck = ids_in_lane("s", 0, lanes, 1).remove(0);
    let bad = ids_in_lane("b", 1, lanes, 1).remove(0);
    let options = on_disk(&dir, json!({ "lingerMs": 0, "concurrency": lanes }));
    let sink_a = Arc::new(SwitchSink::default());
    sink_a.set_rejecting(true);
    sink_a.stick(&stuck);
    let a = start(options.clone(), TestHost::new(), sinks![sink_a]);
    push(&a, "users", Op::Inserted, rec(&stuck, json!({})));
    push(
        &a,
        "users",
        Op::Inserted,
        rec(&bad, json!({ REJECT: true })),
    );
    wait_for("dead-lettered", 5 * SEC, || a.dead_letter_count() == 1).await;
    a.stop(Duration::from_millis(50)).await;
    drop(a);

    // The destination still rejects the bad record; the stuck one goes through now.
    let host = TestHost::new();
    let sink_b = Arc::new(SwitchSink::default());
    sink_b.set_rejecting(true);
    let b = start(options, host.clone(), sinks![sink_b]);
    within("flush", 5 * SEC, b.flush()).await;
    assert_eq!(sink_b.applied_for(&stuck).len(), 1);
    let (total, letters) = b.dead_letters(None, 10, 0);
    assert_eq!(total, 1, "one change, one dead letter: {letters:?}");
    // Replay is from the watermark (the oldest unsettled change), so a settled change above it
    // is replayed too: harmless, because a change that fails again keeps its one dead letter.
    assert_eq!(b.outbox().replayed, 2);
    b.stop(SEC).await;
}

/// Dead letters of a replicator that is no longer configured stay listed (and can be
/// discarded), but cannot be re-sent: `retry_dead_letters` returns how many it queued, so 0.
#[tokio::test(start_paused = true)]
async fn retry_counts_only_the_dead_letters_it_queues() {
    let dir = TempDir::new("dl-removed");
    let (xa, ya) = (
        Arc::new(SwitchSink::default()),
        Arc::new(SwitchSink::default()),
    );
    xa.set_rejecting(true);
    let a = start(
        replicators(&dir, &["x", "y"]),
        TestHost::new(),
        sinks![xa, ya],
    );
    push(&a, "users", Op::Inserted, rec("a", json!({ REJECT: true })));
    within("flush", 5 * SEC, a.flush()).await;
    assert_eq!(a.dead_letters(Some("x"), 10, 0).0, 1);
    a.stop(SEC).await;
    drop(a);

    let yb = Arc::new(SwitchSink::default());
    let b = start(replicators(&dir, &["y"]), TestHost::new(), sinks![yb]);
    let (total, letters) = b.dead_letters(None, 10, 0);
    assert_eq!(total, 1, "kept: {letters:?}");
    let queued = b.retry_dead_letters(None, None, None).unwrap();
    within("flush", 5 * SEC, b.flush()).await;
    assert!(yb.applied().is_empty(), "not re-sent to another replicator");
    assert_eq!(b.dead_letter_count(), 1);
    assert_eq!(queued, 0, "nothing could be queued");
    assert_eq!(b.discard_dead_letters(&[letters[0].id]), 1);
    b.stop(SEC).await;
}

// =============================================================================================
// Circuit breaker

/// A destination down for two minutes while changes keep coming: nothing fails or is
/// dead-lettered, health is `open`, the destination only sees the first attempts and spaced
/// probes; once it is back everything is delivered, per record in order, and health is
/// `healthy` again.
#[tokio::test(start_paused = true)]
async fn an_outage_holds_changes_and_probes_until_the_destination_returns() {
    let host = TestHost::new();
    let sink = Arc::new(SwitchSink::default());
    sink.set_down(true);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({
                "concurrency": 2, "batchSize": 10, "lingerMs": 0,
                "maxRetries": 3, "retryDelay": 100, "maxRetryDelay": 1000,
                "circuitBreaker": { "failureThreshold": 3, "resetTimeout": 1000, "maxResetTimeout": 8000 }
            }),
        ),
        host.clone(),
        sinks![sink],
    );
    const RECORDS: u64 = 4;
    const VERSIONS: u64 = 12;
    let t0 = Instant::now();
    for v in 0..VERSIONS {
        for r in 0..RECORDS {
            push(
                &engine,
                "users",
                version_op(v),
                rec(&format!("r{r}"), json!({ "v": v })),
            );
        }
        tokio::time::sleep(10 * SEC).await;
        let s = &engine.stats()[0];
        assert_eq!(s.health, "open", "at {:?}: {s:?}", t0.elapsed());
        assert_eq!((s.failed, s.dead_lettered, s.delivered), (0, 0, 0), "{s:?}");
        assert!(s.breaker.next_probe_in_ms.is_some());
    }
    let outage = t0.elapsed();
    assert!(outage >= 120 * SEC);
    assert!(host.outcomes().is_empty(), "{:?}", host.outcomes());
    assert_eq!(engine.dead_letter_count(), 0);
    assert_eq!(engine.stats()[0].queued, RECORDS * VERSIONS);
    // The changes that used their retry budget meanwhile were reported held, each once.
    let held = host.held();
    assert!(
        !held.is_empty(),
        "nothing reported held during a 120 s outage"
    );
    let mut keys: Vec<String> = held
        .iter()
        .map(|h| format!("{} {}", h.record_id, h.data["v"]))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        held.len(),
        "each held change reported once: {keys:?}"
    );
    assert!(
        held.iter()
            .all(|h| h.attempts >= 3 && h.error.contains("down")),
        "{held:?}"
    );
    assert_eq!(engine.stats()[0].held, held.len() as u64);

    // Not hammered: a few attempts before the circuit opened, then probes with doubling delays
    // (1, 2, 4, 8, 8, ... s): about 20 calls in 120 s, and at most one every 8 s at the end.
    let times = sink.call_times();
    assert!(
        (5..=30).contains(&times.len()),
        "{} writes during a {outage:?} outage",
        times.len()
    );
    let late: Vec<Instant> = times
        .iter()
        .copied()
        .filter(|t| *t >= t0 + 30 * SEC)
        .collect();
    assert!(late.len() <= 12, "{} writes in the last 90 s", late.len());
    for w in late.windows(2) {
        assert!(w[1] - w[0] >= 4 * SEC, "probes {:?} apart", w[1] - w[0]);
    }

    sink.set_down(false);
    within("flush after the outage", 30 * SEC, engine.flush()).await;
    assert!(
        t0.elapsed() - outage <= 9 * SEC,
        "delivered at the next probe"
    );
    for r in 0..RECORDS {
        let id = format!("r{r}");
        assert_eq!(
            sink.versions(&id),
            (0..VERSIONS).collect::<Vec<_>>(),
            "order of {id}"
        );
    }
    let total = (RECORDS * VERSIONS) as usize;
    assert_eq!(host.count(OutcomeStatus::Replicated), total);
    assert_eq!(host.outcomes().len(), total);
    let s = &engine.stats()[0];
    assert_eq!(s.health, "healthy", "{s:?}");
    assert_eq!(s.breaker.consecutive_failures, 0);
    assert_eq!((s.failed, s.dead_lettered, s.queued), (0, 0, 0));
    assert_eq!(s.delivered, total as u64);
    engine.stop(SEC).await;
}

/// While the breaker holds changes through an outage, the stats say why: `lastError` carries
/// the destination's error (no change has failed yet, so no outcome carried it).
#[tokio::test(start_paused = true)]
async fn stats_name_the_error_of_an_outage_in_progress() {
    let sink = Arc::new(SwitchSink::default());
    sink.set_down(true);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({ "lingerMs": 0, "retryDelay": 100, "circuitBreaker": { "failureThreshold": 2 } }),
        ),
        TestHost::new(),
        sinks![sink],
    );
    push(&engine, "users", Op::Inserted, rec("a", json!({})));
    tokio::time::sleep(10 * SEC).await;
    let s = &engine.stats()[0];
    assert_eq!(s.health, "open");
    assert_eq!(
        s.last_error.as_deref(),
        Some("destination is down"),
        "{s:?}"
    );
    engine.stop(Duration::from_millis(50)).await;
}

/// With `circuitBreaker: false` the same outage fails the changes once maxRetries attempts are
/// spent (dead letters, health `degraded`); retried after the destination is back they are
/// delivered in per-record order.
#[tokio::test(start_paused = true)]
async fn without_the_breaker_an_outage_fails_changes_after_max_retries() {
    let host = TestHost::new();
    let sink = Arc::new(SwitchSink::default());
    sink.set_down(true);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({
                "concurrency": 1, "batchSize": 10, "lingerMs": 0,
                "maxRetries": 3, "retryDelay": 100, "maxRetryDelay": 400,
                "circuitBreaker": false
            }),
        ),
        host.clone(),
        sinks![sink],
    );
    for v in 0..2 {
        for id in ["a", "b"] {
            push(&engine, "users", version_op(v), rec(id, json!({ "v": v })));
        }
    }
    within("flush", 10 * SEC, engine.flush()).await;
    let outcomes = host.outcomes();
    assert_eq!(outcomes.len(), 4);
    for o in &outcomes {
        assert_eq!(o.status, OutcomeStatus::Failed, "{o:?}");
        assert_eq!(o.code, Some("ERR_SINK_UNAVAILABLE"));
        assert_eq!(o.attempts, 3);
        assert!(o.dead_letter_id.is_some());
    }
    assert_eq!(sink.call_count(), 3, "one batch, three attempts");
    assert_eq!(engine.dead_letter_count(), 4);
    let s = &engine.stats()[0];
    assert_eq!((s.failed, s.dead_lettered), (4, 4));
    assert_eq!(s.health, "degraded", "{s:?}");

    sink.set_down(false);
    assert_eq!(engine.retry_dead_letters(None, None, None).unwrap(), 4);
    within("flush", 10 * SEC, engine.flush()).await;
    assert_eq!(sink.versions("a"), vec![0, 1]);
    assert_eq!(sink.versions("b"), vec![0, 1]);
    assert_eq!(engine.dead_letter_count(), 0);
    assert_eq!(engine.stats()[0].health, "healthy");
}

/// One lane, a destination that is down, and `holdTimeout` 10 s (probes 1–2 s apart).
fn held_for_ten_seconds(batch_size: usize) -> (Arc<TestHost>, Arc<SwitchSink>, Engine) {
    let host = TestHost::new();
    let sink = Arc::new(SwitchSink::default());
    sink.set_down(true);
    let engine = start(
        one_replicator(
            json!(["users"]),
            json!({
                "concurrency": 1, "batchSize": batch_size, "lingerMs": 0,
                "maxRetries": 3, "retryDelay": 100,
                "circuitBreaker": { "failureThreshold": 2, "resetTimeout": 1000, "maxResetTimeout": 2000, "holdTimeout": 10000 }
            }),
        ),
        host.clone(),
        sinks![sink.clone()],
    );
    (host, sink, engine)
}

/// A destination down for longer than `holdTimeout`: the held changes are dead-lettered (not
/// before the hold time), and can be retried once it is back.
#[tokio::test(start_paused = true)]
async fn an_outage_longer_than_hold_timeout_dead_letters_the_held_changes() {
    let (host, sink, engine) = held_for_ten_seconds(10);
    let t0 = Instant::now();
    for id in ["a", "b", "c"] {
        push(&engine, "users", Op::Inserted, rec(id, json!({ "v": 0 })));
    }
    tokio::time::sleep(9 * SEC).await;
    assert!(
        host.outcomes().is_empty(),
        "held, not failed, within holdTimeout"
    );
    assert_eq!(engine.dead_letter_count(), 0);
    assert_eq!(engine.stats()[0].health, "open");

    within("hold timeout", 60 * SEC, engine.flush()).await;
    let took = t0.elapsed();
    assert!(took >= 10 * SEC && took < 20 * SEC, "failed after {took:?}");
    let outcomes = host.outcomes();
    assert_eq!(outcomes.len(), 3);
    for o in &outcomes {
        assert_eq!(
            (o.status, o.code),
            (OutcomeStatus::Failed, Some("ERR_SINK_UNAVAILABLE")),
            "{o:?}"
        );
    }
    let (total, letters) = engine.dead_letters(None, 10, 0);
    assert_eq!(total, 3);
    assert!(letters.iter().all(|d| d.code == "ERR_SINK_UNAVAILABLE"));
    assert_eq!(engine.stats()[0].dead_lettered, 3);

    sink.set_down(false);
    assert_eq!(engine.retry_dead_letters(None, None, None).unwrap(), 3);
    within("flush after recovery", 30 * SEC, engine.flush()).await;
    assert_eq!(sink.applied().len(), 3);
    assert_eq!(engine.dead_letter_count(), 0);
    assert_eq!(engine.stats()[0].health, "healthy");
}

/// `holdTimeout` bounds how long a *change* waits for a destination that is down, so changes
/// queued behind the held batch in the same lane are dead-lettered around the same time, not
/// one hold period after another.
#[tokio::test(start_paused = true)]
async fn hold_timeout_bounds_the_wait_of_queued_changes_too() {
    let (host, _sink, engine) = held_for_ten_seconds(1);
    for id in ["a", "b", "c", "d"] {
        push(&engine, "users", Op::Inserted, rec(id, json!({})));
    }
    // One hold period plus the probes it takes to notice (maxRetries probes 2 s apart).
    tokio::time::sleep(25 * SEC).await;
    let failed: Vec<String> = host
        .with_status(OutcomeStatus::Failed)
        .into_iter()
        .map(|o| o.record_id)
        .collect();
    assert_eq!(
        failed.len(),
        4,
        "dead-lettered after 25 s (holdTimeout 10 s): {failed:?}"
    );
    engine.stop(Duration::from_millis(50)).await;
}

// =============================================================================================
// Full sync: snapshot vs live

/// A snapshot read before a live change of its record is dropped (Skipped, `superseded`); the
/// destination keeps the live value. A snapshot of a record that did not change since its read
/// is delivered, and so is one read after the live change.
#[tokio::test]
async fn a_snapshot_older_than_a_live_change_is_dropped() {
    let host = TestHost::new();
    let sink = Arc::new(SwitchSink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({ "lingerMs": 0 })),
        host.clone(),
        sinks![sink],
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "orig" })),
    );
    push(
        &engine,
        "users",
        Op::Inserted,
        rec("b", json!({ "name": "orig" })),
    );
    within("flush", 5 * SEC, engine.flush()).await;

    engine.begin_sync();
    let read_at = engine.last_seq();
    push(
        &engine,
        "users",
        Op::Updated,
        rec("a", json!({ "name": "live" })),
    );
    let snapshot = |id: &str, name: &str, after: u64, ticket: u64| {
        push_opts(
            &engine,
            Op::Updated,
            rec(id, json!({ "name": name })),
            PushOptions {
                ticket: Some(ticket),
                snapshot_after: Some(after),
                ..Default::default()
            },
        );
    };
    snapshot("a", "stale snapshot", read_at, 1);
    snapshot("b", "snapshot", read_at, 2);
    within("flush", 5 * SEC, engine.flush()).await;

    let stale: Vec<Outcome> = host
        .outcomes()
        .into_iter()
        .filter(|o| o.ticket == Some(1))
        .collect();
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(stale[0].status, OutcomeStatus::Skipped);
    assert_eq!(stale[0].reason, Some("superseded"));
    assert_eq!(stale[0].record_id, "a");
    assert_eq!(sink.current("a").unwrap()["name"], "live");
    assert!(sink
        .applied_for("a")
        .iter()
        .all(|c| c.data["name"] != "stale snapshot"));
    let fresh: Vec<Outcome> = host
        .outcomes()
        .into_iter()
        .filter(|o| o.ticket == Some(2))
        .collect();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].status, OutcomeStatus::Replicated);
    assert_eq!(sink.current("b").unwrap()["name"], "snapshot");

    // Read after the live change: nothing newer, delivered.
    let read_again = engine.last_seq();
    snapshot("a", "new snapshot", read_again, 3);
    within("flush", 5 * SEC, engine.flush()).await;
    engine.end_sync();
    assert_eq!(sink.current("a").unwrap()["name"], "new snapshot");
    engine.stop(SEC).await;
}

/// The guard must not depend on when end_sync() is called relative to the router: snapshots
/// pushed inside the sync and routed after end_sync() (the router had a backlog; the plugin ends
/// a failed sync without flushing) are still checked against the live changes before them.
#[tokio::test]

async fn snapshots_routed_after_end_sync_are_still_checked() {
    let host = TestHost::new();
    let sink = Arc::new(SwitchSink::default());
    let engine = start(
        one_replicator(json!(["users"]), json!({ "lingerMs": 0 })),
        host.clone(),
        sinks![sink],
    );
    engine.begin_sync();
    let read_at = engine.last_seq();
    push(
        &engine,
        "users",
        Op::Updated,
        rec("a", json!({ "name": "live" })),
    );
    // A backlog the router takes in more than one round (it routes at most 4096 at a time).
    for i in 0..5000 {
        push(
            &engine,
            "unrouted",
            Op::Inserted,
            rec(&format!("f{i}"), json!({})),
        );
    }
    push_opts(
        &engine,
        Op::Updated,
        rec("a", json!({ "name": "stale snapshot" })),
        PushOptions {
            ticket: Some(1),
            snapshot_after: Some(read_at),
            ..Default::default()
        },
    );
    engine.end_sync();
    within("flush", 10 * SEC, engine.flush()).await;
    assert_eq!(sink.current("a").unwrap()["name"], "live");
    engine.stop(SEC).await;
}

/// After a crash, a replayed snapshot must not overwrite a live change of its record that was
/// delivered (and compacted out of the outbox) before the crash.
#[tokio::test]

async fn a_replayed_snapshot_cannot_overwrite_a_live_change_delivered_before_the_crash() {
    let dir = TempDir::new("snapshot-crash");
    let copy = TempDir::new("snapshot-crash-copy");
    let sink_a = Arc::new(SwitchSink::default());
    let a = start(
        on_disk(&dir, json!({ "lingerMs": 0 })),
        TestHost::new(),
        sinks![sink_a],
    );
    push(
        &a,
        "users",
        Op::Inserted,
        rec("a", json!({ "name": "orig" })),
    );
    a.begin_sync();
    let read_at = a.last_seq();
    push(
        &a,
        "users",
        Op::Updated,
        rec("a", json!({ "name": "live" })),
    );
    within("flush", 5 * SEC, a.flush()).await;
    assert_eq!(sink_a.current("a").unwrap()["name"], "live");
    // The compactor runs every 200 ms, but a running sync pins the watermark at its start, so
    // the live change stays in the log.
    std::thread::sleep(Duration::from_millis(500));
    assert!(persisted_watermark(dir.path()) <= read_at + 1);
    // The sync pushes the snapshot it read before the live change, and the process dies before
    // the router gets to it (the copy is taken from inside this same synchronous stretch).
    push_opts(
        &a,
        Op::Updated,
        rec("a", json!({ "name": "stale snapshot" })),
        PushOptions {
            snapshot_after: Some(read_at),
            ..Default::default()
        },
    );
    crash_copy(dir.path(), &copy);
    a.stop(SEC).await;

    // The destination holds "live"; the restarted engine must not put the snapshot over it.
    let sink_b = Arc::new(SwitchSink::default());
    let b = start(
        on_disk(&copy, json!({ "lingerMs": 0 })),
        TestHost::new(),
        sinks![sink_b],
    );
    // The live change stays in the log while the sync runs: it is replayed (harmless: the same
    // value) and tells the router the snapshot is stale.
    assert_eq!(b.outbox().replayed, 2);
    within("flush", 5 * SEC, b.flush()).await;
    assert!(
        sink_b
            .applied_for("a")
            .iter()
            .all(|c| c.data["name"] == "live"),
        "the stale snapshot was written: {:?}",
        sink_b.applied_for("a")
    );
    b.stop(SEC).await;
}

// =============================================================================================
// Stats

/// While a change is stuck, `oldestPendingMs` grows and `queued` (and the outbox's pending)
/// show the depth; both drop to zero once it is delivered. Real time: the lag is measured
/// with the system clock, which virtual time does not move.
#[tokio::test]
async fn stats_show_lag_and_depth_while_a_change_is_stuck() {
    let dir = TempDir::new("stats");
    let host = TestHost::new();
    let sink = Arc::new(RecordingSink {
        hold: HashSet::from(["a".to_string()]),
        ..Default::default()
    });
    let engine = start(
        on_disk(&dir, json!({ "lingerMs": 0, "concurrency": 1 })),
        host.clone(),
        sinks![sink],
    );
    let idle = &engine.stats()[0];
    assert_eq!((idle.queued, idle.oldest_pending_ms), (0, 0));
    for v in 0..5 {
        push(&engine, "users", version_op(v), rec("a", json!({ "v": v })));
    }
    wait_for("routed", 5 * SEC, || engine.stats()[0].queued == 5).await;
    wait_for("write started", 5 * SEC, || {
        !sink.calls.lock().unwrap().is_empty()
    })
    .await;
    let first = engine.stats()[0].oldest_pending_ms;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let s = &engine.stats()[0];
    assert_eq!(s.queued, 5);
    assert!(
        s.oldest_pending_ms >= first + 100 && s.oldest_pending_ms >= 150,
        "lag {first} ms, then {} ms after 150 ms",
        s.oldest_pending_ms
    );
    assert_eq!(engine.pending(), 5);
    assert_eq!(engine.outbox().pending, 5);

    sink.release();
    within("flush", 5 * SEC, engine.flush()).await;
    let s = &engine.stats()[0];
    assert_eq!((s.queued, s.oldest_pending_ms), (0, 0));
    assert_eq!(s.delivered, 5);
    assert_eq!(engine.outbox().pending, 0);
    engine.stop(SEC).await;
}
