//! Log output as operators and log shippers see it.

use std::io::{Read, Write};
use std::net::TcpStream;

use nix::sys::signal::Signal;

use crate::daemon::Daemon;
use crate::helpers::{TestConfig, fixture, http_client, poll_until, send};

#[actix_web::test]
async fn json_format_gives_one_object_per_line_with_event_fields() {
    let config = TestConfig::new().extra_toml("log", "format = \"json\"");
    let mut daemon = Daemon::spawn(config);
    daemon.wait_until_listening().await;
    let client = http_client(std::time::Duration::from_secs(10));
    let reply = send(
        &client,
        awc::http::Method::POST,
        &daemon.webhook_url(),
        fixture("message-received.json"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    daemon.wait_for_log("Event stored").await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0));

    let log = daemon.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let stored = lines
        .iter()
        .find(|l| l["message"] == "Event stored")
        .expect("an Event stored line");
    assert_eq!(stored["event_type"], "message.received");
    assert_eq!(stored["from"], "+15555550145");
    assert_eq!(stored["duplicate"], false);
    assert!(
        !log.contains("is this still available"),
        "message text must not be logged"
    );
}

#[actix_web::test]
async fn text_logs_to_a_file_have_no_colour_codes() {
    let mut daemon = Daemon::spawn(TestConfig::new());
    daemon.wait_until_listening().await;
    daemon.wait_for_log("Receiving webhook events").await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0));
    assert!(!daemon.log().contains('\u{1b}'), "{}", daemon.log());
}

/// What a client can make voltd log is bounded: actix's line for each malformed request
/// is let through once per 10 s and the rest counted in one line.
#[actix_web::test]
async fn a_flood_of_malformed_requests_logs_one_line_and_a_count() {
    const REQUESTS: usize = 2_000;
    let mut daemon = Daemon::spawn(TestConfig::new());
    daemon.wait_until_listening().await;
    let address = daemon.address;
    actix_web::rt::task::spawn_blocking(move || {
        for _ in 0..REQUESTS {
            let mut stream = TcpStream::connect(address).unwrap();
            let _ = stream.write_all(b"NOT HTTP \x01\x02\r\n\r\n");
            // The 400 (or the closed connection) says actix has dealt with it.
            let _ = stream.read_to_end(&mut Vec::new());
        }
    })
    .await
    .unwrap();
    // The count comes with the next report, at most 10 s later.
    let counted = || {
        let log = daemon.log();
        let logged = log
            .lines()
            .filter(|line| line.contains("ERROR actix_http"))
            .count();
        let held_back: usize = log
            .lines()
            .filter_map(|line| line.split("Held back ").nth(1))
            .filter(|rest| rest.contains("similar log lines of actix_http"))
            .map(|rest| rest.split(' ').next().unwrap().parse::<usize>().unwrap())
            .sum();
        (logged, held_back)
    };
    let (logged, held_back) = poll_until("every malformed request to be counted", || {
        let (logged, held_back) = counted();
        std::future::ready((logged + held_back >= REQUESTS).then_some((logged, held_back)))
    })
    .await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
    assert!(logged <= 2, "{logged} lines from actix:\n{}", daemon.log());
    assert_eq!(logged + held_back, REQUESTS, "{}", daemon.log());
}

/// Refusals of each kind get their own line (a flood of one kind hides no other), and the
/// 404 line names the path, shortened.
#[actix_web::test]
async fn refusal_warnings_are_limited_per_kind() {
    let mut daemon = Daemon::spawn(TestConfig::new().max_body_bytes(10));
    daemon.wait_until_listening().await;
    let client = http_client(std::time::Duration::from_secs(10));
    let url = |path: &str| format!("http://{}{path}", daemon.address);
    let long_path = format!("/not-the-webhook/{}", "x".repeat(300));
    for _ in 0..5 {
        let reply = send(
            &client,
            awc::http::Method::POST,
            &daemon.webhook_url(),
            "more than ten bytes",
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 413);
    }
    for path in [long_path.as_str(), "/second-unknown-path"] {
        let reply = send(&client, awc::http::Method::GET, &url(path), "")
            .await
            .unwrap();
        assert_eq!(reply.status, 404);
    }
    let reply = send(&client, awc::http::Method::PUT, &daemon.webhook_url(), "")
        .await
        .unwrap();
    assert_eq!(reply.status, 405);
    daemon.wait_for_log("reason=method").await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());

    let log = daemon.log();
    let lines = |reason: &str| {
        log.lines()
            .filter(|line| line.contains(&format!("reason={reason} ")))
            .collect::<Vec<_>>()
    };
    assert_eq!(lines("size").len(), 1, "{log}");
    let path_lines = lines("path");
    assert_eq!(path_lines.len(), 1, "{log}");
    let shown = format!("unknown path /not-the-webhook/{}…", "x".repeat(83));
    assert!(path_lines[0].contains(&shown), "{log}");
    let method_lines = lines("method");
    assert_eq!(method_lines.len(), 1, "{log}");
    assert!(
        method_lines[0].contains("method PUT instead of POST"),
        "{log}"
    );
}
