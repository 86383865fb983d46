//! A JetStream stream of a test's own on the NATS test server ([`Broker::Nats`]), capturing
//! a subject of its own; deleted with it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use async_nats::jetstream::{self, stream};
use url::Url;

use super::brokers::{Broker, free_port, wait_until_listening};
use super::certificates::{CertifiedKey, TestAuthority};
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
        Self::on(Broker::Nats.url()).await
    }

    /// Creates the stream on the server at `url`.
    pub async fn on(url: Url) -> Self {
        Self::on_with(url, async_nats::ConnectOptions::new()).await
    }

    /// Creates the stream on the server at `url`, connecting with `options` (for TLS).
    pub async fn on_with(url: Url, options: async_nats::ConnectOptions) -> Self {
        let suffix = format!("{:016x}", rand::random::<u64>());
        let client = options
            .connect(url.as_str())
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
            tls: crate::config::BrokerTls::default(),
            credentials_file: None,
            client_certificate: None,
        }
    }

    /// A sink publishing to a subject that no stream captures.
    pub fn uncaptured_target(&self) -> NatsTarget {
        NatsTarget {
            url: self.url.clone(),
            subject: format!("{}-uncaptured", self.subject),
            tls: crate::config::BrokerTls::default(),
            credentials_file: None,
            client_certificate: None,
        }
    }

    /// Every message the stream holds, oldest first.
    pub async fn messages(&self) -> Vec<Received> {
        self.try_messages()
            .await
            .unwrap_or_else(|e| panic!("cannot read the stream {}: {e}", self.name))
    }

    /// Every message the stream holds, oldest first; an error while the server does not
    /// answer.
    pub async fn try_messages(
        &self,
    ) -> Result<Vec<Received>, Box<dyn std::error::Error + Send + Sync>> {
        let mut stream = self.context.get_stream(&self.name).await?;
        let count = stream.info().await?.state.messages;
        let mut messages = Vec::new();
        let mut sequence = 1;
        while (messages.len() as u64) < count {
            let message = stream.get_raw_message(sequence).await?;
            messages.push(Received {
                headers: message.headers,
                body: message.payload.to_vec(),
            });
            sequence += 1;
        }
        Ok(messages)
    }

    /// Deletes the stream; a test that ends early leaves it behind, named `VOLTD_TEST_…`.
    pub async fn delete(self) {
        if let Err(e) = self.context.delete_stream(&self.name).await {
            eprintln!("cannot delete the test stream {}: {e}", self.name);
        }
    }
}

/// A `nats-server -js` of the test's own on a free port, which it can stop and start again
/// on the same port and with the same store, so its streams outlive a restart.
pub struct PrivateNats {
    port: u16,
    store: PathBuf,
    /// The server's TLS options, if it has any.
    tls: Vec<String>,
    server: Option<Child>,
}

/// What a private server asks of TLS.
pub enum ServerTls<'a> {
    /// TLS with this certificate, required of every client.
    Required(&'a CertifiedKey),
    /// The same, and every client must show a certificate signed by this authority.
    ClientsVerified(&'a CertifiedKey, &'a TestAuthority),
}

impl PrivateNats {
    /// Panics when `nats-server` cannot be started: the tests that use one run only where
    /// the NATS tests run, and CI installs it.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// A server that speaks only TLS, as `tls` says.
    pub fn start_tls(tls: &ServerTls) -> Self {
        let path = |path: &PathBuf| path.display().to_string();
        let (server, authority) = match tls {
            ServerTls::Required(server) => (server, None),
            ServerTls::ClientsVerified(server, authority) => (server, Some(authority)),
        };
        let mut options = vec![
            "--tls".to_owned(),
            "--tlscert".to_owned(),
            path(&server.cert_file),
            "--tlskey".to_owned(),
            path(&server.key_file),
        ];
        if let Some(authority) = authority {
            options.extend([
                "--tlsverify".to_owned(),
                "--tlscacert".to_owned(),
                path(&authority.ca_file),
            ]);
        }
        Self::start_with(options)
    }

    fn start_with(tls: Vec<String>) -> Self {
        let port = free_port();
        let mut nats = Self {
            port,
            store: std::env::temp_dir().join(format!("voltd-test-nats-{port}")),
            tls,
            server: None,
        };
        nats.resume();
        nats
    }

    pub fn url(&self) -> Url {
        Url::parse(&format!("nats://127.0.0.1:{}", self.port)).expect("a valid URL")
    }

    /// Kill the server and wait until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Start the server again on its port; returns once it answers.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "the private NATS is running already");
        let server = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-js",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server (is it installed?): {e}"));
        self.server = Some(server);
        wait_until_listening("nats-server", self.port);
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
