//! Lenient field extraction from Volt webhook bodies.
//!
//! Volt documents its event body only loosely, so nothing here may fail: each field is looked
//! up under its known spellings, in a nested `payload`, `data` or `message` object first (where
//! Volt puts the message) and then at the top level. Whatever cannot be found stays empty.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use crate::event::EventFields;

const NESTED: [&str; 3] = ["payload", "data", "message"];

/// Every key a field is looked up under; values under other keys are skipped unparsed.
const KEYS: [&str; 18] = [
    "event_type",
    "eventType",
    "type",
    "direction",
    "from_number",
    "fromNumber",
    "from",
    "to_number",
    "toNumber",
    "to",
    "message_id",
    "messageId",
    "id",
    "text",
    "body",
    "status",
    "error_code",
    "errorCode",
];

/// Fields of a body, and whether the body was JSON at all.
pub fn extract(body: &[u8]) -> (EventFields, bool) {
    use crate::event::without_bom;
    match serde_json::from_slice::<Body>(without_bom(body)) {
        Ok(Body(Some(top))) => (top.fields(), true),
        Ok(Body(None)) => (EventFields::default(), true),
        Err(_) => (EventFields::default(), false),
    }
}

/// The scalar values of one JSON object under the known keys, in [`KEYS`] order. Parsing into
/// this instead of a `serde_json::Value` tree skips everything else without allocating.
#[derive(Default)]
struct Scope {
    values: [Option<String>; KEYS.len()],
}

impl Scope {
    fn get(&self, key: &str) -> Option<&String> {
        let index = KEYS.iter().position(|k| *k == key)?;
        self.values[index].as_ref()
    }
}

/// A top-level object: its own scope and those of its nested objects, in [`NESTED`] order.
#[derive(Default)]
struct TopLevel {
    nested: [Option<Scope>; NESTED.len()],
    top: Scope,
}

impl TopLevel {
    fn fields(self) -> EventFields {
        let scopes: Vec<&Scope> = self.nested.iter().flatten().chain([&self.top]).collect();
        let find = |keys: &[&str]| -> Option<String> {
            scopes
                .iter()
                .find_map(|scope| keys.iter().find_map(|k| scope.get(k)))
                .cloned()
        };
        let event_type = find(&["event_type", "eventType"]).or_else(|| {
            scopes
                .iter()
                .find_map(|scope| scope.get("type").filter(|t| looks_like_event_type(t)))
                .cloned()
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
}

/// A JSON body: its top-level object, or `None` for valid JSON that is not an object.
struct Body(Option<TopLevel>);

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut top = TopLevel::default();
        while let Some(key) = map.next_key::<KeyName>()? {
            match key.0 {
                Key::Nested(index) => {
                    // Like a later duplicate key in a parsed object, the last value wins.
                    top.nested[index] = map.next_value::<MaybeScope>()?.0;
                }
                Key::Field(index) => top.top.values[index] = map.next_value::<Scalar>()?.0,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Body(Some(top)))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Body(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Body, E> {
        Ok(Body(None))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Body, E> {
        Ok(Body(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Body, E> {
        Ok(Body(None))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Body, E> {
        Ok(Body(None))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Body, E> {
        Ok(Body(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Body, E> {
        Ok(Body(None))
    }
}

enum Key {
    Nested(usize),
    Field(usize),
    Other,
}

/// An object key, classified without keeping it (escaped keys arrive as owned strings).
struct KeyName(Key);

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyName, E> {
                let kind = if let Some(i) = NESTED.iter().position(|k| *k == key) {
                    Key::Nested(i)
                } else if let Some(i) = KEYS.iter().position(|k| *k == key) {
                    Key::Field(i)
                } else {
                    Key::Other
                };
                Ok(KeyName(kind))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A nested object's scope; any other value (string, array, null...) is no scope.
struct MaybeScope(Option<Scope>);

impl<'de> Deserialize<'de> for MaybeScope {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScopeVisitor;
        impl<'de> Visitor<'de> for ScopeVisitor {
            type Value = MaybeScope;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeScope, A::Error> {
                let mut scope = Scope::default();
                while let Some(key) = map.next_key::<KeyName>()? {
                    match key.0 {
                        Key::Field(index) => scope.values[index] = map.next_value::<Scalar>()?.0,
                        Key::Nested(_) | Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(MaybeScope(Some(scope)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeScope, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeScope(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeScope, E> {
                Ok(MaybeScope(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeScope, E> {
                Ok(MaybeScope(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeScope, E> {
                Ok(MaybeScope(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeScope, E> {
                Ok(MaybeScope(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<MaybeScope, E> {
                Ok(MaybeScope(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MaybeScope, E> {
                Ok(MaybeScope(None))
            }
        }
        deserializer.deserialize_any(ScopeVisitor)
    }
}

/// Strings as they are, numbers and booleans as text; objects, arrays, null and empty strings
/// are not fields.
struct Scalar(Option<String>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar((!s.is_empty()).then(|| s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Scalar, E> {
                Ok(Scalar((!s.is_empty()).then_some(s)))
            }
            // Numbers print exactly as a parsed `serde_json::Number` would.
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(serde_json::Number::from(n).to_string())))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(serde_json::Number::from(n).to_string())))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar, E> {
                Ok(Scalar(
                    serde_json::Number::from_f64(n).map(|n| n.to_string()),
                ))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar(Some(b.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
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
    fn trailing_garbage_is_not_json() {
        assert!(!extract(br#"{"id":"a"} x"#).1);
        assert!(!extract(br#"{"id":"a""#).1);
    }
}
