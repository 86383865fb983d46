//! Durable storage of events, in SQLite (one instance, the default) or PostgreSQL (shared by
//! several instances).
//!
//! Reads go through a small connection pool; all event writes go through one writer task
//! ([`writer`]) that commits whatever has queued as one transaction, so one fsync covers many
//! events without delaying a lone one.

mod backend;
mod coordination;
mod deliveries;
mod postgres;
mod queries;
mod sqlite;
#[cfg(test)]
pub(crate) mod test_db;
mod writer;

use backend::{Pool, on_pool};

pub use backend::Timestamp;
pub use coordination::{Role, RoleLock};
pub use deliveries::{
    Backlog, DeliveryFilter, DeliveryOutcome, DeliveryRecord, DueDelivery, EventHeader,
    EventSelection, FollowPosition, Outbox,
};
pub use queries::{EventFilter, Registration};
pub use writer::{CommitObserver, EventWriter, WriteError, WriterTask};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the store at {url}: {source}; check that the directory exists and that \
         the voltd user may write to it"
    )]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot connect to PostgreSQL at {url}: {source}; check that the server is running, \
         that the database exists and that the user may connect (storage.url)"
    )]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "no database at {url} ({source}); voltd has not stored anything there yet. Check \
         storage.url (a relative path is relative to the working directory)"
    )]
    Missing {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("storage.url {url:?} is not a valid database URL: {source}")]
    Url {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot apply database migrations: {0}. The database user must be able to create \
         tables; with PostgreSQL, in the first schema of its search_path, which must exist \
         (CREATE SCHEMA, or GRANT USAGE, CREATE ON SCHEMA ... TO the user)"
    )]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
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

/// The event store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Open the store `url` names, creating an SQLite file if needed. Commits are durable when
    /// they return (SQLite: WAL with `synchronous = FULL`; PostgreSQL: `synchronous_commit`
    /// on), which is what lets the receiver answer 200.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::connect(url, true).await
    }

    /// Open a store that must already exist: commands that only read must not leave an
    /// empty SQLite database behind when pointed at the wrong place.
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        Self::connect(url, false).await
    }

    async fn connect(url: &str, create: bool) -> Result<Self, StoreError> {
        let pool = match Backend::of_url(url) {
            Some(Backend::Postgres) => Pool::Postgres(postgres::open(url).await?),
            _ => Pool::Sqlite(sqlite::open(url, create).await?),
        };
        Ok(Self { pool })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Bring the schema up to date. Several instances may do this at once: PostgreSQL
    /// migrations run under an advisory lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
            Pool::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Start the single writer task. Events are submitted through the returned handle.
    pub async fn start_writer(
        &self,
        queue_capacity: usize,
        max_batch: usize,
        on_commit: CommitObserver,
    ) -> Result<(EventWriter, WriterTask), StoreError> {
        let conn = match &self.pool {
            Pool::Sqlite(pool) => writer::WriteConnection::Sqlite(sqlite::writer(pool).await?),
            Pool::Postgres(pool) => {
                writer::WriteConnection::Postgres(postgres::writer(pool).await?)
            }
        };
        Ok(writer::start(conn, queue_capacity, max_batch, on_commit))
    }

    /// A cheap round trip proving the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }
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
