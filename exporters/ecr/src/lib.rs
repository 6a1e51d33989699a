use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use headroom_common::{
    async_trait, pages, AwsService, ClientParts, CollectError, Collected, Collector, Defaults,
    Fact, PerTarget, QuotaSpec, Target, Usage,
};

/// Registered repositories per account and region. The built-in value is the documented
/// default; the applied value from Service Quotas always wins over it.
pub const REPOSITORIES: QuotaSpec =
    QuotaSpec::service_quota("ecr", "L-CFEB8E8D", "Registered repositories", 100_000.0)
        .adjustable();

/// Images per repository. Its default has changed over the years (1,000, then 10,000,
/// then higher), and it can be raised for one repository, so the value applied to each
/// repository in Service Quotas comes first.
pub const IMAGES: QuotaSpec =
    QuotaSpec::service_quota("ecr", "L-03A36CE1", "Images per repository", 100_000.0)
        .adjustable()
        .per_resource();

/// The largest page of DescribeRepositories and ListImages.
pub const PAGE_SIZE: i32 = 1000;

/// Amazon ECR, for [`Target::client`]. The collectors branch on its two not-found codes.
pub struct Ecr;

impl AwsService for Ecr {
    type Client = aws_sdk_ecr::Client;
    const SERVICE_CODE: &'static str = "ecr";
    const ERROR_CODES: &'static [&'static str] =
        &[REPOSITORY_NOT_FOUND, LIFECYCLE_POLICY_NOT_FOUND];
    fn build(parts: ClientParts) -> Self::Client {
        let config = aws_sdk_ecr::config::Builder::from(&parts.sdk)
            .interceptor(parts.interceptor)
            .http_client(parts.http_client)
            .build();
        aws_sdk_ecr::Client::from_conf(config)
    }
}

const REPOSITORY_NOT_FOUND: &str = "RepositoryNotFoundException";
const LIFECYCLE_POLICY_NOT_FOUND: &str = "LifecyclePolicyNotFoundException";

/// API requests per second for every ECR collector. The rate limiter is shared per
/// account, region and service by all ECR collectors at the strictest of their
/// settings, so they all default to this one; ECR's read APIs allow far more.
const ECR_RATE: f64 = 20.0;

/// Settings for the collectors that make a call per repository, so that a refresh of
/// 5,000 repositories (about 5,005 calls: a DescribeRepositories page per 1,000
/// repositories and a ListImages page per 1,000 tags) finishes inside its timeout: at
/// 20 requests per second it takes about 250 s, under the 8-minute timeout and the
/// 10-minute interval. Images accumulate over days, so ten minutes loses nothing an
/// alert needs.
/// With every ECR collector enabled they share the one limiter: at worst an images
/// refresh runs while a lifecycle-policy refresh does, each getting about half the
/// rate, so 5,005 calls take about 500 s at 10 per second, inside the 9-minute
/// timeout (the unit test below computes this shared budget).
const PER_REPOSITORY_DEFAULTS: Defaults = Defaults {
    refresh_interval: Duration::from_secs(600),
    timeout: Duration::from_secs(540),
    rate_limit: ECR_RATE,
    concurrency: 8,
    ..Defaults::LIBRARY
};

/// The optional lifecycle-policy collector: a call per repository like the images
/// collector, but what it reports changes rarely, so it refreshes every 30 minutes
/// (at most 20 to finish), halving the calls it adds to the shared limiter's budget.
const LIFECYCLE_DEFAULTS: Defaults = Defaults {
    refresh_interval: Duration::from_secs(1800),
    timeout: Duration::from_secs(1200),
    max_staleness: Duration::from_secs(3600),
    ..PER_REPOSITORY_DEFAULTS
};

/// The three ECR collectors, sharing one repository listing per account and region.
pub fn collectors() -> Vec<Arc<dyn Collector>> {
    let listings = Arc::new(RepositoryListings::default());
    vec![
        Arc::new(RepositoriesCollector(listings.clone())),
        Arc::new(ImagesCollector(listings.clone())),
        Arc::new(LifecyclePoliciesCollector(listings)),
    ]
}

/// The longest a repository listing serves the ECR collectors of its account and
/// region. A collector reuses a listing younger than half its own refresh interval too
/// (and this), so its counts are never older than that: at the defaults, the
/// per-repository collectors (10 minutes) count from the registered-repositories
/// collector's listing (every 5 minutes) when it is under 4 minutes old, and
/// collectors that start together list once. A repository created since is counted at
/// the next refresh; one deleted since is skipped (ListImages answers
/// RepositoryNotFound).
pub const LISTING_REUSE: Duration = Duration::from_secs(240);

/// Repository listings shared by the ECR collectors, per account and region. A
/// collector that needs the names while another lists them waits for that listing,
/// so collectors that start together list the registry once.
#[derive(Debug, Default)]
pub struct RepositoryListings {
    by_target: PerTarget<Vec<String>>,
}

impl RepositoryListings {
    /// Every repository of the target, from a listing at most [`LISTING_REUSE`] and
    /// half the target's refresh interval old.
    pub async fn names(&self, target: &Target) -> Result<Arc<Vec<String>>, CollectError> {
        let reuse = LISTING_REUSE.min(target.refresh_interval() / 2);
        self.by_target
            .get(target, reuse, || list_repositories(target))
            .await
    }

    /// The repositories that `include` and `exclude` select.
    async fn wanted(&self, target: &Target) -> Result<Vec<String>, CollectError> {
        let names = self.names(target).await?;
        Ok(names.iter().filter(|n| target.wants(n)).cloned().collect())
    }
}

#[derive(Debug, Default)]
pub struct RepositoriesCollector(pub Arc<RepositoryListings>);

#[async_trait]
impl Collector for RepositoriesCollector {
    fn name(&self) -> &'static str {
        "ecr_repositories"
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            rate_limit: ECR_RATE,
            ..Defaults::LIBRARY
        }
    }

    fn quotas(&self) -> Vec<QuotaSpec> {
        vec![REPOSITORIES]
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        // Every repository counts against the quota, whatever include/exclude say.
        let count = self.0.names(target).await?.len();
        Ok(vec![Usage::new(&REPOSITORIES, count as f64)].into())
    }
}

#[derive(Debug, Default)]
pub struct ImagesCollector(pub Arc<RepositoryListings>);

#[async_trait]
impl Collector for ImagesCollector {
    fn name(&self) -> &'static str {
        "ecr_images"
    }

    fn defaults(&self) -> Defaults {
        PER_REPOSITORY_DEFAULTS
    }

    fn per_resource(&self) -> bool {
        true
    }

    fn quotas(&self) -> Vec<QuotaSpec> {
        vec![IMAGES]
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        let names = self.0.wanted(target).await?;
        let client: aws_sdk_ecr::Client = target.client::<Ecr>();
        let counted: Vec<Option<Usage>> = stream::iter(names)
            .map(|name| {
                let client = client.clone();
                async move {
                    let count = count_images(&client, &name).await?;
                    Ok::<_, CollectError>(
                        count.map(|n| Usage::of_resource(&IMAGES, name, n as f64)),
                    )
                }
            })
            .buffer_unordered(target.concurrency())
            .try_collect()
            .await?;
        let mut usage: Vec<Usage> = counted.into_iter().flatten().collect();
        usage.sort_by(|a, b| a.resource.cmp(&b.resource));
        Ok(usage.into())
    }
}

/// The gauge of [`LifecyclePoliciesCollector`].
pub const LIFECYCLE_POLICY: &str = "aws_quota_lifecycle_policy_present";

/// Optional (off by default, one GetLifecyclePolicy call per repository): whether each
/// repository has a lifecycle policy. A repository that grows without limit usually
/// has none, so the runbook can list them with `aws_quota_lifecycle_policy_present == 0`.
#[derive(Debug, Default)]
pub struct LifecyclePoliciesCollector(pub Arc<RepositoryListings>);

#[async_trait]
impl Collector for LifecyclePoliciesCollector {
    fn name(&self) -> &'static str {
        "ecr_lifecycle_policies"
    }

    fn defaults(&self) -> Defaults {
        LIFECYCLE_DEFAULTS
    }

    fn per_resource(&self) -> bool {
        true
    }

    fn quotas(&self) -> Vec<QuotaSpec> {
        Vec::new()
    }

    fn enabled_by_default(&self) -> bool {
        false
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        const OP: &str = "GetLifecyclePolicy";
        let names = self.0.wanted(target).await?;
        let client: aws_sdk_ecr::Client = target.client::<Ecr>();
        let found: Vec<Option<Fact>> = stream::iter(names)
            .map(|name| {
                let client = client.clone();
                async move {
                    let r = client.get_lifecycle_policy().repository_name(&name).send().await;
                    let present = match r {
                        Ok(_) => 1.0,
                        Err(e) => match CollectError::from_sdk(OP, &e) {
                            e if e.is(LIFECYCLE_POLICY_NOT_FOUND) => 0.0,
                            e if e.is(REPOSITORY_NOT_FOUND) => return Ok(None),
                            e => return Err(e),
                        },
                    };
                    Ok(Some(Fact {
                        name: LIFECYCLE_POLICY,
                        help: "1 if the ECR repository has a lifecycle policy, 0 if it has none (optional collector ecr_lifecycle_policies).",
                        service_code: "ecr",
                        resource: name,
                        value: present,
                    }))
                }
            })
            .buffer_unordered(target.concurrency())
            .try_collect()
            .await?;
        let mut facts: Vec<Fact> = found.into_iter().flatten().collect();
        facts.sort_by(|a, b| a.resource.cmp(&b.resource));
        Ok(facts.into())
    }
}

/// Every repository name, paging DescribeRepositories at its maximum.
async fn list_repositories(target: &Target) -> Result<Vec<String>, CollectError> {
    const OP: &str = "DescribeRepositories";
    let mut names = Vec::new();
    let client: aws_sdk_ecr::Client = target.client::<Ecr>();
    let client = &client;
    pages(
        OP,
        |token| async move {
            client
                .describe_repositories()
                .max_results(PAGE_SIZE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| CollectError::from_sdk(OP, &e))
        },
        |page| {
            for r in page.repositories() {
                let name = r.repository_name().ok_or_else(|| {
                    CollectError::malformed(OP, "a repository without repositoryName")
                })?;
                names.push(name.to_string());
            }
            Ok(page.next_token)
        },
    )
    .await?;
    Ok(names)
}

/// The number of images in a repository as ECR counts them against the quota: one per
/// manifest digest (an image with three tags is one image; untagged images count).
/// ListImages lists active images by default; archived images are left out, as they
/// are stored apart and are not counted as the repository's images. `None` when the
/// repository was deleted since it was listed.
async fn count_images(
    client: &aws_sdk_ecr::Client,
    repository: &str,
) -> Result<Option<u64>, CollectError> {
    const OP: &str = "ListImages";
    // 64-bit hashes of the digests, not the 71-byte strings: a repository at 100,000
    // images holds under 2 MiB while it is counted. Digests are SHA-256, so a collision
    // among 100,000 is about one chance in 10^9.
    let mut digests: HashSet<u64> = HashSet::new();
    let listed = pages(
        OP,
        |token| async move {
            client
                .list_images()
                .repository_name(repository)
                .max_results(PAGE_SIZE)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| CollectError::from_sdk(OP, &e))
        },
        |page| {
            for id in page.image_ids() {
                let digest = id
                    .image_digest()
                    .ok_or_else(|| CollectError::malformed(OP, "an image without imageDigest"))?;
                let mut h = DefaultHasher::new();
                digest.hash(&mut h);
                digests.insert(h.finish());
            }
            Ok(page.next_token)
        },
    )
    .await;
    match listed {
        Ok(()) => Ok(Some(digests.len() as u64)),
        Err(e) if e.is(REPOSITORY_NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_a_refresh_of_5000_repositories_with_every_collector_on() {
        let all = collectors();
        // The collectors share one limiter at the strictest rate: all the same.
        for c in &all {
            assert_eq!(c.defaults().rate_limit, ECR_RATE, "{}", c.name());
        }
        let repositories = 5_000.0;
        let listing = (repositories / f64::from(PAGE_SIZE)).ceil();
        // Calls per refresh: the repositories collector lists; the per-repository ones
        // list (or reuse a listing) and make a call per repository.
        let calls =
            |c: &Arc<dyn Collector>| listing + if c.per_resource() { repositories } else { 0.0 };
        for c in &all {
            let d = c.defaults();
            assert!(
                d.timeout < d.refresh_interval && d.refresh_interval <= d.max_staleness,
                "{}",
                c.name()
            );
            // At worst every per-repository collector runs at once, sharing the rate.
            let sharing = all.iter().filter(|o| o.per_resource()).count() as f64;
            let needed = calls(c) / (ECR_RATE / if c.per_resource() { sharing } else { 1.0 });
            assert!(
                needed < d.timeout.as_secs_f64() * 0.95,
                "{}: {} calls at {ECR_RATE}/s shared {sharing} ways take {needed:.0}s, the timeout is {:?}",
                c.name(),
                calls(c),
                d.timeout
            );
        }
        // On average, over the longest interval, every collector's calls fit the rate.
        let longest = all
            .iter()
            .map(|c| c.defaults().refresh_interval)
            .max()
            .expect("collectors");
        let per_longest: f64 = all
            .iter()
            .map(|c| calls(c) * longest.as_secs_f64() / c.defaults().refresh_interval.as_secs_f64())
            .sum();
        assert!(
            per_longest / longest.as_secs_f64() < ECR_RATE * 0.8,
            "{per_longest} calls every {longest:?} is more than the rate allows"
        );
    }
}

#[cfg(test)]
mod mocked {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use aws_sdk_ecr::operation::list_images::{ListImagesError, ListImagesOutput};
    use aws_sdk_ecr::types::error::RepositoryNotFoundException;
    use aws_sdk_ecr::types::ImageIdentifier;
    use aws_sdk_ecr::Client;
    use aws_smithy_mocks::{mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn id(digest: &str, tag: Option<&str>) -> ImageIdentifier {
        ImageIdentifier::builder()
            .image_digest(digest)
            .set_image_tag(tag.map(String::from))
            .build()
    }

    #[tokio::test]
    async fn counts_digests_not_tags() {
        // One image with three tags, one untagged image, one image with one tag.
        let page = mock!(Client::list_images)
            .match_requests(|r| {
                r.repository_name() == Some("team/app") && r.max_results() == Some(PAGE_SIZE)
            })
            .then_output(|| {
                ListImagesOutput::builder()
                    .image_ids(id("sha256:a", Some("1.0")))
                    .image_ids(id("sha256:a", Some("1")))
                    .image_ids(id("sha256:a", Some("latest")))
                    .image_ids(id("sha256:b", None))
                    .image_ids(id("sha256:c", Some("0.9")))
                    .build()
            });
        let client = mock_client!(aws_sdk_ecr, [&page]);
        assert_eq!(
            count_images(&client, "team/app").await.expect("counted"),
            Some(3)
        );
    }

    #[tokio::test]
    async fn a_repository_deleted_since_it_was_listed_is_skipped() {
        let gone = mock!(Client::list_images).then_error(|| {
            ListImagesError::RepositoryNotFoundException(
                RepositoryNotFoundException::builder()
                    .meta(ErrorMetadata::builder().code(REPOSITORY_NOT_FOUND).build())
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_ecr, [&gone]);
        assert_eq!(
            count_images(&client, "team/gone").await.expect("skipped"),
            None
        );
    }
}

#[cfg(test)]
mod shared_listing {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use aws_sdk_ecr::operation::describe_repositories::DescribeRepositoriesOutput;
    use aws_sdk_ecr::types::Repository;
    use aws_sdk_ecr::Client;
    use aws_smithy_mocks::{
        create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode,
    };
    use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
    use headroom_common::{ClientParts, ClientSource};

    use super::*;

    /// Clients answered by mock rules instead of a server.
    #[derive(Debug)]
    struct Mocked(Vec<Rule>);

    impl ClientSource for Mocked {
        fn parts(&self, _service: &'static str, region: &str) -> ClientParts {
            let interceptor = self.0.iter().fold(
                MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny),
                |i, r| i.with_rule(r),
            );
            let sdk = aws_types::SdkConfig::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(aws_types::region::Region::new(region.to_string()))
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(
                        aws_credential_types::Credentials::for_tests(),
                    ),
                )
                .build();
            ClientParts {
                sdk,
                interceptor: SharedInterceptor::new(interceptor),
                http_client: create_mock_http_client(),
            }
        }
    }

    fn two_repositories() -> Rule {
        mock!(Client::describe_repositories).then_output(|| {
            DescribeRepositoriesOutput::builder()
                .repositories(Repository::builder().repository_name("a").build())
                .repositories(Repository::builder().repository_name("b").build())
                .build()
        })
    }

    fn target(rule: &Rule, interval: u64) -> Target {
        Target::new(
            "111111111111",
            "eu-west-1",
            Arc::new(Mocked(vec![rule.clone()])),
        )
        .with_refresh_interval(Duration::from_secs(interval))
    }

    #[tokio::test(start_paused = true)]
    async fn collectors_that_start_together_list_once_and_a_listing_ages_out() {
        let rule = two_repositories();
        let listings = Arc::new(RepositoryListings::default());
        let repos = RepositoriesCollector(listings.clone());
        let images = ImagesCollector(listings.clone());
        let (t5, t10) = (target(&rule, 300), target(&rule, 600));
        let (counted, wanted) = tokio::join!(repos.collect(&t5), images.0.wanted(&t10));
        assert_eq!(counted.expect("counted").usage[0].value, 2.0);
        assert_eq!(wanted.expect("listed"), ["a", "b"]);
        assert_eq!(rule.num_calls(), 1, "one listing for both");
        // Under half of each one's interval: reused.
        tokio::time::sleep(Duration::from_secs(149)).await;
        repos.collect(&t5).await.expect("counted");
        assert_eq!(rule.num_calls(), 1);
        // Past half the 5-minute interval: the 5-minute collector lists anew; the
        // 10-minute one reuses that listing for up to 4 minutes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        repos.collect(&t5).await.expect("counted");
        assert_eq!(rule.num_calls(), 2);
        tokio::time::sleep(Duration::from_secs(239)).await;
        images.0.wanted(&t10).await.expect("listed");
        assert_eq!(rule.num_calls(), 2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        images.0.wanted(&t10).await.expect("listed");
        assert_eq!(rule.num_calls(), 3);
    }
}
