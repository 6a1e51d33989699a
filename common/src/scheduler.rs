//! Background refresh: one task per (collector, target) that refreshes limits on their
//! own slower schedule and usage on its interval, with jitter, under a timeout, never
//! overlapping itself, and publishes each result to the snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::aws::Target;
use crate::collector::{CollectError, Collector};
use crate::config::CollectorConfig;
use crate::limits::LimitResolver;
use crate::snapshot::{Entry, Snapshot};

/// Everything one refresh task needs.
pub struct Job {
    pub index: usize,
    pub collector: Arc<dyn Collector>,
    pub target: Target,
    pub settings: CollectorConfig,
    /// Overrides by quota code, account-level ones already merged over collector-wide.
    pub overrides: BTreeMap<String, f64>,
}

/// Spawns one task per job; dropping the returned set stops them all.
pub fn spawn(jobs: Vec<Job>, snapshot: Arc<Snapshot>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for job in jobs {
        set.spawn(run(job, snapshot.clone()));
    }
    set
}

/// `d` moved by up to ±10%, so that many targets do not refresh in lockstep.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

async fn run(job: Job, snapshot: Arc<Snapshot>) {
    let Some(mut entry) = snapshot.get(job.index).map(|e| (*e).clone()) else {
        return;
    };
    let interval = job.settings.refresh_interval.0;
    let timeout = job.settings.timeout.0;
    let mut resolver = LimitResolver::default();
    let mut limits_due = Instant::now();
    let mut last_error: Option<&'static str> = None;
    // Spread the first refreshes over up to a second.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1000))).await;
    loop {
        let started = Instant::now();
        if started >= limits_due {
            let quotas = job.collector.quotas();
            let (limits, complete) = match tokio::time::timeout(
                timeout,
                resolver.refresh(&job.target, quotas, &job.overrides),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        collector = job.collector.name(), account_id = %job.target.account_id,
                        aws_region = %job.target.region, "limits refresh timed out; keeping the last known limits"
                    );
                    (resolver.current().clone(), false)
                }
            };
            entry.limits = Arc::new(limits);
            // A lookup that failed is tried again at the next usage refresh.
            let next = if complete {
                job.settings.limits_refresh_interval.0
            } else {
                interval
            };
            limits_due = started + jittered(next);
        }
        let collect_started = Instant::now();
        let result = match tokio::time::timeout(timeout, job.collector.collect(&job.target)).await {
            Ok(r) => r,
            Err(_) => Err(CollectError {
                operation: "collect".into(),
                code: "timeout",
                message: format!(
                    "refresh took longer than {}",
                    crate::config::format_duration(timeout)
                ),
            }),
        };
        entry.last_duration = collect_started.elapsed();
        entry.attempted = true;
        match result {
            Ok(collected) => {
                if last_error.take().is_some() {
                    tracing::info!(
                        collector = job.collector.name(), account_id = %job.target.account_id,
                        aws_region = %job.target.region, "collector recovered"
                    );
                }
                entry.success = true;
                entry.usage = Arc::new(collected.usage);
                entry.facts = Arc::new(collected.facts);
                entry.last_success = Some(SystemTime::now());
            }
            Err(e) => {
                // Log when a collector starts failing or fails differently, not every time.
                if last_error != Some(e.code) {
                    tracing::warn!(
                        collector = job.collector.name(), account_id = %job.target.account_id,
                        aws_region = %job.target.region, error_code = e.code, error = %e,
                        "collector failed; keeping its last good samples until they are stale"
                    );
                }
                last_error = Some(e.code);
                entry.success = false;
            }
        }
        snapshot.publish(job.index, entry.clone());
        tokio::time::sleep_until(started + jittered(interval)).await;
    }
}

/// Merges account-level overrides over collector-wide ones.
pub fn merge_overrides(
    collector: &BTreeMap<String, crate::config::LimitValue>,
    account: &BTreeMap<String, crate::config::LimitValue>,
) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = collector.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    out.extend(account.iter().map(|(k, v)| (k.clone(), v.0)));
    out
}

/// Builds the entries and jobs for every collector and target.
pub fn plan(
    collectors: &[Arc<dyn Collector>],
    targets: &[crate::aws::TargetSpec],
    config: &crate::config::Config,
    aws: &Arc<crate::aws::AwsContext>,
) -> (Vec<Entry>, Vec<Job>) {
    let mut entries = Vec::new();
    let mut jobs = Vec::new();
    for c in collectors {
        let settings = config.collector(c.name());
        if !settings.enabled.unwrap_or_else(|| c.enabled_by_default()) {
            continue;
        }
        let resources = Arc::new(crate::aws::ResourceSettings {
            include: settings.include.clone(),
            exclude: settings.exclude.clone(),
            concurrency: settings.concurrency.0,
        });
        // A global quota is refreshed once per account, in its home region.
        let scoped: Vec<(crate::aws::TargetSpec, String)> = match c.scope() {
            crate::collector::Scope::Regional => targets
                .iter()
                .map(|t| (t.clone(), t.region.clone()))
                .collect(),
            crate::collector::Scope::Global { home_region } => {
                let mut seen = std::collections::BTreeSet::new();
                targets
                    .iter()
                    .filter(|t| seen.insert(t.account_id.clone()))
                    .map(|t| (t.in_region(home_region), "global".to_string()))
                    .collect()
            }
        };
        for (t, region_label) in &scoped {
            let index = entries.len();
            let mut entry = Entry::new(
                c.name(),
                t.account_id.clone(),
                region_label.clone(),
                c.quotas(),
                settings.refresh_interval.0,
                settings.max_staleness.0,
            );
            entry.min_usage_ratio = settings.min_usage_ratio.0;
            entries.push(entry);
            jobs.push(Job {
                index,
                collector: c.clone(),
                target: t.for_collector(aws, settings.rate_limit.0, resources.clone()),
                overrides: merge_overrides(&settings.limit_overrides, &t.account.limit_overrides),
                settings: settings.clone(),
            });
        }
    }
    (entries, jobs)
}
