//! Durable storage of events in SQLite.
//!
//! Reads go through a small connection pool; all event writes go through one writer task
//! ([`writer`]) that commits whatever has queued as one transaction, so one fsync covers many
//! events without delaying a lone one.

mod deliveries;
mod queries;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

pub use deliveries::{
    Backlog, DeliveryFilter, DeliveryOutcome, DeliveryRecord, DueDelivery, EventHeader,
    EventSelection, Outbox,
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
        "no database at {url} ({source}); voltd has not stored anything there yet. Check \
         storage.url (a relative path is relative to the working directory)"
    )]
    Missing {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("storage.url {url:?} is not a valid SQLite URL: {source}")]
    Url {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// The event store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    options: SqliteConnectOptions,
}

impl Store {
    /// Open (creating if needed) the SQLite database at `url`, in WAL mode with
    /// `synchronous = FULL`: a commit is on disk when it returns, which is what lets the
    /// receiver answer 200.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::connect(url, true).await
    }

    /// Open a database that must already exist: commands that only read must not leave an
    /// empty database behind when pointed at the wrong place.
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        Self::connect(url, false).await.map_err(|e| match e {
            StoreError::Open { url, source } => StoreError::Missing { url, source },
            other => other,
        })
    }

    async fn connect(url: &str, create: bool) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::Url {
                url: url.to_owned(),
                source,
            })?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Open {
                url: url.to_owned(),
                source,
            })?;
        Ok(Self { pool, options })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    /// Start the single writer task. Events are submitted through the returned handle.
    pub async fn start_writer(
        &self,
        queue_capacity: usize,
        max_batch: usize,
        on_commit: CommitObserver,
    ) -> Result<(EventWriter, WriterTask), StoreError> {
        let conn = self.options.connect().await?;
        Ok(writer::start(conn, queue_capacity, max_batch, on_commit))
    }

    /// A cheap round trip proving the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
