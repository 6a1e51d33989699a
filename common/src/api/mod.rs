//! The collector API: the one interface an exporter implements, and everything it
//! touches (quota specs, usage, facts, scope, the target handle and its clients, the
//! error type, paging). This module depends on nothing else in the library; the rest
//! of the library is built on it.

mod error;
mod kept;
mod paging;
mod quota;
mod target;

use std::time::Duration;

use async_trait::async_trait;

pub(crate) use error::register_error_codes;
pub use error::{error_code_label, CollectError};
pub use kept::PerTarget;
pub(crate) use paging::with_page_cap;
pub use paging::{pages, MAX_PAGES};
pub use quota::{Collected, Fact, LimitFrom, QuotaSpec, Usage};
pub use target::{
    AwsService, ClientParts, ClientSource, QuotaSelection, ResourceSelection, ServiceQuotas, Target,
};

/// Where a collector's quotas hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Per account and region: one refresh per configured region.
    Regional,
    /// Per account across regions: one refresh per account, with clients in the region
    /// where AWS manages the quota, exported with `aws_region="global"`.
    Global { home_region: &'static str },
}

impl Scope {
    /// The region a target in `region` calls: its own for a regional quota; for a
    /// global one, where its partition manages global quotas: `home_region` in the
    /// commercial partition, `cn-north-1` in China, `us-gov-west-1` in GovCloud.
    pub fn client_region<'a>(&self, region: &'a str) -> &'a str {
        match self {
            Scope::Regional => region,
            Scope::Global { .. } if region.starts_with("cn-") => "cn-north-1",
            Scope::Global { .. } if region.starts_with("us-gov-") => "us-gov-west-1",
            Scope::Global { home_region } => home_region,
        }
    }
}

/// The settings a key left out of the config file takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    pub refresh_interval: Duration,
    pub limits_refresh_interval: Duration,
    pub timeout: Duration,
    pub max_staleness: Duration,
    /// AWS API requests per second, shared per account, region and service.
    pub rate_limit: f64,
    /// Per-resource collectors: resources counted at once.
    pub concurrency: usize,
    /// Per-resource collectors, and those that discover quotas: series under this
    /// usage ratio are not exported.
    pub min_usage_ratio: f64,
}

impl Defaults {
    /// The library's defaults.
    pub const LIBRARY: Defaults = Defaults {
        refresh_interval: Duration::from_secs(300),
        limits_refresh_interval: Duration::from_secs(3600),
        timeout: Duration::from_secs(120),
        max_staleness: Duration::from_secs(1800),
        rate_limit: 5.0,
        concurrency: 4,
        min_usage_ratio: 0.0,
    };
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults::LIBRARY
    }
}

/// A collector counts one service's usage for one target (an account and region).
///
/// It never touches the metrics library, HTTP or the scheduler: it gets AWS clients
/// from the [`Target`] (which counts and rate-limits every request) and returns usage.
///
/// ```
/// use headroom_common::{async_trait, CollectError, Collected, Collector, QuotaSpec, Target, Usage};
///
/// const THINGS: QuotaSpec = QuotaSpec::documented("demo", "things", "Things", 10.0);
///
/// #[derive(Debug)]
/// struct ThingsCollector;
///
/// #[async_trait]
/// impl Collector for ThingsCollector {
///     fn name(&self) -> &'static str {
///         "demo_things"
///     }
///     fn quotas(&self) -> Vec<QuotaSpec> {
///         vec![THINGS]
///     }
///     async fn collect(&self, _target: &Target) -> Result<Collected, CollectError> {
///         Ok(vec![Usage::new(&THINGS, 3.0)].into())
///     }
/// }
/// ```
#[async_trait]
pub trait Collector: Send + Sync + 'static {
    /// Stable snake_case name, used as the `collector` label and the config key.
    fn name(&self) -> &'static str;
    /// The quotas this collector reports usage for (limit overrides name them).
    fn quotas(&self) -> Vec<QuotaSpec>;
    /// Whether the collector runs unless the config says `enabled: false` (the
    /// default); an optional, costlier one returns false and runs only when enabled.
    fn enabled_by_default(&self) -> bool {
        true
    }
    /// Whether it counts single resources: only then does the config accept
    /// `include`, `exclude`, `min_usage_ratio` and `concurrency` for it.
    fn per_resource(&self) -> bool {
        false
    }
    /// Whether it reports quotas it finds at run time (every quota Service Quotas
    /// meters, say) rather than a fixed list: only then does the config accept
    /// `services` and `quotas` filters, `min_usage_ratio` applies to every series, and
    /// limit overrides and thresholds may name any quota code.
    fn discovers_quotas(&self) -> bool {
        false
    }
    /// Where it can read usage from, when it has a choice (a report, or CloudWatch):
    /// the names the config's `usage_source` accepts, per collector and per account,
    /// the first one the default. Empty (the default) when there is no choice; the
    /// config then refuses the key. The collector reads the choice in force with
    /// [`Target::usage_source`].
    fn usage_sources(&self) -> &'static [&'static str] {
        &[]
    }
    /// The settings a key left out of the config file takes: the library's, unless a
    /// collector needs others (a per-resource collector with thousands of resources
    /// needs a higher rate and a longer interval to finish a refresh in time).
    fn defaults(&self) -> Defaults {
        Defaults::LIBRARY
    }
    /// Regional (the default) or global.
    fn scope(&self) -> Scope {
        Scope::Regional
    }
    /// Counts usage for one target.
    async fn collect(&self, target: &Target) -> Result<Collected, CollectError>;
}
