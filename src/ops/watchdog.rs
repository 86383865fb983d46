//! systemd watchdog and status line. `WATCHDOG=1` is sent only while the store answers and
//! the writer runs, so systemd restarts a daemon that is alive but can no longer store.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ops::admin::{AdminState, store_health};
use crate::ops::systemd;

/// How often the status line is refreshed when the watchdog is off.
const STATUS_INTERVAL: Duration = Duration::from_secs(15);

pub async fn run(state: AdminState, stored_at_start: i64, stop: CancellationToken) {
    let watchdog = systemd::watchdog_interval();
    if watchdog.is_none() && !systemd::is_supervised() {
        return;
    }
    let interval = watchdog.map_or(STATUS_INTERVAL, |w| (w / 2).min(STATUS_INTERVAL));
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match store_health(&state).await {
            Ok(()) => {
                let stored = stored_at_start.saturating_add(
                    i64::try_from(state.metrics.stored_since_start()).unwrap_or(i64::MAX),
                );
                systemd::status(&format!("ready: {stored} events stored"));
                if watchdog.is_some() {
                    systemd::watchdog();
                }
            }
            Err(reason) => {
                tracing::error!(reason, "Unhealthy; withholding the systemd watchdog ping");
                systemd::status(&format!("unhealthy: {reason}"));
            }
        }
    }
}
