//! Lenient field extraction from Volt webhook bodies.
//!
//! Volt documents its event body only loosely, so nothing here may fail: each field is looked
//! up under its known spellings, in a nested `payload`, `data` or `message` object first (where
//! Volt puts the message) and then at the top level. Whatever cannot be found stays empty.

use serde_json::{Map, Value};

use crate::event::EventFields;

const NESTED: [&str; 3] = ["payload", "data", "message"];

/// Fields of a body, and whether the body was JSON at all.
pub fn extract(body: &[u8]) -> (EventFields, bool) {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(top)) => (fields_of(&top), true),
        Ok(_) => (EventFields::default(), true),
        Err(_) => (EventFields::default(), false),
    }
}

fn fields_of(top: &Map<String, Value>) -> EventFields {
    let mut scopes: Vec<&Map<String, Value>> = NESTED
        .iter()
        .filter_map(|key| top.get(*key).and_then(Value::as_object))
        .collect();
    scopes.push(top);
    let find = |keys: &[&str]| -> Option<String> {
        scopes
            .iter()
            .find_map(|scope| keys.iter().find_map(|k| scalar(scope.get(*k)?)))
    };
    let event_type = find(&["event_type", "eventType"]).or_else(|| {
        scopes
            .iter()
            .find_map(|scope| scalar(scope.get("type")?).filter(|t| looks_like_event_type(t)))
    });
    EventFields {
        event_type,
        direction: find(&["direction"]),
        from: find(&["from_number", "fromNumber", "from"]),
        to: find(&["to_number", "toNumber", "to"]),
        message_id: find(&["message_id", "messageId", "id"]),
        text: find(&["text", "body"]),
        status: find(&["status"]),
        error_code: find(&["error_code", "errorCode"]),
    }
}

/// Strings as they are, numbers and booleans as text; objects, arrays and null are not fields.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `message.received` yes, `SMS` no.
fn looks_like_event_type(value: &str) -> bool {
    let mut parts = value.split('.');
    let (Some(noun), Some(verb), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    word(noun) && word(verb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_payload_snake_case() {
        let body = br#"{"payload":{"event_type":"message.finalized","id":"m1","direction":"outbound",
            "from_number":"+1555","to_number":"+1666","text":"hi","type":"SMS","status":"failed","error_code":503}}"#;
        let (f, json) = extract(body);
        assert!(json);
        assert_eq!(f.event_type.as_deref(), Some("message.finalized"));
        assert_eq!(f.message_id.as_deref(), Some("m1"));
        assert_eq!(f.direction.as_deref(), Some("outbound"));
        assert_eq!(f.from.as_deref(), Some("+1555"));
        assert_eq!(f.to.as_deref(), Some("+1666"));
        assert_eq!(f.text.as_deref(), Some("hi"));
        assert_eq!(f.status.as_deref(), Some("failed"));
        assert_eq!(f.error_code.as_deref(), Some("503"));
    }

    #[test]
    fn top_level_camel_case_and_type_as_event_type() {
        let body = br#"{"type":"message.received","messageId":42,"fromNumber":"+1","toNumber":"+2","body":"Yes"}"#;
        let (f, _) = extract(body);
        assert_eq!(f.event_type.as_deref(), Some("message.received"));
        assert_eq!(f.message_id.as_deref(), Some("42"));
        assert_eq!(f.from.as_deref(), Some("+1"));
        assert_eq!(f.text.as_deref(), Some("Yes"));
    }

    #[test]
    fn sms_is_not_an_event_type() {
        let (f, _) = extract(br#"{"data":{"type":"SMS","from":"+1"}}"#);
        assert_eq!(f.event_type, None);
        assert_eq!(f.from.as_deref(), Some("+1"));
    }

    #[test]
    fn nested_values_win_over_top_level() {
        let (f, _) = extract(br#"{"id":"delivery-1","message":{"id":"msg-1"}}"#);
        assert_eq!(f.message_id.as_deref(), Some("msg-1"));
    }

    #[test]
    fn anything_else_yields_empty_fields() {
        for body in [
            &b""[..],
            b"not json",
            b"[1,2]",
            b"\"str\"",
            b"{}",
            b"\xff\xfe",
        ] {
            let (f, _) = extract(body);
            assert_eq!(f, EventFields::default());
        }
        assert!(!extract(b"not json").1);
        assert!(extract(b"[1]").1);
    }
}
