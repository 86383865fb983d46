//! Forwarding stored events to HTTP endpoints, commands and message brokers.
//!
//! The delivery task reads the store, never the ingest path: it follows the events table (a
//! cursor per sink, in the database; see [`crate::store::Outbox`]), queues one delivery row
//! per (event, sink) in the transaction that moves the cursor, then works through due
//! deliveries with retries. Delivery is at least once and unordered; pending deliveries
//! survive restarts. Of several instances sharing a PostgreSQL store, only the one holding
//! the forwarding role runs the task.

mod amqp;
mod command;
mod http;
mod nats;
mod redis;
mod signing;
mod sink;

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use signing::sign;
pub use sink::{Attempt, DeliveryError, Sink};

use crate::backoff::Backoff;
use crate::config::ForwardSettings;
use crate::error_chain::ErrorChain;
use crate::event::StoredEvent;
use crate::log_limit::LogLimiter;
use crate::ops::metrics::Metrics;
use crate::store::{DeliveryOutcome, EventHeader, Outbox, Role, RoleLock, Store, StoreError};

/// How often the store is checked for new events and due retries.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Events looked at in one outbox transaction. A full batch is followed by another at once,
/// up to [`QUEUE_ROUNDS`] of them, so that queueing keeps up with any ingest rate rather
/// than being capped at one batch per poll (500 per 200 ms capped it at 2,500 events/s).
const QUEUE_BATCH: u32 = 2_000;
/// At most this many batches per poll, so that completions are recorded in between.
const QUEUE_ROUNDS: usize = 10;
const BACKLOG_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
const STORE_WARNING_INTERVAL: Duration = Duration::from_secs(30);
/// How often an instance standing by tries to take the forwarding role, and how often the
/// forwarding instance checks that it still holds it.
const ROLE_RETRY: Duration = Duration::from_secs(3);
/// After an attempt finishes, others finishing within this window share its commit.
const RECORD_WINDOW: Duration = Duration::from_millis(25);

impl ForwardSettings {
    pub fn wants(&self, event: &EventHeader) -> bool {
        self.filter.matches(
            event.event_type.as_deref(),
            event.direction.as_deref(),
            event.from.as_deref(),
            event.to.as_deref(),
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

/// A delivery being attempted.
#[derive(Clone, Copy)]
struct Started {
    delivery: i64,
    sink: usize,
    attempts_before: u32,
}

/// Give each sink seen for the first time a cursor at the newest stored event, before the
/// listener takes events: a new sink gets what arrives from now on, and history only on
/// request (`voltd events replay`).
pub async fn prepare(store: &Store, sinks: &[ForwardSettings]) -> Result<(), StoreError> {
    let names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
    store.start_forward_cursors(&names).await
}

/// [`run`] on a thread of its own, with its own runtime, so delivery work never competes
/// with the event writer and the HTTP workers for their thread. The returned future ends when
/// the task has stopped.
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
                forward(&store, &sinks, &metrics, &store_warnings, role, &stop).await;
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

/// Queue what has been stored since the last poll: batch after batch while they come full.
async fn queue_new_events(
    outbox: &mut Outbox,
    sinks: &[Rc<Sink>],
    names: &[&str],
) -> Result<(), StoreError> {
    for _ in 0..QUEUE_ROUNDS {
        let round = outbox
            .queue_new_events(names, QUEUE_BATCH, |sink, event| {
                sinks
                    .iter()
                    .find(|s| s.settings.name == sink)
                    .is_some_and(|s| s.settings.wants(event))
            })
            .await?;
        if round.looked_at < QUEUE_BATCH as usize {
            break;
        }
    }
    Ok(())
}

/// The forwarding instance's work: queue new events, deliver due ones within each sink's
/// concurrency, record every outcome; until `stop`, or until the role or the outbox's
/// connection is lost. Attempts still running then are abandoned and stay pending.
async fn forward(
    store: &Store,
    sinks: &[Rc<Sink>],
    metrics: &Metrics,
    store_warnings: &LogLimiter,
    mut role: RoleLock,
    stop: &CancellationToken,
) {
    let names: Vec<&str> = sinks.iter().map(|s| s.settings.name.as_str()).collect();
    let mut in_flight_per_sink = vec![0usize; sinks.len()];
    let mut in_flight: HashSet<i64> = HashSet::new();
    let mut attempts: JoinSet<Attempt> = JoinSet::new();
    let mut started: HashMap<tokio::task::Id, Started> = HashMap::new();
    let mut last_queued: Option<Instant> = None;
    let mut last_sample: Option<Instant> = None;
    let mut last_role_check = Instant::now();
    let mut outbox = match store.open_outbox().await {
        Ok(outbox) => outbox,
        Err(e) => {
            if let Some(suppressed) = store_warnings.permit() {
                tracing::warn!(error = %ErrorChain(&e), suppressed, "Cannot open the store for forwarding; will retry");
            }
            return;
        }
    };
    tracing::info!(sinks = ?names, "Forwarding stored events");
    while !stop.is_cancelled() {
        if last_role_check.elapsed() >= ROLE_RETRY {
            last_role_check = Instant::now();
            if let Err(e) = role.check().await {
                tracing::warn!(
                    error = %ErrorChain(&e),
                    "Lost the forwarding role with its database session; forwarding stops \
                     until this instance can take it again"
                );
                break;
            }
        }
        // Completions wake the loop often; new events are looked for at the poll rate only.
        if last_queued.is_none_or(|at| at.elapsed() >= POLL_INTERVAL) {
            last_queued = Some(Instant::now());
            if let Err(e) = queue_new_events(&mut outbox, sinks, &names).await {
                if lost_connection(&e) {
                    tracing::warn!(error = %ErrorChain(&e), "Lost the forwarding database connection; reconnecting");
                    break;
                }
                if let Some(suppressed) = store_warnings.permit() {
                    tracing::warn!(error = %ErrorChain(&e), suppressed, "Cannot queue new events for forwarding; will retry");
                }
            }
        }
        for (index, sink) in sinks.iter().enumerate() {
            let free = sink.settings.max_concurrency - in_flight_per_sink[index];
            if free == 0 {
                continue;
            }
            let limit = u32::try_from(free + in_flight_per_sink[index]).unwrap_or(u32::MAX);
            let due = match store
                .due_deliveries(&sink.settings.name, Utc::now(), limit)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    if let Some(suppressed) = store_warnings.permit() {
                        tracing::warn!(error = %ErrorChain(&e), suppressed, "Cannot read due deliveries; will retry");
                    }
                    break;
                }
            };
            let startable: Vec<_> = due
                .into_iter()
                .filter(|d| !in_flight.contains(&d.id))
                .take(free)
                .collect();
            // One query for the whole batch's events, not one per attempt. When it fails, the
            // deliveries stay due and are started on a later round, no attempt counted.
            let event_ids: Vec<i64> = startable.iter().map(|d| d.event_id).collect();
            let events: HashMap<i64, Rc<StoredEvent>> = match store.events_by_id(&event_ids).await {
                Ok(events) => events.into_iter().map(|e| (e.id, Rc::new(e))).collect(),
                Err(e) => {
                    if let Some(suppressed) = store_warnings.permit() {
                        tracing::warn!(error = %ErrorChain(&e), suppressed, "Cannot read the events to deliver; will retry");
                    }
                    break;
                }
            };
            for delivery in startable {
                in_flight.insert(delivery.id);
                in_flight_per_sink[index] += 1;
                let sink = sink.clone();
                // A replay may queue one event twice, so events are shared, not moved.
                let event = events.get(&delivery.event_id).cloned();
                let task = attempts.spawn_local(async move {
                    match event {
                        Some(event) => sink.deliver(&event).await,
                        None => Attempt::Failed(DeliveryError::EventGone),
                    }
                });
                started.insert(
                    task.id(),
                    Started {
                        delivery: delivery.id,
                        sink: index,
                        attempts_before: delivery.attempts,
                    },
                );
            }
        }
        if last_sample.is_none_or(|at| at.elapsed() >= BACKLOG_SAMPLE_INTERVAL) {
            last_sample = Some(Instant::now());
            sample_backlog(store, metrics).await;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            Some(joined) = attempts.join_next_with_id(), if !attempts.is_empty() => {
                let mut finished = vec![joined];
                let window = tokio::time::sleep(RECORD_WINDOW);
                tokio::pin!(window);
                while !attempts.is_empty() {
                    tokio::select! {
                        Some(joined) = attempts.join_next_with_id() => finished.push(joined),
                        () = &mut window => break,
                    }
                }
                let mut outcomes = Vec::with_capacity(finished.len());
                for joined in finished {
                    let (id, attempt) = match joined {
                        Ok((id, attempt)) => (id, attempt),
                        Err(e) => (e.id(), Attempt::Failed(DeliveryError::Aborted(e))),
                    };
                    let Some(attempt_of) = started.remove(&id) else { continue };
                    let settings = &sinks[attempt_of.sink].settings;
                    outcomes.push((attempt_of, decide(metrics, settings, attempt_of, attempt)));
                }
                let rows: Vec<(i64, DeliveryOutcome)> =
                    outcomes.iter().map(|(s, o)| (s.delivery, o.clone())).collect();
                let recorded = outbox.record_outcomes(&rows).await;
                // Still pending in the store, so they are attempted again.
                if let Err(e) = &recorded
                    && !lost_connection(e)
                    && let Some(suppressed) = store_warnings.permit()
                {
                    tracing::warn!(error = %ErrorChain(e), suppressed, "Cannot record delivery outcomes; they will be retried");
                }
                // Only now may the due query return them again.
                for (attempt_of, _) in outcomes {
                    in_flight.remove(&attempt_of.delivery);
                    in_flight_per_sink[attempt_of.sink] -= 1;
                }
                if let Err(e) = recorded
                    && lost_connection(&e)
                {
                    tracing::warn!(error = %ErrorChain(&e), "Lost the forwarding database connection; reconnecting");
                    break;
                }
            }
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
    attempts.shutdown().await;
}

/// Whether the outbox's own connection is gone (a PostgreSQL server restarted, or the
/// session was ended), so that only a new one can go on. The role is given up with it and
/// taken again, by this instance or another.
fn lost_connection(error: &StoreError) -> bool {
    matches!(error, StoreError::Query(sqlx::Error::Io(_)))
}

/// What a finished attempt means for its delivery; logs and counts it.
fn decide(
    metrics: &Metrics,
    sink: &ForwardSettings,
    started: Started,
    attempt: Attempt,
) -> DeliveryOutcome {
    let attempts = started.attempts_before + 1;
    let delivery = started.delivery;
    match attempt {
        Attempt::Delivered => {
            metrics.delivery_attempt(&sink.name, true);
            metrics.delivery_finished(&sink.name, "delivered");
            tracing::debug!(sink = sink.name, delivery, attempts, "Delivered");
            DeliveryOutcome::Delivered
        }
        Attempt::Failed(failure) if attempts >= sink.retry.max_attempts => {
            let error = failure.last_error(&sink.name);
            metrics.delivery_attempt(&sink.name, false);
            metrics.delivery_finished(&sink.name, "dead");
            tracing::warn!(
                sink = sink.name,
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

async fn sample_backlog(store: &Store, metrics: &Metrics) {
    match store.delivery_backlog().await {
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
