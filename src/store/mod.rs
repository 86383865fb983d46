//! Durable storage of events, in SQLite (one instance, the default) or PostgreSQL (shared by
//! several instances).
//!
//! Reads go through a small connection pool; all event writes go through one writer
//! (`writer.rs`; a thread of its own on SQLite, a task on PostgreSQL) that commits whatever
//! has queued as one transaction, so one fsync covers many events without delaying a lone one.

mod backend;
mod coordination;
mod dedup_index;
mod deliveries;
mod failure;
mod health;
mod inbox;
mod outbox;
mod postgres;
mod queries;
pub mod retention;
mod sqlite;
#[cfg(test)]
pub(crate) mod test_db;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::{Pool, on_pool};

use crate::backoff::Backoff;
use crate::config::{Backend, redacted_url};

/// Waits between attempts to open an unreachable database at start-up: short at first (a
/// server finishing its start), never long, so voltd is up soon after its database.
const OPEN_RETRY_INITIAL: Duration = Duration::from_millis(500);
const OPEN_RETRY_MAX: Duration = Duration::from_secs(5);

pub use backend::Timestamp;
pub use coordination::{Role, RoleLock};
pub use deliveries::{
    Backlog, DeliveryFilter, DeliveryOutcome, DeliveryRecord, DueDelivery, EventHeader,
    EventSelection,
};
pub use failure::CommitError;
pub use health::{StoreHealth, StoreProblem};
pub use inbox::{DeliveryCount, EventSummary, InboxFilter, Page, SinkState};
pub use outbox::{FirstAttempt, FollowPosition, LookAhead, Outbox, Recorded};
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
    #[error(
        "cannot write to the store at {url} (check that the voltd user may write to the \
         database file and its directory and that the disk is not full; with PostgreSQL, that \
         the server is not a read-only standby and the user may insert into the events table)"
    )]
    NotWritable {
        url: String,
        #[source]
        source: CommitError,
    },
    #[error(
        "the database could not be reached within {} s of start-up (storage.startup_retry_secs)",
        .waited.as_secs()
    )]
    Unreachable {
        waited: Duration,
        #[source]
        source: Box<StoreError>,
    },
    #[error(
        "another voltd is already writing to this SQLite database (it holds the lock on {}): \
         one database file takes one voltd, which alone keeps its deduplication keys. Stop \
         the other, give this one its own storage.url, or use PostgreSQL for several \
         instances",
        .path.display()
    )]
    Locked { path: std::path::PathBuf },
    #[error("cannot lock {} (check that the voltd user may write to the database's directory)", .path.display())]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
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
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot start the store's writer thread")]
    Thread(#[source] std::io::Error),
}

impl StoreError {
    /// Whether opening failed because the database cannot be reached yet, which waiting may
    /// cure; a malformed URL, a wrong password or a missing database will not change by itself.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Open { source, .. } | Self::Connect { source, .. } => {
                failure::is_unreachable(source)
            }
            _ => false,
        }
    }
}

/// What [`Store::open_patiently`] reports before it waits to try again.
#[derive(Debug)]
pub struct OpenRetry<'a> {
    /// The attempt that failed, from 1.
    pub attempt: u32,
    pub error: &'a StoreError,
    pub delay: Duration,
}

/// The event store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// `storage.url` with any password redacted, for messages.
    url: Arc<str>,
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

    /// Open as [`Store::open`] does, trying again with backoff for up to `patience` while
    /// the database cannot be reached (PostgreSQL still starting after a reboot, an SQLite
    /// file on a disk not mounted yet). `on_retry` is told before each wait.
    pub async fn open_patiently(
        url: &str,
        patience: Duration,
        mut on_retry: impl FnMut(OpenRetry<'_>),
    ) -> Result<Self, StoreError> {
        let started = Instant::now();
        let backoff = Backoff {
            initial: OPEN_RETRY_INITIAL,
            max: OPEN_RETRY_MAX,
        };
        let mut attempt = 1;
        loop {
            let error = match Self::open(url).await {
                Ok(store) => return Ok(store),
                Err(e) if e.is_unreachable() => e,
                Err(e) => return Err(e),
            };
            let waited = started.elapsed();
            let delay = backoff.delay(attempt).min(patience.saturating_sub(waited));
            if delay.is_zero() {
                return Err(if attempt == 1 {
                    error
                } else {
                    StoreError::Unreachable {
                        waited,
                        source: Box::new(error),
                    }
                });
            }
            on_retry(OpenRetry {
                attempt,
                error: &error,
                delay,
            });
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn connect(url: &str, create: bool) -> Result<Self, StoreError> {
        let pool = match Backend::of_url(url) {
            Some(Backend::Postgres) => Pool::Postgres(postgres::open(url).await?),
            _ => Pool::Sqlite(sqlite::open(url, create).await?),
        };
        Ok(Self {
            pool,
            url: redacted_url(url).into(),
        })
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

    /// Start the single writer. Events are submitted through the returned handle.
    ///
    /// On SQLite, a repeat of an event received within `dedup_window` is a duplicate (the
    /// writer reads the window's keys first); PostgreSQL's unique index has no window.
    ///
    /// The writer's connection first commits a check: a database that answers but cannot
    /// write (a read-only file, a standby server) must stop start-up, rather than answer every
    /// event 503 while looking alive.
    pub async fn start_writer(
        &self,
        queue_capacity: usize,
        max_batch: usize,
        dedup_window: Duration,
        on_commit: CommitObserver,
    ) -> Result<(EventWriter, WriterTask), StoreError> {
        let conn = match &self.pool {
            // It commits its check on the blocking thread that opens it.
            Pool::Sqlite(pool) => writer::WriteConnection::Sqlite(
                sqlite::writer(pool, &self.url, dedup_window).await?,
            ),
            Pool::Postgres(pool) => {
                let mut writer = postgres::writer(pool).await?;
                writer
                    .probe()
                    .await
                    .map_err(|source| StoreError::NotWritable {
                        url: self.url.to_string(),
                        source: source.into(),
                    })?;
                writer::WriteConnection::Postgres(writer)
            }
        };
        writer::start(conn, queue_capacity, max_batch, on_commit).map_err(StoreError::Thread)
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }
}
