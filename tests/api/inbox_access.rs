//! The web inbox's password, its replay actions, and the live stream.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::admin::with_admin;
use crate::forwarding::{Downstream, http_sink, wait_for_delivery};
use crate::helpers::{PATIENCE, TestApp, TestConfig, dead_port, event_body, header, voltd};
use crate::inbox::{get_page, post_message};

const PASSWORD: &str = "correct horse battery staple";

#[actix_web::test]
async fn a_listener_beyond_loopback_refuses_to_start_without_a_password() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new().extra_toml("admin", r#"listen = "0.0.0.0:0""#);
    config.write(dead_port());
    for command in [&["check-config"][..], &["run"]] {
        let out = voltd(Some(&config.config_path()), config.dir.path(), command).await;
        assert_eq!(out.code, 78, "{command:?}: {out:?}");
        assert!(
            out.stderr.contains("admin.ui_password_file") && out.stderr.contains("loopback"),
            "{out:?}"
        );
    }
    let missing_file = TestConfig::new().extra_toml(
        "admin",
        "listen = \"0.0.0.0:0\"\nui_password_file = \"/nonexistent/ui-password\"",
    );
    missing_file.write(dead_port());
    let out = voltd(
        Some(&missing_file.config_path()),
        missing_file.dir.path(),
        &["run"],
    )
    .await;
    assert_eq!(out.code, 78, "{out:?}");
    assert!(
        out.stderr.contains("cannot read /nonexistent/ui-password"),
        "{out:?}"
    );
}

#[actix_web::test]
async fn with_a_password_only_the_inbox_asks_for_it() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new();
    let file = config.dir.path().join("ui-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let config = config.extra_toml(
        "admin",
        &format!(
            "listen = \"0.0.0.0:0\"\nui_password_file = {:?}",
            file.display().to_string()
        ),
    );
    let app = TestApp::spawn(config).await;
    app.post_event(event_body("message.received", "p1", "Private"))
        .await
        .outcome();
    for path in [
        "/",
        "/events/1",
        "/conversations/%2B15555550145",
        "/deliveries",
        "/live",
    ] {
        for wrong in [None, Some("wrong"), Some("correct horse battery stapl")] {
            let page = get_page(&app, path, wrong).await;
            assert_eq!(page.status, 401, "{path} {wrong:?}");
            assert!(!page.body.contains("Private"));
        }
    }
    let mut response = app.client().get(app.admin_url("/")).send().await.unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        challenge.starts_with("Basic realm=\"voltd\""),
        "{challenge}"
    );
    drop(response.body().await);
    get_page(&app, "/", Some(PASSWORD)).await.at("Private");
    assert_eq!(get_page(&app, "/healthz", None).await.status, 200);
    assert_eq!(get_page(&app, "/assets/style.css", None).await.status, 200);
    app.stop().await.unwrap();
}

/// POST a form to the admin listener; the status and the redirect's target.
async fn post_form(app: &TestApp, path: &str, form: &[(&str, &str)]) -> (u16, Option<String>) {
    // The answer itself, not the page a redirect leads to.
    let response = awc::Client::builder()
        .disable_redirects()
        .finish()
        .post(app.admin_url(path))
        .send_form(&form)
        .await
        .expect("POST a form");
    let location = header(&response, "location");
    (response.status().as_u16(), location)
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let start = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a token")
        + 19;
    page[start..start + 64].to_owned()
}

#[actix_web::test]
async fn replay_takes_a_post_with_the_token_and_only_when_allowed() {
    voltd::skip_unless_available!(crate::BACKEND);
    let dead_url = format!("http://127.0.0.1:{}/hook", dead_port());
    let downstream = Downstream::start();
    let config = with_admin(TestConfig::new())
        .extra_toml("admin", "ui_actions = true")
        .extra_toml(
            "[[forward]]",
            &http_sink("crm", &dead_url, "max_attempts = 1\n"),
        )
        .extra_toml(
            "[[forward]]",
            &http_sink("bus", &downstream.url("/hook"), ""),
        );
    let app = TestApp::spawn(config).await;
    let (_, id) = app
        .post_event(event_body("message.received", "r1", "Replay me"))
        .await
        .outcome();
    let dead = wait_for_delivery(&app.store, "a dead delivery", |d| d.status == "dead").await;
    wait_for_delivery(&app.store, "a delivery", |d| d.status == "delivered").await;

    let page = get_page(&app, &format!("/events/{id}"), None).await;
    let token = csrf(&page.body);
    page.at(&format!(r#"action="/deliveries/{}/retry""#, dead.id));
    let retry = format!("/deliveries/{}/retry", dead.id);
    assert_eq!(post_form(&app, &retry, &[]).await.0, 403);
    assert_eq!(
        post_form(&app, &retry, &[("csrf", "0".repeat(64).as_str())])
            .await
            .0,
        403
    );
    assert_eq!(
        get_page(&app, &retry, None).await.status,
        404,
        "never a GET"
    );
    let (status, location) = post_form(&app, &retry, &[("csrf", &token)]).await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some(&*format!("/events/{id}?retried={}", dead.id)))
    );
    wait_for_delivery(&app.store, "the retried delivery", |d| {
        d.sink == "crm" && d.id > dead.id
    })
    .await;
    let again = post_form(
        &app,
        &format!("/deliveries/{}/retry", dead.id + 100),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(again.0, 404);

    let replay = format!("/events/{id}/replay");
    let (status, location) = post_form(&app, &replay, &[("csrf", &token)]).await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some(&*format!("/events/{id}?replayed=2")))
    );
    get_page(&app, &format!("/events/{id}?replayed=2"), None)
        .await
        .at("Queued 2 deliveries");
    crate::helpers::poll_until("the replayed event downstream", || async {
        (downstream.received().len() >= 2).then_some(())
    })
    .await;
    app.stop().await.unwrap();

    let read_only = TestApp::spawn(with_admin(TestConfig::new())).await;
    let (_, id) = read_only
        .post_event(event_body("message.received", "r2", "x"))
        .await
        .outcome();
    let (status, _) = post_form(
        &read_only,
        &format!("/events/{id}/replay"),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        !get_page(&read_only, &format!("/events/{id}"), None)
            .await
            .body
            .contains("<form method=\"post\"")
    );
    read_only.stop().await.unwrap();
}

#[actix_web::test]
async fn a_new_event_reaches_the_live_stream_within_a_second() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(with_admin(TestConfig::new())).await;
    post_message(&app, "inbound", "+15550001", "+15550100", "Shown already").await;
    post_message(
        &app,
        "inbound",
        "+15550002",
        "+15550100",
        "Stored before connecting",
    )
    .await;
    let mut stream = app
        .client()
        .get(app.admin_url("/live?number=%2B15550002&after=1"))
        .send()
        .await
        .expect("open the live stream");
    assert_eq!(
        stream.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut received = String::new();
    let mut read_until = async |needle: &str| {
        let deadline = Instant::now() + PATIENCE;
        while !received.contains(needle) {
            let chunk = actix_web::rt::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                stream.next(),
            )
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in:\n{received}"))
            .expect("the stream stays open")
            .expect("a chunk");
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    read_until("Stored before connecting").await;
    let posted = Instant::now();
    post_message(&app, "inbound", "+15550001", "+15550100", "Other number").await;
    post_message(
        &app,
        "outbound",
        "+15550100",
        "+15550002",
        "Live <b>reply</b>",
    )
    .await;
    read_until("Live &lt;b&gt;reply&lt;/b&gt;").await;
    assert!(
        posted.elapsed() < Duration::from_secs(1),
        "took {:?}",
        posted.elapsed()
    );
    assert!(
        received.contains("event: row\nid: 2\ndata: <tr id=\"event-2\">"),
        "{received}"
    );
    assert!(
        !received.contains("Shown already") && !received.contains("Other number"),
        "{received}"
    );
    // An open stream does not hold up shutdown (the admin listener would wait 5 s for it).
    let stopping = Instant::now();
    app.stop().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "took {:?}",
        stopping.elapsed()
    );
    assert!(
        stream.next().await.is_none_or(|end| end.is_err()),
        "the stream ended"
    );
}
