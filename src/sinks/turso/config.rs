use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{redact, ConfigError};
use crate::schema::Dialect;
use crate::secret::Secret;
use crate::sinks::sql::{OnMismatch, SchemaStrategy, SchemaSyncConfig};

/// Settings of the `turso` driver (Turso, a libSQL server `sqld`, or a local libSQL file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TursoConfig {
    /// `libsql://db-org.turso.io`, `https://…`, `http://127.0.0.1:8080` (a self-hosted sqld),
    /// or `file:path/to/local.db` / `file:///abs/path.db` for a local libSQL file.
    pub url: String,
    /// Turso database token. Required for `libsql://` and `https://` URLs of non-loopback
    /// hosts (Turso always wants one); optional for `http://` servers, loopback hosts and files.
    #[serde(default)]
    pub auth_token: Option<Secret>,
    /// Audit table with one row per replicated operation (created when missing).
    #[serde(default)]
    pub log_table: Option<String>,
    #[serde(default)]
    pub schema_sync: SchemaSyncConfig,
}

/// Where the driver connects, from [`TursoConfig::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A local libSQL/SQLite file (or `:memory:`).
    Local(PathBuf),
    /// A libSQL server over HTTP(S) (`libsql://` is HTTPS).
    Remote { url: String },
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl TursoConfig {
    /// Where to connect; `validated()` guarantees it succeeds.
    pub fn target(&self) -> Result<Target, ConfigError> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err(ConfigError::new(
                "url",
                "the url is empty",
                "set config.url, e.g. 'libsql://my-db-org.turso.io' or 'file:./replica.db'",
            ));
        }
        if let Some(rest) = url.strip_prefix("file:") {
            // file:///abs/path, file://./rel, file:rel
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(ConfigError::new(
                    "url",
                    "the file: URL has no path",
                    "e.g. 'file:./replica.db' or 'file:///var/lib/replica.db'",
                ));
            }
            return Ok(Target::Local(PathBuf::from(path)));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            ConfigError::new(
                "url",
                format!("'{}' is not a valid URL ({e})", redact(url)),
                "use libsql://host, https://host, http://host:port or file:path",
            )
        })?;
        let scheme = parsed.scheme().to_ascii_lowercase();
        if !matches!(scheme.as_str(), "libsql" | "https" | "http") {
            return Err(ConfigError::new(
                "url",
                format!("unsupported scheme '{scheme}'"),
                "use libsql://, https://, http:// (ws:// and wss:// are not supported: use https://) or file:",
            ));
        }
        let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
            return Err(ConfigError::new(
                "url",
                "the URL has no host",
                "e.g. 'libsql://my-db-org.turso.io'",
            ));
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ConfigError::new(
                "url",
                "credentials in the URL are not supported",
                "pass the token as config.authToken",
            ));
        }
        if parsed.query().is_some() {
            return Err(ConfigError::new(
                "url",
                "query parameters in the URL are not supported",
                "pass the token as config.authToken; use https:// or http:// to choose TLS",
            ));
        }
        let token_missing = self.auth_token.as_ref().is_none_or(Secret::is_empty);
        if token_missing && scheme != "http" && !is_loopback(host) {
            return Err(ConfigError::new(
                "authToken",
                format!("a {scheme}:// database needs an auth token"),
                "set config.authToken (e.g. from process.env.TURSO_AUTH_TOKEN; `turso db tokens create <db>`)",
            ));
        }
        let url = if scheme == "libsql" {
            format!("https{}", &url["libsql".len()..])
        } else {
            url.to_string()
        };
        Ok(Target::Remote { url })
    }

    pub fn validated(self) -> Result<Self, ConfigError> {
        self.target()?;
        if let Some(log) = &self.log_table {
            Dialect::validate_ident(log.rsplit('.').next().unwrap_or(log)).map_err(|e| {
                ConfigError::new("logTable", e, "use a table name such as 'replication_log'")
            })?;
        }
        Ok(self)
    }

    /// The configuration as JSON, without the token.
    pub fn redacted(&self) -> Value {
        let s = &self.schema_sync;
        json!({
            "url": redact(&self.url),
            "authToken": self.auth_token.as_ref().map(|_| "***"),
            "logTable": self.log_table,
            "schemaSync": {
                "enabled": s.enabled,
                "strategy": match s.strategy {
                    SchemaStrategy::Alter => "alter",
                    SchemaStrategy::DropCreate => "drop-create",
                    SchemaStrategy::ValidateOnly => "validate-only",
                },
                "onMismatch": match s.on_mismatch {
                    OnMismatch::Error => "error",
                    OnMismatch::Warn => "warn",
                    OnMismatch::Ignore => "ignore",
                },
                "autoCreateTable": s.auto_create_table,
                "autoCreateColumns": s.auto_create_columns,
                "dropMissingColumns": s.drop_missing_columns,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<TursoConfig, String> {
        serde_json::from_value::<TursoConfig>(v)
            .map_err(|e| e.to_string())?
            .validated()
            .map_err(|e| format!("{}: {}", e.path, e.reason))
    }

    #[test]
    fn minimal_configs_parse_with_sane_defaults() {
        let c = parse(json!({ "url": "libsql://db-org.turso.io", "authToken": "tok" })).unwrap();
        assert_eq!(
            c.target().unwrap(),
            Target::Remote {
                url: "https://db-org.turso.io".into()
            }
        );
        assert!(c.log_table.is_none());
        assert!(!c.schema_sync.enabled);
        assert_eq!(c.schema_sync.strategy, SchemaStrategy::Alter);
        assert_eq!(c.schema_sync.on_mismatch, OnMismatch::Error);
        assert!(c.schema_sync.auto_create_table && c.schema_sync.auto_create_columns);

        let f = parse(json!({ "url": "file:./replica.db" })).unwrap();
        assert_eq!(f.target().unwrap(), Target::Local("./replica.db".into()));
        let abs = parse(json!({ "url": "file:///tmp/r.db" })).unwrap();
        assert_eq!(abs.target().unwrap(), Target::Local("/tmp/r.db".into()));
        let local = parse(json!({ "url": "http://127.0.0.1:45691" })).unwrap();
        assert_eq!(
            local.target().unwrap(),
            Target::Remote {
                url: "http://127.0.0.1:45691".into()
            }
        );
    }

    #[test]
    fn unknown_field_is_rejected() {
        assert!(parse(json!({ "url": "file:x.db", "authtoken": "t" }))
            .unwrap_err()
            .contains("authtoken"));
        assert!(parse(json!({ "url": "file:x.db", "schemaSync": { "enable": true } })).is_err());
    }

    #[test]
    fn token_is_required_for_remote_turso_only() {
        assert!(parse(json!({ "url": "libsql://db-org.turso.io" }))
            .unwrap_err()
            .starts_with("authToken"));
        assert!(
            parse(json!({ "url": "https://db-org.turso.io", "authToken": "" }))
                .unwrap_err()
                .starts_with("authToken")
        );
        assert!(parse(json!({ "url": "https://localhost:8080" })).is_ok());
        assert!(parse(json!({ "url": "libsql://[::1]:8080" })).is_ok());
        assert!(parse(json!({ "url": "http://sqld.internal:8080" })).is_ok());
    }

    #[test]
    fn bad_urls_name_the_option() {
        for bad in [
            "",
            "file:",
            "ws://x",
            "postgres://h/db",
            "not a url",
            "https://u:p@h",
            "libsql://h?authToken=x",
        ] {
            let e = parse(json!({ "url": bad, "authToken": "t" })).unwrap_err();
            assert!(e.starts_with("url"), "{bad}: {e}");
        }
        assert!(parse(json!({ "url": "file:x.db", "logTable": "" }))
            .unwrap_err()
            .starts_with("logTable"));
        assert!(
            parse(json!({ "url": "file:x.db", "schemaSync": { "strategy": "merge" } })).is_err()
        );
    }

    #[test]
    fn the_token_never_shows() {
        let c = parse(
            json!({ "url": "libsql://db.turso.io", "authToken": "tok-123", "logTable": "log" }),
        )
        .unwrap();
        let shown = format!("{c:?} {}", c.redacted());
        assert!(!shown.contains("tok-123"), "{shown}");
        assert_eq!(c.redacted()["authToken"], "***");
        assert_eq!(c.redacted()["schemaSync"]["strategy"], "alter");
    }
}
