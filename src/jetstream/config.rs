//! `outbox: { jetstream: { ... } }`: where the shared log lives and how it is partitioned.

use std::path::PathBuf;
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
    /// An NKey user seed (`SU...`): the server knows the user by its public key.
    #[serde(default)]
    pub nkey: Option<Secret>,
    /// A `.creds` file (user JWT and NKey seed), as issued by `nsc` or Synadia Cloud.
    #[serde(default)]
    pub creds_file: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsOptions>,
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    #[serde(default)]
    pub lease_ttl_ms: Option<u64>,
    #[serde(default)]
    pub publish_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_in_flight: Option<u64>,
}

/// `tls: true` (require TLS, trusting the system's roots) or `{ ca, cert, key }` (PEM files:
/// a private CA to trust, and a client certificate for servers that verify clients).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TlsOptions {
    Required(bool),
    Files(TlsFiles),
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    #[serde(default)]
    pub ca: Option<String>,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

/// How this process proves who it is to the server (at most one way).
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    UserPassword(String, Secret),
    Token(Secret),
    NKey(Secret),
    CredsFile(PathBuf),
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
    pub auth: Auth,
    /// `None`: plain TCP unless the server asks for TLS.
    pub tls: Option<TlsFiles>,
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

fn auth(o: &JetStreamOptions) -> Result<Auth, ConfigError> {
    let given: Vec<&str> = [
        (o.user.is_some() || o.password.is_some(), "user/password"),
        (o.token.is_some(), "token"),
        (o.nkey.is_some(), "nkey"),
        (o.creds_file.is_some(), "credsFile"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if given.len() > 1 {
        return Err(err(
            given[1].split('/').next().unwrap_or("user"),
            format!("{} are both given", given.join(" and ")),
            "give one way to authenticate: user/password, token, nkey or credsFile",
        ));
    }
    if let Some(user) = &o.user {
        let Some(password) = &o.password else {
            return Err(err(
                "password",
                "a user without a password",
                "give user and password together",
            ));
        };
        return Ok(Auth::UserPassword(user.clone(), password.clone()));
    }
    if o.password.is_some() {
        return Err(err(
            "password",
            "a password without a user",
            "give user and password together, or a token",
        ));
    }
    if let Some(token) = &o.token {
        return Ok(Auth::Token(token.clone()));
    }
    if let Some(seed) = &o.nkey {
        // The seed itself is never echoed: only its shape is described.
        if !seed.expose().starts_with("SU") || seed.expose().len() < 40 {
            return Err(err(
                "nkey",
                "it is not an NKey user seed",
                "give the user's seed (it starts with 'SU', as `nk -gen user` prints it), not its public key",
            ));
        }
        return Ok(Auth::NKey(seed.clone()));
    }
    if let Some(file) = &o.creds_file {
        if file.trim().is_empty() {
            return Err(err(
                "credsFile",
                "the path is empty",
                "give the path of the .creds file, e.g. credsFile: './nats/user.creds'",
            ));
        }
        return Ok(Auth::CredsFile(PathBuf::from(file)));
    }
    Ok(Auth::None)
}

fn tls(option: Option<TlsOptions>) -> Result<Option<TlsFiles>, ConfigError> {
    let files = match option {
        None | Some(TlsOptions::Required(false)) => return Ok(None),
        Some(TlsOptions::Required(true)) => TlsFiles::default(),
        Some(TlsOptions::Files(files)) => files,
    };
    if files.cert.is_some() != files.key.is_some() {
        return Err(err(
            if files.cert.is_some() { "tls.key" } else { "tls.cert" },
            "a client certificate needs both its certificate and its key",
            "give tls: { cert: 'client.pem', key: 'client-key.pem' } together (and ca: for a private CA)",
        ));
    }
    for (name, path) in [
        ("ca", &files.ca),
        ("cert", &files.cert),
        ("key", &files.key),
    ] {
        if let Some(path) = path {
            if !std::path::Path::new(path).is_file() {
                return Err(err(
                    &format!("tls.{name}"),
                    format!("'{path}' is not a readable file"),
                    "give the path of a PEM file",
                ));
            }
        }
    }
    Ok(Some(files))
}

pub fn parse(o: JetStreamOptions) -> Result<JetStreamConfig, ConfigError> {
    let auth = auth(&o)?;
    let tls = tls(o.tls.clone())?;
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
    Ok(JetStreamConfig {
        url,
        stream,
        subject_prefix,
        partitions: range("partitions", o.partitions.unwrap_or(16), 1, 1024)? as u32,
        replicas: range("replicas", o.replicas.unwrap_or(1), 1, 5)? as usize,
        auth,
        tls,
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

    #[test]
    fn one_way_to_authenticate_and_the_seed_is_never_echoed() {
        let seed = format!("SUAM{}", "X".repeat(54));
        let c = opts(serde_json::json!({ "nkey": seed })).unwrap();
        assert!(matches!(c.auth, Auth::NKey(_)));
        assert!(!format!("{c:?}").contains(&seed), "Debug hides the seed");
        let c = opts(serde_json::json!({ "credsFile": "./user.creds" })).unwrap();
        assert_eq!(c.auth, Auth::CredsFile(PathBuf::from("./user.creds")));
        for (v, path) in [
            (
                serde_json::json!({ "nkey": seed, "token": "tok-secret" }),
                "outbox.jetstream.nkey",
            ),
            (
                serde_json::json!({ "user": "u", "password": "p", "credsFile": "x" }),
                "outbox.jetstream.credsFile",
            ),
            (
                serde_json::json!({ "user": "u" }),
                "outbox.jetstream.password",
            ),
            (
                serde_json::json!({ "nkey": "UAPUBLICKEYNOTASEED" }),
                "outbox.jetstream.nkey",
            ),
            (
                serde_json::json!({ "tls": { "cert": "c.pem" } }),
                "outbox.jetstream.tls.key",
            ),
            (
                serde_json::json!({ "tls": { "ca": "/nonexistent/ca.pem" } }),
                "outbox.jetstream.tls.ca",
            ),
        ] {
            let e = opts(v).unwrap_err();
            assert_eq!(e.path, path, "{e}");
            let text = format!("{e}");
            assert!(
                !text.contains(&seed)
                    && !text.contains("tok-secret")
                    && !text.contains("UAPUBLICKEY"),
                "{text}"
            );
        }
        assert_eq!(
            opts(serde_json::json!({ "tls": true })).unwrap().tls,
            Some(TlsFiles::default())
        );
        assert_eq!(opts(serde_json::json!({ "tls": false })).unwrap().tls, None);
    }
}
