//! What a database error means for voltd: one event the database would not take, or the
//! database itself failing; and, at start-up, a database not reachable yet.

use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

/// SQLite result codes (the primary code is the low byte of the extended one).
const SQLITE_BUSY: i32 = 5;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_TOOBIG: i32 = 18;
const SQLITE_MISMATCH: i32 = 20;

/// Whether `error` is about the event being stored rather than the database: a constraint it
/// breaks, a value the database cannot hold. Every other failure (full, read-only, locked,
/// unreachable, timed out) would fail any event alike.
pub(super) fn is_event_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Encode(_) => true,
        sqlx::Error::Database(e) => {
            e.kind() != ErrorKind::Other
                || sqlite_code(e.as_ref())
                    .is_some_and(|code| matches!(code, SQLITE_TOOBIG | SQLITE_MISMATCH))
                // Class 22: data exceptions (a value out of range, an invalid byte sequence).
                || postgres_state(e.as_ref()).is_some_and(|state| state.starts_with("22"))
        }
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
        let refused = sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(!is_event_failure(&refused));
        assert!(is_unreachable(&refused));
        assert!(!is_event_failure(&sqlx::Error::PoolTimedOut));
        assert!(is_unreachable(&sqlx::Error::PoolTimedOut));
        let malformed = sqlx::Error::Configuration("bad sslmode".into());
        assert!(!is_unreachable(&malformed));
        assert!(is_event_failure(&sqlx::Error::Encode("too long".into())));
    }
}
