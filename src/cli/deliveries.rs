//! `voltd deliveries list`.

use std::io::Write;

use super::args::DeliveriesCommand;
use super::display::{field, visible};
use crate::config::Settings;
use crate::store::{DeliveryFilter, DeliveryRecord, Timestamp};

/// Enough of an error to recognise it; `--json` has all of it.
const ERROR_COLUMN_CHARS: usize = 100;

pub async fn execute(command: DeliveriesCommand, settings: Settings) -> anyhow::Result<()> {
    let store = super::open_existing_store(&settings).await?;
    let DeliveriesCommand::List {
        status,
        sink,
        limit,
        json,
    } = command;
    let filter = DeliveryFilter {
        status: status.map(|s| format!("{s:?}").to_lowercase()),
        sink,
        limit,
    };
    let result = match store.list_deliveries(&filter).await {
        Ok(deliveries) => print(&deliveries, json),
        Err(e) => Err(e.into()),
    };
    store.close().await;
    result
}

fn print(deliveries: &[DeliveryRecord], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for delivery in deliveries {
            serde_json::to_writer(&mut out, delivery)?;
            writeln!(out)?;
        }
        out.flush()?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>8}  {:>8}  {:<16}  {:<9}  {:>8}  {:<27}  LAST_ERROR",
        "ID", "EVENT", "SINK", "STATUS", "ATTEMPTS", "NEXT_ATTEMPT_AT"
    )?;
    for d in deliveries {
        let error: String = field(d.last_error.as_deref())
            .chars()
            .take(ERROR_COLUMN_CHARS)
            .collect();
        writeln!(
            out,
            "{:>8}  {:>8}  {:<16}  {:<9}  {:>8}  {:<27}  {error}",
            d.id,
            d.event_id,
            visible(&d.sink),
            visible(&d.status),
            d.attempts,
            field(d.next_attempt_at.map(Timestamp::to_text).as_deref()),
        )?;
    }
    out.flush()?;
    Ok(())
}
