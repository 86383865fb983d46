//! Group commit: one task owns the write connection and commits every queued event of a batch
//! in one transaction (one fsync), then answers each submitter.
//!
//! There is no timer: the writer takes whatever is queued the moment it is free, so a lone
//! event commits at once and batches grow only when events arrive faster than commits.

use std::collections::HashMap;

use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::queries::format_time;
use crate::event::{NewEvent, StoreOutcome};

/// Why an event was not stored; every variant means "answer 503, nothing was committed".
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the write queue is full")]
    QueueFull,
    #[error("the store is shutting down")]
    Closed,
    #[error("the commit failed: {0}")]
    Failed(String),
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
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "Store writer task failed");
        }
    }
}

pub(super) fn start(
    conn: SqliteConnection,
    queue_capacity: usize,
    max_batch: usize,
) -> (EventWriter, WriterTask) {
    let (queue, jobs) = mpsc::channel(queue_capacity);
    let stop = CancellationToken::new();
    let handle = tokio::spawn(run(conn, jobs, max_batch, stop.clone()));
    (EventWriter { queue }, WriterTask { stop, handle })
}

async fn run(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(max_batch);
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
        commit(&mut conn, &mut batch).await;
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "Closing the store's write connection failed");
    }
}

/// Commit a batch and answer every job in it. If the batch as a whole fails, each event is
/// retried in a transaction of its own so one bad event cannot fail its neighbours.
async fn commit(conn: &mut SqliteConnection, batch: &mut Vec<Job>) {
    let events: Vec<&NewEvent> = batch.iter().map(|job| &job.event).collect();
    match insert(conn, &events).await {
        Ok(outcomes) => {
            for (job, outcome) in batch.drain(..).zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(batch_error) => {
            tracing::warn!(error = %batch_error, events = batch.len(), "Batch commit failed; retrying events one by one");
            for job in batch.drain(..) {
                let result = insert(conn, &[&job.event])
                    .await
                    .map(|mut outcomes| outcomes.remove(0))
                    .map_err(|e| {
                        tracing::error!(error = %e, "Event could not be stored");
                        WriteError::Failed(e.to_string())
                    });
                let _ = job.reply.send(result);
            }
        }
    }
}

const COLUMNS: &str = "INSERT INTO events (received_at, content_type, remote_addr, event_type, \
    direction, from_number, to_number, message_id, status, error_code, text, body, dedup_key) ";

/// Statements are built for a few fixed row counts so the prepared-statement cache stays
/// small and warm whatever the batch size.
const CHUNK_SIZES: [usize; 4] = [64, 16, 4, 1];

/// Insert events in one transaction; returns one outcome per event, in order.
async fn insert(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
    let keys: Vec<Option<String>> = events.iter().map(|e| e.dedup_key()).collect();
    let mut tx = conn.begin().await?;
    let mut inserted_by_key: HashMap<String, i64> = HashMap::new();
    let mut keyless_ids: Vec<i64> = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let remaining = events.len() - start;
        let size = CHUNK_SIZES
            .into_iter()
            .find(|&s| s <= remaining)
            .unwrap_or(1);
        let chunk = start..start + size;
        let mut query = QueryBuilder::<Sqlite>::new(COLUMNS);
        query.push_values(
            events[chunk.clone()].iter().zip(&keys[chunk]),
            |mut row, (event, key)| {
                let f = &event.fields;
                row.push_bind(format_time(event.received_at))
                    .push_bind(event.content_type.as_deref())
                    .push_bind(event.remote_addr.as_deref())
                    .push_bind(f.event_type.as_deref())
                    .push_bind(f.direction.as_deref())
                    .push_bind(f.from.as_deref())
                    .push_bind(f.to.as_deref())
                    .push_bind(f.message_id.as_deref())
                    .push_bind(f.status.as_deref())
                    .push_bind(f.error_code.as_deref())
                    .push_bind(f.text.as_deref())
                    .push_bind(event.body.as_slice())
                    .push_bind(key.as_deref());
            },
        );
        query.push(" ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key");
        for row in query.build().fetch_all(&mut *tx).await? {
            let id: i64 = row.try_get(0)?;
            match row.try_get::<Option<String>, _>(1)? {
                Some(key) => {
                    inserted_by_key.insert(key, id);
                }
                None => keyless_ids.push(id),
            }
        }
        start += size;
    }
    // One writer inside one transaction: keyless rows got ascending ids in the order given,
    // whatever order RETURNING reported them in.
    keyless_ids.sort_unstable();
    let mut keyless_ids = keyless_ids.into_iter();
    let mut outcomes = Vec::with_capacity(events.len());
    let mut repeats: Vec<usize> = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        match key {
            None => {
                let id = keyless_ids.next().ok_or_else(|| {
                    sqlx::Error::Protocol("fewer ids returned than events inserted".into())
                })?;
                outcomes.push(StoreOutcome::Stored(id));
            }
            // The first occurrence in the batch claims the new row; later ones are repeats.
            Some(key) => match inserted_by_key.remove(key) {
                Some(id) => outcomes.push(StoreOutcome::Stored(id)),
                None => {
                    repeats.push(index);
                    outcomes.push(StoreOutcome::Duplicate(0));
                }
            },
        }
    }
    if !repeats.is_empty() {
        let existing = existing_ids(&mut tx, repeats.iter().map(|&i| keys[i].as_deref())).await?;
        for index in repeats {
            let key = keys[index].as_deref().unwrap_or_default();
            let id = existing.get(key).copied().ok_or_else(|| {
                sqlx::Error::Protocol(format!("no row for duplicate key {key:?}"))
            })?;
            outcomes[index] = StoreOutcome::Duplicate(id);
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn existing_ids<'k>(
    conn: &mut SqliteConnection,
    keys: impl Iterator<Item = Option<&'k str>>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut query =
        QueryBuilder::<Sqlite>::new("SELECT id, dedup_key FROM events WHERE dedup_key IN (");
    let mut list = query.separated(", ");
    for key in keys {
        list.push_bind(key);
    }
    query.push(")");
    let mut found = HashMap::new();
    for row in query.build().fetch_all(conn).await? {
        found.insert(row.try_get::<String, _>(1)?, row.try_get::<i64, _>(0)?);
    }
    Ok(found)
}
