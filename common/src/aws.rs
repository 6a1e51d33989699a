//! Everything that talks to AWS goes through here: targets (an account and a region
//! with credentials), client construction with request counting and rate limiting,
//! retries and timeouts, and assumed roles.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region as AwsRegion, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

use crate::collector::CollectError;
use crate::config::{AccountConfig, Config};
use crate::metrics::AwsCallCounters;
use crate::ratelimit::RateLimiter;

/// (account ID, region, service code).
type LimiterKey = (String, String, &'static str);

/// What every client of the process shares: the request counters and the rate
/// limiters, one per account, region and service.
#[derive(Debug)]
pub struct AwsContext {
    counters: AwsCallCounters,
    limiters: Mutex<HashMap<LimiterKey, Arc<RateLimiter>>>,
}

impl AwsContext {
    pub fn new(counters: AwsCallCounters) -> Arc<Self> {
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
        rate: f64,
    ) -> Arc<RateLimiter> {
        let mut map = match self.limiters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = (account.to_string(), region.to_string(), service);
        match map.get(&key) {
            // Two collectors on one service share the limiter at the stricter rate.
            Some(l) if l.rate() <= rate => l.clone(),
            _ => {
                let l = Arc::new(RateLimiter::new(rate));
                map.insert(key, l.clone());
                l
            }
        }
    }
}

/// One account and region, with credentials, as a collector sees it.
#[derive(Clone)]
pub struct Target {
    pub account_id: String,
    pub region: String,
    sdk: SdkConfig,
    aws: Arc<AwsContext>,
    rate_limit: f64,
    resources: Arc<ResourceSettings>,
}

/// Which resources a per-resource collector counts, and how many at once.
#[derive(Debug, Clone, Default)]
pub struct ResourceSettings {
    pub include: Vec<crate::config::Pattern>,
    pub exclude: Vec<crate::config::Pattern>,
    pub concurrency: usize,
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
    /// Whether a per-resource collector should count this resource (config `include`
    /// and `exclude`), so that excluded resources cost no API calls.
    pub fn wants(&self, name: &str) -> bool {
        let r = &self.resources;
        (r.include.is_empty() || r.include.iter().any(|p| p.matches(name)))
            && !r.exclude.iter().any(|p| p.matches(name))
    }

    /// How many resources a per-resource collector may count at once.
    pub fn concurrency(&self) -> usize {
        self.resources.concurrency.max(1)
    }

    /// A client for this target whose every request is counted and rate-limited.
    pub fn client<C: ServiceClient>(&self) -> C {
        self.client_in::<C>(&self.region)
    }

    /// The same in another region (for quotas managed in one region, such as S3's).
    pub fn client_in<C: ServiceClient>(&self, region: &str) -> C {
        let limiter = self
            .aws
            .limiter(&self.account_id, region, C::SERVICE_CODE, self.rate_limit);
        let sdk = if region == self.region {
            self.sdk.clone()
        } else {
            self.sdk
                .to_builder()
                .region(AwsRegion::new(region.to_string()))
                .build()
        };
        build_client::<C>(&sdk, &self.aws, limiter)
    }
}

fn build_client<C: ServiceClient>(
    sdk: &SdkConfig,
    aws: &Arc<AwsContext>,
    limiter: Arc<RateLimiter>,
) -> C {
    let interceptor = CountingInterceptor {
        service_code: C::SERVICE_CODE,
        counters: aws.counters.clone(),
    };
    let inner = sdk.http_client().unwrap_or_else(default_http_client);
    let http = SharedHttpClient::new(RateLimitedHttpClient { inner, limiter });
    C::build(sdk, interceptor, http)
}

/// The SDK's usual HTTPS client (hyper 1 with rustls), made here so that every client
/// can be wrapped with the rate limiter.
fn default_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https()
}

/// An AWS SDK client that [`Target::client`] can build. Implemented here for every
/// service the exporters call, so that no client is built without counting.
pub trait ServiceClient: Sized {
    /// The `service_code` label of its request counters.
    const SERVICE_CODE: &'static str;
    #[doc(hidden)]
    fn build(sdk: &SdkConfig, interceptor: CountingInterceptor, http: SharedHttpClient) -> Self;
}

macro_rules! service_client {
    ($krate:ident, $code:literal) => {
        service_client!($krate, $code, |b, _sdk| b);
    };
    ($krate:ident, $code:literal, |$b:ident, $sdk:ident| $custom:expr) => {
        impl ServiceClient for $krate::Client {
            const SERVICE_CODE: &'static str = $code;
            fn build(
                sdk: &SdkConfig,
                interceptor: CountingInterceptor,
                http: SharedHttpClient,
            ) -> Self {
                let $b = $krate::config::Builder::from(sdk)
                    .interceptor(interceptor)
                    .http_client(http);
                let $sdk = sdk;
                $krate::Client::from_conf($custom.build())
            }
        }
    };
}

service_client!(aws_sdk_ssm, "ssm");
service_client!(aws_sdk_ecr, "ecr");
service_client!(aws_sdk_sts, "sts");
service_client!(aws_sdk_servicequotas, "servicequotas");
// With an endpoint override (a local test server, a VPC endpoint URL), S3 and S3
// Control use it as it is: their endpoint rules would put the account ID in front of
// the host name (S3 Control; {account}.127.0.0.1 does not resolve) or refuse
// ListDirectoryBuckets without a bucket. The calls made here name no bucket, so the
// plain URL is the right one. Without an override the SDK's rules apply unchanged.
service_client!(aws_sdk_s3, "s3", |b, sdk| match sdk.endpoint_url() {
    Some(url) => b
        .force_path_style(true)
        .endpoint_resolver(PlainEndpoint(url.to_string())),
    None => b,
});
service_client!(aws_sdk_s3control, "s3", |b, sdk| match sdk.endpoint_url() {
    Some(url) => b.endpoint_resolver(PlainEndpoint(url.to_string())),
    None => b,
});

/// An endpoint resolver that always answers the same URL.
#[derive(Debug)]
struct PlainEndpoint(String);

macro_rules! plain_endpoint {
    ($krate:ident) => {
        impl $krate::config::endpoint::ResolveEndpoint for PlainEndpoint {
            fn resolve_endpoint<'a>(
                &'a self,
                _params: &'a $krate::config::endpoint::Params,
            ) -> $krate::config::endpoint::EndpointFuture<'a> {
                $krate::config::endpoint::EndpointFuture::ready(Ok(
                    aws_smithy_types::endpoint::Endpoint::builder()
                        .url(self.0.clone())
                        .build(),
                ))
            }
        }
    };
}

plain_endpoint!(aws_sdk_s3);
plain_endpoint!(aws_sdk_s3control);

/// Counts AWS requests and their errors. Before each attempt is handed to the HTTP
/// client it gets a [`SendProbe`]; the rate-limited connector counts the request when
/// it really goes out (so an attempt that timed out while waiting for the limiter, or
/// failed before sending, is not a request), and this interceptor counts the error of
/// an attempt that was sent.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct CountingInterceptor {
    service_code: &'static str,
    counters: AwsCallCounters,
}

/// Travels with one attempt's request to the connector.
#[derive(Debug, Clone)]
struct SendProbe {
    service_code: &'static str,
    operation: Arc<str>,
    counters: AwsCallCounters,
    sent: Arc<AtomicBool>,
}

impl SendProbe {
    fn mark_sent(&self) {
        self.sent.store(true, Ordering::SeqCst);
        self.counters.request(self.service_code, &self.operation);
    }
}

/// The same attempt's probe, kept in the config bag for the interceptor to read back.
#[derive(Debug, Clone)]
struct AttemptProbe(SendProbe);

impl Storable for AttemptProbe {
    type Storer = StoreReplace<Self>;
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "headroom::CountingInterceptor"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation: Arc<str> = cfg
            .load::<Metadata>()
            .map_or("unknown", |m| m.name())
            .into();
        let probe = SendProbe {
            service_code: self.service_code,
            operation,
            counters: self.counters.clone(),
            sent: Arc::new(AtomicBool::new(false)),
        };
        ctx.request_mut().add_extension(probe.clone());
        cfg.interceptor_state().store_put(AttemptProbe(probe));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(AttemptProbe(probe)) = cfg.load::<AttemptProbe>().cloned() else {
            return Ok(());
        };
        if !probe.sent.load(Ordering::SeqCst) {
            return Ok(());
        }
        let error = ctx.output_or_error().and_then(|o| o.err());
        let code = match (error, ctx.response()) {
            (Some(e), _) if e.is_timeout_error() => Some("timeout"),
            (_, Some(resp)) if !resp.status().is_success() || error.is_some() => {
                Some(response_error_code(
                    resp.status().as_u16(),
                    resp.headers().get("x-amzn-errortype"),
                    resp.body().bytes(),
                ))
            }
            (_, Some(_)) | (None, None) => None,
            (Some(e), None) => Some(match e.as_connector_error() {
                Some(c) if c.is_timeout() => "timeout",
                Some(c) if c.is_io() => "io",
                _ => "dispatch",
            }),
        };
        if let Some(code) = code {
            self.counters
                .error(self.service_code, &probe.operation, code);
        }
        Ok(())
    }
}

/// The AWS error code of a failed response, as a bounded label.
fn response_error_code(status: u16, header: Option<&str>, body: Option<&[u8]>) -> &'static str {
    let from_header = header.map(|h| h.split(':').next().unwrap_or(h).trim().to_string());
    let code = from_header
        .filter(|c| !c.is_empty())
        .or_else(|| body.and_then(code_from_body));
    match code {
        Some(c) => match error_code_label(&c) {
            "other" if (200..300).contains(&status) => "malformed_response",
            label => label,
        },
        None if status >= 500 => "http_5xx",
        None if status >= 400 => "http_4xx",
        None => "malformed_response",
    }
}

/// Reads the error code from a JSON (`__type` or `code`) or XML (`<Code>`) error body.
fn code_from_body(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let t = v
            .get("__type")
            .or_else(|| v.get("code"))
            .or_else(|| v.get("Code"))?;
        let t = t.as_str()?;
        // awsJson may send "prefix#Code".
        return Some(t.rsplit('#').next().unwrap_or(t).to_string());
    }
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    Some(text[start..end].trim().to_string())
}

macro_rules! known_codes {
    ($code:expr; $($known:literal),* $(,)?) => {
        match $code {
            $($known => $known,)*
            _ => "other",
        }
    };
}

/// Maps an AWS error code to a fixed label; anything not listed becomes `other`, so
/// a misbehaving endpoint cannot make the label set unbounded.
pub fn error_code_label(code: &str) -> &'static str {
    known_codes!(code;
        // Throttling
        "ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
        "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "SlowDown",
        "ThrottleException", "ProvisionedThroughputExceededException", "PriorRequestNotComplete",
        "BandwidthLimitExceeded",
        // Credentials and permissions
        "AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnrecognizedClientException",
        "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
        "InvalidAccessKeyId", "IncompleteSignature", "MissingAuthenticationToken", "OptInRequired",
        "RegionDisabledException", "DependencyAccessDeniedException",
        // Server side
        "InternalServerError", "InternalServerException", "InternalFailure", "InternalError",
        "ServiceUnavailable", "ServiceUnavailableException", "ServerException", "ServiceException",
        // Requests
        "ValidationException", "InvalidNextToken", "InvalidParameterException",
        "InvalidParameterValueException", "InvalidFilterKey", "InvalidFilterOption",
        "InvalidFilterValue", "IllegalArgumentException", "ParameterLimitExceeded",
        // Not found
        "NoSuchResourceException", "ResourceNotFoundException", "RepositoryNotFoundException",
        "LifecyclePolicyNotFoundException", "NoSuchBucket", "NoSuchLifecycleConfiguration",
        "TemplatesNotAvailableInRegionException", "NoAvailableOrganizationException",
    )
}

/// Waits for the rate limiter before every attempt (retries included).
#[derive(Debug)]
struct RateLimitedHttpClient {
    inner: SharedHttpClient,
    limiter: Arc<RateLimiter>,
}

impl HttpClient for RateLimitedHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(RateLimitedConnector {
            inner: self.inner.http_connector(settings, components),
            limiter: self.limiter.clone(),
        })
    }
}

#[derive(Debug)]
struct RateLimitedConnector {
    inner: SharedHttpConnector,
    limiter: Arc<RateLimiter>,
}

impl HttpConnector for RateLimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let limiter = self.limiter.clone();
        HttpConnectorFuture::new(async move {
            limiter.acquire().await;
            if let Some(probe) = request.extension::<SendProbe>() {
                probe.mark_sent();
            }
            inner.call(request).await
        })
    }
}

/// Credentials from STS AssumeRole through a counted, rate-limited client. The
/// identity cache in front of it asks again before they expire.
#[derive(Debug)]
struct AssumeRoleCredentials {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    external_id: Option<String>,
    session_name: String,
}

impl AssumeRoleCredentials {
    async fn assume(&self) -> Result<Credentials, CredentialsError> {
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .set_external_id(self.external_id.clone())
            .send()
            .await
            .map_err(|e| {
                let e = CollectError::from_sdk("AssumeRole", &e);
                CredentialsError::provider_error(format!("assuming {}: {e}", self.role_arn))
            })?;
        let c = out.credentials.ok_or_else(|| {
            CredentialsError::provider_error("AssumeRole returned no credentials")
        })?;
        let expiry = SystemTime::try_from(c.expiration).ok();
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            expiry,
            "headroom-assume-role",
        ))
    }
}

impl ProvideCredentials for AssumeRoleCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assume())
    }
}

/// An account and region to collect from, before a collector's rate limit applies.
#[derive(Clone)]
pub struct TargetSpec {
    pub account_id: String,
    pub region: String,
    sdk: SdkConfig,
    /// Account-level limit overrides, by quota code.
    pub account: AccountConfig,
}

impl TargetSpec {
    /// The same account with its clients in another region (for global quotas, which
    /// AWS manages in one region).
    pub fn in_region(&self, region: &str) -> TargetSpec {
        TargetSpec {
            region: region.to_string(),
            sdk: self
                .sdk
                .to_builder()
                .region(AwsRegion::new(region.to_string()))
                .build(),
            ..self.clone()
        }
    }

    pub fn for_collector(
        &self,
        aws: &Arc<AwsContext>,
        rate_limit: f64,
        resources: Arc<ResourceSettings>,
    ) -> Target {
        Target {
            account_id: self.account_id.clone(),
            region: self.region.clone(),
            sdk: self.sdk.clone(),
            aws: aws.clone(),
            rate_limit,
            resources,
        }
    }
}

/// Why targets could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no AWS region: list regions in the config file, or set AWS_REGION")]
    NoRegion,
    #[error("accounts[{index}]: cannot find the account ID with STS GetCallerIdentity ({source}); set account_id")]
    Identity { index: usize, source: CollectError },
    #[error("accounts[{index}]: account {account_id} is listed twice")]
    Duplicate { index: usize, account_id: String },
}

/// Builds the (account, region) targets of a config: the standard AWS environment
/// (`AWS_ENDPOINT_URL`, `AWS_PROFILE`, web identity, instance roles) for the base
/// credentials, and an assumed role per account where one is given.
pub async fn build_targets(
    config: &Config,
    aws: &Arc<AwsContext>,
) -> Result<Vec<TargetSpec>, TargetError> {
    let retry = RetryConfig::standard()
        .with_max_attempts(config.aws.max_attempts.0)
        .with_initial_backoff(config.aws.initial_backoff.0)
        .with_max_backoff(Duration::from_secs(20));
    let attempt = config.aws.attempt_timeout.0;
    let timeouts = TimeoutConfig::builder()
        .operation_attempt_timeout(attempt)
        .connect_timeout(attempt.min(Duration::from_secs(5)))
        .build();
    let base = aws_config::defaults(BehaviorVersion::latest())
        .http_client(default_http_client())
        .retry_config(retry)
        .timeout_config(timeouts)
        .identity_cache(identity_cache())
        .load()
        .await;
    let regions: Vec<String> = match &config.regions {
        Some(r) => r.0.iter().map(|r| r.0.clone()).collect(),
        None => vec![base.region().ok_or(TargetError::NoRegion)?.to_string()],
    };
    let home = regions[0].clone();
    let default_account = [AccountConfig::default()];
    let accounts = config
        .accounts
        .as_ref()
        .map_or(&default_account[..], |a| &a.0[..]);
    let mut targets = Vec::new();
    for (index, account) in accounts.iter().enumerate() {
        let home_sdk = base
            .to_builder()
            .region(AwsRegion::new(home.clone()))
            .build();
        let (account_id, sdk) = match &account.role_arn {
            Some(arn) => {
                let role_account = arn.account_id().to_string();
                let limiter = aws.limiter(&role_account, &home, "sts", 5.0);
                let provider = AssumeRoleCredentials {
                    sts: build_client::<aws_sdk_sts::Client>(&home_sdk, aws, limiter),
                    role_arn: arn.0.clone(),
                    external_id: account.external_id.as_ref().map(|e| e.0.clone()),
                    session_name: account
                        .session_name
                        .as_ref()
                        .map_or_else(|| "headroom".to_string(), |s| s.0.clone()),
                };
                let sdk = base
                    .to_builder()
                    .credentials_provider(SharedCredentialsProvider::new(provider))
                    .identity_cache(identity_cache())
                    .build();
                (role_account, sdk)
            }
            None => {
                let id = match &account.account_id {
                    Some(id) => id.0.clone(),
                    None => caller_account(&home_sdk, aws, &home)
                        .await
                        .map_err(|source| TargetError::Identity { index, source })?,
                };
                (id, base.clone())
            }
        };
        if targets
            .iter()
            .any(|t: &TargetSpec| t.account_id == account_id)
        {
            return Err(TargetError::Duplicate { index, account_id });
        }
        for region in &regions {
            targets.push(TargetSpec {
                account_id: account_id.clone(),
                region: region.clone(),
                sdk: sdk
                    .to_builder()
                    .region(AwsRegion::new(region.clone()))
                    .build(),
                account: account.clone(),
            });
        }
    }
    Ok(targets)
}

/// Refreshes credentials five minutes before they expire.
fn identity_cache() -> aws_smithy_runtime_api::client::identity::SharedIdentityCache {
    IdentityCache::lazy()
        .buffer_time(Duration::from_secs(300))
        .build()
}

async fn caller_account(
    sdk: &SdkConfig,
    aws: &Arc<AwsContext>,
    region: &str,
) -> Result<String, CollectError> {
    let limiter = aws.limiter("default", region, "sts", 5.0);
    let sts = build_client::<aws_sdk_sts::Client>(sdk, aws, limiter);
    let out = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| CollectError::from_sdk("GetCallerIdentity", &e))?;
    out.account
        .ok_or_else(|| CollectError::malformed("GetCallerIdentity", "no Account in the response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_header_json_or_xml() {
        assert_eq!(
            response_error_code(
                400,
                Some("ThrottlingException:http://internal.amazon.com/"),
                None
            ),
            "ThrottlingException"
        );
        assert_eq!(
            response_error_code(
                400,
                None,
                Some(br#"{"__type":"com.amazon#AccessDeniedException","message":"no"}"#)
            ),
            "AccessDeniedException"
        );
        assert_eq!(
            response_error_code(
                503,
                None,
                Some(b"<Error><Code>SlowDown</Code><Message>x</Message></Error>")
            ),
            "SlowDown"
        );
        assert_eq!(
            response_error_code(502, None, Some(b"<html>bad gateway</html>")),
            "http_5xx"
        );
        assert_eq!(response_error_code(403, None, None), "http_4xx");
        // An unknown code never becomes a label of its own.
        assert_eq!(
            response_error_code(400, Some("SomethingNew"), None),
            "other"
        );
        assert_eq!(
            response_error_code(200, None, Some(b"{\"Parameters\": 7}")),
            "malformed_response"
        );
    }
}
