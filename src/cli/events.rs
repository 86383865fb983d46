//! `voltd events`: list, show, tail and replay stored events.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Subcommand};

use super::display::{EventColumns, parse_time};
use crate::config::Settings;
use crate::event::StoredEvent;
use crate::store::{EventFilter, EventSelection};

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List stored events, newest first
    List {
        /// How many events to show
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only events received at or after this time (RFC 3339, e.g. 2026-11-26T00:00:00Z)
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only events of this type, e.g. message.received
        #[arg(long = "type", value_name = "EVENT_TYPE")]
        event_type: Option<String>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Show one event as pretty JSON
    Show {
        /// The event id (the "id" in voltd's answer to Volt, or from `events list`)
        id: i64,
    },
    /// Print events as they are stored, until Ctrl-C
    Tail {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Queue stored events to be forwarded again ([[forward]] sinks, filters applied)
    #[command(group = ArgGroup::new("events").required(true).args(["id", "since"]))]
    Replay {
        /// The event id to forward again
        id: Option<i64>,
        /// Instead of one id: every event received at or after this time (RFC 3339)
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only events of this type, e.g. message.received
        #[arg(long = "type", value_name = "EVENT_TYPE")]
        event_type: Option<String>,
        /// Only this sink (its name in volt.toml); all sinks by default
        #[arg(long, value_name = "NAME")]
        sink: Option<String>,
    },
}

pub async fn execute(command: EventsCommand, settings: Settings) -> anyhow::Result<()> {
    let store = super::open_existing_store(&settings).await?;
    let result = match command {
        EventsCommand::List {
            limit,
            since,
            event_type,
            json,
        } => {
            let filter = EventFilter {
                limit,
                since,
                event_type,
            };
            let events = store.list_events(&filter).await?;
            print_list(&events, json)
        }
        EventsCommand::Show { id } => match store.event(id).await? {
            Some(event) => {
                let mut out = std::io::stdout().lock();
                serde_json::to_writer_pretty(&mut out, &event.to_detailed_json())?;
                writeln!(out)?;
                out.flush()?;
                Ok(())
            }
            None => Err(anyhow::anyhow!(
                "no event with id {id}; `voltd events list` shows the stored ids"
            )),
        },
        EventsCommand::Tail { json } => super::tail::execute(&store, json).await,
        EventsCommand::Replay {
            id,
            since,
            event_type,
            sink,
        } => {
            let selection = EventSelection {
                id,
                since,
                event_type,
            };
            super::replay::execute(&store, &settings, &selection, sink.as_deref()).await
        }
    };
    store.close().await;
    result
}

fn print_list(events: &[StoredEvent], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for event in events {
            serde_json::to_writer(&mut out, &event.to_json())?;
            writeln!(out)?;
        }
        out.flush()?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>8}  {:<27}  {:<18}  {:<8}  {:<16}  {:<16}  {:<9}  MESSAGE_ID",
        "ID", "RECEIVED_AT", "TYPE", "DIR", "FROM", "TO", "SIGNATURE"
    )?;
    for event in events {
        let e = EventColumns::of(event);
        writeln!(
            out,
            "{:>8}  {:<27}  {:<18}  {:<8}  {:<16}  {:<16}  {:<9}  {}",
            e.id, e.received_at, e.event_type, e.direction, e.from, e.to, e.signature, e.message_id,
        )?;
    }
    out.flush()?;
    Ok(())
}
