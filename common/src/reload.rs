//! The running configuration and its reloads: SIGHUP and `POST /-/reload` read the
//! config file again; a valid one replaces targets and settings (tasks whose settings
//! did not change keep running, and every entry that still exists keeps its samples),
//! an invalid one is refused and logged, and the running one goes on.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api::Collector;
use crate::aws::{self, AwsContext};
use crate::config::{Config, ConfigError, Known};
use crate::discovery::{self, Member};
use crate::metrics::{self, DiscoveryGauges, Metrics, ReloadGauges};
use crate::scheduler::{self, Changes, Tasks};
use crate::snapshot::Snapshot;

/// Why a configuration could not be put in force.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Targets(#[from] aws::TargetError),
}

/// Reads the config file (or the built-in defaults when there is none).
pub(crate) fn load_config(path: Option<&PathBuf>, known: &[Known]) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(path, known),
        None => Config::parse("", known).map_err(|message| ConfigError {
            file: PathBuf::from("(built-in defaults)"),
            message,
        }),
    }
}

/// The configuration in force, the refresh tasks it runs, and the account discovery it
/// asks for.
pub(crate) struct Running {
    path: Option<PathBuf>,
    known: Vec<Known>,
    collectors: Vec<Arc<dyn Collector>>,
    aws: Arc<AwsContext>,
    snapshot: Arc<Snapshot>,
    gauges: ReloadGauges,
    discovery_gauges: DiscoveryGauges,
    tasks: Tasks,
    /// The configuration in force.
    config: Config,
    /// The discovery task and what it runs with.
    discovery: Option<(discovery::Settings, JoinHandle<()>)>,
    /// The last discovered accounts (kept when a discovery fails).
    members: Vec<Member>,
    found_tx: mpsc::Sender<discovery::Outcome>,
    found_rx: Option<mpsc::Receiver<discovery::Outcome>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((_, task)) = &self.discovery {
            task.abort();
        }
    }
}

impl Running {
    /// Puts `config` (already loaded from `path`) in force: its targets are set up
    /// (which may call STS) and its tasks started; discovered accounts join when the
    /// first discovery answers (readiness waits for it, serving does not).
    pub(crate) async fn start(
        path: Option<PathBuf>,
        config: Config,
        collectors: Vec<Arc<dyn Collector>>,
        aws: Arc<AwsContext>,
        snapshot: Arc<Snapshot>,
        metrics: &Metrics,
    ) -> Result<(Self, usize), LoadError> {
        let known = collectors.iter().map(|c| Known::of(c.as_ref())).collect();
        // One outcome at a time is enough: a discovery waits for the last to be applied.
        let (found_tx, found_rx) = mpsc::channel(1);
        let mut running = Running {
            path,
            known,
            collectors,
            aws,
            snapshot,
            gauges: metrics.reload.clone(),
            discovery_gauges: metrics.discovery.clone(),
            tasks: Tasks::default(),
            config: config.clone(),
            discovery: None,
            members: Vec::new(),
            found_tx,
            found_rx: Some(found_rx),
        };
        if config.organization.is_some() {
            running.snapshot.hold();
        }
        let changes = running.apply(config).await?;
        running.gauges.succeeded(SystemTime::now());
        Ok((running, changes.started))
    }

    /// Puts `config` in force with the accounts discovered so far, and starts, restarts
    /// or stops discovery as it asks.
    async fn apply(&mut self, config: Config) -> Result<Changes, LoadError> {
        let settings = discovery::Settings::of(&config);
        let members: &[Member] = if settings.is_some() {
            &self.members
        } else {
            &[]
        };
        let discovered = match &settings {
            Some(s) => discovery::accounts(s, members)
                .await
                .map_err(|e| aws::TargetError::Discovery(e.to_string()))?,
            None => Vec::new(),
        };
        let built = aws::build_targets(&config, &self.aws, &discovered).await?;
        let jobs = scheduler::plan(&self.collectors, &built.targets, &config, &self.aws);
        let changes = self.tasks.apply(jobs, &self.snapshot, &self.aws).await;
        self.snapshot
            .set_accounts(metrics::account_info(&built.accounts, &config.account_tags));
        let same =
            matches!((&self.discovery, &settings), (Some((old, _)), Some(new)) if old == new);
        if !same {
            if let Some((_, task)) = self.discovery.take() {
                task.abort();
            }
            match settings {
                Some(s) => {
                    let task = discovery::spawn(
                        s.clone(),
                        self.aws.clone(),
                        self.discovery_gauges.clone(),
                        self.found_tx.clone(),
                    );
                    self.discovery = Some((s, task));
                }
                None => {
                    self.members.clear();
                    self.discovery_gauges.clear();
                }
            }
        }
        self.config = config;
        Ok(changes)
    }

    /// A discovery's outcome: new accounts are put in force (a failure keeps the last
    /// ones); the first outcome, good or not, lets readiness follow the targets.
    async fn discovered(&mut self, outcome: discovery::Outcome) {
        if let Some(members) = outcome {
            if members != self.members {
                let before: BTreeSet<String> = self.members.iter().map(|m| m.id.clone()).collect();
                let after: BTreeSet<String> = members.iter().map(|m| m.id.clone()).collect();
                let old = std::mem::replace(&mut self.members, members);
                match self.apply(self.config.clone()).await {
                    Ok(c) => tracing::info!(
                        accounts = after.len(),
                        added = after.difference(&before).count(),
                        removed = before.difference(&after).count(),
                        started = c.started,
                        stopped = c.stopped,
                        "discovered accounts put in force"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot put the discovered accounts in force; keeping the last ones");
                        self.members = old;
                    }
                }
            }
        }
        self.snapshot.release();
    }

    /// Reads the config file again and puts it in force, or keeps the running one.
    pub(crate) async fn reload(&mut self, why: &'static str) -> Result<Changes, LoadError> {
        let result = match load_config(self.path.as_ref(), &self.known) {
            Ok(config) => self.apply(config).await,
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(c) => {
                self.gauges.succeeded(SystemTime::now());
                tracing::info!(
                    trigger = why,
                    kept = c.kept,
                    restarted = c.restarted,
                    started = c.started,
                    stopped = c.stopped,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                self.gauges.failed();
                tracing::error!(trigger = why, error = %e, "configuration reload failed; the running configuration stays in force");
            }
        }
        result
    }
}

/// A reload asked for over HTTP, answered with its outcome.
pub(crate) type Request = oneshot::Sender<Result<Changes, String>>;

/// Where the HTTP server sends reload requests.
#[derive(Debug, Clone)]
pub(crate) struct Trigger(mpsc::Sender<Request>);

impl Trigger {
    /// Asks for a reload and waits for its outcome.
    pub(crate) async fn reload(&self) -> Result<Changes, String> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(tx)
            .await
            .map_err(|_| "the exporter is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the exporter is shutting down".to_string())?
    }
}

/// Serves reloads one at a time, from SIGHUP and from the returned trigger, until the
/// returned task is dropped with the runtime.
pub(crate) fn serve(mut running: Running, mut hup: Hangups) -> Trigger {
    // Requests queue here while a reload runs; more than a few at once add nothing.
    let (tx, mut rx) = mpsc::channel::<Request>(8);
    let mut found = running.found_rx.take();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(outcome) = next_found(&mut found) => {
                    running.discovered(outcome).await;
                }
                request = rx.recv() => match request {
                    Some(reply) => {
                        let result = running.reload("http").await.map_err(|e| e.to_string());
                        let _ = reply.send(result);
                    }
                    None => break,
                },
                Some(()) = next(&mut hup) => {
                    let _ = running.reload("SIGHUP").await;
                }
            }
        }
    });
    Trigger(tx)
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

/// SIGHUP, from now on: the default action (exit) no longer applies, and a SIGHUP that
/// comes before reloads are served waits for them.
pub(crate) fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload with POST /-/reload");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn next_found(
    found: &mut Option<mpsc::Receiver<discovery::Outcome>>,
) -> Option<discovery::Outcome> {
    match found {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next(hup: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = hup {
        if let Some(()) = s.recv().await {
            return Some(());
        }
    }
    std::future::pending().await
}
