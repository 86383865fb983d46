//! Text from outside (event bodies, request paths, delivery errors) made safe to print: a
//! control character in it (ESC, newline, backspace) must not reach a terminal or a log line
//! as itself, a long one must not fill the screen, and a credential an upstream server echoes
//! back must not be shown.

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

/// What a credential is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Words after which an upstream answer may echo a credential of the request. What follows
/// `Authorization` (a header echoed as `Authorization: Basic ...` or in JSON as
/// `"authorization":"..."`) is cut to the end of its line or string, when a `:` or `=` says a
/// value follows (`Authorization required` names none); what follows `Bearer`, up to the end
/// of the token.
const CREDENTIAL_NAMES: [&str; 2] = ["authorization", "bearer"];

/// `text` with every one of `secrets` (the request's own credentials) and every value of an
/// `Authorization` header or `Bearer` token in it replaced by [`REDACTED`]. An upstream server
/// (or a proxy in front of it) that echoes the request in its error answer would otherwise put
/// the credentials into the log; the named secrets catch an echo in any shape, the patterns
/// one of a credential that is not ours to know (a proxy's own header, a token file rotated).
pub fn scrubbed(text: &str, secrets: &[&str]) -> String {
    let mut scrubbed = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.trim().is_empty()) {
        scrubbed = scrubbed.replace(secret, REDACTED);
    }
    for name in CREDENTIAL_NAMES {
        scrubbed = redact_after(&scrubbed, name);
    }
    scrubbed
}

/// [`scrubbed`], then [`visible_start`]: cut only after scrubbing, so that the start of a
/// credential the cut would leave is never shown either.
pub fn scrubbed_start(text: &str, secrets: &[&str], max_chars: usize) -> String {
    visible_start(scrubbed(text, secrets).trim(), max_chars)
}

/// Replace the value after each (ASCII case-insensitive) occurrence of `name`.
fn redact_after(text: &str, name: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(name) {
        let name_end = search + found + name.len();
        // Separators between a name and its value: `: `, `=`, `":"`, a space.
        let value_start = name_end
            + text[name_end..]
                .find(|c: char| !matches!(c, ':' | '=' | '"' | '\'' | ' ' | '\t'))
                .unwrap_or(text.len() - name_end);
        let header_like = text[name_end..value_start].contains([':', '=']);
        let rest = &text[value_start..];
        let value_len = if name == "authorization" {
            rest.find(['"', '\'', '\r', '\n', ',', '}', '<', '&'])
        } else {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)))
        }
        .unwrap_or(rest.len());
        let is_value = value_start > name_end && (header_like || name == "bearer");
        if !is_value || value_len == 0 || rest[..value_len].contains(REDACTED) {
            search = name_end;
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str(REDACTED);
        copied = value_start + value_len;
        search = copied;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_secrets_and_echoed_credentials_are_redacted() {
        let token = "tok-7Hq2";
        for (echo, kept) in [
            ("token tok-7Hq2 expired", "token [redacted] expired"),
            (
                "401: Authorization: Bearer other-9x.y_z\nretry later",
                "401: Authorization: [redacted]\nretry later",
            ),
            (
                r#"{"headers":{"authorization":"Basic dTpw","x":1}}"#,
                r#"{"headers":{"authorization":"[redacted]","x":1}}"#,
            ),
            (
                "got bearer abc/def== from you",
                "got bearer [redacted] from you",
            ),
            ("AUTHORIZATION=Bearer q1", "AUTHORIZATION=[redacted]"),
            ("Authorization required", "Authorization required"),
            ("no credentials here", "no credentials here"),
            ("bearer", "bearer"),
            ("Bearer: ", "Bearer: "),
        ] {
            assert_eq!(scrubbed(echo, &[token, ""]), kept, "{echo}");
        }
    }

    #[test]
    fn a_cut_never_shows_the_start_of_a_credential() {
        let echo = format!("{}Bearer abcdefgh", "x".repeat(10));
        assert_eq!(scrubbed_start(&echo, &[], 20), "xxxxxxxxxxBearer [re…");
        assert_eq!(
            scrubbed_start("  é\u{1b}Bearer z  ", &["é"], 100),
            "[redacted]\\u{1b}Bearer [redacted]"
        );
    }

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
