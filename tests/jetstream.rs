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

/// The nats-server binary (installed by the script when missing).
fn nats_bin() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/services/nats.sh"))
        .arg("--bin")
        .output()
        .expect("scripts/services/nats.sh --bin runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nats_server() -> Server {
    let bin = nats_bin();
    let port = free_port();
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

/// Runs openssl with `args` in `dir` (the TLS test's certificates).
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it.
fn certificates(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca: Vec<&str> = ["req", "-x509"]
        .into_iter()
        .chain(ec)
        .chain([
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=s3db-replicator test CA",
        ])
        .collect();
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let key = format!("{name}-key.pem");
        let csr = format!("{name}.csr");
        let req: Vec<&str> = ["req"]
            .into_iter()
            .chain(ec)
            .chain(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"])
            .collect();
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        let pem = format!("{name}.pem");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// A server that admits one NKey user, over TLS that also verifies the client's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_user_over_mutual_tls_publishes_and_delivers_and_a_wrong_seed_is_refused_unechoed()
{
    let bin = nats_bin(); // (also makes sure openssl is there)
    let files = TempDir::new("nats-tls");
    let dir = files.path();
    std::fs::create_dir_all(dir).unwrap();
    certificates(dir);
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let port = free_port();
    let store = TempDir::new("nats");
    let d = dir.display();
    std::fs::write(
        dir.join("server.conf"),
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n\
             tls {{ cert_file: \"{d}/server.pem\", key_file: \"{d}/server-key.pem\", ca_file: \"{d}/ca.pem\", verify: true }}\n\
             authorization {{ users: [ {{ nkey: {} }} ] }}\n",
            store.dir(),
            user.public_key()
        ),
    )
    .unwrap();
    let mut server = nats_server_with_config(&bin, &dir.join("server.conf"), port, store);

    let tls = json!({ "ca": format!("{d}/ca.pem"), "cert": format!("{d}/client.pem"), "key": format!("{d}/client-key.pem") });
    let mut js = jetstream_options(port, "AUTH_TEST");
    js["nkey"] = json!(seed);
    js["tls"] = tls.clone();
    let publisher = publisher(&js).await;
    let published = publisher
        .publish("users", "inserted", "u1", json!({ "id": "u1" }).to_string())
        .await
        .expect("stored over TLS as the NKey user");

    let sink = Arc::new(RecordingSink::default());
    let options = json!({
        "mode": "deliver",
        "outbox": { "jetstream": js },
        "replicators": [{ "id": "a", "driver": "s3db", "resources": ["users"], "config": { "connectionString": "memory://x" } }],
    });
    let engine = Arc::new(
        Engine::start_with_sinks(
            config(options),
            TestHost::new(),
            vec![sink.clone() as Arc<dyn Sink>],
        )
        .expect("engine starts"),
    );
    engine.start_stream_worker();
    wait_for("the change at the worker's sink", 20 * SEC, || {
        sink.changes().len() == 1
    })
    .await;
    assert_eq!(sink.changes()[0].change_id, published.identity);
    engine.stop(Duration::from_secs(5)).await;

    // Someone else's seed, no client certificate, no TLS option at all (the server asks for TLS:
    // the handshake must fail cleanly, not panic): refused, and no error carries a seed.
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    for (what, tls) in [
        ("another user's seed", tls.clone()),
        (
            "no client certificate",
            json!({ "ca": format!("{d}/ca.pem") }),
        ),
        ("no tls option (an unknown CA)", serde_json::Value::Null),
    ] {
        let mut bad = jetstream_options(port, "AUTH_TEST");
        bad["nkey"] = json!(if what == "another user's seed" {
            stranger.clone()
        } else {
            seed.clone()
        });
        bad["tls"] = tls;
        let config: JetStreamConfig =
            s3db_replicator::jetstream::parse(serde_json::from_value(bad).unwrap()).unwrap();
        let error = match Publisher::connect(config).await {
            Ok(_) => panic!("{what}: connected"),
            Err(e) => e,
        };
        assert!(
            error.contains(&format!("127.0.0.1:{port}")),
            "{what}: {error}"
        );
        assert!(
            !error.contains(&seed) && !error.contains(&stranger),
            "{what}: {error}"
        );
    }
    let _ = server.child.kill();
}

fn nats_server_with_config(bin: &str, conf: &std::path::Path, port: u16, store: TempDir) -> Server {
    let child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} starts: {e}"));
    Server { child, store, port }
}
