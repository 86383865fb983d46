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

/// A body that stops coming gets its 408 and the connection is closed with it: the client
/// holds nothing after its answer.
#[actix_web::test]
async fn a_body_that_stops_coming_gets_408_and_the_connection_closes() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new().extra_toml("server", "request_timeout_secs = 1");
    let app = TestApp::spawn(config).await;
    let address = app.address;

    let (answer, open_after_answer) = actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        write!(
            stream,
            "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        .unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        let mut answered_at = None;
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    answered_at.get_or_insert_with(Instant::now);
                    answer.extend_from_slice(&buffer[..n]);
                }
                Err(e) => panic!("the connection was neither answered nor closed: {e}"),
            }
        }
        let answered_at = answered_at.expect("an answer before the close");
        (
            String::from_utf8_lossy(&answer).into_owned(),
            answered_at.elapsed(),
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        open_after_answer < Duration::from_secs(3),
        "open {open_after_answer:?} after the 408"
    );
    assert!(stored_events(&app.store).await.is_empty());
    app.stop().await.unwrap();
}
