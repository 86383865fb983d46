//! One delivery attempt to one sink.

use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;

use awc::error::{ConnectError, SendRequestError};
use url::Url;

use super::signing::sign;
use crate::config::{ForwardSettings, Target, origin};
use crate::event::StoredEvent;

/// How much of a failing answer or a command's stderr is kept as the last error.
const ERROR_KEEP_BYTES: usize = 1024;

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    Failed(String),
}

/// A sink ready to send: HTTP sinks own a client (awc clients belong to the runtime thread
/// that built them, so this is built inside the delivery task).
pub struct Sink {
    pub settings: ForwardSettings,
    http: Option<awc::Client>,
}

impl Sink {
    pub fn new(settings: ForwardSettings) -> Self {
        let http = matches!(settings.target, Target::Http { .. }).then(|| {
            awc::Client::builder()
                .timeout(settings.timeout)
                .connector(awc::Connector::new().timeout(settings.timeout))
                .finish()
        });
        Self { settings, http }
    }

    pub async fn deliver(&self, event: &StoredEvent) -> Attempt {
        let result = match (&self.settings.target, &self.http) {
            (
                Target::Http {
                    url,
                    headers,
                    signing_key,
                },
                Some(client),
            ) => {
                let key = signing_key.as_ref().map(|k| k.expose_secret());
                post(client, url, headers, key, event).await
            }
            (Target::Command { program, args }, _) => {
                run_command(program, args, self.settings.timeout, event).await
            }
            (Target::Http { .. }, None) => Err("no HTTP client".to_owned()),
        };
        match result {
            Ok(()) => Attempt::Delivered,
            Err(error) => Attempt::Failed(format!("sink {:?}: {error}", self.settings.name)),
        }
    }
}

async fn post(
    client: &awc::Client,
    url: &Url,
    headers: &std::collections::BTreeMap<String, String>,
    signing_key: Option<&[u8]>,
    event: &StoredEvent,
) -> Result<(), String> {
    let mut request = client
        .post(url.as_str())
        .insert_header((
            "Content-Type",
            event.content_type.as_deref().unwrap_or("application/json"),
        ))
        .insert_header(("X-Voltd-Event-Id", event.id.to_string()))
        .insert_header((
            "X-Voltd-Event-Type",
            event.fields.event_type.as_deref().unwrap_or(""),
        ));
    for (name, value) in headers {
        request = request.insert_header((name.as_str(), value.as_str()));
    }
    if let Some(key) = signing_key {
        // The id stays the same across retries and replays so receivers can deduplicate.
        let message_id = format!("voltd_evt_{}", event.id);
        let timestamp = Utc::now().timestamp();
        request = request
            .insert_header(("webhook-id", message_id.as_str()))
            .insert_header(("webhook-timestamp", timestamp.to_string()))
            .insert_header((
                "webhook-signature",
                sign(key, &message_id, timestamp, &event.body),
            ));
    }
    let mut response = request
        .send_body(event.body.clone())
        .await
        .map_err(|e| format!("POST to {} failed: {}", origin(url), describe(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.body().limit(ERROR_KEEP_BYTES * 16).await;
    let detail = body
        .map(|b| truncate(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    Err(format!(
        "POST to {} answered HTTP {}: {detail}",
        origin(url),
        status.as_u16()
    ))
}

/// The failure in words of our own: awc's text for some errors includes the whole URL, and
/// this message is logged and stored where a URL's credentials must not appear.
fn describe(error: &SendRequestError) -> String {
    match error {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            "no answer in time".to_owned()
        }
        SendRequestError::Connect(ConnectError::Io(e)) => format!("cannot connect: {e}"),
        SendRequestError::Connect(ConnectError::Resolver(_) | ConnectError::NoRecords) => {
            "cannot resolve the host name".to_owned()
        }
        SendRequestError::Connect(_) => "cannot connect".to_owned(),
        SendRequestError::Send(e) => format!("cannot send the request: {e}"),
        SendRequestError::Response(e) => format!("the answer is not valid HTTP: {e}"),
        _ => "the request failed".to_owned(),
    }
}

async fn run_command(
    program: &std::path::Path,
    args: &[String],
    timeout: Duration,
    event: &StoredEvent,
) -> Result<(), String> {
    let describe = program.display();
    let mut child = tokio::process::Command::new(program)
        .args(args)
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
    let mut json = event.to_detailed_json().to_string();
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

fn truncate(text: &str) -> String {
    if text.len() <= ERROR_KEEP_BYTES {
        return text.to_owned();
    }
    let mut end = ERROR_KEEP_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
