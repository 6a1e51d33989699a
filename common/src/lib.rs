//! headroom-common: what every headroom exporter shares. An exporter implements
//! [`Collector`] and calls [`main`]; scheduling, limits, caching, health and HTTP live
//! here.

pub mod aws;
pub mod cli;
pub mod collector;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod ratelimit;
pub mod scheduler;
pub mod server;
pub mod snapshot;
pub mod telemetry;
pub mod webconfig;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};

pub use async_trait::async_trait;
pub use aws::{ServiceClient, Target};
pub use collector::{CollectError, Collected, Collector, Fact, QuotaSpec, Scope, Usage};

use crate::cli::Cli;
use crate::config::Config;

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
    let cli = match Cli::from_arg_matches(&cmd.get_matches()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    telemetry::init(cli.log_level, cli.log_format);
    if let Err(e) = cli::check_telemetry_path(&cli.telemetry_path) {
        eprintln!("{}: {e}", info.name);
        return ExitCode::from(1);
    }
    let known: Vec<config::Known<'_>> = collectors
        .iter()
        .map(|c| config::Known {
            name: c.name(),
            quotas: c.quotas(),
            defaults: c.defaults(),
        })
        .collect();
    let config = match &cli.config_file {
        Some(path) => match Config::load(path, &known) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: invalid configuration: {e}", info.name);
                return ExitCode::from(1);
            }
        },
        None => match Config::parse("", &known) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: invalid built-in defaults: {e}", info.name);
                return ExitCode::from(1);
            }
        },
    };
    let web = match &cli.web_config_file {
        Some(path) => match webconfig::WebConfig::load(path) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("{}: invalid web configuration: {e}", info.name);
                return ExitCode::from(1);
            }
        },
        None => webconfig::WebConfig::default(),
    };
    if cli.config_check {
        println!("{}: configuration is valid", info.name);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", info.name);
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(info, cli, config, web, collectors)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("{}: {e:#}", info.name);
            ExitCode::from(1)
        }
    }
}

async fn serve(
    info: ExporterInfo,
    cli: Cli,
    config: Config,
    web: webconfig::WebConfig,
    collectors: Vec<Arc<dyn Collector>>,
) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::new(VERSION, REVISION)?;
    let aws = aws::AwsContext::new(metrics.aws.clone());
    let targets = aws::build_targets(&config, &aws).await?;
    let (entries, jobs) = scheduler::plan(&collectors, &targets, &config, &aws);
    tracing::info!(
        exporter = info.name,
        version = VERSION,
        revision = REVISION,
        targets = targets.len(),
        collectors = collectors.len(),
        "starting"
    );
    let snapshot = Arc::new(snapshot::Snapshot::new(entries));
    let _refresh = scheduler::spawn(jobs, snapshot.clone());
    let addr = cli::listen_socket(&cli.listen_address);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let state = server::AppState {
        name: info.name,
        version: VERSION,
        telemetry_path: cli.telemetry_path.clone(),
        snapshot,
        metrics,
        web: Arc::new(web),
    };
    axum::serve(listener, server::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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
