//! `[storage]`: where events are kept.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::{fields, show};

/// Bounded so the duplicate lookup of a batch stays within SQLite's bind-parameter limit.
const MAX_BATCH_LIMIT: u64 = 10_000;
const SECONDS_PER_DAY: u64 = 86_400;
/// Ten years: a longer window would only hold more keys in memory.
const MAX_DEDUP_WINDOW_DAYS: u64 = 3650;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Kept as text: the store parses it, and [`redacted_url`] must work on a URL too broken
    /// to parse.
    #[serde(deserialize_with = "storage_url", serialize_with = "show::storage_url")]
    pub url: String,
    #[serde(deserialize_with = "fields::positive")]
    pub queue_capacity: usize,
    #[serde(deserialize_with = "max_batch")]
    pub max_batch: usize,
    /// Events older than this are deleted; `None` (`retention_days = 0`) keeps everything.
    #[serde(rename = "retention_days", with = "retention_days")]
    pub retention: Option<Duration>,
    /// With SQLite, how long after an event a repeat delivery of it is still a duplicate: the
    /// writer keeps the keys of this window in memory. PostgreSQL's unique index has none.
    #[serde(rename = "dedup_window_days", with = "dedup_window_days")]
    pub dedup_window: Duration,
    /// How long `voltd run` keeps trying a database it cannot reach at start-up; zero tries
    /// once.
    #[serde(rename = "startup_retry_secs", with = "fields::secs")]
    pub startup_retry: Duration,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://voltd.db".to_owned(),
            queue_capacity: 8192,
            max_batch: 512,
            retention: None,
            dedup_window: Duration::from_secs(30 * SECONDS_PER_DAY),
            startup_retry: Duration::from_secs(60),
        }
    }
}

fn max_batch<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    fields::between(deserializer, 1, MAX_BATCH_LIMIT)
}

/// A durable SQLite file or a PostgreSQL URL. Only the scheme and the SQLite path are checked
/// here; the store checks a PostgreSQL URL the way its driver reads it.
fn storage_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let url = String::deserialize(deserializer)?;
    match Backend::of_url(&url) {
        Some(Backend::Sqlite) if is_durable_sqlite_url(&url) => Ok(url),
        Some(Backend::Postgres) => Ok(url),
        _ => Err(serde::de::Error::custom(format!(
            "{:?} is not supported; use \"sqlite://PATH\" with a file path, such as \
             \"sqlite:///var/lib/voltd/voltd.db\" (an in-memory database would lose every \
             event), or \"postgres://USER@HOST/DATABASE\" for a store shared by several \
             instances",
            redacted_url(&url)
        ))),
    }
}

/// A file path: an in-memory or path-less database would lose every event on exit.
fn is_durable_sqlite_url(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    !path.is_empty() && !path.contains(":memory:") && !url.contains("mode=memory")
}

/// `retention_days`: whole days, 0 meaning forever.
mod retention_days {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    use super::SECONDS_PER_DAY;
    use crate::config::fields;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let days: u32 = fields::count(deserializer)?;
        Ok((days > 0).then(|| Duration::from_secs(u64::from(days) * SECONDS_PER_DAY)))
    }

    pub fn serialize<S: Serializer>(
        retention: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(retention.map_or(0, |kept| kept.as_secs() / SECONDS_PER_DAY))
    }
}

/// `dedup_window_days`: whole days, at least one.
mod dedup_window_days {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    use super::{MAX_DEDUP_WINDOW_DAYS, SECONDS_PER_DAY};
    use crate::config::fields;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let days: u64 = fields::between(deserializer, 1, MAX_DEDUP_WINDOW_DAYS)?;
        Ok(Duration::from_secs(days * SECONDS_PER_DAY))
    }

    pub fn serialize<S: Serializer>(window: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(window.as_secs() / SECONDS_PER_DAY)
    }
}

/// Which database a `storage.url` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }
}

/// `url` with any password replaced, for messages and logs. Works on the text, so that a URL
/// too broken to parse (an unencoded `#` or `/` in the password) is redacted as well: the
/// user information ends at the last `@` of the authority, and a `password=` parameter is
/// replaced wherever it stands.
pub fn redacted_url(url: &str) -> String {
    let mut text = url.to_owned();
    if let Some(scheme_end) = text.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &text[rest_start..];
        // The host never holds '@', a password may: the user information ends at the last.
        if let Some(at) = rest.rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            text.replace_range(rest_start + colon + 1..rest_start + at, "redacted");
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("password=") {
        let starts_parameter = at == 0 || matches!(rest.as_bytes()[at - 1], b'?' | b'&');
        let value_start = at + "password=".len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if starts_parameter {
            out.push_str("redacted");
            rest = &rest[rest.find('&').unwrap_or(rest.len())..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_told_apart_by_scheme() {
        assert_eq!(Backend::of_url("sqlite://voltd.db"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgres://db.internal/voltd"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("postgresql://localhost/voltd"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("mysql://localhost/voltd"), None);
        assert_eq!(Backend::of_url("voltd.db"), None);
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted_url("postgres://voltd:s3cret@db.internal:5432/voltd"),
            "postgres://voltd:redacted@db.internal:5432/voltd"
        );
        assert_eq!(redacted_url("sqlite://voltd.db"), "sqlite://voltd.db");
        assert_eq!(
            redacted_url("postgres://db.internal/voltd"),
            "postgres://db.internal/voltd"
        );
        for (url, redacted) in [
            (
                "postgres://postgres:pa#ss@127.0.0.1:5432/db",
                "postgres://postgres:redacted@127.0.0.1:5432/db",
            ),
            (
                "postgres://u:p/w?x@@db:99999/voltd",
                "postgres://u:redacted@db:99999/voltd",
            ),
            (
                "postgres://u:pw@/voltd?host=/var/run/postgresql",
                "postgres://u:redacted@/voltd?host=/var/run/postgresql",
            ),
            (
                "postgres://u@db/voltd?sslmode=require&password=qsecretQ&x=1",
                "postgres://u@db/voltd?sslmode=require&password=redacted&x=1",
            ),
            (
                "postgres://db/voltd?password=a&b",
                "postgres://db/voltd?password=redacted&b",
            ),
        ] {
            assert_eq!(redacted_url(url), redacted, "{url}");
        }
    }
}
