//! Forwarding stored events to HTTP endpoints, commands and message brokers.
//!
//! The delivery task reads the store, never the ingest path: it follows the events table (a
//! cursor per sink, in the database; see [`crate::store::Outbox`]), attempts each batch of
//! new events, then writes one delivery row per (event, sink) in the transaction that moves
//! the cursors past the batch; failed deliveries are retried from their rows. Delivery is at
//! least once and unordered; pending deliveries survive restarts. Of several instances
//! sharing a PostgreSQL store, only the one holding the forwarding role runs the task.

mod amqp;
mod batch;
mod command;
mod dispatch;
mod files;
mod http;
mod nats;
mod redis;
mod signing;
mod sink;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

pub use files::{SinkFileError, check_files};
pub use signing::sign;
pub use sink::{Attempt, DeliveryError, Sink};

use crate::backoff::Backoff;
use crate::config::ForwardSettings;
use crate::error_chain::ErrorChain;
use crate::event::StoredEvent;
use crate::log_limit::LogLimiter;
use crate::ops::metrics::Metrics;
use crate::store::{DeliveryOutcome, EventHeader, Role, Store, StoreError};

const STORE_WARNING_INTERVAL: Duration = Duration::from_secs(30);
/// How often an instance standing by tries to take the forwarding role.
const ROLE_RETRY: Duration = Duration::from_secs(3);

impl ForwardSettings {
    pub fn wants(&self, event: &EventHeader) -> bool {
        self.filter.matches(
            event.event_type.as_deref(),
            event.direction.as_deref(),
            event.from.as_deref(),
            event.to.as_deref(),
        )
    }

    /// [`Self::wants`], of an event read whole.
    pub fn wants_event(&self, event: &StoredEvent) -> bool {
        let fields = &event.fields;
        self.filter.matches(
            fields.event_type.as_deref(),
            fields.direction.as_deref(),
            fields.from.as_deref(),
            fields.to.as_deref(),
        )
    }
}

/// Whether `sink` (by name, among `sinks`) wants `event`.
pub fn sink_wants(sinks: &[ForwardSettings], sink: &str, event: &EventHeader) -> bool {
    sinks
        .iter()
        .find(|s| s.name == sink)
        .is_some_and(|s| s.wants(event))
}

/// Give each sink seen for the first time a cursor at the newest stored event, before the
/// listener takes events: a new sink gets what arrives from now on, and history only on
/// request (`voltd events replay`).
pub async fn prepare(store: &Store, sinks: &[ForwardSettings]) -> Result<(), StoreError> {
    let names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
    store.start_forward_cursors(&names).await
}

/// The forwarding thread's nice value. Receiving comes first: an event is acknowledged only
/// once stored, while forwarding can always catch up. When both want the CPU, a thread at
/// nice 10 gets about a tenth of the share of one at 0; when the CPU is free, it runs at full
/// speed.
const FORWARD_NICE: i32 = 10;

/// [`run`] on a thread of its own, with its own runtime and a lower CPU priority
/// ([`FORWARD_NICE`]), so delivery work never competes with the event writer and the HTTP
/// workers for their thread, and yields the CPU to them. The returned future ends when the
/// task has stopped.
pub fn run_on_own_thread(
    store: Store,
    sinks: Vec<ForwardSettings>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send {
    let (stopped, on_stop) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("voltd-forward".to_owned())
        .spawn(move || {
            // On Linux the nice value is the calling thread's, and threads it starts (the
            // outbox's SQLite worker) inherit it. Without it forwarding only competes harder.
            if let Err(e) = rustix::process::setpriority_process(None, FORWARD_NICE) {
                tracing::debug!(error = %e, "Cannot lower the forwarding thread's priority");
            }
            actix_web::rt::System::new().block_on(run(store, sinks, metrics, stop));
            drop(stopped);
        });
    if let Err(e) = &spawned {
        tracing::error!(error = %ErrorChain(e), "Cannot start the forwarding thread; events are not forwarded");
    }
    async move {
        let _ = on_stop.await;
    }
}

/// Run until `stop`. With several instances on one PostgreSQL store only the one holding
/// the forwarding role works through the outbox; the others stand by and take over within
/// `ROLE_RETRY` when it stops. (SQLite has one instance, which always holds the role.)
pub async fn run(
    store: Store,
    sinks: Vec<ForwardSettings>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    // awc clients are tied to this thread, so the sinks are shared with `Rc`.
    let sinks: Vec<Rc<Sink>> = sinks.into_iter().map(|s| Rc::new(Sink::new(s))).collect();
    // A failing database would otherwise be reported on every poll.
    let store_warnings = LogLimiter::new(STORE_WARNING_INTERVAL);
    let mut standing_by = false;
    while !stop.is_cancelled() {
        match store.try_take_role(Role::Forwarding).await {
            Ok(Some(role)) => {
                if standing_by {
                    tracing::info!(
                        "The instance that forwarded events has stopped; this one takes over"
                    );
                    standing_by = false;
                }
                dispatch::forward(&store, &sinks, &metrics, &store_warnings, role, &stop).await;
            }
            Ok(None) => {
                if !standing_by {
                    tracing::info!(
                        "Another instance forwards stored events; this one takes over if it stops"
                    );
                    standing_by = true;
                }
            }
            Err(e) => {
                if let Some(suppressed) = store_warnings.permit() {
                    tracing::warn!(error = %ErrorChain(&e), suppressed, "Cannot take the forwarding role; will retry");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(ROLE_RETRY) => {}
        }
    }
}

/// Whether the outbox's own connection is gone (a PostgreSQL server restarted, or the
/// session was ended), so that only a new one can go on. The role is given up with it and
/// taken again, by this instance or another.
fn lost_connection(error: &StoreError) -> bool {
    matches!(error, StoreError::Query(sqlx::Error::Io(_)))
}

/// What a finished attempt means for its delivery of `event` (`delivery`, the row, when it
/// has one yet); logs and counts it.
fn decide(
    metrics: &Metrics,
    sink: &ForwardSettings,
    event: i64,
    delivery: Option<i64>,
    attempts_before: u32,
    attempt: Attempt,
) -> DeliveryOutcome {
    let attempts = attempts_before + 1;
    match attempt {
        Attempt::Delivered => {
            metrics.delivery_attempt(&sink.name, true);
            metrics.delivery_finished(&sink.name, "delivered");
            tracing::debug!(sink = sink.name, event, delivery, attempts, "Delivered");
            DeliveryOutcome::Delivered
        }
        Attempt::Failed(failure) if attempts >= sink.retry.max_attempts => {
            let error = failure.last_error(&sink.name);
            metrics.delivery_attempt(&sink.name, false);
            metrics.delivery_finished(&sink.name, "dead");
            tracing::warn!(
                sink = sink.name,
                event,
                delivery,
                attempts,
                error,
                "Delivery abandoned after {attempts} attempts; `voltd deliveries list --status dead` \
                 lists it and `voltd events replay` can send it again"
            );
            DeliveryOutcome::Dead { error }
        }
        Attempt::Failed(failure) => {
            let error = failure.last_error(&sink.name);
            metrics.delivery_attempt(&sink.name, false);
            let backoff = Backoff {
                initial: sink.retry.initial,
                max: sink.retry.max,
            };
            let wait = backoff.delay(attempts);
            tracing::info!(
                sink = sink.name,
                event,
                delivery,
                attempts,
                error,
                retry_in_ms = wait.as_millis() as u64,
                "Delivery failed; will retry"
            );
            let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
            DeliveryOutcome::Retry { at, error }
        }
    }
}

async fn sample_backlog(store: &Store, sinks: &[&str], metrics: &Metrics) {
    match store.forward_backlog(sinks).await {
        Ok(backlog) => {
            let age = backlog.oldest.map_or(0.0, |t| {
                (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            metrics.set_delivery_backlog(backlog.pending, age);
        }
        Err(e) => tracing::debug!(error = %ErrorChain(&e), "Cannot sample the delivery backlog"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_metrics_are_rendered() {
        let metrics = Metrics::new();
        metrics.delivery_attempt("crm", false);
        metrics.delivery_attempt("crm", true);
        metrics.delivery_finished("crm", "delivered");
        metrics.set_delivery_backlog(4, 2.5);
        let text = metrics.render(0, crate::volt::registration::RegistrationState::Pending);
        for line in [
            r#"voltd_forward_attempts_total{sink="crm",outcome="failure"} 1"#,
            r#"voltd_forward_deliveries_total{sink="crm",outcome="delivered"} 1"#,
            "voltd_forward_backlog 4",
            "voltd_forward_oldest_pending_seconds 2.5",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
