//! Logging: one subscriber for the whole process, text for people or JSON for log shippers.
//!
//! Built in two steps, as a filter, a format and a sink made into a subscriber and then
//! installed, so that tests can send the same logs to their own output (`TEST_LOG`).

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Install the global subscriber. `RUST_LOG`, when set, wins over `[log] level`.
/// Logs go to stderr so that command output on stdout stays machine-readable.
pub fn init(level: &str, format: LogFormat) {
    let on_terminal = std::io::stderr().is_terminal();
    init_subscriber(get_subscriber(
        filter(level),
        format,
        std::io::stderr,
        on_terminal,
    ));
}

/// What to log: `RUST_LOG` when set, otherwise everything at `level` and above.
pub fn filter(level: &str) -> EnvFilter {
    // PostgreSQL's notices ("relation ... already exists, skipping" on every start) are not
    // news to an operator.
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sqlx::postgres::notice=warn")))
}

/// A subscriber writing what `filter` lets through, in `format`, to `sink`; coloured when
/// `ansi` (only a terminal shows colours rather than escape codes).
pub fn get_subscriber<Sink>(
    filter: EnvFilter,
    format: LogFormat,
    sink: Sink,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    Sink: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

/// Make `subscriber` the process's subscriber, also for the `log` records of libraries.
pub fn init_subscriber(subscriber: impl Subscriber + Send + Sync + 'static) {
    // A second init (tests start several apps in one process) keeps the first subscriber.
    drop(subscriber.try_init());
}
