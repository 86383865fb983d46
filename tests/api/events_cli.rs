//! `voltd events list` and `voltd events show` over events received by a running app.

use chrono::Utc;

use crate::helpers::{TestApp, TestConfig, event_body, fixture, json_lines};

const FIXTURES: [&str; 3] = [
    "message-received.json",
    "message-sent.json",
    "message-finalized-failed.json",
];

#[actix_web::test]
async fn every_fixture_is_stored_and_listed_with_the_documented_keys() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let mut ids = Vec::new();
    for name in FIXTURES {
        let (status, id) = app.post_event(fixture(name)).await.outcome();
        assert_eq!(status, "stored", "{name}");
        ids.push(id);
    }

    let output = app.voltd(&["events", "list", "--json"]).await;

    assert_eq!(output.code, 0, "{output:?}");
    let listed = json_lines(&output.stdout);
    assert_eq!(listed.len(), FIXTURES.len());
    for ((event, name), id) in listed.iter().rev().zip(FIXTURES).zip(&ids) {
        for key in [
            "id",
            "received_at",
            "event_type",
            "direction",
            "from",
            "to",
            "message_id",
            "payload",
            "body",
        ] {
            assert!(event.get(key).is_some(), "{name}: no {key:?} in {event}");
        }
        assert_eq!(
            event.as_object().unwrap().len(),
            9,
            "{name}: exactly the documented keys: {event}"
        );
        let raw = fixture(name);
        let source: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let payload = &source["payload"];
        assert_eq!(event["id"], *id);
        assert_eq!(event["event_type"], payload["event_type"], "{name}");
        assert_eq!(event["direction"], payload["direction"], "{name}");
        assert_eq!(event["from"], payload["from_number"], "{name}");
        assert_eq!(event["to"], payload["to_number"], "{name}");
        assert_eq!(event["message_id"], payload["id"], "{name}");
        assert_eq!(event["payload"], source, "{name}");
        assert_eq!(event["body"].as_str().unwrap().as_bytes(), raw, "{name}");
        let received_at = event["received_at"].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(received_at).unwrap();
        assert_eq!(
            parsed.offset().local_minus_utc(),
            0,
            "{received_at} is not UTC"
        );
    }
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn list_filters_by_type_time_and_count() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let (_, first) = app
        .post_event(event_body("message.received", "m-1", "one"))
        .await
        .outcome();
    let after_first = Utc::now().to_rfc3339();
    let mut later = Vec::new();
    for (event_type, message_id) in [("message.sent", "m-2"), ("message.received", "m-3")] {
        later.push(
            app.post_event(event_body(event_type, message_id, "x"))
                .await
                .outcome()
                .1,
        );
    }
    let ids_of = |stdout: &str| -> Vec<i64> {
        json_lines(stdout)
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };

    let received = app
        .voltd(&["events", "list", "--json", "--type", "message.received"])
        .await;
    assert_eq!(ids_of(&received.stdout), [later[1], first], "{received:?}");
    let since = app
        .voltd(&["events", "list", "--json", "--since", &after_first])
        .await;
    assert_eq!(ids_of(&since.stdout), [later[1], later[0]], "{since:?}");
    let newest = app
        .voltd(&["events", "list", "--json", "--limit", "1"])
        .await;
    assert_eq!(ids_of(&newest.stdout), [later[1]], "{newest:?}");
    let table = app.voltd(&["events", "list"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    assert_eq!(
        table.stdout.lines().count(),
        4,
        "a header and three rows: {table:?}"
    );
    assert!(table.stdout.contains("m-2"), "{table:?}");
    let bad_time = app.voltd(&["events", "list", "--since", "yesterday"]).await;
    assert_ne!(bad_time.code, 0);
    assert!(bad_time.stderr.contains("RFC 3339"), "{bad_time:?}");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn show_prints_one_event_and_explains_a_missing_id() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let (_, id) = app
        .post_event(fixture("message-received.json"))
        .await
        .outcome();

    let shown = app.voltd(&["events", "show", &id.to_string()]).await;
    let missing = app.voltd(&["events", "show", "424242"]).await;

    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(
        shown.stdout.contains("\n  \"id\""),
        "pretty JSON: {shown:?}"
    );
    let event: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(event["id"], id);
    assert_eq!(event["message_id"], "9f1c2d3e-0001-4a5b-8c7d-000000000001");
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("no event with id 424242"),
        "{missing:?}"
    );
    assert!(missing.stderr.contains("events list"), "{missing:?}");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn control_characters_from_an_event_are_shown_escaped() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let hostile = "m\u{1b}[2J\nforged row\r\u{7}";
    app.post_event(event_body("message.received", hostile, "hi"))
        .await
        .outcome();

    let table = app.voltd(&["events", "list"]).await;

    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        !table.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );
    assert_eq!(table.stdout.lines().count(), 2, "{table:?}");
    assert!(
        table.stdout.contains(r"m\u{1b}[2J\nforged row\r\u{7}"),
        "{table:?}"
    );
    app.stop().await.unwrap();
}

/// Run `voltd` with its stdout a pipe nobody reads any more, as under `voltd … | head -1`.
async fn voltd_into_closed_pipe(app: &TestApp, args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_voltd"));
    command
        .env_clear()
        .arg("--config")
        .arg(app.config.config_path())
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    let output = actix_web::rt::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let code = output.status.code().expect("voltd exited, not killed");
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[actix_web::test]
async fn a_reader_that_goes_away_ends_a_command_quietly() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    app.post_event(fixture("message-received.json"))
        .await
        .outcome();

    for args in [
        &["events", "list", "--json"][..],
        &["events", "list"],
        &["send-test-event"],
        &["check-config"],
    ] {
        let (code, stderr) = voltd_into_closed_pipe(&app, args).await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(
            !stderr.contains("Broken pipe") && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn replay_explains_what_it_needs() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;

    let bare = app.voltd(&["events", "replay"]).await;
    let no_sinks = app.voltd(&["events", "replay", "1"]).await;

    assert_ne!(bare.code, 0, "{bare:?}");
    assert!(
        bare.stderr.contains("<ID") && bare.stderr.contains("--since"),
        "{bare:?}"
    );
    assert_eq!(no_sinks.code, 1, "{no_sinks:?}");
    assert!(
        no_sinks.stderr.contains("add a [[forward]] entry")
            && no_sinks.stderr.contains("docs/forwarding.md"),
        "{no_sinks:?}"
    );
    app.stop().await.unwrap();
}
