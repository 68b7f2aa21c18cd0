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
    /// An S3-compatible server (MinIO, moto, R2 ...) for an `s3://` destination. s3db.js sends
    /// `s3://` to AWS whatever its query says, so the plugin hands it s3db.js's path-style form
    /// `http(s)://KEY:SECRET@host:port/bucket/prefix` instead.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Passed to the destination Database as is (as the stock driver does).
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
            _ => self.check_endpoint().map(|()| self),
        }
    }

    fn check_endpoint(&self) -> Result<(), ConfigError> {
        let Some(endpoint) = &self.endpoint else {
            return Ok(());
        };
        // scheme://host[:port] only: s3db.js reads the bucket from the first path segment.
        let authority = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .map(|rest| rest.trim_end_matches('/'));
        let plain = authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', '@', '?', '#']));
        if !plain {
            return Err(ConfigError::new(
                "endpoint",
                format!("'{}' is not a server URL", redact(endpoint)),
                "use the server's URL without credentials or path, e.g. endpoint: 'http://127.0.0.1:9000'",
            ));
        }
        if !self
            .connection_string
            .as_deref()
            .is_some_and(|c| c.starts_with("s3://"))
        {
            return Err(ConfigError::new(
                "endpoint",
                "endpoint only applies to an s3:// connectionString",
                "use connectionString: 's3://KEY:SECRET@bucket/prefix' with it, or drop endpoint",
            ));
        }
        Ok(())
    }

    pub fn redacted(&self) -> Value {
        json!({
            "connectionString": self.connection_string.as_deref().map(redact_connection_string),
            "client": self.client,
            "endpoint": self.endpoint,
            "createResources": self.create_resources,
        })
    }
}

/// The password of the URL and an s3db.js `sessionToken` query value, as `***`.
fn redact_connection_string(cs: &str) -> String {
    let shown = redact(cs);
    let Some((head, query)) = shown.split_once('?') else {
        return shown;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("sessiontoken") => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
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
        let c =
            parse(json!({ "connectionString": "s3://KEY:hunter2@bucket/p?sessionToken=t0k&x=1" }))
                .unwrap();
        assert_eq!(
            c.redacted()["connectionString"],
            "s3://KEY:***@bucket/p?sessionToken=***&x=1"
        );
    }

    #[test]
    fn endpoint_needs_an_s3_destination_and_a_plain_url() {
        let ok = json!({ "connectionString": "s3://K:S@b/p", "endpoint": "http://127.0.0.1:9000" });
        assert!(parse(ok).is_ok());
        for bad in [
            json!({ "connectionString": "file://./b", "endpoint": "http://127.0.0.1:9000" }),
            json!({ "connectionString": "s3://K:S@b", "endpoint": "127.0.0.1:9000" }),
            json!({ "connectionString": "s3://K:S@b", "endpoint": "http://K:hunter2@h" }),
            json!({ "connectionString": "s3://K:S@b", "endpoint": "http://h:9000/base" }),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.path, "endpoint");
            assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        }
    }
}
