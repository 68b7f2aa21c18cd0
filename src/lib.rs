//! s3db-replicator: the Rust engine behind the s3db.js ReplicatorPlugin replacement.
//!
//! The engine (`engine`, `sinks`, `config`) has no Node-API dependency and is tested with
//! `cargo test --no-default-features`; `node` is the napi-rs binding, behind the default
//! `node` feature.
#![deny(clippy::all)]

pub mod config;
pub mod engine;
pub mod error;
pub mod event;
pub mod hash;
pub mod jetstream;
pub mod logs;
pub mod outbox;
pub mod schema;
pub mod secret;
pub mod sinks;
pub mod time;

#[cfg(feature = "node")]
mod node;
