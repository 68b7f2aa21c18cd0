use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT,
};
use reqwest::{Client, Method};

use super::config::{Auth, RetryStrategy, WebhookConfig};
use super::request::{batch_body, batch_idempotency_key, idempotency_key, single_body, SOURCE};
use super::retry::{classify_status, classify_transport};
use crate::engine::{RetryPolicy, Strategy};
use crate::error::{ConfigError, SinkError};
use crate::event::Change;
use crate::sinks::{BatchOutcome, Sink};

/// Most requests one sink has in flight without `batch` (records are sent in parallel).
const MAX_IN_FLIGHT: usize = 64;

pub struct WebhookSink {
    config: WebhookConfig,
    client: Client,
    method: Method,
    in_flight: tokio::sync::Semaphore,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig) -> Result<Self, ConfigError> {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(SOURCE));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                ConfigError::new(
                    format!("headers.{k}"),
                    "invalid header name",
                    "use an ASCII name",
                )
            })?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                ConfigError::new(
                    format!("headers.{k}"),
                    "invalid header value",
                    "remove line breaks",
                )
            })?;
            headers.insert(name, value);
        }
        match &config.auth {
            Some(Auth::Bearer { token }) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                        ConfigError::new(
                            "auth.token",
                            "the token is not a valid header value",
                            "remove line breaks",
                        )
                    })?;
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
            }
            // Basic auth is added per request by reqwest (see `send`).
            Some(Auth::Basic { .. }) => {}
            Some(Auth::Apikey { header, value }) => {
                let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                    ConfigError::new("auth.header", "invalid header name", "e.g. X-API-Key")
                })?;
                let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
                    ConfigError::new("auth.value", "invalid header value", "remove line breaks")
                })?;
                v.set_sensitive(true);
                headers.insert(name, v);
            }
            None => {}
        }
        let client = Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_millis(config.timeout))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                ConfigError::new(
                    "",
                    format!("could not create the HTTP client: {e}"),
                    "check the TLS setup of this machine",
                )
            })?;
        let method = Method::from_bytes(config.method.as_bytes())
            .map_err(|_| ConfigError::new("method", "invalid method", "use POST, PUT or PATCH"))?;
        Ok(Self {
            config,
            client,
            method,
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    async fn send(&self, body: Vec<u8>, key: String) -> Result<(), SinkError> {
        let mut request = self
            .client
            .request(self.method.clone(), &self.config.url)
            .header("Idempotency-Key", key)
            .body(body);
        if let Some(Auth::Basic { username, password }) = &self.config.auth {
            request = request.basic_auth(username, Some(password.expose()));
        }
        let response = request.send().await.map_err(|e| classify_transport(&e))?;
        let status = response.status();
        if status.is_success() {
            // Drain the body so the connection goes back to the pool.
            let _ = response.bytes().await;
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        Err(classify_status(
            status,
            retry_after.as_deref(),
            &body,
            &self.config.retry_on_status,
        ))
    }

    /// `send`, holding one of the sink's in-flight slots.
    async fn send_limited(&self, body: Vec<u8>, key: String) -> Result<(), SinkError> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| SinkError::retryable("the webhook sink is closing"))?;
        self.send(body, key).await
    }

    /// Sends one change per request: one record's changes one after another, records in parallel.
    async fn send_each(&self, batch: &[Change]) -> Vec<Option<SinkError>> {
        let mut chains: Vec<Vec<usize>> = Vec::new();
        let mut chain_of: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, c) in batch.iter().enumerate() {
            let k = *chain_of.entry(c.key()).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[k].push(i);
        }
        let runs = chains.iter().map(|chain| async move {
            let mut out = Vec::with_capacity(chain.len());
            let mut failed: Option<SinkError> = None;
            for &i in chain {
                if let Some(e) = &failed {
                    // Never apply a later change of a record while an earlier one awaits a retry.
                    out.push((i, Some(e.clone())));
                    continue;
                }
                let r = self
                    .send_limited(
                        single_body(&batch[i]),
                        idempotency_key(&batch[i]).to_owned(),
                    )
                    .await
                    .err();
                // A permanent failure gives that change up; the record's next change proceeds.
                failed = r.clone().filter(SinkError::is_retryable);
                out.push((i, r));
            }
            out
        });
        let mut results = vec![None; batch.len()];
        for (i, r) in join_all(runs).await.into_iter().flatten() {
            results[i] = r;
        }
        results
    }
}

#[async_trait]
impl Sink for WebhookSink {
    fn max_batch_size(&self) -> usize {
        if self.config.batch {
            self.config.batch_size
        } else {
            usize::MAX
        }
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        Some(RetryPolicy {
            max_attempts: self.config.retries.saturating_add(1),
            base: Duration::from_millis(self.config.retry_delay),
            max: Duration::from_millis(self.config.retry_delay.saturating_mul(64).max(1)),
            strategy: match self.config.retry_strategy {
                RetryStrategy::Exponential => Strategy::Exponential,
                RetryStrategy::Fixed => Strategy::Fixed,
            },
            jitter: self.config.retry_strategy == RetryStrategy::Exponential,
        })
    }

    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        if batch.is_empty() {
            return Ok(BatchOutcome::Delivered);
        }
        if self.config.batch {
            self.send(batch_body(batch), batch_idempotency_key(batch))
                .await?;
            return Ok(BatchOutcome::Delivered);
        }
        let results = self.send_each(batch).await;
        let failed: Vec<(usize, SinkError)> = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|e| (i, e)))
            .collect();
        BatchOutcome::from_failures(batch.len(), failed)
    }
}
