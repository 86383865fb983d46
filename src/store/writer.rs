//! Group commit: one task owns the write connection and commits every queued event of a batch
//! in one transaction (one fsync), then answers each submitter.
//!
//! There is no timer: the writer takes whatever is queued the moment it is free, so a lone
//! event commits at once and batches grow only when events arrive faster than commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Told the size and duration of every committed batch (for metrics; the store knows none).
pub type CommitObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

pub(super) fn start(
    conn: SqliteConnection,
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
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    on_commit: CommitObserver,
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
        commit(&mut conn, &mut batch, &*on_commit).await;
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "Closing the store's write connection failed");
    }
}

/// Commit a batch and answer every job in it. If the batch as a whole fails, each event is
/// retried in a transaction of its own so one bad event cannot fail its neighbours.
async fn commit(
    conn: &mut SqliteConnection,
    batch: &mut Vec<Job>,
    on_commit: &(dyn Fn(usize, Duration) + Send + Sync),
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
    direction, from_number, to_number, message_id, status, error_code, text, body, dedup_key, signature) ";

/// Most rows in one INSERT (14 parameters a row, well under SQLite's 32,766).
const MAX_ROWS_PER_STATEMENT: usize = 512;

/// INSERTs of up to this many rows stay prepared in sqlx's statement cache (100 by default).
/// Larger ones are prepared for their one batch: caching a statement for every batch size up
/// to 512 rows grew the daemon by 15-20 MB under 256 connections (bench/RESULTS.md), and
/// preparing them afresh cost no measurable CPU per event there.
const MAX_CACHED_ROWS: usize = 64;

/// Insert events durably; returns one outcome per event, in order.
///
/// A batch is usually one statement, so it runs without BEGIN/COMMIT: a single statement is
/// atomic on its own (one fsync), each explicit BEGIN or COMMIT would be one more round trip
/// to SQLite's worker thread, and a statement inside an explicit transaction needs a statement
/// journal, which spills to a temporary file once it outgrows 64 KiB. Larger batches are
/// chunked inside one transaction.
///
/// Duplicates are looked up first (one query for the whole batch), so the INSERT returns no
/// rows: its ids follow from `last_insert_rowid`, because one multi-row INSERT into an
/// AUTOINCREMENT table numbers its rows consecutively in the order given. (Streaming back a
/// RETURNING row per event cost a thread wake-up per event.) The lookup and the INSERT are
/// not one transaction, which is safe because this task is the only writer of events; should
/// a duplicate still slip past, the UNIQUE index fails the whole INSERT and the caller
/// retries event by event, which finds it.
async fn insert(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
    let keys: Vec<Option<String>> = events.iter().map(|e| e.dedup_key()).collect();
    let stored_before = if keys.iter().any(Option::is_some) {
        existing_ids(conn, keys.iter().flatten()).await?
    } else {
        HashMap::new()
    };
    let mut outcomes: Vec<Option<StoreOutcome>> = vec![None; events.len()];
    // Later occurrences of a key within the batch, with the index of its first occurrence.
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    let mut fresh: Vec<usize> = Vec::with_capacity(events.len());
    for (index, key) in keys.iter().enumerate() {
        match key.as_deref() {
            Some(key) => {
                if let Some(&id) = stored_before.get(key) {
                    outcomes[index] = Some(StoreOutcome::Duplicate(id));
                } else if let Some(&first) = first_index.get(key) {
                    repeats.push((index, first));
                } else {
                    first_index.insert(key, index);
                    fresh.push(index);
                }
            }
            None => fresh.push(index),
        }
    }
    if fresh.len() <= MAX_ROWS_PER_STATEMENT {
        insert_rows(conn, events, &keys, &fresh, &mut outcomes).await?;
    } else {
        let mut tx = conn.begin().await?;
        for chunk in fresh.chunks(MAX_ROWS_PER_STATEMENT) {
            insert_rows(&mut tx, events, &keys, chunk, &mut outcomes).await?;
        }
        tx.commit().await?;
    }
    for (index, first) in repeats {
        outcomes[index] = outcomes[first].map(|first| StoreOutcome::Duplicate(first.id()));
    }
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.ok_or_else(|| sqlx::Error::Protocol("an event got no outcome".into()))
        })
        .collect()
}

/// One multi-row INSERT of `events[rows]`, recording each new id in `outcomes`.
async fn insert_rows(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
    keys: &[Option<String>],
    rows: &[usize],
    outcomes: &mut [Option<StoreOutcome>],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::<Sqlite>::new(COLUMNS);
    query.push_values(rows, |mut row, &index| {
        let event = events[index];
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
            .push_bind(keys[index].as_deref())
            .push_bind(event.signature.as_str());
    });
    let result = query
        .build()
        .persistent(rows.len() <= MAX_CACHED_ROWS)
        .execute(&mut *conn)
        .await?;
    let count = rows.len() as u64;
    if result.rows_affected() != count {
        return Err(sqlx::Error::Protocol(format!(
            "inserted {} rows of {count}",
            result.rows_affected()
        )));
    }
    let first_id = result.last_insert_rowid() - (rows.len() as i64 - 1);
    for (&index, id) in rows.iter().zip(first_id..) {
        outcomes[index] = Some(StoreOutcome::Stored(id));
    }
    Ok(())
}

/// Ids of the rows already stored under any of `keys`: one statement whatever their number
/// (the keys travel as one JSON array), so its prepared form is cached.
async fn existing_ids<'k>(
    conn: &mut SqliteConnection,
    keys: impl Iterator<Item = &'k String>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let keys: Vec<&String> = keys.collect();
    let keys = serde_json::to_string(&keys)
        .map_err(|e| sqlx::Error::Protocol(format!("cannot encode dedup keys: {e}")))?;
    let rows = sqlx::query(
        "SELECT id, dedup_key FROM events WHERE dedup_key IN (SELECT value FROM json_each(?1))",
    )
    .bind(keys)
    .fetch_all(conn)
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in rows {
        found.insert(row.try_get::<String, _>(1)?, row.try_get::<i64, _>(0)?);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use sqlx::ConnectOptions;

    use super::*;
    use crate::event::EventFields;
    use crate::store::Store;

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
            signature: crate::signature::Verdict::Unchecked,
        }
    }

    async fn connection(dir: &tempfile::TempDir) -> SqliteConnection {
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        let store = Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        store.options.connect().await.unwrap()
    }

    async fn insert_all(conn: &mut SqliteConnection, events: &[NewEvent]) -> Vec<StoreOutcome> {
        let events: Vec<&NewEvent> = events.iter().collect();
        insert(conn, &events).await.unwrap()
    }

    #[tokio::test]
    async fn one_batch_numbers_new_rows_in_order_and_answers_repeats_with_the_first_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connection(&dir).await;
        let before = insert_all(&mut conn, &[event(Some("old"), "a")]).await;
        assert_eq!(before, [StoreOutcome::Stored(1)]);

        let outcomes = insert_all(
            &mut conn,
            &[
                event(None, "Yes"),
                event(Some("m1"), "x"),
                event(Some("old"), "a"),
                event(None, "Yes"),
                event(Some("m1"), "x"),
                event(Some("m2"), "y"),
            ],
        )
        .await;
        use StoreOutcome::{Duplicate, Stored};
        assert_eq!(
            outcomes,
            [
                Stored(2),
                Stored(3),
                Duplicate(1),
                Stored(4),
                Duplicate(3),
                Stored(5)
            ]
        );
        let stored: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT id, body FROM events ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let bodies: Vec<&[u8]> = stored.iter().map(|(_, b)| b.as_slice()).collect();
        assert_eq!(bodies, [&b"a"[..], b"Yes", b"x", b"Yes", b"y"]);
    }

    #[tokio::test]
    async fn a_batch_larger_than_one_statement_is_one_transaction_with_consecutive_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connection(&dir).await;
        let count = MAX_ROWS_PER_STATEMENT * 2 + 3;
        let events: Vec<NewEvent> = (0..count)
            .map(|i| {
                event(
                    (i % 2 == 0).then(|| format!("m{i}")).as_deref(),
                    &i.to_string(),
                )
            })
            .collect();
        let outcomes = insert_all(&mut conn, &events).await;
        let expected: Vec<StoreOutcome> = (1..=count as i64).map(StoreOutcome::Stored).collect();
        assert_eq!(outcomes, expected);
        let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT body FROM events ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let expected: Vec<Vec<u8>> = (0..count).map(|i| i.to_string().into_bytes()).collect();
        assert_eq!(bodies, expected);
    }
}
