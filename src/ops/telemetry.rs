//! Logging: one subscriber for the whole process, text for people or JSON for log shippers.
//!
//! Built in two steps, as a filter, a format and a sink made into a subscriber and then
//! installed, so that tests can send the same logs to their own output (`TEST_LOG`).
//!
//! voltd limits its own lines that a client can cause. The libraries under it log too, and
//! some of their warnings and errors follow from what a peer sends (actix-http logs each
//! malformed request at ERROR; actix-server each failed accept): those are let through once
//! per target and level every 10 s, and [`report_held_back`] says how many were held back.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use super::log_buffer::{self, BufferedStderr};
use super::log_fields::PlainFields;
use super::log_time::UtcMicros;
use crate::config::LogFormat;
use crate::log_limit::LogLimiterByKind;

/// Lines of one library target and level let through per interval.
const LIBRARY_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Install the global subscriber. `RUST_LOG`, when set, wins over `[log] level`.
/// Logs go to stderr so that command output on stdout stays machine-readable, written in
/// batches ([`BufferedStderr`]): whatever ends the process first calls [`log_buffer::flush`]
/// (a panic does so here).
pub fn init(level: &str, format: LogFormat) -> LibraryLogLimit {
    let on_terminal = std::io::stderr().is_terminal();
    let limit = LibraryLogLimit::default();
    init_subscriber(get_subscriber(
        filter(level),
        format,
        BufferedStderr::install(),
        on_terminal,
        limit.clone(),
    ));
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        log_buffer::flush();
        report_panic(panic);
    }));
    limit
}

/// What to log: `RUST_LOG` when set, otherwise everything at `level` and above.
pub fn filter(level: &str) -> EnvFilter {
    // PostgreSQL's notices ("relation ... already exists, skipping" on every start) are not
    // news to an operator.
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sqlx::postgres::notice=warn")))
}

/// A subscriber writing what `filter` lets through, in `format`, to `sink`; coloured when
/// `ansi` (only a terminal shows colours rather than escape codes); the libraries' warnings
/// and errors within `limit`.
pub fn get_subscriber<Sink>(
    filter: EnvFilter,
    format: LogFormat,
    sink: Sink,
    ansi: bool,
    limit: LibraryLogLimit,
) -> Box<dyn Subscriber + Send + Sync>
where
    Sink: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_timer(UtcMicros)
        .with_env_filter(filter)
        .with_writer(sink)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => Box::new(builder.fmt_fields(PlainFields).finish().with(limit)),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish().with(limit)),
    }
}

/// Make `subscriber` the process's subscriber, also for the `log` records of libraries.
pub fn init_subscriber(subscriber: impl Subscriber + Send + Sync + 'static) {
    // A second init (tests start several apps in one process) keeps the first subscriber.
    drop(subscriber.try_init());
}

/// The limit on the libraries' warnings and errors: one line per target and level per 10 s.
/// voltd's own lines pass: those a client can cause have limits of their own, with their
/// kind in the message. Cheap to clone.
///
/// Rejected: turning the libraries' targets off, which would also hide what only they can
/// say (a worker that died, a socket that cannot be registered).
#[derive(Clone)]
pub struct LibraryLogLimit(Arc<LogLimiterByKind<(String, Level)>>);

impl Default for LibraryLogLimit {
    fn default() -> Self {
        Self(Arc::new(LogLimiterByKind::new(LIBRARY_LOG_INTERVAL)))
    }
}

impl<S: Subscriber> Layer<S> for LibraryLogLimit {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        let level = *metadata.level();
        let target = metadata.target();
        if level > Level::WARN || target == "voltd" || target.starts_with("voltd::") {
            return true;
        }
        self.0.permit((target.to_owned(), level)).is_some()
    }
}

/// Every 10 s until `stop`, one line for each library target and level whose lines were
/// held back, with how many.
pub async fn report_held_back(limit: LibraryLogLimit, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(LIBRARY_LOG_INTERVAL);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for ((target, level), held_back) in limit.0.take_held_back() {
            tracing::warn!(
                library = %target,
                library_level = %level,
                held_back,
                "Held back {held_back} similar log lines of {target} in the last {} s",
                LIBRARY_LOG_INTERVAL.as_secs()
            );
        }
    }
}
