//! Deletes events older than `[storage] retention_days`, and forwarding's finished delivery
//! records of the same age, a small batch at a time.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::error_chain::ErrorChain;
use crate::store::{Store, StoreError};

const BATCH: u32 = 1_000;
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

pub async fn run(store: Store, retention: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match sweep(&store, retention, &stop).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "Deleted events past the retention period"),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "Retention sweep failed; will retry next hour")
            }
        }
    }
}

/// Delete everything older than `retention`, batch by batch, yielding between batches.
pub async fn sweep(
    store: &Store,
    retention: Duration,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let events = in_batches(stop, || store.delete_events_before(cutoff, BATCH)).await?;
    let deliveries = in_batches(stop, || {
        store.delete_finished_deliveries_before(cutoff, BATCH)
    })
    .await?;
    if deliveries > 0 {
        tracing::info!(
            deliveries,
            "Deleted finished deliveries past the retention period"
        );
    }
    Ok(events)
}

/// Repeat a batched delete until a batch comes back short, yielding in between.
async fn in_batches<F, Fut>(stop: &CancellationToken, mut delete: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    while !stop.is_cancelled() {
        let deleted = delete().await?;
        total += deleted;
        if deleted < u64::from(BATCH) {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::event::{EventFields, NewEvent};
    use crate::store::test_db::{DEDUP_WINDOW, TestDb, test_each_backend};

    fn event_aged(days: i64) -> NewEvent {
        NewEvent {
            received_at: Utc::now() - chrono::Duration::days(days),
            content_type: None,
            remote_addr: None,
            content_encoding: None,
            body: format!("aged {days} days").into_bytes(),
            fields: EventFields::default(),
            signature: crate::event::Verdict::Unchecked,
        }
    }

    test_each_backend!(sweep_deletes_only_events_past_retention);
    async fn sweep_deletes_only_events_past_retention(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        let (writer, task) = store
            .start_writer(16, 4, DEDUP_WINDOW, std::sync::Arc::new(|_, _| {}))
            .await
            .unwrap();
        for days in [40, 31, 29, 0] {
            writer.submit(event_aged(days)).await.unwrap();
        }
        let stop = CancellationToken::new();
        let deleted = sweep(store, Duration::from_secs(30 * 86_400), &stop)
            .await
            .unwrap();
        assert_eq!(deleted, 2);
        assert_eq!(store.count_events().await.unwrap(), 2);
        // Nothing left to delete: a second sweep is a no-op.
        assert_eq!(
            sweep(store, Duration::from_secs(30 * 86_400), &stop)
                .await
                .unwrap(),
            0
        );
        task.shutdown(Duration::from_secs(10)).await;
        db.finish().await;
    }

    test_each_backend!(large_backlogs_are_deleted_in_batches);
    async fn large_backlogs_are_deleted_in_batches(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        let (writer, task) = store
            .start_writer(4096, 512, DEDUP_WINDOW, std::sync::Arc::new(|_, _| {}))
            .await
            .unwrap();
        let mut submissions = tokio::task::JoinSet::new();
        for _ in 0..2_500 {
            let writer = writer.clone();
            submissions.spawn(async move { writer.submit(event_aged(10)).await });
        }
        while let Some(result) = submissions.join_next().await {
            result.unwrap().unwrap();
        }
        let deleted = sweep(
            store,
            Duration::from_secs(86_400),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(deleted, 2_500);
        task.shutdown(Duration::from_secs(10)).await;
        db.finish().await;
    }
}
