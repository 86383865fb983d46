//! Text for people: event bodies and delivery errors come from outside, so a control
//! character in them (ESC, newline, backspace) must not reach the terminal as itself.

use crate::event::StoredEvent;
pub use crate::printable::visible;

/// A field that may be absent, shown as `-` then.
pub fn field(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| visible(v).into_owned())
}

/// An event's fields as `events list` and `events tail` show them.
pub struct EventColumns {
    pub id: i64,
    pub received_at: String,
    pub event_type: String,
    pub direction: String,
    pub from: String,
    pub to: String,
    pub signature: &'static str,
    pub message_id: String,
    pub text: String,
}

impl EventColumns {
    pub fn of(event: &StoredEvent) -> Self {
        let f = &event.fields;
        Self {
            id: event.id,
            received_at: event
                .received_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            event_type: field(f.event_type.as_deref()),
            direction: field(f.direction.as_deref()),
            from: field(f.from.as_deref()),
            to: field(f.to.as_deref()),
            signature: event.signature.as_str(),
            message_id: field(f.message_id.as_deref()),
            text: field(f.text.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_are_a_dash_and_present_ones_visible() {
        assert_eq!(field(None), "-");
        assert_eq!(field(Some("a\nb")), "a\\nb");
    }
}
