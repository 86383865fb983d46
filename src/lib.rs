//! voltd: receive Volt (textvolt) webhook events, store each one durably, log it.
//!
//! # How the code is laid out
//!
//! The modules form layers. A module uses the layers below its own, and other modules of its
//! own layer only where this says so; nothing uses a layer above it, so there are no circles.
//!
//! 1. **Ground.** [`config`]: the settings, deserialised from `volt.toml` and `VOLT_*`
//!    variables into typed values and checked once; it reads no file but `volt.toml` and
//!    imports nothing else of voltd. The domain: [`event`] (an event as received and as
//!    stored, its signature verdict, its dedup key) and [`webhook`] (what Volt answered to a
//!    registration). Small helpers that know nothing of voltd: [`backoff`], [`error_chain`],
//!    [`log_limit`], [`printable`], [`request_failure`].
//! 2. **Storage and Volt.** [`store`]: SQLite or PostgreSQL behind one set of queries, the
//!    group-commit event writer, the forwarding outbox, instance roles and retention; it knows
//!    no HTTP and no sinks. [`volt`]: the GraphQL client (which stores nothing), the token,
//!    Volt's signature scheme, and the registration policy, which records what Volt answered
//!    through the store.
//! 3. **Wings.** [`receiver`]: the webhook endpoint, field extraction, client addresses, TLS
//!    and the signature check; it never calls Volt. [`forward`]: the delivery task over the
//!    outbox, one file per sink type. [`ops`]: the admin listener (health, readiness,
//!    metrics), systemd notifications and watchdog, and logging. The receiver and the
//!    forwarder count into [`ops::metrics`]. [`ui`]: the web inbox, served on the admin
//!    listener; it reads the store, shows [`ops`]'s readiness and counters, and replays
//!    through [`forward`]'s sink filters.
//! 4. [`startup`]: wiring only. It builds the parts from the settings and runs them in the
//!    order Volt requires (serve, then register, then tell systemd).
//! 5. [`cli`]: one file per command, on top.
//!
//! Where new things go: a setting is one typed field in its section's file under `config/`
//! (a reader in `config/fields.rs` if its kind of value is new), documented in `volt.toml`
//! and the README. A sink type is a file in `forward/` and its settings in
//! `config/forward.rs`. A query is a method on [`store::Store`] written once for both
//! databases (`store/backend.rs` says how). A metric is a field of [`ops::metrics::Metrics`].

pub mod backoff;
pub mod cli;
pub mod config;
pub mod error_chain;
pub mod event;
pub mod forward;
pub mod log_limit;
pub mod ops;
pub mod printable;
pub mod receiver;
pub mod request_failure;
pub mod startup;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod ui;
pub mod volt;
pub mod webhook;
