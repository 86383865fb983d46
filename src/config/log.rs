//! `[log]`: how much voltd logs, and in which format.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::fields;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub level: LogLevel,
    #[serde(deserialize_with = "fields::any_case")]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A level (`info`) or a filter of `target=level` directives (`info,voltd=debug,sqlx=warn`),
/// in the grammar of tracing's `EnvFilter`, which the telemetry module builds from it.
///
/// Checked here rather than by parsing an `EnvFilter`, which reads a bare word that is not a
/// level as a target name: a typo such as "inof" would then silence all logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogLevel(String);

impl LogLevel {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for LogLevel {
    fn default() -> Self {
        Self("info".to_owned())
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<LogLevel> for String {
    fn from(level: LogLevel) -> Self {
        level.0
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    /// Directives are kept trimmed, as `EnvFilter` wants them.
    fn try_from(text: String) -> Result<Self, String> {
        let is_level = |word: &str| LEVELS.iter().any(|level| level.eq_ignore_ascii_case(word));
        let is_target = |word: &str| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-'))
        };
        let directives: Option<Vec<String>> = text
            .split(',')
            .map(|directive| match directive.split_once('=') {
                Some((target, level)) if is_target(target.trim()) && is_level(level.trim()) => {
                    Some(format!("{}={}", target.trim(), level.trim()))
                }
                None if is_level(directive.trim()) => Some(directive.trim().to_owned()),
                _ => None,
            })
            .collect();
        match directives {
            Some(directives) => Ok(Self(directives.join(","))),
            None => Err(format!(
                "{text:?} is not a log level; use error, warn, info, debug or trace, or a filter \
                 such as \"info,voltd=debug\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_filters_are_accepted_and_trimmed() {
        for (text, kept) in [
            ("info", "info"),
            ("WARN", "WARN"),
            (
                "warn, voltd=debug ,sqlx::postgres=off",
                "warn,voltd=debug,sqlx::postgres=off",
            ),
            ("actix-web=trace", "actix-web=trace"),
        ] {
            assert_eq!(LogLevel::try_from(text.to_owned()).unwrap().as_str(), kept);
        }
    }

    #[test]
    fn a_word_that_is_no_level_is_refused() {
        for text in [
            "inof",
            "",
            "info,",
            "voltd=loud",
            "=debug",
            "a b=info",
            "voltd[span]=info",
        ] {
            let error = LogLevel::try_from(text.to_owned()).unwrap_err();
            assert!(error.contains("is not a log level"), "{text}: {error}");
        }
    }
}
