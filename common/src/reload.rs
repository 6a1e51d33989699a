//! The running configuration and its reloads: SIGHUP and `POST /-/reload` read the
//! config file again; a valid one replaces targets and settings (tasks whose settings
//! did not change keep running, and every entry that still exists keeps its samples),
//! an invalid one is refused and logged, and the running one goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use crate::api::Collector;
use crate::aws::{self, AwsContext};
use crate::config::{Config, ConfigError, Known};
use crate::metrics::ReloadGauges;
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

/// The configuration in force and the refresh tasks it runs.
pub(crate) struct Running {
    path: Option<PathBuf>,
    known: Vec<Known>,
    collectors: Vec<Arc<dyn Collector>>,
    aws: Arc<AwsContext>,
    snapshot: Arc<Snapshot>,
    gauges: ReloadGauges,
    tasks: Tasks,
}

impl Running {
    /// Puts `config` (already loaded from `path`) in force: its targets are set up
    /// (which may call STS) and its tasks started.
    pub(crate) async fn start(
        path: Option<PathBuf>,
        config: Config,
        collectors: Vec<Arc<dyn Collector>>,
        aws: Arc<AwsContext>,
        snapshot: Arc<Snapshot>,
        gauges: ReloadGauges,
    ) -> Result<(Self, usize), LoadError> {
        let known = collectors.iter().map(|c| Known::of(c.as_ref())).collect();
        let mut running = Running {
            path,
            known,
            collectors,
            aws,
            snapshot,
            gauges,
            tasks: Tasks::default(),
        };
        let changes = running.apply(&config).await?;
        running.gauges.succeeded(SystemTime::now());
        Ok((running, changes.started))
    }

    async fn apply(&mut self, config: &Config) -> Result<Changes, LoadError> {
        let targets = aws::build_targets(config, &self.aws).await?;
        let jobs = scheduler::plan(&self.collectors, &targets, config, &self.aws);
        Ok(self.tasks.apply(jobs, &self.snapshot, &self.aws).await)
    }

    /// Reads the config file again and puts it in force, or keeps the running one.
    pub(crate) async fn reload(&mut self, why: &'static str) -> Result<Changes, LoadError> {
        let result = match load_config(self.path.as_ref(), &self.known) {
            Ok(config) => self.apply(&config).await,
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
    tokio::spawn(async move {
        loop {
            tokio::select! {
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

async fn next(hup: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = hup {
        if let Some(()) = s.recv().await {
            return Some(());
        }
    }
    std::future::pending().await
}
