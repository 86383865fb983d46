//! One line for an error and its causes, for the CLI's last word and for log lines.

use std::error::Error;
use std::fmt;

/// Displays an error followed by its [`source`](Error::source) chain, `: `-separated, each
/// cause said once.
///
/// voltd's own errors never repeat their cause in their text, but some third-party ones do
/// (sqlx's "while executing migrations: {0}" also returns that `{0}` as its source), so a
/// cause whose text the line already holds is left out. `tracing`'s `%error` alone would
/// show only the first message; the `{:#}` of `anyhow` repeats what the layers repeat.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = error.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the store")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("while connecting: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn each_cause_follows_its_error_once() {
        let error = Outer(Middle(std::io::Error::other("connection refused")));
        assert_eq!(
            ErrorChain(&error).to_string(),
            "cannot open the store: while connecting: connection refused"
        );
    }

    #[test]
    fn an_error_without_a_source_is_its_own_message() {
        let error = std::io::Error::other("disk full");
        assert_eq!(ErrorChain(&error).to_string(), "disk full");
    }

    #[test]
    fn the_causes_beneath_a_repeated_one_are_still_said() {
        #[derive(Debug, thiserror::Error)]
        #[error("database error")]
        struct Database(#[source] std::io::Error);

        #[derive(Debug, thiserror::Error)]
        #[error("while executing migrations: {0}")]
        struct Migrations(#[source] Database);

        let error = Migrations(Database(std::io::Error::other("no schema selected")));
        assert_eq!(
            ErrorChain(&error).to_string(),
            "while executing migrations: database error: no schema selected"
        );
    }
}
