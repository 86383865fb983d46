//! Stores for unit tests on each backend: an SQLite file in a temporary directory, or a
//! schema of its own in the PostgreSQL database `VOLTD_TEST_POSTGRES_URL` names (default: the
//! local server's `test` database), dropped by [`TestDb::finish`].

use sqlx::{Connection, PgConnection};

use super::Store;
use crate::config::Backend;

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

pub fn postgres_url() -> String {
    std::env::var("VOLTD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub struct TestDb {
    pub store: Store,
    pub url: String,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A migrated, empty store. PostgreSQL must be reachable: a missing server fails the test.
    pub async fn new(backend: Backend) -> Self {
        let (url, schema, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("voltd.db").display());
                (url, None, Some(dir))
            }
            Backend::Postgres => {
                let schema = format!("voltd_unit_{:016x}", rand::random::<u64>());
                let mut admin = PgConnection::connect(&postgres_url())
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL at {} is needed by this test: {e}",
                            postgres_url()
                        )
                    });
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let url = format!("{}?options=-csearch_path%3D{schema}", postgres_url());
                (url, Some(schema), None)
            }
        };
        let store = Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        Self {
            store,
            url,
            schema,
            _dir: dir,
        }
    }

    /// Close the store and drop the schema; a failure to drop it fails the test.
    pub async fn finish(mut self) {
        self.store.close().await;
        if let Some(schema) = self.schema.take() {
            drop_schema(schema).unwrap();
        }
    }
}

/// A test that failed before [`TestDb::finish`] still leaves no schema behind.
impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take()
            && let Err(e) = drop_schema(schema)
        {
            eprintln!("could not drop a test schema: {e}");
        }
    }
}

/// On a thread and runtime of its own, so it works from `Drop` and from a test's runtime.
fn drop_schema(schema: String) -> std::io::Result<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut admin = PgConnection::connect(&postgres_url())
                .await
                .map_err(std::io::Error::other)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut admin)
            .await
            .map(drop)
            .map_err(std::io::Error::other)
        })
    })
    .join()
    .map_err(|_| std::io::Error::other("the thread dropping the schema panicked"))?
}
