//! `config` of the `mysql` / `mariadb` drivers (one shape) and of `planetscale`.

use std::str::FromStr;

use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

use crate::error::{redact, ConfigError};
use crate::secret::Secret;
use crate::sinks::postgres::{
    check_connect_timeout, check_connection_limit, check_log_table, check_port,
    default_connect_timeout, default_connection_limit, schema_sync_json, Ssl,
};
use crate::sinks::sql::SchemaSyncConfig;

/// Settings of the `mysql` and `mariadb` drivers (the spec's MySQL / MariaDB section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MySqlConfig {
    /// `mysql://user:password@host:3306/db` (or `mariadb://`). The other connection options,
    /// when also given, override its parts.
    #[serde(default, alias = "url")]
    pub connection_string: Option<Secret>,
    #[serde(default)]
    pub host: Option<String>,
    /// Default 3306.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default, alias = "username")]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Default: TLS when the server offers it, unverified (MySQL's `PREFERRED`).
    #[serde(default)]
    pub ssl: Option<Ssl>,
    /// Pool size.
    #[serde(default = "default_connection_limit")]
    pub connection_limit: u32,
    /// How long a write waits for a connection (connecting included) before it fails
    /// retryably, in milliseconds (mysql2's name; default 10000).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Audit table receiving one row per replicated operation.
    #[serde(default)]
    pub log_table: Option<String>,
    #[serde(default)]
    pub schema_sync: SchemaSyncConfig,
}

/// Settings of the `planetscale` driver: MySQL protocol over TLS (on by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlanetScaleConfig {
    /// `mysql://username:password@host/database` (PlanetScale's connection string), instead of
    /// `host` / `username` / `password`.
    #[serde(default, alias = "connectionString")]
    pub url: Option<Secret>,
    #[serde(default)]
    pub host: Option<String>,
    /// Default 3306.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default, alias = "user")]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Default: TLS with the certificate verified. `false` turns TLS off (local tests only).
    #[serde(default)]
    pub ssl: Option<Ssl>,
    #[serde(default = "default_connection_limit")]
    pub connection_limit: u32,
    /// How long a write waits for a connection (connecting included) before it fails
    /// retryably, in milliseconds (mysql2's name; default 10000).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    #[serde(default)]
    pub log_table: Option<String>,
    #[serde(default)]
    pub schema_sync: SchemaSyncConfig,
}

/// What both shapes hold once parsed.
pub(crate) struct Connection<'a> {
    pub option: &'static str,
    pub url: Option<&'a Secret>,
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub database: Option<&'a str>,
    pub user: Option<&'a str>,
    pub password: Option<&'a Secret>,
    pub ssl: Option<&'a Ssl>,
    /// TLS when neither `ssl` nor the URL says otherwise.
    pub default_tls: bool,
}

impl Connection<'_> {
    fn options(&self) -> Result<MySqlConnectOptions, ConfigError> {
        let example = "mysql://user:password@host:3306/database";
        let mut url_sets_ssl = false;
        let mut o = match self.url {
            Some(u) => {
                let s = u.expose();
                // sqlx reads `mysql://`; `mariadb://` is the same protocol.
                let s = match s.strip_prefix("mariadb://") {
                    Some(rest) => format!("mysql://{rest}"),
                    None if s.starts_with("mysql://") => s.to_string(),
                    None => {
                        return Err(ConfigError::new(
                            self.option,
                            "not a MySQL connection string",
                            format!("use {example}"),
                        ));
                    }
                };
                url_sets_ssl = s.split_once('?').is_some_and(|(_, q)| {
                    q.split('&')
                        .any(|kv| kv.starts_with("ssl-mode=") || kv.starts_with("sslmode="))
                });
                MySqlConnectOptions::from_str(&s).map_err(|e| {
                    ConfigError::new(
                        self.option,
                        format!("cannot be parsed ({})", redact(&e.to_string())),
                        format!("use {example}"),
                    )
                })?
            }
            None if self.host.is_none() => {
                return Err(ConfigError::new(
                    self.option,
                    "no server to connect to",
                    format!(
                        "set config.{} ({example}) or config.host, database, user and password",
                        self.option
                    ),
                ))
            }
            None => MySqlConnectOptions::new(),
        };
        if let Some(h) = self.host {
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
        }
        if let Some(d) = self.database {
            o = o.database(d);
        }
        if let Some(u) = self.user {
            o = o.username(u);
        }
        if let Some(p) = self.password.filter(|p| !p.is_empty()) {
            o = o.password(p.expose());
        }
        match self.ssl {
            None if self.default_tls && !url_sets_ssl => {
                o = o.ssl_mode(MySqlSslMode::VerifyIdentity)
            }
            None => {}
            Some(Ssl::Disabled) => o = o.ssl_mode(MySqlSslMode::Disabled),
            Some(Ssl::Enabled(t)) => {
                o = o.ssl_mode(if t.reject_unauthorized {
                    MySqlSslMode::VerifyIdentity
                } else {
                    MySqlSslMode::Required
                });
                if let Some(ca) = &t.ca {
                    o = o.ssl_ca_from_pem(ca.0.clone().into_bytes());
                }
                if let Some(c) = &t.cert {
                    o = o.ssl_client_cert_from_pem(c.0.as_bytes());
                }
                if let Some(k) = &t.key {
                    o = o.ssl_client_key_from_pem(k.expose().as_bytes());
                }
            }
        }
        // Vitess (PlanetScale) refuses to change these sql_modes; the statements never use `||`.
        Ok(o.pipes_as_concat(false).no_engine_substitution(false))
    }
}

impl MySqlConfig {
    pub fn validated(self) -> Result<Self, ConfigError> {
        check_connection_limit(self.connection_limit)?;
        check_connect_timeout("connectTimeout", self.connect_timeout)?;
        check_port(self.port)?;
        check_log_table(&self.log_table)?;
        self.connect_options()?;
        Ok(self)
    }

    fn connection(&self) -> Connection<'_> {
        Connection {
            option: "connectionString",
            url: self.connection_string.as_ref(),
            host: self.host.as_deref(),
            port: self.port,
            database: self.database.as_deref(),
            user: self.user.as_deref(),
            password: self.password.as_ref(),
            ssl: self.ssl.as_ref(),
            default_tls: false,
        }
    }

    /// The sqlx connection options (never printed: they hold the password).
    pub(crate) fn connect_options(&self) -> Result<MySqlConnectOptions, ConfigError> {
        self.connection().options()
    }

    /// The configuration as JSON, without secrets.
    pub fn redacted(&self) -> Value {
        json!({
            "connectionString": self.connection_string.as_ref().map(|c| redact(c.expose())),
            "host": self.host,
            "port": self.port.unwrap_or(3306),
            "database": self.database,
            "user": self.user,
            "password": self.password.as_ref().map(|_| "***"),
            "ssl": self.ssl.as_ref().map(Ssl::redacted),
            "connectionLimit": self.connection_limit,
            "connectTimeout": self.connect_timeout,
            "logTable": self.log_table,
            "schemaSync": schema_sync_json(&self.schema_sync),
        })
    }
}

impl PlanetScaleConfig {
    pub fn validated(self) -> Result<Self, ConfigError> {
        check_connection_limit(self.connection_limit)?;
        check_connect_timeout("connectTimeout", self.connect_timeout)?;
        check_port(self.port)?;
        check_log_table(&self.log_table)?;
        if self.url.is_none()
            && self.host.is_some()
            && self.username.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::new(
                "username",
                "no username",
                "set config.username and config.password (from the PlanetScale dashboard)",
            ));
        }
        self.connect_options()?;
        Ok(self)
    }

    fn connection(&self) -> Connection<'_> {
        Connection {
            option: "url",
            url: self.url.as_ref(),
            host: self.host.as_deref(),
            port: self.port,
            database: self.database.as_deref(),
            user: self.username.as_deref(),
            password: self.password.as_ref(),
            ssl: self.ssl.as_ref(),
            default_tls: true,
        }
    }

    pub(crate) fn connect_options(&self) -> Result<MySqlConnectOptions, ConfigError> {
        self.connection().options()
    }

    pub fn redacted(&self) -> Value {
        json!({
            "url": self.url.as_ref().map(|c| redact(c.expose())),
            "host": self.host,
            "port": self.port.unwrap_or(3306),
            "database": self.database,
            "username": self.username,
            "password": self.password.as_ref().map(|_| "***"),
            "ssl": self.ssl.as_ref().map_or(json!(true), Ssl::redacted),
            "connectionLimit": self.connection_limit,
            "connectTimeout": self.connect_timeout,
            "logTable": self.log_table,
            "schemaSync": schema_sync_json(&self.schema_sync),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mysql(v: Value) -> Result<MySqlConfig, String> {
        serde_json::from_value::<MySqlConfig>(v)
            .map_err(|e| e.to_string())?
            .validated()
            .map_err(|e| format!("{}: {}", e.path, e.reason))
    }
    fn ps(v: Value) -> Result<PlanetScaleConfig, String> {
        serde_json::from_value::<PlanetScaleConfig>(v)
            .map_err(|e| e.to_string())?
            .validated()
            .map_err(|e| format!("{}: {}", e.path, e.reason))
    }
    fn mode(o: &MySqlConnectOptions) -> String {
        format!("{:?}", o.get_ssl_mode())
    }

    #[test]
    fn the_spec_example_parses_with_sane_defaults() {
        let c = mysql(json!({
            "host": "localhost", "port": 3306, "database": "production_db", "user": "replicator_user", "password": "secure_password",
            "connectionLimit": 10, "ssl": { "rejectUnauthorized": true }, "logTable": "replication_log"
        }))
        .unwrap();
        let o = c.connect_options().unwrap();
        assert_eq!(
            (
                o.get_host(),
                o.get_port(),
                o.get_database(),
                o.get_username()
            ),
            ("localhost", 3306, Some("production_db"), "replicator_user")
        );
        assert_eq!(mode(&o), "VerifyIdentity");
        let c = mysql(json!({ "host": "h" })).unwrap();
        assert_eq!(c.connection_limit, 10);
        assert_eq!(mode(&c.connect_options().unwrap()), "Preferred");
        assert!(!c.schema_sync.enabled && c.log_table.is_none());
        let c = mysql(json!({ "connectionString": "mariadb://u:p@db:3307/x" })).unwrap();
        let o = c.connect_options().unwrap();
        assert_eq!(
            (o.get_host(), o.get_port(), o.get_database()),
            ("db", 3307, Some("x"))
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(mysql(json!({ "host": "h", "pool": 3 }))
            .unwrap_err()
            .contains("pool"));
        assert!(mysql(json!({}))
            .unwrap_err()
            .starts_with("connectionString"));
        assert!(mysql(json!({ "connectionString": "postgres://h/d" }))
            .unwrap_err()
            .starts_with("connectionString"));
        assert!(mysql(json!({ "host": "h", "connectionLimit": 100000 }))
            .unwrap_err()
            .starts_with("connectionLimit"));
        assert!(mysql(json!({ "host": "h", "logTable": "a\u{0}b" }))
            .unwrap_err()
            .starts_with("logTable"));
        assert!(ps(json!({ "host": "h", "username": "u", "extra": 1 })).is_err());
        assert!(ps(json!({ "host": "h" }))
            .unwrap_err()
            .starts_with("username"));
        assert!(ps(json!({})).unwrap_err().starts_with("url"));
    }

    #[test]
    fn planetscale_verifies_tls_unless_told_otherwise() {
        let c = ps(
            json!({ "host": "aws.connect.psdb.cloud", "username": "u", "password": "pscale_pw_x" }),
        )
        .unwrap();
        assert_eq!(mode(&c.connect_options().unwrap()), "VerifyIdentity");
        let c = ps(json!({ "host": "127.0.0.1", "username": "root", "ssl": false })).unwrap();
        assert_eq!(mode(&c.connect_options().unwrap()), "Disabled");
        let c =
            ps(json!({ "url": "mysql://u:p@aws.connect.psdb.cloud/db?sslaccept=strict" })).unwrap();
        let o = c.connect_options().unwrap();
        assert_eq!(
            (mode(&o).as_str(), o.get_database()),
            ("VerifyIdentity", Some("db"))
        );
        let c = ps(json!({ "url": "mysql://u:p@h/db?ssl-mode=disabled" })).unwrap();
        assert_eq!(mode(&c.connect_options().unwrap()), "Disabled");
    }

    #[test]
    fn secrets_never_show() {
        let c = mysql(json!({ "connectionString": "mysql://u:hunter2@h/d", "password": "s3cr3t", "ssl": { "key": "KEYDATA" } })).unwrap();
        let shown = format!("{c:?} {}", c.redacted());
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t") && !shown.contains("KEYDATA"),
            "{shown}"
        );
        let p = ps(json!({ "url": "mysql://u:pscale_pw_abc@h/d" })).unwrap();
        let shown = format!("{p:?} {}", p.redacted());
        assert!(!shown.contains("pscale_pw_abc"), "{shown}");
        let e = mysql(json!({ "connectionString": "mysql://u:hunter2@h:port/d" })).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
