//! The message-broker tests: which broker answers, a stream of its own for each test, and a
//! private server that a test can stop and start.
//!
//! The rule is PostgreSQL's (see [`super::postgres`]): asked for (the broker's variable set,
//! or `CI=true`), a broker's tests run and fail when it does not answer; otherwise they run
//! when it answers and are skipped, with one line saying so, when it does not.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream, ToSocketAddrs as _};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use url::Url;

use crate::config::RedisTarget;

/// A local server answers at once; one that is not there should not hold up a test run.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a private server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The brokers the sinks are tested against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Redis,
    Nats,
    RabbitMq,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Self::Redis => "Redis",
            Self::Nats => "NATS",
            Self::RabbitMq => "RabbitMQ",
        }
    }

    fn variable(self) -> &'static str {
        match self {
            Self::Redis => "VOLTD_TEST_REDIS_URL",
            Self::Nats => "VOLTD_TEST_NATS_URL",
            Self::RabbitMq => "VOLTD_TEST_AMQP_URL",
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            Self::Redis => "redis://127.0.0.1:6379/0",
            Self::Nats => "nats://127.0.0.1:4222",
            Self::RabbitMq => "amqp://guest:guest@127.0.0.1:5672/%2f",
        }
    }

    /// The server the tests of this broker use: its variable, or the local one.
    pub fn url(self) -> Url {
        let text = std::env::var(self.variable()).unwrap_or_else(|_| self.default_url().into());
        Url::parse(&text)
            .unwrap_or_else(|e| panic!("{} is not a URL ({e}): {text}", self.variable()))
    }
}

/// Whether this test binary runs the tests of `broker`, decided once by the rule above.
pub fn should_run(broker: Broker) -> bool {
    static DECISIONS: [OnceLock<Result<bool, String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let index = broker as usize;
    match DECISIONS[index].get_or_init(|| decide(broker)) {
        Ok(run) => *run,
        Err(why) => panic!("{why}"),
    }
}

fn decide(broker: Broker) -> Result<bool, String> {
    let url = broker.url();
    let Err(cause) = reachable(&url) else {
        return Ok(true);
    };
    let (name, variable) = (broker.name(), broker.variable());
    match super::required_by(variable) {
        Some(asked_by) => Err(format!(
            "the {name} tests must run ({asked_by}), but {url} does not answer: {cause}. Start \
             the server, or point {variable} at one"
        )),
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "{name} tests skipped: {url} does not answer ({cause}); set {variable} (or \
                 CI=true) to run them"
            );
            Ok(false)
        }
    }
}

fn reachable(url: &Url) -> Result<(), String> {
    let address = url
        .socket_addrs(|| None)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("the URL names no address")?;
    TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Ends the calling test early, where it counts as passed, when `broker`'s tests do not run
/// here ([`should_run`]).
#[macro_export]
macro_rules! skip_unless_broker {
    ($broker:expr) => {
        if !$crate::testing::brokers::should_run($broker) {
            return;
        }
    };
}

/// A port nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe port").port()
}

/// A Redis stream of this test's own on the test server, deleted with it.
pub struct TestStream {
    url: Url,
    key: String,
}

/// Fields of one stream entry, by name.
pub type Entry = (String, HashMap<String, Vec<u8>>);

impl TestStream {
    /// On the test server ([`Broker::Redis`]).
    pub fn new() -> Self {
        Self::on(Broker::Redis.url())
    }

    pub fn on(url: Url) -> Self {
        Self {
            url,
            key: format!("voltd-test:{:016x}", rand::random::<u64>()),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn target(&self, max_len: Option<u64>) -> RedisTarget {
        RedisTarget {
            url: self.url.clone(),
            stream: self.key.clone(),
            max_len,
            tls: crate::config::BrokerTls::default(),
        }
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        self.try_entries()
            .unwrap_or_else(|e| panic!("cannot read the stream {}: {e}", self.key))
    }

    /// Every entry, oldest first; an error while the server does not answer.
    pub fn try_entries(&self) -> redis::RedisResult<Vec<Entry>> {
        redis::cmd("XRANGE")
            .arg(&self.key)
            .arg("-")
            .arg("+")
            .query(&mut connect(&self.url)?)
    }
}

impl Default for TestStream {
    fn default() -> Self {
        Self::new()
    }
}

fn connect(url: &Url) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(url.as_str())?.get_connection_with_timeout(CONNECT_TIMEOUT)
}

/// A stream left behind is only reported: the server may be a private one already stopped.
impl Drop for TestStream {
    fn drop(&mut self) {
        let deleted = connect(&self.url)
            .and_then(|mut c| redis::cmd("DEL").arg(&self.key).query::<()>(&mut c));
        if let Err(e) = deleted {
            eprintln!("cannot delete the test stream {}: {e}", self.key);
        }
    }
}

/// A `redis-server` of the test's own on a free port, which it can stop and start again on
/// the same port. It keeps nothing on disk.
pub struct PrivateRedis {
    port: u16,
    server: Option<Child>,
}

impl PrivateRedis {
    /// Panics when `redis-server` cannot be started: the tests that use one run only where
    /// the Redis tests run, and CI installs it.
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            server: None,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> Url {
        Url::parse(&format!("redis://127.0.0.1:{}/0", self.port)).expect("a valid URL")
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
        assert!(
            self.server.is_none(),
            "the private Redis is running already"
        );
        let server = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"));
        self.server = Some(server);
        wait_until_listening("redis-server", self.port);
    }
}

/// Returns once a private server of `program` answers on `port`; panics after
/// `START_TIMEOUT`.
pub(super) fn wait_until_listening(program: &str, port: u16) {
    let deadline = Instant::now() + START_TIMEOUT;
    let address = ("127.0.0.1", port)
        .to_socket_addrs()
        .expect("a local address")
        .next()
        .expect("a local address");
    while TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).is_err() {
        assert!(
            Instant::now() < deadline,
            "{program} did not answer on port {port} within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
