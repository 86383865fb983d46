//! `voltd events replay`: queue stored events to be forwarded again.

use std::io::Write;

use crate::config::Settings;
use crate::forward::sink_wants;
use crate::store::{EventSelection, Store};

pub async fn execute(
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
