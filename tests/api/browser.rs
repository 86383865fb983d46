//! The web inbox in a real Chromium, headless, driven over WebDriver by chromedriver: the
//! inbox lists what was posted, a new event appears without a reload, a conversation shows
//! both directions in order, and HTML in a message stays text. Skipped, with one line, where
//! Chromium is not installed (see `voltd::testing::browser`).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tempfile::TempDir;
use voltd::testing::browser::{self, Browser};

use crate::admin::with_admin;
use crate::helpers::{PATIENCE, TestApp, TestConfig, http_client, poll_until};
use crate::inbox::post_message;

/// The flags Chromium needs here: no sandbox (CI runs as root), no GPU, and nothing that
/// reaches for the network, which this machine does not have.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
];

/// chromedriver on a port of its own, and a Chromium session with a fresh profile; both
/// end with it.
struct Session {
    client: Client,
    driver: Child,
    _profile: TempDir,
}

impl Session {
    async fn start(browser: &Browser) -> Self {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let driver = Command::new(&browser.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let status = format!("http://127.0.0.1:{port}/status");
        let http = http_client(Duration::from_secs(2));
        poll_until("chromedriver to answer", || async {
            let mut reply = http.get(&status).send().await.ok()?;
            let json: serde_json::Value = reply.json().await.ok()?;
            json["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": browser.chromium, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("start a Chromium session");
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// The text of every element `css` selects, in document order.
    async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap() {
            texts.push(element.text().await.unwrap());
        }
        texts
    }

    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    async fn end(mut self) {
        self.client.clone().close().await.expect("end the session");
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

const HTML_TEXT: &str = r#"<script>document.title="owned"</script><b>bold?</b>"#;

#[actix_web::test]
async fn the_inbox_works_in_chromium() {
    voltd::skip_unless_available!(crate::BACKEND);
    let Some(browser) = browser::find() else {
        return;
    };
    let app = TestApp::spawn(with_admin(TestConfig::new())).await;
    let (customer, line) = ("+15550001", "+15550100");
    post_message(
        &app,
        "inbound",
        customer,
        line,
        "Is the blue one still for sale?",
    )
    .await;
    post_message(&app, "outbound", line, customer, "Yes, until Friday.").await;
    post_message(&app, "inbound", "+15550002", line, HTML_TEXT).await;
    post_message(&app, "inbound", customer, line, "Great, I'll come by.").await;
    let session = Session::start(browser).await;
    let page = &session.client;

    page.goto(&app.admin_url("/")).await.unwrap();
    session.wait_for("tbody tr#event-4").await;
    let texts = session.texts("tbody td.text").await;
    assert_eq!(
        texts,
        [
            "Great, I'll come by.",
            HTML_TEXT,
            "Yes, until Friday.",
            "Is the blue one still for sale?"
        ]
    );
    assert_eq!(page.title().await.unwrap(), "Inbox · voltd");
    assert!(
        page.find_all(Locator::Css("td.text b"))
            .await
            .unwrap()
            .is_empty()
    );

    // Live: connected, then a new event appears without a reload.
    poll_until("the live stream to connect", || async {
        let badge = page.find(Locator::Css("#live")).await.ok()?;
        (badge.text().await.ok()? == "live").then_some(())
    })
    .await;
    let posted = Instant::now();
    let id = post_message(&app, "inbound", "+15550003", line, "Arrived while looking").await;
    session.wait_for(&format!("tbody tr#event-{id}")).await;
    let took = posted.elapsed();
    assert!(took < Duration::from_secs(1), "the new row took {took:?}");
    assert_eq!(
        session.texts("tbody td.text").await[0],
        "Arrived while looking"
    );
    let screenshot = page.screenshot().await.unwrap();
    assert!(screenshot.starts_with(b"\x89PNG\r\n\x1a\n"));
    if std::env::var_os("VOLTD_UPDATE_SCREENSHOT").is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/inbox.png");
        std::fs::write(&path, &screenshot).unwrap();
    }

    // The conversation with the customer: both directions, in time order.
    page.find(Locator::Css(r#"a[href="/conversations/%2B15550001"]"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    session.wait_for("div.thread div.message").await;
    assert_eq!(
        page.title().await.unwrap(),
        "Conversation with +15550001 · voltd"
    );
    let bodies = session.texts("div.message div.body").await;
    assert_eq!(
        bodies,
        [
            "Is the blue one still for sale?",
            "Yes, until Friday.",
            "Great, I'll come by."
        ]
    );
    let mut directions = Vec::new();
    for message in page.find_all(Locator::Css("div.message")).await.unwrap() {
        directions.push(message.attr("class").await.unwrap().unwrap_or_default());
    }
    assert_eq!(
        directions,
        ["message inbound", "message outbound", "message inbound"]
    );

    // The event with HTML in it, shown as text in its own page.
    page.goto(&app.admin_url("/events/3")).await.unwrap();
    let body = session.wait_for("pre#body").await.text().await.unwrap();
    assert!(
        body.contains(r#""text": "<script>document.title=\"owned\"</script><b>bold?</b>""#),
        "{body}"
    );
    assert_eq!(page.title().await.unwrap(), "Event 3 · voltd");
    session.end().await;
    app.stop().await.unwrap();
}
