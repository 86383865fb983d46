//! `voltd send-test-event`: post a realistic Volt event to this voltd, to try the whole path
//! (receive, store, forward) without waiting for a real message.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::args::TestEventType;
use super::display::visible;
use crate::config::Settings;
use crate::request_failure::RequestFailure;

pub async fn execute(event_type: TestEventType, settings: Settings) -> anyhow::Result<()> {
    let body = sample_body(event_type, &unique_message_id());
    let url = target_url(&settings);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut response = client
        .post(url.as_str())
        .insert_header(("Content-Type", "application/json"))
        .send_body(body.clone())
        .await
        .map_err(|e| {
            anyhow::Error::new(RequestFailure::from(e))
                .context(format!("cannot POST to {url} (is voltd running?)"))
        })?;
    let answer = response.body().limit(64 * 1024).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "POST {url}\n{body}\n")?;
    writeln!(
        out,
        "{} {}",
        response.status(),
        visible(&String::from_utf8_lossy(&answer))
    )?;
    out.flush()?;
    drop(out);
    if !response.status().is_success() {
        anyhow::bail!("voltd did not accept the test event");
    }
    Ok(())
}

/// The local listener when it speaks plain HTTP (a wildcard address is reached through
/// loopback); `public_url` itself when TLS is on, so the certificate matches the name.
fn target_url(settings: &Settings) -> String {
    let path = settings.server.webhook_path();
    if settings.server.tls().is_some() {
        return settings.server.public_url.to_string();
    }
    let listen = settings.server.listen;
    let address = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    };
    format!("http://{address}{path}")
}

/// A random UUID, as Volt's message ids look, marked as a test's.
fn unique_message_id() -> String {
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    format!("test-{uuid}")
}

fn sample_body(event_type: TestEventType, message_id: &str) -> String {
    let payload = match event_type {
        TestEventType::Received => serde_json::json!({
            "event_type": "message.received",
            "id": message_id,
            "direction": "inbound",
            "from_number": "+15555550145",
            "to_number": "+15555550123",
            "text": "Test message from voltd send-test-event",
            "type": "SMS",
        }),
        TestEventType::Sent => serde_json::json!({
            "event_type": "message.sent",
            "id": message_id,
            "direction": "outbound",
            "from_number": "+15555550123",
            "to_number": "+15555550145",
            "text": "Test reply from voltd send-test-event",
            "type": "SMS",
            "status": "sent",
        }),
        TestEventType::Finalized => serde_json::json!({
            "event_type": "message.finalized",
            "id": message_id,
            "direction": "outbound",
            "from_number": "+15555550123",
            "to_number": "+15555550145",
            "text": "Test reply from voltd send-test-event",
            "type": "SMS",
            "status": "delivered",
        }),
    };
    serde_json::json!({ "payload": payload }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_message_ids_are_distinct_random_uuids() {
        let id = unique_message_id();
        let uuid = uuid::Uuid::parse_str(id.strip_prefix("test-").unwrap()).unwrap();
        assert_eq!(uuid.get_version(), Some(uuid::Version::Random));
        assert_ne!(id, unique_message_id());
    }
}
