//! Error types of every layer, and the stable codes JavaScript sees as `err.code`.

use std::fmt;
use std::time::Duration;

/// Stable error codes, exposed to JavaScript as `error.code` (listed in `index.d.ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Config,
    Transform,
    SinkUnavailable,
    SinkRejected,
    Timeout,
    Stopped,
    NotFound,
    Schema,
    /// The JetStream outbox could not store a change (server unreachable past publishTimeoutMs).
    JetStream,
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Config => "ERR_CONFIG",
            Self::Transform => "ERR_TRANSFORM",
            Self::SinkUnavailable => "ERR_SINK_UNAVAILABLE",
            Self::SinkRejected => "ERR_SINK_REJECTED",
            Self::Timeout => "ERR_TIMEOUT",
            Self::Stopped => "ERR_STOPPED",
            Self::NotFound => "ERR_NOT_FOUND",
            Self::Schema => "ERR_SCHEMA",
            Self::JetStream => "ERR_JETSTREAM",
            Self::Internal => "ERR_INTERNAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration that cannot run. `path` names the option (`replicators[1].config.url`),
/// `reason` says what is wrong and `hint` how to fix it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
    pub hint: String,
}

impl ConfigError {
    pub fn new(
        path: impl Into<String>,
        reason: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
            hint: hint.into(),
        }
    }
}

/// How the engine should treat a failed write. Only a sink decides the kind; only
/// `engine::retry` decides what to do with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorKind {
    /// Transient (network, 5xx, timeout): retry with backoff.
    Retryable,
    /// The destination asked us to slow down; wait at least `retry_after` if it said so.
    Throttled { retry_after: Option<Duration> },
    /// Retrying cannot help (4xx, validation, constraint): fail the record.
    Permanent,
}

/// A destination write that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub kind: ErrorKind,
    pub message: String,
    /// The attempt ran out of time (reported as `ERR_TIMEOUT`).
    pub timed_out: bool,
    /// The destination's schema does not match the resource (`ERR_SCHEMA`): with schema sync's
    /// `onMismatch: 'error'` this, and only this, stops the plugin's installation.
    pub schema_mismatch: bool,
}

impl SinkError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            message: message.into(),
            timed_out: false,
            schema_mismatch: false,
        }
    }
    /// A timeout: retryable, reported with `ERR_TIMEOUT`.
    pub fn timed_out(message: impl Into<String>) -> Self {
        Self {
            timed_out: true,
            ..Self::retryable(message)
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
            timed_out: false,
            schema_mismatch: false,
        }
    }
    pub fn throttled(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            kind: ErrorKind::Throttled { retry_after },
            message: message.into(),
            timed_out: false,
            schema_mismatch: false,
        }
    }
    /// A permanent error saying the destination's schema does not match (`ERR_SCHEMA`).
    pub fn schema_mismatch(message: impl Into<String>) -> Self {
        Self {
            schema_mismatch: true,
            ..Self::permanent(message)
        }
    }
    pub fn is_retryable(&self) -> bool {
        !matches!(self.kind, ErrorKind::Permanent)
    }
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            _ if self.timed_out => ErrorCode::Timeout,
            _ if self.schema_mismatch => ErrorCode::Schema,
            ErrorKind::Permanent => ErrorCode::SinkRejected,
            _ => ErrorCode::SinkUnavailable,
        }
    }
}

/// Errors of the engine's public operations.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the replication engine is stopped; create a new plugin instance to replicate again")]
    Stopped,
    #[error("Replicator not found: {0}")]
    UnknownReplicator(String),
}

impl EngineError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Config(_) => ErrorCode::Config,
            Self::UnknownReplicator(_) => ErrorCode::NotFound,
            Self::Stopped => ErrorCode::Stopped,
        }
    }
}

/// Removes credentials from anything that may hold a URL or connection string, so that
/// no error message or log line ever echoes a password or token.
pub fn redact(text: &str) -> String {
    // scheme://user:password@host → scheme://user:***@host ; scheme://token@host → scheme://***@host
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str("***"),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Turns a serde message about the option at `path` into words a user acts on: the option,
/// the type it takes and the value given; an unknown key gets a "did you mean" hint. The
/// second part is a hint (empty when the first says it all).
pub fn describe_serde(message: &str, given: Option<&serde_json::Value>) -> (String, String) {
    let got = given.map(describe_value).unwrap_or_default();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, rest) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        return (
            format!("unknown option '{name}'"),
            format!(
                "{}the options here are: {}",
                did_you_mean(name, &known),
                known.join(", ")
            ),
        );
    }
    if message.starts_with("expected ") {
        return (format!("{message}, got {got}"), String::new());
    }
    if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        let expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
        let expected = match expected {
            "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)",
            "i64" | "i32" => "a whole number",
            "f64" | "f32" => "a number",
            "a boolean" => "true or false",
            "a sequence" => "an array",
            "a map" | "struct" => "an object",
            "" => "another type",
            other => other,
        };
        return (format!("expected {expected}, got {got}"), String::new());
    }
    (message.to_string(), String::new())
}

/// A value as an error message shows it: short, and strings quoted.
fn describe_value(v: &serde_json::Value) -> String {
    let text = v.to_string();
    let kind = match v {
        serde_json::Value::Null => return "null".into(),
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    };
    let shown: String = text.chars().take(40).collect();
    let more = if text.chars().count() > 40 { "…" } else { "" };
    format!("{kind} {shown}{more}")
}

/// `"did you mean 'batchSize'? "` when `given` is a likely misspelling of one of `known`
/// (edit distance at most 2, or 3 for long names), else `""`. Starts a hint.
pub fn did_you_mean(given: &str, known: &[&str]) -> String {
    let lower = given.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|&(d, k)| d <= if k.len() > 8 { 3 } else { 2 })
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| format!("did you mean '{k}'? "))
        .unwrap_or_default()
}

/// Levenshtein distance (with adjacent transpositions counted as one edit).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_the_type_and_the_value() {
        let (reason, hint) = describe_serde(
            "invalid type: string \"10\", expected usize",
            Some(&serde_json::json!("10")),
        );
        assert_eq!(
            reason,
            "expected a whole number (0 or more), got string \"10\""
        );
        assert_eq!(hint, "");
        let (reason, _) = describe_serde(
            "expected false or an object",
            Some(&serde_json::json!("yes")),
        );
        assert_eq!(reason, "expected false or an object, got string \"yes\"");
        let (reason, hint) = describe_serde("unknown field `fsyncIntervl`, expected one of `dir`, `fsync`, `fsyncIntervalMs`, `segmentBytes`",
            None,
        );
        assert_eq!(reason, "unknown option 'fsyncIntervl'");
        assert!(
            hint.starts_with("did you mean 'fsyncIntervalMs'? "),
            "{hint}"
        );
    }

    #[test]
    fn suggests_the_closest_known_name() {
        let known = [
            "batchSize",
            "maxRetries",
            "timeout",
            "concurrency",
            "verbose",
        ];
        assert_eq!(
            did_you_mean("batchSzie", &known),
            "did you mean 'batchSize'? "
        );
        assert_eq!(
            did_you_mean("maxRetires", &known),
            "did you mean 'maxRetries'? "
        );
        assert_eq!(did_you_mean("timout", &known), "did you mean 'timeout'? ");
        assert_eq!(
            did_you_mean("concurency", &known),
            "did you mean 'concurrency'? "
        );
        assert_eq!(did_you_mean("verbos", &known), "did you mean 'verbose'? ");
        assert_eq!(did_you_mean("colour", &known), "");
    }

    #[test]
    fn redacts_passwords_and_tokens_in_urls() {
        assert_eq!(redact("s3://KEY:SECRET@bucket/p"), "s3://KEY:***@bucket/p");
        assert_eq!(
            redact("connect postgres://u:p%40ss@h:5432/db failed"),
            "connect postgres://u:***@h:5432/db failed"
        );
        assert_eq!(
            redact("libsql://tok@db.turso.io"),
            "libsql://***@db.turso.io"
        );
        assert_eq!(redact("memory://bucket/x"), "memory://bucket/x");
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn permanent_errors_are_not_retryable() {
        assert!(!SinkError::permanent("bad").is_retryable());
        assert!(SinkError::retryable("down").is_retryable());
        assert!(SinkError::throttled("slow", None).is_retryable());
        assert_eq!(
            SinkError::permanent("x").code().as_str(),
            "ERR_SINK_REJECTED"
        );
    }
}
