//! `dynamodb`: each record is an item of its table (full puts for inserts and updates, deletes
//! by key), written with BatchWriteItem; keys are `id` or the destination's `primaryKey` /
//! `sortKey`, values keep their types.

mod config;
mod item;
mod sink;

pub(crate) use config::key_schemas;
pub use config::DynamoDbConfig;
pub(crate) use sink::DynamoDbSink;
