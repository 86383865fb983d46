//! voltd: receive Volt (textvolt) webhook events, store each one durably, log it.

pub mod access;
pub mod admin;
pub mod cli;
pub mod config;
pub mod event;
pub mod forward;
pub mod log_limit;
pub mod metrics;
pub mod receiver;
pub mod retention;
pub mod signature;
pub mod startup;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod volt;
pub mod watchdog;
