//! `JetStreamPublisher`: the publishing side of the JetStream outbox, used by `plugin.js` in
//! modes `publish` and `both` (the delivering side runs inside `ReplicationEngine`).

use std::sync::Arc;

use napi_derive::napi;

use crate::error::ErrorCode;

/// Async napi functions reject with a plain status: the code leads the message
/// (`ERR_JETSTREAM: ...`), and `plugin.js` turns it into `err.code`.
fn coded(code: ErrorCode, message: impl Into<String>) -> napi::Error {
    napi::Error::from_reason(format!("{}: {}", code.as_str(), message.into()))
}
use crate::jetstream::{JetStreamConfig, JetStreamOptions, Publisher};

/// Where one change was stored.
#[napi(object)]
pub struct PublishedChange {
    /// `{publisher id}:{seq}`: the change's identity at every destination.
    pub identity: String,
    pub partition: u32,
    /// Its sequence number in the stream.
    pub stream_seq: f64,
}

#[napi]
pub struct JetStreamPublisher {
    publisher: Arc<Publisher>,
}

fn parse_options(options_json: &str) -> napi::Result<JetStreamConfig> {
    let options: JetStreamOptions = serde_json::from_str(options_json).map_err(|e| {
        coded(
            ErrorCode::Config,
            format!("outbox.jetstream: {e} (see \"Scaling out\" in the README)"),
        )
    })?;
    crate::jetstream::parse(options).map_err(|e| {
        coded(
            ErrorCode::Config,
            format!("{}: {} ({})", e.path, e.reason, e.hint),
        )
    })
}

/// Connects to the server in `outbox.jetstream` (JSON) and makes sure the stream exists.
#[napi(catch_unwind)]
pub async fn connect_jetstream_publisher(options_json: String) -> napi::Result<JetStreamPublisher> {
    let config = parse_options(&options_json)?;
    let publisher = Publisher::connect(config)
        .await
        .map_err(|e| coded(ErrorCode::JetStream, e))?;
    Ok(JetStreamPublisher {
        publisher: Arc::new(publisher),
    })
}

#[napi]
impl JetStreamPublisher {
    /// This process's publisher id (the first part of every identity it hands out).
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.publisher.id().to_string()
    }

    /// Changes stored in the stream so far.
    #[napi(getter)]
    pub fn published(&self) -> f64 {
        self.publisher.published() as f64
    }

    /// Publishes one change; resolves once the server has stored it, rejects with
    /// `ERR_JETSTREAM` when it could not within `publishTimeoutMs`.
    #[napi]
    pub async fn publish(
        &self,
        resource: String,
        op: String,
        record_id: String,
        json: String,
    ) -> napi::Result<PublishedChange> {
        if crate::event::Op::parse(&op).is_none() {
            return Err(coded(
                ErrorCode::Config,
                format!("unknown operation '{op}'; use inserted, updated or deleted"),
            ));
        }
        let publisher = self.publisher.clone();
        let published = publisher
            .publish(&resource, &op, &record_id, json)
            .await
            .map_err(|e| coded(ErrorCode::JetStream, e))?;
        Ok(PublishedChange {
            identity: published.identity,
            partition: published.partition,
            stream_seq: published.stream_seq as f64,
        })
    }

    /// Resolves once every change stored so far is settled by the workers (the partitions'
    /// committed offsets reached them); false when the publisher was closed meanwhile.
    #[napi]
    pub async fn settled(&self) -> bool {
        self.publisher.settled().await
    }

    /// Sends what is buffered; later publishes fail.
    #[napi]
    pub async fn close(&self) {
        self.publisher.close().await
    }
}
