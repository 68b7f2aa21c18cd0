//! `outbox: { jetstream: { ... } }`: where the shared log lives and how it is partitioned.

use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JetStreamOptions {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub subject_prefix: Option<String>,
    #[serde(default)]
    pub partitions: Option<u64>,
    #[serde(default)]
    pub replicas: Option<u64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    #[serde(default)]
    pub lease_ttl_ms: Option<u64>,
    #[serde(default)]
    pub publish_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_in_flight: Option<u64>,
}

/// The validated JetStream settings (shared by publishers and workers: they must agree).
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamConfig {
    /// `nats://host:port` (credentials, if any, are kept apart in `user`/`password`/`token`).
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub partitions: u32,
    pub replicas: usize,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// How long the stream keeps a change (a worker that is down longer loses it).
    pub max_age: Duration,
    /// A worker that has not renewed its partition leases for this long loses them.
    pub lease_ttl: Duration,
    /// How long a publisher keeps retrying one change while the server is unreachable.
    pub publish_timeout: Duration,
    /// Publishes awaiting their server ack at once, per process (the backpressure window).
    pub max_in_flight: usize,
}

impl JetStreamConfig {
    pub fn subject(&self, partition: u32) -> String {
        format!("{}.{partition}", self.subject_prefix)
    }

    /// Which partition one record's changes go to: the same for every process and release.
    pub fn partition_of(&self, resource: &str, id: &str) -> u32 {
        let bytes = resource.bytes().chain(std::iter::once(0)).chain(id.bytes());
        (crate::hash::fnv1a64(bytes) % u64::from(self.partitions)) as u32
    }

    /// The KV bucket of partition leases (entries expire with the lease TTL).
    pub fn lease_bucket(&self) -> String {
        format!("{}_leases", self.stream)
    }

    /// The KV bucket of committed positions: per partition, the stream sequence up to which
    /// every change has been settled by every destination.
    pub fn offset_bucket(&self) -> String {
        format!("{}_offsets", self.stream)
    }
}

fn err(path: &str, reason: impl Into<String>, hint: impl Into<String>) -> ConfigError {
    ConfigError::new(format!("outbox.jetstream.{path}"), reason, hint)
}

/// A NATS name token: letters, digits, `-` and `_` (no dots, spaces or wildcards).
fn name_token(path: &str, value: &str, hint: &str) -> Result<(), ConfigError> {
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err(
            path,
            format!("'{value}' is not a valid name"),
            format!("use letters, digits, '-' and '_' only, e.g. {hint}"),
        ));
    }
    Ok(())
}

fn range(path: &str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if value < min || value > max {
        return Err(err(
            path,
            format!("{value} is out of range"),
            format!("use a whole number from {min} to {max}"),
        ));
    }
    Ok(value)
}

pub fn parse(o: JetStreamOptions) -> Result<JetStreamConfig, ConfigError> {
    let url = o
        .url
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into())
        .trim()
        .to_string();
    if url.is_empty() {
        return Err(err(
            "url",
            "the url is empty",
            "give the server, e.g. url: 'nats://127.0.0.1:4222'",
        ));
    }
    if url.contains('@') {
        return Err(err(
            "url",
            "the url carries credentials",
            "pass them as user/password or token next to the url, so they are never logged",
        ));
    }
    let stream = o.stream.unwrap_or_else(|| "S3DB_REPLICATOR".into());
    name_token("stream", &stream, "stream: 'S3DB_REPLICATOR'")?;
    let subject_prefix = o.subject_prefix.unwrap_or_else(|| "s3db-replicator".into());
    if subject_prefix.is_empty()
        || subject_prefix.split('.').any(|t| {
            t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    {
        return Err(err(
            "subjectPrefix",
            format!("'{subject_prefix}' is not a valid subject prefix"),
            "use dot-separated tokens of letters, digits, '-' and '_', e.g. subjectPrefix: 'app.changes'",
        ));
    }
    if o.password.is_some() && o.user.is_none() {
        return Err(err(
            "password",
            "a password without a user",
            "give user and password together, or a token",
        ));
    }
    if o.token.is_some() && o.user.is_some() {
        return Err(err(
            "token",
            "both a token and a user are given",
            "give either user/password or token",
        ));
    }
    Ok(JetStreamConfig {
        url,
        stream,
        subject_prefix,
        partitions: range("partitions", o.partitions.unwrap_or(16), 1, 1024)? as u32,
        replicas: range("replicas", o.replicas.unwrap_or(1), 1, 5)? as usize,
        user: o.user,
        password: o.password,
        token: o.token,
        max_age: Duration::from_millis(range(
            "maxAgeMs",
            o.max_age_ms.unwrap_or(7 * 24 * 3_600_000),
            60_000,
            365 * 24 * 3_600_000,
        )?),
        lease_ttl: Duration::from_millis(range(
            "leaseTtlMs",
            o.lease_ttl_ms.unwrap_or(10_000),
            1_000,
            600_000,
        )?),
        publish_timeout: Duration::from_millis(range(
            "publishTimeoutMs",
            o.publish_timeout_ms.unwrap_or(30_000),
            100,
            3_600_000,
        )?),
        max_in_flight: range("maxInFlight", o.max_in_flight.unwrap_or(1024), 1, 1_000_000)?
            as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: serde_json::Value) -> Result<JetStreamConfig, ConfigError> {
        parse(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn defaults_and_partitioning_are_stable() {
        let c = opts(serde_json::json!({})).unwrap();
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert_eq!(c.partitions, 16);
        assert_eq!(c.subject(3), "s3db-replicator.3");
        let p = c.partition_of("users", "u1");
        assert_eq!(p, c.partition_of("users", "u1"));
        assert!(p < 16);
        // ("ab", "c") and ("a", "bc") are different records.
        let spread: std::collections::HashSet<u32> = (0..200)
            .map(|i| c.partition_of("users", &format!("u{i}")))
            .collect();
        assert!(spread.len() > 12, "ids spread over the partitions");
    }

    #[test]
    fn bad_options_name_the_option() {
        for (v, path) in [
            (
                serde_json::json!({ "url": "nats://u:p@h:4222" }),
                "outbox.jetstream.url",
            ),
            (
                serde_json::json!({ "stream": "a.b" }),
                "outbox.jetstream.stream",
            ),
            (
                serde_json::json!({ "subjectPrefix": "a..b" }),
                "outbox.jetstream.subjectPrefix",
            ),
            (
                serde_json::json!({ "partitions": 0 }),
                "outbox.jetstream.partitions",
            ),
            (
                serde_json::json!({ "password": "x" }),
                "outbox.jetstream.password",
            ),
        ] {
            let e = opts(v).unwrap_err();
            assert_eq!(e.path, path);
            assert!(!e.reason.contains("u:p") && !e.hint.contains("u:p"));
        }
    }
}
