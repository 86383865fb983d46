//! The forwarding instance's work: attempt each batch of new events straight from the sinks'
//! cursors, record the batch once its first attempts are over, and attempt the pending
//! deliveries (retries, replays, and attempts that outlasted their batch) when they are due.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use super::batch::Batch;
use super::{Attempt, DeliveryError, Sink, decide, lost_connection, sample_backlog};
use crate::error_chain::ErrorChain;
use crate::event::StoredEvent;
use crate::log_limit::LogLimiter;
use crate::ops::metrics::Metrics;
use crate::store::{Outbox, Recorded, RoleLock, Store, StoreError};

/// How often the store is checked for new events and due retries.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The most events looked at in one batch. A full batch is followed by the next at once, so
/// that forwarding keeps up with any ingest rate rather than one batch per poll.
const MAX_BATCH: u32 = 2_000;
/// The most body bytes a batch holds (unless its first event alone is larger), so that a
/// batch of large bodies stays small in memory.
const MAX_BATCH_BYTES: i64 = 16 * 1024 * 1024;
/// Events a batch holds per delivery a sink may have in flight: enough to keep every sink
/// busy while the batch is attempted, few enough that a slow sink finishes it quickly.
const BATCH_PER_CONCURRENT: usize = 8;
/// A batch whose attempts take longer is recorded with the unfinished ones as pending
/// deliveries, which go on from there; so one slow endpoint never holds up the others.
const BATCH_PATIENCE: Duration = Duration::from_secs(2);
/// After an attempt of a pending delivery finishes, others finishing within this window share
/// its commit.
const RECORD_WINDOW: Duration = Duration::from_millis(25);
const BACKLOG_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the forwarding instance checks that it still holds the role.
const ROLE_CHECK: Duration = Duration::from_secs(3);

/// An attempt running.
#[derive(Clone, Copy)]
struct Started {
    sink: usize,
    event: i64,
    of: Of,
}

/// What a running attempt belongs to.
#[derive(Clone, Copy)]
enum Of {
    /// A delivery row: a retry, a replay, or an attempt that outlasted its batch.
    Row { delivery: i64, attempts_before: u32 },
    /// A slot of the batch of this generation, which has no row yet.
    Batch { generation: u64, slot: usize },
}

struct Dispatch<'a> {
    store: &'a Store,
    sinks: &'a [Rc<Sink>],
    names: Vec<&'a str>,
    metrics: &'a Metrics,
    outbox: Outbox,
    batch: Option<Batch>,
    generation: u64,
    batch_size: u32,
    attempts: JoinSet<Attempt>,
    started: HashMap<Id, Started>,
    in_flight_per_sink: Vec<usize>,
    /// Delivery rows being attempted, which the due query must not hand out again.
    in_flight_rows: HashSet<i64>,
}

/// Forward until `stop`, or until the role or the outbox's connection is lost. A batch not
/// recorded then is attempted again by whoever forwards next; at a stop, the batch is
/// recorded first, its unfinished deliveries as pending.
pub(super) async fn forward(
    store: &Store,
    sinks: &[Rc<Sink>],
    metrics: &Metrics,
    store_warnings: &LogLimiter,
    mut role: RoleLock,
    stop: &CancellationToken,
) {
    let outbox = match store.open_outbox().await {
        Ok(outbox) => outbox,
        Err(e) => {
            if let Some(suppressed) = store_warnings.permit() {
                tracing::warn!(error = %ErrorChain(&e), suppressed, "Cannot open the store for forwarding; will retry");
            }
            return;
        }
    };
    let mut dispatch = Dispatch::new(store, sinks, metrics, outbox);
    tracing::info!(sinks = ?dispatch.names, "Forwarding stored events");
    let warn = |what: &str, e: &StoreError| {
        if let Some(suppressed) = store_warnings.permit() {
            tracing::warn!(error = %ErrorChain(e), suppressed, "{what}; will retry");
        }
    };
    let mut look_again = true;
    let mut last_look: Option<Instant> = None;
    let mut last_due: Option<Instant> = None;
    let mut last_sample: Option<Instant> = None;
    let mut last_role_check = Instant::now();
    let end = loop {
        if stop.is_cancelled() {
            break End::Stopped;
        }
        if last_role_check.elapsed() >= ROLE_CHECK {
            last_role_check = Instant::now();
            if let Err(e) = role.check().await {
                tracing::warn!(
                    error = %ErrorChain(&e),
                    "Lost the forwarding role with its database session; forwarding stops \
                     until this instance can take it again"
                );
                break End::RoleLost;
            }
        }
        if dispatch.batch_is_ready()
            && let Err(e) = dispatch.record_batch().await
        {
            if lost_connection(&e) {
                break End::ConnectionLost(e);
            }
            warn("Cannot record forwarded events", &e);
        }
        if dispatch.batch.is_none() && (look_again || elapsed(last_look, POLL_INTERVAL)) {
            last_look = Some(Instant::now());
            match dispatch.look_ahead().await {
                Ok(full) => look_again = full,
                Err(e) if lost_connection(&e) => break End::ConnectionLost(e),
                Err(e) => {
                    look_again = false;
                    warn("Cannot look for new events to forward", &e);
                }
            }
            // A batch that no sink wants anything of is recorded (its cursors moved) at once.
            if dispatch.batch_is_ready() {
                continue;
            }
        }
        if elapsed(last_due, POLL_INTERVAL) {
            last_due = Some(Instant::now());
            if let Err(e) = dispatch.start_due().await {
                warn("Cannot read due deliveries", &e);
            }
        }
        dispatch.start_batch();
        if elapsed(last_sample, BACKLOG_SAMPLE_INTERVAL) {
            last_sample = Some(Instant::now());
            sample_backlog(store, &dispatch.names, metrics).await;
        }
        let attempts_running = !dispatch.attempts.is_empty();
        tokio::select! {
            () = stop.cancelled() => break End::Stopped,
            Some(joined) = dispatch.attempts.join_next_with_id(), if attempts_running => {
                if let Err(e) = dispatch.finished(joined).await {
                    if lost_connection(&e) {
                        break End::ConnectionLost(e);
                    }
                    warn("Cannot record delivery outcomes", &e);
                }
            }
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    };
    match end {
        End::Stopped => dispatch.stop().await,
        // Whoever forwards next attempts the batch again.
        End::RoleLost => dispatch.attempts.shutdown().await,
        End::ConnectionLost(e) => {
            tracing::warn!(error = %ErrorChain(&e), "Lost the forwarding database connection; reconnecting");
            dispatch.attempts.shutdown().await;
        }
    }
}

/// Why forwarding ended.
enum End {
    Stopped,
    RoleLost,
    ConnectionLost(StoreError),
}

fn elapsed(since: Option<Instant>, interval: Duration) -> bool {
    since.is_none_or(|at| at.elapsed() >= interval)
}

impl<'a> Dispatch<'a> {
    fn new(store: &'a Store, sinks: &'a [Rc<Sink>], metrics: &'a Metrics, outbox: Outbox) -> Self {
        let most_concurrent = sinks
            .iter()
            .map(|s| s.settings.max_concurrency)
            .max()
            .unwrap_or(1);
        let batch_size = most_concurrent.saturating_mul(BATCH_PER_CONCURRENT);
        Self {
            store,
            sinks,
            names: sinks.iter().map(|s| s.settings.name.as_str()).collect(),
            metrics,
            outbox,
            batch: None,
            generation: 0,
            batch_size: u32::try_from(batch_size)
                .unwrap_or(MAX_BATCH)
                .min(MAX_BATCH),
            attempts: JoinSet::new(),
            started: HashMap::new(),
            in_flight_per_sink: vec![0; sinks.len()],
            in_flight_rows: HashSet::new(),
        }
    }

    /// Whether the batch is to be recorded: its first attempts are over, or it has waited
    /// long enough for the slow ones.
    fn batch_is_ready(&self) -> bool {
        self.batch
            .as_ref()
            .is_some_and(|b| b.is_finished() || b.age() >= BATCH_PATIENCE)
    }

    /// Look for a batch of new events; true when it came full, so more may be waiting.
    async fn look_ahead(&mut self) -> Result<bool, StoreError> {
        let sinks = self.sinks;
        let look = self
            .outbox
            .look_ahead(
                &self.names,
                self.batch_size,
                MAX_BATCH_BYTES,
                |sink, event| sinks[sink].settings.wants_event(event),
            )
            .await?;
        let Some(look) = look else {
            return Ok(false);
        };
        let full = look.more_waiting;
        self.generation += 1;
        self.batch = Some(Batch::new(self.generation, look, self.sinks.len()));
        Ok(full)
    }

    /// Record the batch: delivery rows for its deliveries, and the cursors moved past it.
    /// Attempts still running go on as pending deliveries.
    async fn record_batch(&mut self) -> Result<(), StoreError> {
        let Some(batch) = &self.batch else {
            return Ok(());
        };
        let recorded = self
            .outbox
            .record_batch(&self.names, batch.look(), &batch.first_attempts())
            .await?;
        match recorded {
            Recorded::Written { unfinished } => {
                let rows = batch.running_rows(&unfinished);
                let generation = batch.generation;
                for started in self.started.values_mut() {
                    if let Of::Batch {
                        generation: g,
                        slot,
                    } = started.of
                        && g == generation
                        && let Some(&delivery) = rows.get(&slot)
                    {
                        started.of = Of::Row {
                            delivery,
                            attempts_before: 0,
                        };
                        self.in_flight_rows.insert(delivery);
                    }
                }
            }
            Recorded::Superseded => tracing::info!(
                "Another instance forwarded these events meanwhile; this one leaves them to it"
            ),
        }
        self.batch = None;
        Ok(())
    }

    /// Start the pending deliveries that are due, within each sink's concurrency.
    async fn start_due(&mut self) -> Result<(), StoreError> {
        for (index, sink) in self.sinks.iter().enumerate() {
            let free = sink.settings.max_concurrency - self.in_flight_per_sink[index];
            if free == 0 {
                continue;
            }
            // Rows in flight are still pending in the store, so ask for enough to skip them.
            let limit = u32::try_from(free + self.in_flight_rows.len()).unwrap_or(u32::MAX);
            let due = self
                .store
                .due_deliveries(&sink.settings.name, Utc::now(), limit)
                .await?;
            let startable: Vec<_> = due
                .into_iter()
                .filter(|d| !self.in_flight_rows.contains(&d.id))
                .take(free)
                .collect();
            if startable.is_empty() {
                continue;
            }
            // One query for the whole batch's events. When it fails, the deliveries stay due
            // and are started on a later round, no attempt counted.
            let event_ids: Vec<i64> = startable.iter().map(|d| d.event_id).collect();
            let events: HashMap<i64, Rc<StoredEvent>> = self
                .store
                .events_by_id(&event_ids)
                .await?
                .into_iter()
                .map(|e| (e.id, Rc::new(e)))
                .collect();
            for delivery in startable {
                self.in_flight_rows.insert(delivery.id);
                let of = Of::Row {
                    delivery: delivery.id,
                    attempts_before: delivery.attempts,
                };
                // A replay may queue one event twice, so events are shared, not moved.
                let event = events.get(&delivery.event_id).cloned();
                self.spawn(index, delivery.event_id, event, of);
            }
        }
        Ok(())
    }

    /// Start the batch's deliveries, within each sink's concurrency.
    fn start_batch(&mut self) {
        let Some(batch) = &mut self.batch else {
            return;
        };
        let generation = batch.generation;
        let mut starting = Vec::new();
        for (index, sink) in self.sinks.iter().enumerate() {
            let free = sink.settings.max_concurrency - self.in_flight_per_sink[index];
            starting.extend((0..free).map_while(|_| batch.start_next(index).map(|n| (index, n))));
        }
        for (index, next) in starting {
            let of = Of::Batch {
                generation,
                slot: next.slot,
            };
            self.spawn(index, next.event_id, next.event, of);
        }
    }

    fn spawn(&mut self, sink: usize, event_id: i64, event: Option<Rc<StoredEvent>>, of: Of) {
        self.in_flight_per_sink[sink] += 1;
        let target = self.sinks[sink].clone();
        let task = self.attempts.spawn_local(async move {
            match event {
                Some(event) => target.deliver(&event).await,
                None => Attempt::Failed(DeliveryError::EventGone),
            }
        });
        let started = Started {
            sink,
            event: event_id,
            of,
        };
        self.started.insert(task.id(), started);
    }

    /// Take in `first` and every other attempt that has finished; record the outcomes of
    /// delivery rows, which wait a moment for others to share their commit.
    async fn finished(
        &mut self,
        first: Result<(Id, Attempt), tokio::task::JoinError>,
    ) -> Result<(), StoreError> {
        let mut finished = vec![first];
        while let Some(joined) = self.attempts.try_join_next_with_id() {
            finished.push(joined);
        }
        let mut rows = self.take_outcomes(finished);
        if rows.is_empty() {
            return Ok(());
        }
        let window = tokio::time::sleep(RECORD_WINDOW);
        tokio::pin!(window);
        while !self.attempts.is_empty() {
            tokio::select! {
                Some(joined) = self.attempts.join_next_with_id() => {
                    rows.extend(self.take_outcomes(vec![joined]));
                }
                () = &mut window => break,
            }
        }
        let outcomes: Vec<_> = rows.iter().map(|(_, d, o)| (*d, o.clone())).collect();
        let recorded = self.outbox.record_outcomes(&outcomes).await;
        // Only now may the due query hand them out again: if recording failed they are still
        // pending in the store, and attempted again.
        for (sink, delivery, _) in rows {
            self.in_flight_rows.remove(&delivery);
            self.in_flight_per_sink[sink] -= 1;
        }
        recorded
    }

    /// Decide what each finished attempt means; a batch's are noted in the batch, and the
    /// rows' are returned as `(sink, delivery, outcome)` to record.
    fn take_outcomes(
        &mut self,
        finished: Vec<Result<(Id, Attempt), tokio::task::JoinError>>,
    ) -> Vec<(usize, i64, crate::store::DeliveryOutcome)> {
        let mut rows = Vec::new();
        for joined in finished {
            let (id, attempt) = match joined {
                Ok((id, attempt)) => (id, attempt),
                Err(e) => (e.id(), Attempt::Failed(DeliveryError::Aborted(e))),
            };
            let Some(started) = self.started.remove(&id) else {
                continue;
            };
            let settings = &self.sinks[started.sink].settings;
            match started.of {
                Of::Row {
                    delivery,
                    attempts_before,
                } => {
                    let outcome = decide(
                        self.metrics,
                        settings,
                        started.event,
                        Some(delivery),
                        attempts_before,
                        attempt,
                    );
                    rows.push((started.sink, delivery, outcome));
                }
                Of::Batch { generation, slot } => {
                    self.in_flight_per_sink[started.sink] -= 1;
                    let outcome = decide(self.metrics, settings, started.event, None, 0, attempt);
                    if let Some(batch) = &mut self.batch
                        && batch.generation == generation
                    {
                        batch.finish(slot, outcome);
                    }
                }
            }
        }
        rows
    }

    /// Stop attempting; record the batch, if any, with what did not finish as pending.
    async fn stop(mut self) {
        self.attempts.shutdown().await;
        if let Err(e) = self.record_batch().await {
            tracing::warn!(
                error = %ErrorChain(&e),
                "Cannot record the last forwarded events; they are sent again at the next start"
            );
        }
    }
}
