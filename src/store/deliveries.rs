//! Delivery rows, one per (event, sink) attempted: what `voltd deliveries list` shows, what a
//! replay queues, and what the delivery task reads when a retry is due. The delivery task's
//! own connection, which writes them, is in [`super::outbox`].

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::backend::{Timestamp, WritePool, on_pool};
use super::outbox::{OutboxSql, id_array};
use super::queries::{self, EventRow};
use super::{Store, StoreError};
use crate::event::StoredEvent;

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

/// A delivery as `voltd deliveries list` shows it; serialised, the line of its `--json`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: i64,
    pub sink: String,
    pub status: String,
    #[sqlx(try_from = "i64")]
    pub attempts: u32,
    /// Only a pending delivery has one (see `SELECT_DELIVERY`).
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_error: Option<String>,
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

/// What forwarding has still to do: how many deliveries, and since when the oldest waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: i64,
    pub oldest: Option<DateTime<Utc>>,
}

const SELECT_HEADER: &str = "SELECT id, event_type, direction, from_number, to_number FROM events";
/// A finished delivery keeps the time of its last attempt in `next_attempt_at`; it is not
/// a next attempt, so it is not read as one.
pub(super) const SELECT_DELIVERY: &str = "SELECT id, event_id, sink, status, attempts, \
    CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, \
    created_at, updated_at, last_error FROM deliveries";

const INSERT_DELIVERY: &str = "INSERT INTO deliveries (event_id, sink, next_attempt_at, \
    created_at, updated_at) VALUES ($1, $2, $3, $3, $3)";

impl Store {
    /// Create a cursor after the events stored so far for each sink that has none yet.
    pub async fn start_forward_cursors(&self, sinks: &[&str]) -> Result<(), StoreError> {
        let start_cursor = OutboxSql::of(self.backend()).start_cursor;
        for sink in sinks {
            on_pool!(self, pool => sqlx::query(start_cursor).bind(*sink).execute(pool).await.map(drop))?;
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

    /// The stored events among `ids`, in no particular order; an id that is no longer stored
    /// (retention removed it) is left out. One query for a batch of deliveries.
    pub async fn events_by_id(&self, ids: &[i64]) -> Result<Vec<StoredEvent>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let id_list = OutboxSql::of(self.backend()).id_list;
        let sql = format!("{} WHERE id IN ({id_list})", queries::SELECT_EVENT);
        let rows: Vec<EventRow> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(id_array(ids.iter().copied()))
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(StoredEvent::from).collect())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::store::test_db::{TestDb, insert_events, test_each_backend};

    fn at(text: &str) -> Timestamp {
        Timestamp(DateTime::parse_from_rfc3339(text).unwrap().to_utc())
    }

    #[test]
    fn a_delivery_serialises_as_its_json_line() {
        let record = DeliveryRecord {
            id: 3,
            event_id: 9,
            sink: "crm".into(),
            status: "pending".into(),
            attempts: 2,
            next_attempt_at: Some(at("2026-11-27T01:02:03.000045Z")),
            created_at: at("2026-11-27T01:00:00Z"),
            updated_at: at("2026-11-27T01:01:00.5Z"),
            last_error: Some("HTTP 500".into()),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"id":3,"event_id":9,"sink":"crm","status":"pending","attempts":2,"next_attempt_at":"2026-11-27T01:02:03.000045Z","created_at":"2026-11-27T01:00:00.000000Z","updated_at":"2026-11-27T01:01:00.500000Z","last_error":"HTTP 500"}"#
        );
    }

    test_each_backend!(only_a_pending_delivery_has_a_next_attempt);
    async fn only_a_pending_delivery_has_a_next_attempt(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        insert_events(store, 3).await;
        let all = EventSelection::default();
        store.queue_replay(&all, &["s"], |_, _| true).await.unwrap();
        let retry_at = at("2030-01-02T03:04:05.000006Z");
        let mut outbox = store.open_outbox().await.unwrap();
        let outcomes = [
            (1, DeliveryOutcome::Delivered),
            (
                2,
                DeliveryOutcome::Retry {
                    at: retry_at.0,
                    error: "timed out".into(),
                },
            ),
            (
                3,
                DeliveryOutcome::Dead {
                    error: "refused".into(),
                },
            ),
        ];
        outbox.record_outcomes(&outcomes).await.unwrap();
        let filter = DeliveryFilter {
            limit: 10,
            ..DeliveryFilter::default()
        };
        let listed: Vec<(String, Option<Timestamp>)> = store
            .list_deliveries(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.status, d.next_attempt_at))
            .collect();
        let expected = [
            ("dead", None),
            ("pending", Some(retry_at)),
            ("delivered", None),
        ]
        .map(|(status, next)| (status.to_owned(), next));
        assert_eq!(listed, expected);
        drop(outbox);
        db.finish().await;
    }

    test_each_backend!(events_are_read_by_the_batch);
    async fn events_are_read_by_the_batch(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        insert_events(store, 3).await;
        let mut read: Vec<i64> = store
            .events_by_id(&[3, 1, 99, 1])
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        read.sort();
        assert_eq!(read, [1, 3]);
        assert!(store.events_by_id(&[]).await.unwrap().is_empty());
        db.finish().await;
    }
}
