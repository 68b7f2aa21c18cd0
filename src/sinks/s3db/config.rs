use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{redact, ConfigError};

/// Settings of the `s3db` driver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3dbConfig {
    /// Destination database: `memory://bucket/prefix`, `file://./path`, `s3://KEY:SECRET@bucket/prefix`.
    #[serde(default)]
    pub connection_string: Option<String>,
    /// Set by the plugin when the user passed an existing Database as `client`.
    #[serde(default)]
    pub client: bool,
    /// Passed to the destination Database as is.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub key_prefix: Option<String>,
    #[serde(default)]
    pub log_level: Option<String>,
    /// Create a destination resource that does not exist yet (with the source's attributes).
    #[serde(default = "default_true")]
    pub create_resources: bool,
}

const fn default_true() -> bool {
    true
}

impl S3dbConfig {
    pub fn validated(self) -> Result<Self, ConfigError> {
        match (&self.connection_string, self.client) {
            (None, false) => Err(ConfigError::new(
                "connectionString",
                "the s3db driver needs a destination",
                "set config.connectionString (e.g. 'memory://backup' or 'file://./backup') or pass an existing Database as client",
            )),
            (Some(_), true) => Err(ConfigError::new("client", "both client and connectionString are set", "keep one of them")),
            (Some(cs), false) if !cs.contains("://") => Err(ConfigError::new(
                "connectionString",
                // Not echoed: a malformed string may still hold credentials.
                "the value is not a connection string (no scheme://)",
                "use memory://bucket/prefix, file://./path or s3://KEY:SECRET@bucket/prefix",
            )),
            _ => Ok(self),
        }
    }

    pub fn redacted(&self) -> Value {
        json!({
            "connectionString": self.connection_string.as_deref().map(redact),
            "client": self.client,
            "createResources": self.create_resources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<S3dbConfig, ConfigError> {
        serde_json::from_value::<S3dbConfig>(v)
            .map_err(|e| ConfigError::new("", e.to_string(), ""))
            .and_then(S3dbConfig::validated)
    }

    #[test]
    fn minimal_config_parses() {
        let c = parse(json!({ "connectionString": "memory://b" })).unwrap();
        assert!(c.create_resources);
    }

    #[test]
    fn unknown_field_is_rejected() {
        assert!(
            parse(json!({ "connectionString": "memory://b", "conectionString": "x" })).is_err()
        );
    }

    #[test]
    fn destination_is_required_and_secrets_are_redacted() {
        assert_eq!(parse(json!({})).unwrap_err().path, "connectionString");
        let e = parse(json!({ "connectionString": "KEY:hunter2@bucket" })).unwrap_err();
        assert!(!format!("{e:?}").contains("hunter2"));
        let c = parse(json!({ "connectionString": "s3://KEY:hunter2@bucket" })).unwrap();
        assert!(!c.redacted().to_string().contains("hunter2"));
    }
}
