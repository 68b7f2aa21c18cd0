//! `webhook` driver: HTTP(S) requests with the spec's standardized payload, auth, retries
//! and batch mode, over a keep-alive connection pool.

mod config;
mod request;
mod retry;
mod sink;

pub use config::WebhookConfig;
pub(super) use sink::WebhookSink;
