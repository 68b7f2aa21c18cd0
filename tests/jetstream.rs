//! The JetStream outbox at the engine level, against a nats-server this test starts itself
//! (its own loopback port and store; the binary from `scripts/services/nats.sh --bin`): changes
//! published by `Publisher` reach a delivering engine's sink with the publisher's identity, in
//! order per record, and a partition's committed offset stays below a change until every
//! destination has settled it (the offset is the acknowledgement: it is only observed here).

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use common::*;
use s3db_replicator::engine::Engine;
use s3db_replicator::jetstream::{JetStreamConfig, Published, Publisher};
use s3db_replicator::sinks::Sink;

struct Server {
    child: Child,
    store: TempDir,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.store;
    }
}

fn nats_server() -> Server {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/services/nats.sh"))
        .arg("--bin")
        .output()
        .expect("scripts/services/nats.sh --bin runs");
    let bin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = TempDir::new("nats");
    let child = Command::new(&bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} starts: {e}"));
    Server { child, store, port }
}

fn jetstream_options(port: u16, stream: &str) -> serde_json::Value {
    json!({ "url": format!("nats://127.0.0.1:{port}"), "stream": stream, "subjectPrefix": stream.to_lowercase(), "partitions": 4, "leaseTtlMs": 2000 })
}

async fn publisher(options: &serde_json::Value) -> Publisher {
    let config: JetStreamConfig =
        s3db_replicator::jetstream::parse(serde_json::from_value(options.clone()).unwrap())
            .unwrap();
    // The server may still be starting: connect waits for it (bounded).
    for _ in 0..100 {
        if let Ok(p) = Publisher::connect(config.clone()).await {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nats-server did not answer");
}

async fn committed(port: u16, stream: &str, partition: u32) -> u64 {
    let client = async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let Ok(kv) = js.get_key_value(format!("{stream}_offsets")).await else {
        return 0;
    };
    kv.get(format!("p{partition}"))
        .await
        .unwrap()
        .map_or(0, |v| std::str::from_utf8(&v).unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_on_only_past_changes_every_destination_settled() {
    let server = nats_server();
    let stream = "ENGINE_TEST";
    let js = jetstream_options(server.port, stream);
    let publisher = publisher(&js).await;
    let mut published: Vec<(String, Published)> = Vec::new();
    for i in 0..40 {
        let id = format!("u{}", i % 8);
        let json = json!({ "id": id, "n": i }).to_string();
        let p = publisher
            .publish(
                "users",
                if i < 8 { "inserted" } else { "updated" },
                &id,
                json,
            )
            .await
            .expect("stored");
        published.push((id, p));
    }
    // The worker's two destinations: `slow` holds every write of record u3 until released.
    let fast = Arc::new(RecordingSink::default());
    let slow = Arc::new(RecordingSink {
        hold: HashSet::from(["u3".to_string()]),
        ..Default::default()
    });
    let options = json!({
        "mode": "deliver",
        "outbox": { "jetstream": js },
        "replicators": [
            { "id": "fast", "driver": "s3db", "resources": ["users"], "config": { "connectionString": "memory://x" } },
            { "id": "slow", "driver": "s3db", "resources": ["users"], "config": { "connectionString": "memory://y" } },
        ],
    });
    let sinks: Vec<Arc<dyn Sink>> = vec![fast.clone(), slow.clone()];
    let engine = Arc::new(
        Engine::start_with_sinks(config(options), TestHost::new(), sinks).expect("engine starts"),
    );
    engine.start_stream_worker();

    wait_for("every change at the fast sink", 20 * SEC, || {
        fast.changes().len() == published.len()
    })
    .await;
    // Identity: the publisher's, carried through the stream.
    let identities: HashSet<String> = fast.changes().iter().map(|c| c.change_id.clone()).collect();
    let expected: HashSet<String> = published.iter().map(|(_, p)| p.identity.clone()).collect();
    assert_eq!(identities, expected);
    // Per-record order.
    for (id, changes) in fast.by_id() {
        let ns: Vec<i64> = changes
            .iter()
            .map(|c| c.data["n"].as_i64().unwrap())
            .collect();
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{id}: {ns:?}");
    }
    // u3's partition cannot move past u3's first change while `slow` holds it; the others can.
    let held = published
        .iter()
        .find(|(id, _)| id == "u3")
        .unwrap()
        .1
        .clone();
    let last_of = |partition: u32| {
        published
            .iter()
            .filter(|(_, p)| p.partition == partition)
            .map(|(_, p)| p.stream_seq)
            .max()
            .unwrap()
    };
    // `fast` has everything; `slow` holds u3 (and what shares its lane): u3's partition must
    // not be acknowledged past u3's first change, however long we wait for the commits.
    tokio::time::sleep(Duration::from_millis(600)).await; // three commit rounds: nothing to wait for
    assert!(
        committed(server.port, stream, held.partition).await < held.stream_seq,
        "the held change is not acknowledged"
    );
    assert_eq!(
        engine.outbox().partitions,
        Some(vec![0, 1, 2, 3]),
        "the only worker owns every partition"
    );
    slow.release();
    // Released: every partition is acknowledged up to its last change.
    for p in 0..4u32 {
        if !published.iter().any(|(_, x)| x.partition == p) {
            continue;
        }
        let until = tokio::time::Instant::now() + 10 * SEC;
        while committed(server.port, stream, p).await < last_of(p) {
            assert!(
                tokio::time::Instant::now() < until,
                "partition {p} committed after the release"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(slow.changes().len(), published.len());
    let report = engine.stop(10 * SEC).await;
    assert!(report.drained);
}

const SEC: Duration = Duration::from_secs(1);
