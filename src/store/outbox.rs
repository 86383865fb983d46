//! The delivery task's side of the store: following the events table with a cursor per sink,
//! and recording each batch of new events once its first attempts are over.
//!
//! A batch is looked at without a write ([`Outbox::look_ahead`]); its events are attempted;
//! then one transaction writes a delivery row for each (event, sink), already delivered,
//! failed or still running, and moves the sinks' cursors past the batch
//! ([`Outbox::record_batch`]). A crash before that commit leaves the cursors where they were,
//! so the batch is attempted again: at least once, never lost. The event writer's connection
//! is never touched: reads use the pool or this connection, and writes only this one.

use std::collections::HashMap;

use chrono::Utc;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, SqliteConnection};

use super::backend::{Pool, Timestamp, on_pool};
use super::deliveries::{Backlog, DeliveryOutcome, EventHeader};
use super::queries::{EventRow, event_columns};
use super::{Store, StoreError};
use crate::config::Backend;
use crate::event::StoredEvent;

/// A batch of new events as the sinks' cursors found it.
#[derive(Debug, Clone, PartialEq)]
pub struct LookAhead {
    /// Each sink's cursor when it was read: the batch is recorded only if none has moved.
    cursors: HashMap<String, Position>,
    /// The last event looked at, where the cursors move when the batch is recorded.
    through: Position,
    /// How many events were looked at.
    pub looked_at: usize,
    /// Whether the batch was cut short by its limits, so that more events may be waiting.
    pub more_waiting: bool,
    /// `(sink, event id)` for each event a sink wants, in event order; `sink` indexes the
    /// names the batch was looked for with.
    pub wanted: Vec<(usize, i64)>,
    /// The events of `wanted`, each once.
    pub events: Vec<StoredEvent>,
}

#[cfg(test)]
impl LookAhead {
    /// A batch of the `wanted` deliveries, for tests of what is done with one.
    pub(crate) fn for_test(wanted: Vec<(usize, i64)>) -> Self {
        Self {
            cursors: HashMap::new(),
            through: Position { xid: 0, id: 0 },
            looked_at: wanted.len(),
            more_waiting: false,
            wanted,
            events: Vec::new(),
        }
    }
}

/// Where a delivery of a batch stands when the batch is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstAttempt {
    /// The first attempt is over.
    Finished(DeliveryOutcome),
    /// Still running, or not started: recorded as pending, due now.
    Unfinished,
}

/// What recording a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The ids of the rows written for the [`FirstAttempt::Unfinished`] deliveries, in order.
    Written { unfinished: Vec<i64> },
    /// Another outbox moved a cursor since the batch was looked at (an instance that lost the
    /// forwarding role without noticing yet, or its successor): nothing was written, and
    /// that outbox has the batch's events.
    Superseded,
}

impl Store {
    /// Where following the store starts: just after the newest event that every reader can
    /// already see.
    pub async fn follow_start(&self) -> Result<FollowPosition, StoreError> {
        let sql = OutboxSql::of(self.backend());
        let newest: Option<Position> = on_pool!(self, pool => sqlx::query_as(sql.newest)
            .fetch_optional(pool)
            .await)?;
        Ok(FollowPosition(newest.unwrap_or(Position { xid: 0, id: 0 })))
    }

    /// Ids of up to `limit` events after `position`, each with the position just after it,
    /// in the order the outbox follows them, so that no event committed late is passed over.
    pub async fn events_after(
        &self,
        position: FollowPosition,
        limit: u32,
    ) -> Result<Vec<(FollowPosition, i64)>, StoreError> {
        let sql = OutboxSql::of(self.backend());
        let rows: Vec<Scanned> = on_pool!(self, pool => sqlx::query_as(sql.scan)
            .bind(position.0.xid)
            .bind(position.0.id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)?;
        Ok(rows
            .iter()
            .map(|row| (FollowPosition(row.position()), row.header.id))
            .collect())
    }
}

/// A place in the stream of stored events (see [`Store::events_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowPosition(Position);

/// How far a sink has looked through the events table, in the order the outbox follows it:
/// every event at or before the position has been considered. On PostgreSQL `xid` is the
/// inserting transaction (see [`POSTGRES`]); on SQLite it is always 0 and the id alone orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
struct Position {
    xid: i64,
    id: i64,
}

/// An event followed: where it lies, and what sink filters see.
#[derive(sqlx::FromRow)]
struct Scanned {
    xid: i64,
    #[sqlx(flatten)]
    header: EventHeader,
}

/// A new event the outbox looks at, whole: where it lies, and the row.
#[derive(sqlx::FromRow)]
struct ScannedEvent {
    xid: i64,
    #[sqlx(flatten)]
    row: EventRow,
}

/// The outbox statements that differ between the databases. Each takes the same arguments
/// in both: a position binds as `$1` (xid) and `$2` (id), or `$2` and `$3` after a sink name.
/// SQLite ignores the xid: one writer numbers and commits events in the same order, so an id
/// cursor is exact there.
pub(super) struct OutboxSql {
    /// Opens a transaction that will write.
    begin: &'static str,
    /// Creates a sink's cursor (`$1`) where it starts receiving, unless it has one.
    pub(super) start_cursor: &'static str,
    /// `sink, xid, id` of every cursor.
    cursors: &'static str,
    /// As `cursors`, locked until the transaction ends.
    lock_cursors: &'static str,
    /// The position of the last event that may be queued now, if any.
    newest: &'static str,
    /// `xid`, then the [`EventHeader`] columns, of up to `$3` events after the position,
    /// in order.
    scan: &'static str,
    /// The body sizes of the events `scan_events` would return, in order.
    scan_sizes: &'static str,
    /// As `scan`, with every column of the events (see [`ScannedEvent`]).
    scan_events: &'static str,
    /// Moves the cursor of `$1` to the position.
    move_cursor: &'static str,
    /// The ids in `$1`, a JSON array (see [`id_array`]), as rows of one column, `value`.
    pub(super) id_list: &'static str,
    /// `id, received_at` of the first event after the position, if any.
    first_after: &'static str,
}

/// A list of ids as one bound value, the JSON array `[1,2,3]`, which both databases unpack
/// into rows (`json_each`, `json_array_elements_text`). One statement then handles a whole
/// batch, where one per row cost a round trip each. Rejected: `IN ($1, $2, ...)` built for
/// each batch size, which makes a new prepared statement for every size.
pub(super) fn id_array(ids: impl IntoIterator<Item = i64>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    format!("[{}]", ids.join(","))
}

/// The BEGIN IMMEDIATE transaction holds the database's one write lock, so cursors need no
/// lock of their own; it is taken up front, so the transaction cannot fail half-way on a
/// snapshot made stale by the event writer. (`WHERE true` lets SQLite parse an upsert after
/// a SELECT.)
const SQLITE: OutboxSql = OutboxSql {
    begin: "BEGIN IMMEDIATE",
    start_cursor: "INSERT INTO forward_cursors (sink, last_event_id) \
        SELECT $1, COALESCE(MAX(id), 0) FROM events WHERE true ON CONFLICT (sink) DO NOTHING",
    cursors: "SELECT sink, 0, last_event_id FROM forward_cursors",
    lock_cursors: "SELECT sink, 0, last_event_id FROM forward_cursors",
    newest: "SELECT 0 AS xid, id FROM events ORDER BY id DESC LIMIT 1",
    scan: "SELECT 0 AS xid, id, event_type, direction, from_number, to_number FROM events \
        WHERE id > $2 ORDER BY id LIMIT $3",
    // length() of a blob reads its size, not the blob.
    scan_sizes: "SELECT length(body) FROM events WHERE id > $2 ORDER BY id LIMIT $3",
    scan_events: concat!(
        "SELECT 0 AS xid, ",
        event_columns!(),
        " FROM events WHERE id > $2 ORDER BY id LIMIT $3"
    ),
    move_cursor: "UPDATE forward_cursors SET last_event_id = $3 WHERE sink = $1",
    id_list: "SELECT value FROM json_each($1)",
    first_after: "SELECT id, received_at FROM events WHERE id > $2 ORDER BY id LIMIT 1",
};

/// Several instances insert events, and an id is handed out at insert, not at commit: a
/// smaller id can become visible after a larger one. So events are followed by (inserting
/// transaction, id), and only those whose transaction is older than every transaction still
/// running (`pg_snapshot_xmin`) are looked at: all of those have ended, and every event
/// inserted from then on belongs to a newer transaction, so none can appear behind a cursor.
/// Cursor rows are locked for the transaction, so two outboxes (an instance that lost the
/// forwarding role without noticing yet, and its successor) queue each event once.
///
/// A new cursor starts at the oldest running transaction: events of transactions that were
/// still open are sent, as well as a few that had just committed, rather than risk missing
/// one. xid8 values travel as text, the one conversion both ways.
const POSTGRES: OutboxSql = OutboxSql {
    begin: "BEGIN",
    start_cursor: "INSERT INTO forward_cursors (sink, last_xid, last_event_id) \
        VALUES ($1, pg_snapshot_xmin(pg_current_snapshot()), 0) ON CONFLICT (sink) DO NOTHING",
    cursors: "SELECT sink, last_xid::text::bigint, last_event_id FROM forward_cursors",
    lock_cursors: "SELECT sink, last_xid::text::bigint, last_event_id FROM forward_cursors \
        ORDER BY sink FOR UPDATE",
    newest: "SELECT xid::text::bigint AS xid, id FROM events \
        WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) \
        ORDER BY events.xid DESC, id DESC LIMIT 1",
    scan: "SELECT xid::text::bigint AS xid, id, event_type, direction, from_number, to_number \
        FROM events WHERE (xid, id) > ($1::bigint::text::xid8, $2) \
        AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY events.xid, id LIMIT $3",
    // octet_length() of a TOASTed value reads its size, not the value.
    scan_sizes: "SELECT octet_length(body)::bigint FROM events \
        WHERE (xid, id) > ($1::bigint::text::xid8, $2) \
        AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY events.xid, id LIMIT $3",
    scan_events: concat!(
        "SELECT xid::text::bigint AS xid, ",
        event_columns!(),
        " FROM events WHERE (xid, id) > ($1::bigint::text::xid8, $2) \
         AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY events.xid, id LIMIT $3"
    ),
    move_cursor: "UPDATE forward_cursors SET last_xid = $2::bigint::text::xid8, \
        last_event_id = $3 WHERE sink = $1",
    id_list: "SELECT value::bigint AS value FROM json_array_elements_text($1::json)",
    first_after: "SELECT id, received_at FROM events \
        WHERE (xid, id) > ($1::bigint::text::xid8, $2) \
        AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY events.xid, id LIMIT 1",
};

impl OutboxSql {
    pub(super) fn of(backend: Backend) -> &'static Self {
        match backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        }
    }

    /// Records as delivered at `$3`, after one attempt, a delivery to sink `$2` of each
    /// event id in `$1`.
    fn insert_delivered(&self) -> AssertSqlSafe<String> {
        AssertSqlSafe(format!(
            "INSERT INTO deliveries (event_id, sink, status, attempts, next_attempt_at, \
             created_at, updated_at) SELECT value, $2, 'delivered', 1, $3, $3, $3 FROM ({}) AS ids",
            self.id_list
        ))
    }

    /// Marks delivered, at `$2`, the deliveries whose ids are in `$1`.
    fn mark_delivered(&self) -> AssertSqlSafe<String> {
        AssertSqlSafe(format!(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, \
             next_attempt_at = $2, updated_at = $2 WHERE id IN ({})",
            self.id_list
        ))
    }
}

/// One delivery of a batch that is not simply delivered: event `$1` to sink `$2`, in status
/// `$3` after `$4` attempts, next attempted (or, when finished, last attempted) at `$5`.
const INSERT_ATTEMPTED: &str = "INSERT INTO deliveries (event_id, sink, status, attempts, \
    next_attempt_at, created_at, updated_at, last_error) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
    RETURNING id";

/// The delivery task's own connection, for its writes: outside the pool, so the event
/// writer's and the readers' connections are never held by forwarding.
pub struct Outbox {
    conn: OutboxConnection,
}

enum OutboxConnection {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// Evaluate `$body` with `$conn` bound to the outbox's connection and `$sql` to its
/// database's [`OutboxSql`]: one body, compiled once per backend.
macro_rules! on_outbox {
    ($outbox:expr, $conn:ident, $sql:ident => $body:expr) => {
        match &mut $outbox.conn {
            OutboxConnection::Sqlite($conn) => {
                let $sql = &SQLITE;
                $body
            }
            OutboxConnection::Postgres($conn) => {
                let $sql = &POSTGRES;
                $body
            }
        }
    };
}

impl Store {
    /// Pending deliveries, plus the events stored after the slowest of `sinks`' cursors,
    /// which no delivery row stands for yet; and since when the oldest of either waits.
    pub async fn forward_backlog(&self, sinks: &[&str]) -> Result<Backlog, StoreError> {
        let sql = OutboxSql::of(self.backend());
        let (pending, oldest_pending): (i64, Option<Timestamp>) = on_pool!(self, pool => sqlx::query_as(
                "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending'",
            )
            .fetch_one(pool)
            .await)?;
        let cursors: Vec<(String, i64, i64)> =
            on_pool!(self, pool => sqlx::query_as(sql.cursors).fetch_all(pool).await)?;
        let slowest = read_cursors(cursors)
            .into_iter()
            .filter(|(sink, _)| sinks.contains(&sink.as_str()))
            .map(|(_, cursor)| cursor)
            .min();
        let mut backlog = Backlog {
            pending,
            oldest: oldest_pending.map(|t| t.0),
        };
        let Some(cursor) = slowest else {
            return Ok(backlog);
        };
        let first: Option<(i64, Timestamp)> = on_pool!(self, pool => sqlx::query_as(sql.first_after)
            .bind(cursor.xid)
            .bind(cursor.id)
            .fetch_optional(pool)
            .await)?;
        if let Some((first, received_at)) = first {
            // Ids are handed out in order, so this counts the events from the first to the
            // newest, give or take ids that were never used; counting rows would read them all.
            let newest: i64 = on_pool!(self, pool => sqlx::query_scalar("SELECT MAX(id) FROM events")
                .fetch_one(pool)
                .await)?;
            backlog.pending += (newest - first + 1).max(1);
            backlog.oldest = Some(
                backlog
                    .oldest
                    .map_or(received_at.0, |t| t.min(received_at.0)),
            );
        }
        Ok(backlog)
    }

    pub async fn open_outbox(&self) -> Result<Outbox, StoreError> {
        let conn = match &self.pool {
            Pool::Sqlite(pool) => OutboxConnection::Sqlite(super::sqlite::outbox(pool).await?),
            Pool::Postgres(pool) => OutboxConnection::Postgres(postgres_outbox(pool).await?),
        };
        Ok(Outbox { conn })
    }
}

/// PostgreSQL's counterpart of [`super::sqlite::outbox`]: commits do not wait for the WAL to
/// reach the disk (`synchronous_commit = off`). The WAL is one sequence, so a crash can only
/// lose the latest commits, each whole (queued deliveries with their cursor move, outcomes),
/// and never one that an event commit after it depends on: those events are sent again,
/// none is skipped.
async fn postgres_outbox(pool: &PgPool) -> Result<PgConnection, StoreError> {
    let mut conn = super::postgres::connect(&pool.connect_options()).await?;
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

impl Outbox {
    /// Up to `batch` events after the sinks' cursors, whose bodies come to at most `bytes`
    /// (or the first event alone, however large), and which of them each sink wants; `None`
    /// when there is nothing new. Only reads: an idle poll, and the attempts that
    /// follow, hold no write lock. A sink without a cursor (see
    /// [`Store::start_forward_cursors`]) gets one first.
    pub async fn look_ahead(
        &mut self,
        sinks: &[&str],
        batch: u32,
        bytes: i64,
        wants: impl Fn(usize, &StoredEvent) -> bool,
    ) -> Result<Option<LookAhead>, StoreError> {
        on_outbox!(self, conn, sql => {
            let mut cursors =
                read_cursors(sqlx::query_as(sql.cursors).fetch_all(&mut *conn).await?);
            let missing: Vec<&str> = sinks
                .iter()
                .copied()
                .filter(|sink| !cursors.contains_key(*sink))
                .collect();
            if !missing.is_empty() {
                for sink in missing {
                    sqlx::query(sql.start_cursor).bind(sink).execute(&mut *conn).await?;
                }
                cursors = read_cursors(sqlx::query_as(sql.cursors).fetch_all(&mut *conn).await?);
            }
            cursors.retain(|sink, _| sinks.contains(&sink.as_str()));
            let Some(start) = cursors.values().min().copied() else {
                return Ok(None);
            };
            // Bodies may be large: the batch stops at `bytes` of them, so that it never holds
            // `batch` times the largest body in memory. The events the second query returns
            // are those sized here: any that became visible since sort after them.
            let sizes: Vec<i64> = sqlx::query_scalar(sql.scan_sizes)
                .bind(start.xid)
                .bind(start.id)
                .bind(i64::from(batch))
                .fetch_all(&mut *conn)
                .await?;
            let mut total = 0;
            let fitting = sizes
                .iter()
                .take_while(|size| {
                    total += **size;
                    total <= bytes
                })
                .count()
                .max(1)
                .min(sizes.len());
            let more_waiting = fitting < sizes.len() || sizes.len() >= batch as usize;
            let scanned: Vec<ScannedEvent> = sqlx::query_as(sql.scan_events)
                .bind(start.xid)
                .bind(start.id)
                .bind(i64::try_from(fitting).unwrap_or(i64::MAX))
                .fetch_all(&mut *conn)
                .await?;
            let looked_at = scanned.len();
            let Some(through) = scanned.last().map(ScannedEvent::position) else {
                return Ok(None);
            };
            let mut wanted = Vec::new();
            let mut events = Vec::new();
            for scanned in scanned {
                let position = scanned.position();
                let event = StoredEvent::from(scanned.row);
                let before = wanted.len();
                for (index, sink) in sinks.iter().enumerate() {
                    if cursors.get(*sink).is_some_and(|cursor| position > *cursor)
                        && wants(index, &event)
                    {
                        wanted.push((index, event.id));
                    }
                }
                if wanted.len() > before {
                    events.push(event);
                }
            }
            Ok(Some(LookAhead {
                cursors,
                through,
                looked_at,
                more_waiting,
                wanted,
                events,
            }))
        })
    }

    /// Write a delivery row for each of `look.wanted`, where `attempts` (in the same order)
    /// says it stands, and move the cursors past the batch; one transaction. Nothing is
    /// written if another outbox has moved a cursor since the batch was looked at.
    pub async fn record_batch(
        &mut self,
        sinks: &[&str],
        look: &LookAhead,
        attempts: &[FirstAttempt],
    ) -> Result<Recorded, StoreError> {
        let now = Timestamp::now();
        on_outbox!(self, conn, sql => {
            let mut tx = conn.begin_with(sql.begin).await?;
            let current =
                read_cursors(sqlx::query_as(sql.lock_cursors).fetch_all(&mut *tx).await?);
            if look.cursors.iter().any(|(sink, cursor)| current.get(sink) != Some(cursor)) {
                tx.rollback().await?;
                return Ok(Recorded::Superseded);
            }
            // The common case, one statement per sink; the others carry an error or an id each.
            for (index, sink) in sinks.iter().enumerate() {
                let delivered = look.wanted.iter().zip(attempts).filter(|((of, _), attempt)| {
                    *of == index && **attempt == FirstAttempt::Finished(DeliveryOutcome::Delivered)
                });
                let ids: Vec<i64> = delivered.map(|((_, event), _)| *event).collect();
                if !ids.is_empty() {
                    sqlx::query(sql.insert_delivered())
                        .bind(id_array(ids))
                        .bind(*sink)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let mut unfinished = Vec::new();
            for (&(index, event), attempt) in look.wanted.iter().zip(attempts) {
                let (status, attempts, next_attempt_at, error) = match attempt {
                    FirstAttempt::Finished(DeliveryOutcome::Delivered) => continue,
                    FirstAttempt::Finished(DeliveryOutcome::Retry { at, error }) => {
                        ("pending", 1, Timestamp(*at), Some(error.as_str()))
                    }
                    FirstAttempt::Finished(DeliveryOutcome::Dead { error }) => {
                        ("dead", 1, now, Some(error.as_str()))
                    }
                    FirstAttempt::Unfinished => ("pending", 0, now, None),
                };
                let id: i64 = sqlx::query_scalar(INSERT_ATTEMPTED)
                    .bind(event)
                    .bind(sinks[index])
                    .bind(status)
                    .bind(attempts)
                    .bind(next_attempt_at)
                    .bind(now)
                    .bind(error)
                    .fetch_one(&mut *tx)
                    .await?;
                if *attempt == FirstAttempt::Unfinished {
                    unfinished.push(id);
                }
            }
            // A cursor already past the batch (a sink that started later) stays where it is.
            for (sink, _) in look.cursors.iter().filter(|(_, cursor)| **cursor < look.through) {
                sqlx::query(sql.move_cursor)
                    .bind(sink)
                    .bind(look.through.xid)
                    .bind(look.through.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(Recorded::Written { unfinished })
        })
    }

    /// Record the outcome of finished attempts in one transaction (one commit for many
    /// outcomes keeps the write lock free for the event writer).
    pub async fn record_outcomes(
        &mut self,
        outcomes: &[(i64, DeliveryOutcome)],
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let delivered: Vec<i64> = outcomes
            .iter()
            .filter(|(_, outcome)| *outcome == DeliveryOutcome::Delivered)
            .map(|(id, _)| *id)
            .collect();
        on_outbox!(self, conn, sql => {
            let mut tx = conn.begin_with(sql.begin).await?;
            // The common case, all of them in one statement; failures carry an error each.
            if !delivered.is_empty() {
                sqlx::query(sql.mark_delivered())
                    .bind(id_array(delivered))
                    .bind(Timestamp(now))
                    .execute(&mut *tx)
                    .await?;
            }
            for (id, outcome) in outcomes {
                let (status, next_attempt_at, error) = match outcome {
                    DeliveryOutcome::Delivered => continue,
                    DeliveryOutcome::Retry { at, error } => ("pending", *at, Some(error.as_str())),
                    DeliveryOutcome::Dead { error } => ("dead", now, Some(error.as_str())),
                };
                sqlx::query(
                    "UPDATE deliveries SET status = $2, attempts = attempts + 1, \
                     next_attempt_at = $3, updated_at = $4, last_error = COALESCE($5, last_error) \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(status)
                .bind(Timestamp(next_attempt_at))
                .bind(Timestamp(now))
                .bind(error)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Scanned {
    fn position(&self) -> Position {
        Position {
            xid: self.xid,
            id: self.header.id,
        }
    }
}

impl ScannedEvent {
    fn position(&self) -> Position {
        Position {
            xid: self.xid,
            id: self.row.id,
        }
    }
}

fn read_cursors(rows: Vec<(String, i64, i64)>) -> HashMap<String, Position> {
    rows.into_iter()
        .map(|(sink, xid, id)| (sink, Position { xid, id }))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::DateTime;
    use sqlx::Executor;

    use super::*;
    use crate::store::DeliveryFilter;
    use crate::store::test_db::{TestDb, delivery_rows, insert_events, test_each_backend};

    const INSERT_EVENT: &str = "INSERT INTO events (received_at, body) VALUES ($1, $2)";

    /// A batch for sink `s`, which wants everything, with no limit on its bodies.
    async fn look_for_s(outbox: &mut Outbox) -> Option<LookAhead> {
        outbox
            .look_ahead(&["s"], 500, i64::MAX, |_, _| true)
            .await
            .unwrap()
    }

    /// Every delivery of `look` delivered at its first attempt.
    fn all_delivered(look: &LookAhead) -> Vec<FirstAttempt> {
        vec![FirstAttempt::Finished(DeliveryOutcome::Delivered); look.wanted.len()]
    }

    /// Look at a batch for sink `s` and record it all delivered.
    async fn forward_round(outbox: &mut Outbox) -> Option<LookAhead> {
        let look = look_for_s(outbox).await?;
        let recorded = outbox
            .record_batch(&["s"], &look, &all_delivered(&look))
            .await
            .unwrap();
        assert_eq!(recorded, Recorded::Written { unfinished: vec![] });
        Some(look)
    }

    /// Forward to sink `s` until `done` holds of the delivery rows. On PostgreSQL an event
    /// waits for every older transaction on the server, other tests' included, so it may
    /// take a few rounds.
    async fn forward_until(
        outbox: &mut Outbox,
        store: &Store,
        done: impl Fn(&[(i64, String)]) -> bool,
    ) -> Vec<(i64, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            forward_round(outbox).await;
            let rows = delivery_rows(store).await;
            if done(&rows) {
                return rows;
            }
            assert!(Instant::now() < deadline, "never recorded; got {rows:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A new PostgreSQL cursor starts at the oldest transaction running on the server, other
    /// tests' included, so it also takes events that committed while that one ran. Waiting
    /// until every transaction older than the stored events has ended makes the start exact.
    async fn wait_for_older_transactions(store: &Store) {
        let Pool::Postgres(pool) = &store.pool else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ended: bool = sqlx::query_scalar(
                "SELECT pg_snapshot_xmin(pg_current_snapshot()) > (SELECT max(xid) FROM events)",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if ended {
                return;
            }
            assert!(Instant::now() < deadline, "older transactions never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn once_each(ids: &[i64]) -> Vec<(i64, String)> {
        ids.iter().map(|id| (*id, "s".to_owned())).collect()
    }

    test_each_backend!(a_new_sink_gets_only_events_stored_after_it_starts);
    async fn a_new_sink_gets_only_events_stored_after_it_starts(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        insert_events(store, 3).await;
        wait_for_older_transactions(store).await;
        store.start_forward_cursors(&["s"]).await.unwrap();
        insert_events(store, 2).await;
        let mut outbox = store.open_outbox().await.unwrap();
        let rows = forward_until(&mut outbox, store, |rows| rows.len() >= 2).await;
        assert_eq!(rows, once_each(&[4, 5]));
        assert_eq!(look_for_s(&mut outbox).await, None);
        drop(outbox);
        db.finish().await;
    }

    test_each_backend!(a_batch_is_recorded_as_its_first_attempts_ended);
    async fn a_batch_is_recorded_as_its_first_attempts_ended(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        store.start_forward_cursors(&["s"]).await.unwrap();
        insert_events(store, 4).await;
        wait_for_older_transactions(store).await;
        let mut outbox = store.open_outbox().await.unwrap();
        let look = look_for_s(&mut outbox).await.unwrap();
        assert_eq!(look.wanted, [(0, 1), (0, 2), (0, 3), (0, 4)]);
        let retry_at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let attempts = [
            FirstAttempt::Finished(DeliveryOutcome::Delivered),
            FirstAttempt::Finished(DeliveryOutcome::Retry {
                at: retry_at,
                error: "timed out".into(),
            }),
            FirstAttempt::Finished(DeliveryOutcome::Dead {
                error: "refused".into(),
            }),
            FirstAttempt::Unfinished,
        ];
        let Recorded::Written { unfinished } =
            outbox.record_batch(&["s"], &look, &attempts).await.unwrap()
        else {
            panic!("superseded");
        };
        let filter = DeliveryFilter {
            limit: 10,
            ..DeliveryFilter::default()
        };
        let mut rows = store.list_deliveries(&filter).await.unwrap();
        rows.sort_by_key(|d| d.event_id);
        let seen: Vec<(&str, u32, Option<&str>)> = rows
            .iter()
            .map(|d| (d.status.as_str(), d.attempts, d.last_error.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("delivered", 1, None),
                ("pending", 1, Some("timed out")),
                ("dead", 1, Some("refused")),
                ("pending", 0, None),
            ]
        );
        assert_eq!(rows[1].next_attempt_at, Some(Timestamp(retry_at)));
        assert_eq!(unfinished, [rows[3].id]);
        // The cursor has moved past the batch.
        assert_eq!(look_for_s(&mut outbox).await, None);
        drop(outbox);
        db.finish().await;
    }

    #[tokio::test]
    async fn following_passes_no_event_that_commits_late() {
        crate::skip_unless_available!(Backend::Postgres);
        let db = TestDb::new(Backend::Postgres).await;
        let store = &db.store;
        let start = store.follow_start().await.unwrap();
        let mut late = PgConnection::connect(&db.url).await.unwrap();
        late.execute("BEGIN").await.unwrap();
        sqlx::query(INSERT_EVENT)
            .bind(Timestamp::now())
            .bind(&b"{}"[..])
            .execute(&mut late)
            .await
            .unwrap();
        insert_events(store, 1).await;
        // Event 2 is committed, but event 1 (a smaller id) may still commit: wait for it.
        assert_eq!(store.events_after(start, 100).await.unwrap(), []);
        late.execute("COMMIT").await.unwrap();
        // Transactions elsewhere on the server (other tests) may still hold both back a while.
        let deadline = Instant::now() + Duration::from_secs(20);
        let seen = loop {
            let seen = store.events_after(start, 100).await.unwrap();
            if seen.len() >= 2 || Instant::now() >= deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ids: Vec<i64> = seen.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(store.events_after(seen[1].0, 100).await.unwrap(), []);
        db.finish().await;
    }

    /// Two instances insert events: one takes its id first but commits last. An id cursor
    /// would already be past it when it becomes visible; the (xid, id) cursor is not.
    #[tokio::test]
    async fn an_event_that_commits_after_a_larger_id_is_still_forwarded() {
        crate::skip_unless_available!(Backend::Postgres);
        let db = TestDb::new(Backend::Postgres).await;
        let store = &db.store;
        store.start_forward_cursors(&["s"]).await.unwrap();
        let mut outbox = store.open_outbox().await.unwrap();
        let (mut early, mut late) = (
            PgConnection::connect(&db.url).await.unwrap(),
            PgConnection::connect(&db.url).await.unwrap(),
        );
        // `early` has the older transaction; `late` inserts first, so its id is smaller.
        early.execute("BEGIN").await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut early)
            .await
            .unwrap();
        late.execute("BEGIN").await.unwrap();
        for conn in [&mut late, &mut early] {
            sqlx::query(INSERT_EVENT)
                .bind(Timestamp::now())
                .bind(&b"{}"[..])
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        early.execute("COMMIT").await.unwrap();
        insert_events(store, 1).await;

        let rows = forward_until(&mut outbox, store, |rows| !rows.is_empty()).await;
        // Event 1 is still uncommitted; event 3 has a transaction newer than event 1's.
        assert_eq!(rows, once_each(&[2]));
        late.execute("COMMIT").await.unwrap();
        let rows = forward_until(&mut outbox, store, |rows| rows.len() >= 3).await;
        assert_eq!(rows, once_each(&[1, 2, 3]));
        assert_eq!(look_for_s(&mut outbox).await, None);
        drop(outbox);
        db.finish().await;
    }

    test_each_backend!(a_backlog_is_looked_at_a_full_batch_at_a_time);
    /// A full batch tells the caller that more may be waiting; the last one is short. A sink
    /// that started later than the others keeps its cursor until a batch passes it.
    async fn a_backlog_is_looked_at_a_full_batch_at_a_time(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        store.start_forward_cursors(&["s"]).await.unwrap();
        insert_events(store, 5).await;
        wait_for_older_transactions(store).await;
        store.start_forward_cursors(&["t"]).await.unwrap();
        insert_events(store, 5).await;
        // On PostgreSQL all ten become visible together, so that the batches are exact.
        wait_for_older_transactions(store).await;
        let mut outbox = store.open_outbox().await.unwrap();
        let mut looked_at = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while looked_at.iter().sum::<usize>() < 10 {
            // Sink t wants only the even ids.
            let wants = |sink: usize, e: &StoredEvent| sink == 0 || e.id % 2 == 0;
            if let Some(look) = outbox
                .look_ahead(&["s", "t"], 4, i64::MAX, wants)
                .await
                .unwrap()
            {
                outbox
                    .record_batch(&["s", "t"], &look, &all_delivered(&look))
                    .await
                    .unwrap();
                looked_at.push(look.looked_at);
            }
            assert!(Instant::now() < deadline, "never looked; got {looked_at:?}");
        }
        assert_eq!(looked_at, [4, 4, 2]);
        let mut expected = once_each(&(1..=10).collect::<Vec<_>>());
        expected.extend([6, 8, 10].map(|id| (id, "t".to_owned())));
        expected.sort();
        assert_eq!(delivery_rows(store).await, expected);
        drop(outbox);
        db.finish().await;
    }

    test_each_backend!(a_batch_stops_at_its_byte_limit);
    /// Each test event's body is `{}`, two bytes.
    async fn a_batch_stops_at_its_byte_limit(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        store.start_forward_cursors(&["s"]).await.unwrap();
        insert_events(store, 3).await;
        wait_for_older_transactions(store).await;
        let mut outbox = store.open_outbox().await.unwrap();
        async fn look(outbox: &mut Outbox, bytes: i64) -> (usize, bool, usize) {
            let look = outbox
                .look_ahead(&["s"], 500, bytes, |_, _| true)
                .await
                .unwrap()
                .unwrap();
            (look.looked_at, look.more_waiting, look.events.len())
        }
        assert_eq!(look(&mut outbox, 5).await, (2, true, 2));
        // The first event is taken however large it is.
        assert_eq!(look(&mut outbox, 1).await, (1, true, 1));
        assert_eq!(look(&mut outbox, 6).await, (3, false, 3));
        drop(outbox);
        db.finish().await;
    }

    test_each_backend!(two_outboxes_at_once_record_each_event_once);
    /// An instance that lost the forwarding role without noticing yet may still look and
    /// record while its successor does: each event is recorded once all the same.
    async fn two_outboxes_at_once_record_each_event_once(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        store.start_forward_cursors(&["s"]).await.unwrap();
        let (first, second) = (
            store.open_outbox().await.unwrap(),
            store.open_outbox().await.unwrap(),
        );
        let ids: Vec<i64> = (1..=300).collect();
        let writing = async {
            for _ in 0..30 {
                insert_events(store, 10).await;
                tokio::task::yield_now().await;
            }
        };
        let drain = |mut outbox: Outbox| async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && delivery_rows(store).await.len() < 300 {
                let Some(look) = outbox
                    .look_ahead(&["s"], 7, i64::MAX, |_, _| true)
                    .await
                    .unwrap()
                else {
                    continue;
                };
                // Superseded when the other outbox recorded these events first.
                outbox
                    .record_batch(&["s"], &look, &all_delivered(&look))
                    .await
                    .unwrap();
            }
            outbox
        };
        let ((), first, second) = tokio::join!(writing, drain(first), drain(second));
        assert_eq!(delivery_rows(store).await, once_each(&ids));
        drop((first, second));
        db.finish().await;
    }

    test_each_backend!(the_backlog_counts_events_no_sink_has_looked_at);
    async fn the_backlog_counts_events_no_sink_has_looked_at(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        store.start_forward_cursors(&["s"]).await.unwrap();
        insert_events(store, 5).await;
        wait_for_older_transactions(store).await;
        let backlog = store.forward_backlog(&["s"]).await.unwrap();
        assert_eq!(backlog.pending, 5);
        assert!(backlog.oldest.is_some());
        // A cursor of a sink no longer configured does not count.
        assert_eq!(store.forward_backlog(&["t"]).await.unwrap().pending, 0);

        let mut outbox = store.open_outbox().await.unwrap();
        let look = look_for_s(&mut outbox).await.unwrap();
        let mut attempts = all_delivered(&look);
        attempts[0] = FirstAttempt::Unfinished;
        outbox.record_batch(&["s"], &look, &attempts).await.unwrap();
        assert_eq!(store.forward_backlog(&["s"]).await.unwrap().pending, 1);
        drop(outbox);
        db.finish().await;
    }
}
