//! Settings of the `mongodb` driver (the spec's MongoDB section): a connection string or
//! host/port/database/credentials, the client `options`, `logCollection`; and the checks of
//! database and collection names.

use std::time::Duration;

use mongodb::options::{
    Acknowledgment, ClientOptions, ConnectionString, Credential, ServerAddress, WriteConcern,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Route;
use crate::error::{redact, ConfigError};
use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MongoDbConfig {
    /// Any MongoDB URI (`mongodb://`, `mongodb+srv://`, several hosts, options in the query).
    /// Takes precedence over host/port/username/password.
    #[serde(default)]
    pub connection_string: Option<Secret>,
    /// Default `localhost` (without a connection string).
    #[serde(default)]
    pub host: Option<String>,
    /// Default 27017.
    #[serde(default)]
    pub port: Option<u16>,
    /// The database; required unless the connection string names one (`.../mydb?...`).
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Client options, with the Node driver's names; they override the URI's.
    #[serde(default)]
    pub options: MongoOptions,
    /// A collection that receives one document per applied operation.
    #[serde(default)]
    pub log_collection: Option<String>,
    /// The database actually used (`database`, else the URI's), set by `validated`.
    #[serde(skip)]
    pub db: String,
    /// Tests only: write with per-collection `update`/`delete` commands even on a server that
    /// takes the client-level `bulkWrite` (the path older servers get).
    #[doc(hidden)]
    #[serde(skip)]
    pub per_collection_writes: bool,
}

/// The spec's `options` object: pool sizes, timeouts, write concern. `useUnifiedTopology` and
/// `useNewUrlParser` (Node driver 3.x flags) are accepted and have no effect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MongoOptions {
    #[serde(default)]
    pub max_pool_size: Option<u32>,
    #[serde(default)]
    pub min_pool_size: Option<u32>,
    #[serde(default)]
    pub max_connecting: Option<u32>,
    #[serde(default, rename = "maxIdleTimeMS")]
    pub max_idle_time_ms: Option<u64>,
    #[serde(default, rename = "serverSelectionTimeoutMS")]
    pub server_selection_timeout_ms: Option<u64>,
    #[serde(default, rename = "connectTimeoutMS")]
    pub connect_timeout_ms: Option<u64>,
    /// The Rust driver has no socket timeout: this bounds each write round trip instead.
    #[serde(default, rename = "socketTimeoutMS")]
    pub socket_timeout_ms: Option<u64>,
    #[serde(default, rename = "heartbeatFrequencyMS")]
    pub heartbeat_frequency_ms: Option<u64>,
    #[serde(default)]
    pub app_name: Option<String>,
    #[serde(default)]
    pub replica_set: Option<String>,
    #[serde(default)]
    pub direct_connection: Option<bool>,
    #[serde(default)]
    pub retry_writes: Option<bool>,
    #[serde(default)]
    pub auth_source: Option<String>,
    /// Write concern: a number of nodes, `'majority'` or a tag set name.
    #[serde(default)]
    pub w: Option<WValue>,
    /// Journal acknowledgment.
    #[serde(default)]
    pub j: Option<bool>,
    /// Write concern timeout in milliseconds (`wtimeoutMS` also accepted).
    #[serde(default, alias = "wtimeoutMS")]
    pub wtimeout: Option<u64>,
    /// The Node driver's nested form `{ w, j, wtimeout }`.
    #[serde(default)]
    pub write_concern: Option<WriteConcernOption>,
    #[serde(default)]
    pub use_unified_topology: Option<bool>,
    #[serde(default)]
    pub use_new_url_parser: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WValue {
    Nodes(u32),
    Tag(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteConcernOption {
    #[serde(default)]
    pub w: Option<WValue>,
    #[serde(default)]
    pub j: Option<bool>,
    #[serde(default, alias = "wtimeoutMS")]
    pub wtimeout: Option<u64>,
}

impl MongoDbConfig {
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        let uri_db = match &self.connection_string {
            Some(uri) => {
                let parsed = ConnectionString::parse(uri.expose()).map_err(|e| {
                    ConfigError::new(
                        "connectionString",
                        format!(
                            "not a MongoDB connection string: {}",
                            redact(&e.kind.to_string()).replace(uri.expose(), "…")
                        ),
                        "use mongodb://user:pass@host:27017/db or mongodb+srv://user:pass@cluster.example.net/db",
                    )
                })?;
                parsed.default_database.clone()
            }
            None => None,
        };
        if self.connection_string.is_some() && (self.username.is_some() || self.password.is_some())
        {
            return Err(ConfigError::new(
                "username",
                "username/password are ignored when a connectionString is given",
                "put the credentials in the connection string (mongodb://user:pass@host/db), or drop connectionString",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(ConfigError::new(
                if self.username.is_some() {
                    "password"
                } else {
                    "username"
                },
                "username and password go together",
                "give both, or neither for a server without authentication",
            ));
        }
        self.db = match self.database.clone().or(uri_db) {
            Some(db) => db,
            None => {
                return Err(ConfigError::new(
                    "database",
                    "no database is named",
                    "set database: 'mydb', or end the connection string's path with it (mongodb://host/mydb)",
                ))
            }
        };
        check_database_name(&self.db)?;
        if let Some(log) = &self.log_collection {
            check_collection_name("logCollection", log)?;
        }
        self.write_concern()?;
        Ok(self)
    }

    /// The write concern from `options` (`w`/`j`/`wtimeout`, or `writeConcern: {...}`), if any.
    pub fn write_concern(&self) -> Result<Option<WriteConcern>, ConfigError> {
        let nested = self.options.write_concern.clone().unwrap_or_default();
        let w = self.options.w.clone().or(nested.w);
        let j = self.options.j.or(nested.j);
        let wtimeout = self.options.wtimeout.or(nested.wtimeout);
        if w.is_none() && j.is_none() && wtimeout.is_none() {
            return Ok(None);
        }
        let w = match w {
            None => None,
            Some(WValue::Nodes(n)) => Some(Acknowledgment::Nodes(n)),
            Some(WValue::Tag(t)) if t == "majority" => Some(Acknowledgment::Majority),
            Some(WValue::Tag(t)) if !t.is_empty() => Some(Acknowledgment::Custom(t)),
            Some(WValue::Tag(_)) => {
                return Err(ConfigError::new(
                    "options.w",
                    "the write concern is empty",
                    "use a number of nodes (1), 'majority' or a tag set name",
                ))
            }
        };
        let mut wc = WriteConcern::default();
        wc.w = w;
        wc.journal = j;
        wc.w_timeout = wtimeout.map(Duration::from_millis);
        if matches!(wc.w, Some(Acknowledgment::Nodes(0))) && j == Some(true) {
            return Err(ConfigError::new(
                "options.j",
                "journal acknowledgment needs an acknowledged write concern",
                "use w: 1 or more (or 'majority') with j: true",
            ));
        }
        Ok(Some(wc))
    }

    /// The driver's client options. Async: a `mongodb+srv://` URI is resolved through DNS.
    pub async fn client_options(&self) -> Result<ClientOptions, String> {
        let mut opts = match &self.connection_string {
            Some(uri) => ClientOptions::parse(uri.expose()).await.map_err(|e| {
                format!(
                    "MongoDB connection string: {}",
                    redact(&e.kind.to_string()).replace(uri.expose(), "…")
                )
            })?,
            None => {
                let mut o = ClientOptions::default();
                o.hosts = vec![ServerAddress::Tcp {
                    host: self.host.clone().unwrap_or_else(|| "localhost".into()),
                    port: Some(self.port.unwrap_or(27017)),
                }];
                if let (Some(user), Some(pass)) = (&self.username, &self.password) {
                    let mut c = Credential::default();
                    c.username = Some(user.clone());
                    c.password = Some(pass.expose().to_string());
                    // As in mongodb://user:pass@host/db: the credentials belong to the database.
                    c.source = Some(self.db.clone());
                    o.credential = Some(c);
                }
                o
            }
        };
        let o = &self.options;
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        macro_rules! set {
            ($field:ident, $value:expr) => {
                if let Some(v) = $value {
                    opts.$field = Some(v);
                }
            };
        }
        set!(max_pool_size, o.max_pool_size);
        set!(min_pool_size, o.min_pool_size);
        set!(max_connecting, o.max_connecting);
        set!(max_idle_time, ms(o.max_idle_time_ms));
        set!(server_selection_timeout, ms(o.server_selection_timeout_ms));
        set!(connect_timeout, ms(o.connect_timeout_ms));
        set!(heartbeat_freq, ms(o.heartbeat_frequency_ms));
        set!(app_name, o.app_name.clone());
        set!(repl_set_name, o.replica_set.clone());
        set!(direct_connection, o.direct_connection);
        set!(retry_writes, o.retry_writes);
        if let (Some(source), Some(c)) = (&o.auth_source, opts.credential.as_mut()) {
            c.source = Some(source.clone());
        }
        if let Some(wc) = self.write_concern().map_err(|e| e.to_string())? {
            opts.write_concern = Some(wc);
        }
        if opts.app_name.is_none() {
            opts.app_name = Some("s3db-replicator".into());
        }
        Ok(opts)
    }

    /// The bound on one write round trip (`options.socketTimeoutMS`).
    pub fn round_trip_timeout(&self) -> Option<Duration> {
        self.options.socket_timeout_ms.map(Duration::from_millis)
    }

    pub fn redacted(&self) -> Value {
        let mut v = json!({ "database": self.db });
        if let Some(uri) = &self.connection_string {
            v["connectionString"] = Value::String(redact(uri.expose()));
        } else {
            v["host"] = json!(self.host.clone().unwrap_or_else(|| "localhost".into()));
            v["port"] = json!(self.port.unwrap_or(27017));
        }
        if let Some(user) = &self.username {
            v["username"] = json!(user);
            v["password"] = json!("***");
        }
        if let Some(log) = &self.log_collection {
            v["logCollection"] = json!(log);
        }
        v
    }
}

/// MongoDB's rules for database names (no `/\. "$*<>:|?`, no NUL, at most 63 bytes).
pub(crate) fn check_database_name(name: &str) -> Result<(), ConfigError> {
    let bad = name.chars().find(|c| "/\\. \"$*<>:|?\0".contains(*c));
    if name.is_empty() || name.len() > 63 || bad.is_some() {
        return Err(ConfigError::new(
            "database",
            format!(
                "'{}' is not a valid MongoDB database name{}",
                name.escape_default(),
                bad.map(|c| format!(" (it contains '{}')", c.escape_default()))
                    .unwrap_or_default()
            ),
            "use 1 to 63 characters without / \\ . space \" $ * < > : | ?",
        ));
    }
    Ok(())
}

/// MongoDB's rules for collection names: not empty, no `$` or NUL, not in the `system.`
/// namespace, at most 200 bytes (the namespace limit with the database name).
pub(crate) fn check_collection_name(at: &str, name: &str) -> Result<(), ConfigError> {
    let reason = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.contains('$') || name.contains('\0') {
        Some("contains '$' or a NUL character".to_string())
    } else if name.starts_with("system.") {
        Some("is in the reserved system. namespace".to_string())
    } else if name.starts_with('.') || name.ends_with('.') {
        Some("starts or ends with '.'".to_string())
    } else if name.len() > 200 {
        Some(format!("is {} bytes long (at most 200)", name.len()))
    } else {
        None
    };
    match reason {
        Some(r) => Err(ConfigError::new(
            at,
            format!("collection name '{}' {r}", name.escape_default()),
            "use letters, digits, '_', '-' and inner '.', e.g. 'users' or 'app.users'",
        )),
        None => Ok(()),
    }
}

/// Every route's collection is a valid name (checked at construction, naming the resource).
pub(crate) fn check_routes(routes: &[Route]) -> Result<(), ConfigError> {
    for r in routes {
        check_collection_name(&format!("resources.{}", r.source), &r.dest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_resources;

    fn parse(v: Value) -> Result<MongoDbConfig, ConfigError> {
        serde_json::from_value::<MongoDbConfig>(v)
            .map_err(|e| ConfigError::new("", e.to_string(), ""))?
            .validated()
    }

    #[test]
    fn the_spec_forms_parse() {
        let c = parse(json!({ "host": "localhost", "port": 27017, "database": "production_db",
            "username": "replicator_user", "password": "secure_password", "logCollection": "replication_log" }))
        .unwrap();
        assert_eq!(c.db, "production_db");
        let atlas = parse(json!({ "connectionString": "mongodb+srv://user:pass@cluster0.mongodb.net/mydb?retryWrites=true&w=majority",
            "database": "production" }))
        .unwrap();
        assert_eq!(atlas.db, "production");
        let rs = parse(json!({ "connectionString": "mongodb://host1:27017,host2:27017,host3:27017/mydb?replicaSet=myReplicaSet&readPreference=primaryPreferred",
            "options": { "w": "majority", "j": true, "wtimeout": 5000 } }))
        .unwrap();
        assert_eq!(rs.db, "mydb");
        let wc = rs.write_concern().unwrap().unwrap();
        assert_eq!(wc.w, Some(Acknowledgment::Majority));
        assert_eq!(wc.journal, Some(true));
        assert_eq!(wc.w_timeout, Some(Duration::from_millis(5000)));
        parse(json!({ "connectionString": "mongodb://admin:secret@h1:27017,h2:27017/mydb?replicaSet=rs0",
            "options": { "useUnifiedTopology": true, "useNewUrlParser": true, "maxPoolSize": 50,
                         "minPoolSize": 10, "serverSelectionTimeoutMS": 5000, "socketTimeoutMS": 45000 } }))
        .unwrap();
    }

    #[test]
    fn bad_settings_name_the_option_and_never_the_password() {
        let e = parse(json!({ "host": "h" })).unwrap_err();
        assert_eq!(e.path, "database");
        let e = parse(json!({ "connectionString": "mongodb://u:hunter2@h" })).unwrap_err();
        assert_eq!(e.path, "database");
        let e = parse(json!({ "connectionString": "postgres://u:hunter2@h/db" })).unwrap_err();
        assert_eq!(e.path, "connectionString");
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
        let e = parse(json!({ "database": "a.b" })).unwrap_err();
        assert!(e.reason.contains("'.'"), "{e:?}");
        let e = parse(json!({ "database": "d", "username": "u" })).unwrap_err();
        assert_eq!(e.path, "password");
        let e = parse(json!({ "database": "d", "options": { "w": "" } })).unwrap_err();
        assert_eq!(e.path, "options.w");
        assert!(parse(json!({ "database": "d", "options": { "poolSize": 5 } })).is_err());
    }

    #[test]
    fn credentials_are_redacted() {
        let c =
            parse(json!({ "connectionString": "mongodb://admin:hunter2@h1,h2/db?replicaSet=rs0" }))
                .unwrap();
        let shown = format!("{} {c:?}", c.redacted());
        assert!(
            shown.contains("admin") && !shown.contains("hunter2"),
            "{shown}"
        );
        let c = parse(json!({ "database": "d", "username": "u", "password": "hunter2" })).unwrap();
        let shown = format!("{} {c:?}", c.redacted());
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn collection_names_are_checked() {
        let routes = parse_resources(
            "r",
            &json!({ "users": "users", "orders": [{ "collection": "orders_active" }, { "collection": "a.b" }] }),
            &[],
        )
        .unwrap();
        check_routes(&routes).unwrap();
        for bad in ["a$b", "system.users", "x.", "a\u{0}b"] {
            let routes = parse_resources("r", &json!({ "users": bad }), &[]).unwrap();
            let e = check_routes(&routes).unwrap_err();
            assert_eq!(e.path, "resources.users", "{bad}");
        }
    }
}
