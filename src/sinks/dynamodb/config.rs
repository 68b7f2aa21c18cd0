//! Settings of the `dynamodb` driver (the spec's DynamoDB section) and each table's keys.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Route;
use crate::error::ConfigError;
use crate::secret::Secret;
use crate::sinks::aws::{AwsAuth, AwsCredentials};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DynamoDbConfig {
    /// Create a missing table (on-demand billing, the configured keys as strings, or numbers
    /// when the first record's key is a number). Default false.
    #[serde(default)]
    pub create_table: bool,
    #[serde(default)]
    pub region: Option<String>,
    /// DynamoDB Local or a compatible server, e.g. `http://localhost:8000`.
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
}

impl DynamoDbConfig {
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        self.auth = AwsAuth::new(
            self.region.clone(),
            self.endpoint.clone(),
            self.credentials.take(),
            self.access_key_id.take(),
            self.secret_access_key.take(),
        )?;
        Ok(self)
    }

    pub fn redacted(&self) -> Value {
        let mut v = json!({ "createTable": self.create_table });
        self.auth.redact_into(&mut v);
        v
    }
}

/// A table's key attributes: the partition key (`id` by default) and an optional sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchema {
    pub partition: String,
    pub sort: Option<String>,
}

impl Default for KeySchema {
    fn default() -> Self {
        Self {
            partition: "id".into(),
            sort: None,
        }
    }
}

/// Destination table → its keys, from the routes' `primaryKey` / `sortKey`; one schema per table.
pub(crate) fn key_schemas(routes: &[Route]) -> Result<HashMap<String, KeySchema>, ConfigError> {
    let mut out: HashMap<String, KeySchema> = HashMap::new();
    for r in routes {
        let name = |key: &str| -> Result<Option<String>, ConfigError> {
            match r.options.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(ConfigError::new(
                    format!("resources.{}.{key}", r.source),
                    format!("expected an attribute name, got {other}"),
                    "e.g. primaryKey: 'customerId', sortKey: 'orderId'",
                )),
            }
        };
        let schema = KeySchema {
            partition: name("primaryKey")?.unwrap_or_else(|| "id".into()),
            sort: name("sortKey")?,
        };
        match out.get(&r.dest) {
            Some(known) if *known != schema => {
                return Err(ConfigError::new(
                    format!("resources.{}", r.source),
                    format!("table '{}' is given two different keys", r.dest),
                    "give every destination object of one table the same primaryKey and sortKey",
                ))
            }
            _ => {
                out.insert(r.dest.clone(), schema);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_resources;

    #[test]
    fn keys_come_from_the_spec_mapping_forms() {
        let routes = parse_resources(
            "r",
            &json!({ "users": "UsersTable",
                     "orders": { "table": "OrdersTable", "primaryKey": "customerId", "sortKey": "orderId" },
                     "analytics": [{ "table": "A1", "primaryKey": "eventId", "actions": ["inserted"] }] }),
            &["primaryKey", "sortKey"],
        )
        .unwrap();
        let k = key_schemas(&routes).unwrap();
        assert_eq!(k["UsersTable"], KeySchema::default());
        assert_eq!(k["OrdersTable"].sort.as_deref(), Some("orderId"));
        assert_eq!(k["A1"].partition, "eventId");
        let clash = parse_resources(
            "r",
            &json!({ "a": { "table": "T" }, "b": { "table": "T", "primaryKey": "x" } }),
            &["primaryKey", "sortKey"],
        )
        .unwrap();
        assert!(key_schemas(&clash).is_err());
    }

    #[test]
    fn credentials_are_redacted() {
        let c: DynamoDbConfig = serde_json::from_value(
            json!({ "region": "us-east-1", "accessKeyId": "AK", "secretAccessKey": "hunter2" }),
        )
        .unwrap();
        let c = c.validated().unwrap();
        let shown = c.redacted().to_string();
        assert!(
            shown.contains("AK") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
