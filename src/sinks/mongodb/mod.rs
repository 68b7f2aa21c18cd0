//! `mongodb`: each record is a document of its collection with `_id` = the record id
//! (replace with upsert for inserts and updates, delete by `_id`), values with their types;
//! one ordered bulk write per collection per batch; an optional log collection.

mod config;
mod document;
mod sink;

pub(crate) use config::check_routes;
pub use config::MongoDbConfig;
pub(crate) use sink::MongoDbSink;
