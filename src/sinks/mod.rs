//! Destinations. Every sink implements [`Sink`]; [`SinkConfig`] is the only place that
//! matches on a driver name. Sinks never retry or sleep: they classify their errors and the
//! engine (`engine::lane`) decides what to do.

mod aws;
mod bigquery;
mod dynamodb;
mod mongodb;
pub mod mysql;
pub mod postgres;
mod s3db;
pub mod sql;
mod sqs;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod turso;
mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use bigquery::BigQueryConfig;
pub use dynamodb::DynamoDbConfig;
pub use mongodb::MongoDbConfig;
pub use mysql::{MySqlConfig, PlanetScaleConfig};
pub use postgres::PostgresConfig;
pub use s3db::S3dbConfig;
pub use sqs::SqsConfig;
pub use turso::TursoConfig;
pub use webhook::WebhookConfig;

use crate::engine::{Host, RetryPolicy};
use crate::error::{ConfigError, SinkError};
use crate::event::Change;
use crate::schema::ResourceSchema;

/// What schema sync did to a table, reported to the plugin as the spec's events.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SchemaEvent {
    /// `table_created { tableName, attributes }`.
    #[serde(rename_all = "camelCase")]
    TableCreated {
        table_name: String,
        attributes: Vec<String>,
    },
    /// `table_altered { tableName, addedColumns }`.
    #[serde(rename_all = "camelCase")]
    TableAltered {
        table_name: String,
        added_columns: Vec<String>,
        dropped_columns: Vec<String>,
    },
    /// `table_recreated { tableName }`.
    #[serde(rename_all = "camelCase")]
    TableRecreated { table_name: String },
    /// A mismatch with `onMismatch: 'warn'`.
    #[serde(rename_all = "camelCase")]
    SchemaMismatch { table_name: String, message: String },
    /// `schema_sync_deferred { tableName, error }`: the destination could not be reached (or
    /// refused the catalog queries); the sync runs before the first write to the table instead.
    #[serde(rename_all = "camelCase")]
    SchemaSyncDeferred { table_name: String, error: String },
}

/// The result of a batch write that did not fail as a whole.
#[derive(Debug)]
pub enum BatchOutcome {
    /// Every change was applied.
    Delivered,
    /// Some changes failed: `(index in the batch, error)`. The others were applied. After a
    /// *retryable* failure of a record's change, a sink must not apply that record's later
    /// changes in the batch (report them failed too), so the retry cannot overtake them. After
    /// a permanent failure the earlier change is given up, and later changes may be applied.
    Partial(Vec<(usize, SinkError)>),
}

impl BatchOutcome {
    /// The result of a batch of `len` changes from its failures: none is `Delivered`; every
    /// change failed retryably is one failure of the destination (`Err`: the breaker counts it,
    /// the whole batch retries); anything else is `Partial`, in batch order.
    pub fn from_failures(
        len: usize,
        mut failed: Vec<(usize, SinkError)>,
    ) -> Result<Self, SinkError> {
        if failed.is_empty() {
            return Ok(Self::Delivered);
        }
        if failed.len() == len && failed.iter().all(|(_, e)| e.is_retryable()) {
            return Err(failed.swap_remove(0).1);
        }
        failed.sort_by_key(|(i, _)| *i);
        Ok(Self::Partial(failed))
    }
}

#[async_trait]
pub trait Sink: Send + Sync {
    /// Largest batch this sink accepts in one `write_batch`.
    fn max_batch_size(&self) -> usize {
        usize::MAX
    }
    /// One large write costs this destination far less than many small ones (one statement
    /// or bulk request per table): under a backlog, lanes hand it up to `bulkBatchSize`
    /// changes per write instead of `batchSize`.
    fn prefers_bulk(&self) -> bool {
        false
    }
    /// The sink's own retry settings (e.g. the webhook's `retries`), replacing the plugin's.
    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }
    /// Checks the destination is reachable. A failure warns; it does not stop the plugin.
    async fn healthcheck(&self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Brings destination `table` in line with a source resource's schema (SQL sinks with
    /// `schemaSync`). A no-op for sinks without a schema.
    async fn sync_schema(
        &self,
        _table: &str,
        _schema: &ResourceSchema,
    ) -> Result<Vec<SchemaEvent>, SinkError> {
        Ok(Vec::new())
    }
    /// Applies a batch. Must be idempotent: a redelivered change does no harm.
    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError>;
    async fn close(&self) {}
}

/// What a sink may need from the engine when it is built.
pub struct SinkContext {
    pub replicator_id: String,
    pub host: Arc<dyn Host>,
    pub timeout_ms: u64,
    /// The replicator's routes: a sink reads its per-destination settings from
    /// `Route::options` (the keys it declared in [`SinkConfig::route_options`]).
    pub routes: Vec<crate::config::Route>,
}

/// A driver's validated configuration.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    S3db(S3dbConfig),
    Webhook(WebhookConfig),
    /// `postgresql` and its alias `postgres`.
    Postgres(PostgresConfig),
    /// `mysql` and `mariadb`.
    MySql(MySqlConfig),
    PlanetScale(PlanetScaleConfig),
    Turso(TursoConfig),
    Sqs(SqsConfig),
    DynamoDb(DynamoDbConfig),
    MongoDb(MongoDbConfig),
    BigQuery(BigQueryConfig),
}

impl SinkConfig {
    /// Drivers this version ships.
    pub const DRIVERS: &'static [&'static str] = &[
        "s3db",
        "webhook",
        "postgresql",
        "postgres",
        "mysql",
        "mariadb",
        "planetscale",
        "turso",
        "sqs",
        "dynamodb",
        "mongodb",
        "bigquery",
    ];

    /// Keys a destination object of this driver may carry besides the common ones (`resource`
    /// / `table` / `collection`, `transform`, `actions`, `shouldReplicate`); they reach the sink
    /// as `Route::options`. This is how a driver gets per-destination settings without the
    /// engine knowing them.
    pub fn route_options(driver: &str) -> &'static [&'static str] {
        match driver {
            "postgresql" | "postgres" | "mysql" | "mariadb" | "planetscale" | "turso" => {
                &["primaryKey"]
            }
            "sqs" => &["queueUrl"],
            "dynamodb" => &["primaryKey", "sortKey"],
            "bigquery" => &["mutability"],
            _ => &[],
        }
    }

    pub fn parse(driver: &str, config: Value) -> Result<Self, ConfigError> {
        Ok(match driver {
            "s3db" => Self::S3db(parse_section::<S3dbConfig>(config)?.validated()?),
            "webhook" => Self::Webhook(parse_section::<WebhookConfig>(config)?.validated()?),
            "postgresql" | "postgres" => {
                Self::Postgres(parse_section::<PostgresConfig>(config)?.validated()?)
            }
            "mysql" | "mariadb" => Self::MySql(parse_section::<MySqlConfig>(config)?.validated()?),
            "planetscale" => {
                Self::PlanetScale(parse_section::<PlanetScaleConfig>(config)?.validated()?)
            }
            "turso" => Self::Turso(parse_section::<TursoConfig>(config)?.validated()?),
            "sqs" => Self::Sqs(parse_section::<SqsConfig>(config)?.validated()?),
            "dynamodb" => Self::DynamoDb(parse_section::<DynamoDbConfig>(config)?.validated()?),
            "mongodb" => Self::MongoDb(parse_section::<MongoDbConfig>(config)?.validated()?),
            "bigquery" => Self::BigQuery(parse_section::<BigQueryConfig>(config)?.validated()?),
            other => {
                return Err(ConfigError::new(
                    "",
                    format!("unknown driver '{other}'"),
                    format!("use one of: {}", Self::DRIVERS.join(", ")),
                ))
            }
        })
    }

    pub fn build(&self, ctx: &SinkContext) -> Result<Arc<dyn Sink>, ConfigError> {
        Ok(match self {
            Self::S3db(c) => Arc::new(s3db::S3dbSink::new(c.clone(), ctx)),
            Self::Webhook(c) => Arc::new(webhook::WebhookSink::new(c.clone())?),
            Self::Postgres(c) => postgres::build(c, sql::key_columns(&ctx.routes)?)?,
            Self::MySql(c) => mysql::build(c, sql::key_columns(&ctx.routes)?)?,
            Self::PlanetScale(c) => mysql::build_planetscale(c, sql::key_columns(&ctx.routes)?)?,
            Self::Turso(c) => turso::build(c, sql::key_columns(&ctx.routes)?)?,
            Self::Sqs(c) => Arc::new(sqs::SqsSink::new(c.clone(), ctx.routes.clone())),
            Self::DynamoDb(c) => Arc::new(dynamodb::DynamoDbSink::new(c.clone(), &ctx.routes)?),
            Self::MongoDb(c) => {
                mongodb::check_routes(&ctx.routes)?;
                Arc::new(mongodb::MongoDbSink::new(c.clone()))
            }
            Self::BigQuery(c) => Arc::new(bigquery::BigQuerySink::new(
                c.clone(),
                &ctx.routes,
                ctx.timeout_ms,
            )?),
        })
    }

    /// Checks the settings that depend on the routes (every SQS resource has a queue, DynamoDB
    /// keys, MongoDB collection names, BigQuery table names and modes), at construction, naming the resource at fault.
    pub fn check_routes(&self, routes: &[crate::config::Route]) -> Result<(), ConfigError> {
        match self {
            Self::Sqs(c) => c.check_routes(routes),
            Self::DynamoDb(_) => dynamodb::key_schemas(routes).map(|_| ()),
            Self::MongoDb(_) => mongodb::check_routes(routes),
            Self::BigQuery(c) => bigquery::table_modes(routes, c.mutability).map(|_| ()),
            Self::Postgres(_) | Self::MySql(_) | Self::PlanetScale(_) | Self::Turso(_) => {
                sql::key_columns(routes).map(|_| ())
            }
            Self::S3db(_) | Self::Webhook(_) => Ok(()),
        }
    }

    /// The configuration as JSON with secrets replaced by `***` (for `listReplicators()`).
    pub fn redacted(&self) -> Value {
        match self {
            Self::S3db(c) => c.redacted(),
            Self::Webhook(c) => c.redacted(),
            Self::Postgres(c) => c.redacted(),
            Self::MySql(c) => c.redacted(),
            Self::PlanetScale(c) => c.redacted(),
            Self::Turso(c) => c.redacted(),
            Self::Sqs(c) => c.redacted(),
            Self::DynamoDb(c) => c.redacted(),
            Self::MongoDb(c) => c.redacted(),
            Self::BigQuery(c) => c.redacted(),
        }
    }
}

/// Deserialises one driver's `config` object; the error path is relative to `config`.
fn parse_section<T: DeserializeOwned>(config: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(&config).map_err(|e| {
        let path = e.path().to_string();
        // Secrets are never echoed: a wrong-typed value is described by its type only.
        let given = crate::config::value_at(&config, &path).map(|v| match v {
            Value::String(_) => Value::String("…".into()),
            other => other.clone(),
        });
        let (reason, hint) = crate::error::describe_serde(&e.inner().to_string(), given.as_ref());
        ConfigError::new(
            if path == "." { String::new() } else { path },
            crate::error::redact(&reason),
            if hint.is_empty() {
                "see the driver's options in the README's configuration reference".to_string()
            } else {
                hint
            },
        )
    })
}
