//! The engine's Prometheus metrics: one registry per engine, the counters and histograms the
//! lanes and the outbox update as they work, the gauges read at scrape time, and the two
//! renderings `plugin.metrics()` (text exposition format 0.0.4) and `plugin.metricsJSON()`
//! (the same numbers as a JSON object) return.
//!
//! Every name and label set is fixed here; the README's metrics table lists them.

use std::time::Instant;

use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde_json::{json, Map, Value};

use super::breaker::BreakerState;
use super::metrics::Count;
use super::Shared;

const REPLICATOR: &[&str] = &["replicator", "driver"];
const RESOURCE: &[&str] = &["replicator", "driver", "resource"];

/// Delivery latency: a local destination answers in about a millisecond, one that is down
/// holds changes for minutes (circuit breaker, `holdTimeout` 10 minutes by default).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];
/// Changes per batch: 1 when idle, up to `batchSize` (at most 10000) under load.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// One fsync of the outbox's group commit: from a fast SSD's 100 µs to a slow disk's seconds.
const FSYNC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Name and help of the change counter of each [`Count`].
fn change_counter_name(c: Count) -> (&'static str, &'static str) {
    match c {
        Count::Received => (
            "s3db_replicator_changes_received_total",
            "Changes routed to the replicator, one per destination of a change.",
        ),
        Count::Delivered => (
            "s3db_replicator_changes_delivered_total",
            "Changes the destination acknowledged.",
        ),
        Count::Failed => (
            "s3db_replicator_changes_failed_total",
            "Changes that failed for good (permanent error, retries used up, transform error).",
        ),
        Count::Skipped => (
            "s3db_replicator_changes_skipped_total",
            "Changes dropped on purpose: shouldReplicate false, transform returned null, superseded re-send.",
        ),
        Count::Retried => (
            "s3db_replicator_changes_retried_total",
            "Extra write attempts, one per change per retry.",
        ),
        Count::DeadLettered => (
            "s3db_replicator_changes_dead_lettered_total",
            "Failed changes kept as dead letters (a re-sent dead letter that fails again is not counted again).",
        ),
        Count::Held => (
            "s3db_replicator_changes_held_total",
            "Changes that used their retry budget while the destination was down and wait for it (once per change).",
        ),
    }
}

/// What a replicator's lanes update besides the per-resource change counters.
pub(crate) struct ReplicatorHandles {
    pub batches: IntCounter,
    pub batch_size: Histogram,
    pub delivery_seconds: Histogram,
}

/// What the outbox thread and the outbox's appends update.
#[derive(Clone)]
pub(crate) struct OutboxHandles {
    pub fsync_seconds: Histogram,
    pub append_errors: IntCounter,
}

pub(crate) struct Exposition {
    registry: Registry,
    started: Instant,
    changes: Vec<IntCounterVec>,
    batches: IntCounterVec,
    batch_size: HistogramVec,
    delivery_seconds: HistogramVec,
    queue_depth: IntGaugeVec,
    lag_seconds: GaugeVec,
    in_flight: IntGaugeVec,
    circuit: IntGaugeVec,
    enabled: IntGaugeVec,
    outbox: OutboxHandles,
    outbox_replayed: IntCounter,
    outbox_bytes: IntGauge,
    outbox_segments: IntGauge,
    outbox_pending: IntGauge,
    dead_letters: IntGauge,
    uptime: Gauge,
}

/// The names and label names are constants (checked by this file's tests): an error here is a
/// programming error, not something a configuration can cause.
fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric names and labels are valid constants")
}

impl Exposition {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| must(registry.register(c));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let v = must(IntCounterVec::new(Opts::new(name, help), labels));
            reg(Box::new(v.clone()));
            v
        };
        let int_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let v = must(IntGaugeVec::new(Opts::new(name, help), labels));
            reg(Box::new(v.clone()));
            v
        };
        let histogram_vec = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let v = must(HistogramVec::new(opts, REPLICATOR));
            reg(Box::new(v.clone()));
            v
        };
        let int_gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            reg(Box::new(g.clone()));
            g
        };
        let int_counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            reg(Box::new(c.clone()));
            c
        };
        let changes = Count::ALL
            .iter()
            .map(|&c| {
                let (name, help) = change_counter_name(c);
                counter_vec(name, help, RESOURCE)
            })
            .collect();
        let lag_seconds = must(GaugeVec::new(
            Opts::new(
                "s3db_replicator_lag_seconds",
                "Age of the oldest change the replicator is working on (0 when idle).",
            ),
            REPLICATOR,
        ));
        reg(Box::new(lag_seconds.clone()));
        let fsync_seconds = must(Histogram::with_opts(
            HistogramOpts::new(
                "s3db_replicator_outbox_fsync_duration_seconds",
                "Duration of one fsync of the outbox log (group commit).",
            )
            .buckets(FSYNC_BUCKETS.to_vec()),
        ));
        reg(Box::new(fsync_seconds.clone()));
        let uptime = must(Gauge::new(
            "s3db_replicator_engine_uptime_seconds",
            "Seconds since this plugin's engine started.",
        ));
        reg(Box::new(uptime.clone()));
        Self {
            changes,
            batches: counter_vec(
                "s3db_replicator_batches_total",
                "Batches the replicator's lanes processed.",
                REPLICATOR,
            ),
            batch_size: histogram_vec(
                "s3db_replicator_batch_size",
                "Changes per batch a lane processed.",
                BATCH_BUCKETS,
            ),
            delivery_seconds: histogram_vec(
                "s3db_replicator_delivery_duration_seconds",
                "From the change's acceptance to the destination's acknowledgement, per delivered change.",
                LATENCY_BUCKETS,
            ),
            queue_depth: int_gauge_vec(
                "s3db_replicator_queue_depth",
                "Changes routed to the replicator and not yet settled (delivered, failed or skipped).",
                REPLICATOR,
            ),
            lag_seconds,
            in_flight: int_gauge_vec(
                "s3db_replicator_in_flight_batches",
                "Batches being written (or retried) right now.",
                REPLICATOR,
            ),
            circuit: int_gauge_vec(
                "s3db_replicator_circuit_state",
                "The circuit breaker's state: 1 for the current one of closed, open, half-open.",
                &["replicator", "driver", "state"],
            ),
            enabled: int_gauge_vec(
                "s3db_replicator_enabled",
                "1 while the replicator is enabled, 0 while disabled.",
                REPLICATOR,
            ),
            outbox: OutboxHandles {
                fsync_seconds,
                append_errors: int_counter(
                    "s3db_replicator_outbox_append_errors_total",
                    "Changes the outbox could not write to disk (kept in memory only).",
                ),
            },
            outbox_replayed: int_counter(
                "s3db_replicator_outbox_replayed_total",
                "Changes replayed from the outbox at start (accepted by an earlier process, undelivered).",
            ),
            outbox_bytes: int_gauge(
                "s3db_replicator_outbox_bytes",
                "Size of the outbox log on disk.",
            ),
            outbox_segments: int_gauge(
                "s3db_replicator_outbox_segments",
                "Segment files of the outbox log.",
            ),
            outbox_pending: int_gauge(
                "s3db_replicator_outbox_pending_changes",
                "Accepted changes not yet settled by every destination (on-disk outbox).",
            ),
            dead_letters: int_gauge(
                "s3db_replicator_dead_letters",
                "Dead letters stored now (retry with retryDeadLetters(), drop with discardDeadLetters()).",
            ),
            uptime,
            registry,
            started: Instant::now(),
        }
    }

    pub fn change_counter(&self, c: Count, id: &str, driver: &str, resource: &str) -> IntCounter {
        self.changes[c as usize].with_label_values(&[id, driver, resource])
    }

    pub fn replicator_handles(&self, id: &str, driver: &str) -> ReplicatorHandles {
        let labels = [id, driver];
        // Present (at 0) from the start, so a dashboard sees the replicator before it works.
        for state in ["closed", "open", "half-open"] {
            self.circuit.with_label_values(&[id, driver, state]);
        }
        self.queue_depth.with_label_values(&labels);
        self.lag_seconds.with_label_values(&labels);
        self.in_flight.with_label_values(&labels);
        self.enabled.with_label_values(&labels);
        ReplicatorHandles {
            batches: self.batches.with_label_values(&labels),
            batch_size: self.batch_size.with_label_values(&labels),
            delivery_seconds: self.delivery_seconds.with_label_values(&labels),
        }
    }

    pub fn outbox_handles(&self) -> OutboxHandles {
        self.outbox.clone()
    }

    pub fn replayed(&self, n: u64) {
        self.outbox_replayed.inc_by(n);
    }

    /// Reads the gauges from the engine and collects every family, sorted by name.
    fn gather(&self, shared: &Shared) -> Vec<MetricFamily> {
        for r in &shared.replicators {
            let labels = [r.id.as_str(), r.driver.as_str()];
            self.queue_depth
                .with_label_values(&labels)
                .set(gauge_int(r.queued()));
            self.lag_seconds
                .with_label_values(&labels)
                .set(r.oldest_pending_ms() as f64 / 1000.0);
            self.in_flight
                .with_label_values(&labels)
                .set(gauge_int(r.in_flight_batches()));
            self.enabled.with_label_values(&labels).set(i64::from(
                r.enabled.load(std::sync::atomic::Ordering::SeqCst),
            ));
            let state = r.breaker.snapshot().state;
            for (name, s) in [
                ("closed", BreakerState::Closed),
                ("open", BreakerState::Open),
                ("half-open", BreakerState::HalfOpen),
            ] {
                self.circuit
                    .with_label_values(&[r.id.as_str(), r.driver.as_str(), name])
                    .set(i64::from(state == s));
            }
        }
        let outbox = shared.outbox.info();
        self.outbox_bytes.set(gauge_int(outbox.bytes));
        self.outbox_segments.set(gauge_int(outbox.segments as u64));
        self.outbox_pending.set(gauge_int(outbox.pending));
        self.dead_letters
            .set(gauge_int(shared.dead_letters.len() as u64));
        self.uptime.set(self.started.elapsed().as_secs_f64());
        self.registry.gather()
    }

    /// The Prometheus text exposition format, version 0.0.4 (served as `text/plain;
    /// version=0.0.4`: lib/metrics-server.js).
    pub fn text(&self, shared: &Shared) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.gather(shared), &mut out) {
            tracing::error!(message = "Could not render the metrics.", %error);
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The same families as an object: `{ name: { type, help, samples } }`. A counter's or
    /// gauge's sample is `{ labels, value }`; a histogram's is `{ labels, count, sum, buckets:
    /// [{ le, count }] }` with cumulative counts and `le` written as in the text ("0.005", "+Inf").
    pub fn json(&self, shared: &Shared) -> Value {
        let mut out = Map::new();
        for family in self.gather(shared) {
            let kind = family.get_field_type();
            let samples: Vec<Value> = family
                .get_metric()
                .iter()
                .map(|m| {
                    let labels: Map<String, Value> = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name().to_string(), Value::String(l.value().to_string())))
                        .collect();
                    match kind {
                        MetricType::COUNTER => {
                            json!({ "labels": labels, "value": m.get_counter().get_value() })
                        }
                        MetricType::HISTOGRAM => {
                            let h = m.get_histogram();
                            let mut buckets: Vec<Value> = h
                                .get_bucket()
                                .iter()
                                .map(|b| json!({ "le": b.upper_bound().to_string(), "count": b.cumulative_count() }))
                                .collect();
                            buckets.push(json!({ "le": "+Inf", "count": h.get_sample_count() }));
                            json!({ "labels": labels, "count": h.get_sample_count(), "sum": h.get_sample_sum(), "buckets": buckets })
                        }
                        _ => json!({ "labels": labels, "value": m.get_gauge().get_value() }),
                    }
                })
                .collect();
            let type_name = match kind {
                MetricType::COUNTER => "counter",
                MetricType::HISTOGRAM => "histogram",
                MetricType::SUMMARY => "summary",
                MetricType::UNTYPED => "untyped",
                MetricType::GAUGE => "gauge",
            };
            out.insert(
                family.name().to_string(),
                json!({ "type": type_name, "help": family.help(), "samples": samples }),
            );
        }
        Value::Object(out)
    }
}

fn gauge_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_follows_the_conventions_and_registers() {
        let e = Exposition::new();
        for c in Count::ALL {
            let (name, help) = change_counter_name(c);
            assert!(name.starts_with("s3db_replicator_changes_") && name.ends_with("_total"));
            assert!(help.ends_with('.'));
            e.change_counter(c, "r", "s3db", "users").inc();
        }
        e.replicator_handles("r", "s3db").batches.inc();
        let names: Vec<String> = e
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(names.iter().all(|n| n.starts_with("s3db_replicator_")));
        for n in &names {
            assert!(!n.contains("__") && !n.ends_with('_'), "{n}");
        }
        assert!(names.contains(&"s3db_replicator_engine_uptime_seconds".to_string()));
    }

    #[test]
    fn buckets_grow() {
        for b in [LATENCY_BUCKETS, BATCH_BUCKETS, FSYNC_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
