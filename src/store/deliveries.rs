//! The forwarding outbox: per-sink cursors over the events table and one delivery row per
//! (event, sink). The event writer's connection is never touched: reads use the pool, the
//! delivery task's writes its own [`Outbox`] connection.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, SqliteConnection};

use super::backend::{Pool, Timestamp, WritePool, on_pool};
use super::queries::{self, EventRow};
use super::{Store, StoreError};
use crate::config::Backend;
use crate::event::StoredEvent;

/// What a sink filter looks at.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventHeader {
    pub id: i64,
    pub event_type: Option<String>,
    pub direction: Option<String>,
    #[sqlx(rename = "from_number")]
    pub from: Option<String>,
    #[sqlx(rename = "to_number")]
    pub to: Option<String>,
}

/// A pending delivery whose time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: i64,
    pub event_id: i64,
    #[sqlx(try_from = "i64")]
    pub attempts: u32,
}

/// A delivery as `voltd deliveries list` shows it; serialised, the line of its `--json`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: i64,
    pub sink: String,
    pub status: String,
    #[sqlx(try_from = "i64")]
    pub attempts: u32,
    /// Only a pending delivery has one (see `SELECT_DELIVERY`).
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<String>,
    pub sink: Option<String>,
    pub limit: u32,
}

/// Which stored events a replay queues again.
#[derive(Debug, Clone, Default)]
pub struct EventSelection {
    pub id: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
}

/// What an attempt means for its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    Retry { at: DateTime<Utc>, error: String },
    Dead { error: String },
}

/// What one round of [`Outbox::queue_new_events`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueRound {
    /// Events looked at: as many as the batch allows when more may be waiting.
    pub looked_at: usize,
    /// Deliveries queued for them.
    pub queued: usize,
}

/// Pending deliveries: how many, and when the oldest was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: i64,
    pub oldest: Option<DateTime<Utc>>,
}

const SELECT_HEADER: &str = "SELECT id, event_type, direction, from_number, to_number FROM events";
/// A finished delivery keeps the time of its last attempt in `next_attempt_at`; it is not
/// a next attempt, so it is not read as one.
pub(super) const SELECT_DELIVERY: &str = "SELECT id, event_id, sink, status, attempts, \
    CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, \
    created_at, updated_at, last_error FROM deliveries";

const INSERT_DELIVERY: &str = "INSERT INTO deliveries (event_id, sink, next_attempt_at, \
    created_at, updated_at) VALUES ($1, $2, $3, $3, $3)";

impl Store {
    /// Create a cursor after the events stored so far for each sink that has none yet.
    pub async fn start_forward_cursors(&self, sinks: &[&str]) -> Result<(), StoreError> {
        let start_cursor = OutboxSql::of(self.backend()).start_cursor;
        for sink in sinks {
            on_pool!(self, pool => sqlx::query(start_cursor).bind(*sink).execute(pool).await.map(drop))?;
        }
        Ok(())
    }

    /// Queue a new delivery of each selected event to each sink that wants it; returns how
    /// many were queued. Earlier deliveries are left as they are, for the record.
    pub async fn queue_replay(
        &self,
        selection: &EventSelection,
        sinks: &[&str],
        wants: impl Fn(&str, &EventHeader) -> bool,
    ) -> Result<usize, StoreError> {
        let sql = format!(
            "{SELECT_HEADER} WHERE ($1 IS NULL OR id = $1) AND ($2 IS NULL OR received_at >= $2) \
             AND ($3 IS NULL OR event_type = $3) ORDER BY id"
        );
        let headers: Vec<EventHeader> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(selection.id)
            .bind(selection.since.map(Timestamp))
            .bind(selection.event_type.as_deref())
            .fetch_all(pool)
            .await)?;
        let now = Timestamp::now();
        let mut queued = 0;
        // Bounded transactions keep the write lock short however much is replayed.
        for chunk in headers.chunks(500) {
            on_pool!(self, pool => {
                let mut tx = pool.begin_write().await?;
                for header in chunk {
                    for sink in sinks.iter().filter(|sink| wants(sink, header)) {
                        sqlx::query(INSERT_DELIVERY)
                            .bind(header.id)
                            .bind(*sink)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        queued += 1;
                    }
                }
                tx.commit().await?;
            });
        }
        Ok(queued)
    }

    /// Pending deliveries for `sink` due by `now`, oldest due first.
    pub async fn due_deliveries(
        &self,
        sink: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT id, event_id, attempts FROM deliveries WHERE sink = $1 AND status = 'pending' \
             AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $3",
        )
        .bind(sink)
        .bind(Timestamp(now))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)?)
    }

    /// The stored events among `ids`, in no particular order; an id that is no longer stored
    /// (retention removed it) is left out. One query for a batch of deliveries.
    pub async fn events_by_id(&self, ids: &[i64]) -> Result<Vec<StoredEvent>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let id_list = OutboxSql::of(self.backend()).id_list;
        let sql = format!("{} WHERE id IN ({id_list})", queries::SELECT_EVENT);
        let rows: Vec<EventRow> = on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(id_array(ids.iter().copied()))
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(StoredEvent::from).collect())
    }

    pub async fn delivery_backlog(&self) -> Result<Backlog, StoreError> {
        let (pending, oldest): (i64, Option<Timestamp>) = on_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending'",
        )
        .fetch_one(pool)
        .await)?;
        Ok(Backlog {
            pending,
            oldest: oldest.map(|t| t.0),
        })
    }

    /// Deliveries, newest first.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let sql = format!(
            "{SELECT_DELIVERY} WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR sink = $2) \
             ORDER BY id DESC LIMIT $3"
        );
        Ok(on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(filter.status.as_deref())
            .bind(filter.sink.as_deref())
            .bind(i64::from(filter.limit))
            .fetch_all(pool)
            .await)?)
    }

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

/// An event the outbox looks at: where it lies, and what sink filters see.
#[derive(sqlx::FromRow)]
struct Scanned {
    xid: i64,
    #[sqlx(flatten)]
    header: EventHeader,
}

/// The outbox statements that differ between the databases. Each takes the same arguments
/// in both: a position binds as `$1` (xid) and `$2` (id), or `$2` and `$3` after a sink name.
/// SQLite ignores the xid: one writer numbers and commits events in the same order, so an id
/// cursor is exact there.
struct OutboxSql {
    /// Opens a transaction that will write.
    begin: &'static str,
    /// Creates a sink's cursor (`$1`) where it starts receiving, unless it has one.
    start_cursor: &'static str,
    /// `sink, xid, id` of every cursor.
    cursors: &'static str,
    /// As `cursors`, locked until the transaction ends.
    lock_cursors: &'static str,
    /// The position of the last event that may be queued now, if any.
    newest: &'static str,
    /// `xid`, then the [`EventHeader`] columns, of up to `$3` events after the position,
    /// in order.
    scan: &'static str,
    /// Moves the cursor of `$1` to the position.
    move_cursor: &'static str,
    /// The ids in `$1`, a JSON array (see [`id_array`]), as rows of one column, `value`.
    id_list: &'static str,
}

/// A list of ids as one bound value, the JSON array `[1,2,3]`, which both databases unpack
/// into rows (`json_each`, `json_array_elements_text`). One statement then handles a whole
/// batch, where one per row cost a round trip each. Rejected: `IN ($1, $2, ...)` built for
/// each batch size, which makes a new prepared statement for every size.
fn id_array(ids: impl IntoIterator<Item = i64>) -> String {
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
    move_cursor: "UPDATE forward_cursors SET last_event_id = $3 WHERE sink = $1",
    id_list: "SELECT value FROM json_each($1)",
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
    move_cursor: "UPDATE forward_cursors SET last_xid = $2::bigint::text::xid8, \
        last_event_id = $3 WHERE sink = $1",
    id_list: "SELECT value::bigint AS value FROM json_array_elements_text($1::json)",
};

impl OutboxSql {
    fn of(backend: Backend) -> &'static Self {
        match backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        }
    }

    /// Queues a delivery to sink `$2`, due at `$3`, for each event id in `$1`.
    fn insert_deliveries(&self) -> AssertSqlSafe<String> {
        AssertSqlSafe(format!(
            "INSERT INTO deliveries (event_id, sink, next_attempt_at, created_at, updated_at) \
             SELECT value, $2, $3, $3, $3 FROM ({}) AS ids",
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
    /// Queue a delivery for each new event each sink wants, and move the sinks' cursors past
    /// the events looked at, in one short transaction. A sink without a cursor (see
    /// [`Store::start_forward_cursors`]) gets one first.
    pub async fn queue_new_events(
        &mut self,
        sinks: &[&str],
        batch: u32,
        wants: impl Fn(&str, &EventHeader) -> bool,
    ) -> Result<QueueRound, StoreError> {
        on_outbox!(self, conn, sql => {
            // Looked at outside a transaction first, so an idle poll takes no write lock.
            let newest: Option<Position> =
                sqlx::query_as(sql.newest).fetch_optional(&mut *conn).await?;
            let cursors = read_cursors(sqlx::query_as(sql.cursors).fetch_all(&mut *conn).await?);
            let missing: Vec<&str> = sinks
                .iter()
                .copied()
                .filter(|sink| !cursors.contains_key(*sink))
                .collect();
            let behind = sinks.iter().any(|sink| {
                cursors
                    .get(*sink)
                    .is_some_and(|cursor| newest.is_some_and(|newest| *cursor < newest))
            });
            if missing.is_empty() && !behind {
                return Ok(QueueRound::default());
            }
            let mut tx = conn.begin_with(sql.begin).await?;
            for sink in missing {
                sqlx::query(sql.start_cursor)
                    .bind(sink)
                    .execute(&mut *tx)
                    .await?;
            }
            let cursors =
                read_cursors(sqlx::query_as(sql.lock_cursors).fetch_all(&mut *tx).await?);
            let Some(start) = sinks.iter().filter_map(|sink| cursors.get(*sink)).min() else {
                tx.commit().await?;
                return Ok(QueueRound::default());
            };
            let scanned: Vec<Scanned> = sqlx::query_as(sql.scan)
                .bind(start.xid)
                .bind(start.id)
                .bind(i64::from(batch))
                .fetch_all(&mut *tx)
                .await?;
            let Some(last_seen) = scanned.last().map(Scanned::position) else {
                tx.commit().await?;
                return Ok(QueueRound::default());
            };
            let now = Timestamp::now();
            let mut queued = 0;
            for sink in sinks {
                let Some(&cursor) = cursors.get(*sink) else {
                    continue;
                };
                let wanted: Vec<i64> = scanned
                    .iter()
                    .filter(|e| e.position() > cursor && wants(sink, &e.header))
                    .map(|e| e.header.id)
                    .collect();
                if !wanted.is_empty() {
                    sqlx::query(sql.insert_deliveries())
                        .bind(id_array(wanted.iter().copied()))
                        .bind(*sink)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    queued += wanted.len();
                }
                if cursor < last_seen {
                    sqlx::query(sql.move_cursor)
                        .bind(*sink)
                        .bind(last_seen.xid)
                        .bind(last_seen.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(QueueRound {
                looked_at: scanned.len(),
                queued,
            })
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

fn read_cursors(rows: Vec<(String, i64, i64)>) -> HashMap<String, Position> {
    rows.into_iter()
        .map(|(sink, xid, id)| (sink, Position { xid, id }))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use sqlx::Executor;

    use super::*;
    use crate::store::test_db::{TestDb, test_each_backend};

    const INSERT_EVENT: &str = "INSERT INTO events (received_at, body) VALUES ($1, $2)";

    async fn insert_events(store: &Store, count: usize) {
        for _ in 0..count {
            on_pool!(store, pool => sqlx::query(INSERT_EVENT)
                .bind(Timestamp::now())
                .bind(&b"{}"[..])
                .execute(pool)
                .await
                .map(drop))
            .unwrap();
        }
    }

    /// `(event id, sink)` of every delivery, in event order.
    async fn queued(store: &Store) -> Vec<(i64, String)> {
        let everything = DeliveryFilter {
            limit: u32::MAX,
            ..DeliveryFilter::default()
        };
        let mut queued: Vec<(i64, String)> = store
            .list_deliveries(&everything)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.event_id, d.sink))
            .collect();
        queued.sort();
        queued
    }

    /// One round of the outbox for the sink `s`, which wants everything.
    async fn queue(outbox: &mut Outbox) -> usize {
        outbox
            .queue_new_events(&["s"], 500, |_, _| true)
            .await
            .unwrap()
            .queued
    }

    /// Run the outbox until `done` holds of what is queued. On PostgreSQL an event waits
    /// for every older transaction on the server, other tests' included, so it may take a
    /// few rounds.
    async fn queue_until(
        outbox: &mut Outbox,
        store: &Store,
        done: impl Fn(&[(i64, String)]) -> bool,
    ) -> Vec<(i64, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            outbox
                .queue_new_events(&["s"], 500, |_, _| true)
                .await
                .unwrap();
            let queued = queued(store).await;
            if done(&queued) {
                return queued;
            }
            assert!(Instant::now() < deadline, "never queued; got {queued:?}");
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

    fn at(text: &str) -> Timestamp {
        Timestamp(DateTime::parse_from_rfc3339(text).unwrap().to_utc())
    }

    #[test]
    fn a_delivery_serialises_as_its_json_line() {
        let record = DeliveryRecord {
            id: 3,
            event_id: 9,
            sink: "crm".into(),
            status: "pending".into(),
            attempts: 2,
            next_attempt_at: Some(at("2026-11-27T01:02:03.000045Z")),
            created_at: at("2026-11-27T01:00:00Z"),
            updated_at: at("2026-11-27T01:01:00.5Z"),
            last_error: Some("HTTP 500".into()),
        };
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            r#"{"id":3,"event_id":9,"sink":"crm","status":"pending","attempts":2,"next_attempt_at":"2026-11-27T01:02:03.000045Z","created_at":"2026-11-27T01:00:00.000000Z","updated_at":"2026-11-27T01:01:00.500000Z","last_error":"HTTP 500"}"#
        );
    }

    test_each_backend!(only_a_pending_delivery_has_a_next_attempt);
    async fn only_a_pending_delivery_has_a_next_attempt(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        insert_events(store, 3).await;
        let all = EventSelection::default();
        store.queue_replay(&all, &["s"], |_, _| true).await.unwrap();
        let retry_at = at("2030-01-02T03:04:05.000006Z");
        let mut outbox = store.open_outbox().await.unwrap();
        let outcomes = [
            (1, DeliveryOutcome::Delivered),
            (
                2,
                DeliveryOutcome::Retry {
                    at: retry_at.0,
                    error: "timed out".into(),
                },
            ),
            (
                3,
                DeliveryOutcome::Dead {
                    error: "refused".into(),
                },
            ),
        ];
        outbox.record_outcomes(&outcomes).await.unwrap();
        let filter = DeliveryFilter {
            limit: 10,
            ..DeliveryFilter::default()
        };
        let listed: Vec<(String, Option<Timestamp>)> = store
            .list_deliveries(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.status, d.next_attempt_at))
            .collect();
        let expected = [
            ("dead", None),
            ("pending", Some(retry_at)),
            ("delivered", None),
        ]
        .map(|(status, next)| (status.to_owned(), next));
        assert_eq!(listed, expected);
        drop(outbox);
        db.finish().await;
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
        let queued = queue_until(&mut outbox, store, |q| q.len() >= 2).await;
        assert_eq!(queued, once_each(&[4, 5]));
        assert_eq!(queue(&mut outbox).await, 0);
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
    async fn an_event_that_commits_after_a_larger_id_is_still_queued() {
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

        let queued = queue_until(&mut outbox, store, |q| !q.is_empty()).await;
        // Event 1 is still uncommitted; event 3 has a transaction newer than event 1's.
        assert_eq!(queued, once_each(&[2]));
        late.execute("COMMIT").await.unwrap();
        let queued = queue_until(&mut outbox, store, |q| q.len() >= 3).await;
        assert_eq!(queued, once_each(&[1, 2, 3]));
        assert_eq!(queue(&mut outbox).await, 0);
        drop(outbox);
        db.finish().await;
    }

    test_each_backend!(a_backlog_is_queued_a_full_batch_at_a_time);
    /// A full batch tells the caller that more may be waiting; the last one is short.
    async fn a_backlog_is_queued_a_full_batch_at_a_time(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        store.start_forward_cursors(&["s", "t"]).await.unwrap();
        insert_events(store, 10).await;
        // On PostgreSQL all ten become visible together, so that the batches are exact.
        wait_for_older_transactions(store).await;
        let mut outbox = store.open_outbox().await.unwrap();
        let mut rounds = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while rounds
            .iter()
            .map(|r: &QueueRound| r.looked_at)
            .sum::<usize>()
            < 10
        {
            // Sink t wants only the even ids.
            let round = outbox
                .queue_new_events(&["s", "t"], 4, |sink, e| sink == "s" || e.id % 2 == 0)
                .await
                .unwrap();
            if round.looked_at > 0 {
                rounds.push(round);
            }
            assert!(Instant::now() < deadline, "never queued; got {rounds:?}");
        }
        let looked_at: Vec<usize> = rounds.iter().map(|r| r.looked_at).collect();
        assert_eq!(looked_at, [4, 4, 2]);
        assert_eq!(rounds.iter().map(|r| r.queued).sum::<usize>(), 15);
        let mut expected = once_each(&(1..=10).collect::<Vec<_>>());
        expected.extend([2, 4, 6, 8, 10].map(|id| (id, "t".to_owned())));
        expected.sort();
        assert_eq!(queued(store).await, expected);
        drop(outbox);
        db.finish().await;
    }

    test_each_backend!(events_are_read_by_the_batch);
    async fn events_are_read_by_the_batch(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        insert_events(store, 3).await;
        let mut read: Vec<i64> = store
            .events_by_id(&[3, 1, 99, 1])
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        read.sort();
        assert_eq!(read, [1, 3]);
        assert!(store.events_by_id(&[]).await.unwrap().is_empty());
        db.finish().await;
    }

    test_each_backend!(two_outboxes_at_once_queue_each_event_once);
    /// An instance that lost the forwarding role without noticing yet may still queue while
    /// its successor does: each event is queued once all the same.
    async fn two_outboxes_at_once_queue_each_event_once(backend: Backend) {
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
            let mut total = 0;
            while Instant::now() < deadline {
                total += outbox
                    .queue_new_events(&["s"], 7, |_, _| true)
                    .await
                    .unwrap()
                    .queued;
                if queued(store).await.len() >= 300 {
                    break;
                }
            }
            (outbox, total)
        };
        let ((), (first, from_first), (second, from_second)) =
            tokio::join!(writing, drain(first), drain(second));
        assert_eq!(from_first + from_second, 300);
        assert_eq!(queued(store).await, once_each(&ids));
        drop((first, second));
        db.finish().await;
    }
}
