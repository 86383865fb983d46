//! What only SQLite needs: opening the file, and storing a batch of new events, deduplicated
//! through the writer's [`DedupIndex`].

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use super::StoreError;
use super::backend::Timestamp;
use super::dedup_index::{DedupIndex, KeyHash};
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
        .busy_timeout(Duration::from_secs(10))
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

/// The event writer's side of SQLite: its own connection, outside the pool, and the index of
/// the dedup keys received within the dedup window.
pub(super) struct SqliteWriter {
    conn: SqliteConnection,
    index: DedupIndex,
    window: chrono::Duration,
    /// Held while this writer lives: see [`lock_writer`].
    _lock: Option<File>,
}

/// Open the event writer's connection and read the keys of the last `window` into its index.
pub(super) async fn writer(
    pool: &SqlitePool,
    window: Duration,
) -> Result<SqliteWriter, StoreError> {
    let mut conn = pool.connect_options().connect().await?;
    let lock = lock_writer(&database_file(&mut conn).await?)?;
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let started = Instant::now();
    let mut index = DedupIndex::new();
    let keys = load_keys(&mut conn, &mut index, window_start(window)).await?;
    tracing::info!(
        keys,
        memory_kib = index.bytes() / 1024,
        took_ms = started.elapsed().as_millis() as u64,
        window_days = window.num_days(),
        "Read the dedup keys of the events received within the dedup window"
    );
    Ok(SqliteWriter {
        conn,
        index,
        window,
        _lock: lock,
    })
}

/// The database's file; empty for a database without one.
async fn database_file(conn: &mut SqliteConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
        .fetch_one(conn)
        .await
}

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
async fn load_keys(
    conn: &mut SqliteConnection,
    index: &mut DedupIndex,
    since: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let mut rows = sqlx::query_as::<_, (i64, String, Timestamp)>(
        "SELECT id, dedup_key, received_at FROM events \
         WHERE received_at >= $1 AND dedup_key IS NOT NULL",
    )
    .bind(Timestamp(since))
    .fetch(conn);
    let mut count = 0;
    while let Some((id, key, received_at)) = rows.try_next().await? {
        index.insert(index.hash(&key), id, received_at.0);
        count += 1;
    }
    Ok(count)
}

impl SqliteWriter {
    /// Store `events[rows]`, whose dedup keys are distinct; returns one outcome per row, in
    /// order. A row is a duplicate when an event with its key was received within the window.
    pub(super) async fn store_distinct(
        &mut self,
        events: &[&NewEvent],
        keys: &[Option<String>],
        rows: &[usize],
    ) -> Result<Vec<StoreOutcome>, sqlx::Error> {
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
            stored_keys(&mut self.conn, &candidates, since).await?
        };
        let is_stored = |index: usize| keys[index].as_ref().and_then(|key| stored.get(key));
        let new_rows: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| is_stored(i).is_none())
            .collect();
        let ids = insert_rows(&mut self.conn, events, keys, &new_rows).await?;
        // Committed: from now on a repeat of these keys is a duplicate.
        for (&index, &id) in new_rows.iter().zip(&ids) {
            if let Some(hash) = hashes[index] {
                self.index.insert(hash, id, events[index].received_at);
            }
        }
        let mut ids = ids.into_iter();
        rows.iter()
            .map(|&index| match is_stored(index) {
                Some(&id) => Ok(StoreOutcome::Duplicate(id)),
                None => ids
                    .next()
                    .map(StoreOutcome::Stored)
                    .ok_or_else(|| sqlx::Error::Protocol("an event got no id".into())),
            })
            .collect()
    }

    pub(super) async fn probe(&mut self) -> Result<(), sqlx::Error> {
        probe(&mut self.conn).await
    }

    pub(super) async fn close(self) -> Result<(), sqlx::Error> {
        self.conn.close().await
    }
}

/// Of the events `ids`, those received since `since`: the newest id for each dedup key. The
/// ids travel as one JSON array, so the statement's prepared form is cached.
async fn stored_keys(
    conn: &mut SqliteConnection,
    ids: &[i64],
    since: DateTime<Utc>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let ids = serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, dedup_key FROM events \
         WHERE id IN (SELECT value FROM json_each($1)) AND received_at >= $2 \
         AND dedup_key IS NOT NULL",
    )
    .bind(ids)
    .bind(Timestamp(since))
    .fetch_all(conn)
    .await?;
    let mut newest: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for (id, key) in rows {
        let kept = newest.entry(key).or_insert(id);
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
pub(super) async fn probe(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA user_version = {version}"
    )))
    .execute(&mut *conn)
    .await?;
    let file = database_file(conn).await?;
    if file.is_empty() {
        return Ok(());
    }
    let scratch = PathBuf::from(format!("{file}-room-check"));
    tokio::task::spawn_blocking(move || {
        let written = write_zeros(&scratch, ROOM_NEEDED);
        let _ = std::fs::remove_file(&scratch);
        written
    })
    .await
    .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))??;
    Ok(())
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

const COLUMNS: &str = "INSERT INTO events (received_at, content_type, remote_addr, event_type, \
    direction, from_number, to_number, message_id, status, error_code, text, body, dedup_key, \
    signature, content_encoding) ";

/// Most rows in one INSERT (15 parameters a row, well under SQLite's 32,766).
pub(super) const MAX_ROWS_PER_STATEMENT: usize = 512;

/// INSERTs of up to this many rows stay prepared in sqlx's statement cache (100 by default).
/// Larger ones are prepared for their one batch: caching a statement for every batch size up
/// to 512 rows grew the daemon by 15-20 MB under 256 connections (bench/RESULTS.md), and
/// preparing them afresh cost no measurable CPU per event there.
const MAX_CACHED_ROWS: usize = 64;

/// Insert `events[rows]`; returns their new ids, in order.
///
/// A batch is usually one statement, so it runs without BEGIN/COMMIT: a single statement is
/// atomic on its own (one fsync), each explicit BEGIN or COMMIT would be one more round trip
/// to SQLite's worker thread, and a statement inside an explicit transaction needs a statement
/// journal, which spills to a temporary file once it outgrows 64 KiB. Larger batches are
/// chunked inside one transaction.
async fn insert_rows(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
    keys: &[Option<String>],
    rows: &[usize],
) -> Result<Vec<i64>, sqlx::Error> {
    if rows.len() <= MAX_ROWS_PER_STATEMENT {
        return Ok(insert_new(conn, events, keys, rows).await?.collect());
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut tx = conn.begin().await?;
    for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
        ids.extend(insert_new(&mut tx, events, keys, chunk).await?);
    }
    tx.commit().await?;
    Ok(ids)
}

/// One multi-row INSERT of `events[rows]`; returns their new ids, in order.
///
/// The INSERT returns no rows (streaming back a RETURNING row per event cost a thread
/// wake-up per event): the ids follow from `last_insert_rowid`, because this task is the only
/// writer of events and one multi-row INSERT into an AUTOINCREMENT table numbers its rows
/// consecutively in the order given.
async fn insert_new(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
    keys: &[Option<String>],
    rows: &[usize],
) -> Result<std::ops::Range<i64>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0..0);
    }
    let mut query = QueryBuilder::<Sqlite>::new(COLUMNS);
    query.push_values(rows, |mut row, &index| {
        let event = events[index];
        let f = &event.fields;
        row.push_bind(Timestamp(event.received_at))
            .push_bind(event.content_type.as_deref())
            .push_bind(event.remote_addr.as_deref())
            .push_bind(f.event_type.as_deref())
            .push_bind(f.direction.as_deref())
            .push_bind(f.from.as_deref())
            .push_bind(f.to.as_deref())
            .push_bind(f.message_id.as_deref())
            .push_bind(f.status.as_deref())
            .push_bind(f.error_code.as_deref())
            .push_bind(f.text.as_deref())
            .push_bind(event.body.as_slice())
            .push_bind(keys[index].as_deref())
            .push_bind(event.signature.as_str())
            .push_bind(event.content_encoding.as_deref());
    });
    let result = query
        .build()
        .persistent(rows.len() <= MAX_CACHED_ROWS)
        .execute(&mut *conn)
        .await?;
    let count = rows.len() as i64;
    if result.rows_affected() != count as u64 {
        return Err(sqlx::Error::Protocol(format!(
            "inserted {} rows of {count}",
            result.rows_affected()
        )));
    }
    let last_id = result.last_insert_rowid();
    Ok(last_id - count + 1..last_id + 1)
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
        writer(pool, DEDUP_WINDOW).await.unwrap()
    }

    async fn store(writer: &mut SqliteWriter, event: &NewEvent) -> StoreOutcome {
        let keys = [event.dedup_key()];
        let outcomes = writer.store_distinct(&[event], &keys, &[0]).await.unwrap();
        outcomes[0]
    }

    #[tokio::test]
    async fn a_repeat_within_the_window_is_a_duplicate_after_a_restart() {
        let db = TestDb::new(Backend::Sqlite).await;
        let mut writer = start(&db).await;
        let first = store(&mut writer, &event("m1", Utc::now() - Days::days(29))).await;
        let other = store(&mut writer, &event("m2", Utc::now())).await;
        writer.close().await.unwrap();

        let mut writer = start(&db).await;
        let repeat = store(&mut writer, &event("m1", Utc::now())).await;
        assert_eq!(repeat, StoreOutcome::Duplicate(first.id()));
        let repeat = store(&mut writer, &event("m2", Utc::now())).await;
        assert_eq!(repeat, StoreOutcome::Duplicate(other.id()));
        assert_eq!(db.store.count_events().await.unwrap(), 2);
        writer.close().await.unwrap();
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
        writer.close().await.unwrap();

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
        writer.close().await.unwrap();
        db.finish().await;
    }

    #[tokio::test]
    async fn a_second_writer_on_the_same_file_is_refused_until_the_first_stops() {
        let db = TestDb::new(Backend::Sqlite).await;
        let first = start(&db).await;
        let Pool::Sqlite(pool) = &db.store.pool else {
            unreachable!("an SQLite test database")
        };
        let refused = writer(pool, DEDUP_WINDOW)
            .await
            .err()
            .expect("a second writer");
        assert!(matches!(refused, StoreError::Locked { .. }), "{refused:?}");
        assert!(refused.to_string().contains("another voltd"), "{refused}");
        first.close().await.unwrap();
        start(&db).await.close().await.unwrap();
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
        writer.close().await.unwrap();
        db.finish().await;
    }
}
