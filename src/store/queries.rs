//! Reading events back, and the registration record.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::backend::{Timestamp, on_pool};
use super::{Store, StoreError};
use crate::event::Verdict;
use crate::event::{EventFields, StoredEvent};
use crate::webhook::Webhook;

/// Which events `list` returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub limit: u32,
    pub since: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
}

/// The columns of an [`EventRow`], as a literal for `concat!`.
macro_rules! event_columns {
    () => {
        "id, received_at, content_type, remote_addr, event_type, direction, from_number, \
         to_number, message_id, status, error_code, text, body, signature, content_encoding"
    };
}
pub(super) use event_columns;

pub(super) const SELECT_EVENT: &str = concat!("SELECT ", event_columns!(), " FROM events");

/// An `events` row as both databases return it.
#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    pub(super) id: i64,
    received_at: Timestamp,
    content_type: Option<String>,
    remote_addr: Option<String>,
    event_type: Option<String>,
    direction: Option<String>,
    from_number: Option<String>,
    to_number: Option<String>,
    message_id: Option<String>,
    status: Option<String>,
    error_code: Option<String>,
    text: Option<String>,
    body: Vec<u8>,
    signature: String,
    content_encoding: Option<String>,
}

impl From<EventRow> for StoredEvent {
    fn from(row: EventRow) -> Self {
        Self {
            id: row.id,
            received_at: row.received_at.0,
            content_type: row.content_type,
            remote_addr: row.remote_addr,
            content_encoding: row.content_encoding,
            fields: EventFields {
                event_type: row.event_type,
                direction: row.direction,
                from: row.from_number,
                to: row.to_number,
                message_id: row.message_id,
                status: row.status,
                error_code: row.error_code,
                text: row.text,
            },
            body: row.body,
            signature: Verdict::from_stored(&row.signature),
        }
    }
}

impl Store {
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "{SELECT_EVENT} WHERE ($1 IS NULL OR received_at >= $1) \
             AND ($2 IS NULL OR event_type = $2) ORDER BY id DESC LIMIT $3"
        );
        let rows: Vec<EventRow> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(filter.since.map(Timestamp))
            .bind(filter.event_type.as_deref())
            .bind(i64::from(filter.limit))
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(StoredEvent::from).collect())
    }

    pub async fn event(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!("{SELECT_EVENT} WHERE id = $1");
        let row: Option<EventRow> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(StoredEvent::from))
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        Ok(
            on_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(pool)
            .await)?,
        )
    }

    /// Delete up to `limit` events received before `cutoff`; returns how many went. Small
    /// batches keep each write transaction short so ingestion never waits long for the lock.
    pub async fn delete_events_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.delete_before(
            "DELETE FROM events WHERE id IN \
             (SELECT id FROM events WHERE received_at < $1 ORDER BY id LIMIT $2)",
            cutoff,
            limit,
        )
        .await
    }

    /// Delete up to `limit` delivered or dead delivery records last updated before `cutoff`;
    /// pending ones are kept whatever their age.
    pub async fn delete_finished_deliveries_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.delete_before(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
             WHERE status IN ('delivered', 'dead') AND updated_at < $1 ORDER BY id LIMIT $2)",
            cutoff,
            limit,
        )
        .await
    }

    /// Run a retention `DELETE` whose `$1` is the cutoff and `$2` the most rows to delete.
    async fn delete_before(
        &self,
        sql: &'static str,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let deleted = on_pool!(self, pool => sqlx::query(sql)
            .bind(Timestamp(cutoff))
            .bind(i64::from(limit))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(deleted)
    }

    /// Keep a successful registration, for the record.
    pub async fn record_registration(&self, webhook: &Webhook) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query(
            "INSERT INTO registrations (webhook_id, url, registered_at, created_at, last_updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&webhook.id)
        .bind(&webhook.url)
        .bind(Timestamp::now())
        .bind(webhook.created_at.as_deref())
        .bind(webhook.last_updated_at.as_deref())
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Every registration recorded, oldest first.
    pub async fn registrations(&self) -> Result<Vec<Webhook>, StoreError> {
        let rows: Vec<(String, String, Option<String>, Option<String>)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT webhook_id, url, created_at, last_updated_at FROM registrations ORDER BY id",
        )
        .fetch_all(pool)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(id, url, created_at, last_updated_at)| Webhook {
                id,
                url,
                created_at,
                last_updated_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::store::test_db::{TestDb, test_each_backend};

    test_each_backend!(only_old_finished_deliveries_are_pruned);
    async fn only_old_finished_deliveries_are_pruned(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        let old = Timestamp(Utc::now() - chrono::Duration::days(40));
        let new = Timestamp::now();
        for (status, updated) in [
            ("delivered", old),
            ("dead", old),
            ("pending", old),
            ("delivered", new),
        ] {
            on_pool!(store, pool => sqlx::query(
                "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, \
                 created_at, updated_at) VALUES (1, 's', $1, $2, $2, $2)",
            )
            .bind(status)
            .bind(updated)
            .execute(pool)
            .await
            .map(drop))
            .unwrap();
        }
        let cutoff = Utc::now() - chrono::Duration::days(30);
        assert_eq!(
            store
                .delete_finished_deliveries_before(cutoff, 1_000)
                .await
                .unwrap(),
            2
        );
        let left: Vec<String> = on_pool!(store, pool => sqlx::query_scalar(
            "SELECT status FROM deliveries ORDER BY id"
        )
        .fetch_all(pool)
        .await)
        .unwrap();
        assert_eq!(left, ["pending", "delivered"]);
        db.finish().await;
    }
}
