//! Command sinks: run a program with the event as JSON on stdin.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::sink::{DeliveryError, truncate};
use crate::config::CommandTarget;
use crate::event::StoredEvent;

pub(super) async fn run(
    target: &CommandTarget,
    timeout: Duration,
    event: &StoredEvent,
) -> Result<(), DeliveryError> {
    let program = &target.program;
    let mut child = tokio::process::Command::new(program)
        .args(&target.args)
        .env("VOLT_EVENT_ID", event.id.to_string())
        .env(
            "VOLT_EVENT_TYPE",
            event.fields.event_type.as_deref().unwrap_or(""),
        )
        .env("VOLT_FROM", event.fields.from.as_deref().unwrap_or(""))
        .env("VOLT_TO", event.fields.to.as_deref().unwrap_or(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A timed-out command is killed when its future is dropped.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DeliveryError::Start {
            program: program.to_owned(),
            source,
        })?;
    let mut stdin = child.stdin.take();
    let mut json =
        serde_json::to_string(&event.to_detailed_json()).map_err(DeliveryError::Encode)?;
    json.push('\n');
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A command that ignores its input closes the pipe early; that is its business.
            let _ = stdin.write_all(json.as_bytes()).await;
        }
        drop(stdin);
    };
    let run = async { tokio::join!(feed, child.wait_with_output()).1 };
    let output = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| DeliveryError::Killed {
            program: program.to_owned(),
            timeout,
        })?
        .map_err(|source| DeliveryError::Wait {
            program: program.to_owned(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(DeliveryError::Exited {
            program: program.to_owned(),
            status: output.status,
            stderr: truncate(String::from_utf8_lossy(&output.stderr).trim()),
        })
    }
}
