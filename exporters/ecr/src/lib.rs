//! Amazon ECR: registered repositories per account and region, and images per
//! repository (the quota that stops one service's releases).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use futures::stream::{self, StreamExt, TryStreamExt};
use std::time::Duration;

use headroom_common::config::{CollectorConfig, Concurrency, Dur, Rate};
use headroom_common::{
    async_trait, CollectError, Collected, Collector, Fact, QuotaSpec, Target, Usage,
};

/// Registered repositories per account and region. The built-in value is the documented
/// default; the applied value from Service Quotas always wins over it.
pub const REPOSITORIES: QuotaSpec = QuotaSpec {
    service_code: "ecr",
    quota_code: "L-CFEB8E8D",
    quota_name: "Registered repositories",
    builtin_limit: 100_000.0,
    adjustable: true,
    in_service_quotas: true,
    resource_level: false,
};

/// Images per repository. Its default has changed over the years (1,000, then 10,000,
/// then higher), and it can be raised for one repository, so the value applied to each
/// repository in Service Quotas comes first.
pub const IMAGES: QuotaSpec = QuotaSpec {
    service_code: "ecr",
    quota_code: "L-03A36CE1",
    quota_name: "Images per repository",
    builtin_limit: 100_000.0,
    adjustable: true,
    in_service_quotas: true,
    resource_level: true,
};

/// The largest page of DescribeRepositories and ListImages.
pub const PAGE_SIZE: i32 = 1000;

/// API requests per second for every ECR collector. The rate limiter is shared per
/// account, region and service by all ECR collectors at the strictest of their
/// settings, so they all default to this one; ECR's read APIs allow far more.
const ECR_RATE: Rate = Rate(20.0);

/// Settings for the collectors that make a call per repository, so that a refresh of
/// 5,000 repositories (about 5,005 calls: a DescribeRepositories page per 1,000
/// repositories and a ListImages page per 1,000 tags) finishes inside its timeout: at
/// 20 requests per second it takes about 250 s, under the 8-minute timeout and the
/// 10-minute interval. Images accumulate over days, so ten minutes loses nothing an
/// alert needs.
fn per_repository_defaults() -> CollectorConfig {
    CollectorConfig {
        refresh_interval: Dur(Duration::from_secs(600)),
        timeout: Dur(Duration::from_secs(480)),
        rate_limit: ECR_RATE,
        concurrency: Concurrency(8),
        ..CollectorConfig::default()
    }
}

/// Bounds pages per listing, far above any real registry (100,000 images of 1,000-entry
/// pages even with several tags each), so a server that keeps returning tokens stops.
const MAX_PAGES: usize = 10_000;

#[derive(Debug, Default)]
pub struct RepositoriesCollector;

#[async_trait]
impl Collector for RepositoriesCollector {
    fn name(&self) -> &'static str {
        "ecr_repositories"
    }

    fn defaults(&self) -> CollectorConfig {
        CollectorConfig {
            rate_limit: ECR_RATE,
            ..CollectorConfig::default()
        }
    }

    fn quotas(&self) -> &'static [QuotaSpec] {
        &[REPOSITORIES]
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

    fn defaults(&self) -> CollectorConfig {
        per_repository_defaults()
    }

    fn quotas(&self) -> &'static [QuotaSpec] {
        &[IMAGES]
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        let names = wanted_repositories(target).await?;
        let client: aws_sdk_ecr::Client = target.client();
        let counted: Vec<Option<Usage>> = stream::iter(names)
            .map(|name| {
                let client = client.clone();
                async move {
                    Ok::<_, CollectError>(count_images(&client, &name).await?.map(|n| Usage {
                        quota_code: IMAGES.quota_code,
                        resource: name,
                        value: n as f64,
                    }))
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

    fn defaults(&self) -> CollectorConfig {
        per_repository_defaults()
    }

    fn quotas(&self) -> &'static [QuotaSpec] {
        &[]
    }

    fn enabled_by_default(&self) -> bool {
        false
    }

    async fn collect(&self, target: &Target) -> Result<Collected, CollectError> {
        const OP: &str = "GetLifecyclePolicy";
        let names = wanted_repositories(target).await?;
        let client: aws_sdk_ecr::Client = target.client();
        let found: Vec<Option<Fact>> = stream::iter(names)
            .map(|name| {
                let client = client.clone();
                async move {
                    let r = client.get_lifecycle_policy().repository_name(&name).send().await;
                    let present = match r {
                        Ok(_) => 1.0,
                        Err(e) => match CollectError::from_sdk(OP, &e) {
                            e if e.code == "LifecyclePolicyNotFoundException" => 0.0,
                            e if e.code == "RepositoryNotFoundException" => return Ok(None),
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
    let client: aws_sdk_ecr::Client = target.client();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = client
            .describe_repositories()
            .max_results(PAGE_SIZE)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| CollectError::from_sdk(OP, &e))?;
        for r in page.repositories() {
            let name = r.repository_name().ok_or_else(|| {
                CollectError::malformed(OP, "a repository without repositoryName")
            })?;
            f(name);
        }
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(()),
        }
    }
    Err(CollectError::malformed(
        OP,
        format!("still paging after {MAX_PAGES} pages"),
    ))
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
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = client
            .list_images()
            .repository_name(repository)
            .max_results(PAGE_SIZE)
            .set_next_token(token.take())
            .send()
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let e = CollectError::from_sdk(OP, &e);
                if e.code == "RepositoryNotFoundException" {
                    return Ok(None);
                }
                return Err(e);
            }
        };
        for id in page.image_ids() {
            let digest = id
                .image_digest()
                .ok_or_else(|| CollectError::malformed(OP, "an image without imageDigest"))?;
            let mut h = DefaultHasher::new();
            digest.hash(&mut h);
            digests.insert(h.finish());
        }
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(Some(digests.len() as u64)),
        }
    }
    Err(CollectError::malformed(
        OP,
        format!("still paging after {MAX_PAGES} pages"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use headroom_common::config::{Config, Known};

    #[test]
    fn defaults_fit_a_refresh_of_5000_repositories() {
        let collectors: [&dyn Collector; 3] = [
            &RepositoriesCollector,
            &ImagesCollector,
            &LifecyclePoliciesCollector,
        ];
        let known: Vec<Known<'_>> = collectors
            .iter()
            .map(|c| Known {
                name: c.name(),
                quotas: c.quotas(),
                defaults: c.defaults(),
            })
            .collect();
        let config = Config::parse("", &known).expect("the defaults are a valid config");
        // The collectors share one limiter at the strictest rate: all the same.
        for c in collectors {
            assert_eq!(
                config.collector(c.name()).rate_limit,
                ECR_RATE,
                "{}",
                c.name()
            );
        }
        let images = config.collector("ecr_images");
        let calls = 5_000.0 / f64::from(PAGE_SIZE) + 5_000.0;
        let needed = calls / images.rate_limit.0;
        assert!(
            needed < images.timeout.0.as_secs_f64() * 0.6,
            "{calls} calls take {needed}s, too close to the timeout"
        );
        assert!(images.timeout.0 < images.refresh_interval.0);
    }
}
