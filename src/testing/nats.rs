//! A JetStream stream of a test's own on the NATS test server ([`Broker::Nats`]), capturing
//! a subject of its own; deleted with it.

use async_nats::jetstream::{self, stream};
use url::Url;

use super::brokers::Broker;
use crate::config::NatsTarget;

pub struct TestNatsStream {
    url: Url,
    name: String,
    subject: String,
    context: jetstream::Context,
}

/// One message as the stream keeps it: its headers by name, and its payload.
pub struct Received {
    pub headers: async_nats::HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(ToString::to_string)
            .unwrap_or_else(|| panic!("no header {name}"))
    }
}

impl TestNatsStream {
    /// Creates the stream on the test server.
    pub async fn new() -> Self {
        let url = Broker::Nats.url();
        let suffix = format!("{:016x}", rand::random::<u64>());
        let client = async_nats::connect(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        let context = jetstream::new(client);
        let stream = Self {
            url,
            name: format!("VOLTD_TEST_{suffix}"),
            subject: format!("voltd-test.{suffix}"),
            context,
        };
        stream
            .context
            .create_stream(stream::Config {
                name: stream.name.clone(),
                subjects: vec![stream.subject.clone()],
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("cannot create the stream {}: {e}", stream.name));
        stream
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// A sink publishing to this stream's subject.
    pub fn target(&self) -> NatsTarget {
        NatsTarget {
            url: self.url.clone(),
            subject: self.subject.clone(),
        }
    }

    /// A sink publishing to a subject that no stream captures.
    pub fn uncaptured_target(&self) -> NatsTarget {
        NatsTarget {
            url: self.url.clone(),
            subject: format!("{}-uncaptured", self.subject),
        }
    }

    /// Every message the stream holds, oldest first.
    pub async fn messages(&self) -> Vec<Received> {
        let mut stream = self
            .context
            .get_stream(&self.name)
            .await
            .unwrap_or_else(|e| panic!("cannot find the stream {}: {e}", self.name));
        let count = stream.info().await.expect("stream info").state.messages;
        let mut messages = Vec::new();
        let mut sequence = 1;
        while (messages.len() as u64) < count {
            match stream.get_raw_message(sequence).await {
                Ok(message) => messages.push(Received {
                    headers: message.headers,
                    body: message.payload.to_vec(),
                }),
                Err(e) => panic!("cannot read message {sequence} of {}: {e}", self.name),
            }
            sequence += 1;
        }
        messages
    }

    /// Deletes the stream; a test that ends early leaves it behind, named `VOLTD_TEST_…`.
    pub async fn delete(self) {
        if let Err(e) = self.context.delete_stream(&self.name).await {
            eprintln!("cannot delete the test stream {}: {e}", self.name);
        }
    }
}
