//! sd_notify messages. Each is a no-op when not started by systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;

use crate::error_chain::ErrorChain;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %ErrorChain(&e), "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Ask systemd for more start-up time while registration retries.
pub fn extend_start_timeout(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd expects pings within, when `WatchdogSec=` is set.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Whether systemd (or anything speaking its protocol) listens for notifications.
pub fn is_supervised() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}
