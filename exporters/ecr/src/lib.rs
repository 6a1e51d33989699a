use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use headroom_common::{
    async_trait, pages, AwsService, ClientParts, CollectError, Collected, Collector, Defaults,
    Fact, QuotaSpec, Target, Usage,
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
const PER_REPOSITORY_DEFAULTS: Defaults = Defaults {
    refresh_interval: Duration::from_secs(600),
    timeout: Duration::from_secs(480),
    rate_limit: ECR_RATE,
    concurrency: 8,
    ..Defaults::LIBRARY
};

#[derive(Debug, Default)]
pub struct RepositoriesCollector;

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
        let mut count = 0u64;
        for_each_repository(target, |_| count += 1).await?;
        Ok(vec![Usage::new(&REPOSITORIES, count as f64)].into())
    }
}

#[derive(Debug, Default)]
pub struct ImagesCollector;

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
        let names = wanted_repositories(target).await?;
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
pub struct LifecyclePoliciesCollector;

#[async_trait]
impl Collector for LifecyclePoliciesCollector {
    fn name(&self) -> &'static str {
        "ecr_lifecycle_policies"
    }

    fn defaults(&self) -> Defaults {
        PER_REPOSITORY_DEFAULTS
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
        let names = wanted_repositories(target).await?;
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

/// The repositories that `include` and `exclude` select.
async fn wanted_repositories(target: &Target) -> Result<Vec<String>, CollectError> {
    let mut names = Vec::new();
    for_each_repository(target, |name| {
        if target.wants(name) {
            names.push(name.to_string());
        }
    })
    .await?;
    Ok(names)
}

/// Calls `f` with each repository name, paging DescribeRepositories at its maximum.
async fn for_each_repository(target: &Target, mut f: impl FnMut(&str)) -> Result<(), CollectError> {
    const OP: &str = "DescribeRepositories";
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
                f(name);
            }
            Ok(page.next_token)
        },
    )
    .await
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
    fn defaults_fit_a_refresh_of_5000_repositories() {
        let collectors: [&dyn Collector; 3] = [
            &RepositoriesCollector,
            &ImagesCollector,
            &LifecyclePoliciesCollector,
        ];
        // The collectors share one limiter at the strictest rate: all the same.
        for c in collectors {
            assert_eq!(c.defaults().rate_limit, ECR_RATE, "{}", c.name());
        }
        let images = ImagesCollector.defaults();
        let calls = 5_000.0 / f64::from(PAGE_SIZE) + 5_000.0;
        let needed = calls / images.rate_limit;
        assert!(
            needed < images.timeout.as_secs_f64() * 0.6,
            "{calls} calls take {needed}s, too close to the timeout"
        );
        assert!(images.timeout < images.refresh_interval);
        assert!(images.refresh_interval <= images.max_staleness);
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
