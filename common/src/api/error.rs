//! Why a collection failed, and the bounded `error_code` label of an AWS error.

use std::sync::RwLock;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Why a collection failed. `code` is a bounded label value; `aws_code` is the code AWS
/// sent, as it sent it, for a collector to branch on; `message` is for logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct CollectError {
    pub operation: String,
    /// The `error_code` label: a known AWS code, or `other`, `timeout`, `dispatch`, …
    pub code: &'static str,
    /// The error code in the AWS response, whether or not it is a known label.
    pub aws_code: Option<String>,
    pub message: String,
}

/// Longest raw AWS error code kept (real ones are under 60 characters).
const MAX_AWS_CODE: usize = 100;

impl CollectError {
    /// A failure of ours, with a fixed label (`timeout`, `malformed_response`, …).
    pub fn new(operation: &str, code: &'static str, message: impl Into<String>) -> Self {
        CollectError {
            operation: operation.to_string(),
            code,
            aws_code: None,
            message: message.into(),
        }
    }

    /// A response that parsed but does not make sense (a missing field, say).
    pub fn malformed(operation: &str, message: impl Into<String>) -> Self {
        CollectError::new(operation, "malformed_response", message)
    }

    /// Whether AWS answered with this error code (`RepositoryNotFoundException`, …).
    pub fn is(&self, aws_code: &str) -> bool {
        self.aws_code.as_deref() == Some(aws_code)
    }

    /// Converts an SDK error, keeping the AWS error code both raw and as a bounded
    /// label.
    ///
    /// The label follows the same rules as the request-error counter's, so a log line
    /// and the counter name one failure alike: a known code is itself and an unknown
    /// one `other`, except that a success status with an unreadable body is
    /// `malformed_response`; with no code at all, `http_5xx`, `http_4xx` or
    /// `malformed_response` by status.
    pub fn from_sdk<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let context = || format!("{}", DisplayErrorContext(err));
        let (code, aws_code, message) = match err {
            SdkError::ServiceError(se) => {
                let e = se.err();
                let raw = e.code().unwrap_or("");
                let status = se.raw().status().as_u16();
                let label = match (raw.is_empty(), error_code_label(raw)) {
                    (true, _) if status >= 500 => "http_5xx",
                    (true, _) if status >= 400 => "http_4xx",
                    (true, _) => "malformed_response",
                    (false, "other") if (200..300).contains(&status) => "malformed_response",
                    (false, label) => label,
                };
                let message = match e.message() {
                    Some(m) if !m.is_empty() => m.to_string(),
                    _ => context(),
                };
                (
                    label,
                    (!raw.is_empty()).then(|| raw.chars().take(MAX_AWS_CODE).collect()),
                    message,
                )
            }
            SdkError::TimeoutError(_) => ("timeout", None, "request timed out".to_string()),
            SdkError::DispatchFailure(d) => {
                let code = match d.as_connector_error() {
                    Some(c) if c.is_timeout() => "timeout",
                    Some(c) if c.is_io() => "io",
                    _ => "dispatch",
                };
                (code, None, context())
            }
            SdkError::ResponseError(_) => ("malformed_response", None, context()),
            SdkError::ConstructionFailure(_) => ("construction", None, context()),
            _ => ("other", None, context()),
        };
        CollectError {
            operation: operation.to_string(),
            code,
            aws_code,
            message,
        }
    }
}

/// Codes that services register for themselves (see `AwsService::ERROR_CODES`).
static REGISTERED: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());

/// Makes these codes labels of their own. Called when a service's client is built, so
/// an exporter's codes are labels before its first request.
pub(crate) fn register_error_codes(codes: &'static [&'static str]) {
    if codes.is_empty() {
        return;
    }
    let known = |c: &&str| COMMON_CODES.contains(c);
    let mut registered = match REGISTERED.write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    for code in codes {
        if !known(code) && !registered.contains(code) {
            registered.push(code);
        }
    }
}

/// Maps an AWS error code to a fixed label: one of the codes every service may send,
/// or one a service registered; anything else becomes `other`, so a misbehaving
/// endpoint cannot make the label set unbounded.
pub fn error_code_label(code: &str) -> &'static str {
    if let Some(c) = COMMON_CODES.iter().find(|c| **c == code) {
        return c;
    }
    let registered = match REGISTERED.read() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    registered
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("other")
}

/// The codes any AWS service may answer with, labels of their own in every exporter.
pub(super) const COMMON_CODES: &[&str] = &[
    // Throttling
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "ThrottleException",
    "ProvisionedThroughputExceededException",
    "PriorRequestNotComplete",
    "BandwidthLimitExceeded",
    // Credentials and permissions
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "OptInRequired",
    "RegionDisabledException",
    // Server side
    "InternalServerError",
    "InternalServerException",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServerException",
    "ServiceException",
    // Requests
    "ValidationException",
    "InvalidNextToken",
    "InvalidParameterException",
    "InvalidParameterValueException",
    "IllegalArgumentException",
    // Not found
    "NoSuchResourceException",
    "ResourceNotFoundException",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_fold_until_registered() {
        assert_eq!(
            error_code_label("ThrottlingException"),
            "ThrottlingException"
        );
        assert_eq!(error_code_label("HeadroomTestOnlyException"), "other");
        register_error_codes(&["HeadroomTestOnlyException"]);
        assert_eq!(
            error_code_label("HeadroomTestOnlyException"),
            "HeadroomTestOnlyException"
        );
        register_error_codes(&["HeadroomTestOnlyException", "ThrottlingException"]);
        let registered = REGISTERED.read().expect("lock");
        assert_eq!(
            registered
                .iter()
                .filter(|c| **c == "HeadroomTestOnlyException")
                .count(),
            1
        );
        assert!(!registered.contains(&"ThrottlingException"));
    }

    fn service_error(status: u16, code: Option<&str>) -> CollectError {
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let mut meta = ErrorMetadata::builder();
        if let Some(c) = code {
            meta = meta.code(c);
        }
        let response = HttpResponse::new(status.try_into().expect("status"), SdkBody::empty());
        let err: SdkError<ErrorMetadata, HttpResponse> =
            SdkError::service_error(meta.build(), response);
        CollectError::from_sdk("Op", &err)
    }

    #[test]
    fn labels_follow_the_request_counter_s_rules() {
        // The same cases as the counter's response_error_code test.
        assert_eq!(
            service_error(400, Some("ThrottlingException")).code,
            "ThrottlingException"
        );
        assert_eq!(service_error(400, Some("SomethingNew")).code, "other");
        assert_eq!(
            service_error(400, Some("SomethingNew")).aws_code.as_deref(),
            Some("SomethingNew")
        );
        assert_eq!(
            service_error(200, Some("SomethingNew")).code,
            "malformed_response"
        );
        assert_eq!(service_error(200, None).code, "malformed_response");
        assert_eq!(service_error(502, None).code, "http_5xx");
        assert_eq!(service_error(403, None).code, "http_4xx");
        assert!(
            !service_error(200, None).message.is_empty(),
            "an empty message says what happened"
        );
    }

    #[test]
    fn the_raw_code_is_kept_when_the_label_folds() {
        let mut e = CollectError::malformed("Op", "x");
        assert!(!e.is("SomethingNew"));
        e.aws_code = Some("SomethingNew".into());
        assert!(e.is("SomethingNew") && e.code == "malformed_response");
    }
}
