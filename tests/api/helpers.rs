//! Shared by every test: the configuration builder, the in-process `TestApp`, polling and
//! running the `voltd` binary as a command.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use actix_web::rt::task::JoinHandle;
use actix_web::web::Bytes;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::TestWriter;
use voltd::config::{Backend, LogFormat, Settings};
use voltd::event::StoredEvent;
use voltd::ops::telemetry::{self, LibraryLogLimit};
use voltd::startup::Application;
use voltd::store::{EventFilter, Store};
use voltd::testing::postgres::Schema;

use crate::fake_volt::FakeVolt;

/// The secret path segment every test app serves under.
pub const WEBHOOK_PATH: &str = "/volt/4f1c9a7e2b6d80358a1b";
/// Long enough for a loaded 2-core machine, short enough that a hang fails the test quickly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A port nothing listens on: bound by the OS, then released.
pub fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().unwrap().port()
}

/// Poll `check` until it yields a value; panics after [`PATIENCE`] naming what was awaited.
pub async fn poll_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A temp directory and the settings written to its `volt.toml`. Defaults: receive only (no
/// token), fast retries, a Volt URL where nothing listens, and the store of the backend this
/// test binary covers ([`crate::BACKEND`]).
pub struct TestConfig {
    pub dir: TempDir,
    /// The PostgreSQL schema holding this test's tables, when the backend is PostgreSQL.
    pub schema: Option<Arc<Schema>>,
    volt_url: String,
    token: Option<String>,
    register: &'static str,
    register_attempts: u32,
    public_url_port: Option<u16>,
    storage_url: Option<String>,
    max_body_bytes: usize,
    queue_capacity: usize,
    max_batch: usize,
    log_level: &'static str,
    extra_toml: Vec<(String, String)>,
    /// Environment for the `voltd` process (black-box runs only).
    pub env: Vec<(String, String)>,
}

impl TestConfig {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temp dir"),
            schema: (crate::BACKEND == Backend::Postgres).then(|| Arc::new(Schema::create())),
            volt_url: format!("http://127.0.0.1:{}/graphql", dead_port()),
            token: None,
            register: "auto",
            register_attempts: 3,
            public_url_port: None,
            storage_url: None,
            max_body_bytes: 1024 * 1024,
            queue_capacity: 8192,
            max_batch: 512,
            log_level: "info",
            extra_toml: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn volt(mut self, volt: &FakeVolt) -> Self {
        self.volt_url = volt.url();
        self
    }

    pub fn volt_url(mut self, url: String) -> Self {
        self.volt_url = url;
        self
    }

    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn register(mut self, mode: &'static str) -> Self {
        self.register = mode;
        self
    }

    pub fn register_attempts(mut self, attempts: u32) -> Self {
        self.register_attempts = attempts;
        self
    }

    /// Advertise a different port in `public_url` than the one served, so Volt's probe fails.
    pub fn public_url_port(mut self, port: u16) -> Self {
        self.public_url_port = Some(port);
        self
    }

    /// Store somewhere else than this test's own database (which stays the default).
    pub fn storage_url(mut self, url: String) -> Self {
        self.storage_url = Some(url);
        self
    }

    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    pub fn log_level(mut self, level: &'static str) -> Self {
        self.log_level = level;
        self
    }

    /// More keys for `volt.toml`: `section` is a table name (`server`, `admin`, ...), whose
    /// keys join the table this builder writes or a new one, or an array-of-tables header
    /// such as `[[forward]]`, appended as a new entry.
    pub fn extra_toml(mut self, section: &str, keys: &str) -> Self {
        self.extra_toml
            .push((section.to_owned(), keys.trim().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("volt.toml")
    }

    pub fn database_url(&self) -> String {
        if let Some(url) = &self.storage_url {
            return url.clone();
        }
        match &self.schema {
            Some(schema) => schema.url(),
            None => format!("sqlite://{}", self.dir.path().join("voltd.db").display()),
        }
    }

    /// Write `volt.toml` for a daemon listening on `port`; returns its text.
    pub fn write(&self, port: u16) -> String {
        let token = match &self.token {
            Some(token) => format!("token = {token:?}\n"),
            None => String::new(),
        };
        let public_port = self.public_url_port.unwrap_or(port);
        let mut text = format!(
            r#"[api]
url = {volt_url:?}
{token}register = "{register}"
timeout_secs = 5
register_attempts = {attempts}
retry_initial_ms = 20
retry_max_secs = 1

[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{public_port}{WEBHOOK_PATH}"
max_body_bytes = {max_body}
shutdown_timeout_secs = 10

[storage]
url = {storage:?}
queue_capacity = {queue}
max_batch = {batch}

[log]
level = "{level}"
"#,
            volt_url = self.volt_url,
            register = self.register,
            attempts = self.register_attempts,
            max_body = self.max_body_bytes,
            storage = self.database_url(),
            queue = self.queue_capacity,
            batch = self.max_batch,
            level = self.log_level,
        );
        for (section, keys) in &self.extra_toml {
            let header = format!("[{section}]\n");
            match text.find(&header) {
                Some(at) if !section.starts_with('[') => {
                    text.insert_str(at + header.len(), &format!("{keys}\n"));
                }
                _ if section.starts_with('[') => text.push_str(&format!("\n{section}\n{keys}\n")),
                _ => text.push_str(&format!("\n{header}{keys}\n")),
            }
        }
        std::fs::write(self.config_path(), &text).expect("write volt.toml");
        text
    }
}

/// What a test client got back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub allow: Option<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {:?}", self.body))
    }

    /// The `status` ("stored" or "duplicate") and event `id` of a 200 answer.
    pub fn outcome(&self) -> (String, i64) {
        assert_eq!(self.status, 200, "{self:?}");
        let json = self.json();
        let status = json["status"].as_str().expect("status").to_owned();
        (status, json["id"].as_i64().expect("id"))
    }
}

pub fn http_client(timeout: Duration) -> awc::Client {
    awc::Client::builder().timeout(timeout).finish()
}

/// Send one request; transport failures are returned, not panicked on.
pub async fn send(
    client: &awc::Client,
    method: awc::http::Method,
    url: &str,
    body: impl Into<Bytes>,
) -> Result<Reply, String> {
    send_with_headers(client, method, url, &[], body).await
}

/// [`send`], with `headers` besides `Content-Type: application/json`.
pub async fn send_with_headers(
    client: &awc::Client,
    method: awc::http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, String> {
    let mut request = client
        .request(method, url)
        .insert_header(("Content-Type", "application/json"));
    for &header in headers {
        request = request.insert_header(header);
    }
    let mut response = request
        .send_body(body.into())
        .await
        .map_err(|e| e.to_string())?;
    let (retry_after, allow) = (header(&response, "retry-after"), header(&response, "allow"));
    let body = response
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Reply {
        status: response.status().as_u16(),
        retry_after,
        allow,
        body,
    })
}

/// A response header as text, when present and printable.
pub fn header<S>(response: &awc::ClientResponse<S>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// In-process apps share one subscriber per test binary. With `TEST_LOG` set it writes to
/// the output of the test that logged (shown when that test fails, or always with
/// `--nocapture`; `RUST_LOG` picks what), and otherwise it discards everything.
fn init_test_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = if std::env::var_os("TEST_LOG").is_some() {
            telemetry::get_subscriber(
                telemetry::filter("info"),
                LogFormat::Text,
                TestWriter::new(),
                false,
                LibraryLogLimit::default(),
            )
        } else {
            telemetry::get_subscriber(
                EnvFilter::new("off"),
                LogFormat::Text,
                std::io::sink,
                false,
                LibraryLogLimit::default(),
            )
        };
        telemetry::init_subscriber(subscriber);
    });
}

/// The daemon built in-process on port 0, running until stopped or dropped.
pub struct TestApp {
    pub address: SocketAddr,
    /// The admin listener, when the configuration enables it.
    pub admin_address: Option<SocketAddr>,
    pub store: Store,
    pub config: TestConfig,
    stop: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
    http: awc::Client,
}

impl TestApp {
    pub async fn spawn(config: TestConfig) -> Self {
        init_test_logging();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let address = listener.local_addr().unwrap();
        let text = config.write(address.port());
        let settings = Settings::from_toml(&config.config_path(), &text, std::iter::empty())
            .expect("valid test settings");
        let token = voltd::volt::token::load(&settings.api).expect("a readable test token");
        let app = Application::build_with_listener(settings, token, listener)
            .await
            .expect("build the application");
        let store = app.store().clone();
        let admin_address = app.admin_addr();
        let stop = CancellationToken::new();
        let running = actix_web::rt::spawn(app.run_until_stopped(stop.clone()));
        Self {
            address,
            admin_address,
            store,
            config,
            stop,
            running: Some(running),
            http: http_client(Duration::from_secs(10)),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A URL on the admin listener (which must be on), reached over loopback whatever
    /// address it listens on.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin_address.expect("admin listener enabled");
        format!("http://127.0.0.1:{}{path}", admin.port())
    }

    pub fn webhook_url(&self) -> String {
        self.url(WEBHOOK_PATH)
    }

    pub fn client(&self) -> &awc::Client {
        &self.http
    }

    /// POST a webhook event to the served path.
    pub async fn post_event(&self, body: impl Into<Bytes>) -> Reply {
        self.request(awc::http::Method::POST, WEBHOOK_PATH, body)
            .await
    }

    /// POST a webhook event sent with `Content-Encoding: coding`.
    pub async fn post_encoded_event(&self, coding: &str, body: impl Into<Bytes>) -> Reply {
        let headers = [("Content-Encoding", coding)];
        send_with_headers(
            &self.http,
            awc::http::Method::POST,
            &self.webhook_url(),
            &headers,
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("POST with Content-Encoding {coding} failed: {e}"))
    }

    pub async fn request(
        &self,
        method: awc::http::Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Reply {
        send(&self.http, method, &self.url(path), body)
            .await
            .unwrap_or_else(|e| panic!("request to {path} failed: {e}"))
    }

    /// Wait for the daemon to end on its own (e.g. registration failed) and return why.
    pub async fn exited(mut self) -> anyhow::Result<()> {
        let running = self.running.take().expect("still running");
        actix_web::rt::time::timeout(PATIENCE, running)
            .await
            .expect("the daemon did not exit in time")
            .expect("the daemon task panicked")
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.exited().await
    }

    /// Run `voltd` with this app's `volt.toml`.
    pub async fn voltd(&self, args: &[&str]) -> CliOutput {
        voltd(
            Some(&self.config.config_path()),
            self.config.dir.path(),
            args,
        )
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run the real binary (off the async thread: an in-process app may need it meanwhile) with
/// a clean environment, so the developer's `VOLT_*` or `RUST_LOG` cannot change the outcome.
pub async fn voltd(config: Option<&Path>, cwd: &Path, args: &[&str]) -> CliOutput {
    let mut command = Command::new(env!("CARGO_BIN_EXE_voltd"));
    command.env_clear().current_dir(cwd);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.args(args);
    let output = actix_web::rt::task::spawn_blocking(move || command.output())
        .await
        .expect("join the command")
        .expect("run voltd");
    CliOutput {
        code: output.status.code().expect("voltd exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `voltd events tail --json` on this config, with every line it writes (stdout and stderr)
/// sent to the returned channel as it comes.
pub fn spawn_tail(config: &TestConfig) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut tail = Command::new(env!("CARGO_BIN_EXE_voltd"))
        .env_clear()
        .arg("--config")
        .arg(config.config_path())
        .args(["events", "tail", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start voltd events tail");
    let (lines, received) = std::sync::mpsc::channel();
    for stream in [
        Box::new(tail.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(tail.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    (tail, received)
}

/// Every stored event, newest first.
pub async fn stored_events(store: &Store) -> Vec<StoredEvent> {
    let everything = EventFilter {
        limit: u32::MAX,
        ..EventFilter::default()
    };
    store.list_events(&everything).await.expect("list events")
}

/// The lines of `events list --json`, parsed.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A Volt-shaped event body.
pub fn event_body(event_type: &str, message_id: &str, text: &str) -> String {
    serde_json::json!({
        "payload": {
            "event_type": event_type,
            "id": message_id,
            "direction": "inbound",
            "from_number": "+15555550145",
            "to_number": "+15555550123",
            "text": text,
            "type": "SMS"
        }
    })
    .to_string()
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A stand-in for systemd's notification socket: the daemon's `NOTIFY_SOCKET`. A thread
/// reads it all the time, as systemd does: a socket left unread fills up, and then the
/// daemon's next notification blocks.
pub struct NotifySocket {
    path: PathBuf,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buffer) {
                        let text = String::from_utf8_lossy(&buffer[..n]);
                        let mut seen = seen.lock().unwrap();
                        seen.extend(text.lines().map(str::to_owned));
                    }
                }
            })
        };
        Self {
            path,
            seen,
            stop,
            reader: Some(reader),
        }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }

    /// Every message received so far, one line (`KEY=value`) each, in order.
    pub fn messages(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Wait until the messages so far satisfy `check`.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[String]) -> bool) {
        poll_until(what, || {
            std::future::ready(check(&self.messages()).then_some(()))
        })
        .await;
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
