use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{redact, ConfigError};
use crate::secret::Secret;

const fn default_timeout_ms() -> u64 {
    5_000
}
const fn default_retries() -> u32 {
    3
}
const fn default_retry_delay_ms() -> u64 {
    1_000
}
const fn default_batch_size() -> usize {
    100
}
fn default_method() -> String {
    "POST".into()
}
fn default_retry_on_status() -> Vec<u16> {
    vec![429, 500, 502, 503, 504]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryStrategy {
    Exponential,
    Fixed,
}

/// `auth` of the webhook driver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer { token: Secret },
    /// `Authorization: Basic base64(username:password)`.
    Basic { username: String, password: Secret },
    /// `<header>: <value>`.
    Apikey { header: String, value: Secret },
}

/// Settings of the `webhook` driver (the spec's Webhook section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookConfig {
    /// Endpoint, `http://` or `https://`.
    pub url: String,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Per-request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout: u64,
    /// Retries after the first attempt.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay in milliseconds.
    #[serde(default = "default_retry_delay_ms")]
    pub retry_delay: u64,
    #[serde(default = "default_strategy")]
    pub retry_strategy: RetryStrategy,
    /// HTTP statuses worth retrying; any other non-2xx status fails the change at once.
    #[serde(default = "default_retry_on_status")]
    pub retry_on_status: Vec<u16>,
    /// Send several changes in one request as `{ "batch": [...] }`.
    #[serde(default)]
    pub batch: bool,
    /// Most changes in one batch request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

const fn default_strategy() -> RetryStrategy {
    RetryStrategy::Exponential
}

impl WebhookConfig {
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        let parsed = reqwest::Url::parse(&self.url).map_err(|e| {
            ConfigError::new(
                "url",
                format!("'{}' is not a valid URL ({e})", redact(&self.url)),
                "use an absolute http:// or https:// URL",
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "url",
                format!("unsupported scheme '{}'", parsed.scheme()),
                "use an http:// or https:// URL",
            ));
        }
        self.method = self.method.to_ascii_uppercase();
        if !matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            return Err(ConfigError::new(
                "method",
                format!("'{}' cannot carry a payload", self.method),
                "use POST, PUT or PATCH",
            ));
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                return Err(ConfigError::new(
                    format!("headers.{name}"),
                    "not a valid HTTP header",
                    "use ASCII header names and values without line breaks",
                ));
            }
        }
        match &self.auth {
            Some(Auth::Bearer { token }) if token.is_empty() => {
                return Err(ConfigError::new(
                    "auth.token",
                    "the bearer token is empty",
                    "set auth.token (e.g. from an environment variable)",
                ))
            }
            Some(Auth::Basic { username, .. }) if username.is_empty() => {
                return Err(ConfigError::new(
                    "auth.username",
                    "the username is empty",
                    "set auth.username and auth.password",
                ))
            }
            Some(Auth::Apikey { header, value }) => {
                if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(ConfigError::new(
                        "auth.header",
                        format!("'{header}' is not a valid header name"),
                        "e.g. header: 'X-API-Key'",
                    ));
                }
                if value.is_empty()
                    || reqwest::header::HeaderValue::from_str(value.expose()).is_err()
                {
                    return Err(ConfigError::new(
                        "auth.value",
                        "the API key is empty or not a valid header value",
                        "set auth.value",
                    ));
                }
            }
            _ => {}
        }
        if self.timeout == 0 {
            return Err(ConfigError::new(
                "timeout",
                "0 ms is not a timeout",
                "use milliseconds, e.g. 5000",
            ));
        }
        if self.retries > 100 {
            return Err(ConfigError::new(
                "retries",
                format!("{} retries is too many", self.retries),
                "use 0 to 100",
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(ConfigError::new(
                "batchSize",
                format!("{} is out of range", self.batch_size),
                "use 1 to 10000",
            ));
        }
        if let Some(bad) = self
            .retry_on_status
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(ConfigError::new(
                "retryOnStatus",
                format!("{bad} is not an HTTP status"),
                "list statuses such as [429, 500, 502, 503, 504]",
            ));
        }
        Ok(self)
    }

    pub fn redacted(&self) -> Value {
        json!({
            "url": redact(&self.url),
            "method": self.method,
            "headers": self.headers.keys().map(|k| (k.clone(), Value::String("***".into()))).collect::<serde_json::Map<_, _>>(),
            "auth": self.auth.as_ref().map(|a| match a { Auth::Bearer { .. } => "bearer", Auth::Basic { .. } => "basic", Auth::Apikey { .. } => "apikey" }),
            "timeout": self.timeout,
            "retries": self.retries,
            "retryDelay": self.retry_delay,
            "retryStrategy": match self.retry_strategy { RetryStrategy::Exponential => "exponential", RetryStrategy::Fixed => "fixed" },
            "retryOnStatus": self.retry_on_status,
            "batch": self.batch,
            "batchSize": self.batch_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<WebhookConfig, String> {
        serde_json::from_value::<WebhookConfig>(v)
            .map_err(|e| e.to_string())?
            .validated()
            .map_err(|e| format!("{}: {}", e.path, e.reason))
    }

    #[test]
    fn minimal_config_parses_with_the_spec_defaults() {
        let c = parse(json!({ "url": "http://127.0.0.1:1/hook" })).unwrap();
        assert_eq!(
            (c.method.as_str(), c.timeout, c.retries, c.retry_delay),
            ("POST", 5000, 3, 1000)
        );
        assert_eq!(c.retry_strategy, RetryStrategy::Exponential);
        assert_eq!(c.retry_on_status, vec![429, 500, 502, 503, 504]);
        assert!(!c.batch);
        assert_eq!(c.batch_size, 100);
    }

    #[test]
    fn unknown_field_is_rejected() {
        assert!(parse(json!({ "url": "http://x/", "retry": 3 }))
            .unwrap_err()
            .contains("retry"));
    }

    #[test]
    fn auth_shapes_parse_and_are_checked() {
        assert!(
            parse(json!({ "url": "http://x/", "auth": { "type": "bearer", "token": "t" } }))
                .is_ok()
        );
        assert!(parse(json!({ "url": "http://x/", "auth": { "type": "basic", "username": "u", "password": "p" } })).is_ok());
        assert!(parse(json!({ "url": "http://x/", "auth": { "type": "apikey", "header": "X-API-Key", "value": "k" } })).is_ok());
        assert!(parse(json!({ "url": "http://x/", "auth": { "type": "oauth" } })).is_err());
        assert!(
            parse(json!({ "url": "http://x/", "auth": { "type": "bearer", "token": "" } }))
                .unwrap_err()
                .starts_with("auth.token")
        );
        assert!(parse(json!({ "url": "http://x/", "auth": { "type": "apikey", "header": "bad header", "value": "k" } })).unwrap_err().starts_with("auth.header"));
    }

    #[test]
    fn bad_values_name_the_option() {
        assert!(parse(json!({ "url": "not a url" }))
            .unwrap_err()
            .starts_with("url"));
        assert!(parse(json!({ "url": "ftp://x/" }))
            .unwrap_err()
            .starts_with("url"));
        assert!(parse(json!({ "url": "http://x/", "method": "GET" }))
            .unwrap_err()
            .starts_with("method"));
        assert!(parse(json!({ "url": "http://x/", "retryStrategy": "linear" })).is_err());
        assert!(parse(json!({ "url": "http://x/", "retryOnStatus": [99] }))
            .unwrap_err()
            .starts_with("retryOnStatus"));
    }

    #[test]
    fn secrets_never_show() {
        let c = parse(json!({ "url": "https://u:pw@x/", "auth": { "type": "bearer", "token": "tok123" }, "headers": { "X-Secret": "s3cr3t" } })).unwrap();
        let shown = format!("{:?} {}", c.auth, c.redacted());
        assert!(
            !shown.contains("tok123") && !shown.contains("s3cr3t") && !shown.contains(":pw@"),
            "{shown}"
        );
    }
}
