//! `sqs`: each change becomes one message (the stock plugin's JSON body) on its resource's
//! queue, sent with SendMessageBatch; FIFO queues get a message group per record and the
//! change's identity as deduplication id.

mod config;
mod request;
mod sink;

pub use config::SqsConfig;
pub(crate) use sink::SqsSink;
