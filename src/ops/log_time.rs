//! The time at the start of each log line, as tracing-subscriber's `SystemTime` writes it
//! (`2026-11-30T15:24:15.197507Z`), with the date and time of day formatted once a second.
//!
//! Its formatter builds a calendar date and writes seven numbers through `format_args!` for
//! every line: a quarter of the cost of each event's line (bench/RESULTS.md). Here each
//! thread keeps the text up to the second, and writes only the microseconds.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

#[derive(Debug, Default, Clone, Copy)]
pub struct UtcMicros;

impl FormatTime for UtcMicros {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            // A clock before 1970: whatever the default formatter makes of it.
            return tracing_subscriber::fmt::time::SystemTime.format_time(writer);
        };
        SECOND.with_borrow_mut(|second| {
            writer.write_str(second.text(since_epoch.as_secs()))?;
            let micros = micros(since_epoch.subsec_micros());
            writer.write_str(std::str::from_utf8(&micros).expect("ASCII digits"))
        })
    }
}

thread_local! {
    static SECOND: RefCell<Second> = const { RefCell::new(Second { at: u64::MAX, text: String::new() }) };
}

/// One second since the epoch and its text up to the decimal point.
struct Second {
    at: u64,
    text: String,
}

impl Second {
    fn text(&mut self, at: u64) -> &str {
        if at != self.at {
            self.at = at;
            self.text = second_text(at);
        }
        &self.text
    }
}

/// `2026-11-30T15:24:15.` for the second `at` since the epoch.
fn second_text(at: u64) -> String {
    let time = i64::try_from(at)
        .ok()
        .and_then(|at| DateTime::<Utc>::from_timestamp(at, 0))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    time.format("%Y-%m-%dT%H:%M:%S.").to_string()
}

/// Six digits of microseconds, then `Z`.
fn micros(value: u32) -> [u8; 7] {
    let mut digits = [b'0'; 7];
    digits[6] = b'Z';
    let mut rest = value;
    for digit in digits[..6].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    digits
}

#[cfg(test)]
mod tests {
    use chrono::SecondsFormat;

    use super::*;

    fn formatted(timer: impl FormatTime) -> String {
        let mut text = String::new();
        timer.format_time(&mut Writer::new(&mut text)).unwrap();
        text
    }

    #[test]
    fn times_read_as_rfc_3339_with_microseconds() {
        let times = [
            (0, 0),
            (951_782_400, 1),         // 2000-02-29, a leap day
            (1_798_761_599, 999_999), // the last microsecond of 2026
            (1_796_052_255, 197_507),
            (253_402_300_799, 500_000), // 9999-12-31T23:59:59
        ];
        for (at, micros_part) in times {
            let expected = DateTime::<Utc>::from_timestamp(at as i64, micros_part * 1_000)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Micros, true);
            let text = second_text(at) + std::str::from_utf8(&micros(micros_part)).unwrap();
            assert_eq!(text, expected);
        }
    }

    #[test]
    fn lines_carry_the_time_as_the_default_timer_writes_it() {
        let before = formatted(tracing_subscriber::fmt::time::SystemTime);
        let ours = formatted(UtcMicros);
        let again = formatted(UtcMicros);
        let after = formatted(tracing_subscriber::fmt::time::SystemTime);
        // Fixed width, so text order is time order.
        for text in [&ours, &again] {
            assert_eq!(text.len(), before.len(), "{text} beside {before}");
            assert!(
                before <= *text && *text <= after,
                "{before} <= {text} <= {after}"
            );
        }
        assert!(ours <= again);
    }
}
