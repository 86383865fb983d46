//! Abuse limits on the webhook listener: client address filtering and slow clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::{TestApp, TestConfig, WEBHOOK_PATH, stored_events};

#[actix_web::test]
async fn addresses_outside_allow_ips_are_refused_and_not_stored() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new().extra_toml("server", r#"allow_ips = ["203.0.113.0/24"]"#);
    let app = TestApp::spawn(config).await;

    let reply = app.post_event("from loopback").await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(stored_events(&app.store).await.is_empty());
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new().extra_toml(
        "server",
        "allow_ips = [\"203.0.113.0/24\"]\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    let app = TestApp::spawn(config).await;

    let allowed = app
        .client()
        .post(app.webhook_url())
        .insert_header(("X-Forwarded-For", "198.51.100.9, 203.0.113.7"))
        .send_body("via proxy")
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let refused = app
        .client()
        .post(app.webhook_url())
        .insert_header(("X-Forwarded-For", "203.0.113.7, 198.51.100.9"))
        .send_body("spoofed")
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let events = stored_events(&app.store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body, b"via proxy");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new().extra_toml("server", "request_timeout_secs = 1");
    let app = TestApp::spawn(config).await;
    let address = app.address;

    let started = Instant::now();
    let closed = actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        write!(stream, "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut rest = Vec::new();
        // The server answers 408 or just closes; either way the read ends.
        stream.read_to_end(&mut rest).is_ok()
    })
    .await
    .unwrap();
    assert!(closed, "the connection was held open");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    app.stop().await.unwrap();
}
