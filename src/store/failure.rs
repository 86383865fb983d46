//! What a database error means for voltd: the database itself failing, or possibly one
//! event it would not take; and, at start-up, a database not reachable yet.

use sqlx::error::DatabaseError;
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

/// SQLite result codes (the primary code is the low byte of the extended one).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_NOMEM: i32 = 7;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_PROTOCOL: i32 = 15;
const SQLITE_NOTADB: i32 = 26;

/// Why the event writer could not commit, from whichever database it writes to.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
    /// Checking for room beside an SQLite file.
    #[error("cannot write beside the database file")]
    Room(#[source] std::io::Error),
    #[error("the database gave no outcome for an event of the batch")]
    NoOutcome,
}

impl CommitError {
    /// Whether this is the database failing (full, read-only, locked, unreachable, out of
    /// resources), which any event would meet alike, rather than something about the events
    /// being stored. Only failures known to be the database's count: an error not listed
    /// here (a value too large, a constraint) may belong to one event, whose neighbours must
    /// still be stored one by one.
    pub(super) fn is_store_failure(&self) -> bool {
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => {
                is_sqlite_store_failure(error.extended_code & 0xff)
            }
            Self::Sqlite(_) => false,
            Self::Postgres(error) => is_postgres_store_failure(error),
            Self::Room(_) => true,
            Self::NoOutcome => false,
        }
    }
}

fn is_sqlite_store_failure(code: i32) -> bool {
    matches!(
        code,
        SQLITE_BUSY
            | SQLITE_LOCKED
            | SQLITE_NOMEM
            | SQLITE_READONLY
            | SQLITE_IOERR
            | SQLITE_CORRUPT
            | SQLITE_FULL
            | SQLITE_CANTOPEN
            | SQLITE_PROTOCOL
            | SQLITE_NOTADB
    )
}

fn is_postgres_store_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => postgres_state(e.as_ref()).is_some_and(|state| {
            // 08 connection, 53 resources (disk full, out of memory), 57 operator
            // intervention (shutdown, starting up, statement timeout), 58 system (I/O),
            // XX internal; 25006: a read-only transaction, as on a standby.
            ["08", "53", "57", "58", "XX"]
                .iter()
                .any(|class| state.starts_with(class))
                || state == "25006"
        }),
        _ => false,
    }
}

/// Whether opening the store failed because the database cannot be reached yet, which a
/// wait may cure (the server is still starting, the disk not yet mounted, the network or DNS
/// not yet up), as opposed to a refusal that will not change by itself (a wrong password, a
/// database that does not exist, a malformed URL).
pub(super) fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(e) => {
            sqlite_code(e.as_ref())
                .is_some_and(|code| matches!(code, SQLITE_BUSY | SQLITE_IOERR | SQLITE_CANTOPEN))
                // 57P03 "the database system is starting up" (or shutting down), and
                // 53300 too many connections, which a restart of another client frees.
                || postgres_state(e.as_ref())
                    .is_some_and(|state| state.starts_with("57P") || state == "53300")
        }
        _ => false,
    }
}

fn sqlite_code(error: &(dyn DatabaseError + 'static)) -> Option<i32> {
    let error = error.try_downcast_ref::<SqliteError>()?;
    let extended: i32 = error.code()?.parse().ok()?;
    Some(extended & 0xff)
}

fn postgres_state<'e>(error: &'e (dyn DatabaseError + 'static)) -> Option<&'e str> {
    Some(error.try_downcast_ref::<PgDatabaseError>()?.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_the_database_not_the_event() {
        let refused = || sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(CommitError::from(refused()).is_store_failure());
        assert!(is_unreachable(&refused()));
        assert!(CommitError::from(sqlx::Error::PoolTimedOut).is_store_failure());
        assert!(is_unreachable(&sqlx::Error::PoolTimedOut));
        let malformed = sqlx::Error::Configuration("bad sslmode".into());
        assert!(!is_unreachable(&malformed));
        assert!(!CommitError::from(sqlx::Error::Encode("too long".into())).is_store_failure());
        assert!(
            !CommitError::from(sqlx::Error::Protocol("an event got no id".into()))
                .is_store_failure()
        );
    }

    #[test]
    fn sqlite_failures_of_the_file_are_the_database_not_the_event() {
        let failure = |code| {
            CommitError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(failure(rusqlite::ffi::SQLITE_READONLY).is_store_failure());
        assert!(failure(rusqlite::ffi::SQLITE_FULL).is_store_failure());
        assert!(failure(rusqlite::ffi::SQLITE_IOERR_FSYNC).is_store_failure());
        assert!(failure(rusqlite::ffi::SQLITE_BUSY).is_store_failure());
        assert!(!failure(rusqlite::ffi::SQLITE_TOOBIG).is_store_failure());
        assert!(!failure(rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL).is_store_failure());
    }
}
