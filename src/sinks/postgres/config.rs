//! `config` of the `postgresql` (`postgres`) driver, and the TLS and pool options the MySQL
//! drivers share with it.

use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::error::{redact, ConfigError};
use crate::schema::Dialect;
use crate::secret::Secret;
use crate::sinks::sql::{OnMismatch, SchemaStrategy, SchemaSyncConfig};

const fn yes() -> bool {
    true
}
pub(crate) const fn default_connection_limit() -> u32 {
    10
}
pub(crate) const fn default_connect_timeout() -> u64 {
    10_000
}

/// A PEM document: a string, or a Node.js `Buffer` as `JSON.stringify` writes it
/// (`{ "type": "Buffer", "data": [..] }`), or an array of PEM strings.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem(pub String);

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pem({} bytes)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Pem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        let bytes_of = |data: &Value| -> Option<Vec<u8>> {
            data.as_array()?
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect()
        };
        match &v {
            Value::String(s) => Ok(Self(s.clone())),
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("Buffer") => {
                let bytes = o
                    .get("data")
                    .and_then(bytes_of)
                    .ok_or_else(|| D::Error::custom("a Buffer without byte data"))?;
                String::from_utf8(bytes)
                    .map(Self)
                    .map_err(|_| D::Error::custom("the Buffer is not PEM text"))
            }
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(|v| Self(v.join("\n")))
                .ok_or_else(|| D::Error::custom("expected PEM strings")),
            _ => Err(D::Error::custom("expected a PEM string or a Buffer")),
        }
    }
}

/// `ssl: { rejectUnauthorized, ca, cert, key }` (the options of Node's `tls.connect`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsOptions {
    /// Verify the server's certificate and host name (default `true`).
    #[serde(default = "yes")]
    pub reject_unauthorized: bool,
    /// CA certificate(s), PEM.
    #[serde(default)]
    pub ca: Option<Pem>,
    /// Client certificate, PEM.
    #[serde(default)]
    pub cert: Option<Pem>,
    /// Client private key, PEM.
    #[serde(default)]
    pub key: Option<Secret>,
}

/// `ssl`: `false` (plain TCP), `true` (TLS, certificate verified) or [`TlsOptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ssl {
    Disabled,
    Enabled(TlsOptions),
}

impl<'de> Deserialize<'de> for Ssl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::Bool(false) | Value::Null => Ok(Self::Disabled),
            Value::Bool(true) => Ok(Self::Enabled(TlsOptions {
                reject_unauthorized: true,
                ca: None,
                cert: None,
                key: None,
            })),
            v @ Value::Object(_) => serde_json::from_value(v)
                .map(Self::Enabled)
                .map_err(D::Error::custom),
            // Node's pg also accepts an sslmode name.
            Value::String(s) => match s.as_str() {
                "disable" => Ok(Self::Disabled),
                "require" | "no-verify" => Ok(Self::Enabled(TlsOptions {
                    reject_unauthorized: false,
                    ca: None,
                    cert: None,
                    key: None,
                })),
                "verify-full" | "verify-ca" => Ok(Self::Enabled(TlsOptions {
                    reject_unauthorized: true,
                    ca: None,
                    cert: None,
                    key: None,
                })),
                other => Err(D::Error::custom(format!(
                    "unknown ssl mode '{other}' (use true, false or {{ rejectUnauthorized }})"
                ))),
            },
            _ => Err(D::Error::custom(
                "expected true, false or { rejectUnauthorized, ca, cert, key }",
            )),
        }
    }
}

impl Ssl {
    pub fn redacted(&self) -> Value {
        match self {
            Self::Disabled => json!(false),
            Self::Enabled(o) => json!({
                "rejectUnauthorized": o.reject_unauthorized,
                "ca": o.ca.as_ref().map(|_| "(pem)"),
                "cert": o.cert.as_ref().map(|_| "(pem)"),
                "key": o.key.as_ref().map(|_| "***"),
            }),
        }
    }
}

/// `schemaSync` as JSON (for `redacted()`).
pub(crate) fn schema_sync_json(s: &SchemaSyncConfig) -> Value {
    json!({
        "enabled": s.enabled,
        "strategy": match s.strategy { SchemaStrategy::Alter => "alter", SchemaStrategy::DropCreate => "drop-create", SchemaStrategy::ValidateOnly => "validate-only" },
        "onMismatch": match s.on_mismatch { OnMismatch::Error => "error", OnMismatch::Warn => "warn", OnMismatch::Ignore => "ignore" },
        "autoCreateTable": s.auto_create_table,
        "autoCreateColumns": s.auto_create_columns,
        "dropMissingColumns": s.drop_missing_columns,
    })
}

/// Checks `logTable` (`table` or `schema.table`).
pub(crate) fn check_log_table(log_table: &Option<String>) -> Result<(), ConfigError> {
    if let Some(t) = log_table {
        for part in t.split('.') {
            Dialect::validate_ident(part).map_err(|e| {
                ConfigError::new("logTable", e, "use a table name such as 'replication_log'")
            })?;
        }
    }
    Ok(())
}

pub(crate) fn check_connection_limit(n: u32) -> Result<(), ConfigError> {
    if !(1..=1000).contains(&n) {
        return Err(ConfigError::new(
            "connectionLimit",
            format!("{n} is out of range"),
            "use 1 to 1000 (default 10)",
        ));
    }
    Ok(())
}

pub(crate) fn check_connect_timeout(option: &str, ms: u64) -> Result<(), ConfigError> {
    if !(100..=600_000).contains(&ms) {
        return Err(ConfigError::new(
            option,
            format!("{ms} ms is out of range"),
            "use milliseconds from 100 to 600000 (default 10000)",
        ));
    }
    Ok(())
}

pub(crate) fn check_port(port: Option<u16>) -> Result<(), ConfigError> {
    if port == Some(0) {
        return Err(ConfigError::new(
            "port",
            "0 is not a port",
            "omit it for the default, or use the server's port",
        ));
    }
    Ok(())
}

/// Settings of the `postgresql` driver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PostgresConfig {
    /// `postgres://user:password@host:5432/db?sslmode=...` (or `postgresql://`). The other
    /// connection options, when also given, override its parts.
    #[serde(default)]
    pub connection_string: Option<Secret>,
    #[serde(default)]
    pub host: Option<String>,
    /// Default 5432.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default, alias = "username")]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Default: TLS when the server offers it, unverified (libpq's `prefer`).
    #[serde(default)]
    pub ssl: Option<Ssl>,
    /// Pool size.
    #[serde(default = "default_connection_limit")]
    pub connection_limit: u32,
    /// How long a write waits for a connection (connecting included) before it fails
    /// retryably, in milliseconds (node-postgres' name; default 10000).
    #[serde(default = "default_connect_timeout", alias = "connectTimeout")]
    pub connection_timeout_millis: u64,
    /// Audit table receiving one row per replicated operation.
    #[serde(default)]
    pub log_table: Option<String>,
    #[serde(default)]
    pub schema_sync: SchemaSyncConfig,
}

impl PostgresConfig {
    pub fn validated(self) -> Result<Self, ConfigError> {
        check_connection_limit(self.connection_limit)?;
        check_connect_timeout("connectionTimeoutMillis", self.connection_timeout_millis)?;
        check_port(self.port)?;
        check_log_table(&self.log_table)?;
        self.connect_options()?;
        Ok(self)
    }

    /// The sqlx connection options (never printed: they hold the password).
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        let mut o = match &self.connection_string {
            Some(cs) => {
                let s = cs.expose();
                if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
                    return Err(ConfigError::new(
                        "connectionString",
                        // Not echoed: a malformed string may still hold credentials.
                        "not a PostgreSQL connection string",
                        "use postgres://user:password@host:5432/database",
                    ));
                }
                PgConnectOptions::from_str(s).map_err(|e| {
                    ConfigError::new("connectionString", format!("cannot be parsed ({})", redact(&e.to_string())), "use postgres://user:password@host:5432/database")
                })?
            }
            None if self.host.is_none() => {
                return Err(ConfigError::new(
                    "connectionString",
                    "no server to connect to",
                    "set config.connectionString (postgres://user:password@host:5432/db) or config.host, database, user and password",
                ))
            }
            None => PgConnectOptions::new(),
        };
        if let Some(h) = &self.host {
            if h.trim().is_empty() {
                return Err(ConfigError::new(
                    "host",
                    "the host is empty",
                    "set the server's host name or address",
                ));
            }
            o = o.host(h);
        }
        if let Some(p) = self.port {
            o = o.port(p);
        } else if self.connection_string.is_none() {
            o = o.port(5432);
        }
        if let Some(d) = &self.database {
            o = o.database(d);
        }
        if let Some(u) = &self.user {
            o = o.username(u);
        }
        if let Some(p) = self.password.as_ref().filter(|p| !p.is_empty()) {
            o = o.password(p.expose());
        }
        match &self.ssl {
            None => {}
            Some(Ssl::Disabled) => o = o.ssl_mode(PgSslMode::Disable),
            Some(Ssl::Enabled(t)) => {
                o = o.ssl_mode(if t.reject_unauthorized {
                    PgSslMode::VerifyFull
                } else {
                    PgSslMode::Require
                });
                if let Some(ca) = &t.ca {
                    o = o.ssl_root_cert_from_pem(ca.0.clone().into_bytes());
                }
                if let Some(c) = &t.cert {
                    o = o.ssl_client_cert_from_pem(c.0.as_bytes());
                }
                if let Some(k) = &t.key {
                    o = o.ssl_client_key_from_pem(k.expose().as_bytes());
                }
            }
        }
        Ok(o.application_name("s3db-replicator"))
    }

    /// The configuration as JSON, without secrets.
    pub fn redacted(&self) -> Value {
        json!({
            "connectionString": self.connection_string.as_ref().map(|c| redact(c.expose())),
            "host": self.host,
            "port": self.port.unwrap_or(5432),
            "database": self.database,
            "user": self.user,
            "password": self.password.as_ref().map(|_| "***"),
            "ssl": self.ssl.as_ref().map(Ssl::redacted),
            "connectionLimit": self.connection_limit,
            "connectionTimeoutMillis": self.connection_timeout_millis,
            "logTable": self.log_table,
            "schemaSync": schema_sync_json(&self.schema_sync),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<PostgresConfig, String> {
        serde_json::from_value::<PostgresConfig>(v)
            .map_err(|e| e.to_string())?
            .validated()
            .map_err(|e| format!("{}: {}", e.path, e.reason))
    }

    #[test]
    fn minimal_configs_parse_with_sane_defaults() {
        let c = parse(json!({ "connectionString": "postgresql://u:p@db.example.com/analytics" }))
            .unwrap();
        assert_eq!(
            (c.connection_limit, c.connection_timeout_millis),
            (10, 10_000)
        );
        assert!(c.ssl.is_none() && c.log_table.is_none());
        assert!(!c.schema_sync.enabled);
        let o = c.connect_options().unwrap();
        assert_eq!(
            (o.get_host(), o.get_port(), o.get_database()),
            ("db.example.com", 5432, Some("analytics"))
        );
        assert_eq!(format!("{:?}", o.get_ssl_mode()), "Prefer");

        let c =
            parse(json!({ "host": "h", "database": "d", "user": "u", "password": "p" })).unwrap();
        let o = c.connect_options().unwrap();
        assert_eq!(
            (o.get_host(), o.get_port(), o.get_username()),
            ("h", 5432, "u")
        );
        assert!(parse(json!({ "connectionString": "postgres://h/d", "schemaSync": { "enabled": true, "strategy": "drop-create" } })).unwrap().schema_sync.enabled);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(
            parse(json!({ "connectionString": "postgres://h/d", "connectionLimt": 3 }))
                .unwrap_err()
                .contains("connectionLimt")
        );
        assert!(parse(
            json!({ "connectionString": "postgres://h/d", "schemaSync": { "stratgy": "alter" } })
        )
        .is_err());
        assert!(parse(
            json!({ "connectionString": "postgres://h/d", "ssl": { "rejectUnauthorised": false } })
        )
        .is_err());
    }

    #[test]
    fn bad_values_name_the_option() {
        assert!(parse(json!({}))
            .unwrap_err()
            .starts_with("connectionString"));
        assert!(parse(json!({ "connectionString": "mysql://h/d" }))
            .unwrap_err()
            .starts_with("connectionString"));
        assert!(
            parse(json!({ "connectionString": "postgres://h/d", "connectionLimit": 0 }))
                .unwrap_err()
                .starts_with("connectionLimit")
        );
        assert!(parse(json!({ "host": "h", "port": 0 }))
            .unwrap_err()
            .starts_with("port"));
        assert!(parse(json!({ "host": "h", "connectionTimeoutMillis": 0 }))
            .unwrap_err()
            .starts_with("connectionTimeoutMillis"));
        assert!(parse(json!({ "host": "h", "logTable": "" }))
            .unwrap_err()
            .starts_with("logTable"));
        assert!(parse(json!({ "host": "h", "schemaSync": { "strategy": "rebuild" } })).is_err());
    }

    #[test]
    fn explicit_options_override_the_connection_string() {
        let c = parse(json!({ "connectionString": "postgres://u@h:6543/d", "database": "other", "port": 5433 })).unwrap();
        let o = c.connect_options().unwrap();
        assert_eq!((o.get_port(), o.get_database()), (5433, Some("other")));
    }

    #[test]
    fn ssl_shapes_map_to_sslmodes() {
        let mode = |ssl: Value| {
            format!(
                "{:?}",
                parse(json!({ "host": "h", "ssl": ssl }))
                    .unwrap()
                    .connect_options()
                    .unwrap()
                    .get_ssl_mode()
            )
        };
        assert_eq!(mode(json!(false)), "Disable");
        assert_eq!(mode(json!(true)), "VerifyFull");
        assert_eq!(mode(json!({ "rejectUnauthorized": false })), "Require");
        assert_eq!(mode(json!({ "rejectUnauthorized": true })), "VerifyFull");
        assert_eq!(
            mode(json!({ "ca": "-----BEGIN CERTIFICATE-----\n" })),
            "VerifyFull"
        );
        assert_eq!(
            mode(json!({ "ca": { "type": "Buffer", "data": [45, 45] } })),
            "VerifyFull"
        );
        assert_eq!(mode(json!("require")), "Require");
        assert!(parse(json!({ "host": "h", "ssl": 3 })).is_err());
    }

    #[test]
    fn secrets_never_show() {
        let c = parse(json!({
            "connectionString": "postgres://u:hunter2@h/d", "password": "s3cr3t",
            "ssl": { "key": "-----BEGIN PRIVATE KEY-----pk-----END PRIVATE KEY-----" }
        }))
        .unwrap();
        let shown = format!("{c:?} {}", c.redacted());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t") && !shown.contains("pk-----"),
            "{shown}"
        );
        assert!(shown.contains("postgres://u:***@h/d"));
        let e =
            parse(json!({ "connectionString": "postgres://u:hunter2@h:notaport/d" })).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
