//! What only SQLite needs: opening the file, and storing a batch of new events, deduplicated
//! through the writer's [`DedupIndex`].

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::TransactionBehavior;
use rusqlite::types::Type;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqliteConnection, SqlitePool};

use super::backend::Timestamp;
use super::dedup_index::{DedupIndex, KeyHash};
use super::{CommitError, StoreError};
use crate::event::{NewEvent, StoreOutcome};

pub(super) async fn open(url: &str, create: bool) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| StoreError::Url {
            url: url.to_owned(),
            source,
        })?
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .disable_statement_logging();
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|source| {
            let url = url.to_owned();
            if create {
                StoreError::Open { url, source }
            } else {
                StoreError::Missing { url, source }
            }
        })
}

/// The event writer's side of SQLite: its own connection, outside the pool, on a thread of
/// its own (see [`writer::start`](super::writer)), and the index of the dedup keys received
/// within the dedup window.
///
/// The connection is rusqlite's, not sqlx's: sqlx runs each SQLite connection on a worker
/// thread of its own and hands every statement over to it, so each batch crossed threads
/// twice more and built its INSERT's text afresh. Here the writer's thread calls SQLite
/// itself, with the one INSERT prepared once (bench/RESULTS.md).
pub(super) struct SqliteWriter {
    conn: rusqlite::Connection,
    index: DedupIndex,
    window: chrono::Duration,
    /// Held while this writer lives: see [`lock_writer`].
    _lock: Option<File>,
}

/// Open the event writer's connection, read the keys of the last `window` into its index and
/// commit a first check ([`probe`]), all on a blocking thread rather than the runtime's.
/// `url` names the store in errors.
pub(super) async fn writer(
    pool: &SqlitePool,
    url: &str,
    window: Duration,
) -> Result<SqliteWriter, StoreError> {
    let file = pool.connect_options().get_filename().to_owned();
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || open_writer(&file, &url, window))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn open_writer(file: &Path, url: &str, window: Duration) -> Result<SqliteWriter, StoreError> {
    let not_writable = |error: CommitError| StoreError::NotWritable {
        url: url.to_owned(),
        source: error,
    };
    let conn = rusqlite::Connection::open_with_flags(
        file,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| not_writable(e.into()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| not_writable(e.into()))?;
    // The pool made the file WAL already; FULL syncs the WAL at every commit.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| not_writable(e.into()))?;
    let lock = lock_writer(conn.path().unwrap_or_default())?;
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let started = Instant::now();
    let mut index = DedupIndex::new();
    let keys = load_keys(&conn, &mut index, window_start(window))?;
    tracing::info!(
        keys,
        memory_kib = index.bytes() / 1024,
        took_ms = started.elapsed().as_millis() as u64,
        window_days = window.num_days(),
        "Read the dedup keys of the events received within the dedup window"
    );
    let mut writer = SqliteWriter {
        conn,
        index,
        window,
        _lock: lock,
    };
    writer.probe().map_err(not_writable)?;
    Ok(writer)
}

/// How long a statement waits for a lock another connection holds (the event writer, the
/// outbox, a CLI command) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Take the lock file beside the database, so that a second voltd on the same file stops at
/// start-up: the dedup keys live in this writer's memory, so a second writer would store
/// repeats that this one would have answered as duplicates. The operating system lets go of
/// the lock when the process ends, however it ends.
fn lock_writer(database: &str) -> Result<Option<File>, StoreError> {
    if database.is_empty() {
        return Ok(None);
    }
    let path = PathBuf::from(format!("{database}-writer.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Lock {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
        Err(TryLockError::Error(source)) => Err(StoreError::Lock { path, source }),
    }
}

/// The oldest receive time inside the window, as of now.
fn window_start(window: chrono::Duration) -> DateTime<Utc> {
    Utc::now()
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Put the key of every event received since `since` into `index`; returns how many. The
/// index `events_by_received_at` holds both columns, so this reads no event row.
fn load_keys(
    conn: &rusqlite::Connection,
    index: &mut DedupIndex,
    since: DateTime<Utc>,
) -> rusqlite::Result<u64> {
    let mut statement = conn.prepare(
        "SELECT id, dedup_key, received_at FROM events \
         WHERE received_at >= ?1 AND dedup_key IS NOT NULL",
    )?;
    let mut rows = statement.query([Timestamp(since).to_text()])?;
    let mut count = 0;
    while let Some(row) = rows.next()? {
        let received_at = row.get_ref(2)?.as_str()?;
        let received_at = DateTime::parse_from_rfc3339(received_at)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, Type::Text, e.into()))?;
        let key = row.get_ref(1)?.as_str()?;
        index.insert(
            index.hash(key),
            row.get(0)?,
            received_at.with_timezone(&Utc),
        );
        count += 1;
    }
    Ok(count)
}

impl SqliteWriter {
    /// Store `events[rows]`, whose dedup keys are distinct; returns one outcome per row, in
    /// order. A row is a duplicate when an event with its key was received within the window.
    pub(super) fn store_distinct(
        &mut self,
        events: &[&NewEvent],
        keys: &[Option<String>],
        rows: &[usize],
    ) -> Result<Vec<StoreOutcome>, CommitError> {
        let since = window_start(self.window);
        self.index.forget_before(since);
        let hashes: Vec<Option<KeyHash>> = keys
            .iter()
            .map(|key| key.as_deref().map(|key| self.index.hash(key)))
            .collect();
        let candidates: Vec<i64> = rows
            .iter()
            .filter_map(|&i| hashes[i])
            .flat_map(|hash| self.index.candidates(hash))
            .collect();
        let stored = if candidates.is_empty() {
            HashMap::new()
        } else {
            stored_keys(&self.conn, &candidates, since)?
        };
        let is_stored = |index: usize| keys[index].as_ref().and_then(|key| stored.get(key));
        let new_rows: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| is_stored(i).is_none())
            .collect();
        let ids = insert_rows(&mut self.conn, events, keys, &new_rows)?;
        // Committed: from now on a repeat of these keys is a duplicate.
        for (&index, &id) in new_rows.iter().zip(&ids) {
            if let Some(hash) = hashes[index] {
                self.index.insert(hash, id, events[index].received_at);
            }
        }
        let mut ids = ids.into_iter();
        Ok(rows
            .iter()
            .map(|&index| match is_stored(index) {
                Some(&id) => StoreOutcome::Duplicate(id),
                None => StoreOutcome::Stored(ids.next().expect("an id for every new row")),
            })
            .collect())
    }

    /// See [`probe`].
    pub(super) fn probe(&mut self) -> Result<(), CommitError> {
        probe(&self.conn)
    }

    pub(super) fn close(self) -> Result<(), CommitError> {
        self.conn.close().map_err(|(_, error)| error.into())
    }
}

/// Of the events `ids`, those received since `since`: the newest id for each dedup key. The
/// ids travel as one JSON array, so one prepared statement serves every batch.
fn stored_keys(
    conn: &rusqlite::Connection,
    ids: &[i64],
    since: DateTime<Utc>,
) -> rusqlite::Result<HashMap<String, i64>> {
    let ids = serde_json::to_string(ids)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    let mut statement = conn.prepare_cached(
        "SELECT id, dedup_key FROM events \
         WHERE id IN (SELECT value FROM json_each(?1)) AND received_at >= ?2 \
         AND dedup_key IS NOT NULL",
    )?;
    let mut rows = statement.query((ids, Timestamp(since).to_text()))?;
    let mut newest: HashMap<String, i64> = HashMap::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let kept = newest.entry(row.get(1)?).or_insert(id);
        *kept = (*kept).max(id);
    }
    Ok(newest)
}

/// A commit that changes nothing, then room on the disk for a large batch.
///
/// The commit writes `user_version` (which voltd does not use) back as it is. That dirties
/// the database header, so the commit really appends to the WAL and syncs, and it fails as an
/// event would on a read-only file or a locked database, without a table of its own.
/// Rejected: a rolled-back write, which never reaches the disk, and an INSERT of no rows,
/// which writes nothing either.
///
/// A one-page commit still fits on a disk too full for an event (a failed commit leaves the
/// WAL file longer than its last frame, and an event changes several pages), so readiness
/// would flap between ready and 503 while every event failed: the probe also writes
/// [`ROOM_NEEDED`] to a file beside the database and deletes it.
fn probe(conn: &rusqlite::Connection) -> Result<(), CommitError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    conn.pragma_update(None, "user_version", version)?;
    let Some(file) = conn.path().filter(|file| !file.is_empty()) else {
        return Ok(());
    };
    let scratch = PathBuf::from(format!("{file}-room-check"));
    let written = write_zeros(&scratch, ROOM_NEEDED);
    let _ = std::fs::remove_file(&scratch);
    written.map_err(CommitError::Room)
}

/// The free space a healthy database must have: a batch of events near `max_body_bytes`
/// (1 MiB by default), with its index pages.
const ROOM_NEEDED: usize = 2 * 1024 * 1024;

fn write_zeros(path: &Path, bytes: usize) -> std::io::Result<()> {
    let zeros = vec![0u8; 64 * 1024];
    let mut file = std::fs::File::create(path)?;
    for _ in 0..bytes.div_ceil(zeros.len()) {
        file.write_all(&zeros)?;
    }
    file.sync_all()
}

/// The forwarding outbox's own connection. It commits with `synchronous = NORMAL`: no fsync
/// per commit, so the write lock is released at once for the event writer. WAL keeps every
/// commit atomic; a power cut can only roll back the latest outcomes or queued deliveries
/// together with their cursor move, which means sending again, never skipping an event.
pub(super) async fn outbox(pool: &SqlitePool) -> Result<SqliteConnection, StoreError> {
    let options = (*pool.connect_options()).clone();
    Ok(options
        .synchronous(SqliteSynchronous::Normal)
        .connect()
        .await?)
}

const INSERT_EVENT: &str = "INSERT INTO events (received_at, content_type, remote_addr, \
    event_type, direction, from_number, to_number, message_id, status, error_code, text, body, \
    dedup_key, signature, content_encoding) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// Insert `events[rows]` in one transaction (one fsync); returns their new ids, in order.
///
/// One prepared INSERT runs once a row. Rejected: one INSERT of many rows, as sqlx needed to
/// keep its round trips down; SQLite compiles that into a loop over its rows that needs a
/// statement journal inside a transaction, and its text changes with the batch's size.
fn insert_rows(
    conn: &mut rusqlite::Connection,
    events: &[&NewEvent],
    keys: &[Option<String>],
    rows: &[usize],
) -> rusqlite::Result<Vec<i64>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(rows.len());
    let transaction = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = transaction.prepare_cached(INSERT_EVENT)?;
        for &index in rows {
            let event = events[index];
            let f = &event.fields;
            insert.execute((
                Timestamp(event.received_at).to_text(),
                event.content_type.as_deref(),
                event.remote_addr.as_deref(),
                f.event_type.as_deref(),
                f.direction.as_deref(),
                f.from.as_deref(),
                f.to.as_deref(),
                f.message_id.as_deref(),
                f.status.as_deref(),
                f.error_code.as_deref(),
                f.text.as_deref(),
                event.body.as_slice(),
                keys[index].as_deref(),
                event.signature.as_str(),
                event.content_encoding.as_deref(),
            ))?;
            ids.push(transaction.last_insert_rowid());
        }
    }
    transaction.commit()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use chrono::Duration as Days;

    use super::*;
    use crate::config::Backend;
    use crate::event::{EventFields, Verdict};
    use crate::store::backend::Pool;
    use crate::store::test_db::{DEDUP_WINDOW, TestDb};

    fn event(message_id: &str, received_at: DateTime<Utc>) -> NewEvent {
        NewEvent {
            received_at,
            content_type: None,
            content_encoding: None,
            remote_addr: None,
            body: message_id.as_bytes().to_vec(),
            fields: EventFields {
                event_type: Some("message.received".into()),
                message_id: Some(message_id.into()),
                ..EventFields::default()
            },
            signature: Verdict::Unchecked,
        }
    }

    /// A writer as start-up opens one, reading the window's keys from the table.
    async fn start(db: &TestDb) -> SqliteWriter {
        let Pool::Sqlite(pool) = &db.store.pool else {
            unreachable!("an SQLite test database")
        };
        writer(pool, "test", DEDUP_WINDOW).await.unwrap()
    }

    async fn store(writer: &mut SqliteWriter, event: &NewEvent) -> StoreOutcome {
        let keys = [event.dedup_key()];
        let outcomes = writer.store_distinct(&[event], &keys, &[0]).unwrap();
        outcomes[0]
    }

    #[tokio::test]
    async fn a_repeat_within_the_window_is_a_duplicate_after_a_restart() {
        let db = TestDb::new(Backend::Sqlite).await;
        let mut writer = start(&db).await;
        let first = store(&mut writer, &event("m1", Utc::now() - Days::days(29))).await;
        let other = store(&mut writer, &event("m2", Utc::now())).await;
        writer.close().unwrap();

        let mut writer = start(&db).await;
        let repeat = store(&mut writer, &event("m1", Utc::now())).await;
        assert_eq!(repeat, StoreOutcome::Duplicate(first.id()));
        let repeat = store(&mut writer, &event("m2", Utc::now())).await;
        assert_eq!(repeat, StoreOutcome::Duplicate(other.id()));
        assert_eq!(db.store.count_events().await.unwrap(), 2);
        writer.close().unwrap();
        db.finish().await;
    }

    #[tokio::test]
    async fn a_repeat_after_the_window_is_stored_as_a_new_event() {
        let db = TestDb::new(Backend::Sqlite).await;
        let mut writer = start(&db).await;
        let old = store(&mut writer, &event("m1", Utc::now() - Days::days(31))).await;
        // Still in memory, but its row is older than the window.
        let repeat = store(&mut writer, &event("m1", Utc::now() - Days::days(1))).await;
        assert!(
            matches!(repeat, StoreOutcome::Stored(id) if id > old.id()),
            "{repeat:?}"
        );
        let old_only = store(&mut writer, &event("m2", Utc::now() - Days::days(40))).await;
        writer.close().unwrap();

        let mut writer = start(&db).await;
        let again = store(&mut writer, &event("m1", Utc::now())).await;
        assert_eq!(
            again,
            StoreOutcome::Duplicate(repeat.id()),
            "the newer copy counts"
        );
        let again = store(&mut writer, &event("m2", Utc::now())).await;
        assert!(
            matches!(again, StoreOutcome::Stored(id) if id > old_only.id()),
            "{again:?}"
        );
        assert_eq!(db.store.count_events().await.unwrap(), 4);
        writer.close().unwrap();
        db.finish().await;
    }

    #[tokio::test]
    async fn a_second_writer_on_the_same_file_is_refused_until_the_first_stops() {
        let db = TestDb::new(Backend::Sqlite).await;
        let first = start(&db).await;
        let Pool::Sqlite(pool) = &db.store.pool else {
            unreachable!("an SQLite test database")
        };
        let refused = writer(pool, "test", DEDUP_WINDOW)
            .await
            .err()
            .expect("a second writer");
        assert!(matches!(refused, StoreError::Locked { .. }), "{refused:?}");
        assert!(refused.to_string().contains("another voltd"), "{refused}");
        first.close().unwrap();
        start(&db).await.close().unwrap();
        db.finish().await;
    }

    #[tokio::test]
    async fn keys_that_share_a_hash_are_told_apart_by_their_rows() {
        let db = TestDb::new(Backend::Sqlite).await;
        let mut writer = start(&db).await;
        writer.index = DedupIndex::colliding();
        let a = store(&mut writer, &event("a", Utc::now())).await;
        let b = store(&mut writer, &event("b", Utc::now())).await;
        assert!(
            matches!(b, StoreOutcome::Stored(id) if id != a.id()),
            "{b:?}"
        );
        assert_eq!(
            store(&mut writer, &event("a", Utc::now())).await,
            StoreOutcome::Duplicate(a.id())
        );
        assert_eq!(
            store(&mut writer, &event("b", Utc::now())).await,
            StoreOutcome::Duplicate(b.id())
        );
        writer.close().unwrap();
        db.finish().await;
    }
}
