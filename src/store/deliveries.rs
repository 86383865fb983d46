//! The forwarding outbox: per-sink cursors over the events table and one delivery row per
//! (event, sink). Only the pool is used; the event writer's connection is never touched.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};

use super::backend::{Pool, Timestamp, WritePool, on_pool};
use super::{Store, StoreError};

/// What a sink filter looks at.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventHeader {
    pub id: i64,
    pub event_type: Option<String>,
    pub direction: Option<String>,
    #[sqlx(rename = "from_number")]
    pub from: Option<String>,
    #[sqlx(rename = "to_number")]
    pub to: Option<String>,
}

/// A pending delivery whose time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: i64,
    pub event_id: i64,
    #[sqlx(try_from = "i64")]
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: i64,
    pub sink: String,
    pub status: String,
    #[sqlx(try_from = "i64")]
    pub attempts: u32,
    #[sqlx(try_from = "Timestamp")]
    pub next_attempt_at: String,
    #[sqlx(try_from = "Timestamp")]
    pub created_at: String,
    #[sqlx(try_from = "Timestamp")]
    pub updated_at: String,
    pub last_error: Option<String>,
}

impl DeliveryRecord {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "event_id": self.event_id,
            "sink": self.sink,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_error": self.last_error,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<String>,
    pub sink: Option<String>,
    pub limit: u32,
}

/// Which stored events a replay queues again.
#[derive(Debug, Clone, Default)]
pub struct EventSelection {
    pub id: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
}

/// What an attempt means for its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    Retry { at: DateTime<Utc>, error: String },
    Dead { error: String },
}

/// Pending deliveries: how many, and when the oldest was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: i64,
    pub oldest: Option<DateTime<Utc>>,
}

const SELECT_HEADER: &str = "SELECT id, event_type, direction, from_number, to_number FROM events";
const SELECT_DELIVERY: &str = "SELECT id, event_id, sink, status, attempts, next_attempt_at, \
    created_at, updated_at, last_error FROM deliveries";

/// Creates a sink's cursor at the newest stored event unless it has one. (`WHERE true` lets
/// SQLite parse an upsert after a SELECT.)
const START_CURSOR: &str = "INSERT INTO forward_cursors (sink, last_event_id) \
    SELECT $1, COALESCE(MAX(id), 0) FROM events WHERE true ON CONFLICT (sink) DO NOTHING";

const INSERT_DELIVERY: &str = "INSERT INTO deliveries (event_id, sink, next_attempt_at, \
    created_at, updated_at) VALUES ($1, $2, $3, $3, $3)";

impl Store {
    /// Create a cursor at the newest stored event for each sink that has none yet.
    pub async fn start_forward_cursors(&self, sinks: &[&str]) -> Result<(), StoreError> {
        for sink in sinks {
            on_pool!(self, pool => sqlx::query(START_CURSOR).bind(*sink).execute(pool).await.map(drop))?;
        }
        Ok(())
    }

    /// Queue a new delivery of each selected event to each sink that wants it; returns how
    /// many were queued. Earlier deliveries are left as they are, for the record.
    pub async fn queue_replay(
        &self,
        selection: &EventSelection,
        sinks: &[&str],
        wants: impl Fn(&str, &EventHeader) -> bool,
    ) -> Result<usize, StoreError> {
        let sql = format!(
            "{SELECT_HEADER} WHERE ($1 IS NULL OR id = $1) AND ($2 IS NULL OR received_at >= $2) \
             AND ($3 IS NULL OR event_type = $3) ORDER BY id"
        );
        let headers: Vec<EventHeader> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(selection.id)
            .bind(selection.since.map(Timestamp))
            .bind(selection.event_type.as_deref())
            .fetch_all(pool)
            .await)?;
        let now = Timestamp::now();
        let mut queued = 0;
        // Bounded transactions keep the write lock short however much is replayed.
        for chunk in headers.chunks(500) {
            on_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                for header in chunk {
                    for sink in sinks.iter().filter(|sink| wants(sink, header)) {
                        sqlx::query(INSERT_DELIVERY)
                            .bind(header.id)
                            .bind(*sink)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        queued += 1;
                    }
                }
                tx.commit().await?;
            });
        }
        Ok(queued)
    }

    /// Pending deliveries for `sink` due by `now`, oldest due first.
    pub async fn due_deliveries(
        &self,
        sink: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT id, event_id, attempts FROM deliveries WHERE sink = $1 AND status = 'pending' \
             AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $3",
        )
        .bind(sink)
        .bind(Timestamp(now))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)?)
    }

    pub async fn delivery_backlog(&self) -> Result<Backlog, StoreError> {
        let (pending, oldest): (i64, Option<Timestamp>) = on_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending'",
        )
        .fetch_one(pool)
        .await)?;
        Ok(Backlog {
            pending,
            oldest: oldest.map(|t| t.0),
        })
    }

    /// Deliveries, newest first.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let sql = format!(
            "{SELECT_DELIVERY} WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR sink = $2) \
             ORDER BY id DESC LIMIT $3"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(filter.status.as_deref())
            .bind(filter.sink.as_deref())
            .bind(i64::from(filter.limit))
            .fetch_all(pool)
            .await)?)
    }

    /// Ids of events stored after `after`, oldest first (for following the store).
    pub async fn event_ids_after(&self, after: i64, limit: u32) -> Result<Vec<i64>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM events WHERE id > $1 ORDER BY id LIMIT $2"
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)?)
    }

    pub async fn newest_event_id(&self) -> Result<i64, StoreError> {
        Ok(
            on_pool!(self, pool => sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(pool)
            .await)?,
        )
    }
}

/// The delivery task's own connection, for its writes (see [`super::sqlite::outbox`]).
/// Forwarding keeps a cursor over event ids, which is exact only while one writer numbers
/// and commits events in the same order: it needs the SQLite store.
pub struct Outbox {
    conn: SqliteConnection,
}

impl Store {
    pub async fn open_outbox(&self) -> Result<Outbox, StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => Ok(Outbox {
                conn: super::sqlite::outbox(pool).await?,
            }),
            Pool::Postgres(_) => Err(StoreError::ForwardingNeedsSqlite),
        }
    }
}

impl Outbox {
    /// Queue a delivery for each new event each sink wants, and move the sinks' cursors past
    /// the events looked at, in one short transaction. A sink without a cursor (see
    /// [`Store::start_forward_cursors`]) starts after the newest stored event.
    pub async fn queue_new_events(
        &mut self,
        sinks: &[&str],
        batch: u32,
        wants: impl Fn(&str, &EventHeader) -> bool,
    ) -> Result<usize, StoreError> {
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&mut self.conn)
            .await?;
        let cursors = self.cursors().await?;
        let behind = sinks
            .iter()
            .any(|sink| cursors.get(*sink).is_none_or(|last| *last < newest));
        if !behind {
            return Ok(0);
        }
        // IMMEDIATE takes the write lock up front, so the transaction cannot fail half-way
        // on a snapshot made stale by the event writer.
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        for sink in sinks {
            sqlx::query(START_CURSOR)
                .bind(*sink)
                .execute(&mut *tx)
                .await?;
        }
        let rows = sqlx::query("SELECT sink, last_event_id FROM forward_cursors")
            .fetch_all(&mut *tx)
            .await?;
        let mut cursors = HashMap::new();
        for row in rows {
            cursors.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
        }
        let start = sinks
            .iter()
            .filter_map(|sink| cursors.get(*sink).copied())
            .min()
            .unwrap_or(newest);
        let headers: Vec<EventHeader> = sqlx::query_as(AssertSqlSafe(format!(
            "{SELECT_HEADER} WHERE id > $1 ORDER BY id LIMIT $2"
        )))
        .bind(start)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await?;
        let Some(last_seen) = headers.last().map(|h| h.id) else {
            tx.commit().await?;
            return Ok(0);
        };
        let now = Timestamp::now();
        let mut queued = 0;
        for sink in sinks {
            let cursor = cursors.get(*sink).copied().unwrap_or(newest);
            for header in headers.iter().filter(|h| h.id > cursor) {
                if wants(sink, header) {
                    sqlx::query(INSERT_DELIVERY)
                        .bind(header.id)
                        .bind(*sink)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    queued += 1;
                }
            }
            if cursor < last_seen {
                sqlx::query("UPDATE forward_cursors SET last_event_id = $2 WHERE sink = $1")
                    .bind(*sink)
                    .bind(last_seen)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(queued)
    }

    async fn cursors(&mut self) -> Result<HashMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT sink, last_event_id FROM forward_cursors")
            .fetch_all(&mut self.conn)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Record the outcome of finished attempts in one transaction (one commit for many
    /// outcomes keeps the write lock free for the event writer).
    pub async fn record_outcomes(
        &mut self,
        outcomes: &[(i64, DeliveryOutcome)],
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        for (id, outcome) in outcomes {
            let (status, next_attempt_at, error) = match outcome {
                DeliveryOutcome::Delivered => ("delivered", now, None),
                DeliveryOutcome::Retry { at, error } => ("pending", *at, Some(error.as_str())),
                DeliveryOutcome::Dead { error } => ("dead", now, Some(error.as_str())),
            };
            sqlx::query(
                "UPDATE deliveries SET status = $2, attempts = attempts + 1, \
                 next_attempt_at = $3, updated_at = $4, last_error = COALESCE($5, last_error) \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(status)
            .bind(Timestamp(next_attempt_at))
            .bind(Timestamp(now))
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
