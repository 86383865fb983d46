//! What only SQLite needs: opening the file, and storing a batch of new events.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::StoreError;
use super::backend::Timestamp;
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

/// The event writer's own connection, outside the pool.
pub(super) async fn writer(pool: &SqlitePool) -> Result<SqliteConnection, StoreError> {
    Ok(pool.connect_options().connect().await?)
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
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(&mut *conn)
            .await?;
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

/// Store `events[rows]`, whose dedup keys are distinct; returns one outcome per row, in order.
///
/// A batch is usually one statement, so it runs without BEGIN/COMMIT: a single statement is
/// atomic on its own (one fsync), each explicit BEGIN or COMMIT would be one more round trip
/// to SQLite's worker thread, and a statement inside an explicit transaction needs a statement
/// journal, which spills to a temporary file once it outgrows 64 KiB. Larger batches are
/// chunked inside one transaction.
pub(super) async fn store_distinct(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
    keys: &[Option<String>],
    rows: &[usize],
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
    if rows.len() <= MAX_ROWS_PER_STATEMENT {
        return insert_rows(conn, events, keys, rows).await;
    }
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut tx = conn.begin().await?;
    for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
        outcomes.extend(insert_rows(&mut tx, events, keys, chunk).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Store `events[rows]` with one INSERT when none of their keys is stored yet, which is the
/// rule (a repeat delivery is rare). Otherwise the unique index refuses the whole statement,
/// which SQLite undoes, and the keys are looked up to insert only the new events.
async fn insert_rows(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
    keys: &[Option<String>],
    rows: &[usize],
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
    match insert_new(conn, events, keys, rows).await {
        Ok(ids) => return Ok(ids.map(StoreOutcome::Stored).collect()),
        Err(e) if is_duplicate_key(&e) => {}
        Err(e) => return Err(e),
    }
    let stored = existing_ids(conn, rows.iter().filter_map(|&i| keys[i].as_ref())).await?;
    let is_new = |index: &usize| {
        keys[*index]
            .as_ref()
            .is_none_or(|key| !stored.contains_key(key))
    };
    let new_rows: Vec<usize> = rows.iter().copied().filter(is_new).collect();
    let mut new_ids = insert_new(conn, events, keys, &new_rows).await?;
    rows.iter()
        .map(
            |index| match keys[*index].as_ref().and_then(|key| stored.get(key)) {
                Some(&id) => Ok(StoreOutcome::Duplicate(id)),
                None => new_ids
                    .next()
                    .map(StoreOutcome::Stored)
                    .ok_or_else(|| sqlx::Error::Protocol("an event got no id".into())),
            },
        )
        .collect()
}

fn is_duplicate_key(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
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

/// Ids of the rows already stored under any of `keys`: one statement whatever their number
/// (the keys travel as one JSON array), so its prepared form is cached.
async fn existing_ids<'k>(
    conn: &mut SqliteConnection,
    keys: impl Iterator<Item = &'k String>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let keys: Vec<&String> = keys.collect();
    let keys = serde_json::to_string(&keys).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let rows = sqlx::query(
        "SELECT id, dedup_key FROM events WHERE dedup_key IN (SELECT value FROM json_each($1))",
    )
    .bind(keys)
    .fetch_all(conn)
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in rows {
        found.insert(row.try_get::<String, _>(1)?, row.try_get::<i64, _>(0)?);
    }
    Ok(found)
}
