//! headroom-common: what every headroom exporter shares. An exporter implements
//! [`Collector`] (and [`AwsService`] for its SDK client) and calls [`main`];
//! scheduling, limits, caching, health and HTTP live here.
//!
//! The modules form layers, each using only those below it:
//!
//! ```text
//! lib (main)           start-up: flags, config, the running configuration, server
//! server               HTTP endpoints (/-/reload hands its request to reload)
//! reload check         the configuration in force; SIGHUP and /-/reload replace it |
//!                      --check: every collector once, a table, an exit code
//! scheduler discovery  one refresh task per (collector, target), kept across reloads |
//!                      member accounts from AWS Organizations, on an interval
//! aws                  targets, credentials, counted and rate-limited clients
//! tls auth metrics     TLS, reloaded certificates | basic auth off the async workers |
//!                      the prometheus crate: counters, rendering at refresh time
//! snapshot webconfig   the last good samples | the web config file
//! config limits cli    the config file | limit resolution, Service Quotas in bulk | flags
//! api connections ratelimit telemetry
//!                      the collector API | the accept loop: timeouts, cap, shutdown
//! ```
//!
//! `api` is the collector API, and depends on nothing else here.

mod api;
mod auth;
mod aws;
mod check;
mod cli;
mod config;
mod connections;
mod discovery;
mod limits;
// Limit resolution against the local AWS test server: it uses aws, metrics and
// snapshot, so it lives above them, not inside limits.
#[cfg(test)]
mod limits_against_test_server;
mod metrics;
mod ratelimit;
mod reload;
mod scheduler;
mod server;
mod snapshot;
mod telemetry;
#[cfg(feature = "test-util")]
pub mod testing;
mod tls;
mod webconfig;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};

pub use api::{
    error_code_label, pages, AwsService, ClientParts, ClientSource, CollectError, Collected,
    Collector, Defaults, Fact, LimitFrom, PerTarget, QuotaSelection, QuotaSpec, ResourceSelection,
    Scope, ServiceQuotas, Target, Usage, MAX_PAGES,
};
pub use async_trait::async_trait;

use crate::cli::Cli;
use crate::config::{Config, ConfigError, Known};

/// The version and git revision this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("HEADROOM_REVISION");

/// What distinguishes one exporter binary from another.
#[derive(Debug, Clone, Copy)]
pub struct ExporterInfo {
    pub name: &'static str,
    pub about: &'static str,
    pub default_listen_address: &'static str,
}

/// Why an exporter could not start (or stopped serving). `main` prints it, once.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Flags(String),
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("invalid web configuration: {0}")]
    WebConfig(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Load(#[from] reload::LoadError),
    #[error("check: {0}")]
    Check(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
}

/// The whole program of an exporter: flags, config, targets, background refresh and
/// the HTTP server, until SIGTERM or SIGINT.
pub fn main(info: ExporterInfo, collectors: Vec<Arc<dyn Collector>>) -> ExitCode {
    let cmd = Cli::command()
        .name(info.name)
        .about(info.about)
        .version(VERSION)
        .mut_arg("listen_address", |a| {
            a.required(false).default_value(info.default_listen_address)
        });
    // In --check mode every failure to start is "unknown" (3), as monitoring plugins
    // have it, not clap's 2, which means critical there.
    let checking = std::env::args_os().any(|a| a == "--check");
    let cli = match cmd
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) if checking && e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(check::UNKNOWN);
        }
        Err(e) => e.exit(),
    };
    telemetry::init(cli.log_level, cli.log_format);
    let failed = if cli.check { check::UNKNOWN } else { 1 };
    match run(info, cli, collectors) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}: {e}", info.name);
            ExitCode::from(failed)
        }
    }
}

/// The exporter, or the check; the exit code when it ends without an error.
fn run(
    info: ExporterInfo,
    cli: Cli,
    collectors: Vec<Arc<dyn Collector>>,
) -> Result<u8, StartError> {
    cli::check_telemetry_path(&cli.telemetry_path).map_err(StartError::Flags)?;
    let known: Vec<Known> = collectors.iter().map(|c| Known::of(c.as_ref())).collect();
    let config = reload::load_config(cli.config_file.as_ref(), &known)?;
    let web = match &cli.web_config_file {
        Some(path) => webconfig::WebConfig::load(path).map_err(StartError::WebConfig)?,
        None => webconfig::WebConfig::default(),
    };
    // The certificate and key are read now, so that --config.check checks them too.
    let tls = match (web.tls(), &cli.web_config_file) {
        (Some(settings), Some(path)) => Some(
            tls::ServerTls::new(settings.clone())
                .map_err(|e| StartError::WebConfig(format!("{}: {e}", path.display())))?,
        ),
        _ => None,
    };
    if cli.config_check {
        println!("{}: configuration is valid", info.name);
        return Ok(0);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    if cli.check {
        let report = runtime
            .block_on(check::run(&config, &collectors))
            .map_err(StartError::Check)?;
        let mut out = std::io::stdout().lock();
        check::print(&report, cli.output, &mut out)
            .map_err(|e| StartError::Check(e.to_string()))?;
        return Ok(report.exit_code);
    }
    let result = runtime.block_on(serve(info, cli, config, web, tls, collectors));
    // Tasks still running (refreshes, connections cut at the shutdown deadline) are
    // dropped; blocking ones (a bcrypt verification) get a moment to return.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map(|()| 0)
}

async fn serve(
    info: ExporterInfo,
    cli: Cli,
    config: Config,
    web: webconfig::WebConfig,
    tls: Option<tls::ServerTls>,
    collectors: Vec<Arc<dyn Collector>>,
) -> Result<(), StartError> {
    // Before anything slow, so that an early SIGHUP does not stop the process.
    let hangups = reload::hangups();
    let metrics = metrics::Metrics::new(VERSION, REVISION)?;
    let aws = aws::AwsContext::new(metrics.aws.clone());
    let snapshot = Arc::new(snapshot::Snapshot::default());
    let collector_count = collectors.len();
    let (running, tasks) = reload::Running::start(
        cli.config_file.clone(),
        config,
        collectors,
        aws,
        snapshot.clone(),
        &metrics,
    )
    .await?;
    tracing::info!(
        exporter = info.name,
        version = VERSION,
        revision = REVISION,
        tasks,
        collectors = collector_count,
        "starting"
    );
    let reload = reload::serve(running, hangups);
    let address = cli::listen_socket(&cli.listen_address);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| StartError::Listen {
            address: address.clone(),
            source,
        })?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(address = %local, tls = tls.is_some(), "listening");
    }
    let state = server::AppState {
        name: info.name,
        version: VERSION,
        telemetry_path: cli.telemetry_path.clone(),
        snapshot,
        metrics,
        auth: Arc::new(auth::BasicAuth::new(&web)),
        reload: Some(reload),
    };
    let app = server::app(state);
    match tls {
        None => connections::serve(listener, app, shutdown_signal()).await,
        Some(tls) => {
            connections::serve(tls::TlsListener::new(listener, tls), app, shutdown_signal()).await
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
