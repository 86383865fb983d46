//! Running as a service: the admin listener (health, readiness, metrics), the systemd
//! notifications and watchdog, and logging.

pub mod admin;
pub mod log_buffer;
pub mod log_fields;
pub mod log_time;
pub mod metrics;
pub mod systemd;
pub mod telemetry;
pub mod watchdog;
