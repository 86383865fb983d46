//! The text format's fields, written as tracing-subscriber's default formatter writes them,
//! without its cost for the common ones.
//!
//! Every stored event logs a line of eight fields. The default formatter writes each field
//! through `format_args!` and `str`'s `Debug`, which escapes one character at a time; the
//! line took a fifth of the HTTP workers' instructions per event, its fields most of that
//! (bench/RESULTS.md). Here a string of
//! printable ASCII without a quote or backslash, an integer and a bool are written directly:
//! `Debug` would print them unchanged between quotes, or as they are. Everything else (the
//! message, errors, `Debug` values, other strings, and every field on a terminal, where
//! names are styled) goes to the default formatter, so the output is the same byte for byte.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// The field formatter of the text format: see the module documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'writer> MakeVisitor<Writer<'writer>> for PlainFields {
    type Visitor = PlainVisitor<'writer>;

    fn make_visitor(&self, writer: Writer<'writer>) -> Self::Visitor {
        PlainVisitor {
            styled: writer.has_ansi_escapes(),
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

pub struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    /// Field names are styled: every field goes to the default formatter.
    styled: bool,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Whether the field `name` may be written here rather than by the default formatter,
    /// which treats the message, raw identifiers and the `log` crate's metadata apart.
    fn writes_plainly(&self, name: &str) -> bool {
        !self.styled
            && self.result.is_ok()
            && name != "message"
            && !name.starts_with("r#")
            && !name.starts_with("log.")
    }

    fn start_field(&mut self, name: &str) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(name)?;
        self.writer.write_char('=')
    }

    /// An integer or bool, whose `Debug` is its `Display`.
    fn record_number(
        &mut self,
        field: &Field,
        value: impl fmt::Display,
        otherwise: impl FnOnce(&mut DefaultVisitor<'_>, &Field),
    ) {
        if self.writes_plainly(field.name()) {
            self.result = self
                .start_field(field.name())
                .and_then(|()| write!(self.writer, "{value}"));
        } else {
            self.delegate(field, otherwise);
        }
    }

    /// Hand one field to the default formatter, which pads and writes it as usual.
    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>, &Field)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor, field);
        self.result = visitor.finish();
        // The default formatter skips the `log` crate's metadata without padding.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }
}

/// Whether `str`'s `Debug` prints `value` unchanged between its quotes.
fn debug_prints_as_is(value: &str) -> bool {
    value
        .bytes()
        .all(|byte| matches!(byte, b' '..=b'~') && byte != b'"' && byte != b'\\')
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.writes_plainly(field.name()) && debug_prints_as_is(value) {
            self.result = self.start_field(field.name()).and_then(|()| {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            });
        } else {
            self.delegate(field, |visitor, field| visitor.record_str(field, value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_number(field, value, |visitor, field| {
            visitor.record_i64(field, value)
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_number(field, value, |visitor, field| {
            visitor.record_u64(field, value)
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_number(field, value, |visitor, field| {
            visitor.record_bool(field, value)
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(field, |visitor, field| visitor.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.delegate(field, |visitor, field| visitor.record_debug(field, value));
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::subscriber::with_default;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::format::DefaultFields;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// Every line that `log` writes, formatted by the text format with `fields`.
    fn lines<F>(fields: F, ansi: bool, log: impl Fn()) -> String
    where
        F: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let output = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(output.clone())
            .with_ansi(ansi)
            .without_time()
            .fmt_fields(fields)
            .finish();
        with_default(subscriber, log);
        String::from_utf8(output.0.lock().unwrap().clone()).unwrap()
    }

    /// Strings with every printable ASCII character, the ones `Debug` escapes, and others.
    const STRINGS: [&str; 9] = [
        "",
        "message.received",
        "+15555550123",
        " !#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~",
        "a \"quoted\" word",
        "back\\slash",
        "line\nbreak\tand tab\r",
        "escape \u{1b}[31m red",
        "caf\u{e9} \u{1f4f1} \u{200b}\u{301}",
    ];

    fn log_everything() {
        for text in STRINGS {
            tracing::info!(
                id = 7_i64,
                count = 3_u64,
                negative = -12_i64,
                duplicate = false,
                value = text,
                shown = %text,
                debugged = ?text,
                "Event stored {text}"
            );
            tracing::warn!(r#type = text, flag = true, "{}", text);
            tracing::error!(error = &std::io::Error::other(text) as &dyn std::error::Error);
            tracing::info!(value = text);
        }
        tracing::info!(big = u64::MAX, small = i64::MIN, "limits");
        tracing::info!("a message alone");
    }

    #[test]
    fn lines_are_those_of_the_default_formatter_byte_for_byte() {
        for ansi in [false, true] {
            let plain = lines(PlainFields, ansi, log_everything);
            let default = lines(DefaultFields::new(), ansi, log_everything);
            assert_eq!(plain, default, "ansi = {ansi}");
            assert_eq!(plain.matches("Event stored").count(), STRINGS.len());
            if !ansi {
                let fields = r#"id=7 count=3 negative=-12 duplicate=false value="+15555550123""#;
                assert!(plain.contains(fields), "{plain}");
            }
        }
    }

    #[test]
    fn only_strings_that_debug_prints_unchanged_are_written_directly() {
        for text in STRINGS {
            let unchanged = format!("{text:?}") == format!("\"{text}\"");
            assert_eq!(debug_prints_as_is(text), unchanged, "{text:?}");
        }
        for byte in 0..=127_u8 {
            let text = char::from(byte).to_string();
            let unchanged = format!("{text:?}") == format!("\"{text}\"");
            assert_eq!(debug_prints_as_is(&text), unchanged, "{text:?}");
        }
    }
}
