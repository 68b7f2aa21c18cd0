//! s3db-replicator: the Rust engine behind the s3db.js ReplicatorPlugin replacement.
//!
//! The engine (`engine`, `sinks`, `config`) has no Node-API dependency and is tested with
//! `cargo test --no-default-features`; `node` is the napi-rs binding, behind the default
//! `node` feature.
#![deny(clippy::all)]

/// mimalloc instead of the system allocator (see Cargo.toml): the engine's threads allocate and
/// free each change on different threads, which glibc's malloc makes expensive.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
