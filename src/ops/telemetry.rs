//! Logging: one subscriber for the whole process, text for people or JSON for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber. `RUST_LOG`, when set, wins over `[log] level`.
/// Logs go to stderr so that command output on stdout stays machine-readable.
pub fn init(level: &str, format: LogFormat) {
    // PostgreSQL's notices ("relation ... already exists, skipping" on every start) are not
    // news to an operator.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sqlx::postgres::notice=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests start several apps in one process) keeps the first subscriber.
    drop(result);
}
