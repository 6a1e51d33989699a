//! What a collector reports: quota specs, usage values and facts.

use std::borrow::Cow;

/// A quota that a collector reports, with what we know about it without asking AWS.
///
/// Static specs are one-liners built with the `const` constructors:
///
/// ```
/// use headroom_common::QuotaSpec;
/// const IMAGES: QuotaSpec =
///     QuotaSpec::service_quota("ecr", "L-03A36CE1", "Images per repository", 100_000.0)
///         .adjustable()
///         .per_resource();
/// assert!(IMAGES.in_service_quotas && IMAGES.resource_level);
/// ```
///
/// A collector that discovers quotas at run time builds them with owned strings
/// ([`QuotaSpec::discovered`]).
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaSpec {
    /// Service Quotas service code (`ssm`, `ecr`, `s3`).
    pub service_code: Cow<'static, str>,
    /// Service Quotas quota code (`L-…`), or a stable snake_case name of ours when AWS
    /// has none.
    pub quota_code: Cow<'static, str>,
    /// The quota's name as AWS writes it.
    pub quota_name: Cow<'static, str>,
    /// The documented AWS default, used when no other source gives a value.
    pub builtin_limit: f64,
    /// Whether AWS lets an account raise the quota.
    pub adjustable: bool,
    /// Whether Service Quotas knows this quota (so the limit is looked up there).
    pub in_service_quotas: bool,
    /// Whether Service Quotas may hold values applied to single resources (its
    /// `ContextId`, the resource ARN); usage is then reported per resource.
    pub resource_level: bool,
}

impl QuotaSpec {
    /// A quota that Service Quotas knows by this code: its limit is looked up there.
    pub const fn service_quota(
        service_code: &'static str,
        quota_code: &'static str,
        quota_name: &'static str,
        builtin_limit: f64,
    ) -> Self {
        QuotaSpec {
            service_code: Cow::Borrowed(service_code),
            quota_code: Cow::Borrowed(quota_code),
            quota_name: Cow::Borrowed(quota_name),
            builtin_limit,
            adjustable: false,
            in_service_quotas: true,
            resource_level: false,
        }
    }

    /// A quota that Service Quotas does not list: a code of our own, and the
    /// documented limit unless the config overrides it.
    pub const fn documented(
        service_code: &'static str,
        quota_code: &'static str,
        quota_name: &'static str,
        builtin_limit: f64,
    ) -> Self {
        let mut spec =
            QuotaSpec::service_quota(service_code, quota_code, quota_name, builtin_limit);
        spec.in_service_quotas = false;
        spec
    }

    /// A quota found at run time (for example in a Service Quotas listing).
    pub fn discovered(
        service_code: impl Into<String>,
        quota_code: impl Into<String>,
        quota_name: impl Into<String>,
        builtin_limit: f64,
    ) -> Self {
        QuotaSpec {
            service_code: Cow::Owned(service_code.into()),
            quota_code: Cow::Owned(quota_code.into()),
            quota_name: Cow::Owned(quota_name.into()),
            builtin_limit,
            adjustable: false,
            in_service_quotas: true,
            resource_level: false,
        }
    }

    /// AWS lets an account raise it.
    pub const fn adjustable(mut self) -> Self {
        self.adjustable = true;
        self
    }

    /// Usage is reported per resource, and Service Quotas may hold values applied to
    /// single resources.
    pub const fn per_resource(mut self) -> Self {
        self.resource_level = true;
        self
    }
}

/// One usage value counted by a collector.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// The quota counted (one of the collector's [`QuotaSpec`]s, or one it discovered).
    pub quota: QuotaSpec,
    /// Empty for a per-account or per-region quota; the resource name otherwise.
    pub resource: String,
    pub value: f64,
    /// The limit, where the collector read it together with the usage (IAM
    /// `GetAccountSummary`, say): second only to an override, its source in
    /// `limit_from`.
    pub limit: Option<f64>,
    /// Where `limit` came from: the `limit_source` label.
    pub limit_from: LimitFrom,
}

/// Where a limit a collector reports with its usage came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitFrom {
    /// The service's own API returned it with the usage: `limit_source="service"`.
    #[default]
    Service,
    /// Service Quotas' applied value, read by the collector: `limit_source="applied"`.
    Applied,
    /// Service Quotas' AWS default, read by the collector: `limit_source="default"`.
    Default,
}

impl Usage {
    /// Usage of a per-account or per-region quota.
    pub fn new(quota: &QuotaSpec, value: f64) -> Self {
        Usage {
            quota: quota.clone(),
            resource: String::new(),
            value,
            limit: None,
            limit_from: LimitFrom::Service,
        }
    }

    /// Usage of one resource of a per-resource quota.
    pub fn of_resource(quota: &QuotaSpec, resource: impl Into<String>, value: f64) -> Self {
        Usage {
            resource: resource.into(),
            ..Usage::new(quota, value)
        }
    }

    /// The same, with the limit the service reported together with the usage.
    pub fn with_service_limit(self, limit: f64) -> Self {
        self.with_limit(limit, LimitFrom::Service)
    }

    /// The limit reported with the usage, and where it came from.
    pub fn reported_limit(&self) -> Option<(f64, LimitFrom)> {
        self.limit.map(|l| (l, self.limit_from))
    }

    /// The same, with a limit the collector read itself and where it came from (a
    /// collector that lists Service Quotas for its own reasons: `Applied` or `Default`).
    pub fn with_limit(mut self, limit: f64, from: LimitFrom) -> Self {
        self.limit = Some(limit).filter(|l| l.is_finite() && *l >= 0.0);
        self.limit_from = from;
        self
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
