//! Group commit: one task owns the write connection and commits every queued event of a batch
//! in one transaction (one fsync), then answers each submitter.
//!
//! There is no timer: the writer takes whatever is queued the moment it is free, so a lone
//! event commits at once and batches grow only when events arrive faster than commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

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
    Failed(#[source] sqlx::Error),
}

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<StoreOutcome, WriteError>>,
}

/// Submits events to the writer. Cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    queue: mpsc::Sender<Job>,
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
}

/// The running writer; [`WriterTask::shutdown`] commits what is queued, then stops.
pub struct WriterTask {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl WriterTask {
    /// Commit what is queued and stop, waiting at most `grace`: a store that no longer
    /// answers must not keep the process alive. Events still queued then were never
    /// acknowledged, so Volt delivers them again.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        let abort = self.handle.abort_handle();
        match tokio::time::timeout(grace, self.handle).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %ErrorChain(&e), "Store writer task failed"),
            Err(_) => {
                abort.abort();
                tracing::error!(
                    "The store did not finish committing within {} s; stopping without it \
                     (the events still queued were not acknowledged)",
                    grace.as_secs()
                );
            }
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
) -> (EventWriter, WriterTask) {
    let (queue, jobs) = mpsc::channel(queue_capacity);
    let stop = CancellationToken::new();
    let handle = tokio::spawn(run(conn, jobs, max_batch, on_commit, stop.clone()));
    (EventWriter { queue }, WriterTask { stop, handle })
}

async fn run(
    mut conn: WriteConnection,
    mut jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    on_commit: CommitObserver,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let failures = Failures {
        batches: LogLimiter::new(FAILURE_LOG_INTERVAL),
        events: LogLimiter::new(FAILURE_LOG_INTERVAL),
    };
    loop {
        let received = tokio::select! {
            n = jobs.recv_many(&mut batch, max_batch) => n,
            () = stop.cancelled(), if !jobs.is_closed() => {
                // Refuse new work, then keep looping to commit what is already queued.
                jobs.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        commit(&mut conn, &mut batch, &*on_commit, &failures).await;
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %ErrorChain(&e), "Closing the store's write connection failed");
    }
}

/// While the database is down every batch fails: one line of each kind per interval says so
/// (with how many were held back), rather than lines for every event.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

struct Failures {
    batches: LogLimiter,
    events: LogLimiter,
}

/// Commit a batch and answer every job in it. If the batch as a whole fails, each event is
/// retried in a transaction of its own so one bad event cannot fail its neighbours.
async fn commit(
    conn: &mut WriteConnection,
    batch: &mut Vec<Job>,
    on_commit: &(dyn Fn(usize, Duration) + Send + Sync),
    failures: &Failures,
) {
    let events: Vec<&NewEvent> = batch.iter().map(|job| &job.event).collect();
    let started = Instant::now();
    match insert(conn, &events).await {
        Ok(outcomes) => {
            on_commit(batch.len(), started.elapsed());
            for (job, outcome) in batch.drain(..).zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(batch_error) => {
            if let Some(held_back) = failures.batches.permit() {
                tracing::warn!(
                    error = %ErrorChain(&batch_error),
                    events = batch.len(),
                    earlier_failures_not_logged = held_back,
                    "Batch commit failed; retrying events one by one"
                );
            }
            for job in batch.drain(..) {
                let result = insert(conn, &[&job.event])
                    .await
                    .map(|mut outcomes| outcomes.remove(0))
                    .map_err(|e| {
                        if let Some(held_back) = failures.events.permit() {
                            tracing::error!(
                                error = %ErrorChain(&e),
                                earlier_failures_not_logged = held_back,
                                "Event could not be stored; it was answered 503"
                            );
                        }
                        WriteError::Failed(e)
                    });
                let _ = job.reply.send(result);
            }
        }
    }
}

/// The writer's own connection to whichever database the store uses.
pub(super) enum WriteConnection {
    Sqlite(SqliteConnection),
    Postgres(postgres::PgWriter),
}

impl WriteConnection {
    async fn store_distinct(
        &mut self,
        events: &[&NewEvent],
        keys: &[Option<String>],
        rows: &[usize],
    ) -> Result<Vec<StoreOutcome>, sqlx::Error> {
        match self {
            Self::Sqlite(conn) => sqlite::store_distinct(conn, events, keys, rows).await,
            Self::Postgres(writer) => writer.store_distinct(events, keys, rows).await,
        }
    }

    async fn close(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(conn) => conn.close().await,
            Self::Postgres(writer) => writer.close().await,
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
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
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
        return Err(sqlx::Error::Protocol("an event got no outcome".into()));
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
    use crate::store::test_db::{TestDb, test_each_backend};

    fn event(message_id: Option<&str>, body: &str) -> NewEvent {
        NewEvent {
            received_at: Utc::now(),
            content_type: None,
            remote_addr: None,
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
            Pool::Sqlite(pool) => WriteConnection::Sqlite(sqlite::writer(pool).await.unwrap()),
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

    test_each_backend!(a_batch_larger_than_one_statement_is_stored_whole);
    async fn a_batch_larger_than_one_statement_is_stored_whole(backend: Backend) {
        let db = TestDb::new(backend).await;
        let mut conn = connection(&db).await;
        let count = sqlite::MAX_ROWS_PER_STATEMENT * 2 + 3;
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
