//! Lenient field extraction from Volt webhook bodies.
//!
//! Volt documents its event body only loosely, so nothing here may fail: each field is looked
//! up under its known spellings, in a nested `payload`, `data` or `message` object first (where
//! Volt puts the message) and then at the top level. Whatever cannot be found stays empty.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::event::EventFields;

/// The nested objects looked into, in the order they are searched.
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

// Positions in KEYS, in the order each field's spellings are tried.
const EVENT_TYPE: [usize; 2] = [0, 1];
const TYPE: usize = 2;
const DIRECTION: [usize; 1] = [3];
const FROM: [usize; 3] = [4, 5, 6];
const TO: [usize; 3] = [7, 8, 9];
const MESSAGE_ID: [usize; 3] = [10, 11, 12];
const TEXT: [usize; 2] = [13, 14];
const STATUS: [usize; 1] = [15];
const ERROR_CODE: [usize; 2] = [16, 17];

/// What an object key is to the extraction; a `match` on the text, so the compiler picks the
/// comparisons (by length first) instead of a scan of every known key.
fn classify(key: &str) -> Key {
    let field = match key {
        "payload" => return Key::Nested(0),
        "data" => return Key::Nested(1),
        "message" => return Key::Nested(2),
        "event_type" => 0,
        "eventType" => 1,
        "type" => 2,
        "direction" => 3,
        "from_number" => 4,
        "fromNumber" => 5,
        "from" => 6,
        "to_number" => 7,
        "toNumber" => 8,
        "to" => 9,
        "message_id" => 10,
        "messageId" => 11,
        "id" => 12,
        "text" => 13,
        "body" => 14,
        "status" => 15,
        "error_code" => 16,
        "errorCode" => 17,
        _ => return Key::Other,
    };
    Key::Field(field)
}

/// Fields of a body, and whether the body was JSON at all.
pub fn extract(body: &[u8]) -> (EventFields, bool) {
    use crate::event::without_bom;
    // Parsed in place (a seed rather than a returned value): the scopes are large to move.
    let mut top = None;
    let mut parser = serde_json::Deserializer::from_slice(without_bom(body));
    let parsed = BodySeed(&mut top)
        .deserialize(&mut parser)
        .and_then(|()| parser.end());
    match (parsed, top) {
        (Ok(()), Some(top)) => (top.fields(), true),
        (Ok(()), None) => (EventFields::default(), true),
        (Err(_), _) => (EventFields::default(), false),
    }
}

/// The scalar values of one JSON object under the known keys, in [`KEYS`] order. Parsing into
/// this instead of a `serde_json::Value` tree skips everything else without allocating, and
/// strings without escapes stay borrowed from the body until a field is chosen.
#[derive(Default)]
struct Scope<'de> {
    values: [Option<Cow<'de, str>>; KEYS.len()],
}

/// A top-level object: its own scope and those of its nested objects, in [`NESTED`] order.
#[derive(Default)]
struct TopLevel<'de> {
    nested: [Option<Scope<'de>>; NESTED.len()],
    top: Scope<'de>,
}

impl TopLevel<'_> {
    fn fields(mut self) -> EventFields {
        let mut scopes: Vec<&mut Scope> = self
            .nested
            .iter_mut()
            .flatten()
            .chain([&mut self.top])
            .collect();
        let event_type = take(&mut scopes, &EVENT_TYPE).or_else(|| {
            scopes
                .iter_mut()
                .find_map(|scope| {
                    scope.values[TYPE]
                        .take()
                        .filter(|t| looks_like_event_type(t))
                })
                .map(Cow::into_owned)
        });
        EventFields {
            event_type,
            direction: take(&mut scopes, &DIRECTION),
            from: take(&mut scopes, &FROM),
            to: take(&mut scopes, &TO),
            message_id: take(&mut scopes, &MESSAGE_ID),
            text: take(&mut scopes, &TEXT),
            status: take(&mut scopes, &STATUS),
            error_code: take(&mut scopes, &ERROR_CODE),
        }
    }
}

/// The first value under any of `keys`, scope by scope. Each field has keys of its own, so
/// its value is taken instead of copied.
fn take(scopes: &mut [&mut Scope], keys: &[usize]) -> Option<String> {
    scopes
        .iter_mut()
        .find_map(|scope| keys.iter().find_map(|&k| scope.values[k].take()))
        .map(Cow::into_owned)
}

/// The visitor methods of a seed that fills an object: any other JSON value is read past and
/// fills nothing.
macro_rules! skip_non_objects {
    () => {
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
    };
}

/// Parses a JSON body into its top-level object, left `None` for valid JSON that is not an
/// object.
struct BodySeed<'a, 'de>(&'a mut Option<TopLevel<'de>>);

impl<'de> DeserializeSeed<'de> for BodySeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let top = self.0.insert(TopLevel::default());
        while let Some(key) = map.next_key::<KeyName>()? {
            match key.0 {
                Key::Nested(index) => {
                    // Like a later duplicate key in a parsed object, the last value wins.
                    map.next_value_seed(ScopeSeed(&mut top.nested[index]))?;
                }
                Key::Field(index) => top.top.values[index] = map.next_value::<Scalar>()?.0,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    skip_non_objects!();
}

#[derive(Debug, PartialEq, Eq)]
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
                Ok(KeyName(classify(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Parses a nested object's scope into its slot; any other value (string, array, null...)
/// leaves no scope.
struct ScopeSeed<'a, 'de>(&'a mut Option<Scope<'de>>);

impl<'de> DeserializeSeed<'de> for ScopeSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        *self.0 = None;
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScopeSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let scope = self.0.insert(Scope::default());
        while let Some(key) = map.next_key::<KeyName>()? {
            match key.0 {
                Key::Field(index) => scope.values[index] = map.next_value::<Scalar>()?.0,
                Key::Nested(_) | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    skip_non_objects!();
}

/// Strings as they are, numbers and booleans as text; objects, arrays, null and empty strings
/// are not fields.
struct Scalar<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar((!s.is_empty()).then_some(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Scalar((!s.is_empty()).then(|| Cow::Owned(s.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Scalar((!s.is_empty()).then_some(Cow::Owned(s))))
            }
            // Numbers print exactly as a parsed `serde_json::Number` would.
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(serde_json::Number::from(n).to_string().into())))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(serde_json::Number::from(n).to_string().into())))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
                Ok(Scalar(
                    serde_json::Number::from_f64(n).map(|n| n.to_string().into()),
                ))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Borrowed(if b {
                    "true"
                } else {
                    "false"
                }))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
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
    fn classify_agrees_with_the_key_lists() {
        for (i, key) in NESTED.iter().enumerate() {
            assert_eq!(classify(key), Key::Nested(i), "{key}");
        }
        for (i, key) in KEYS.iter().enumerate() {
            assert_eq!(classify(key), Key::Field(i), "{key}");
        }
        assert_eq!(classify("Type"), Key::Other);
        assert_eq!(KEYS[TYPE], "type");
        let spellings = [
            &EVENT_TYPE[..],
            &DIRECTION,
            &FROM,
            &TO,
            &MESSAGE_ID,
            &TEXT,
            &STATUS,
            &ERROR_CODE,
        ];
        let mut seen: Vec<usize> = spellings.concat();
        seen.push(TYPE);
        seen.sort_unstable();
        assert_eq!(seen, (0..KEYS.len()).collect::<Vec<_>>());
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
    fn trailing_garbage_is_not_json() {
        assert!(!extract(br#"{"id":"a"} x"#).1);
        assert!(!extract(br#"{"id":"a""#).1);
    }
}
