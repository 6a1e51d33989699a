//! Command-line flags, following the Prometheus exporter conventions.

use std::path::PathBuf;

use clap::Parser;

use crate::telemetry::{LogFormat, LogLevel};

#[derive(Debug, Parser)]
pub(crate) struct Cli {
    /// YAML configuration file (accounts, regions, collector settings). Without one,
    /// the default AWS credentials and region are used with default settings.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Validate the configuration file (and the web configuration file) and exit.
    #[arg(long = "config.check")]
    pub config_check: bool,
    /// Run every collector once for every target, print the quotas sorted by
    /// utilisation and exit: 0 all under their warning threshold, 1 warning, 2 critical,
    /// 3 a collection failed (or the check could not start). Serves nothing.
    #[arg(long = "check")]
    pub check: bool,
    /// With --check: how to print the result.
    #[arg(
        long = "output",
        value_enum,
        default_value = "table",
        requires = "check"
    )]
    pub output: crate::check::Output,
    /// Address to listen on: host:port, or :port for every interface.
    #[arg(long = "web.listen-address", value_name = "ADDRESS")]
    pub listen_address: String,
    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,
    /// Exporter-toolkit web configuration file: basic_auth_users, tls_server_config (TLS,
    /// mutual TLS; certificates re-read when they change).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Only log messages at this level or above.
    #[arg(long = "log.level", value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Log format.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,
}

/// `:9100` means every interface; anything else is host:port.
pub(crate) fn listen_socket(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    }
}

/// The metrics path must be an absolute path of its own, not one the probes use.
pub(crate) fn check_telemetry_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.len() < 2 {
        return Err(format!(
            "--web.telemetry-path {path:?}: must start with / and not be / itself"
        ));
    }
    if matches!(path, "/healthz" | "/readyz") || path.contains(['{', '}', '*', ' ']) {
        return Err(format!(
            "--web.telemetry-path {path:?}: reserved or not a plain path"
        ));
    }
    Ok(())
}
