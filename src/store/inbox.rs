//! What the web inbox reads: event summaries newest first with keyset paging, the latest
//! delivery state of each event per sink, and the deliveries waiting or given up.
//!
//! Paging is by id (`id < last shown`), never OFFSET: a page deep in a million events costs
//! what the first one does. A number filter is two index range scans, `from_number` and
//! `to_number` each with `id` (migration `..._inbox_indexes`), merged by a UNION, rather
//! than `from_number = $1 OR to_number = $1`, which SQLite and PostgreSQL can only answer by
//! collecting every event of the number and then sorting them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::backend::{Timestamp, WritePool, on_pool};
use super::deliveries::SELECT_DELIVERY;
use super::{DeliveryRecord, EventHeader, Store, StoreError};

/// What a list shows of an event: everything but the body.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventSummary {
    #[sqlx(flatten)]
    pub header: EventHeader,
    pub received_at: Timestamp,
    pub message_id: Option<String>,
    pub status: Option<String>,
    pub error_code: Option<String>,
    pub text: Option<String>,
    /// The stored signature verdict (`valid`, `invalid`, `missing`, `unchecked`).
    pub signature: String,
}

const SUMMARY_COLUMNS: &str = "id, received_at, event_type, direction, from_number, \
    to_number, message_id, status, error_code, text, signature";

/// Which events a list holds. Every condition given must hold; `number` matches either end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxFilter {
    pub event_type: Option<String>,
    pub direction: Option<String>,
    pub number: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl InboxFilter {
    /// Whether `event` is one [`Store::inbox`] would list with this filter: for events
    /// that arrive after a list was read.
    pub fn matches(&self, event: &EventSummary) -> bool {
        let equal =
            |wanted: &Option<String>, value: &Option<String>| wanted.is_none() || wanted == value;
        let (at, e) = (event.received_at.0, &event.header);
        equal(&self.event_type, &e.event_type)
            && equal(&self.direction, &e.direction)
            && (self.number.is_none() || self.number == e.from || self.number == e.to)
            && self.since.is_none_or(|since| at >= since)
            && self.until.is_none_or(|until| at < until)
    }
}

/// Where a page of a list lies, by event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Page {
    #[default]
    Newest,
    /// The events just older than this id.
    Before(i64),
    /// The events just newer than this id.
    After(i64),
}

/// The latest delivery of one event to one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkState {
    pub event_id: i64,
    pub sink: String,
    pub status: String,
}

/// How many deliveries of one sink are in one state.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryCount {
    pub sink: String,
    pub status: String,
    pub count: i64,
}

/// A value bound to a statement built at run time.
enum Arg<'a> {
    Text(&'a str),
    Time(Timestamp),
    Id(i64),
}

/// A statement's conditions and their arguments, numbered `$1`, `$2`, ... as they are added.
#[derive(Default)]
struct Conditions<'a> {
    sql: Vec<String>,
    args: Vec<Arg<'a>>,
}

impl<'a> Conditions<'a> {
    /// Bind `arg` and return its placeholder.
    fn bind(&mut self, arg: Arg<'a>) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// Add the condition `left` followed by the placeholder of `arg`, e.g. `id < $3`.
    fn add(&mut self, left: &str, arg: Arg<'a>) {
        let placeholder = self.bind(arg);
        self.sql.push(format!("{left} {placeholder}"));
    }

    /// ` AND `-joined conditions, each preceded by ` AND ` (empty when none).
    fn and_all(&self) -> String {
        self.sql.iter().map(|c| format!(" AND {c}")).collect()
    }
}

/// Evaluate `$fetch` on a query of `$sql` with every argument of `$args` bound, on the
/// store's pool.
macro_rules! with_args {
    ($store:expr, $row:ty, $sql:expr, $args:expr, $fetch:ident) => {
        on_pool!($store, pool => {
            let mut query = sqlx::query_as::<_, $row>(AssertSqlSafe($sql));
            for arg in $args {
                query = match arg {
                    Arg::Text(text) => query.bind(*text),
                    Arg::Time(time) => query.bind(*time),
                    Arg::Id(id) => query.bind(*id),
                };
            }
            query.$fetch(pool).await
        })
    };
}

/// `$1, $2, ... $n` for an `IN (..)` of `ids`, and the ids to bind to them.
fn id_list(ids: &[i64]) -> (String, Vec<Arg<'static>>) {
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    (
        placeholders.join(", "),
        ids.iter().map(|id| Arg::Id(*id)).collect(),
    )
}

impl Store {
    /// Up to `limit` events matching `filter` on `page`, newest first.
    pub async fn inbox(
        &self,
        filter: &InboxFilter,
        page: Page,
        limit: u32,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let (sql, args) = inbox_sql(filter, page, limit);
        let mut rows = with_args!(self, EventSummary, sql, &args, fetch_all)?;
        if let Page::After(_) = page {
            rows.reverse();
        }
        Ok(rows)
    }

    /// The summaries of the events `ids` that exist, in id order.
    pub async fn event_summaries(&self, ids: &[i64]) -> Result<Vec<EventSummary>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (list, args) = id_list(ids);
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM events WHERE id IN ({list}) ORDER BY id");
        Ok(with_args!(self, EventSummary, sql, &args, fetch_all)?)
    }

    /// For each of the events `ids`, the state of its latest delivery to each sink (a replay
    /// adds a delivery; the earlier ones stay for the record).
    pub async fn latest_deliveries(&self, ids: &[i64]) -> Result<Vec<SinkState>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (list, args) = id_list(ids);
        let sql = format!(
            "SELECT event_id, sink, status FROM deliveries WHERE event_id IN ({list}) ORDER BY id"
        );
        let rows: Vec<(i64, String, String)> =
            with_args!(self, (i64, String, String), sql, &args, fetch_all)?;
        let latest: BTreeMap<(i64, String), String> = rows
            .into_iter()
            .map(|(event_id, sink, status)| ((event_id, sink), status))
            .collect();
        Ok(latest
            .into_iter()
            .map(|((event_id, sink), status)| SinkState {
                event_id,
                sink,
                status,
            })
            .collect())
    }

    /// Every delivery of one event, oldest first.
    pub async fn event_deliveries(&self, event_id: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
        let sql = format!("{SELECT_DELIVERY} WHERE event_id = $1 ORDER BY id");
        Ok(on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(event_id)
            .fetch_all(pool)
            .await)?)
    }

    pub async fn delivery(&self, id: i64) -> Result<Option<DeliveryRecord>, StoreError> {
        let sql = format!("{SELECT_DELIVERY} WHERE id = $1");
        Ok(on_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await)?)
    }

    /// Pending and dead deliveries, counted by sink and state.
    pub async fn unfinished_delivery_counts(&self) -> Result<Vec<DeliveryCount>, StoreError> {
        Ok(on_pool!(self, pool => sqlx::query_as(
            "SELECT sink, status, COUNT(*) AS count FROM deliveries \
             WHERE status IN ('pending', 'dead') GROUP BY sink, status ORDER BY sink, status",
        )
        .fetch_all(pool)
        .await)?)
    }

    /// Queue the event of the dead delivery `id` to its sink again, as a new delivery;
    /// false when there is no such dead delivery. The dead one stays, for the record.
    pub async fn retry_dead_delivery(&self, id: i64) -> Result<bool, StoreError> {
        let queued = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let queued = sqlx::query(
                "INSERT INTO deliveries (event_id, sink, next_attempt_at, created_at, updated_at) \
                 SELECT event_id, sink, $2, $2, $2 FROM deliveries \
                 WHERE id = $1 AND status = 'dead'",
            )
            .bind(id)
            .bind(Timestamp::now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            queued
        });
        Ok(queued == 1)
    }
}

/// The statement and arguments of [`Store::inbox`].
fn inbox_sql(filter: &InboxFilter, page: Page, limit: u32) -> (String, Vec<Arg<'_>>) {
    let mut conditions = Conditions::default();
    // Bound first, so that its placeholder is known to both branches of a number filter.
    let number = filter
        .number
        .as_deref()
        .map(|number| conditions.bind(Arg::Text(number)));
    if let Some(event_type) = &filter.event_type {
        conditions.add("event_type =", Arg::Text(event_type));
    }
    if let Some(direction) = &filter.direction {
        conditions.add("direction =", Arg::Text(direction));
    }
    if let Some(since) = filter.since {
        conditions.add("received_at >=", Arg::Time(Timestamp(since)));
    }
    if let Some(until) = filter.until {
        conditions.add("received_at <", Arg::Time(Timestamp(until)));
    }
    let order = match page {
        Page::Newest => "DESC",
        Page::Before(id) => {
            conditions.add("id <", Arg::Id(id));
            "DESC"
        }
        Page::After(id) => {
            conditions.add("id >", Arg::Id(id));
            "ASC"
        }
    };
    let limit = conditions.bind(Arg::Id(i64::from(limit)));
    let rest = conditions.and_all();
    let sql = match number {
        Some(number) => {
            let branch = |column: &str, name: &str| {
                format!(
                    "SELECT * FROM (SELECT {SUMMARY_COLUMNS} FROM events WHERE {column} = {number}\
                     {rest} ORDER BY id {order} LIMIT {limit}) AS {name}"
                )
            };
            format!(
                "{} UNION {} ORDER BY id {order} LIMIT {limit}",
                branch("from_number", "sent_by"),
                branch("to_number", "sent_to")
            )
        }
        None => {
            let rest = rest.strip_prefix(" AND ").unwrap_or_default();
            let conditions = if rest.is_empty() {
                String::new()
            } else {
                format!(" WHERE {rest}")
            };
            format!(
                "SELECT {SUMMARY_COLUMNS} FROM events{conditions} ORDER BY id {order} LIMIT {limit}"
            )
        }
    };
    (sql, conditions.args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::store::test_db::{TestDb, test_each_backend};

    /// Events 1..=6: (type, direction, from, to), one second apart from 2026-11-30T00:00:01Z.
    const EVENTS: [(&str, &str, &str, &str); 6] = [
        ("message.received", "inbound", "+1A", "+1HQ"),
        ("message.sent", "outbound", "+1HQ", "+1A"),
        ("message.received", "inbound", "+1B", "+1HQ"),
        ("message.finalized", "outbound", "+1HQ", "+1A"),
        ("message.received", "inbound", "+1A", "+1A"),
        ("message.sent", "outbound", "+1HQ", "+1B"),
    ];

    fn second(n: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-30T00:00:{n:02}Z"))
            .unwrap()
            .to_utc()
    }

    async fn insert_events(store: &Store) {
        for (n, (event_type, direction, from, to)) in (1..).zip(EVENTS) {
            on_pool!(store, pool => sqlx::query(
                "INSERT INTO events (received_at, event_type, direction, from_number, to_number, \
                 body) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(Timestamp(second(n)))
            .bind(event_type)
            .bind(direction)
            .bind(from)
            .bind(to)
            .bind(&b"{}"[..])
            .execute(pool)
            .await
            .map(drop))
            .unwrap();
        }
    }

    async fn ids(store: &Store, filter: &InboxFilter, page: Page, limit: u32) -> Vec<i64> {
        let rows = store.inbox(filter, page, limit).await.unwrap();
        rows.iter().map(|row| row.header.id).collect()
    }

    test_each_backend!(pages_follow_ids_and_filters_combine);
    async fn pages_follow_ids_and_filters_combine(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        insert_events(store).await;
        let all = InboxFilter::default();
        assert_eq!(ids(store, &all, Page::Newest, 4).await, [6, 5, 4, 3]);
        assert_eq!(ids(store, &all, Page::Before(3), 4).await, [2, 1]);
        assert_eq!(ids(store, &all, Page::After(1), 2).await, [3, 2]);

        let number = |n: &str| InboxFilter {
            number: Some(n.to_owned()),
            ..InboxFilter::default()
        };
        // Either end matches, and an event from the number to itself is listed once.
        assert_eq!(
            ids(store, &number("+1A"), Page::Newest, 10).await,
            [5, 4, 2, 1]
        );
        assert_eq!(ids(store, &number("+1A"), Page::Newest, 2).await, [5, 4]);
        assert_eq!(
            ids(store, &number("+1A"), Page::Before(4), 10).await,
            [2, 1]
        );
        assert_eq!(ids(store, &number("+1A"), Page::After(1), 2).await, [4, 2]);
        let outbound_to_a = InboxFilter {
            direction: Some("outbound".into()),
            ..number("+1A")
        };
        assert_eq!(ids(store, &outbound_to_a, Page::Newest, 10).await, [4, 2]);
        let received_in_window = InboxFilter {
            event_type: Some("message.received".into()),
            since: Some(second(2)),
            until: Some(second(5)),
            ..InboxFilter::default()
        };
        assert_eq!(ids(store, &received_in_window, Page::Newest, 10).await, [3]);

        // What a live stream lets through is what the list holds.
        let everything = store.event_summaries(&[1, 2, 3, 4, 5, 6]).await.unwrap();
        for filter in [number("+1A"), outbound_to_a, received_in_window] {
            let matching: Vec<i64> = everything
                .iter()
                .filter(|e| filter.matches(e))
                .map(|e| e.header.id)
                .rev()
                .collect();
            assert_eq!(
                matching,
                ids(store, &filter, Page::Newest, 10).await,
                "{filter:?}"
            );
        }

        let summaries = store.event_summaries(&[4, 99, 2]).await.unwrap();
        let shown: Vec<(i64, Option<&str>)> = summaries
            .iter()
            .map(|s| (s.header.id, s.header.to.as_deref()))
            .collect();
        assert_eq!(shown, [(2, Some("+1A")), (4, Some("+1A"))]);
        assert_eq!(summaries[0].received_at, Timestamp(second(2)));
        assert_eq!(summaries[0].signature, "unchecked");
        db.finish().await;
    }

    test_each_backend!(the_latest_delivery_counts_and_a_dead_one_can_be_retried);
    async fn the_latest_delivery_counts_and_a_dead_one_can_be_retried(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = &db.store;
        insert_events(store).await;
        for (event_id, sink, status) in [
            (1, "crm", "dead"),
            (1, "crm", "delivered"),
            (1, "bus", "pending"),
            (2, "crm", "dead"),
        ] {
            on_pool!(store, pool => sqlx::query(
                "INSERT INTO deliveries (event_id, sink, status, next_attempt_at, created_at, \
                 updated_at, last_error) VALUES ($1, $2, $3, $4, $4, $4, 'HTTP 500')",
            )
            .bind(event_id)
            .bind(sink)
            .bind(status)
            .bind(Timestamp::now())
            .execute(pool)
            .await
            .map(drop))
            .unwrap();
        }
        let states: Vec<(i64, String, String)> = store
            .latest_deliveries(&[1, 2, 3])
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.event_id, s.sink, s.status))
            .collect();
        let expected = [
            (1, "bus", "pending"),
            (1, "crm", "delivered"),
            (2, "crm", "dead"),
        ]
        .map(|(id, sink, status)| (id, sink.to_owned(), status.to_owned()));
        assert_eq!(states, expected);

        let counts = |store: &Store| {
            let store = store.clone();
            async move {
                let counts = store.unfinished_delivery_counts().await.unwrap();
                counts
                    .into_iter()
                    .map(|c| format!("{} {} {}", c.sink, c.status, c.count))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(counts(store).await, ["bus pending 1", "crm dead 2"]);
        assert!(!store.retry_dead_delivery(2).await.unwrap(), "not dead");
        assert!(store.retry_dead_delivery(4).await.unwrap());
        assert_eq!(
            counts(store).await,
            ["bus pending 1", "crm dead 2", "crm pending 1"]
        );
        let of_event_2 = store.event_deliveries(2).await.unwrap();
        let statuses: Vec<&str> = of_event_2.iter().map(|d| d.status.as_str()).collect();
        assert_eq!(statuses, ["dead", "pending"]);
        assert_eq!(store.delivery(4).await.unwrap().unwrap().event_id, 2);
        assert_eq!(store.delivery(99).await.unwrap(), None);
        db.finish().await;
    }

    /// SQLite's plan for the inbox and a conversation: index range scans in id order, never
    /// a scan of the table (docs/web-inbox.md shows both databases' plans).
    #[tokio::test]
    async fn sqlite_answers_from_indexes_without_sorting() {
        let db = TestDb::new(Backend::Sqlite).await;
        let store = &db.store;
        let plan = |filter: InboxFilter| async move {
            let (sql, args) = inbox_sql(&filter, Page::Before(1_000), 50);
            let sql = format!("EXPLAIN QUERY PLAN {sql}");
            let steps = with_args!(store, (i64, i64, i64, String), sql, &args, fetch_all);
            let details: Vec<String> = steps.unwrap().into_iter().map(|(.., d)| d).collect();
            details.join("\n")
        };
        let inbox = plan(InboxFilter::default()).await;
        assert!(inbox.contains("USING INTEGER PRIMARY KEY"), "{inbox}");
        let conversation = plan(InboxFilter {
            number: Some("+1A".into()),
            ..InboxFilter::default()
        })
        .await;
        for index in ["events_by_from", "events_by_to"] {
            assert!(conversation.contains(index), "{index}:\n{conversation}");
        }
        // The conversation sorts only the two branches' few rows to merge them.
        assert!(!inbox.contains("TEMP B-TREE"), "{inbox}");
        for plan in [&inbox, &conversation] {
            assert!(!plan.contains("SCAN events"), "{plan}");
        }
        db.finish().await;
    }
}
