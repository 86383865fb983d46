//! Deletes events older than `[storage] retention_days`, a small batch at a time.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

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
            Err(e) => tracing::warn!(error = %e, "Retention sweep failed; will retry next hour"),
        }
    }
}

/// Delete everything older than `retention`, batch by batch, yielding between batches.
pub async fn sweep(
    store: &Store,
    retention: Duration,
    stop: &CancellationToken,
) -> Result<u64, crate::store::StoreError> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    while !stop.is_cancelled() {
        let deleted = store.delete_events_before(cutoff, BATCH).await?;
        total += deleted;
        if deleted < u64::from(BATCH) {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(total)
}
