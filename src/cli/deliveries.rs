//! `voltd deliveries list`.

use std::io::Write;

use clap::{Subcommand, ValueEnum};

use crate::config::Settings;
use crate::store::{DeliveryFilter, DeliveryRecord};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    Pending,
    Delivered,
    Dead,
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries of events to [[forward]] sinks, newest first
    List {
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// Only this sink (its name in volt.toml)
        #[arg(long, value_name = "NAME")]
        sink: Option<String>,
        /// How many deliveries to show
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

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
            writeln!(out, "{}", delivery.to_json())?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>8}  {:>8}  {:<16}  {:<9}  {:>8}  {:<27}  LAST_ERROR",
        "ID", "EVENT", "SINK", "STATUS", "ATTEMPTS", "NEXT_ATTEMPT_AT"
    )?;
    for d in deliveries {
        let next = if d.status == "pending" {
            d.next_attempt_at.as_str()
        } else {
            "-"
        };
        let error: String = d
            .last_error
            .as_deref()
            .unwrap_or("-")
            .lines()
            .next()
            .unwrap_or("-")
            .chars()
            .take(100)
            .collect();
        writeln!(
            out,
            "{:>8}  {:>8}  {:<16}  {:<9}  {:>8}  {:<27}  {error}",
            d.id, d.event_id, d.sink, d.status, d.attempts, next
        )?;
    }
    Ok(())
}
