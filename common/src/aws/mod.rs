//! Everything that talks to AWS goes through here: the targets of a config (an
//! account and a region with credentials) and the parts every client is built from,
//! so that each request is counted and rate-limited.

mod counting;
mod credentials;
mod http;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region as AwsRegion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;

use crate::api::{AwsService, ClientParts, ClientSource, CollectError, ResourceSelection, Target};
use crate::config::{AccountConfig, AwsConfig, Config, ExternalId, RoleArn, SessionName};
use crate::metrics::AwsCallCounters;
use crate::ratelimit::{RateLimiter, User};
use counting::CountingInterceptor;
use credentials::{caller_account, identity_cache, AssumeRoleCredentials, Sts};
use http::{default_http_client, RateLimitedHttpClient};

/// (account ID, region, service code).
type LimiterKey = (String, String, &'static str);

/// Requests per second to STS, for the library's own calls.
const STS_RATE: f64 = 5.0;
/// The library's own STS calls, as a user of the STS limiters.
const STS_USER: User = "headroom";

/// What every client of the process shares: the request counters and the rate
/// limiters, one per account, region and service.
#[derive(Debug)]
pub(crate) struct AwsContext {
    counters: AwsCallCounters,
    limiters: Mutex<HashMap<LimiterKey, Arc<RateLimiter>>>,
}

impl AwsContext {
    pub(crate) fn new(counters: AwsCallCounters) -> Arc<Self> {
        Arc::new(AwsContext {
            counters,
            limiters: Mutex::new(HashMap::new()),
        })
    }

    fn limiter(
        &self,
        account: &str,
        region: &str,
        service: &'static str,
        user: User,
        rate: f64,
    ) -> Arc<RateLimiter> {
        let mut map = self.limiters();
        let key = (account.to_string(), region.to_string(), service);
        match map.get(&key) {
            // Collectors on one service share the limiter at the strictest rate.
            Some(l) => {
                l.set_rate(user, rate);
                l.clone()
            }
            None => {
                let l = Arc::new(RateLimiter::new(user, rate));
                map.insert(key, l.clone());
                l
            }
        }
    }

    fn limiters(&self) -> std::sync::MutexGuard<'_, HashMap<LimiterKey, Arc<RateLimiter>>> {
        match self.limiters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Forgets the rate `user` set on the limiters of `account` and `region` (its
    /// collector stopped there), so that a stricter rate it had set no longer applies.
    pub(crate) fn forget(&self, account: &str, region: &str, user: User) {
        for ((a, r, _), limiter) in self.limiters().iter() {
            if a == account && r == region {
                limiter.forget(user);
            }
        }
    }

    /// The parts of a client of `service` for `sdk`, counted, behind the limiter of
    /// (`account`, the SDK config's region, `service`).
    pub(crate) fn parts(
        &self,
        sdk: SdkConfig,
        account: &str,
        service: &'static str,
        user: User,
        rate: f64,
    ) -> ClientParts {
        let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
        let limiter = self.limiter(account, &region, service, user, rate);
        let interceptor = SharedInterceptor::new(CountingInterceptor {
            service_code: service,
            counters: self.counters.clone(),
        });
        let inner = sdk.http_client().unwrap_or_else(default_http_client);
        let http_client = SharedHttpClient::new(RateLimitedHttpClient { inner, limiter });
        ClientParts {
            sdk,
            interceptor,
            http_client,
        }
    }
}

/// The clients of one target for one collector: its credentials and region, and the
/// collector's rate limit.
struct TargetClients {
    account_id: String,
    /// The collector, whose rate this is.
    user: User,
    sdk: SdkConfig,
    rate_limit: f64,
    aws: Arc<AwsContext>,
}

impl fmt::Debug for TargetClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetClients")
            .field("account_id", &self.account_id)
            .field("user", &self.user)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

impl ClientSource for TargetClients {
    fn parts(&self, service_code: &'static str, region: &str) -> ClientParts {
        let sdk = in_region(&self.sdk, region);
        self.aws.parts(
            sdk,
            &self.account_id,
            service_code,
            self.user,
            self.rate_limit,
        )
    }
}

/// `sdk` with its clients in `region`.
pub(crate) fn in_region(sdk: &SdkConfig, region: &str) -> SdkConfig {
    if sdk.region().map(|r| r.as_ref()) == Some(region) {
        sdk.clone()
    } else {
        sdk.to_builder()
            .region(AwsRegion::new(region.to_string()))
            .build()
    }
}

/// An account and region to collect from, before a collector's rate limit applies.
#[derive(Clone)]
pub(crate) struct TargetSpec {
    pub account_id: String,
    pub region: String,
    sdk: SdkConfig,
    /// Account-level limit overrides, by quota code.
    pub account: AccountConfig,
}

impl TargetSpec {
    /// The same account with its clients in another region (for global quotas, which
    /// AWS manages in one region).
    pub(crate) fn in_region(&self, region: &str) -> TargetSpec {
        TargetSpec {
            region: region.to_string(),
            sdk: in_region(&self.sdk, region),
            ..self.clone()
        }
    }

    /// The target as one collector sees it: its rate limit and resource selection.
    pub(crate) fn for_collector(
        &self,
        aws: &Arc<AwsContext>,
        collector: User,
        rate_limit: f64,
        resources: ResourceSelection,
    ) -> Target {
        let clients = TargetClients {
            account_id: self.account_id.clone(),
            user: collector,
            sdk: self.sdk.clone(),
            rate_limit,
            aws: aws.clone(),
        };
        Target::new(
            self.account_id.clone(),
            self.region.clone(),
            Arc::new(clients),
        )
        .with_resources(resources)
    }
}

/// Why targets could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("no AWS region: list regions in the config file, or set AWS_REGION")]
    NoRegion,
    #[error("accounts[{index}]: cannot find the account ID with STS GetCallerIdentity ({source}); set account_id")]
    Identity { index: usize, source: CollectError },
    #[error("accounts[{index}]: account {account_id} is listed twice")]
    Duplicate { index: usize, account_id: String },
    #[error("discovered accounts: {0}")]
    Discovery(String),
}

/// The base SDK config of `settings`: the standard AWS environment
/// (`AWS_ENDPOINT_URL`, `AWS_PROFILE`, web identity, instance roles), the retries and
/// timeouts of the config, credentials refreshed before they expire.
pub(crate) async fn base_sdk(settings: &AwsConfig) -> SdkConfig {
    let retry = RetryConfig::standard()
        .with_max_attempts(settings.max_attempts.0)
        .with_initial_backoff(settings.initial_backoff.0)
        .with_max_backoff(Duration::from_secs(20));
    let attempt = settings.attempt_timeout.0;
    let timeouts = TimeoutConfig::builder()
        .operation_attempt_timeout(attempt)
        .connect_timeout(attempt.min(Duration::from_secs(5)))
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(default_http_client())
        .retry_config(retry)
        .timeout_config(timeouts)
        .identity_cache(identity_cache())
        .load()
        .await
}

/// The regions of a config: the listed ones, else the base config's region.
pub(crate) fn regions(config: &Config, base: &SdkConfig) -> Result<Vec<String>, TargetError> {
    match &config.regions {
        Some(r) => Ok(r.0.iter().map(|r| r.0.clone()).collect()),
        None => Ok(vec![base
            .region()
            .ok_or(TargetError::NoRegion)?
            .to_string()]),
    }
}

/// `base` with the credentials of `role_arn`, assumed through STS in `home` (counted
/// and rate-limited like every client), renewed before they expire.
pub(crate) fn assumed(
    aws: &AwsContext,
    base: &SdkConfig,
    home: &str,
    role_arn: &RoleArn,
    external_id: Option<&ExternalId>,
    session_name: Option<&SessionName>,
) -> SdkConfig {
    let sts = Sts::build(aws.parts(
        in_region(base, home),
        role_arn.account_id(),
        Sts::SERVICE_CODE,
        STS_USER,
        STS_RATE,
    ));
    let provider = AssumeRoleCredentials {
        sts,
        role_arn: role_arn.0.clone(),
        external_id: external_id.map(|e| e.0.clone()),
        session_name: session_name.map_or_else(|| "headroom".to_string(), |s| s.0.clone()),
    };
    base.to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .identity_cache(identity_cache())
        .build()
}

/// The targets of a config, and the accounts they are in.
pub(crate) struct Targets {
    pub targets: Vec<TargetSpec>,
    /// Every account once, in order: its ID and its settings (name and tags included).
    pub accounts: Vec<(String, AccountConfig)>,
}

/// Builds the (account, region) targets of a config: the base credentials, an assumed
/// role per account where one is given, and after the listed accounts the `discovered`
/// ones (a listed account wins over a discovered one with its ID).
pub(crate) async fn build_targets(
    config: &Config,
    aws: &Arc<AwsContext>,
    discovered: &[AccountConfig],
) -> Result<Targets, TargetError> {
    let base = base_sdk(&config.aws).await;
    let regions = regions(config, &base)?;
    let home = regions[0].clone();
    // With discovery and no list, the discovered accounts are all there is.
    let default_account = if config.organization.is_some() {
        Vec::new()
    } else {
        vec![AccountConfig::default()]
    };
    let listed = config
        .accounts
        .as_ref()
        .map_or(&default_account[..], |a| &a.0[..]);
    let mut accounts: Vec<(String, AccountConfig)> = Vec::new();
    let mut targets = Vec::new();
    for (index, account) in listed.iter().chain(discovered).enumerate() {
        let is_listed = index < listed.len();
        let (account_id, sdk) = match &account.role_arn {
            Some(arn) => {
                let sdk = assumed(
                    aws,
                    &base,
                    &home,
                    arn,
                    account.external_id.as_ref(),
                    account.session_name.as_ref(),
                );
                (arn.account_id().to_string(), sdk)
            }
            None => {
                let id = match &account.account_id {
                    Some(id) => id.0.clone(),
                    None => {
                        let sts = Sts::build(aws.parts(
                            in_region(&base, &home),
                            "default",
                            Sts::SERVICE_CODE,
                            STS_USER,
                            STS_RATE,
                        ));
                        caller_account(&sts)
                            .await
                            .map_err(|source| TargetError::Identity { index, source })?
                    }
                };
                (id, base.clone())
            }
        };
        if let Some((_, first)) = accounts.iter_mut().find(|(id, _)| *id == account_id) {
            if is_listed {
                return Err(TargetError::Duplicate { index, account_id });
            }
            // A discovered account that is also listed: the listed entry wins, and
            // takes the discovered name and tags where it sets none.
            if first.name.is_none() {
                first.name = account.name.clone();
            }
            for (k, v) in &account.tags {
                first.tags.entry(k.clone()).or_insert_with(|| v.clone());
            }
            continue;
        }
        for region in &regions {
            targets.push(TargetSpec {
                account_id: account_id.clone(),
                region: region.clone(),
                sdk: in_region(&sdk, region),
                account: account.clone(),
            });
        }
        accounts.push((account_id, account.clone()));
    }
    Ok(Targets { targets, accounts })
}

/// A target of the default account on a local AWS test server, built as production
/// builds one but with fixed credentials, for tests of what calls AWS.
#[cfg(test)]
pub(crate) async fn local_target(
    aws: &Arc<AwsContext>,
    endpoint: &str,
    account: &str,
    region: &str,
) -> Target {
    use aws_credential_types::Credentials;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(AwsRegion::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .http_client(default_http_client())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .load()
        .await;
    let spec = TargetSpec {
        account_id: account.to_string(),
        region: region.to_string(),
        sdk,
        account: AccountConfig::default(),
    };
    spec.for_collector(aws, "test", 100.0, ResourceSelection::default())
}
