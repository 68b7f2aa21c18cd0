//! Settings of the `sqs` driver (the spec's SQS section), and which queue a change goes to.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Route;
use crate::error::ConfigError;
use crate::secret::Secret;
use crate::sinks::aws::{AwsAuth, AwsCredentials};

/// 256 KiB: the message size limit of older SQS deployments and of some compatible servers
/// (current AWS allows 1 MiB; raise `maxMessageBytes` to use it).
const fn default_max_message_bytes() -> usize {
    262_144
}
const fn yes() -> bool {
    true
}

/// A message attribute as the spec writes it (`{ DataType: 'String', StringValue: 'x' }`), or a
/// plain string.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum AttributeSetting {
    Plain(String),
    #[serde(rename_all = "PascalCase")]
    Typed {
        data_type: String,
        string_value: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SqsConfig {
    /// The queue of every resource without one of its own.
    #[serde(default)]
    pub queue_url: Option<String>,
    /// Resource name → queue URL.
    #[serde(default)]
    pub queues: BTreeMap<String, String>,
    /// Resource name → several queue URLs (each change goes to all of them), as in the stock driver.
    #[serde(default)]
    pub resource_queue_map: BTreeMap<String, Vec<String>>,
    /// The queue of resources that have none (the spec's name; `defaultQueue` is the stock code's).
    #[serde(default)]
    pub default_queue_url: Option<String>,
    #[serde(default)]
    pub default_queue: Option<String>,
    /// FIFO queues: one fixed message group for every message (default: one group per record,
    /// `resource:id`, so each record stays in order and records are delivered in parallel).
    #[serde(default)]
    pub message_group_id: Option<String>,
    /// FIFO queues: send the change's identity as `MessageDeduplicationId` (default true; false
    /// needs content-based deduplication on the queue).
    #[serde(default = "yes")]
    pub deduplication_id: bool,
    /// Attributes of every message (`resource` and `action` are always added).
    #[serde(default)]
    pub message_attributes: BTreeMap<String, AttributeSetting>,
    /// Largest message, and largest SendMessageBatch request, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub credentials: Option<AwsCredentials>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    #[serde(skip)]
    pub auth: AwsAuth,
    /// The stock code's queue creation (`ensureQueues`, default true there). Accepted so a
    /// config written for it still parses; this driver never creates queues.
    #[serde(default)]
    pub ensure_queues: Option<bool>,
    /// The stock code's by-name queue options: refused with a message saying what to use (only
    /// their presence matters).
    #[serde(default)]
    queue_name: Option<IgnoredAny>,
    #[serde(default)]
    queue_names: Option<IgnoredAny>,
    #[serde(default)]
    default_queue_name: Option<IgnoredAny>,
    #[serde(default)]
    queue_attributes: Option<IgnoredAny>,
    #[serde(default)]
    queue_tags: Option<IgnoredAny>,
}

impl SqsConfig {
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        self.auth = AwsAuth::new(
            self.region.clone(),
            self.endpoint.clone(),
            self.credentials.take(),
            self.access_key_id.take(),
            self.secret_access_key.take(),
        )?;
        let by_name = [
            ("queueName", &self.queue_name),
            ("queueNames", &self.queue_names),
            ("defaultQueueName", &self.default_queue_name),
            ("queueAttributes", &self.queue_attributes),
            ("queueTags", &self.queue_tags),
        ];
        if let Some((option, _)) = by_name.iter().find(|(_, v)| v.is_some()) {
            return Err(ConfigError::new(
                *option,
                "queues are not created or looked up by name (the stock code's ensureQueues)",
                "create the queue beforehand and give its URL: queueUrl, queues: { resource: url } or defaultQueueUrl",
            ));
        }
        if !(1024..=1_048_576).contains(&self.max_message_bytes) {
            return Err(ConfigError::new(
                "maxMessageBytes",
                format!("{} is out of range", self.max_message_bytes),
                "use 1024 to 1048576 (SQS's limit is 256 KiB or 1 MiB depending on the deployment)",
            ));
        }
        for (name, a) in &self.message_attributes {
            if let AttributeSetting::Typed { data_type, .. } = a {
                if !(data_type.starts_with("String") || data_type.starts_with("Number")) {
                    return Err(ConfigError::new(
                        format!("messageAttributes.{name}.DataType"),
                        format!("unsupported DataType '{data_type}'"),
                        "use 'String' or 'Number'",
                    ));
                }
            }
        }
        if self.message_attributes.len() > 8 {
            return Err(ConfigError::new(
                "messageAttributes",
                "more than 8 attributes",
                "SQS allows 10 per message and the driver adds resource and action",
            ));
        }
        let urls = self
            .queue_url
            .iter()
            .chain(&self.default_queue_url)
            .chain(&self.default_queue)
            .chain(self.queues.values())
            .chain(self.resource_queue_map.values().flatten());
        for url in urls {
            check_queue_url(url)?;
        }
        Ok(self)
    }

    /// The fallback queue of a resource without its own.
    fn default(&self) -> Option<&str> {
        self.queue_url
            .as_deref()
            .or(self.default_queue_url.as_deref())
            .or(self.default_queue.as_deref())
    }

    /// The queues of changes routed to `dest` from `resource`: the destination's own
    /// `queueUrl`, else the resource's (`resourceQueueMap`, `queues`), else the default.
    pub fn queues_for(&self, routes: &[Route], resource: &str, dest: &str) -> Vec<String> {
        let own = routes
            .iter()
            .find(|r| r.source == resource && r.dest == dest)
            .and_then(|r| r.options.get("queueUrl"))
            .and_then(Value::as_str);
        if let Some(url) = own {
            return vec![url.to_string()];
        }
        if let Some(urls) = self.resource_queue_map.get(resource) {
            return urls.clone();
        }
        if let Some(url) = self.queues.get(resource) {
            return vec![url.clone()];
        }
        self.default().map(str::to_string).into_iter().collect()
    }

    /// Every route has a queue, and a destination's `queueUrl` is a URL.
    pub fn check_routes(&self, routes: &[Route]) -> Result<(), ConfigError> {
        for r in routes {
            if let Some(v) = r.options.get("queueUrl") {
                let url = v.as_str().ok_or_else(|| {
                    ConfigError::new(
                        format!("resources.{}.queueUrl", r.source),
                        "expected a queue URL string",
                        "e.g. queueUrl: 'https://sqs.us-east-1.amazonaws.com/123456789012/users'",
                    )
                })?;
                check_queue_url(url).map_err(|mut e| {
                    e.path = format!("resources.{}.queueUrl", r.source);
                    e
                })?;
                let clash = routes.iter().any(|o| {
                    o.source == r.source
                        && o.dest == r.dest
                        && o.options.get("queueUrl").and_then(Value::as_str) != Some(url)
                });
                if clash {
                    return Err(ConfigError::new(
                        format!("resources.{}", r.source),
                        format!("two destinations named '{}' have different queues", r.dest),
                        "give each destination object its own resource name, e.g. { resource: 'users-audit', queueUrl }",
                    ));
                }
            } else if self.queues_for(routes, &r.source, &r.dest).is_empty() {
                return Err(ConfigError::new(
                    format!("resources.{}", r.source),
                    format!("resource '{}' has no queue", r.source),
                    format!(
                        "set config.queues.{0}, a queueUrl on its destination ({{ {0}: {{ queueUrl }} }}), or a default: config.queueUrl / defaultQueueUrl",
                        r.source
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn redacted(&self) -> Value {
        let mut v = json!({
            "queueUrl": self.queue_url, "queues": self.queues, "resourceQueueMap": self.resource_queue_map,
            "defaultQueueUrl": self.default_queue_url.as_ref().or(self.default_queue.as_ref()),
            "messageGroupId": self.message_group_id, "deduplicationId": self.deduplication_id,
            "maxMessageBytes": self.max_message_bytes,
        });
        self.auth.redact_into(&mut v);
        v
    }
}

fn check_queue_url(url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(());
    }
    Err(ConfigError::new(
        "queueUrl",
        format!("'{}' is not a queue URL", crate::error::redact(url)),
        "use the queue's URL, e.g. https://sqs.us-east-1.amazonaws.com/123456789012/events.fifo",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_resources;

    fn parse(v: Value) -> Result<SqsConfig, ConfigError> {
        serde_json::from_value::<SqsConfig>(v).unwrap().validated()
    }

    const Q: &str = "http://127.0.0.1:1/123/q";

    #[test]
    fn queue_choice_follows_the_spec_and_the_stock_driver() {
        let c = parse(
            json!({ "queues": { "orders": "http://h/1/orders.fifo" }, "defaultQueueUrl": Q,
                              "resourceQueueMap": { "audit": ["http://h/1/a", "http://h/1/b"] } }),
        )
        .unwrap();
        let routes = parse_resources(
            "r",
            &json!({ "orders": true, "users": true, "audit": true, "pay": { "queueUrl": "http://h/1/pay" } }),
            &["queueUrl"],
        )
        .unwrap();
        c.check_routes(&routes).unwrap();
        assert_eq!(
            c.queues_for(&routes, "orders", "orders"),
            ["http://h/1/orders.fifo"]
        );
        assert_eq!(c.queues_for(&routes, "users", "users"), [Q]);
        assert_eq!(c.queues_for(&routes, "audit", "audit").len(), 2);
        assert_eq!(c.queues_for(&routes, "pay", "pay"), ["http://h/1/pay"]);
    }

    #[test]
    fn a_resource_without_a_queue_is_named() {
        let c = parse(json!({ "queues": { "orders": Q } })).unwrap();
        let routes = parse_resources("r", &json!(["orders", "users"]), &["queueUrl"]).unwrap();
        let e = c.check_routes(&routes).unwrap_err();
        assert_eq!(e.path, "resources.users");
        assert!(e.reason.contains("'users' has no queue"), "{e:?}");
    }

    #[test]
    fn secrets_are_never_shown() {
        let c =
            parse(json!({ "queueUrl": Q, "accessKeyId": "AKIA1", "secretAccessKey": "hunter2" }))
                .unwrap();
        let shown = c.redacted().to_string();
        assert!(
            shown.contains("AKIA1") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(parse(json!({ "queueUrl": "events" })).is_err());
        assert!(parse(json!({ "queueUrl": Q, "accessKeyId": "AKIA1" })).is_err());
    }

    #[test]
    fn the_stock_codes_queue_creation_options_are_explained() {
        assert!(parse(json!({ "queueUrl": Q, "ensureQueues": false })).is_ok());
        let e = parse(json!({ "queueName": "events", "ensureQueues": true })).unwrap_err();
        assert_eq!(e.path, "queueName");
        assert!(e.hint.contains("create the queue beforehand"), "{e:?}");
    }
}
