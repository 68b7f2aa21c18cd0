//! Classifies AWS SDK failures: the service unreachable, slow or throttling, and credentials
//! it refuses (the destination is unusable until fixed: changes wait, the circuit opens) are
//! retried; what the service rejects about a request is not.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::{redact, SinkError};

/// Error codes meaning "slow down".
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "KMS.ThrottlingException",
];

/// Error codes about who we are: fixing them needs the operator, not the record.
const AUTH: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
    "InvalidSignatureException",
    "IncompleteSignature",
];

/// A failed SDK call (`what` names it) as the engine sees it. The SQS and DynamoDB crates
/// share these types (both re-export the smithy runtime's).
pub(crate) fn classify<E>(what: &str, e: &SdkError<E, HttpResponse>) -> SinkError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = || redact(&DisplayErrorContext(e).to_string());
    match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("");
            let message = redact(&format!(
                "{what}: {code}: {}",
                err.message().unwrap_or("(no message)")
            ));
            let status = service.raw().status().as_u16();
            if THROTTLING.contains(&code) || status == 429 {
                SinkError::throttled(message, None)
            } else if AUTH.contains(&code) || status >= 500 {
                SinkError::retryable(message)
            } else {
                SinkError::permanent(message)
            }
        }
        SdkError::ConstructionFailure(_) => {
            // A request that cannot even be built (bad credentials provider, bad input).
            SinkError::permanent(format!("{what}: {}", detail()))
        }
        SdkError::TimeoutError(_) => SinkError::timed_out(format!("{what}: {}", detail())),
        // Transport (connection refused, TLS, DNS) and unreadable responses.
        _ => SinkError::retryable(format!("{what}: {}", detail())),
    }
}
