//! Command sinks: run a program with the event as JSON on stdin.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::sink::truncate;
use crate::config::CommandTarget;
use crate::event::StoredEvent;

pub(super) async fn run(
    target: &CommandTarget,
    timeout: Duration,
    event: &StoredEvent,
) -> Result<(), String> {
    let describe = target.program.display();
    let mut child = tokio::process::Command::new(&target.program)
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
        .map_err(|e| format!("cannot start {describe}: {e}"))?;
    let mut stdin = child.stdin.take();
    let mut json = serde_json::to_string(&event.to_detailed_json())
        .map_err(|e| format!("cannot write event {} as JSON: {e}", event.id))?;
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
        .map_err(|_| format!("{describe} killed after {} s", timeout.as_secs()))?
        .map_err(|e| format!("{describe}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{describe} {}: {}",
            output.status,
            truncate(String::from_utf8_lossy(&output.stderr).trim())
        ))
    }
}
