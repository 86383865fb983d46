//! The integration tests: one binary, so the crate and its helpers are compiled once.

mod admin;
mod config_cli;
mod daemon;
mod durability;
mod events_cli;
mod fake_volt;
mod forwarding;
mod helpers;
mod limits;
mod logging;
mod receiving;
mod registration;
mod shutdown;
mod signatures;
mod systemd;
mod tls;
