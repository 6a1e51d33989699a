//! The target handle a collector gets: one account and region, and AWS clients for it
//! that the library counts and rate-limits.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use aws_types::SdkConfig;

use super::error::register_error_codes;

/// An AWS service an exporter calls: how to build its SDK client from the parts the
/// library hands over. An exporter crate implements it for its own service, so only
/// that exporter links the service's SDK:
///
/// ```ignore
/// pub struct Ecr;
/// impl AwsService for Ecr {
///     type Client = aws_sdk_ecr::Client;
///     const SERVICE_CODE: &'static str = "ecr";
///     const ERROR_CODES: &'static [&'static str] = &["RepositoryNotFoundException"];
///     fn build(parts: ClientParts) -> Self::Client {
///         let config = aws_sdk_ecr::config::Builder::from(&parts.sdk)
///             .interceptor(parts.interceptor)
///             .http_client(parts.http_client)
///             .build();
///         aws_sdk_ecr::Client::from_conf(config)
///     }
/// }
/// ```
pub trait AwsService {
    /// The SDK client.
    type Client;
    /// The `service_code` label of its request counters, and the rate limiter's key.
    const SERVICE_CODE: &'static str;
    /// Error codes of this service that become `error_code` labels of their own (the
    /// codes a collector branches on, say), besides the codes every service shares.
    const ERROR_CODES: &'static [&'static str] = &[];
    /// Builds the client. It must use all three parts, so that every request is
    /// counted and rate-limited.
    fn build(parts: ClientParts) -> Self::Client;
}

/// Service Quotas: the library reads limits with it, and an exporter may read quotas
/// and their utilization with it (`target.client::<ServiceQuotas>()`).
pub struct ServiceQuotas;

impl AwsService for ServiceQuotas {
    type Client = aws_sdk_servicequotas::Client;
    const SERVICE_CODE: &'static str = "servicequotas";
    const ERROR_CODES: &'static [&'static str] = &[
        "DependencyAccessDeniedException",
        "NoAvailableOrganizationException",
        "TemplatesNotAvailableInRegionException",
        "NoSuchResourceException",
        "InvalidPaginationTokenException",
    ];
    fn build(parts: ClientParts) -> Self::Client {
        let config = aws_sdk_servicequotas::config::Builder::from(&parts.sdk)
            .interceptor(parts.interceptor)
            .http_client(parts.http_client)
            .build();
        aws_sdk_servicequotas::Client::from_conf(config)
    }
}

/// What a client is built from: the target's SDK configuration (credentials, region,
/// retries, timeouts, endpoint), the interceptor that counts requests and errors, and
/// the HTTP client that waits for the rate limiter.
#[derive(Debug, Clone)]
pub struct ClientParts {
    pub sdk: SdkConfig,
    pub interceptor: SharedInterceptor,
    pub http_client: SharedHttpClient,
}

/// Where a target's client parts come from (the library's AWS context, or a test's).
pub trait ClientSource: Send + Sync + fmt::Debug {
    /// Parts for a client of `service_code` in `region`.
    fn parts(&self, service_code: &'static str, region: &str) -> ClientParts;
}

/// Which resources a per-resource collector counts, and how many at once.
#[derive(Clone)]
pub struct ResourceSelection {
    wants: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    concurrency: usize,
}

impl ResourceSelection {
    /// `wants` says whether a resource is counted (config `include` and `exclude`).
    pub fn new(wants: impl Fn(&str) -> bool + Send + Sync + 'static, concurrency: usize) -> Self {
        ResourceSelection {
            wants: Arc::new(wants),
            concurrency: concurrency.max(1),
        }
    }
}

impl Default for ResourceSelection {
    fn default() -> Self {
        ResourceSelection::new(|_| true, 1)
    }
}

impl fmt::Debug for ResourceSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceSelection")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Whether a quota is wanted, by service code and quota code.
type WantsQuota = dyn Fn(&str, &str) -> bool + Send + Sync;

/// Which discovered quotas a collector reports (config `services` and `quotas`).
#[derive(Clone)]
pub struct QuotaSelection {
    wants: Arc<WantsQuota>,
}

impl QuotaSelection {
    /// `wants(service_code, quota_code)` says whether a quota is reported.
    pub fn new(wants: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> Self {
        QuotaSelection {
            wants: Arc::new(wants),
        }
    }
}

impl Default for QuotaSelection {
    fn default() -> Self {
        QuotaSelection::new(|_, _| true)
    }
}

impl fmt::Debug for QuotaSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaSelection").finish_non_exhaustive()
    }
}

/// One account and region, as a collector sees it.
#[derive(Clone)]
pub struct Target {
    pub account_id: String,
    pub region: String,
    clients: Arc<dyn ClientSource>,
    resources: ResourceSelection,
    quotas: QuotaSelection,
    refresh_interval: Duration,
    limits_refresh_interval: Duration,
    usage_source: Arc<str>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("account_id", &self.account_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Target {
    pub fn new(
        account_id: impl Into<String>,
        region: impl Into<String>,
        clients: Arc<dyn ClientSource>,
    ) -> Self {
        Target {
            account_id: account_id.into(),
            region: region.into(),
            clients,
            resources: ResourceSelection::default(),
            quotas: QuotaSelection::default(),
            refresh_interval: Duration::from_secs(300),
            limits_refresh_interval: Duration::from_secs(3600),
            usage_source: Arc::from(""),
        }
    }

    /// The same target, its limits refreshed at this interval.
    pub fn with_limits_refresh_interval(mut self, interval: Duration) -> Self {
        self.limits_refresh_interval = interval;
        self
    }

    /// How often limits are read again for this target (its `limits_refresh_interval`),
    /// for a collector that reads quota values or definitions itself and keeps them
    /// between refreshes.
    pub fn limits_refresh_interval(&self) -> Duration {
        self.limits_refresh_interval
    }

    /// The same target, reading usage from `source` (one of the collector's
    /// [`Collector::usage_sources`](super::Collector::usage_sources)).
    pub fn with_usage_source(mut self, source: &str) -> Self {
        self.usage_source = Arc::from(source);
        self
    }

    /// The usage source in force for this target: the account's `usage_source`, else
    /// the collector's, else the collector's first; empty for a collector with no
    /// choice.
    pub fn usage_source(&self) -> &str {
        &self.usage_source
    }

    /// The same target, refreshed at this interval.
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// How often the collector refreshes this target (its `refresh_interval`), for a
    /// collector that shares work between refreshes and must not serve older data.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh_interval
    }

    /// The same target, counting the resources `selection` chooses.
    pub fn with_resources(mut self, selection: ResourceSelection) -> Self {
        self.resources = selection;
        self
    }

    /// Whether a per-resource collector should count this resource (config `include`
    /// and `exclude`), so that excluded resources cost no API calls.
    pub fn wants(&self, name: &str) -> bool {
        (self.resources.wants)(name)
    }

    /// The same target, reporting the discovered quotas `selection` chooses.
    pub fn with_quotas(mut self, selection: QuotaSelection) -> Self {
        self.quotas = selection;
        self
    }

    /// Whether a collector that discovers quotas should report this one (config
    /// `services` and `quotas`).
    pub fn wants_quota(&self, service_code: &str, quota_code: &str) -> bool {
        (self.quotas.wants)(service_code, quota_code)
    }

    /// How many resources a per-resource collector may count at once.
    pub fn concurrency(&self) -> usize {
        self.resources.concurrency
    }

    /// A client for this target whose every request is counted and rate-limited:
    /// `target.client::<Ecr>()`.
    pub fn client<S: AwsService>(&self) -> S::Client {
        self.client_in::<S>(&self.region)
    }

    /// The same in another region (for quotas managed in one region, such as S3's).
    pub fn client_in<S: AwsService>(&self, region: &str) -> S::Client {
        register_error_codes(S::ERROR_CODES);
        S::build(self.clients.parts(S::SERVICE_CODE, region))
    }
}
