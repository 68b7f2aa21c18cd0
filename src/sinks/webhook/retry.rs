//! Classifies webhook failures for the engine's retry logic.

use std::time::Duration;

use reqwest::StatusCode;

use crate::error::{redact, SinkError};

/// A transport error: no answer, so worth retrying.
pub fn classify_transport(error: &reqwest::Error) -> SinkError {
    let what = if error.is_timeout() {
        "request timed out"
    } else if error.is_connect() {
        "Connection failed"
    } else {
        "request failed"
    };
    // Without the URL: it may carry credentials, and the replicator id already says where.
    let detail = redact(&error.without_url_ref().to_string());
    let message = format!("Failed to replicate to webhook: {what} ({detail})");
    if error.is_timeout() {
        SinkError::timed_out(message)
    } else if error.is_builder() {
        // The request could not even be built from this change: retrying cannot help, and it
        // says nothing about the endpoint being down.
        SinkError::permanent(message)
    } else {
        SinkError::retryable(message)
    }
}

/// A non-2xx answer: retried if the user listed the status, otherwise final.
pub fn classify_status(
    status: StatusCode,
    retry_after: Option<&str>,
    body: &str,
    retry_on: &[u16],
) -> SinkError {
    let snippet: String = body.chars().take(200).collect();
    let message = if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    };
    if !retry_on.contains(&status.as_u16()) {
        return SinkError::permanent(message);
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        let after = retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return SinkError::throttled(message, after);
    }
    SinkError::retryable(message)
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        use std::error::Error;
        let mut parts = Vec::new();
        let mut source = self.source();
        while let Some(s) = source {
            parts.push(s.to_string());
            source = s.source();
        }
        if parts.is_empty() {
            "no details".into()
        } else {
            parts.join(": ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn listed_statuses_retry_and_others_do_not() {
        let on = [429, 500, 502, 503, 504];
        assert!(classify_status(StatusCode::BAD_GATEWAY, None, "", &on).is_retryable());
        assert!(!classify_status(StatusCode::BAD_REQUEST, None, "bad", &on).is_retryable());
        assert!(
            !classify_status(StatusCode::INTERNAL_SERVER_ERROR, None, "", &[503]).is_retryable()
        );
    }

    #[test]
    fn retry_after_is_read() {
        let e = classify_status(StatusCode::TOO_MANY_REQUESTS, Some("2"), "", &[429]);
        assert_eq!(
            e.kind,
            ErrorKind::Throttled {
                retry_after: Some(Duration::from_secs(2))
            }
        );
    }
}
