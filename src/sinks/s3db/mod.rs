//! `s3db` driver: another s3db.js database. s3db.js is JavaScript (and `memory://` stores live
//! inside the Node process), so the engine owns ordering, batching and retries while the
//! plugin's JavaScript applies each batch through the destination Database.

mod config;
mod sink;

pub use config::S3dbConfig;
pub(super) use sink::S3dbSink;
