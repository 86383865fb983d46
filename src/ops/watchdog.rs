//! systemd watchdog and status line. `WATCHDOG=1` is sent only while the store is healthy
//! (the same judgement as `/readyz` and `voltd_store_healthy`), so systemd restarts a daemon
//! that is alive but can no longer store.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::ops::admin::{AdminState, store_health};
use crate::ops::systemd;

/// How often the store's health is looked at: a change shows in the status line this soon.
/// Looking costs nothing (the writer keeps the health; no database round trip).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often an unchanged status line is sent again (a healthy one for the count of events
/// stored, which is not worth a message each time it changes).
const STATUS_REFRESH: Duration = Duration::from_secs(15);

pub async fn run(state: AdminState, stored_at_start: i64, stop: CancellationToken) {
    let watchdog = systemd::watchdog_interval();
    if watchdog.is_none() && !systemd::is_supervised() {
        return;
    }
    let interval = watchdog.map_or(CHECK_INTERVAL, |w| (w / 2).min(CHECK_INTERVAL));
    let mut ticker = tokio::time::interval(interval);
    let mut last_sent: Option<(Result<(), String>, Instant)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let health = store_health(&state);
        if health.is_ok() && watchdog.is_some() {
            systemd::watchdog();
        }
        let was_healthy = last_sent.as_ref().is_none_or(|(sent, _)| sent.is_ok());
        match (&health, was_healthy) {
            (Err(reason), true) => {
                tracing::error!(reason, "Unhealthy; withholding the systemd watchdog ping");
            }
            (Ok(()), false) => tracing::info!("Healthy again; pinging the systemd watchdog"),
            _ => {}
        }
        let due = last_sent.as_ref().is_none_or(|(sent, at)| {
            let changed = match (sent, &health) {
                (Ok(()), Ok(())) => false,
                (sent, health) => sent != health,
            };
            changed || at.elapsed() >= STATUS_REFRESH
        });
        if due {
            systemd::status(&match &health {
                Ok(()) => {
                    let stored = stored_at_start.saturating_add(
                        i64::try_from(state.metrics.stored_since_start()).unwrap_or(i64::MAX),
                    );
                    format!("ready: {stored} events stored")
                }
                Err(reason) => format!("unhealthy: {reason}"),
            });
            last_sent = Some((health, Instant::now()));
        }
    }
}
