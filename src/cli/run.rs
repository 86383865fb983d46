//! `voltd run` and `voltd register`.

use anyhow::Context;
use secrecy::SecretString;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::ops::{log_buffer, telemetry};
use crate::startup::Application;
use crate::volt::registration::register_and_record;

/// Run the daemon with the Volt API `token` (read by the caller before anything starts).
pub async fn daemon(settings: Settings, token: Option<SecretString>) -> anyhow::Result<()> {
    let library_log_limit = telemetry::init(settings.log.level.as_str(), settings.log.format);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %settings.source.display(),
        storage = crate::config::redacted_url(&settings.storage.url),
        "Starting voltd"
    );
    // Handlers go in before anything else so that no SIGTERM can meet the default action
    // (terminate at once) while the store is being opened.
    let term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    let stop = CancellationToken::new();
    actix_web::rt::spawn(stop_on_signal(term, int, stop.clone()));
    actix_web::rt::spawn(telemetry::report_held_back(library_log_limit, stop.clone()));
    let app = Application::build(settings, token).await?;
    app.run_until_stopped(stop).await
}

/// First SIGTERM/SIGINT: graceful stop. A second one: exit at once.
async fn stop_on_signal(mut term: Signal, mut int: Signal, stop: CancellationToken) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    stop.cancel();
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::warn!("Second signal received; exiting without waiting for in-flight requests");
    log_buffer::flush();
    std::process::exit(1);
}

/// Call `registerWebhook` for `server.public_url`, print the result, record it.
pub async fn register_once(settings: Settings, token: SecretString) -> anyhow::Result<()> {
    // One call to Volt: too short for held-back library lines to need reporting.
    telemetry::init(settings.log.level.as_str(), settings.log.format);
    let store = super::open_store(&settings).await?;
    let result = register_and_record(&settings, &store, token, |_, _, _| {}).await;
    store.close().await;
    let webhook = result?;
    super::print_line(format_args!(
        "Registered webhook {} for {}",
        webhook.id, webhook.url
    ))
}
