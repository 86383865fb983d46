//! SIGTERM stops the real binary gracefully: a request already in flight is still stored
//! and answered, and the process exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use nix::sys::signal::Signal;

use crate::daemon::Daemon;
use crate::helpers::{PATIENCE, TestConfig, WEBHOOK_PATH, fixture, json_lines, voltd};

#[actix_web::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    voltd::skip_unless_available!(crate::BACKEND);
    let mut daemon = Daemon::spawn(TestConfig::new());
    daemon.wait_until_listening().await;
    let body = fixture("message-received.json");
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(daemon.address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    // `Expect: 100-continue` makes the server confirm it has parsed the request head, so
    // the request is provably in flight before the signal.
    write!(
        stream,
        "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        daemon.address,
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut interim = String::new();
    reader.read_line(&mut interim).unwrap();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");
    stream.write_all(first_half).unwrap();

    daemon.signal(Signal::SIGTERM);
    daemon.wait_for_log("Shutting down").await;
    stream.write_all(second_half).unwrap();

    let mut response = String::new();
    reader.read_to_string(&mut response).unwrap();
    let response = response.trim_start_matches("\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(
        response.ends_with(r#"{"status":"stored","id":1}"#),
        "{response:?}"
    );
    let code = daemon.exit_code().await;
    assert_eq!(code, Some(0), "{}", daemon.log());
    assert!(daemon.log().contains("Stopped"), "{}", daemon.log());
    let config = &daemon.config;
    let listed = voltd(
        Some(&config.config_path()),
        config.dir.path(),
        &["events", "list", "--json"],
    )
    .await;
    let events = json_lines(&listed.stdout);
    assert_eq!(events.len(), 1, "{listed:?}");
    assert_eq!(events[0]["body"].as_str().unwrap().as_bytes(), body);
}
