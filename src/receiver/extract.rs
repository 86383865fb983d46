//! Lenient field extraction from Volt webhook bodies.
//!
//! Volt documents its event body only loosely, so nothing here may fail: each field is looked
//! up under its known spellings, in a nested `payload`, `data` or `message` object first (where
//! Volt puts the message) and then at the top level. Whatever cannot be found stays empty.

use std::borrow::Cow;

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};

use crate::event::{EventFields, without_bom};

/// The nested objects looked into, in the order they are searched.
const NESTED: [&str; 3] = ["payload", "data", "message"];

/// Fields of a body, and whether the body was JSON at all.
///
/// The body is parsed whole by serde_json, through every value as a `serde_json::Value` would
/// be, so extraction and `events list` (which parses the body into a `Value` for `payload`)
/// agree on what is JSON. What it builds is lighter than a `Value`: strings stay borrowed
/// from the body where they have no escapes, and an object is its members in a `Vec` rather
/// than a map, which the few lookups here search from the end (a later duplicate key wins,
/// as in a parsed object). That took extraction from about 6% of the daemon's CPU time to
/// about 3% (bench/RESULTS.md). Rejected: a visitor that skips the values no field reads,
/// which would accept bodies serde_json refuses, and was much harder to follow.
pub fn extract(body: &[u8]) -> (EventFields, bool) {
    let body = without_bom(body);
    if let Ok(parsed) = serde_json::from_slice::<Json>(body) {
        return (fields_of_value(&parsed), true);
    }
    // One invalid UTF-8 sequence, or one escaped half of a surrogate pair (`\ud83d` alone),
    // in any string makes serde_json refuse the whole body; read it with such parts replaced
    // by U+FFFD (the stored body keeps them), so that the message id, and with it
    // deduplication, is still found.
    let text = String::from_utf8_lossy(body);
    let repaired = match without_lone_surrogates(&text) {
        Some(repaired) => Cow::Owned(repaired),
        None if matches!(text, Cow::Owned(_)) => text,
        None => return (EventFields::default(), false),
    };
    match serde_json::from_str::<Json>(&repaired) {
        Ok(parsed) => (fields_of_value(&parsed), true),
        Err(_) => (EventFields::default(), false),
    }
}

fn fields_of_value(parsed: &Json) -> EventFields {
    match parsed {
        Json::Object(top) => fields_of(top),
        _ => EventFields::default(),
    }
}

/// `text` with each `\uXXXX` escape of a surrogate that is not half of a pair replaced by
/// `\ufffd`; `None` when there is none. Other escapes are stepped over whole, so that an
/// escaped backslash followed by `ud800` is left alone.
fn without_lone_surrogates(text: &str) -> Option<String> {
    let surrogate = |at: usize, range: std::ops::RangeInclusive<u16>| {
        text.get(at..at + 6)
            .and_then(|escape| escape.strip_prefix("\\u"))
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            .is_some_and(|unit| range.contains(&unit))
    };
    let mut repaired = String::new();
    let mut copied = 0;
    let mut at = 0;
    while let Some(found) = text[at..].find('\\') {
        let start = at + found;
        if surrogate(start, 0xD800..=0xDBFF) && surrogate(start + 6, 0xDC00..=0xDFFF) {
            at = start + 12;
        } else if surrogate(start, 0xD800..=0xDFFF) {
            repaired.push_str(&text[copied..start]);
            repaired.push_str("\\ufffd");
            at = start + 6;
            copied = at;
        } else {
            // The escaped character, which may be more than one byte (invalid JSON then).
            at = start + 1 + text[start + 1..].chars().next().map_or(0, char::len_utf8);
        }
    }
    if copied == 0 {
        return None;
    }
    repaired.push_str(&text[copied..]);
    Some(repaired)
}

fn fields_of(top: &Members) -> EventFields {
    let mut scopes: Vec<&Members> = NESTED
        .iter()
        .filter_map(|key| match member(top, key) {
            Some(Json::Object(scope)) => Some(scope),
            _ => None,
        })
        .collect();
    scopes.push(top);
    // The first value found, scope by scope, each scope trying the spellings in order.
    let find = |spellings: &[&str]| {
        scopes.iter().find_map(|scope| {
            spellings
                .iter()
                .find_map(|key| member(scope, key).and_then(scalar))
        })
    };
    // `type` is also Volt's word for the channel ("SMS"), so it names the event only when
    // nothing else does and it reads like one.
    let event_type = find(&["event_type", "eventType"]).or_else(|| {
        scopes.iter().find_map(|scope| {
            member(scope, "type")
                .and_then(scalar)
                .filter(|t| looks_like_event_type(t))
        })
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

/// The value of `key` in an object; the last one when the key repeats, as in a parsed object.
fn member<'j, 'a>(members: &'j Members<'a>, key: &str) -> Option<&'j Json<'a>> {
    members
        .iter()
        .rev()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value)
}

/// Strings as they are, numbers as `serde_json` prints them, booleans as words; empty
/// strings, null, objects and arrays are not fields.
fn scalar(value: &Json) -> Option<String> {
    match value {
        Json::Text(s) if !s.is_empty() => Some(s.to_string()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON value, as much of it as extraction reads.
enum Json<'a> {
    Text(Cow<'a, str>),
    Number(serde_json::Number),
    Bool(bool),
    Object(Members<'a>),
    /// Null, or an array (its elements parsed, then dropped).
    Other,
}

/// About how many members Volt's objects have.
const MEMBERS_EXPECTED: usize = 16;

/// An object's members in the order they came.
type Members<'a> = Vec<(Cow<'a, str>, Json<'a>)>;

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Json::Other, Json::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Text(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Json::Text(Cow::Owned(value.to_owned())))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        while items.next_element::<Json>()?.is_some() {}
        Ok(Json::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        // Room for a Volt object's members at once, rather than growing to it.
        let mut members = Vec::with_capacity(entries.size_hint().unwrap_or(MEMBERS_EXPECTED));
        while let Some((Key(name), value)) = entries.next_entry::<Key, Json>()? {
            members.push((name, value));
        }
        Ok(Json::Object(members))
    }
}

/// An object's key, borrowed from the body when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Key(Cow::Owned(value.to_owned())))
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
    fn lone_surrogates_are_replaced_and_pairs_kept() {
        assert_eq!(without_lone_surrogates(r#"{"a":"\ud83d\ude00"}"#), None);
        assert_eq!(without_lone_surrogates(r#"{"a":"\\ud83d"}"#), None);
        assert_eq!(
            without_lone_surrogates(r#"["\ud83d x","\uDE00","\ud83d\ud83d\ude00", "\ud83d"#)
                .as_deref(),
            Some(r#"["\ufffd x","\ufffd","\ufffd\ud83d\ude00", "\ufffd"#)
        );
        let (f, json) = extract(br#"{"id":"m1","text":"\udc00 \"\\"}"#);
        assert!(json);
        assert_eq!(f.message_id.as_deref(), Some("m1"));
        assert_eq!(f.text.as_deref(), Some("\u{fffd} \"\\"));
    }

    #[test]
    fn a_byte_order_mark_does_not_hide_the_fields() {
        let (f, json) = extract(b"\xEF\xBB\xBF{\"eventType\":\"message.received\"}");
        assert!(json);
        assert_eq!(f.event_type.as_deref(), Some("message.received"));
    }

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

    #[test]
    fn a_later_duplicate_key_wins_as_in_a_parsed_object() {
        let (f, _) = extract(
            br#"{"payload":{"id":"a"},"payload":{"status":"sent"},"status":"x","status":[1]}"#,
        );
        assert_eq!(f.message_id, None);
        assert_eq!(f.status.as_deref(), Some("sent"));
        let (f, _) = extract(br#"{"status":"x","status":[1]}"#);
        assert_eq!(f.status, None);
    }

    #[test]
    fn escapes_floats_and_non_object_nesting() {
        let (f, json) = extract(
            br#"{"message":"hi","data":[{"id":"no"}],"t\u0065xt":"caf\u00e9","error_code":5.0,"id":true,"x":{"deep":[1,{"a":null}]}}"#,
        );
        assert!(json);
        assert_eq!(f.text.as_deref(), Some("caf\u{e9}"));
        assert_eq!(f.error_code.as_deref(), Some("5.0"));
        assert_eq!(f.message_id.as_deref(), Some("true"));
    }

    #[test]
    fn scopes_are_searched_payload_data_message_then_top() {
        let body = br#"{"from":"top","message":{"from":"message"},"data":{"from":"data"},"payload":{"from":"payload"}}"#;
        assert_eq!(extract(body).0.from.as_deref(), Some("payload"));
        let body = br#"{"from":"top","message":{"from":"message"},"data":{"from":"data"}}"#;
        assert_eq!(extract(body).0.from.as_deref(), Some("data"));
        let body = br#"{"from":"top","message":{"from":"message"}}"#;
        assert_eq!(extract(body).0.from.as_deref(), Some("message"));
    }

    #[test]
    fn spellings_are_tried_in_order_within_a_scope_only() {
        let (f, _) = extract(br#"{"from":"c","fromNumber":"b","from_number":"a"}"#);
        assert_eq!(f.from.as_deref(), Some("a"));
        let (f, _) = extract(br#"{"from":"c","fromNumber":"b"}"#);
        assert_eq!(f.from.as_deref(), Some("b"));
        let (f, _) = extract(br#"{"to_number":"top","payload":{"to":"nested"}}"#);
        assert_eq!(f.to.as_deref(), Some("nested"));
        let (f, _) =
            extract(br#"{"id":"c","messageId":"b","message_id":"a","body":"y","text":"x"}"#);
        assert_eq!(f.message_id.as_deref(), Some("a"));
        assert_eq!(f.text.as_deref(), Some("x"));
        let (f, _) =
            extract(br#"{"errorCode":"b","error_code":"a","eventType":"x.b","event_type":"x.a"}"#);
        assert_eq!(f.error_code.as_deref(), Some("a"));
        assert_eq!(f.event_type.as_deref(), Some("x.a"));
    }

    #[test]
    fn type_counts_only_without_event_type_anywhere() {
        let (f, _) =
            extract(br#"{"payload":{"type":"message.received"},"eventType":"message.sent"}"#);
        assert_eq!(f.event_type.as_deref(), Some("message.sent"));
        let (f, _) = extract(
            br#"{"type":"top.level","payload":{"type":"SMS"},"message":{"type":"message.received"}}"#,
        );
        assert_eq!(f.event_type.as_deref(), Some("message.received"));
        for not_a_type in [
            "SMS",
            "a.b.c",
            ".received",
            "message.",
            "message received",
            "a.b-c",
        ] {
            let body = format!(r#"{{"type":"{not_a_type}"}}"#);
            assert_eq!(extract(body.as_bytes()).0.event_type, None, "{not_a_type}");
        }
    }

    #[test]
    fn what_is_not_a_field_leaves_the_next_spelling_or_scope_to_answer() {
        let (f, _) = extract(
            br#"{"payload":{"from":"","to":null,"id":{"a":1},"text":[1]},"from":"+1","to":"+2","id":"m","body":"b"}"#,
        );
        assert_eq!(f.from.as_deref(), Some("+1"));
        assert_eq!(f.to.as_deref(), Some("+2"));
        assert_eq!(f.message_id.as_deref(), Some("m"));
        assert_eq!(f.text.as_deref(), Some("b"));
        let (f, _) = extract(br#"{"from_number":"","fromNumber":null,"from":"+1"}"#);
        assert_eq!(f.from.as_deref(), Some("+1"));
    }

    #[test]
    fn numbers_print_as_serde_json_prints_them_and_booleans_as_words() {
        let (f, _) = extract(
            br#"{"error_code":-0,"status":1e3,"id":18446744073709551616,"text":-5,"to":false,"from":1.5e300,"direction":true}"#,
        );
        assert_eq!(f.error_code.as_deref(), Some("-0.0"));
        assert_eq!(f.status.as_deref(), Some("1000.0"));
        assert_eq!(f.message_id.as_deref(), Some("1.8446744073709552e+19"));
        assert_eq!(f.text.as_deref(), Some("-5"));
        assert_eq!(f.to.as_deref(), Some("false"));
        assert_eq!(f.from.as_deref(), Some("1.5e+300"));
        assert_eq!(f.direction.as_deref(), Some("true"));
    }

    #[test]
    fn only_the_top_level_holds_scopes() {
        let (f, _) = extract(br#"{"payload":{"data":{"from":"deep"},"message":{"id":"m"}}}"#);
        assert_eq!(f, EventFields::default());
        let (f, _) = extract(br#"{"payload":{"id":"a"},"payload":"replaced","id":"top"}"#);
        assert_eq!(f.message_id.as_deref(), Some("top"));
    }

    /// Even where no field is read: nesting past `serde_json`'s depth limit. (Invalid UTF-8
    /// and lone surrogates are read around, below.)
    #[test]
    fn a_body_the_parser_refuses_anywhere_is_not_json() {
        let deep = format!(
            r#"{{"id":"m","x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(extract(deep.as_bytes()), (EventFields::default(), false));
    }

    #[test]
    fn invalid_utf8_in_one_string_does_not_hide_the_others() {
        let (fields, json) = extract(
            b"{\"payload\":{\"event_type\":\"message.received\",\"id\":\"m1\",\
              \"text\":\"caf\xe9 \xff\"}}",
        );
        assert!(json);
        assert_eq!(fields.message_id.as_deref(), Some("m1"));
        assert_eq!(fields.event_type.as_deref(), Some("message.received"));
        assert_eq!(fields.text.as_deref(), Some("caf\u{fffd} \u{fffd}"));
    }

    #[test]
    fn trailing_garbage_is_not_json() {
        assert!(!extract(br#"{"id":"a"} x"#).1);
        assert!(!extract(br#"{"id":"a""#).1);
    }
}
