//! Credentials and region of an AWS destination, as the spec writes them: `credentials: {
//! accessKeyId, secretAccessKey, sessionToken }`, or top-level `accessKeyId` /
//! `secretAccessKey`, or nothing (the AWS default chain: environment, profile, instance role).

use aws_config::meta::region::ProvideRegion;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ConfigError;
use crate::secret::Secret;

/// `credentials` of an AWS driver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// Set by the AWS SDK for JavaScript on a credentials object it has used (feature
    /// tracking): an application that shares one object with its own SDK clients passes it too.
    #[serde(default, rename = "$source")]
    _sdk_source: Option<Value>,
}

/// The settings every AWS driver takes (each driver's config lists them as its own fields,
/// so that `deny_unknown_fields` still catches a misspelling).
#[derive(Debug, Clone, Default)]
pub struct AwsAuth {
    pub region: Option<String>,
    /// `http://127.0.0.1:4566` for a local or compatible server.
    pub endpoint: Option<String>,
    pub credentials: Option<AwsCredentials>,
}

impl AwsAuth {
    /// Merges the top-level `accessKeyId` / `secretAccessKey` form into `credentials`.
    pub fn new(
        region: Option<String>,
        endpoint: Option<String>,
        credentials: Option<AwsCredentials>,
        access_key_id: Option<String>,
        secret_access_key: Option<Secret>,
    ) -> Result<Self, ConfigError> {
        let credentials = match (credentials, access_key_id, secret_access_key) {
            (Some(c), None, None) => Some(c),
            (None, Some(access_key_id), Some(secret_access_key)) => Some(AwsCredentials {
                access_key_id,
                secret_access_key,
                session_token: None,
                _sdk_source: None,
            }),
            (None, None, None) => None,
            (Some(_), _, _) => {
                return Err(ConfigError::new(
                    "credentials",
                    "credentials are given twice (credentials and accessKeyId/secretAccessKey)",
                    "keep one of the two forms",
                ))
            }
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(ConfigError::new(
                    "accessKeyId",
                    "accessKeyId and secretAccessKey go together",
                    "give both, or neither to use the AWS default credential chain",
                ))
            }
        };
        if let Some(endpoint) = &endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ConfigError::new(
                    "endpoint",
                    format!("'{}' is not an http(s) URL", crate::error::redact(endpoint)),
                    "e.g. endpoint: 'http://127.0.0.1:4566'",
                ));
            }
        }
        Ok(Self {
            region,
            endpoint,
            credentials,
        })
    }

    /// Adds the redacted settings to a driver's redacted configuration object.
    pub fn redact_into(&self, config: &mut Value) {
        if let (Value::Object(m), Value::Object(a)) = (config, self.redacted()) {
            m.extend(a);
        }
    }

    /// The settings for `listReplicators()`: the key id is shown, secrets are `***`.
    pub fn redacted(&self) -> Value {
        json!({
            "region": self.region,
            "endpoint": self.endpoint.as_deref().map(crate::error::redact),
            "credentials": self.credentials.as_ref().map(|c| json!({
                "accessKeyId": c.access_key_id, "secretAccessKey": "***",
                "sessionToken": c.session_token.as_ref().map(|_| "***"),
            })),
        })
    }

    /// The SDK configuration: static credentials when given, else the default chain; the
    /// region given, else the environment's, else `us-east-1` (as the stock drivers).
    pub async fn sdk_config(&self) -> SdkConfig {
        let region = match &self.region {
            Some(r) => Region::new(r.clone()),
            None => aws_config::default_provider::region::default_provider()
                .region()
                .await
                .unwrap_or_else(|| Region::new("us-east-1")),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
        if let Some(c) = &self.credentials {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.expose().to_owned(),
                c.session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "s3db-replicator",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        loader.load().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_object_the_js_sdk_has_used_still_parses() {
        let c: AwsCredentials = serde_json::from_value(json!({
            "accessKeyId": "AK", "secretAccessKey": "S", "$source": { "CREDENTIALS_CODE": "e" }
        }))
        .unwrap();
        assert_eq!(c.access_key_id, "AK");
        let typo = serde_json::from_value::<AwsCredentials>(
            json!({ "accessKeyId": "AK", "secretAccessKey": "S", "sesionToken": "T" }),
        );
        assert!(typo.is_err(), "other unknown fields are still refused");
    }
}
