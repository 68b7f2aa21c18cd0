//! What the AWS destinations (`sqs`, `dynamodb`) share: credentials and region settings, the
//! SDK configuration built from them, and the classification of SDK errors.

mod credentials;
mod errors;

pub(crate) use credentials::{AwsAuth, AwsCredentials};
pub(crate) use errors::classify;
