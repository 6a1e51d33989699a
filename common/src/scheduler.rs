//! Background refresh: one task per (collector, target) that refreshes limits on their
//! own slower schedule and usage on its interval, with jitter, under a timeout, never
//! overlapping itself, and publishes each result to the snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::{
    with_page_cap, CollectError, Collected, Collector, QuotaSelection, QuotaSpec,
    ResourceSelection, Scope, Target,
};
use crate::aws::{AwsContext, TargetSpec};
use crate::config::{
    format_duration, AccountConfig, AwsConfig, CollectorConfig, Config, LimitValue, Policy,
};
use crate::limits::{LimitResolver, Limits, SharedListings};
use crate::metrics;
use crate::snapshot::{Entry, Slot, Snapshot};

/// What names a refresh task across reloads: its collector, account and region label.
pub(crate) type JobKey = (&'static str, String, String);

/// What a task was started with: a reload restarts a task whose spec changed and
/// leaves the others running.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobSpec {
    pub settings: CollectorConfig,
    pub account: AccountConfig,
    /// The region its clients call (a global quota's home region).
    pub client_region: String,
    pub aws: AwsConfig,
}

/// Everything one refresh task needs.
pub(crate) struct Job {
    pub key: JobKey,
    pub spec: JobSpec,
    /// Where the task publishes its entry.
    pub slot: Arc<Slot>,
    pub collector: Arc<dyn Collector>,
    /// The collector's quotas, whose limits the job resolves.
    pub quotas: Vec<QuotaSpec>,
    pub target: Target,
    /// Overrides by quota code, account-level ones already merged over collector-wide.
    pub overrides: BTreeMap<String, f64>,
    /// Service Quotas listings shared with the other jobs.
    pub listings: Arc<SharedListings>,
}

/// Refresh tasks started per second at most when many start at once (start-up, a
/// discovery that adds accounts): their first refreshes are spread evenly over
/// `started / START_RATE` seconds, at most their interval, at least a second, so that
/// a thousand accounts do not call STS and every API at the same moment, and their
/// later refreshes, an interval apart, stay spread.
const START_RATE: f64 = 20.0;

/// When the `i`-th of `n` tasks started together makes its first refresh.
fn first_delay(i: usize, n: usize, interval: Duration) -> Duration {
    if n <= 1 {
        return Duration::ZERO;
    }
    let window = Duration::from_secs_f64((n as f64 / START_RATE).max(1.0)).min(interval);
    window.mul_f64(i as f64 / n as f64)
}

/// A running refresh task.
struct Task {
    spec: JobSpec,
    slot: Arc<Slot>,
    handle: JoinHandle<()>,
}

impl Task {
    /// Stops the task and waits until it has (so it publishes nothing more).
    async fn stop(self) -> Arc<Slot> {
        self.handle.abort();
        let _ = self.handle.await;
        self.slot
    }
}

/// What a reload did to the tasks.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Left running: nothing they depend on changed.
    pub kept: usize,
    /// Restarted with new settings; their last samples carried over.
    pub restarted: usize,
    pub started: usize,
    pub stopped: usize,
}

/// The running refresh tasks, one per (collector, target); dropping it stops them.
#[derive(Default)]
pub(crate) struct Tasks {
    running: BTreeMap<JobKey, Task>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self.running.values() {
            task.handle.abort();
        }
    }
}

impl Tasks {
    /// Makes `jobs` the running set: tasks whose spec is unchanged keep running (and
    /// their entries), changed ones restart from their last entry, new ones start and
    /// the rest stop; then the snapshot holds exactly the new set's entries.
    pub(crate) async fn apply(
        &mut self,
        jobs: Vec<Job>,
        snapshot: &Arc<Snapshot>,
        aws: &AwsContext,
    ) -> Changes {
        let mut old = std::mem::take(&mut self.running);
        let mut changes = Changes::default();
        let mut slots = Vec::with_capacity(jobs.len());
        let starting = jobs
            .iter()
            .filter(|j| !matches!(old.get(&j.key), Some(t) if t.spec == j.spec))
            .count();
        for job in jobs {
            let job = match old.remove(&job.key) {
                Some(task) if task.spec == job.spec => {
                    changes.kept += 1;
                    slots.push(task.slot.clone());
                    self.running.insert(job.key, task);
                    continue;
                }
                Some(task) => {
                    changes.restarted += 1;
                    let previous = task.stop().await.get();
                    carry_over(&previous, &job.slot);
                    job
                }
                None => {
                    changes.started += 1;
                    job
                }
            };
            slots.push(job.slot.clone());
            let (key, spec, slot) = (job.key.clone(), job.spec.clone(), job.slot.clone());
            let delay = first_delay(
                changes.started + changes.restarted - 1,
                starting,
                spec.settings.refresh_interval.0,
            );
            let cap = spec.aws.max_pages.0;
            let handle = tokio::spawn(with_page_cap(cap, run(job, snapshot.clone(), delay)));
            self.running.insert(key, Task { spec, slot, handle });
        }
        for ((collector, account, _), task) in old {
            changes.stopped += 1;
            let region = task.spec.client_region.clone();
            task.stop().await;
            // A stricter rate it set on shared limiters no longer applies.
            aws.forget(&account, &region, collector);
        }
        snapshot.replace(slots);
        changes
    }
}

/// Seeds a restarted task's entry with the last samples and health of its predecessor,
/// under the new settings.
fn carry_over(previous: &Entry, slot: &Slot) {
    let mut entry = (*slot.get()).clone();
    entry.usage = previous.usage.clone();
    entry.facts = previous.facts.clone();
    entry.limits = previous.limits.clone();
    entry.attempted = previous.attempted;
    entry.success = previous.success;
    entry.last_duration = previous.last_duration;
    entry.last_success = previous.last_success;
    entry.pieces = Arc::new(metrics::pieces(&entry));
    slot.set(entry);
}

impl Job {
    /// A limits lookup under the refresh timeout: the limits, and whether every lookup
    /// answered (else the last known limits, to try again sooner).
    pub(crate) async fn limits(&self, resolver: &mut LimitResolver) -> (Limits, bool) {
        let timeout = self.spec.settings.timeout.0;
        match tokio::time::timeout(
            timeout,
            resolver.refresh(&self.target, &self.quotas, &self.overrides),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    collector = self.collector.name(), account_id = %self.target.account_id,
                    aws_region = %self.target.region, "limits refresh timed out; keeping the last known limits"
                );
                (resolver.current().clone(), false)
            }
        }
    }

    /// One usage refresh under the timeout.
    pub(crate) async fn collect(&self) -> Result<Collected, CollectError> {
        let timeout = self.spec.settings.timeout.0;
        match tokio::time::timeout(timeout, self.collector.collect(&self.target)).await {
            Ok(r) => r,
            Err(_) => Err(CollectError::new(
                "collect",
                "timeout",
                format!("refresh took longer than {}", format_duration(timeout)),
            )),
        }
    }

    /// A limits resolver for this job: listings shared with the other jobs, reused while
    /// under half the limits interval.
    pub(crate) fn resolver(&self) -> LimitResolver {
        LimitResolver::new(
            self.listings.clone(),
            self.spec.settings.limits_refresh_interval.0 / 2,
        )
    }
}

/// `d` moved by up to ±10%, so that many targets do not refresh in lockstep.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

async fn run(job: Job, snapshot: Arc<Snapshot>, first_delay: Duration) {
    let mut entry = (*job.slot.get()).clone();
    let settings = &job.spec.settings;
    let interval = settings.refresh_interval.0;
    // Collectors of one service in one account and region share its listings: one
    // made for another collector serves this one while under half its limits interval.
    let mut resolver = job.resolver();
    let mut limits_due = Instant::now();
    let mut last_error: Option<&'static str> = None;
    tokio::time::sleep(first_delay).await;
    loop {
        let started = Instant::now();
        if started >= limits_due {
            let (limits, complete) = job.limits(&mut resolver).await;
            entry.limits = Arc::new(limits);
            // A lookup that failed is tried again at the next usage refresh.
            let next = if complete {
                settings.limits_refresh_interval.0
            } else {
                interval
            };
            limits_due = started + jittered(next);
        }
        let collect_started = Instant::now();
        let result = job.collect().await;
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
        // Rendered here, once per refresh, so a scrape only copies the lines.
        entry.pieces = Arc::new(metrics::pieces(&entry));
        snapshot.publish(&job.slot, entry.clone());
        tokio::time::sleep_until(started + jittered(interval)).await;
    }
}

/// Merges account-level overrides over collector-wide ones.
pub(crate) fn merge_overrides(
    collector: &BTreeMap<String, LimitValue>,
    account: &BTreeMap<String, LimitValue>,
) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = collector.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    out.extend(account.iter().map(|(k, v)| (k.clone(), v.0)));
    out
}

/// Builds the jobs for every collector and target, each with a fresh entry.
pub(crate) fn plan(
    collectors: &[Arc<dyn Collector>],
    targets: &[TargetSpec],
    config: &Config,
    aws: &Arc<AwsContext>,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    let enabled: Vec<&Arc<dyn Collector>> = collectors
        .iter()
        .filter(|c| {
            config
                .collector(c.name())
                .enabled
                .unwrap_or_else(|| c.enabled_by_default())
        })
        .collect();
    let quotas: Vec<QuotaSpec> = enabled.iter().flat_map(|c| c.quotas()).collect();
    let listings = Arc::new(SharedListings::for_quotas(&quotas));
    for c in enabled {
        let settings = config.collector(c.name());
        let (include, exclude) = (settings.include.clone(), settings.exclude.clone());
        let resources = ResourceSelection::new(
            move |name| {
                (include.is_empty() || include.iter().any(|p| p.matches(name)))
                    && !exclude.iter().any(|p| p.matches(name))
            },
            settings.concurrency.0,
        );
        let (services, codes) = (settings.services.clone(), settings.quotas.clone());
        let quota_selection =
            QuotaSelection::new(move |service, code| services.wants(service) && codes.wants(code));
        let quotas = c.quotas();
        // A global quota is refreshed once per account, in its home region.
        let scoped: Vec<(TargetSpec, String)> = match c.scope() {
            Scope::Regional => targets
                .iter()
                .map(|t| (t.clone(), t.region.clone()))
                .collect(),
            scope @ Scope::Global { .. } => {
                let mut seen = std::collections::BTreeSet::new();
                targets
                    .iter()
                    .filter(|t| seen.insert(t.account_id.clone()))
                    .map(|t| {
                        let home = scope.client_region(&t.region).to_string();
                        (t.in_region(&home), "global".to_string())
                    })
                    .collect()
            }
        };
        for (t, region_label) in scoped {
            let mut entry = Entry::new(
                c.name(),
                t.account_id.clone(),
                region_label.clone(),
                settings.refresh_interval.0,
                settings.max_staleness.0,
            );
            entry.min_usage_ratio = settings.min_usage_ratio.0;
            entry.ratio_filters_all = c.discovers_quotas();
            entry.thresholds = Arc::new(Policy::new(
                &settings.alert_thresholds,
                &t.account.alert_thresholds,
            ));
            jobs.push(Job {
                key: (c.name(), t.account_id.clone(), region_label),
                spec: JobSpec {
                    settings: settings.clone(),
                    account: t.account.for_refresh(),
                    client_region: t.region.clone(),
                    aws: config.aws.clone(),
                },
                slot: Slot::new(entry),
                collector: c.clone(),
                quotas: quotas.clone(),
                listings: listings.clone(),
                target: t
                    .for_collector(aws, c.name(), settings.rate_limit.0, resources.clone())
                    .with_quotas(quota_selection.clone())
                    .with_refresh_interval(settings.refresh_interval.0)
                    .with_limits_refresh_interval(settings.limits_refresh_interval.0)
                    .with_usage_source(usage_source(c.as_ref(), &settings, &t.account)),
                overrides: merge_overrides(&settings.limit_overrides, &t.account.limit_overrides),
            });
        }
    }
    jobs
}

/// The usage source in force for a collector in an account: the account's, else the
/// collector's, else the collector's first (empty: it has no choice). The config has
/// checked that the collector offers it.
fn usage_source<'a>(
    c: &dyn Collector,
    settings: &'a CollectorConfig,
    account: &'a AccountConfig,
) -> &'a str {
    let offered = c.usage_sources();
    account
        .usage_source
        .as_ref()
        .map(|s| s.0.as_str())
        .filter(|s| offered.contains(s))
        .or(settings.usage_source.as_deref())
        .or_else(|| offered.first().copied())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::api::{ClientParts, ClientSource, Collected, Usage};

    const THINGS: QuotaSpec = QuotaSpec::documented("demo", "things", "Things", 10.0);

    /// No client is built in these tests: the collectors call no AWS API and their
    /// quotas are not in Service Quotas.
    #[derive(Debug)]
    struct NoClients;

    impl ClientSource for NoClients {
        fn parts(&self, service_code: &'static str, _region: &str) -> ClientParts {
            unreachable!("no client of {service_code} is built in these tests")
        }
    }

    /// Sleeps for the next of `durations` (then the last one) and counts one thing per
    /// refresh; records when each refresh started and how many ran at once.
    #[derive(Debug)]
    struct Sleepy {
        durations: Vec<Duration>,
        starts: Mutex<Vec<Instant>>,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
    }

    impl Sleepy {
        fn new(durations: &[u64]) -> Arc<Self> {
            Arc::new(Sleepy {
                durations: durations.iter().map(|s| Duration::from_secs(*s)).collect(),
                starts: Mutex::new(Vec::new()),
                running: AtomicUsize::new(0),
                most_at_once: AtomicUsize::new(0),
            })
        }
    }

    /// Counts a refresh as running until it ends, or is dropped at its timeout.
    struct Running<'a>(&'a AtomicUsize);

    impl<'a> Running<'a> {
        fn start(running: &'a AtomicUsize, most: &AtomicUsize) -> Self {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            Running(running)
        }
    }

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[async_trait]
    impl Collector for Sleepy {
        fn name(&self) -> &'static str {
            "sleepy"
        }
        fn quotas(&self) -> Vec<QuotaSpec> {
            vec![THINGS]
        }
        async fn collect(&self, _target: &Target) -> Result<Collected, CollectError> {
            let n = {
                let mut starts = self.starts.lock().unwrap();
                starts.push(Instant::now());
                starts.len()
            };
            let _running = Running::start(&self.running, &self.most_at_once);
            let d = self.durations[(n - 1).min(self.durations.len() - 1)];
            tokio::time::sleep(d).await;
            Ok(vec![Usage::new(&THINGS, n as f64)].into())
        }
    }

    fn job(collector: Arc<Sleepy>, settings: CollectorConfig) -> Job {
        let entry = Entry::new(
            "sleepy",
            "111111111111".into(),
            "eu-west-1".into(),
            settings.refresh_interval.0,
            settings.max_staleness.0,
        );
        Job {
            key: ("sleepy", "111111111111".into(), "eu-west-1".into()),
            spec: JobSpec {
                settings,
                account: AccountConfig::default(),
                client_region: "eu-west-1".into(),
                aws: AwsConfig::default(),
            },
            slot: Slot::new(entry),
            collector,
            quotas: vec![THINGS],
            target: Target::new("111111111111", "eu-west-1", Arc::new(NoClients)),
            overrides: BTreeMap::new(),
            listings: Arc::default(),
        }
    }

    fn settings(interval: u64, timeout: u64) -> CollectorConfig {
        CollectorConfig {
            refresh_interval: crate::config::Dur(Duration::from_secs(interval)),
            timeout: crate::config::Dur(Duration::from_secs(timeout)),
            ..CollectorConfig::default()
        }
    }

    async fn start(collector: Arc<Sleepy>, interval: u64, timeout: u64) -> (Arc<Snapshot>, Tasks) {
        let snapshot = Arc::new(Snapshot::default());
        let mut tasks = Tasks::default();
        let aws = AwsContext::new(crate::metrics::Metrics::new("v", "r").expect("metrics").aws);
        tasks
            .apply(
                vec![job(collector, settings(interval, timeout))],
                &snapshot,
                &aws,
            )
            .await;
        (snapshot, tasks)
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let d = Duration::from_secs(100);
        for _ in 0..10_000 {
            let j = jittered(d);
            assert!(
                j >= Duration::from_secs(90) && j <= Duration::from_secs(110),
                "{j:?}"
            );
        }
    }

    #[test]
    fn many_tasks_started_together_spread_their_first_refreshes() {
        let five_minutes = Duration::from_secs(300);
        // Few: within a second, evenly.
        assert_eq!(first_delay(0, 1, five_minutes), Duration::ZERO);
        assert_eq!(first_delay(1, 4, five_minutes), Duration::from_millis(250));
        // 2,000 at 20 a second: over 100 s.
        assert_eq!(
            first_delay(1_000, 2_000, five_minutes),
            Duration::from_secs(50)
        );
        assert_eq!(
            first_delay(1_999, 2_000, five_minutes),
            Duration::from_millis(99_950)
        );
        // 12,000: 600 s at that rate, but never beyond the interval.
        assert_eq!(
            first_delay(6_000, 12_000, five_minutes),
            Duration::from_secs(150)
        );
        assert!(first_delay(11_999, 12_000, five_minutes) < five_minutes);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hundred_targets_started_at_once_refresh_first_over_five_seconds() {
        let collector = Sleepy::new(&[0]);
        let snapshot = Arc::new(Snapshot::default());
        let aws = AwsContext::new(crate::metrics::Metrics::new("v", "r").expect("metrics").aws);
        let jobs: Vec<Job> = (0..100)
            .map(|i| {
                let mut j = job(collector.clone(), settings(60, 30));
                j.key.1 = format!("{i:012}");
                j
            })
            .collect();
        let t0 = Instant::now();
        let mut tasks = Tasks::default();
        tasks.apply(jobs, &snapshot, &aws).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let starts = collector.starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 100);
        // 100 at 20 a second: one every 50 ms, in 5 s, never more than one at a time.
        let mut offsets: Vec<Duration> = starts.iter().map(|s| *s - t0).collect();
        offsets.sort();
        assert!(offsets[0] < Duration::from_millis(10), "{:?}", offsets[0]);
        assert!(
            offsets[99] >= Duration::from_millis(4_900) && offsets[99] < Duration::from_secs(5)
        );
        for pair in offsets.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(49), "{pair:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_follow_the_interval_with_jitter_and_never_overlap() {
        let collector = Sleepy::new(&[5]);
        let t0 = Instant::now();
        let (snapshot, _tasks) = start(collector.clone(), 60, 30).await;
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        let starts = collector.starts.lock().unwrap().clone();
        // The first refresh starts within a second, spread so targets do not start at once.
        assert!(
            starts[0] - t0 < Duration::from_secs(1),
            "{:?}",
            starts[0] - t0
        );
        // Then one every 60 s ± 10%, start to start: 19 to 23 in 20 minutes.
        assert!(
            (19..=23).contains(&starts.len()),
            "{} refreshes",
            starts.len()
        );
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_secs(54) && gap <= Duration::from_secs(66),
                "{gap:?}"
            );
        }
        assert_eq!(collector.most_at_once.load(Ordering::SeqCst), 1);
        let entry = snapshot.get(0).expect("entry");
        assert!(entry.success && entry.attempted);
        assert_eq!(entry.last_duration, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_over_its_timeout_fails_keeps_the_last_samples_and_the_next_runs() {
        // Good (1 s), then too slow (45 s against a 10 s timeout), then good again.
        let collector = Sleepy::new(&[1, 45, 1]);
        let (snapshot, _tasks) = start(collector.clone(), 30, 10).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let first = snapshot.get(0).expect("entry");
        assert!(first.success);
        assert_eq!(first.usage[0].value, 1.0);
        // The second refresh starts at about 30 s and is abandoned at its timeout.
        tokio::time::sleep(Duration::from_secs(40)).await;
        let failed = snapshot.get(0).expect("entry");
        assert!(failed.attempted && !failed.success);
        assert_eq!(failed.last_duration, Duration::from_secs(10));
        assert_eq!(failed.usage[0].value, 1.0, "the last good samples stay");
        assert_eq!(failed.last_success, first.last_success);
        // The abandoned refresh is not running alongside the next one.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let recovered = snapshot.get(0).expect("entry");
        assert!(recovered.success);
        assert_eq!(recovered.usage[0].value, 3.0);
        assert_eq!(collector.most_at_once.load(Ordering::SeqCst), 1);
    }

    /// The changes as (kept, restarted, started, stopped).
    fn counts(c: Changes) -> (usize, usize, usize, usize) {
        (c.kept, c.restarted, c.started, c.stopped)
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_unchanged_tasks_restarts_changed_ones_with_their_samples() {
        let collector = Sleepy::new(&[1]);
        let aws = AwsContext::new(crate::metrics::Metrics::new("v", "r").expect("metrics").aws);
        let snapshot = Arc::new(Snapshot::default());
        let mut tasks = Tasks::default();
        let plan = |interval| vec![job(collector.clone(), settings(interval, 30))];
        let first = tasks.apply(plan(60), &snapshot, &aws).await;
        assert_eq!(counts(first), (0, 0, 1, 0));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = snapshot.get(0).expect("entry");
        assert_eq!(before.usage[0].value, 1.0);
        assert_eq!(collector.starts.lock().unwrap().len(), 1);

        // The same settings: the task keeps running, nothing is refreshed again.
        let same = tasks.apply(plan(60), &snapshot, &aws).await;
        assert_eq!(counts(same), (1, 0, 0, 0));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(collector.starts.lock().unwrap().len(), 1);

        // A new interval: restarted, its last samples and health carried over until the
        // new task's first refresh, which comes at once.
        let changed = tasks.apply(plan(120), &snapshot, &aws).await;
        assert_eq!(counts(changed), (0, 1, 0, 0));
        let carried = snapshot.get(0).expect("entry");
        assert_eq!(carried.usage[0].value, 1.0);
        assert_eq!(carried.refresh_interval, Duration::from_secs(120));
        assert!(carried.success && carried.attempted);
        assert_eq!(carried.last_success, before.last_success);
        assert!(
            !carried.pieces.usage.is_empty(),
            "rendered with the new settings"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(snapshot.get(0).expect("entry").usage[0].value, 2.0);
        // The old task is gone: the next refresh is 120 s after the restart, not 60.
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(collector.starts.lock().unwrap().len(), 2);
        assert_eq!(collector.most_at_once.load(Ordering::SeqCst), 1);

        // Removed: stopped, and its entry leaves the snapshot.
        let gone = tasks.apply(Vec::new(), &snapshot, &aws).await;
        assert_eq!(counts(gone), (0, 0, 0, 1));
        assert!(snapshot.all().is_empty());
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(collector.starts.lock().unwrap().len(), 2);
    }
}
