//! Amazon S3: general purpose buckets per account (a global quota), directory buckets
//! per region, and access points per region.

use headroom_common::{
    async_trait, CollectError, Collected, Collector, QuotaSpec, Scope, Target, Usage,
};

/// General purpose buckets per account, across regions. The default was 100 and is
/// 10,000 since late 2024; Service Quotas (in us-east-1) has the account's value.
pub const BUCKETS: QuotaSpec = QuotaSpec {
    service_code: "s3",
    quota_code: "L-DC2B2D3D",
    quota_name: "General purpose buckets",
    builtin_limit: 10_000.0,
    adjustable: true,
    in_service_quotas: true,
    resource_level: false,
};

/// Directory buckets (S3 Express One Zone) per account and region.
pub const DIRECTORY_BUCKETS: QuotaSpec = QuotaSpec {
    service_code: "s3",
    quota_code: "L-775A314D",
    quota_name: "Directory buckets",
    builtin_limit: 100.0,
    adjustable: true,
    in_service_quotas: true,
    resource_level: false,
};

/// Access points per account and region.
pub const ACCESS_POINTS: QuotaSpec = QuotaSpec {
    service_code: "s3",
    quota_code: "L-FAABEEBA",
    quota_name: "Access Points",
    builtin_limit: 10_000.0,
    adjustable: true,
    in_service_quotas: true,
    resource_level: false,
};

/// Where AWS manages the general purpose bucket quota.
pub const HOME_REGION: &str = "us-east-1";

/// ListBuckets' largest page.
pub const BUCKET_PAGE: i32 = 10_000;
/// ListDirectoryBuckets' and ListAccessPoints' largest pages.
pub const DIRECTORY_PAGE: i32 = 1_000;
pub const ACCESS_POINT_PAGE: i32 = 1_000;

/// Bounds pages per listing, so a server that keeps returning tokens stops.
const MAX_PAGES: usize = 10_000;

#[derive(Debug, Default)]
pub struct BucketsCollector;

#[async_trait]
impl Collector for BucketsCollector {
    fn name(&self) -> &'static str {
        "s3_buckets"
    }

    fn quotas(&self) -> &'static [QuotaSpec] {
        &[BUCKETS]
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
        let client: aws_sdk_s3::Client = target.client();
        let mut count = 0u64;
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let page = client
                .list_buckets()
                .max_buckets(BUCKET_PAGE)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| CollectError::from_sdk(OP, &e))?;
            count += page.buckets().len() as u64;
            match page.continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(vec![Usage::new(&BUCKETS, count as f64)].into()),
            }
        }
        Err(CollectError::malformed(
            OP,
            format!("still paging after {MAX_PAGES} pages"),
        ))
    }
}

#[derive(Debug, Default)]
pub struct DirectoryBucketsCollector;

#[async_trait]
impl Collector for DirectoryBucketsCollector {
    fn name(&self) -> &'static str {
        "s3_directory_buckets"
    }

    fn quotas(&self) -> &'static [QuotaSpec] {
        &[DIRECTORY_BUCKETS]
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        const OP: &str = "ListDirectoryBuckets";
        let client: aws_sdk_s3::Client = target.client();
        let mut count = 0u64;
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let page = client
                .list_directory_buckets()
                .max_directory_buckets(DIRECTORY_PAGE)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| CollectError::from_sdk(OP, &e))?;
            count += page.buckets().len() as u64;
            match page.continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(vec![Usage::new(&DIRECTORY_BUCKETS, count as f64)].into()),
            }
        }
        Err(CollectError::malformed(
            OP,
            format!("still paging after {MAX_PAGES} pages"),
        ))
    }
}

#[derive(Debug, Default)]
pub struct AccessPointsCollector;

#[async_trait]
impl Collector for AccessPointsCollector {
    fn name(&self) -> &'static str {
        "s3_access_points"
    }

    fn quotas(&self) -> &'static [QuotaSpec] {
        &[ACCESS_POINTS]
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        const OP: &str = "ListAccessPoints";
        let client: aws_sdk_s3control::Client = target.client();
        let mut count = 0u64;
        let mut token = None;
        for _ in 0..MAX_PAGES {
            // Every access point counts, not only those on general purpose buckets
            // (the default listing): DataSourceType ALL.
            let page = client
                .list_access_points()
                .account_id(&target.account_id)
                .data_source_type("ALL")
                .max_results(ACCESS_POINT_PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| CollectError::from_sdk(OP, &e))?;
            count += page.access_point_list().len() as u64;
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(vec![Usage::new(&ACCESS_POINTS, count as f64)].into()),
            }
        }
        Err(CollectError::malformed(
            OP,
            format!("still paging after {MAX_PAGES} pages"),
        ))
    }
}
