//! The one interface an exporter implements: a named collector that counts usage for
//! one target. Scheduling, limits, timing, health and rendering live elsewhere.

use std::fmt;

use async_trait::async_trait;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::aws::Target;

/// A quota that a collector reports, with what we know about it without asking AWS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaSpec {
    /// Service Quotas service code (`ssm`, `ecr`, `s3`).
    pub service_code: &'static str,
    /// Service Quotas quota code (`L-…`), or a stable snake_case name of ours when AWS
    /// has none.
    pub quota_code: &'static str,
    /// The quota's name as AWS writes it.
    pub quota_name: &'static str,
    /// The documented AWS default, used when neither the config nor Service Quotas
    /// gives a value.
    pub builtin_limit: f64,
    /// Whether AWS lets an account raise the quota.
    pub adjustable: bool,
    /// Whether Service Quotas knows this quota (so the limit is looked up there).
    pub in_service_quotas: bool,
    /// Whether Service Quotas may hold values applied to single resources (its
    /// `ContextId`, the resource ARN); usage is then reported per resource.
    pub resource_level: bool,
}

/// One usage value counted by a collector.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// The `quota_code` of one of the collector's [`QuotaSpec`]s.
    pub quota_code: &'static str,
    /// Empty for a per-account or per-region quota; the resource name otherwise.
    pub resource: String,
    pub value: f64,
}

impl Usage {
    pub fn new(quota: &QuotaSpec, value: f64) -> Self {
        Usage {
            quota_code: quota.quota_code,
            resource: String::new(),
            value,
        }
    }
}

/// A fact about one resource that is not a quota but explains one (for example
/// whether an ECR repository has a lifecycle policy), exported as a gauge named
/// `name` with `account_id`, `aws_region`, `service_code` and `resource`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub name: &'static str,
    pub help: &'static str,
    pub service_code: &'static str,
    pub resource: String,
    pub value: f64,
}

/// What one refresh found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    pub usage: Vec<Usage>,
    pub facts: Vec<Fact>,
}

impl From<Vec<Usage>> for Collected {
    fn from(usage: Vec<Usage>) -> Self {
        Collected {
            usage,
            facts: Vec::new(),
        }
    }
}

impl From<Vec<Fact>> for Collected {
    fn from(facts: Vec<Fact>) -> Self {
        Collected {
            usage: Vec::new(),
            facts,
        }
    }
}

/// Why a collection failed. `code` is a bounded label value; `message` is for logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct CollectError {
    pub operation: String,
    pub code: &'static str,
    pub message: String,
}

impl CollectError {
    /// A response that parsed but does not make sense (a missing field, say).
    pub fn malformed(operation: &str, message: impl Into<String>) -> Self {
        CollectError {
            operation: operation.to_string(),
            code: "malformed_response",
            message: message.into(),
        }
    }

    /// Converts an SDK error, keeping the AWS error code as a bounded label.
    pub fn from_sdk<E, R>(operation: &str, err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        let (code, message) = match err {
            SdkError::ServiceError(se) => {
                let e = se.err();
                (
                    crate::aws::error_code_label(e.code().unwrap_or("")),
                    e.message().unwrap_or("").to_string(),
                )
            }
            SdkError::TimeoutError(_) => ("timeout", "request timed out".to_string()),
            SdkError::DispatchFailure(d) => (
                if d.is_timeout() {
                    "timeout"
                } else {
                    "dispatch"
                },
                format!(
                    "{}",
                    aws_smithy_types::error::display::DisplayErrorContext(err)
                ),
            ),
            SdkError::ResponseError(_) => (
                "malformed_response",
                format!(
                    "{}",
                    aws_smithy_types::error::display::DisplayErrorContext(err)
                ),
            ),
            SdkError::ConstructionFailure(_) => (
                "construction",
                format!(
                    "{}",
                    aws_smithy_types::error::display::DisplayErrorContext(err)
                ),
            ),
            _ => (
                "other",
                format!(
                    "{}",
                    aws_smithy_types::error::display::DisplayErrorContext(err)
                ),
            ),
        };
        CollectError {
            operation: operation.to_string(),
            code,
            message,
        }
    }
}

/// Where a collector's quotas hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Per account and region: one refresh per configured region.
    Regional,
    /// Per account across regions: one refresh per account, with clients in the region
    /// where AWS manages the quota, exported with `aws_region="global"`.
    Global { home_region: &'static str },
}

/// A collector counts one service's usage for one target (an account and region).
///
/// It never touches the metrics library, HTTP or the scheduler: it gets AWS clients
/// from the [`Target`] (which counts and rate-limits every request) and returns usage.
#[async_trait]
pub trait Collector: Send + Sync + 'static {
    /// Stable snake_case name, used as the `collector` label and the config key.
    fn name(&self) -> &'static str;
    /// The quotas this collector reports usage for.
    fn quotas(&self) -> &'static [QuotaSpec];
    /// Whether the collector runs unless the config says `enabled: false` (the
    /// default); an optional, costlier one returns false and runs only when enabled.
    fn enabled_by_default(&self) -> bool {
        true
    }
    /// The settings a key left out of the config file takes: the library's, unless a
    /// collector needs others (a per-resource collector with thousands of resources
    /// needs a higher rate and a longer interval to finish a refresh in time).
    fn defaults(&self) -> crate::config::CollectorConfig {
        crate::config::CollectorConfig::default()
    }
    /// Regional (the default) or global.
    fn scope(&self) -> Scope {
        Scope::Regional
    }
    /// Counts usage for one target.
    async fn collect(&self, target: &Target) -> Result<Collected, CollectError>;
}
