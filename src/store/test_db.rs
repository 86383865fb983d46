//! Stores for the unit tests on each backend: an SQLite file in a temporary directory, or a
//! schema of its own in the PostgreSQL test database ([`crate::testing::postgres`]).

use std::time::Duration;

use super::backend::{Timestamp, on_pool};
use super::{DeliveryFilter, Store};
use crate::config::Backend;
use crate::testing::postgres::Schema;

/// The default `[storage] dedup_window_days`, for tests that do not look at the window.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(30 * 86_400);

pub struct TestDb {
    pub store: Store,
    pub url: String,
    /// Dropped after the store, with the test's tables in it.
    _schema: Option<Schema>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A migrated, empty store. A test on PostgreSQL calls [`crate::skip_unless_available`]
    /// first.
    pub async fn new(backend: Backend) -> Self {
        let (url, schema, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("voltd.db").display());
                (url, None, Some(dir))
            }
            Backend::Postgres => {
                let schema = Schema::create();
                (schema.url(), Some(schema), None)
            }
        };
        let store = Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        Self {
            store,
            url,
            _schema: schema,
            _dir: dir,
        }
    }

    /// Close the store, then drop the schema; a failure to drop it fails the test.
    pub async fn finish(self) {
        self.store.close().await;
    }
}

/// Store `count` events with empty bodies, one statement each.
pub async fn insert_events(store: &Store, count: usize) {
    for _ in 0..count {
        on_pool!(store, pool => sqlx::query("INSERT INTO events (received_at, body) VALUES ($1, $2)")
            .bind(Timestamp::now())
            .bind(&b"{}"[..])
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
    }
}

/// `(event id, sink)` of every delivery row, in event order.
pub async fn delivery_rows(store: &Store) -> Vec<(i64, String)> {
    let everything = DeliveryFilter {
        limit: u32::MAX,
        ..DeliveryFilter::default()
    };
    let mut rows: Vec<(i64, String)> = store
        .list_deliveries(&everything)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.event_id, d.sink))
        .collect();
    rows.sort();
    rows
}

/// `test_each_backend!(name)` makes the tests `name::sqlite` and `name::postgres` of the
/// test body `async fn name(backend: Backend)`, so that a failing test's name says which
/// backend failed. Rejected: one test looping over the backends, whose every assertion would
/// have to name the backend itself.
macro_rules! test_each_backend {
    ($name:ident) => {
        mod $name {
            use crate::config::Backend;

            #[tokio::test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                crate::skip_unless_available!(Backend::Postgres);
                super::$name(Backend::Postgres).await;
            }
        }
    };
}

pub(crate) use test_each_backend;
