//! Amazon S3: general purpose buckets per account (a global quota), directory buckets
//! per region, and access points per region.

use headroom_common::{
    async_trait, pages, AwsService, ClientParts, CollectError, Collected, Collector, QuotaSpec,
    Scope, Target, Usage,
};

/// General purpose buckets per account, across regions. The default was 100 and is
/// 10,000 since late 2024; Service Quotas (in us-east-1) has the account's value.
pub const BUCKETS: QuotaSpec =
    QuotaSpec::service_quota("s3", "L-DC2B2D3D", "General purpose buckets", 10_000.0).adjustable();

/// Directory buckets (S3 Express One Zone) per account and region.
pub const DIRECTORY_BUCKETS: QuotaSpec =
    QuotaSpec::service_quota("s3", "L-775A314D", "Directory buckets", 100.0).adjustable();

/// Access points per account and region.
pub const ACCESS_POINTS: QuotaSpec =
    QuotaSpec::service_quota("s3", "L-FAABEEBA", "Access Points", 10_000.0).adjustable();

/// Where AWS manages the general purpose bucket quota.
pub const HOME_REGION: &str = "us-east-1";

/// ListBuckets' largest page.
pub const BUCKET_PAGE: i32 = 10_000;
/// ListDirectoryBuckets' and ListAccessPoints' largest pages.
pub const DIRECTORY_PAGE: i32 = 1_000;
pub const ACCESS_POINT_PAGE: i32 = 1_000;

/// Amazon S3, for [`Target::client`].
pub struct S3;

impl AwsService for S3 {
    type Client = aws_sdk_s3::Client;
    const SERVICE_CODE: &'static str = "s3";
    const ERROR_CODES: &'static [&'static str] = &["NoSuchBucket"];
    fn build(parts: ClientParts) -> Self::Client {
        let mut config = aws_sdk_s3::config::Builder::from(&parts.sdk)
            .interceptor(parts.interceptor)
            .http_client(parts.http_client);
        // With an endpoint override (a local test server, a VPC endpoint URL) the
        // override is used as it is: S3's endpoint rules refuse ListDirectoryBuckets
        // without a bucket there. The calls made here name no bucket, so the plain URL
        // is the right one. Without an override the SDK's rules apply unchanged.
        if let Some(url) = parts.sdk.endpoint_url() {
            config = config
                .force_path_style(true)
                .endpoint_resolver(PlainEndpoint(url.to_string()));
        }
        aws_sdk_s3::Client::from_conf(config.build())
    }
}

/// S3 Control (access points), for [`Target::client`]; counted and rate-limited as S3.
pub struct S3Control;

impl AwsService for S3Control {
    type Client = aws_sdk_s3control::Client;
    const SERVICE_CODE: &'static str = "s3";
    fn build(parts: ClientParts) -> Self::Client {
        let mut config = aws_sdk_s3control::config::Builder::from(&parts.sdk)
            .interceptor(parts.interceptor)
            .http_client(parts.http_client);
        // With an endpoint override the URL is used as it is: S3 Control's rules would
        // put the account ID in front of the host name ({account}.127.0.0.1 does not
        // resolve).
        if let Some(url) = parts.sdk.endpoint_url() {
            config = config.endpoint_resolver(PlainEndpoint(url.to_string()));
        }
        aws_sdk_s3control::Client::from_conf(config.build())
    }
}

/// An endpoint resolver that always answers the same URL.
#[derive(Debug)]
struct PlainEndpoint(String);

impl PlainEndpoint {
    fn endpoint(&self) -> aws_smithy_types::endpoint::Endpoint {
        aws_smithy_types::endpoint::Endpoint::builder()
            .url(self.0.clone())
            .build()
    }
}

impl aws_sdk_s3::config::endpoint::ResolveEndpoint for PlainEndpoint {
    fn resolve_endpoint<'a>(
        &'a self,
        _params: &'a aws_sdk_s3::config::endpoint::Params,
    ) -> aws_sdk_s3::config::endpoint::EndpointFuture<'a> {
        aws_sdk_s3::config::endpoint::EndpointFuture::ready(Ok(self.endpoint()))
    }
}

impl aws_sdk_s3control::config::endpoint::ResolveEndpoint for PlainEndpoint {
    fn resolve_endpoint<'a>(
        &'a self,
        _params: &'a aws_sdk_s3control::config::endpoint::Params,
    ) -> aws_sdk_s3control::config::endpoint::EndpointFuture<'a> {
        aws_sdk_s3control::config::endpoint::EndpointFuture::ready(Ok(self.endpoint()))
    }
}

/// How many items a paged listing holds: `read` gives a page's item count and next
/// token.
async fn count_listed<P, F, Fut>(
    operation: &str,
    request: F,
    read: impl Fn(P) -> (usize, Option<String>),
) -> Result<u64, CollectError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<P, CollectError>>,
{
    let mut count = 0u64;
    pages(operation, request, |page| {
        let (items, next) = read(page);
        count += items as u64;
        Ok(next)
    })
    .await?;
    Ok(count)
}

#[derive(Debug, Default)]
pub struct BucketsCollector;

#[async_trait]
impl Collector for BucketsCollector {
    fn name(&self) -> &'static str {
        "s3_buckets"
    }

    fn quotas(&self) -> Vec<QuotaSpec> {
        vec![BUCKETS]
    }

    fn scope(&self) -> Scope {
        Scope::Global {
            home_region: HOME_REGION,
        }
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        const OP: &str = "ListBuckets";
        // Always paginated: AWS rejects an unpaginated ListBuckets from an account
        // whose bucket quota is above 10,000. One listing covers every region.
        let client: aws_sdk_s3::Client = target.client::<S3>();
        let client = &client;
        let count = count_listed(
            OP,
            |token| async move {
                client
                    .list_buckets()
                    .max_buckets(BUCKET_PAGE)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| CollectError::from_sdk(OP, &e))
            },
            |page| (page.buckets().len(), page.continuation_token),
        )
        .await?;
        Ok(vec![Usage::new(&BUCKETS, count as f64)].into())
    }
}

#[derive(Debug, Default)]
pub struct DirectoryBucketsCollector;

#[async_trait]
impl Collector for DirectoryBucketsCollector {
    fn name(&self) -> &'static str {
        "s3_directory_buckets"
    }

    fn quotas(&self) -> Vec<QuotaSpec> {
        vec![DIRECTORY_BUCKETS]
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        const OP: &str = "ListDirectoryBuckets";
        let client: aws_sdk_s3::Client = target.client::<S3>();
        let client = &client;
        let count = count_listed(
            OP,
            |token| async move {
                client
                    .list_directory_buckets()
                    .max_directory_buckets(DIRECTORY_PAGE)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| CollectError::from_sdk(OP, &e))
            },
            |page| (page.buckets().len(), page.continuation_token),
        )
        .await?;
        Ok(vec![Usage::new(&DIRECTORY_BUCKETS, count as f64)].into())
    }
}

#[derive(Debug, Default)]
pub struct AccessPointsCollector;

#[async_trait]
impl Collector for AccessPointsCollector {
    fn name(&self) -> &'static str {
        "s3_access_points"
    }

    fn quotas(&self) -> Vec<QuotaSpec> {
        vec![ACCESS_POINTS]
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        const OP: &str = "ListAccessPoints";
        let client: aws_sdk_s3control::Client = target.client::<S3Control>();
        let client = &client;
        let account = target.account_id.as_str();
        let count = count_listed(
            OP,
            // Every access point counts, not only those on general purpose buckets
            // (the default listing): DataSourceType ALL.
            |token| async move {
                client
                    .list_access_points()
                    .account_id(account)
                    .data_source_type("ALL")
                    .max_results(ACCESS_POINT_PAGE)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| CollectError::from_sdk(OP, &e))
            },
            |page| (page.access_point_list().len(), page.next_token),
        )
        .await?;
        Ok(vec![Usage::new(&ACCESS_POINTS, count as f64)].into())
    }
}
