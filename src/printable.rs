//! Text from outside (event bodies, request paths, delivery errors) made safe to print: a
//! control character in it (ESC, newline, backspace) must not reach a terminal or a log line
//! as itself, and a long one must not fill the screen.

use std::borrow::Cow;

/// `text` with every control character replaced by its Rust escape (`\n`, `\u{1b}`).
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

/// [`visible`] `text`, cut to its first `max_chars` characters with `…` when longer.
pub fn visible_start(text: &str, max_chars: usize) -> String {
    let shown = visible(text);
    match shown.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &shown[..end]),
        None => shown.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(visible("plain text, café ✓"), "plain text, café ✓");
        assert_eq!(
            visible("red\u{1b}[31m\nline\r\u{7}\t\u{9b}"),
            "red\\u{1b}[31m\\nline\\r\\u{7}\\t\\u{9b}"
        );
        assert!(matches!(visible("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_text_is_cut_after_escaping() {
        assert_eq!(visible_start("/short", 10), "/short");
        assert_eq!(visible_start("/exactly10", 10), "/exactly10");
        assert_eq!(visible_start("/ééééééééééé", 5), "/éééé…");
        assert_eq!(visible_start("\n\n\n", 3), "\\n\\…");
    }
}
