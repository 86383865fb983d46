//! The web inbox over HTTP: the pages, what they escape, paging, conversations and
//! deliveries. `inbox_access.rs` has the password, the actions and the live stream.

use std::time::Duration;

use crate::admin::with_admin;
use crate::forwarding::{http_sink, wait_for_delivery};
use crate::helpers::{TestApp, TestConfig, dead_port, event_body, fixture, header};

/// A page as the browser gets it.
pub struct Html {
    pub status: u16,
    pub content_type: String,
    pub csp: Option<String>,
    pub body: String,
}

impl Html {
    /// Where `needle` is in the page; panics when it is not there.
    pub fn at(&self, needle: &str) -> usize {
        self.body
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{}", self.body))
    }
}

/// GET `path` on the admin listener, with `Authorization: Basic` when a password is given.
pub async fn get_page(app: &TestApp, path: &str, password: Option<&str>) -> Html {
    let mut request = app.client().get(app.admin_url(path));
    if let Some(password) = password {
        request = request.basic_auth("anyone", password);
    }
    let mut response = request.send().await.expect("GET an inbox page");
    let (content_type, csp) = (
        header(&response, "content-type").unwrap_or_default(),
        header(&response, "content-security-policy"),
    );
    let body = response.body().limit(4 << 20).await.expect("page body");
    Html {
        status: response.status().as_u16(),
        content_type,
        csp,
        body: String::from_utf8(body.to_vec()).expect("UTF-8 page"),
    }
}

/// Post a Volt-shaped message whose text is also its message id; returns its event id.
pub async fn post_message(app: &TestApp, direction: &str, from: &str, to: &str, text: &str) -> i64 {
    let event_type = match direction {
        "inbound" => "message.received",
        _ => "message.sent",
    };
    let body = serde_json::json!({
        "payload": {
            "event_type": event_type, "id": text, "direction": direction,
            "from_number": from, "to_number": to, "text": text
        }
    });
    app.post_event(body.to_string()).await.outcome().1
}

#[actix_web::test]
async fn the_inbox_lists_the_newest_first_with_filters_and_a_status_strip() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(with_admin(TestConfig::new())).await;
    post_message(
        &app,
        "inbound",
        "+15550001",
        "+15550100",
        "First hello\nsecond line",
    )
    .await;
    post_message(&app, "outbound", "+15550100", "+15550001", "Our answer").await;
    post_message(&app, "inbound", "+15550002", "+15550100", "Another number").await;

    let page = get_page(&app, "/", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(page.csp.as_deref().unwrap().contains("script-src 'self'"));
    assert!(page.at("Another number") < page.at("Our answer"));
    assert!(page.at("Our answer") < page.at("First hello"));
    // The first line is listed; all of it is the cell's tooltip.
    page.at("title=\"First hello\nsecond line\">First hello</td>");
    for strip in [
        "Registration: ",
        "not required",
        "Readiness: ",
        "ready",
        "Stored since start: ",
        "<b>3</b>",
    ] {
        page.at(strip);
    }
    page.at(r#"href="/conversations/%2B15550001""#);
    page.at(r#"data-live="/live?after=3""#);

    let outbound = get_page(&app, "/?type=&direction=outbound&number=", None).await;
    outbound.at("Our answer");
    assert!(!outbound.body.contains("First hello") && !outbound.body.contains("Another number"));
    let one_number = get_page(&app, "/?number=%2B15550002", None).await;
    one_number.at("Another number");
    assert!(!one_number.body.contains("Our answer"));
    one_number.at(r#"data-live="/live?number=%2B15550002&amp;after=3""#);
    let bad = get_page(&app, "/?since=yesterday", None).await;
    assert_eq!(bad.status, 400);
    bad.at("RFC 3339");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn older_pages_follow_by_id() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(with_admin(TestConfig::new())).await;
    for n in 1..=52 {
        post_message(
            &app,
            "inbound",
            "+15550001",
            "+15550100",
            &format!("text number {n}."),
        )
        .await;
    }
    let first = get_page(&app, "/", None).await;
    first.at("text number 52.");
    first.at("text number 3.");
    assert!(!first.body.contains("text number 2."));
    first.at(r#"href="/?before=3""#);
    assert!(!first.body.contains("Newer"));
    let older = get_page(&app, "/?before=3", None).await;
    assert!(older.at("text number 2.") < older.at("text number 1."));
    assert!(!older.body.contains("text number 3."));
    older.at(r#"href="/?after=2""#);
    assert!(!older.body.contains("Older"));
    assert!(older.body.contains("<tbody>"), "an older page is not live");
    let newer = get_page(&app, "/?after=2", None).await;
    newer.at("text number 52.");
    newer.at("text number 3.");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn html_in_an_event_shows_as_text_and_a_json_body_pretty() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(with_admin(TestConfig::new())).await;
    let text = r#"<script>document.title="owned"</script><img src=x onerror=alert(1)>"#;
    let id = post_message(&app, "inbound", "+15550001", "+1<u>0</u>", text).await;
    let (_, raw) = app
        .post_event("<script>alert(2)</script> not JSON")
        .await
        .outcome();

    for page in [
        get_page(&app, "/", None).await,
        get_page(&app, &format!("/events/{id}"), None).await,
    ] {
        assert_eq!(page.status, 200);
        assert!(
            !page.body.contains("<script>document") && !page.body.contains("<img"),
            "{}",
            page.body
        );
        assert!(!page.body.contains("<u>0</u>"), "{}", page.body);
        page.at("&lt;script&gt;document.title=&quot;owned&quot;&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;");
    }
    let event = get_page(&app, &format!("/events/{id}"), None).await;
    // Pretty-printed, in the stored key order, and escaped.
    event.at(
        "{\n  &quot;payload&quot;: {\n    &quot;event_type&quot;: &quot;message.received&quot;,\n",
    );
    for field in [
        "Message id",
        "Signature",
        "unchecked",
        "Remote address",
        "127.0.0.1",
    ] {
        event.at(field);
    }
    let not_json = get_page(&app, &format!("/events/{raw}"), None).await;
    not_json.at("&lt;script&gt;alert(2)&lt;/script&gt; not JSON");
    assert!(!not_json.body.contains("<script>alert"));
    for (path, status) in [("/events/999", 404), ("/events/abc", 404)] {
        let missing = get_page(&app, path, None).await;
        assert_eq!(missing.status, status, "{path}");
        missing.at("no event with id");
    }
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_conversation_shows_both_directions_in_order_with_their_outcome() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(with_admin(TestConfig::new())).await;
    // The fixtures: +15555550145 writes in, the answer to it goes out and fails (503).
    app.post_event(fixture("message-received.json"))
        .await
        .outcome();
    app.post_event(fixture("message-sent.json")).await.outcome();
    app.post_event(fixture("message-finalized-failed.json"))
        .await
        .outcome();
    app.post_event(event_body(
        "message.received",
        "other",
        "Not in this thread",
    ))
    .await
    .outcome();
    post_message(&app, "inbound", "+15550009", "+15555550123", "Someone else").await;

    let thread = get_page(&app, "/conversations/%2B15555550145", None).await;
    assert_eq!(thread.status, 200);
    thread.at("Conversation with +15555550145");
    let question = thread.at(r#"<div class="message inbound" data-event="1">"#);
    let answer = thread.at(r#"<div class="message outbound" data-event="2">"#);
    assert!(question < answer);
    assert!(thread.at("Hi, is this still available?") < thread.at("Your one time code is 654312"));
    // Sent, then finalized as failed: one message, ending failed with Volt's error code.
    thread.at(r#"<span class="badge failed">failed</span>error 503"#);
    thread.at(r##"href="/events/3">#3</a>"##);
    assert_eq!(thread.body.matches("654312").count(), 1);
    thread.at("Not in this thread");
    assert!(!thread.body.contains("Someone else"));
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn the_deliveries_page_shows_what_waits_and_what_died_by_sink() {
    voltd::skip_unless_available!(crate::BACKEND);
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let config = with_admin(TestConfig::new())
        .extra_toml("[[forward]]", &http_sink("crm", &url, "max_attempts = 1\n"))
        .extra_toml(
            "[[forward]]",
            &http_sink("bus", &url, "max_attempts = 1000\n"),
        );
    let app = TestApp::spawn(config).await;
    let (_, id) = app
        .post_event(event_body("message.received", "d1", "Hello"))
        .await
        .outcome();
    wait_for_delivery(&app.store, "a dead delivery", |d| {
        d.sink == "crm" && d.status == "dead"
    })
    .await;
    wait_for_delivery(&app.store, "a failed attempt", |d| {
        d.sink == "bus" && d.attempts >= 1
    })
    .await;

    let page = get_page(&app, "/deliveries", None).await;
    assert_eq!(page.status, 200);
    page.at(r#"<td>bus</td><td><span class="badge pending">pending</span></td><td>1</td>"#);
    page.at(r#"<td>crm</td><td><span class="badge dead">dead</span></td><td>1</td>"#);
    assert!(page.at("Dead (newest 1)") < page.at("Pending (newest 1)"));
    page.at(&format!("http://127.0.0.1:{port}"));
    assert!(
        !page.body.contains("<form"),
        "no actions unless ui_actions is on"
    );
    let inbox = get_page(&app, "/", None).await;
    inbox.at(r#"<span class="badge pending">bus: pending</span><span class="badge dead">crm: dead</span>"#);
    let event = get_page(&app, &format!("/events/{id}"), None).await;
    event.at("<td>crm</td>");
    actix_web::rt::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("stops")
        .unwrap();
}
