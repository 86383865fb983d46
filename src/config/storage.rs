//! `[storage]`: where events are kept.

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
