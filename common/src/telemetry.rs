//! Logging: text (logfmt-like) or JSON on stderr, at the level of `--log.level`.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Installs the global subscriber. The AWS SDK's own logs are kept at `warn` unless the
/// level is `debug`, and the SDK never logs credentials at these levels.
pub(crate) fn init(level: LogLevel, format: LogFormat) {
    let sdk_level = if level == LogLevel::Debug {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::new(format!(
        "{lvl},aws_config={sdk},aws_smithy_runtime={sdk},aws_runtime={sdk},hyper={sdk},h2={sdk},rustls={sdk}",
        lvl = level.as_str(),
        sdk = sdk_level
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Logfmt => builder.with_ansi(false).try_init(),
    };
    if let Err(e) = result {
        eprintln!("cannot set up logging: {e}");
    }
}
