//! One connection to the NATS server, the JetStream context, and the stream itself.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::config::Auth;
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
    // rustls picks no process-wide crypto provider when the dependency tree enables more than
    // one (the AWS SDK brings aws-lc-rs), and async-nats would panic at a TLS handshake (asked
    // for by `tls`, a tls:// url, or a server that requires it): name ours. (An error means
    // one is installed already, which serves as well.)
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        // Reconnects forever, every 250 ms at most: an outage of the server is waited out.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50 * attempts as u64).min(250))
        });
    options = match &config.auth {
        Auth::None => options,
        Auth::UserPassword(user, password) => {
            options.user_and_password(user.clone(), password.expose().to_string())
        }
        Auth::Token(token) => options.token(token.expose().to_string()),
        Auth::NKey(seed) => options.nkey(seed.expose().to_string()),
        Auth::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
            // async-nats names neither the file nor the field; the contents are never echoed.
            format!(
                "outbox.jetstream.credsFile: could not read '{}': {}",
                path.display(),
                creds_reason(&e)
            )
        })?,
    };
    if let Some(tls) = &config.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.into());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            options = options.add_client_certificate(cert.into(), key.into());
        }
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

/// Why a creds file was refused, without its contents (a parse error may quote them).
fn creds_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => "it is not a NATS credentials file (a user JWT and an NKey seed, as `nsc generate creds` writes)".into(),
    }
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
