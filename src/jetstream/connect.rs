//! One connection to the NATS server, the JetStream context, and the stream itself.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::JetStreamConfig;

/// Header carrying the change's resource.
pub const RESOURCE_HEADER: &str = "S3db-Resource";
/// Header carrying the change's operation (`inserted` | `updated` | `deleted`).
pub const OP_HEADER: &str = "S3db-Op";
/// JetStream's own dedup header: `{publisher id}:{seq}`, also the change's identity.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Connects (waiting for a server that is not up yet) and makes sure the stream exists.
/// Errors carry the url (never credentials: those are kept out of it by the config).
pub async fn connect(
    config: &JetStreamConfig,
    name: &str,
) -> Result<(async_nats::Client, jetstream::Context), String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        // Reconnects forever, every 250 ms at most: an outage of the server is waited out.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50 * attempts as u64).min(250))
        });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.expose().to_string());
    }
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_string());
    }
    let client = options
        .connect(config.url.as_str())
        .await
        .map_err(|e| format!("could not connect to NATS at {}: {e}", config.url))?;
    let mut context = jetstream::new(client.clone());
    context.set_timeout(Duration::from_secs(5));
    ensure_stream(config, &context).await?;
    Ok((client, context))
}

pub async fn ensure_stream(
    config: &JetStreamConfig,
    context: &jetstream::Context,
) -> Result<(), String> {
    context
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.*", config.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_age: config.max_age,
            // A publisher that retries after a lost ack is deduplicated by Nats-Msg-Id.
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "could not open the JetStream stream '{}' at {}: {e} (is the server started with -js?)",
                config.stream, config.url
            )
        })
}
