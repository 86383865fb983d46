//! A TCP proxy in front of a test server, which a test takes down and brings up again to cut
//! a sink off from its broker for a while.
//!
//! The Redis and NATS tests stop and restart a private server instead (see
//! [`super::brokers::PrivateRedis`]). A private RabbitMQ takes seconds and hundreds of
//! megabytes to start, so the RabbitMQ test puts this proxy between the sink and the shared
//! server: the server keeps running, and the test's queue, read over a connection of its own
//! that bypasses the proxy, keeps its messages.
//!
//! With [`TcpProxy::start_tls`] it also ends TLS for a plain server, with a server
//! certificate from a test's own [`TestAuthority`](super::certificates::TestAuthority), so a
//! sink's `rediss://` or `amqps://` URL can be tested against the shared Redis and RabbitMQ.
//!
//! Down, the proxy closes every connection it carries and accepts new ones only to close them
//! at once, so a client sees its connection end rather than hang. It keeps its port all the
//! while, so nothing else can take it before it comes up again. It runs on a thread and
//! runtime of its own, so it keeps forwarding whatever the test's runtime is doing.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use url::Url;

use super::certificates::CertifiedKey;

/// What the proxy answers TLS with: the certificate and key of `files`.
fn acceptor(files: &CertifiedKey) -> TlsAcceptor {
    let chain = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(Iterator::collect)
        .expect("the test certificate");
    let key = PrivateKeyDer::from_pem_file(&files.key_file).expect("the test certificate's key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("a server configuration");
    TlsAcceptor::from(Arc::new(config))
}

pub struct TcpProxy {
    port: u16,
    /// Whether connections are forwarded; every connection watches it.
    up: watch::Sender<bool>,
    /// How many connections are being forwarded, so taking down can wait until none is.
    open: Arc<watch::Sender<usize>>,
    /// Dropped with the proxy, which ends its thread and closes everything.
    _stop: oneshot::Sender<()>,
}

impl TcpProxy {
    /// Up, forwarding to the host and port of `server` (`amqp://guest:guest@127.0.0.1:5672/`).
    pub fn start(server: &Url) -> Self {
        Self::start_with(server, None)
    }

    /// As [`Self::start`], taking TLS with `certificate` and forwarding plain.
    pub fn start_tls(server: &Url, certificate: &CertifiedKey) -> Self {
        Self::start_with(server, Some(acceptor(certificate)))
    }

    fn start_with(server: &Url, tls: Option<TlsAcceptor>) -> Self {
        let upstream = server
            .socket_addrs(|| None)
            .ok()
            .and_then(|addresses| addresses.into_iter().next())
            .unwrap_or_else(|| panic!("{server} names no address to proxy"));
        let listener = StdListener::bind("127.0.0.1:0").expect("bind the proxy's port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking socket");
        let port = listener.local_addr().expect("the proxy's port").port();
        let (up, _) = watch::channel(true);
        let open = Arc::new(watch::channel(0).0);
        let (stop, stopped) = oneshot::channel();
        let (up_seen, open_counted) = (up.subscribe(), open.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("the proxy's listener");
                tokio::select! {
                    () = serve(listener, upstream, tls, up_seen, open_counted) => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            port,
            up,
            open,
            _stop: stop,
        }
    }

    /// `url` with the proxy's address in place of its host and port.
    pub fn url_for(&self, url: &Url) -> Url {
        self.address(url, "127.0.0.1")
    }

    /// [`Self::url_for`] with `scheme`, and the host the certificate names.
    pub fn tls_url_for(&self, url: &Url, scheme: &str) -> Url {
        let mut proxied = self.address(url, "localhost");
        proxied
            .set_scheme(scheme)
            .expect("a scheme of the same kind (redis to rediss, amqp to amqps)");
        proxied
    }

    fn address(&self, url: &Url, host: &str) -> Url {
        let mut proxied = url.clone();
        proxied.set_host(Some(host)).expect("a URL with a host");
        proxied
            .set_port(Some(self.port))
            .expect("a URL with a port");
        proxied
    }

    /// Closes every forwarded connection and refuses new ones; returns once all are closed.
    pub async fn take_down(&self) {
        self.up.send_replace(false);
        self.open
            .subscribe()
            .wait_for(|open| *open == 0)
            .await
            .expect("the proxy is running");
    }

    /// Forwards new connections again.
    pub fn bring_up(&self) {
        self.up.send_replace(true);
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    tls: Option<TlsAcceptor>,
    up: watch::Receiver<bool>,
    open: Arc<watch::Sender<usize>>,
) {
    loop {
        // A failed accept concerns that one connection, not the listener.
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        // Counted before `up` is read: either `take_down` waits for this connection, or this
        // sees the proxy down and closes it.
        let counted = Counted::new(open.clone());
        if !*up.borrow() {
            drop(client);
            continue;
        }
        let up = up.clone();
        match tls.clone() {
            None => drop(tokio::spawn(forward(client, upstream, up, counted))),
            Some(acceptor) => drop(tokio::spawn(async move {
                // A failed handshake closes that connection, as a TLS server does.
                if let Ok(client) = acceptor.accept(client).await {
                    forward(client, upstream, up, counted).await;
                }
            })),
        }
    }
}

async fn forward(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: SocketAddr,
    mut up: watch::Receiver<bool>,
    counted: Counted,
) {
    let relay = async {
        let mut server = TcpStream::connect(upstream).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await
    };
    tokio::select! {
        _ = relay => {}
        _ = up.wait_for(|up| !up) => {}
    }
    // Both sockets are closed by now (the server's with `relay`): only then is it uncounted.
    drop(client);
    drop(counted);
}

/// One forwarded connection in the proxy's count, for as long as this lives.
struct Counted(Arc<watch::Sender<usize>>);

impl Counted {
    fn new(open: Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|open| *open += 1);
        Self(open)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}
