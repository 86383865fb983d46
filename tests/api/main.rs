//! The integration tests: one binary, so the crate and its helpers are compiled once. The
//! storage modules run again on PostgreSQL in `tests/postgres`.

/// The store every `TestConfig` of this binary uses.
pub const BACKEND: voltd::config::Backend = voltd::config::Backend::Sqlite;

mod admin;
mod brokers;
mod browser;
mod config_cli;
mod daemon;
mod durability;
mod encodings;
mod events_cli;
mod fake_volt;
mod forwarding;
mod health;
mod helpers;
mod inbox;
mod inbox_access;
mod limits;
mod logging;
mod receiving;
mod registration;
mod shutdown;
mod signatures;
mod systemd;
mod tls;
