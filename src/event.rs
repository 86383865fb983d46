//! The domain type: one webhook delivery from Volt, as received and as stored.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Fields read leniently from a Volt webhook body; all optional because Volt's body format is
/// only partly documented and a body we cannot read is still stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFields {
    pub event_type: Option<String>,
    pub direction: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub message_id: Option<String>,
    pub text: Option<String>,
    pub status: Option<String>,
    pub error_code: Option<String>,
}

/// Some senders start UTF-8 JSON with a byte-order mark, which JSON parsers refuse.
pub fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

/// The result of checking Volt's signature header on arrival, stored with every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    Missing,
    /// No key is configured, so nothing was checked.
    Unchecked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Missing => "missing",
            Verdict::Unchecked => "unchecked",
        }
    }

    /// The inverse of [`Verdict::as_str`], for values read back from the store; anything
    /// unrecognised reads as unchecked.
    pub fn from_stored(text: &str) -> Self {
        match text {
            "valid" => Verdict::Valid,
            "invalid" => Verdict::Invalid,
            "missing" => Verdict::Missing,
            _ => Verdict::Unchecked,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub received_at: DateTime<Utc>,
    pub content_type: Option<String>,
    pub remote_addr: Option<String>,
    /// The `Content-Encoding` the body arrived in (`gzip`, `br, gzip`), `None` when it came as
    /// it is; `body` is always the decoded entity.
    pub content_encoding: Option<String>,
    pub body: Vec<u8>,
    pub fields: EventFields,
    /// The result of checking Volt's signature header on arrival.
    pub signature: Verdict,
}

impl NewEvent {
    /// The deduplication key: (event type, message id, status or body hash), present only
    /// when the event carries a message id. Without an id two identical bodies are two
    /// genuine events (two "Yes" replies), so they must never be merged.
    pub fn dedup_key(&self) -> Option<String> {
        const SEPARATOR: char = '\u{1f}';
        let message_id = self.fields.message_id.as_deref()?;
        let event_type = self.fields.event_type.as_deref().unwrap_or("");
        // Built in place: the writer makes one for every event of every batch.
        let mut key = String::with_capacity(event_type.len() + message_id.len() + 80);
        key.push_str(event_type);
        key.push(SEPARATOR);
        key.push_str(message_id);
        key.push(SEPARATOR);
        match &self.fields.status {
            Some(status) => {
                key.push_str("status:");
                key.push_str(status);
            }
            None => {
                key.push_str("sha256:");
                key.push_str(&hex::encode(Sha256::digest(&self.body)));
            }
        }
        Some(key)
    }
}

/// What storing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored(i64),
    /// A repeat delivery; the id is that of the row stored the first time.
    Duplicate(i64),
}

impl StoreOutcome {
    pub fn id(self) -> i64 {
        match self {
            Self::Stored(id) | Self::Duplicate(id) => id,
        }
    }

    pub fn is_duplicate(self) -> bool {
        matches!(self, Self::Duplicate(_))
    }
}

/// An event read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub content_type: Option<String>,
    pub remote_addr: Option<String>,
    /// As [`NewEvent::content_encoding`].
    pub content_encoding: Option<String>,
    pub body: Vec<u8>,
    pub fields: EventFields,
    pub signature: Verdict,
}

impl StoredEvent {
    /// The receive time as every output shows it: RFC 3339, UTC, to the microsecond.
    pub fn received_at_text(&self) -> String {
        self.received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    /// The line of `voltd events list --json` and `events tail --json`.
    pub fn to_json(&self) -> EventJson<'_> {
        EventJson {
            id: self.id,
            received_at: self.received_at_text(),
            event_type: self.fields.event_type.as_deref(),
            direction: self.fields.direction.as_deref(),
            from: self.fields.from.as_deref(),
            to: self.fields.to.as_deref(),
            message_id: self.fields.message_id.as_deref(),
            payload: serde_json::from_slice(without_bom(&self.body))
                .unwrap_or(serde_json::Value::Null),
            body: String::from_utf8_lossy(&self.body),
        }
    }

    /// Everything stored about the event: `voltd events show` and command sinks' input.
    pub fn to_detailed_json(&self) -> DetailedEventJson<'_> {
        DetailedEventJson {
            line: self.to_json(),
            status: self.fields.status.as_deref(),
            error_code: self.fields.error_code.as_deref(),
            text: self.fields.text.as_deref(),
            content_type: self.content_type.as_deref(),
            content_encoding: self.content_encoding.as_deref(),
            remote_addr: self.remote_addr.as_deref(),
            signature: self.signature.as_str(),
        }
    }
}

/// An event as `events list --json` shows it: exactly the keys of the documented
/// interface, in this order, which scripts rely on.
#[derive(Debug, Serialize)]
pub struct EventJson<'a> {
    id: i64,
    /// RFC 3339 in UTC with microseconds, as the store keeps it.
    received_at: String,
    event_type: Option<&'a str>,
    direction: Option<&'a str>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    message_id: Option<&'a str>,
    /// The body as parsed JSON, or null when it is not JSON.
    payload: serde_json::Value,
    /// The raw body as text, invalid UTF-8 replaced.
    body: Cow<'a, str>,
}

/// The keys of [`EventJson`], then the rest.
#[derive(Debug, Serialize)]
pub struct DetailedEventJson<'a> {
    #[serde(flatten)]
    line: EventJson<'a>,
    status: Option<&'a str>,
    error_code: Option<&'a str>,
    text: Option<&'a str>,
    content_type: Option<&'a str>,
    content_encoding: Option<&'a str>,
    remote_addr: Option<&'a str>,
    signature: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: &str, message_id: Option<&str>, status: Option<&str>) -> NewEvent {
        NewEvent {
            received_at: Utc::now(),
            content_type: None,
            remote_addr: None,
            content_encoding: None,
            body: body.as_bytes().to_vec(),
            fields: EventFields {
                event_type: Some("message.sent".into()),
                message_id: message_id.map(Into::into),
                status: status.map(Into::into),
                ..EventFields::default()
            },
            signature: Verdict::Unchecked,
        }
    }

    fn stored(body: &[u8]) -> StoredEvent {
        use chrono::TimeZone;
        StoredEvent {
            id: 7,
            received_at: Utc.with_ymd_and_hms(2026, 11, 27, 1, 2, 3).unwrap()
                + chrono::Duration::microseconds(45),
            content_type: Some("application/json".into()),
            remote_addr: Some("192.0.2.1".into()),
            content_encoding: Some("gzip".into()),
            body: body.to_vec(),
            fields: EventFields {
                event_type: Some("message.received".into()),
                from: Some("+1555".into()),
                to: Some("+1666".into()),
                message_id: Some("m1".into()),
                text: Some("say \"hi\"".into()),
                error_code: Some("30003".into()),
                ..EventFields::default()
            },
            signature: Verdict::Valid,
        }
    }

    fn json_line(body: &[u8]) -> String {
        serde_json::to_string(&stored(body).to_json()).unwrap()
    }

    #[test]
    fn the_json_line_has_the_documented_keys_in_order() {
        assert_eq!(
            json_line(br#"{"payload":{"id":"m1","z":1,"a":2}}"#),
            r#"{"id":7,"received_at":"2026-11-27T01:02:03.000045Z","event_type":"message.received","direction":null,"from":"+1555","to":"+1666","message_id":"m1","payload":{"payload":{"id":"m1","z":1,"a":2}},"body":"{\"payload\":{\"id\":\"m1\",\"z\":1,\"a\":2}}"}"#
        );
        let with_bom = json_line(b"\xEF\xBB\xBF[1]");
        assert!(with_bom.ends_with("\"payload\":[1],\"body\":\"\u{feff}[1]\"}"));
        let not_utf8 = json_line(b"Yes \xff");
        assert!(not_utf8.ends_with("\"payload\":null,\"body\":\"Yes \u{fffd}\"}"));
    }

    #[test]
    fn the_detailed_json_adds_the_rest_after_the_line() {
        let event = stored(b"Yes");
        let detailed = serde_json::to_string(&event.to_detailed_json()).unwrap();
        assert_eq!(
            detailed,
            format!(
                r#"{},"status":null,"error_code":"30003","text":"say \"hi\"","content_type":"application/json","content_encoding":"gzip","remote_addr":"192.0.2.1","signature":"valid"}}"#,
                json_line(b"Yes").strip_suffix('}').unwrap()
            )
        );
        // `events show` prints it pretty: the flattened view reads as the same object would.
        let parsed: serde_json::Value = serde_json::from_str(&detailed).unwrap();
        assert_eq!(
            serde_json::to_string_pretty(&event.to_detailed_json()).unwrap(),
            serde_json::to_string_pretty(&parsed).unwrap()
        );
    }

    #[test]
    fn no_message_id_means_no_dedup() {
        assert_eq!(event("Yes", None, None).dedup_key(), None);
    }

    #[test]
    fn status_distinguishes_lifecycle_events_of_one_message() {
        let sent = event("a", Some("m1"), Some("sent")).dedup_key();
        let failed = event("a", Some("m1"), Some("failed")).dedup_key();
        assert_ne!(sent, failed);
        assert_eq!(sent, event("b", Some("m1"), Some("sent")).dedup_key());
    }

    #[test]
    fn key_layout() {
        assert_eq!(
            event("a", Some("m1"), Some("sent")).dedup_key().as_deref(),
            Some("message.sent\u{1f}m1\u{1f}status:sent")
        );
        assert_eq!(
            event("a", Some("m1"), None).dedup_key().as_deref(),
            Some(
                "message.sent\u{1f}m1\u{1f}sha256:\
                 ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
            )
        );
    }

    #[test]
    fn without_status_the_body_decides() {
        let a = event("a", Some("m1"), None).dedup_key();
        assert_eq!(a, event("a", Some("m1"), None).dedup_key());
        assert_ne!(a, event("b", Some("m1"), None).dedup_key());
    }
}
