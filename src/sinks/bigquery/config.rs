//! Settings of the `bigquery` driver (the spec's BigQuery section): project, dataset,
//! location, credentials (a service-account key, or Application Default Credentials), an
//! emulator `endpoint`, the mutability mode (global and per resource) and `schemaSync`; and the
//! checks of BigQuery names.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Route;
use crate::error::ConfigError;
use crate::secret::Secret;
use crate::sinks::sql::SchemaSyncConfig;

/// How changes become rows (the spec's three modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mutability {
    /// Every change is a new row with `_operation_type` and `_operation_timestamp`.
    #[default]
    AppendOnly,
    /// One row per record: inserts, updates and deletes through DML (`MERGE` by id).
    Mutable,
    /// Every change is a new row with `_operation_type`, `_operation_timestamp`,
    /// `_is_deleted` and `_version`.
    Immutable,
}

impl Mutability {
    pub const NAMES: &'static [&'static str] = &["append-only", "mutable", "immutable"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "append-only" => Some(Self::AppendOnly),
            "mutable" => Some(Self::Mutable),
            "immutable" => Some(Self::Immutable),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AppendOnly => "append-only",
            Self::Mutable => "mutable",
            Self::Immutable => "immutable",
        }
    }

    /// The tracking columns this mode adds to every row, with their BigQuery types.
    pub fn tracking_fields(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::AppendOnly => &[
                ("_operation_type", "STRING"),
                ("_operation_timestamp", "TIMESTAMP"),
            ],
            Self::Immutable => &[
                ("_operation_type", "STRING"),
                ("_operation_timestamp", "TIMESTAMP"),
                ("_is_deleted", "BOOL"),
                ("_version", "INT64"),
            ],
            Self::Mutable => &[],
        }
    }
}

/// A service-account key object (as downloaded from the Google Cloud console), kept as JSON
/// text that is never printed.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub json: Secret,
    pub client_email: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceAccountKey({}, ***)", self.client_email)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BigQueryConfig {
    /// The Google Cloud project that holds the dataset (and runs the DML jobs).
    #[serde(default)]
    pub project_id: String,
    /// The dataset of the destination tables.
    #[serde(default)]
    pub dataset_id: Option<String>,
    /// The spec's other spelling of `datasetId`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Where jobs run and where a dataset created by schema sync lives. Default `US`.
    #[serde(default)]
    pub location: Option<String>,
    /// A service-account key object (`type`, `client_email`, `private_key`, ...). Without it
    /// (or with `{}`), Application Default Credentials are used (none at all with an `endpoint`).
    #[serde(default)]
    pub credentials: Option<Value>,
    /// A BigQuery-compatible REST server (an emulator), e.g. `http://127.0.0.1:9050`; the API
    /// paths (`/bigquery/v2/...`) are appended. Default Google's API.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `append-only` (default), `mutable` or `immutable`; a resource may override it.
    #[serde(default)]
    pub mutability: Mutability,
    /// The SQL drivers' `schemaSync` options, with BigQuery's types.
    #[serde(default)]
    pub schema_sync: SchemaSyncConfig,
    /// The dataset actually used (`datasetId`, else `dataset`), set by `validated`.
    #[serde(skip)]
    pub dataset_name: String,
    /// The parsed `credentials`, set by `validated`.
    #[serde(skip)]
    pub key: Option<ServiceAccountKey>,
}

impl BigQueryConfig {
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        if self.project_id.is_empty() {
            return Err(ConfigError::new(
                "projectId",
                "no projectId is given",
                "set projectId: 'my-project' (the Google Cloud project of the dataset)",
            ));
        }
        check_project(&self.project_id)?;
        let (at, name) = match (&self.dataset_id, &self.dataset) {
            (Some(a), Some(b)) if a != b => {
                return Err(ConfigError::new(
                    "dataset",
                    format!("datasetId '{a}' and dataset '{b}' disagree"),
                    "give one of them",
                ))
            }
            (Some(a), _) => ("datasetId", a.clone()),
            (None, Some(b)) => ("dataset", b.clone()),
            (None, None) => {
                return Err(ConfigError::new(
                    "datasetId",
                    "no datasetId is given",
                    "set datasetId: 'my_dataset'",
                ))
            }
        };
        check_dataset(at, &name)?;
        self.dataset_name = name;
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ConfigError::new(
                    "endpoint",
                    format!("'{endpoint}' is not an http(s) URL"),
                    "use e.g. http://127.0.0.1:9050 (the emulator's REST address)",
                ));
            }
        }
        match self.credentials.take() {
            // The spec's `credentials: { /* ... or application default credentials */ }`.
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(creds) => self.key = Some(parse_key(creds)?),
        }
        Ok(self)
    }

    /// The REST base of the project, `.../bigquery/v2/projects/{projectId}`.
    pub fn project_url(&self) -> String {
        let host = self
            .endpoint
            .as_deref()
            .unwrap_or("https://bigquery.googleapis.com")
            .trim_end_matches('/');
        format!("{host}/bigquery/v2/projects/{}", self.project_id)
    }

    pub fn location(&self) -> &str {
        self.location.as_deref().unwrap_or("US")
    }

    pub fn redacted(&self) -> Value {
        let mut v = json!({
            "projectId": self.project_id,
            "datasetId": self.dataset_name,
            "location": self.location(),
            "mutability": self.mutability.as_str(),
            "schemaSync": { "enabled": self.schema_sync.enabled },
        });
        if let Some(e) = &self.endpoint {
            v["endpoint"] = json!(e);
        }
        if let Some(k) = &self.key {
            v["credentials"] = json!({ "client_email": k.client_email, "private_key": "***" });
        }
        v
    }
}

fn parse_key(creds: Value) -> Result<ServiceAccountKey, ConfigError> {
    let obj = match creds {
        Value::Object(o) => o,
        Value::String(_) => {
            return Err(ConfigError::new(
                "credentials",
                "credentials is a string, not a key object",
                "pass the parsed key file: credentials: JSON.parse(fs.readFileSync('key.json', 'utf8'))",
            ))
        }
        _ => {
            return Err(ConfigError::new(
                "credentials",
                "credentials must be a service-account key object",
                "pass the key file's JSON object, or leave credentials out for Application Default Credentials",
            ))
        }
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
    let email = text("client_email").to_string();
    if !email.contains('@') {
        return Err(ConfigError::new(
            "credentials.client_email",
            "the key has no valid client_email",
            "use the service-account key file as downloaded (it has client_email and private_key)",
        ));
    }
    if !text("private_key").contains("PRIVATE KEY") {
        return Err(ConfigError::new(
            "credentials.private_key",
            "the key has no PEM private_key",
            "use the service-account key file as downloaded (private_key: '-----BEGIN PRIVATE KEY-----...')",
        ));
    }
    let json = serde_json::to_string(&Value::Object(obj)).unwrap_or_default();
    Ok(ServiceAccountKey {
        json: Secret::new(json),
        client_email: email,
    })
}

fn bad_name(at: &str, what: &str, name: &str, rule: &str) -> ConfigError {
    ConfigError::new(
        at,
        format!("'{}' is not a valid BigQuery {what}", name.escape_default()),
        rule,
    )
}

/// Project ids: letters, digits, `-`, and the `domain.com:project` form.
fn check_project(name: &str) -> Result<(), ConfigError> {
    if name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:_".contains(c))
    {
        return Err(bad_name(
            "projectId",
            "project id",
            name,
            "use the project id (letters, digits and '-'), e.g. 'my-analytics-project'",
        ));
    }
    Ok(())
}

/// Dataset names: letters, digits and `_`, at most 1024.
pub(crate) fn check_dataset(at: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 1024
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(bad_name(
            at,
            "dataset name",
            name,
            "use 1 to 1024 letters, digits and '_', e.g. 'production_data'",
        ));
    }
    Ok(())
}

/// Table names: letters, digits, `_` and `-`, at most 1024 bytes (no dots, quotes or
/// backticks: the name is quoted into SQL).
pub(crate) fn check_table(at: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 1024
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(bad_name(
            at,
            "table name",
            name,
            "use letters, digits, '_' and '-', e.g. 'user_profiles'",
        ));
    }
    Ok(())
}

/// Column names: a letter or `_` first, then letters, digits and `_`, at most 300 characters.
pub(crate) fn check_column(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || name.len() > 300 || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "field '{}' is not a valid BigQuery column name (a letter or '_' first, then letters, digits and '_'); rename it in a transform",
            name.escape_default()
        ));
    }
    Ok(())
}

/// Each route's table name and mutability (the resource's `mutability`, else the global one).
/// Two resources writing one table must agree on its mode.
pub(crate) fn table_modes(
    routes: &[Route],
    global: Mutability,
) -> Result<HashMap<String, Mutability>, ConfigError> {
    let mut modes: HashMap<String, Mutability> = HashMap::new();
    for r in routes {
        let at = format!("resources.{}", r.source);
        check_table(&at, &r.dest)?;
        let mode = match r.options.get("mutability") {
            None | Some(Value::Null) => global,
            Some(Value::String(s)) => Mutability::parse(s).ok_or_else(|| {
                ConfigError::new(
                    format!("{at}.mutability"),
                    format!("unknown mutability '{s}'"),
                    format!("use one of: {}", Mutability::NAMES.join(", ")),
                )
            })?,
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{at}.mutability"),
                    "mutability must be a string",
                    format!("use one of: {}", Mutability::NAMES.join(", ")),
                ))
            }
        };
        if let Some(prev) = modes.insert(r.dest.clone(), mode) {
            if prev != mode {
                return Err(ConfigError::new(
                    format!("{at}.mutability"),
                    format!(
                        "table '{}' is written as both '{}' and '{}'",
                        r.dest,
                        prev.as_str(),
                        mode.as_str()
                    ),
                    "give the resources writing one table the same mutability, or use separate tables",
                ));
            }
        }
    }
    Ok(modes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_resources;

    fn parse(v: Value) -> Result<BigQueryConfig, ConfigError> {
        serde_json::from_value::<BigQueryConfig>(v)
            .map_err(|e| ConfigError::new("", e.to_string(), ""))?
            .validated()
    }

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIhunter2\n-----END PRIVATE KEY-----\n";

    #[test]
    fn the_spec_forms_parse() {
        let c = parse(json!({ "projectId": "my-analytics-project", "datasetId": "production_data",
            "location": "US", "credentials": { "type": "service_account", "client_email": "r@p.iam.gserviceaccount.com", "private_key": KEY } }))
        .unwrap();
        assert_eq!(c.dataset_name, "production_data");
        assert_eq!(c.mutability, Mutability::AppendOnly);
        assert!(c.key.is_some());
        let c = parse(json!({ "projectId": "analytics", "dataset": "audit", "mutability": "immutable",
            "schemaSync": { "enabled": true, "strategy": "alter", "autoCreateTable": true, "autoCreateColumns": true } }))
        .unwrap();
        assert_eq!(
            (c.dataset_name.as_str(), c.mutability),
            ("audit", Mutability::Immutable)
        );
        assert!(c.schema_sync.enabled);
        assert_eq!(
            c.project_url(),
            "https://bigquery.googleapis.com/bigquery/v2/projects/analytics"
        );
        // The spec's empty `credentials: {}` means Application Default Credentials.
        let c = parse(json!({ "projectId": "p", "datasetId": "d", "credentials": {} })).unwrap();
        assert!(c.key.is_none());
    }

    #[test]
    fn bad_settings_name_the_option_and_never_the_key() {
        let e = parse(json!({ "datasetId": "d" })).unwrap_err();
        assert_eq!(e.path, "projectId");
        let e = parse(json!({ "projectId": "p" })).unwrap_err();
        assert_eq!(e.path, "datasetId");
        let e = parse(json!({ "projectId": "p", "datasetId": "a-b" })).unwrap_err();
        assert_eq!(e.path, "datasetId");
        let e = parse(json!({ "projectId": "p", "datasetId": "d", "mutability": "sometimes" }));
        assert!(e.is_err());
        let e = parse(json!({ "projectId": "p", "datasetId": "d", "endpoint": "localhost:9050" }))
            .unwrap_err();
        assert_eq!(e.path, "endpoint");
        let e = parse(json!({ "projectId": "p", "datasetId": "d", "credentials": "{\"private_key\":\"hunter2\"}" }))
            .unwrap_err();
        assert_eq!(e.path, "credentials");
        assert!(!format!("{e} {e:?}").contains("hunter2"));
        let e = parse(json!({ "projectId": "p", "datasetId": "d", "credentials": { "client_email": "x@y", "private_key": "hunter2" } }))
            .unwrap_err();
        assert_eq!(e.path, "credentials.private_key");
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }

    #[test]
    fn credentials_are_redacted() {
        let c = parse(json!({ "projectId": "p", "datasetId": "d",
            "credentials": { "client_email": "r@p.iam", "private_key": KEY } }))
        .unwrap();
        let shown = format!("{} {c:?}", c.redacted());
        assert!(
            shown.contains("r@p.iam") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn per_resource_mutability_and_table_names() {
        let routes = parse_resources(
            "r",
            &json!({ "events": "events_table",
                "transactions": { "table": "transactions_audit", "mutability": "immutable", "actions": ["inserted", "updated", "deleted"] },
                "cache": { "table": "cache_table", "mutability": "mutable" } }),
            &["mutability"],
        )
        .unwrap();
        let modes = table_modes(&routes, Mutability::AppendOnly).unwrap();
        assert_eq!(modes["events_table"], Mutability::AppendOnly);
        assert_eq!(modes["transactions_audit"], Mutability::Immutable);
        assert_eq!(modes["cache_table"], Mutability::Mutable);
        let routes = parse_resources(
            "r",
            &json!({ "a": { "table": "t", "mutability": "never" } }),
            &["mutability"],
        )
        .unwrap();
        let e = table_modes(&routes, Mutability::AppendOnly).unwrap_err();
        assert_eq!(e.path, "resources.a.mutability");
        let routes = parse_resources(
            "r",
            &json!({ "a": { "table": "t", "mutability": "mutable" }, "b": "t" }),
            &["mutability"],
        )
        .unwrap();
        assert!(table_modes(&routes, Mutability::AppendOnly).is_err());
        for bad in ["a.b", "a`b", "x y", ""] {
            let routes = parse_resources("r", &json!({ "u": bad }), &["mutability"]);
            if let Ok(routes) = routes {
                let e = table_modes(&routes, Mutability::AppendOnly).unwrap_err();
                assert_eq!(e.path, "resources.u", "{bad}");
            }
        }
        assert!(check_column("ok_1").is_ok());
        assert!(check_column("1x").is_err() && check_column("a-b").is_err());
    }
}
