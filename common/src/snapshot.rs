//! The last good samples of every (collector, target) and their health. Each entry is
//! replaced whole after a refresh, so a scrape sees one refresh or the next, never half;
//! it carries its exposition lines, rendered when it was published, so a scrape only
//! copies them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::api::{Fact, Usage};
use crate::config::Policy;
use crate::limits::Limits;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub collector: &'static str,
    pub account_id: String,
    pub region: String,
    pub refresh_interval: Duration,
    pub max_staleness: Duration,
    /// The last good usage, and the limits in force.
    pub usage: Arc<Vec<Usage>>,
    pub facts: Arc<Vec<Fact>>,
    pub limits: Arc<Limits>,
    /// Per-resource series below this usage ratio are not exported (0: export all).
    pub min_usage_ratio: f64,
    /// Whether that ratio filters every series, not only per-resource ones (a collector
    /// that discovers its quotas).
    pub ratio_filters_all: bool,
    /// The alert thresholds of this collector in this account.
    pub thresholds: Arc<Policy>,
    /// Whether a refresh has finished yet (success or not).
    pub attempted: bool,
    /// Whether the last refresh succeeded.
    pub success: bool,
    pub last_duration: Duration,
    pub last_success: Option<SystemTime>,
    /// The entry's sample lines, rendered from the fields above when it is published.
    pub pieces: Arc<Pieces>,
}

/// One entry's sample lines in the Prometheus text format, per metric family, without
/// the HELP and TYPE lines (a scrape writes those once per family).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Pieces {
    pub usage: Bytes,
    pub limit: Bytes,
    pub info: Bytes,
    pub thresholds: Bytes,
    /// (gauge name, its help, the lines), in the order the facts came.
    pub facts: Vec<(&'static str, &'static str, Bytes)>,
    pub success: Bytes,
    pub duration: Bytes,
    pub last_success: Bytes,
}

impl Entry {
    pub(crate) fn new(
        collector: &'static str,
        account_id: String,
        region: String,
        refresh_interval: Duration,
        max_staleness: Duration,
    ) -> Self {
        Entry {
            collector,
            account_id,
            region,
            refresh_interval,
            max_staleness,
            usage: Arc::new(Vec::new()),
            facts: Arc::new(Vec::new()),
            limits: Arc::new(Limits::default()),
            min_usage_ratio: 0.0,
            ratio_filters_all: false,
            thresholds: Arc::new(Policy::default()),
            attempted: false,
            success: false,
            last_duration: Duration::ZERO,
            last_success: None,
            pieces: Arc::new(Pieces::default()),
        }
    }

    /// The usage to expose at `now`: the last good samples, unless they are older than
    /// the maximum staleness.
    #[cfg(test)]
    pub(crate) fn fresh_usage(&self, now: SystemTime) -> &[Usage] {
        if self.is_fresh(now) {
            &self.usage
        } else {
            &[]
        }
    }

    /// The facts to expose at `now`, on the same terms as the usage.
    #[cfg(test)]
    pub(crate) fn fresh_facts(&self, now: SystemTime) -> &[Fact] {
        if self.is_fresh(now) {
            &self.facts
        } else {
            &[]
        }
    }

    /// Cardinality control: whether `u`, against its `limit`, is under the minimum
    /// usage ratio and stays out (quiet resources of a per-resource quota, or any quiet
    /// quota of a collector that discovers them). The exposition and `--check` agree.
    pub(crate) fn too_quiet(&self, u: &Usage, limit: f64) -> bool {
        (!u.resource.is_empty() || self.ratio_filters_all)
            && self.min_usage_ratio > 0.0
            && limit > 0.0
            && u.value / limit < self.min_usage_ratio
    }

    pub(crate) fn is_fresh(&self, now: SystemTime) -> bool {
        matches!(self.last_success, Some(t)
            if now.duration_since(t).unwrap_or(Duration::ZERO) <= self.max_staleness)
    }
}

/// One (collector, target)'s entry, replaced whole by its refresh task.
#[derive(Debug)]
pub(crate) struct Slot(RwLock<Arc<Entry>>);

impl Slot {
    pub(crate) fn new(entry: Entry) -> Arc<Self> {
        Arc::new(Slot(RwLock::new(Arc::new(entry))))
    }

    pub(crate) fn get(&self) -> Arc<Entry> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set(&self, entry: Entry) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *g = Arc::new(entry);
    }
}

/// The entries of every (collector, target), each swapped atomically; the set itself
/// is swapped whole when a reloaded config adds or removes targets.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    slots: RwLock<Arc<Vec<Arc<Slot>>>>,
    /// Counts publications and replacements, so that what was made of the entries can
    /// be reused until one changes.
    generation: AtomicU64,
    /// Set once every entry has been refreshed; a reload that adds targets does not
    /// take readiness back (their series appear when they are refreshed).
    ready: AtomicBool,
    /// Set while the targets are not all known yet (the first account discovery).
    held: AtomicBool,
    /// The `aws_quota_account_info` lines of the accounts in force.
    accounts: RwLock<Bytes>,
}

impl Snapshot {
    #[cfg(test)]
    pub(crate) fn new(entries: Vec<Entry>) -> Self {
        let snapshot = Snapshot::default();
        snapshot.replace(entries.into_iter().map(Slot::new).collect());
        snapshot
    }

    /// The slots as they are now.
    pub(crate) fn slots(&self) -> Arc<Vec<Arc<Slot>>> {
        match self.slots.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the set of slots (a reload).
    pub(crate) fn replace(&self, slots: Vec<Arc<Slot>>) {
        {
            let mut g = match self.slots.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            *g = Arc::new(slots);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The entry at `index` of the current set.
    #[cfg(test)]
    pub(crate) fn get(&self, index: usize) -> Option<Arc<Entry>> {
        self.slots().get(index).map(|s| s.get())
    }

    /// Publishes a refreshed entry into its slot (one no longer in the set is dropped
    /// with it).
    pub(crate) fn publish(&self, slot: &Slot, entry: Entry) {
        slot.set(entry);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Publishes into the slot at `index` of the current set.
    #[cfg(test)]
    pub(crate) fn publish_at(&self, index: usize, entry: Entry) {
        if let Some(slot) = self.slots().get(index) {
            self.publish(slot, entry);
        }
    }

    /// Changes whenever an entry is published or the set is replaced.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Every entry as it is now.
    pub(crate) fn all(&self) -> Vec<Arc<Entry>> {
        self.slots().iter().map(|s| s.get()).collect()
    }

    /// Readiness waits until `release` (the targets are not all known yet).
    pub(crate) fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    pub(crate) fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    /// Sets the account info lines.
    pub(crate) fn set_accounts(&self, lines: Bytes) {
        {
            let mut g = match self.accounts.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            *g = lines;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn accounts(&self) -> Bytes {
        match self.accounts.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// True once every entry has been refreshed at least once, and from then on.
    pub(crate) fn ready(&self) -> bool {
        if self.ready.load(Ordering::SeqCst) {
            return true;
        }
        if self.held.load(Ordering::SeqCst) {
            return false;
        }
        let ready = self.all().iter().all(|e| e.attempted);
        if ready {
            self.ready.store(true, Ordering::SeqCst);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_expire_after_max_staleness() {
        let mut e = Entry::new(
            "c",
            "1".into(),
            "r".into(),
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        let q = crate::api::QuotaSpec::documented("s", "q", "Q", 10.0);
        e.usage = Arc::new(vec![Usage::new(&q, 1.0)]);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(e.fresh_usage(t0).is_empty(), "never succeeded");
        e.last_success = Some(t0);
        assert_eq!(e.fresh_usage(t0 + Duration::from_secs(600)).len(), 1);
        assert!(e.fresh_usage(t0 + Duration::from_secs(601)).is_empty());
    }

    #[test]
    fn ready_when_every_entry_was_attempted() {
        let mk = || {
            Entry::new(
                "c",
                "1".into(),
                "r".into(),
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
        };
        let s = Snapshot::new(vec![mk(), mk()]);
        assert!(!s.ready());
        let mut e = mk();
        e.attempted = true;
        s.publish_at(0, e.clone());
        assert!(!s.ready());
        s.publish_at(1, e);
        assert!(s.ready());
        // A reload that adds an entry does not take readiness back.
        let mut slots = (*s.slots()).clone();
        slots.push(Slot::new(mk()));
        s.replace(slots);
        assert!(s.ready());
    }
}
