//! What only PostgreSQL needs: connecting, and storing a batch of new events so that
//! instances sharing the database store each message exactly once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Row};

use super::StoreError;
use crate::config::redacted_url;
use crate::event::{NewEvent, StoreOutcome};

/// How long a server may take to accept a connection, or to commit a batch of events. A server
/// that accepts TCP but never answers (frozen, or behind a broken proxy) must turn into an
/// error and a 503, not into requests that wait forever.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn no_answer(what: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "PostgreSQL did not {what} within {} s",
            ANSWER_TIMEOUT.as_secs()
        ),
    ))
}

/// The result of `work`, or within [`ANSWER_TIMEOUT`] an error saying what PostgreSQL did not
/// do.
pub(super) async fn within<T>(
    what: &str,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(ANSWER_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(no_answer(what)))
}

/// A connection of its own (outside the pool).
pub(super) async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    within("accept the connection", options.connect()).await
}

/// A PostgreSQL URL the driver would not accept whole. A typo in a parameter
/// (`sslmode=requre`) or a password with an unencoded `#`, `/` or `?` is a configuration
/// error, not a failure to connect on every restart. Never shows the password.
#[derive(Debug, thiserror::Error)]
#[error(
    "storage.url: {url:?} is not a valid PostgreSQL URL ({problem}); the form is \
     \"postgres://USER@HOST:PORT/DATABASE?PARAMETER=VALUE\". Percent-encode special characters \
     in the user or password (# as %23, / as %2F, ? as %3F, @ as %40), or leave the password \
     out and set PGPASSWORD"
)]
pub struct InvalidPostgresUrl {
    /// Redacted.
    url: String,
    /// The parser's words: a `String` because the driver's error may quote the URL whole.
    problem: String,
}

/// Read `url` as opening it would, without connecting.
pub(super) fn check_url(url: &str) -> Result<(), InvalidPostgresUrl> {
    let invalid = |problem: String| InvalidPostgresUrl {
        url: redacted_url(url),
        problem,
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if parsed.fragment().is_some() {
        return Err(invalid("it contains '#'".into()));
    }
    PgConnectOptions::from_str(url).map_err(|e| match e {
        sqlx::Error::Configuration(problem) => invalid(problem.to_string()),
        other => invalid(other.to_string()),
    })?;
    Ok(())
}

pub(super) async fn open(url: &str) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|source| StoreError::Url {
            url: redacted_url(url),
            source,
        })?
        .disable_statement_logging();
    // Named in pg_stat_activity, unless the URL (or PGAPPNAME) names it otherwise.
    let options = match options.get_application_name() {
        Some(_) => options,
        None => options.application_name("voltd"),
    };
    // One connection first, so that a refused connection or a wrong password is reported as
    // such rather than as the pool's timeout.
    let connect_error = |source| StoreError::Connect {
        url: redacted_url(url),
        source,
    };
    let first = connect(&options).await.map_err(connect_error)?;
    first.close().await.map_err(connect_error)?;
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(connect_error)
}

/// The event writer's own connection, outside the pool, opened again whenever it breaks (the
/// server restarted, a failover, an idle timeout in between): the events of that batch get
/// 503, and the next batch reconnects.
pub(super) struct PgWriter {
    pool: PgPool,
    conn: Option<PgConnection>,
}

/// Connect the event writer; an unreachable server fails start-up.
pub(super) async fn writer(pool: &PgPool) -> Result<PgWriter, StoreError> {
    Ok(PgWriter {
        pool: pool.clone(),
        conn: Some(connect_writer(pool).await?),
    })
}

impl PgWriter {
    pub(super) async fn store_distinct(
        &mut self,
        events: &[&NewEvent],
        keys: &[Option<String>],
        rows: &[usize],
    ) -> Result<Vec<StoreOutcome>, sqlx::Error> {
        let conn = self.connection().await?;
        let result = within("commit the batch", store_distinct(conn, events, keys, rows)).await;
        self.forget_if_broken(result.is_err()).await;
        result
    }

    /// A commit that changes nothing, proving that the server takes writes from voltd: an
    /// INSERT of no rows is refused by a read-only server (a standby, or
    /// `default_transaction_read_only`) and without the privilege, and `txid_current()` makes
    /// the transaction write and flush a commit record. Neither alone would do: the INSERT
    /// writes nothing, and `txid_current()` is allowed in read-only transactions.
    pub(super) async fn probe(&mut self) -> Result<(), sqlx::Error> {
        const PROBE: &str = "WITH nothing AS (INSERT INTO events (body) SELECT body FROM events \
            WHERE false RETURNING id) SELECT txid_current()";
        let conn = self.connection().await?;
        let result = within("commit a check", sqlx::query(PROBE).execute(&mut *conn)).await;
        self.forget_if_broken(result.is_err()).await;
        result.map(drop)
    }

    /// Whether the writer's connection still answers; opened again when it does not.
    pub(super) async fn check(&mut self) -> Result<(), sqlx::Error> {
        let conn = self.connection().await?;
        let result = within("answer a ping", conn.ping()).await;
        if result.is_err() {
            tracing::warn!("The event writer's PostgreSQL connection is broken; reconnecting");
            self.conn = None;
        }
        result
    }

    /// The open connection, or a new one when the last broke.
    async fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let conn = connect_writer(&self.pool).await?;
                tracing::info!("Reconnected the event writer to PostgreSQL");
                conn
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// After a failure, drop the connection when it no longer answers, so the next batch
    /// opens a new one.
    async fn forget_if_broken(&mut self, failed: bool) {
        if let (true, Some(conn)) = (failed, &mut self.conn)
            && within("answer a ping", conn.ping()).await.is_err()
        {
            tracing::warn!("The event writer's PostgreSQL connection is broken; reconnecting");
            self.conn = None;
        }
    }

    pub(super) async fn close(self) -> Result<(), sqlx::Error> {
        match self.conn {
            Some(conn) => conn.close().await,
            None => Ok(()),
        }
    }
}

/// A server configured with `synchronous_commit = off` would acknowledge commits that a
/// crash can still lose, so the writer turns it back on for itself.
async fn connect_writer(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    let mut conn = connect(&pool.connect_options()).await?;
    let mode: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut conn)
        .await?;
    if mode == "off" {
        tracing::warn!(
            "PostgreSQL has synchronous_commit = off; voltd's event writer sets it to on so \
             that a 200 always means the event is on disk"
        );
        sqlx::query("SET synchronous_commit = on")
            .execute(&mut conn)
            .await?;
    }
    Ok(conn)
}

/// One statement for any batch size: the rows travel as one array per column.
const INSERT: &str = "INSERT INTO events (received_at, content_type, remote_addr, event_type, \
    direction, from_number, to_number, message_id, status, error_code, text, body, dedup_key, \
    signature, content_encoding) SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], \
    $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
    $11::text[], $12::bytea[], $13::text[], $14::text[], $15::text[]) \
    ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key";

/// Store `events[rows]`, whose dedup keys are distinct; returns one outcome per row, in order.
///
/// Other instances write to the same table, so duplicates cannot be looked up first: the
/// unique index decides. Rows whose key is already taken are skipped (an insert racing with
/// another instance's uncommitted one waits for it), then the ids they lost to are read.
async fn store_distinct(
    conn: &mut PgConnection,
    events: &[&NewEvent],
    all_keys: &[Option<String>],
    rows: &[usize],
) -> Result<Vec<StoreOutcome>, sqlx::Error> {
    // Every instance inserts in key order, so two batches racing for the same keys wait
    // for each other instead of deadlocking. (The sort is stable: unkeyed rows keep theirs.)
    let mut order = rows.to_vec();
    order.sort_by(|&a, &b| all_keys[a].cmp(&all_keys[b]));
    let column = |get: fn(&NewEvent) -> Option<&str>| -> Vec<Option<Cow<str>>> {
        order.iter().map(|&i| get(events[i]).map(text)).collect()
    };
    let keys: Vec<Option<Cow<str>>> = rows
        .iter()
        .map(|&i| all_keys[i].as_deref().map(text))
        .collect();
    let inserted = sqlx::query(INSERT)
        .bind(
            order
                .iter()
                .map(|&i| events[i].received_at)
                .collect::<Vec<_>>(),
        )
        .bind(column(|e| e.content_type.as_deref()))
        .bind(column(|e| e.remote_addr.as_deref()))
        .bind(column(|e| e.fields.event_type.as_deref()))
        .bind(column(|e| e.fields.direction.as_deref()))
        .bind(column(|e| e.fields.from.as_deref()))
        .bind(column(|e| e.fields.to.as_deref()))
        .bind(column(|e| e.fields.message_id.as_deref()))
        .bind(column(|e| e.fields.status.as_deref()))
        .bind(column(|e| e.fields.error_code.as_deref()))
        .bind(column(|e| e.fields.text.as_deref()))
        .bind(
            order
                .iter()
                .map(|&i| events[i].body.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            order
                .iter()
                .map(|&i| all_keys[i].as_deref().map(text))
                .collect::<Vec<_>>(),
        )
        .bind(
            order
                .iter()
                .map(|&i| events[i].signature.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(column(|e| e.content_encoding.as_deref()))
        .fetch_all(&mut *conn)
        .await?;
    let mut stored: HashMap<String, i64> = HashMap::with_capacity(inserted.len());
    // Identity values are handed out in insertion order, so sorted ids follow the rows.
    let mut unkeyed_ids = Vec::new();
    for row in inserted {
        match row.try_get::<Option<String>, _>(1)? {
            Some(key) => {
                stored.insert(key, row.try_get(0)?);
            }
            None => unkeyed_ids.push(row.try_get::<i64, _>(0)?),
        }
    }
    unkeyed_ids.sort_unstable();
    let taken: Vec<&str> = keys
        .iter()
        .flatten()
        .map(|key| key.as_ref())
        .filter(|key| !stored.contains_key(*key))
        .collect();
    let existing = if taken.is_empty() {
        HashMap::new()
    } else {
        existing_ids(conn, &taken).await?
    };
    let mut unkeyed_ids = unkeyed_ids.into_iter();
    keys.iter()
        .map(|key| match key {
            Some(key) => stored
                .get(key.as_ref())
                .map(|&id| StoreOutcome::Stored(id))
                .or_else(|| {
                    existing
                        .get(key.as_ref())
                        .map(|&id| StoreOutcome::Duplicate(id))
                })
                .ok_or_else(|| {
                    sqlx::Error::Protocol(format!("no stored row for dedup key {key:?}"))
                }),
            None => unkeyed_ids
                .next()
                .map(StoreOutcome::Stored)
                .ok_or_else(|| sqlx::Error::Protocol("fewer rows inserted than sent".into())),
        })
        .collect()
}

async fn existing_ids(
    conn: &mut PgConnection,
    keys: &[&str],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, dedup_key FROM events WHERE dedup_key = ANY($1)")
        .bind(keys)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(1)?, row.try_get(0)?)))
        .collect()
}

/// PostgreSQL text cannot hold NUL, which JSON strings may: it becomes U+FFFD in the
/// extracted columns. The raw body (bytea) keeps the exact bytes.
fn text(value: &str) -> Cow<'_, str> {
    if value.contains('\0') {
        Cow::Owned(value.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_url_is_explained_without_its_password() {
        for url in [
            "postgres://postgres:pa#ss@127.0.0.1:5432/db",
            "postgres://u:secret@127.0.0.1:99999/db",
            "postgres://u:secret@127.0.0.1:abc/db",
            "postgres://u:secret@127.0.0.1/db?sslmode=bogus",
        ] {
            let error = check_url(url).unwrap_err().to_string();
            assert!(
                error.starts_with("storage.url: \"postgres://"),
                "{url}: {error}"
            );
            assert!(
                error.contains("not a valid PostgreSQL URL"),
                "{url}: {error}"
            );
            assert!(
                !error.contains("secret") && !error.contains("pa#ss"),
                "{error}"
            );
        }
        assert!(check_url("postgres://u@db/voltd?sslmode=require").is_ok());
    }
}
