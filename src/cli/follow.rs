//! `voltd events tail` and `voltd events replay`.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Subcommand};

use super::display::EventColumns;
use crate::config::Settings;
use crate::event::StoredEvent;
use crate::forward::sink_wants;
use crate::store::{EventSelection, FollowPosition, Store, StoreError};

const TAIL_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Subcommand)]
pub enum FollowCommand {
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
        #[arg(long, value_parser = super::events::parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only events of this type, e.g. message.received
        #[arg(long = "type", value_name = "EVENT_TYPE")]
        event_type: Option<String>,
        /// Only this sink (its name in volt.toml); all sinks by default
        #[arg(long, value_name = "NAME")]
        sink: Option<String>,
    },
}

pub async fn execute(
    command: FollowCommand,
    store: &Store,
    settings: &Settings,
) -> anyhow::Result<()> {
    match command {
        FollowCommand::Tail { json } => tail(store, json).await,
        FollowCommand::Replay {
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
            replay(store, settings, &selection, sink.as_deref()).await
        }
    }
}

async fn tail(store: &Store, json: bool) -> anyhow::Result<()> {
    let mut position = store.follow_start().await?;
    // On stderr, so `--json` output stays pure JSON lines.
    eprintln!("Following events stored from now on; Ctrl-C stops");
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // A lost connection or a restarting database is waited out, not the end of the tail.
    let mut failing = false;
    loop {
        match print_events_after(store, &mut position, json).await {
            Ok(()) if failing => {
                eprintln!("voltd: reading the store again");
                failing = false;
            }
            Ok(()) => {}
            Err(TailError::Output(e)) => return Err(e.into()),
            Err(TailError::Store(e)) if !failing => {
                eprintln!("voltd: cannot read the store ({e}); trying again");
                failing = true;
            }
            Err(TailError::Store(_)) => {}
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            () = tokio::time::sleep(TAIL_POLL) => {}
        }
    }
}

enum TailError {
    Store(StoreError),
    Output(std::io::Error),
}

/// Print the events stored after `position`, moving it past each one printed.
async fn print_events_after(
    store: &Store,
    position: &mut FollowPosition,
    json: bool,
) -> Result<(), TailError> {
    for (after, id) in store
        .events_after(*position, 500)
        .await
        .map_err(TailError::Store)?
    {
        if let Some(event) = store.event(id).await.map_err(TailError::Store)? {
            print_event(&event, json).map_err(TailError::Output)?;
        }
        *position = after;
    }
    Ok(())
}

fn print_event(event: &StoredEvent, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", event.to_json())?;
    } else {
        let e = EventColumns::of(event);
        writeln!(
            out,
            "{} {} {} {} {} -> {} {} {}",
            e.id, e.received_at, e.event_type, e.direction, e.from, e.to, e.message_id, e.text,
        )?;
    }
    out.flush()?;
    Ok(())
}

async fn replay(
    store: &Store,
    settings: &Settings,
    selection: &EventSelection,
    only: Option<&str>,
) -> anyhow::Result<()> {
    let sinks = &settings.forward;
    if sinks.is_empty() {
        anyhow::bail!(
            "no [[forward]] sinks are configured in {}, so there is nowhere to replay to; \
             add a [[forward]] entry (see docs/forwarding.md) and restart voltd",
            settings.source.display()
        );
    }
    let names: Vec<&str> = sinks
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| only.is_none_or(|only| only == *name))
        .collect();
    if let (Some(only), true) = (only, names.is_empty()) {
        let known: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(
            "no sink named {only:?}; configured sinks: {}",
            known.join(", ")
        );
    }
    if let Some(id) = selection.id
        && store.event(id).await?.is_none()
    {
        anyhow::bail!("no event with id {id}; `voltd events list` shows the stored ids");
    }
    let queued = store
        .queue_replay(selection, &names, |sink, event| {
            sink_wants(sinks, sink, event)
        })
        .await?;
    let (deliveries, them) = if queued == 1 {
        ("delivery", "it")
    } else {
        ("deliveries", "them")
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Queued {queued} {deliveries}; a running voltd sends {them} within a second \
         (`voltd deliveries list` shows progress)"
    )?;
    out.flush()?;
    Ok(())
}
