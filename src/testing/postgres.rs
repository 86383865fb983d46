//! The PostgreSQL tests: the database they use, whether they run, and a schema of its own
//! for each test.
//!
//! The rule: asked for (`VOLTD_TEST_POSTGRES_URL` set, or `CI=true`), they run, and a
//! server that does not answer fails them, since a suite that skipped its database would
//! prove nothing. Not asked for, they run when the local server answers and are skipped,
//! with one line saying so, when it does not: `cargo test` passes on any machine.

use std::io::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{Connection as _, PgConnection};

const URL_VARIABLE: &str = "VOLTD_TEST_POSTGRES_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// A local server answers at once; one that is not there should not hold up a test run.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Only ever shown, so any error will do.
type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The database the PostgreSQL tests use: `VOLTD_TEST_POSTGRES_URL`, or the local server's
/// `test` database.
pub fn url() -> String {
    std::env::var(URL_VARIABLE).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Whether this test binary runs its PostgreSQL tests, decided once by the rule above. A
/// skip prints its line once, straight to stderr: libtest would capture `eprintln!` of a
/// passing test. When the tests must run but cannot connect, every one of them fails with
/// the reason.
pub fn should_run() -> bool {
    static DECISION: OnceLock<Result<bool, String>> = OnceLock::new();
    match DECISION.get_or_init(decide) {
        Ok(run) => *run,
        Err(why) => panic!("{why}"),
    }
}

fn decide() -> Result<bool, String> {
    let url = url();
    let asked_by = super::required_by(URL_VARIABLE);
    let Err(cause) = on_own_runtime(connect_within_timeout(url.clone())) else {
        return Ok(true);
    };
    match asked_by {
        Some(asked_by) => Err(format!(
            "the PostgreSQL tests must run ({asked_by}), but cannot connect to {url}: {cause}. \
             Start the server, or point {URL_VARIABLE} at a database whose user may create \
             schemas"
        )),
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "PostgreSQL tests skipped: cannot connect to {url} ({cause}); set \
                 {URL_VARIABLE} (or CI=true) to run them"
            );
            Ok(false)
        }
    }
}

async fn connect_within_timeout(url: String) -> Result<(), Failure> {
    let connecting = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&url));
    let connection = connecting
        .await
        .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))??;
    Ok(connection.close().await?)
}

/// A schema of its own in the test database for one test, dropped with it, also when the
/// test fails.
#[derive(Debug)]
pub struct Schema {
    name: String,
}

impl Schema {
    /// Panics, naming the database and what to do, when the schema cannot be created.
    pub fn create() -> Self {
        assert!(
            should_run(),
            "this test uses PostgreSQL, so it must begin with `skip_unless_available!`"
        );
        let name = format!("voltd_test_{:016x}", rand::random::<u64>());
        if let Err(e) = run_sql(format!("CREATE SCHEMA {name}")) {
            panic!(
                "cannot create a schema for this test in {url}: {e}. Start the server, or \
                 point {URL_VARIABLE} at a database whose user may create schemas",
                url = url()
            );
        }
        Self { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `storage.url` whose tables live in this schema, and whose connections carry the
    /// schema's name as their application name, so that a test can find them on the server.
    pub fn url(&self) -> String {
        format!(
            "{}?options=-csearch_path%3D{name}&application_name={name}",
            url(),
            name = self.name
        )
    }
}

/// A schema left behind fails a passing test; a test that is failing already only reports
/// it, since a second panic while unwinding would abort the whole test binary.
impl Drop for Schema {
    fn drop(&mut self) {
        if let Err(e) = run_sql(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)) {
            let message = format!("cannot drop the test schema {}: {e}", self.name);
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// One administrative statement on the test database.
fn run_sql(sql: String) -> Result<(), Failure> {
    on_own_runtime(async move {
        let mut admin = PgConnection::connect(&url()).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await?;
        Ok(admin.close().await?)
    })
}

/// Runs `work` on a thread and runtime of its own, so that it works from `Drop` and from
/// inside a test's runtime alike (a runtime cannot block on another inside itself).
fn on_own_runtime<T: Send + 'static>(
    work: impl Future<Output = Result<T, Failure>> + Send + 'static,
) -> Result<T, Failure> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work)
    })
    .join()
    .map_err(|_| "the thread talking to PostgreSQL panicked")?
}
