//! A RabbitMQ queue of the test's own on the test server ([`Broker::RabbitMq`]), bound to the
//! default exchange by its name, which the test reads with `basic.get`.
//!
//! The queue is exclusive to the test's connection, so RabbitMQ deletes it when that closes
//! (however the test ends); [`TestQueue::delete`] removes it at once.

use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use url::Url;

use super::brokers::Broker;
use crate::config::AmqpTarget;

pub struct TestQueue {
    url: Url,
    name: String,
    /// Kept open: the queue lives as long as it does.
    _connection: Connection,
    channel: Channel,
}

impl TestQueue {
    pub async fn declare() -> Self {
        let url = Broker::RabbitMq.url();
        let name = format!("voltd-test-{:016x}", rand::random::<u64>());
        let connection = Connection::connect(url.as_str(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at {url}: {e}"));
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("cannot declare the test queue {name}: {e}"));
        Self {
            url,
            name,
            _connection: connection,
            channel,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Publishing to the default exchange with the queue's name as the routing key.
    pub fn target(&self) -> AmqpTarget {
        AmqpTarget {
            url: self.url.clone(),
            exchange: String::new(),
            routing_key: self.name.clone(),
            tls: crate::config::BrokerTls::default(),
        }
    }

    /// The oldest message, taken off the queue; `None` when it is empty.
    pub async fn take(&self) -> Option<Delivery> {
        self.channel
            .basic_get(self.name.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap_or_else(|e| panic!("cannot read the test queue {}: {e}", self.name))
            .map(|message| message.delivery)
    }

    pub async fn delete(self) {
        self.channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("cannot delete the test queue {}: {e}", self.name));
    }
}
