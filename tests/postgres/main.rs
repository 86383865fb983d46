//! The storage tests of `tests/api` again, with every daemon on PostgreSQL (each test in a
//! schema of its own), plus what only a shared store can show: several instances at once.
//! Each test begins with `skip_unless_available!`: without a server, and not asked to run
//! (`VOLTD_TEST_POSTGRES_URL`, `CI=true`), they pass at once and one line says so.

// The helpers are shared with `tests/api`; not every one is used by the modules run here.
#![allow(dead_code)]

#[path = "../api/admin.rs"]
mod admin;
#[path = "../api/daemon.rs"]
mod daemon;
#[path = "../api/durability.rs"]
mod durability;
#[path = "../api/events_cli.rs"]
mod events_cli;
#[path = "../api/fake_volt.rs"]
mod fake_volt;
#[path = "../api/forwarding.rs"]
mod forwarding;
mod forwarding_instances;
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/inbox.rs"]
mod inbox;
#[path = "../api/inbox_access.rs"]
mod inbox_access;
mod instances;
#[path = "../api/limits.rs"]
mod limits;
mod outage;
#[path = "../api/receiving.rs"]
mod receiving;
mod reconnect;
#[path = "../api/registration.rs"]
mod registration;
#[path = "../api/shutdown.rs"]
mod shutdown;

/// The store every `TestConfig` of this binary uses.
pub const BACKEND: voltd::config::Backend = voltd::config::Backend::Postgres;
