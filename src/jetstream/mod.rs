//! The JetStream outbox (issue #14): a log shared by many application instances (publishers)
//! and drained by delivery workers, in place of each process's own disk outbox.
//!
//! - `config`: the `outbox.jetstream` options, partitioning of records over subjects.
//! - `connect`: the connection and the stream.
//! - `publisher`: publishes accepted changes, each awaited until the server has stored it.
//! - `worker`: partition leases, one ordered reader per owned partition feeding the engine.
//! - `feed`: what the engine holds of each partition and the settled position to commit.

mod config;
mod connect;
pub mod feed;
mod publisher;
mod worker;

pub use config::{parse, JetStreamConfig, JetStreamOptions};
pub use connect::connect;
pub use feed::{Held, StreamFeed};
pub use publisher::{Published, Publisher};
pub use worker::StreamWorker;
