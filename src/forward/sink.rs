//! One delivery attempt to one sink.

use std::cell::OnceCell;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::amqp::{AmqpFailure, Publisher};
use super::{command, http, nats, redis as redis_stream};
use crate::config::{ForwardSettings, NatsTarget, RedisTarget, Target};
use crate::error_chain::ErrorChain;
use crate::event::StoredEvent;
use crate::request_failure::RequestFailure;
use actix_web::http::StatusCode;

/// How much of a failing answer or a command's stderr is kept as the last error.
pub(super) const ERROR_KEEP_BYTES: usize = 1024;

/// What one attempt did.
#[derive(Debug)]
pub enum Attempt {
    Delivered,
    Failed(DeliveryError),
}

/// Why an attempt did not deliver. Its text is logged and stored as the delivery's last
/// error, so it shows no more of a sink's URL than `scheme://host:port`: the rest may hold
/// credentials or a secret path.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("POST to {origin} failed")]
    Request {
        origin: String,
        #[source]
        source: RequestFailure,
    },
    /// `body` is the start of the answer, at most `ERROR_KEEP_BYTES`.
    #[error("POST to {origin} answered HTTP {}: {body}", status.as_u16())]
    Status {
        origin: String,
        status: StatusCode,
        body: String,
    },
    #[error("cannot start {}", program.display())]
    Start {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} killed after {} s", program.display(), timeout.as_secs())]
    Killed { program: PathBuf, timeout: Duration },
    #[error("cannot wait for {}", program.display())]
    Wait {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `stderr` is the start of what the command wrote there, at most `ERROR_KEEP_BYTES`.
    #[error("{} {status}: {stderr}", program.display())]
    Exited {
        program: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    #[error("XADD to stream {stream:?} at {origin} failed")]
    Redis {
        origin: String,
        stream: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("publishing to subject {subject:?} at {origin} failed")]
    Nats {
        origin: String,
        subject: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "no JetStream stream captures subject {subject:?}; create one (e.g. `nats stream add \
         --subjects {subject}`) or correct the sink's subject"
    )]
    NoStream { subject: String },
    #[error("publish to exchange {exchange:?} with routing key {routing_key:?} at {origin} failed")]
    Amqp {
        origin: String,
        exchange: String,
        routing_key: String,
        /// Boxed: the client's errors are large, and every attempt's result carries this.
        #[source]
        source: Box<AmqpFailure>,
    },
    /// The sink's `ca_file` could not be read since the configuration was checked.
    #[error("{0}")]
    CaFile(String),
    #[error("cannot write the event as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("the event is no longer stored (retention removed it)")]
    EventGone,
    #[error("the attempt ended abnormally")]
    Aborted(#[source] tokio::task::JoinError),
}

impl DeliveryError {
    /// The text logged and stored as the delivery's last error: the sink's name, then what
    /// went wrong with its causes.
    pub fn last_error(&self, sink: &str) -> String {
        format!("sink {sink:?}: {}", ErrorChain(self))
    }
}

/// A sink ready to send.
pub struct Sink {
    pub settings: ForwardSettings,
    /// Built on the first HTTP delivery: awc clients belong to the runtime thread that built
    /// them (the delivery task's), and command sinks need none.
    http: OnceCell<awc::Client>,
    /// Made on the first delivery to a Redis sink, inside the delivery task's runtime, which
    /// runs its reconnections.
    redis: OnceCell<ConnectionManager>,
    /// Made on the first delivery to a NATS sink, like `redis`.
    nats: tokio::sync::OnceCell<async_nats::jetstream::Context>,
    /// Connects on the first delivery to a RabbitMQ sink.
    amqp: Publisher,
}

/// The key that names one event to a receiver, the same on every retry and replay of it, so
/// the receiver (or a broker's own duplicate detection) can drop repeats.
pub(super) fn delivery_key(event: &StoredEvent) -> String {
    format!("voltd_evt_{}", event.id)
}

impl Sink {
    pub fn new(settings: ForwardSettings) -> Self {
        Self {
            settings,
            http: OnceCell::new(),
            redis: OnceCell::new(),
            nats: tokio::sync::OnceCell::new(),
            amqp: Publisher::default(),
        }
    }

    /// Each sink type's future is boxed: the attempt's own future is then a few words, where
    /// it would otherwise be as large as the largest type's (HTTP's), copied into every task
    /// the delivery task spawns.
    pub async fn deliver(&self, event: &StoredEvent) -> Attempt {
        let result = match &self.settings.target {
            Target::Http(target) => {
                let client = self.http.get_or_init(|| {
                    awc::Client::builder()
                        .timeout(self.settings.timeout)
                        .connector(awc::Connector::new().timeout(self.settings.timeout))
                        .finish()
                });
                Box::pin(http::post(client, target, event)).await
            }
            Target::Command(target) => {
                Box::pin(command::run(target, self.settings.timeout, event)).await
            }
            Target::Redis(target) => match self.redis_connection(target) {
                Ok(connection) => Box::pin(redis_stream::append(connection, target, event)).await,
                Err(error) => Err(error),
            },
            Target::Nats(target) => match Box::pin(self.nats_context(target)).await {
                Ok(context) => Box::pin(nats::publish(context, target, event)).await,
                Err(error) => Err(error),
            },
            Target::Amqp(target) => {
                Box::pin(self.amqp.publish(target, self.settings.timeout, event)).await
            }
        };
        match result {
            Ok(()) => Attempt::Delivered,
            Err(error) => Attempt::Failed(error),
        }
    }
}

impl Sink {
    fn redis_connection(&self, target: &RedisTarget) -> Result<ConnectionManager, DeliveryError> {
        if let Some(connection) = self.redis.get() {
            return Ok(connection.clone());
        }
        let connection = redis_stream::connect(target, self.settings.timeout)?;
        Ok(self.redis.get_or_init(|| connection).clone())
    }
}

impl Sink {
    async fn nats_context(
        &self,
        target: &NatsTarget,
    ) -> Result<&async_nats::jetstream::Context, DeliveryError> {
        self.nats
            .get_or_try_init(|| nats::connect(target, self.settings.timeout))
            .await
    }
}

/// An inbound text with every metadata field set, for the sinks' tests.
#[cfg(test)]
pub(super) fn sample_event(id: i64) -> StoredEvent {
    use crate::event::{EventFields, Verdict};
    StoredEvent {
        id,
        received_at: chrono::Utc::now(),
        content_type: Some("application/json".into()),
        content_encoding: None,
        remote_addr: None,
        body: br#"{"payload":{"text":"hi"}}"#.to_vec(),
        fields: EventFields {
            event_type: Some("message.received".into()),
            direction: Some("inbound".into()),
            from: Some("+15555550100".into()),
            to: Some("+15555550199".into()),
            ..EventFields::default()
        },
        signature: Verdict::Unchecked,
    }
}

pub(super) fn truncate(text: &str) -> String {
    if text.len() <= ERROR_KEEP_BYTES {
        return text.to_owned();
    }
    let mut end = ERROR_KEEP_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn the_last_error_names_the_sink_then_each_cause_once() {
        let refused = DeliveryError::Request {
            origin: "https://hooks.example:443".into(),
            source: RequestFailure::Connect(Some(std::io::Error::from_raw_os_error(111))),
        };
        assert_eq!(
            refused.last_error("crm"),
            "sink \"crm\": POST to https://hooks.example:443 failed: cannot connect: \
             Connection refused (os error 111)"
        );
        let exited = DeliveryError::Exited {
            program: "/usr/local/bin/page".into(),
            status: ExitStatus::from_raw(3 << 8),
            stderr: "no pager on duty".into(),
        };
        assert_eq!(
            exited.last_error("pager"),
            "sink \"pager\": /usr/local/bin/page exit status: 3: no pager on duty"
        );
    }
}
