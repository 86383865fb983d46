//! Reading events back, and the registration record.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};
use crate::event::{EventFields, StoredEvent};
use crate::signature::Verdict;

/// Which events `list` returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub limit: u32,
    pub since: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
}

/// One successful `registerWebhook` call as Volt answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub webhook_id: String,
    pub url: String,
    pub created_at: Option<String>,
    pub last_updated_at: Option<String>,
}

/// Fixed-width UTC text, so that comparing text compares time.
pub(super) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

const SELECT_EVENT: &str = "SELECT id, received_at, content_type, remote_addr, event_type, \
    direction, from_number, to_number, message_id, status, error_code, text, body, signature FROM events";

impl Store {
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "{SELECT_EVENT} WHERE (?1 IS NULL OR received_at >= ?1) \
             AND (?2 IS NULL OR event_type = ?2) ORDER BY id DESC LIMIT ?3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(filter.since.map(format_time))
            .bind(filter.event_type.as_deref())
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub async fn event(&self, id: i64) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!("{SELECT_EVENT} WHERE id = ?1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    pub async fn count_events(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Delete up to `limit` events received before `cutoff`; returns how many went. Small
    /// batches keep each write transaction short so ingestion never waits long for the lock.
    pub async fn delete_events_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM events WHERE id IN \
             (SELECT id FROM events WHERE received_at < ?1 ORDER BY id LIMIT ?2)",
        )
        .bind(format_time(cutoff))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Delete up to `limit` delivered or dead delivery records last updated before `cutoff`;
    /// pending ones are kept whatever their age.
    pub async fn delete_finished_deliveries_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
             WHERE status IN ('delivered', 'dead') AND updated_at < ?1 ORDER BY id LIMIT ?2)",
        )
        .bind(format_time(cutoff))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    pub async fn record_registration(&self, registration: &Registration) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO registrations (webhook_id, url, registered_at, created_at, last_updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&registration.webhook_id)
        .bind(&registration.url)
        .bind(format_time(Utc::now()))
        .bind(registration.created_at.as_deref())
        .bind(registration.last_updated_at.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn registrations(&self) -> Result<Vec<Registration>, StoreError> {
        let rows = sqlx::query(
            "SELECT webhook_id, url, created_at, last_updated_at FROM registrations ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Registration {
                    webhook_id: row.try_get(0)?,
                    url: row.try_get(1)?,
                    created_at: row.try_get(2)?,
                    last_updated_at: row.try_get(3)?,
                })
            })
            .collect()
    }
}

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let received_at: String = row.try_get(1)?;
    let received_at = DateTime::parse_from_rfc3339(&received_at)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
        .with_timezone(&Utc);
    Ok(StoredEvent {
        id: row.try_get(0)?,
        received_at,
        content_type: row.try_get(2)?,
        remote_addr: row.try_get(3)?,
        fields: EventFields {
            event_type: row.try_get(4)?,
            direction: row.try_get(5)?,
            from: row.try_get(6)?,
            to: row.try_get(7)?,
            message_id: row.try_get(8)?,
            status: row.try_get(9)?,
            error_code: row.try_get(10)?,
            text: row.try_get(11)?,
        },
        body: row.try_get(12)?,
        signature: Verdict::from_stored(&row.try_get::<String, _>(13)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_old_finished_deliveries_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("voltd.db").display());
        let store = Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let old = format_time(Utc::now() - chrono::Duration::days(40));
        let new = format_time(Utc::now());
        for (status, updated) in [
            ("delivered", &old),
            ("dead", &old),
            ("pending", &old),
            ("delivered", &new),
        ] {
            sqlx::query(
                "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, created_at, \
                 updated_at) VALUES (1, 's', ?1, ?2, ?2, ?2)",
            )
            .bind(status)
            .bind(updated)
            .execute(&store.pool)
            .await
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
        let left: Vec<String> = sqlx::query_scalar("SELECT status FROM deliveries ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, ["pending", "delivered"]);
        store.close().await;
    }
}
