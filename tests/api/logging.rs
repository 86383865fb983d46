//! Log output as operators and log shippers see it.

use nix::sys::signal::Signal;

use crate::daemon::Daemon;
use crate::helpers::{TestConfig, fixture, http_client, send};

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
