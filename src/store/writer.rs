//! Group commit: one writer owns the write connection and commits every queued event of a
//! batch in one transaction (one fsync), then answers each submitter. It runs as a task, or
//! for SQLite on a thread of its own ([`start`]).
//!
//! There is no timer: the writer takes whatever is queued the moment it is free, so a lone
//! event commits at once and batches grow only when events arrive faster than commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::failure::CommitError;
use super::health::StoreHealth;
use super::{postgres, sqlite};
use crate::error_chain::ErrorChain;
use crate::event::{NewEvent, StoreOutcome};
use crate::log_limit::LogLimiter;

/// Why an event was not stored; every variant means "answer 503, nothing was committed".
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the write queue is full")]
    QueueFull,
    #[error("the store is shutting down")]
    Closed,
    #[error("the commit failed")]
    Failed(#[source] CommitError),
    /// The store failed on an event committed before this one in the same batch, so this one
    /// was not tried: it would only have waited for the same failure.
    #[error("the store cannot commit (an earlier event of the batch failed)")]
    StoreFailing,
}

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<StoreOutcome, WriteError>>,
}

/// Submits events to the writer. Cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    queue: mpsc::Sender<Job>,
    health: StoreHealth,
}

impl EventWriter {
    /// Store one event; resolves once it is committed (or definitely not).
    pub async fn submit(&self, event: NewEvent) -> Result<StoreOutcome, WriteError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .try_send(Job { event, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => WriteError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
            })?;
        outcome.await.unwrap_or(Err(WriteError::Closed))
    }

    /// True once the writer has stopped taking events.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Events waiting for a commit.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Whether commits succeed, as this writer last found.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }
}

/// The running writer; [`WriterTask::shutdown`] commits what is queued, then stops.
pub struct WriterTask {
    stop: CancellationToken,
    running: Running,
}

/// Where the writer runs: an SQLite writer blocks in SQLite for each commit, so it has a
/// thread of its own; a PostgreSQL writer only awaits its server, as a task of the runtime.
enum Running {
    Task(tokio::task::JoinHandle<()>),
    /// Told when the thread's loop has ended; dropped unsent if the thread panicked.
    Thread(oneshot::Receiver<()>),
}

impl WriterTask {
    /// Commit what is queued and stop, waiting at most `grace`: a store that no longer
    /// answers must not keep the process alive. Events still queued then were never
    /// acknowledged, so Volt delivers them again.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        let ended = match self.running {
            Running::Task(handle) => {
                let abort = handle.abort_handle();
                let ended = tokio::time::timeout(grace, handle).await;
                if ended.is_err() {
                    abort.abort();
                }
                ended.map(|joined| joined.map_err(|e| ErrorChain(&e).to_string()))
            }
            // A thread cannot be aborted; the process ends without waiting for it.
            Running::Thread(done) => tokio::time::timeout(grace, done)
                .await
                .map(|ended| ended.map_err(|_| "its thread panicked".to_owned())),
        };
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "Store writer failed"),
            Err(_) => tracing::error!(
                "The store did not finish committing within {} s; stopping without it \
                 (the events still queued were not acknowledged)",
                grace.as_secs()
            ),
        }
    }
}

/// Told the size and duration of every committed batch (for metrics; the store knows none).
pub type CommitObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

pub(super) fn start(
    conn: WriteConnection,
    queue_capacity: usize,
    max_batch: usize,
    on_commit: CommitObserver,
) -> std::io::Result<(EventWriter, WriterTask)> {
    let (queue, jobs) = mpsc::channel(queue_capacity);
    let stop = CancellationToken::new();
    let health = StoreHealth::default();
    let on_own_thread = matches!(conn, WriteConnection::Sqlite(_));
    let writer = Writer {
        conn,
        max_batch,
        on_commit,
        health: health.clone(),
        log: FailureLog::default(),
    };
    let run = writer.run(jobs, stop.clone());
    let running = if on_own_thread {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let (done, ended) = oneshot::channel();
        std::thread::Builder::new()
            .name("voltd-writer".into())
            .spawn(move || {
                runtime.block_on(run);
                let _ = done.send(());
            })?;
        Running::Thread(ended)
    } else {
        Running::Task(tokio::spawn(run))
    };
    Ok((EventWriter { queue, health }, WriterTask { stop, running }))
}

/// While the store fails, a small commit of the writer's own tells when it works again, so
/// readiness recovers without waiting for an event (a load balancer sends none to an
/// instance that is not ready).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// While the store is healthy and no event comes, the writer checks its connection this
/// often, so that a lost PostgreSQL server shows in readiness before an event meets it, and
/// the connection is opened again before then.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

struct Writer {
    conn: WriteConnection,
    max_batch: usize,
    on_commit: CommitObserver,
    health: StoreHealth,
    log: FailureLog,
}

/// While the database is down every batch fails: one line of each kind per interval says so
/// (with how many were held back), rather than lines for every event.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

struct FailureLog {
    batches: LogLimiter,
    events: LogLimiter,
    changes: LogLimiter,
}

impl Default for FailureLog {
    fn default() -> Self {
        Self {
            batches: LogLimiter::new(FAILURE_LOG_INTERVAL),
            events: LogLimiter::new(FAILURE_LOG_INTERVAL),
            changes: LogLimiter::new(FAILURE_LOG_INTERVAL),
        }
    }
}

impl Writer {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let check = tokio::time::sleep(IDLE_CHECK_INTERVAL);
        tokio::pin!(check);
        loop {
            let received = tokio::select! {
                n = jobs.recv_many(&mut batch, self.max_batch) => n,
                () = stop.cancelled(), if !jobs.is_closed() => {
                    // Refuse new work, then keep looping to commit what is already queued.
                    jobs.close();
                    continue;
                }
                // Once stopping, only the queue matters: no check may delay the last commits.
                () = &mut check, if !jobs.is_closed() => {
                    self.check().await;
                    check.as_mut().reset(tokio::time::Instant::now() + self.check_interval());
                    continue;
                }
            };
            if received == 0 {
                break;
            }
            self.commit(&mut batch).await;
            check
                .as_mut()
                .reset(tokio::time::Instant::now() + self.check_interval());
        }
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %ErrorChain(&e), "Closing the store's write connection failed");
        }
    }

    fn check_interval(&self) -> Duration {
        if self.health.is_failing() {
            PROBE_INTERVAL
        } else {
            IDLE_CHECK_INTERVAL
        }
    }

    /// With no event to commit: while failing, try a commit of the writer's own; otherwise
    /// check that the connection still answers.
    async fn check(&mut self) {
        self.health.busy();
        let result = if self.health.is_failing() {
            self.conn.probe().await
        } else {
            // A connection that broke (a server restart, an idle timeout) is opened again at
            // once: only a database that then fails to commit is unhealthy.
            match self.conn.check().await {
                Ok(()) => Ok(()),
                Err(_) => self.conn.probe().await,
            }
        };
        self.health.idle();
        match result {
            Ok(()) => self.succeeded(),
            Err(e) => self.store_failed(&e),
        }
    }

    /// Commit a batch and answer every job in it. If the batch fails because of one of its
    /// events, each event is retried in a transaction of its own so one bad event cannot fail
    /// its neighbours; if it fails because of the store, every event is answered at once.
    async fn commit(&mut self, batch: &mut Vec<Job>) {
        let events: Vec<&NewEvent> = batch.iter().map(|job| &job.event).collect();
        let started = Instant::now();
        self.health.busy();
        let result = insert(&mut self.conn, &events).await;
        self.health.idle();
        let batch_error = match result {
            Ok(outcomes) => {
                self.succeeded();
                (self.on_commit)(batch.len(), started.elapsed());
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
                return;
            }
            Err(e) => e,
        };
        if batch_error.is_store_failure() {
            self.store_failed(&batch_error);
            if let Some(held_back) = self.log.batches.permit() {
                tracing::error!(
                    error = %ErrorChain(&batch_error),
                    events = batch.len(),
                    earlier_failures_not_logged = held_back,
                    "Batch commit failed; its events were answered 503"
                );
            }
            let mut error = Some(batch_error);
            for job in batch.drain(..) {
                let failure = error
                    .take()
                    .map_or(WriteError::StoreFailing, WriteError::Failed);
                let _ = job.reply.send(Err(failure));
            }
            return;
        }
        if let Some(held_back) = self.log.batches.permit() {
            tracing::warn!(
                error = %ErrorChain(&batch_error),
                events = batch.len(),
                earlier_failures_not_logged = held_back,
                "Batch commit failed; retrying events one by one"
            );
        }
        let mut store_failing = false;
        for job in batch.drain(..) {
            if store_failing {
                let _ = job.reply.send(Err(WriteError::StoreFailing));
                continue;
            }
            self.health.busy();
            let result = insert(&mut self.conn, &[&job.event]).await;
            self.health.idle();
            let result = match result {
                Ok(mut outcomes) => {
                    self.succeeded();
                    Ok(outcomes.remove(0))
                }
                Err(e) => {
                    if e.is_store_failure() {
                        store_failing = true;
                        self.store_failed(&e);
                    }
                    if let Some(held_back) = self.log.events.permit() {
                        tracing::error!(
                            error = %ErrorChain(&e),
                            earlier_failures_not_logged = held_back,
                            "Event could not be stored; it was answered 503"
                        );
                    }
                    Err(WriteError::Failed(e))
                }
            };
            let _ = job.reply.send(result);
        }
    }

    fn succeeded(&self) {
        if let Some(since) = self.health.committed() {
            let failed_for = (chrono::Utc::now() - since).num_seconds();
            tracing::info!(
                failed_for_secs = failed_for,
                "The store commits again; ready"
            );
        }
    }

    fn store_failed(&self, error: &CommitError) {
        let reason = ErrorChain(error).to_string();
        let started_failing = self.health.failed(reason);
        if let Some(held_back) = self.log.changes.permit() {
            if started_failing {
                tracing::error!(
                    error = %ErrorChain(error),
                    earlier_failures_not_logged = held_back,
                    "The store cannot commit: events are answered 503 and /readyz is 503 until \
                     a commit succeeds (tried every second)"
                );
            } else {
                tracing::warn!(
                    error = %ErrorChain(error),
                    earlier_failures_not_logged = held_back,
                    "The store still cannot commit"
                );
            }
        }
    }
}

/// The writer's own connection to whichever database the store uses.
pub(super) enum WriteConnection {
    Sqlite(sqlite::SqliteWriter),
    Postgres(postgres::PgWriter),
}

impl WriteConnection {
    async fn store_distinct(
        &mut self,
        events: &[&NewEvent],
        keys: &[Option<String>],
        rows: &[usize],
    ) -> Result<Vec<StoreOutcome>, CommitError> {
        match self {
            Self::Sqlite(writer) => writer.store_distinct(events, keys, rows),
            Self::Postgres(writer) => Ok(writer.store_distinct(events, keys, rows).await?),
        }
    }

    /// A commit that changes nothing, to learn whether the database takes writes.
    async fn probe(&mut self) -> Result<(), CommitError> {
        match self {
            Self::Sqlite(writer) => writer.probe(),
            Self::Postgres(writer) => Ok(writer.probe().await?),
        }
    }

    /// Whether the connection still answers, without writing. An SQLite file has no
    /// connection to lose; its failures show in commits.
    async fn check(&mut self) -> Result<(), CommitError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(writer) => Ok(writer.check().await?),
        }
    }

    async fn close(self) -> Result<(), CommitError> {
        match self {
            Self::Sqlite(writer) => writer.close(),
            Self::Postgres(writer) => Ok(writer.close().await?),
        }
    }
}

/// Insert events durably; returns one outcome per event, in order.
///
/// Repeats of a message inside the batch are answered here with the id of its first
/// occurrence; the backend stores the rest, answering "duplicate" for keys stored before.
async fn insert(
    conn: &mut WriteConnection,
    events: &[&NewEvent],
) -> Result<Vec<StoreOutcome>, CommitError> {
    let keys: Vec<Option<String>> = events.iter().map(|e| e.dedup_key()).collect();
    let mut first_position: HashMap<&str, usize> = HashMap::new();
    let mut distinct: Vec<usize> = Vec::with_capacity(events.len());
    // Each event's position among the distinct ones, and whether it repeats an earlier event.
    let mut places: Vec<(usize, bool)> = Vec::with_capacity(events.len());
    for (index, key) in keys.iter().enumerate() {
        if let Some(key) = key.as_deref() {
            if let Some(&first) = first_position.get(key) {
                places.push((first, true));
                continue;
            }
            first_position.insert(key, distinct.len());
        }
        places.push((distinct.len(), false));
        distinct.push(index);
    }
    let stored = conn.store_distinct(events, &keys, &distinct).await?;
    if stored.len() != distinct.len() {
        return Err(CommitError::NoOutcome);
    }
    Ok(places
        .into_iter()
        .map(|(place, repeat)| {
            if repeat {
                StoreOutcome::Duplicate(stored[place].id())
            } else {
                stored[place]
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::config::Backend;
    use crate::event::EventFields;
    use crate::store::backend::Pool;
    use crate::store::test_db::{DEDUP_WINDOW, TestDb, test_each_backend};

    fn event(message_id: Option<&str>, body: &str) -> NewEvent {
        NewEvent {
            received_at: Utc::now(),
            content_type: None,
            remote_addr: None,
            content_encoding: None,
            body: body.as_bytes().to_vec(),
            fields: EventFields {
                event_type: Some("message.received".into()),
                message_id: message_id.map(Into::into),
                ..EventFields::default()
            },
            signature: crate::event::Verdict::Unchecked,
        }
    }

    async fn connection(db: &TestDb) -> WriteConnection {
        match &db.store.pool {
            Pool::Sqlite(pool) => {
                WriteConnection::Sqlite(sqlite::writer(pool, "test", DEDUP_WINDOW).await.unwrap())
            }
            Pool::Postgres(pool) => {
                WriteConnection::Postgres(postgres::writer(pool).await.unwrap())
            }
        }
    }

    async fn insert_all(conn: &mut WriteConnection, events: &[NewEvent]) -> Vec<StoreOutcome> {
        let events: Vec<&NewEvent> = events.iter().collect();
        insert(conn, &events).await.unwrap()
    }

    /// Every outcome names the row holding that event's body, and no row was stored twice.
    async fn assert_ids_name_their_rows(db: &TestDb, sent: &[NewEvent], outcomes: &[StoreOutcome]) {
        for (event, outcome) in sent.iter().zip(outcomes) {
            let stored = db.store.event(outcome.id()).await.unwrap().unwrap();
            assert_eq!(stored.body, event.body, "{outcome:?}");
        }
        let mut new_ids: Vec<i64> = outcomes
            .iter()
            .filter(|o| matches!(o, StoreOutcome::Stored(_)))
            .map(|o| o.id())
            .collect();
        let count = new_ids.len();
        new_ids.sort_unstable();
        new_ids.dedup();
        assert_eq!(new_ids.len(), count, "an id was handed out twice");
    }

    test_each_backend!(one_batch_answers_repeats_with_the_id_of_the_first);
    async fn one_batch_answers_repeats_with_the_id_of_the_first(backend: Backend) {
        let db = TestDb::new(backend).await;
        let mut conn = connection(&db).await;
        let before = insert_all(&mut conn, &[event(Some("old"), "a")]).await;
        assert!(matches!(before[..], [StoreOutcome::Stored(_)]));

        let batch = [
            event(None, "Yes"),
            event(Some("m1"), "x"),
            event(Some("old"), "a"),
            event(None, "Yes"),
            event(Some("m1"), "x"),
            event(Some("m2"), "y"),
        ];
        let outcomes = insert_all(&mut conn, &batch).await;
        use StoreOutcome::{Duplicate, Stored};
        let kinds: Vec<bool> = outcomes.iter().map(|o| matches!(o, Stored(_))).collect();
        assert_eq!(kinds, [true, true, false, true, false, true]);
        assert_eq!(outcomes[2], Duplicate(before[0].id()));
        assert_eq!(outcomes[4], Duplicate(outcomes[1].id()));
        assert_ids_name_their_rows(&db, &batch, &outcomes).await;
        assert_eq!(db.store.count_events().await.unwrap(), 5);
        conn.close().await.unwrap();
        db.finish().await;
    }

    test_each_backend!(a_large_batch_is_stored_whole);
    async fn a_large_batch_is_stored_whole(backend: Backend) {
        let db = TestDb::new(backend).await;
        let mut conn = connection(&db).await;
        // Twice the default batch and more; every other event without a message id.
        let count = 1_027;
        let events: Vec<NewEvent> = (0..count)
            .map(|i| {
                event(
                    (i % 2 == 0).then(|| format!("m{i}")).as_deref(),
                    &i.to_string(),
                )
            })
            .collect();
        let outcomes = insert_all(&mut conn, &events).await;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, StoreOutcome::Stored(_)))
        );
        assert_ids_name_their_rows(&db, &events, &outcomes).await;
        if backend == Backend::Sqlite {
            // Ids come from last_insert_rowid, so they must follow the rows exactly.
            let expected: Vec<StoreOutcome> =
                (1..=count as i64).map(StoreOutcome::Stored).collect();
            assert_eq!(outcomes, expected);
        }

        // Again, with one event of the second statement's share stored already.
        let again: Vec<NewEvent> = (0..count)
            .map(|i| event(Some(&format!("n{i}")), &format!("n{i}")))
            .collect();
        let stored_before = insert_all(&mut conn, &again[600..601]).await;
        let outcomes = insert_all(&mut conn, &again).await;
        assert_eq!(
            outcomes[600],
            StoreOutcome::Duplicate(stored_before[0].id())
        );
        let new = outcomes
            .iter()
            .filter(|o| matches!(o, StoreOutcome::Stored(_)));
        assert_eq!(new.count(), count - 1);
        assert_ids_name_their_rows(&db, &again, &outcomes).await;
        conn.close().await.unwrap();
        db.finish().await;
    }

    #[tokio::test]
    async fn two_writers_on_one_postgres_database_store_each_message_once() {
        crate::skip_unless_available!(Backend::Postgres);
        let db = TestDb::new(Backend::Postgres).await;
        let (mut first, mut second) = (connection(&db).await, connection(&db).await);
        let shared: Vec<NewEvent> = (0..200)
            .map(|i| event(Some(&format!("m{i}")), &i.to_string()))
            .collect();
        let (a, b) = tokio::join!(
            insert_all(&mut first, &shared),
            insert_all(&mut second, &shared)
        );
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert_eq!(a.id(), b.id(), "message m{i} got two ids");
            assert!(
                matches!(
                    (a, b),
                    (StoreOutcome::Stored(_), StoreOutcome::Duplicate(_))
                        | (StoreOutcome::Duplicate(_), StoreOutcome::Stored(_))
                ),
                "message m{i}: {a:?} and {b:?}"
            );
        }
        assert_eq!(db.store.count_events().await.unwrap(), 200);
        first.close().await.unwrap();
        second.close().await.unwrap();
        db.finish().await;
    }
}
