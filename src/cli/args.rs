//! The command line's definitions and nothing else. `build.rs` includes this file to write
//! the man page and the shell completions from the very definitions the binary parses with,
//! so they cannot drift apart; it may therefore use only clap, chrono and std.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "voltd",
    version,
    about = "Receive and durably store Volt SMS webhook events"
)]
pub struct Cli {
    /// Configuration file [default: $VOLTD_CONFIG, ./volt.toml, /etc/voltd/volt.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default)
    Run,
    /// Validate the configuration and print it with secrets redacted
    CheckConfig,
    /// Apply database migrations and exit
    Migrate,
    /// Register server.public_url with Volt now (a voltd must be serving it)
    Register,
    /// Inspect stored events
    #[command(subcommand)]
    Events(EventsCommand),
    /// Inspect deliveries of events to [[forward]] sinks
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Post a realistic sample event to this voltd's webhook endpoint and print the answer
    SendTestEvent {
        /// The kind of event to post
        #[arg(long = "type", value_enum, default_value = "message.received")]
        event_type: TestEventType,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List stored events, newest first
    List {
        /// How many events to show
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only events received at or after this time (RFC 3339, e.g. 2026-11-26T00:00:00Z)
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only events of this type, e.g. message.received
        #[arg(long = "type", value_name = "EVENT_TYPE")]
        event_type: Option<String>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Show one event as pretty JSON
    Show {
        /// The event id (the "id" in voltd's answer to Volt, or from `events list`)
        id: i64,
    },
    /// Print events as they are stored, until Ctrl-C
    Tail {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Queue stored events to be forwarded again ([[forward]] sinks, filters applied)
    #[command(group = ArgGroup::new("events").required(true).args(["id", "since"]))]
    Replay {
        /// The event id to forward again
        id: Option<i64>,
        /// Instead of one id: every event received at or after this time (RFC 3339)
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only events of this type, e.g. message.received
        #[arg(long = "type", value_name = "EVENT_TYPE")]
        event_type: Option<String>,
        /// Only this sink (its name in volt.toml); all sinks by default
        #[arg(long, value_name = "NAME")]
        sink: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries of events to [[forward]] sinks, newest first
    List {
        /// Only deliveries in this state
        #[arg(long, value_enum)]
        status: Option<DeliveryStatus>,
        /// Only this sink (its name in volt.toml)
        #[arg(long, value_name = "NAME")]
        sink: Option<String>,
        /// How many deliveries to show
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DeliveryStatus {
    /// Not delivered yet; retried with backoff
    Pending,
    Delivered,
    /// Given up after the sink's retries
    Dead,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TestEventType {
    #[value(name = "message.received")]
    Received,
    #[value(name = "message.sent")]
    Sent,
    #[value(name = "message.finalized")]
    Finalized,
}

/// A `--since` time: RFC 3339, as `events list` shows them.
pub fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}; use RFC 3339 such as 2026-11-26T08:00:00Z"))
}
