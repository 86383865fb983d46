//! `voltd events`: list, show, tail and replay stored events.

use std::io::Write;

use super::args::EventsCommand;
use super::display::EventColumns;
use crate::config::Settings;
use crate::event::StoredEvent;
use crate::store::{EventFilter, EventSelection};

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
