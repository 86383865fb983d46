//! RabbitMQ (AMQP 0-9-1) sinks: each event is published, persistent and mandatory, with its
//! raw body as the message and its metadata as headers; delivered once the broker confirms.
//!
//! One connection and one channel (in confirm mode) per sink, shared by the attempts in
//! flight. When it drops, the next attempt connects again; after a failed connection the
//! next one waits, the wait doubling up to [`RECONNECT_MAX_DELAY`], so a broker that is down
//! is not hammered by every attempt in flight.

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::sink::{DeliveryError, delivery_key};
use crate::config::{AmqpTarget, origin};
use crate::error_chain::ErrorChain;
use crate::event::StoredEvent;

const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);
/// AMQP's delivery mode for a message the broker writes to disk.
const PERSISTENT: u8 = 2;

/// Why a publish was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum AmqpFailure {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("no answer within {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error(
        "not connected: the last connection failed ({cause}); the next is tried in {} ms",
        wait.as_millis()
    )]
    Reconnecting { wait: Duration, cause: String },
    #[error(
        "the broker returned it as unroutable ({code} {text}): no queue is bound to the \
         exchange with this routing key; declare and bind one"
    )]
    Unroutable { code: u16, text: String },
    #[error("the broker refused it (nack); see the broker's log")]
    Nacked,
    /// The sink's `ca_file` could not be read since the configuration was checked.
    #[error("{0}")]
    CaFile(String),
}

/// The sink's connection, made on the first attempt and again after it drops.
#[derive(Default)]
pub struct Publisher {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: Option<(Connection, Channel)>,
    next_try: Option<NextTry>,
}

/// After a failed connection: when the next may be tried, the wait after that, and why the
/// last one failed, so that the attempts in between can say it too.
struct NextTry {
    at: Instant,
    wait: Duration,
    cause: String,
}

impl Publisher {
    /// Delivered once the broker confirms the message; a nack, a return as unroutable, or
    /// no confirmation within `timeout` is a failed attempt.
    pub(super) async fn publish(
        &self,
        target: &AmqpTarget,
        timeout: Duration,
        event: &StoredEvent,
    ) -> Result<(), DeliveryError> {
        let attempt = async {
            let channel = self.channel(target).await?;
            let confirm = channel
                .basic_publish(
                    target.exchange.as_str().into(),
                    target.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &event.body,
                    properties(event),
                )
                .await?;
            match confirm.await? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                    Err(AmqpFailure::Unroutable {
                        code: returned.reply_code,
                        text: returned.reply_text.to_string(),
                    })
                }
                Confirmation::Nack(None) | Confirmation::NotRequested => Err(AmqpFailure::Nacked),
            }
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(AmqpFailure::TimedOut(timeout)),
        };
        result.map_err(|source| DeliveryError::Amqp {
            origin: origin(&target.url),
            exchange: target.exchange.clone(),
            routing_key: target.routing_key.clone(),
            source: Box::new(source),
        })
    }

    /// The open channel, or a new connection and channel when there is none.
    async fn channel(&self, target: &AmqpTarget) -> Result<Channel, AmqpFailure> {
        let mut state = self.state.lock().await;
        if let Some((connection, channel)) = &state.open
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        state.open = None;
        if let Some(next) = &state.next_try {
            let now = Instant::now();
            if now < next.at {
                return Err(AmqpFailure::Reconnecting {
                    wait: next.at - now,
                    cause: next.cause.clone(),
                });
            }
        }
        match open(target).await {
            Ok((connection, channel)) => {
                state.next_try = None;
                state.open = Some((connection, channel.clone()));
                Ok(channel)
            }
            Err(error) => {
                let wait = state
                    .next_try
                    .as_ref()
                    .map_or(RECONNECT_MIN_DELAY, |next| next.wait * 2)
                    .min(RECONNECT_MAX_DELAY);
                state.next_try = Some(NextTry {
                    at: Instant::now() + wait,
                    wait,
                    cause: ErrorChain(&error).to_string(),
                });
                Err(error)
            }
        }
    }
}

async fn open(target: &AmqpTarget) -> Result<(Connection, Channel), AmqpFailure> {
    // With a ca_file, its authorities are trusted for an amqps:// server.
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: super::files::ca_pem(&target.tls).map_err(AmqpFailure::CaFile)?,
    };
    let connection = Connection::connect_with_config(
        target.url.as_str(),
        ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime()?,
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// Persistent, with the stable key as `message_id` and the event's metadata as headers.
fn properties(event: &StoredEvent) -> BasicProperties {
    let text =
        |value: &Option<String>| AMQPValue::LongString(value.clone().unwrap_or_default().into());
    let mut headers = FieldTable::default();
    headers
        .insert("id".into(), AMQPValue::LongLongInt(event.id))
        .insert("event_type".into(), text(&event.fields.event_type))
        .insert("direction".into(), text(&event.fields.direction))
        .insert("from".into(), text(&event.fields.from))
        .insert("to".into(), text(&event.fields.to))
        .insert(
            "received_at".into(),
            AMQPValue::LongString(event.received_at_text().into()),
        );
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(delivery_key(event).into())
        .with_headers(headers);
    if let Some(content_type) = &event.content_type {
        properties = properties.with_content_type(content_type.as_str().into());
    }
    properties
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::sink::sample_event as event;
    use crate::testing::amqp::TestQueue;
    use crate::testing::brokers::Broker;
    use crate::testing::certificates::TestAuthority;
    use crate::testing::proxy::TcpProxy;

    #[actix_web::test]
    async fn each_event_is_one_persistent_message_with_its_body_and_metadata() {
        crate::skip_unless_broker!(Broker::RabbitMq);
        let queue = TestQueue::declare().await;
        let sent = event(41);
        Publisher::default()
            .publish(&queue.target(), Duration::from_secs(5), &sent)
            .await
            .unwrap();
        let message = queue.take().await.expect("one message");
        assert_eq!(message.data, sent.body);
        let properties = &message.properties;
        assert_eq!(properties.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(
            properties.message_id().as_ref().map(|id| id.as_str()),
            Some("voltd_evt_41")
        );
        assert_eq!(
            properties.content_type().as_ref().map(|t| t.as_str()),
            Some("application/json")
        );
        let headers = properties.headers().clone().expect("headers");
        let header = |name: &str| headers.inner().get(name).cloned();
        let text = |value: &str| Some(AMQPValue::LongString(value.into()));
        assert_eq!(header("id"), Some(AMQPValue::LongLongInt(41)));
        assert_eq!(header("event_type"), text("message.received"));
        assert_eq!(header("direction"), text("inbound"));
        assert_eq!(header("from"), text("+15555550100"));
        assert_eq!(header("to"), text("+15555550199"));
        assert_eq!(header("received_at"), text(&sent.received_at_text()));
        assert_eq!(headers.inner().len(), 6, "{headers:?}");
        assert!(queue.take().await.is_none());
        queue.delete().await;
    }

    #[actix_web::test]
    async fn an_unroutable_message_is_a_failed_attempt_that_says_why() {
        crate::skip_unless_broker!(Broker::RabbitMq);
        let queue = TestQueue::declare().await;
        let mut target = queue.target();
        target.routing_key = format!("{}-nobody", queue.name());
        let publisher = Publisher::default();
        let error = publisher
            .publish(&target, Duration::from_secs(5), &event(1))
            .await
            .unwrap_err();
        let text = error.last_error("rabbit");
        assert!(
            text.starts_with(&format!(
                "sink \"rabbit\": publish to exchange \"\" with routing key \"{}\" at {} \
                 failed: the broker returned it as unroutable (312 NO_ROUTE)",
                target.routing_key,
                origin(&target.url)
            )),
            "{text}"
        );
        // The channel stays usable: the next event to a bound queue is delivered.
        publisher
            .publish(&queue.target(), Duration::from_secs(5), &event(2))
            .await
            .unwrap();
        assert!(queue.take().await.is_some());
        queue.delete().await;
    }

    #[actix_web::test]
    async fn amqps_checks_the_certificate_against_the_ca_file() {
        crate::skip_unless_broker!(Broker::RabbitMq);
        let queue = TestQueue::declare().await;
        let authority = TestAuthority::generate();
        let proxy = TcpProxy::start_tls(queue.url(), &authority.server());
        let mut target = queue.target();
        target.url = proxy.tls_url_for(queue.url(), "amqps");

        // The public roots do not vouch for the test's certificate.
        let error = Publisher::default()
            .publish(&target, Duration::from_secs(5), &event(1))
            .await
            .unwrap_err()
            .last_error("bus");
        assert!(error.contains("certificate"), "{error}");

        target.tls.ca_file = Some(authority.ca_file.clone());
        Publisher::default()
            .publish(&target, Duration::from_secs(5), &event(2))
            .await
            .unwrap();
        let message = queue.take().await.expect("one message");
        assert_eq!(message.data, event(2).body);
    }

    #[actix_web::test]
    async fn an_unreachable_broker_is_a_failed_attempt_then_waits_before_reconnecting() {
        let target = AmqpTarget {
            url: format!(
                "amqp://guest:guest@127.0.0.1:{}/%2f",
                crate::testing::brokers::free_port()
            )
            .parse()
            .unwrap(),
            exchange: String::new(),
            routing_key: "volt-events".into(),
            tls: crate::config::BrokerTls::default(),
        };
        let publisher = Publisher::default();
        let first = publisher
            .publish(&target, Duration::from_secs(2), &event(1))
            .await
            .unwrap_err()
            .last_error("rabbit");
        let expected = format!(
            "sink \"rabbit\": publish to exchange \"\" with routing key \"volt-events\" at {} \
             failed: ",
            origin(&target.url)
        );
        assert!(first.starts_with(&expected), "{first}");
        assert!(!first.contains("guest"), "{first}");
        let second = publisher
            .publish(&target, Duration::from_secs(2), &event(2))
            .await
            .unwrap_err()
            .last_error("rabbit");
        assert!(second.contains("not connected"), "{second}");
        let cause = first.rsplit("failed: ").next().unwrap_or_default();
        assert!(second.contains(cause), "{second} should repeat {cause}");
    }
}
