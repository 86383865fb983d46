//! Test support shared by the unit tests and the integration tests: which backends are
//! tested here, a PostgreSQL schema per test, whether the brokers and a browser are there, a
//! proxy that cuts a sink off from its broker, one RSA key for signing, and compressed bodies.
//!
//! Integration tests see only the public API, so this lives in the library, compiled for the
//! unit tests (`cfg(test)`) and for the integration tests through the `testing` feature,
//! which the crate's dev-dependency on itself turns on (see Cargo.toml); release builds never
//! contain it. Rejected: a test-support crate of its own, which would depend on voltd and so
//! give the unit tests a second copy of voltd's types; and a copy for each kind of test,
//! which is how two schema helpers with two skip rules came about.

pub mod amqp;
pub mod brokers;
pub mod browser;
pub mod certificates;
pub mod encoding;
pub mod nats;
pub mod postgres;
pub mod proxy;

use std::sync::OnceLock;

use rsa::PrivateKey;

use crate::config::Backend;

/// Whether the tests of `backend` run in this test binary: SQLite's always, PostgreSQL's as
/// [`postgres::should_run`] decides (which fails the test when they must run but cannot).
pub fn backend_available(backend: Backend) -> bool {
    match backend {
        Backend::Sqlite => true,
        Backend::Postgres => postgres::should_run(),
    }
}

/// Ends the calling test early, where it counts as passed, when `backend`'s tests do not run
/// here ([`testing::backend_available`](crate::testing::backend_available)). Rejected:
/// `#[ignore]`, which would hide the tests from CI, whose server is there to run them.
#[macro_export]
macro_rules! skip_unless_available {
    ($backend:expr) => {
        if !$crate::testing::backend_available($backend) {
            return;
        }
    };
}

/// Why the tests of an outside service must run, when they must: `variable` (which points
/// them at the service) is set, or `CI=true`.
fn required_by(variable: &str) -> Option<String> {
    if std::env::var_os(variable).is_some() {
        Some(format!("{variable} is set"))
    } else if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        Some("CI=true".to_owned())
    } else {
        None
    }
}

/// The key that signs test events. Generating one takes seconds in a debug build, so each
/// test binary makes one, of the smallest size voltd accepts, and every signature test
/// shares it.
pub fn signing_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::new(&mut rand::rng(), 1024).expect("generate an RSA key"))
}
