//! `voltd events tail`: print events as they are stored.

use std::io::Write;
use std::time::Duration;

use super::display::EventColumns;
use crate::error_chain::ErrorChain;
use crate::event::StoredEvent;
use crate::store::{FollowPosition, Store, StoreError};

const TAIL_POLL: Duration = Duration::from_millis(200);

pub async fn execute(store: &Store, json: bool) -> anyhow::Result<()> {
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
                eprintln!(
                    "voltd: cannot read the store ({}); trying again",
                    ErrorChain(&e)
                );
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
        serde_json::to_writer(&mut out, &event.to_json())?;
        writeln!(out)?;
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
