//! voltd: receive Volt (textvolt) webhook events, store each one durably, log it.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod error_chain;
pub mod event;
pub mod forward;
pub mod log_limit;
pub mod ops;
pub mod receiver;
pub mod request_failure;
pub mod startup;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod volt;
pub mod webhook;
