//! PostgreSQL going away under a running daemon, and not there yet when it starts. The daemon
//! reaches the server through a proxy that the test can cut (connections refused, open ones
//! closed: a stopped server) or freeze (nothing answers: a hung server or network), without
//! touching the shared server itself.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use awc::http::Method;
use nix::sys::signal::Signal;

use crate::daemon::Daemon;
use crate::helpers::{
    NotifySocket, TestApp, TestConfig, dead_port, event_body, http_client, poll_until, send,
};

/// `/readyz` must answer well within a probe's usual one-second timeout.
const READYZ_DEADLINE: Duration = Duration::from_millis(900);
/// How soon readiness must follow the database, either way.
const NOTICED_WITHIN: Duration = Duration::from_secs(5);
/// How often the proxy's threads look at their flags.
const PROXY_TICK: Duration = Duration::from_millis(20);

/// A TCP proxy in front of the test database.
struct Proxy {
    address: SocketAddr,
    shared: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    /// Whether the port accepts connections.
    open: AtomicBool,
    listening: AtomicBool,
    /// Whether bytes flow between the two sides.
    frozen: AtomicBool,
    stopped: AtomicBool,
    /// Both sides of every proxied connection, to cut them.
    connections: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// A proxy to the server of `url`, open or not.
    fn to(url: &str, open: bool) -> Self {
        let parsed = url::Url::parse(url).unwrap();
        let host = parsed
            .host_str()
            .expect("a PostgreSQL URL with a host name");
        let target = (host, parsed.port().unwrap_or(5432))
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let shared = Arc::new(ProxyState::default());
        shared.open.store(open, Ordering::SeqCst);
        let state = shared.clone();
        thread::spawn(move || accept(address, target, &state));
        let proxy = Self { address, shared };
        proxy.wait_until_listening(open);
        proxy
    }

    /// `url` with its server replaced by this proxy.
    fn url_through(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).unwrap();
        parsed.set_host(Some("127.0.0.1")).unwrap();
        parsed.set_port(Some(self.address.port())).unwrap();
        parsed.to_string()
    }

    /// A stopped server: new connections are refused, open ones closed.
    fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
        self.wait_until_listening(false);
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    /// A hung server: connections stay open (new ones are accepted) but nothing answers.
    fn freeze(&self, frozen: bool) {
        self.shared.frozen.store(frozen, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
        self.wait_until_listening(true);
    }

    fn wait_until_listening(&self, listening: bool) {
        while self.shared.listening.load(Ordering::SeqCst) != listening {
            thread::sleep(PROXY_TICK);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.frozen.store(false, Ordering::SeqCst);
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

/// Listen on `address` while the proxy is open, and proxy each connection to `target`.
fn accept(address: SocketAddr, target: SocketAddr, state: &Arc<ProxyState>) {
    let mut listener: Option<TcpListener> = None;
    while !state.stopped.load(Ordering::SeqCst) {
        if !state.open.load(Ordering::SeqCst) {
            listener = None;
            state.listening.store(false, Ordering::SeqCst);
            thread::sleep(PROXY_TICK);
            continue;
        }
        let Some(open) = &listener else {
            // The port was this proxy's a moment ago; binding it again may take a few tries.
            if let Ok(bound) = TcpListener::bind(address) {
                bound.set_nonblocking(true).unwrap();
                listener = Some(bound);
                state.listening.store(true, Ordering::SeqCst);
            } else {
                thread::sleep(PROXY_TICK);
            }
            continue;
        };
        match open.accept() {
            Ok((client, _)) => {
                let state = state.clone();
                thread::spawn(move || proxy_connection(client, target, &state));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(PROXY_TICK),
            Err(e) => panic!("the proxy cannot accept: {e}"),
        }
    }
}

fn proxy_connection(client: TcpStream, target: SocketAddr, state: &Arc<ProxyState>) {
    client.set_nonblocking(false).unwrap();
    while state.frozen.load(Ordering::SeqCst) {
        thread::sleep(PROXY_TICK);
    }
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    {
        let mut connections = state.connections.lock().unwrap();
        connections.push(client.try_clone().unwrap());
        connections.push(server.try_clone().unwrap());
    }
    let (client_in, server_in) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let upstream = {
        let state = state.clone();
        thread::spawn(move || pump(client_in, server, &state))
    };
    pump(server_in, client, state);
    let _ = upstream.join();
}

/// Copy `from` to `to` until either closes, holding the bytes while the proxy is frozen.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &ProxyState) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while state.frozen.load(Ordering::SeqCst) {
            thread::sleep(PROXY_TICK);
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A daemon on this test's schema, through `proxy`, with its admin listener.
fn config_through(proxy_open: bool) -> (TestConfig, Proxy) {
    let config = TestConfig::new();
    let url = config.database_url();
    let proxy = Proxy::to(&url, proxy_open);
    let config = config.storage_url(proxy.url_through(&url));
    (config, proxy)
}

async fn readyz(app: &TestApp) -> (u16, String) {
    let admin = app.admin_address.expect("admin listener enabled");
    let started = Instant::now();
    let reply = send(
        app.client(),
        Method::GET,
        &format!("http://{admin}/readyz"),
        "",
    )
    .await
    .expect("readyz answers");
    let took = started.elapsed();
    assert!(took < READYZ_DEADLINE, "/readyz took {took:?}");
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

/// Poll `/readyz` until its status is `status`; returns the body and how long it took.
async fn readiness_becomes(app: &TestApp, status: u16) -> (String, Duration) {
    let started = Instant::now();
    let body = poll_until(&format!("/readyz to answer {status}"), || async {
        let (answered, body) = readyz(app).await;
        (answered == status).then_some(body)
    })
    .await;
    (body, started.elapsed())
}

#[actix_web::test]
async fn a_lost_database_is_not_ready_at_once_and_ready_again_when_back() {
    voltd::skip_unless_available!(crate::BACKEND);
    let (config, proxy) = config_through(true);
    let app = TestApp::spawn(config.extra_toml("admin", r#"listen = "127.0.0.1:0""#)).await;
    assert_eq!(readyz(&app).await.0, 200);
    let body = |id: &str| event_body("message.received", id, "x");
    assert_eq!(app.post_event(body("before")).await.status, 200);

    proxy.cut();
    let (reason, took) = readiness_becomes(&app, 503).await;
    assert!(took < NOTICED_WITHIN, "noticed after {took:?}");
    assert!(reason.contains("the store cannot commit since"), "{reason}");
    let reply = app.post_event(body("during")).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.retry_after.as_deref(), Some("1"));

    proxy.restore();
    let (_, took) = readiness_becomes(&app, 200).await;
    assert!(took < NOTICED_WITHIN, "ready again after {took:?}");
    let (status, _) = app.post_event(body("after")).await.outcome();
    assert_eq!(status, "stored");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_database_that_stops_answering_is_not_ready_within_seconds() {
    voltd::skip_unless_available!(crate::BACKEND);
    let (config, proxy) = config_through(true);
    let app = TestApp::spawn(config.extra_toml("admin", r#"listen = "127.0.0.1:0""#)).await;
    assert_eq!(readyz(&app).await.0, 200);

    proxy.freeze(true);
    let (reason, took) = readiness_becomes(&app, 503).await;
    assert!(took < NOTICED_WITHIN, "noticed after {took:?}");
    assert!(reason.contains("has not answered since"), "{reason}");
    proxy.freeze(false);
    readiness_becomes(&app, 200).await;
    let reply = app
        .post_event(event_body("message.received", "thawed", "x"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    app.stop().await.unwrap();
}

/// A reboot race: voltd starts before PostgreSQL accepts connections, waits for it (telling
/// systemd), and starts once it does.
#[actix_web::test]
async fn a_database_not_up_yet_at_start_is_waited_for() {
    voltd::skip_unless_available!(crate::BACKEND);
    let (config, proxy) = config_through(false);
    let socket = NotifySocket::bind(config.dir.path());
    let config = config.env("NOTIFY_SOCKET", socket.path());
    let mut daemon = Daemon::spawn(config);

    socket
        .wait_for("a waiting status", |seen| {
            seen.iter()
                .any(|m| m.starts_with("STATUS=waiting for the database, attempt 3: "))
        })
        .await;
    assert!(
        socket
            .messages()
            .iter()
            .any(|m| m.starts_with("EXTEND_TIMEOUT_USEC="))
    );
    proxy.restore();
    socket
        .wait_for("READY=1", |seen| seen.iter().any(|m| m == "READY=1"))
        .await;
    let reply = send(
        &http_client(Duration::from_secs(10)),
        Method::POST,
        &daemon.webhook_url(),
        event_body("message.received", "after-boot", "x"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("Cannot reach the database yet"), "{log}");
    assert!(log.contains("Connection refused"), "{log}");
}

/// A server that never comes is given `startup_retry_secs`, then start-up ends with the
/// reason, without the password.
#[actix_web::test]
async fn a_database_that_never_comes_ends_start_up() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new()
        .storage_url(format!(
            "postgres://voltd:s3cret@127.0.0.1:{}/voltd",
            dead_port()
        ))
        .extra_toml("storage", "startup_retry_secs = 1");
    let mut daemon = Daemon::spawn(config);
    let code = daemon.exit_code().await;
    let log = daemon.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(
            "the database could not be reached within 1 s of start-up \
             (storage.startup_retry_secs): cannot connect to PostgreSQL at postgres://voltd:redacted@"
        ),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "{log}");
}
