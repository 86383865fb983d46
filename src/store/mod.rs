//! Durable storage of events, in SQLite (one instance, the default) or PostgreSQL (shared by
//! several instances).
//!
//! Reads go through a small connection pool; all event writes go through one writer task
//! (`writer.rs`) that commits whatever has queued as one transaction, so one fsync covers many
//! events without delaying a lone one.

mod backend;
mod coordination;
mod deliveries;
mod postgres;
mod queries;
pub mod retention;
mod sqlite;
#[cfg(test)]
pub(crate) mod test_db;
mod writer;

use backend::{Pool, on_pool};

use crate::config::Backend;

pub use backend::Timestamp;
pub use coordination::{Role, RoleLock};
pub use deliveries::{
    Backlog, DeliveryFilter, DeliveryOutcome, DeliveryRecord, DueDelivery, EventHeader,
    EventSelection, FollowPosition, Outbox,
};
pub use postgres::InvalidPostgresUrl;
pub use queries::EventFilter;
pub use writer::{CommitObserver, EventWriter, WriteError, WriterTask};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the store at {url} (check that the directory exists and that the voltd \
         user may write to it)"
    )]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot connect to PostgreSQL at {url} (check storage.url, that the server is running, \
         that the database exists and that the user may connect)"
    )]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "no database at {url}: voltd has not stored anything there yet (check storage.url; a \
         relative path is relative to the working directory)"
    )]
    Missing {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("storage.url {url:?} is not a valid database URL")]
    Url {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot apply database migrations (the database user must be able to create tables; \
         with PostgreSQL, in the first schema of its search_path, which must exist: CREATE \
         SCHEMA, or GRANT USAGE, CREATE ON SCHEMA ... TO the user)"
    )]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error")]
    Query(#[from] sqlx::Error),
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

    /// Check `url` as [`Store::open`] would read it, opening nothing, so that a malformed URL
    /// is reported as configuration before anything starts.
    pub fn check_url(url: &str) -> Result<(), InvalidPostgresUrl> {
        match Backend::of_url(url) {
            Some(Backend::Postgres) => postgres::check_url(url),
            _ => Ok(()),
        }
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
