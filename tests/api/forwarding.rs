//! Forwarding stored events to HTTP endpoints and commands: retries, dead deliveries,
//! restarts, concurrency, signatures, filters, replay and the test event.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use nix::sys::signal::Signal;
use sha2::Sha256;
use voltd::store::{DeliveryFilter, DeliveryRecord, Store};

use crate::daemon::Daemon;
use crate::helpers::{
    TestApp, TestConfig, dead_port, event_body, json_lines, poll_until, spawn_tail,
};

/// One request as the downstream endpoint saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

/// How long the downstream endpoint takes to answer an event whose text is "slow".
const SLOW_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

/// An HTTP endpoint that answers 200 and remembers every request; an event whose text is
/// "slow" is answered after [`SLOW_ANSWER`].
pub struct Downstream {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    handle: ServerHandle,
}

impl Downstream {
    pub fn start() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").expect("bind downstream"))
    }

    fn start_on(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = received.clone();
        let server = HttpServer::new(move || {
            let shared = shared.clone();
            App::new().default_service(web::to(move |request: HttpRequest, body: Bytes| {
                let shared = shared.clone();
                async move {
                    let headers = request
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    let marker = br#""text":"slow""#;
                    let slow = body.windows(marker.len()).any(|w| w == marker);
                    shared.lock().unwrap().push(Received {
                        path: request.path().to_owned(),
                        headers,
                        body,
                    });
                    if slow {
                        actix_web::rt::time::sleep(SLOW_ANSWER).await;
                    }
                    HttpResponse::Ok().finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("serve downstream")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            port,
            received,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many requests carried event `id`.
    pub fn times_sent(&self, id: i64) -> usize {
        let id = id.to_string();
        self.received()
            .iter()
            .filter(|r| r.headers["x-voltd-event-id"] == id)
            .count()
    }

    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        poll_until(&format!("{count} requests downstream"), || {
            let received = self.received();
            std::future::ready((received.len() >= count).then_some(received))
        })
        .await
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

pub fn http_sink(name: &str, url: &str, extra: &str) -> String {
    format!(
        "name = {name:?}\ntype = \"http\"\nurl = {url:?}\nbackoff_initial_ms = 50\n\
         backoff_max_secs = 1\n{extra}"
    )
}

pub async fn deliveries(store: &Store) -> Vec<DeliveryRecord> {
    let everything = DeliveryFilter {
        limit: 1000,
        ..DeliveryFilter::default()
    };
    store
        .list_deliveries(&everything)
        .await
        .expect("list deliveries")
}

pub async fn wait_for_delivery(
    store: &Store,
    what: &str,
    condition: impl Fn(&DeliveryRecord) -> bool,
) -> DeliveryRecord {
    poll_until(what, || async {
        deliveries(store).await.into_iter().find(|d| condition(d))
    })
    .await
}

fn write_script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[actix_web::test]
async fn an_endpoint_that_is_down_gets_the_event_once_it_is_up() {
    voltd::skip_unless_available!(crate::BACKEND);
    let port = dead_port();
    let url = format!("http://bot:hunter2@127.0.0.1:{port}/hook?token=qwerty");
    let extra = "headers = { Authorization = \"Bearer sk-live-123\" }\n";
    let config = TestConfig::new().extra_toml("[[forward]]", &http_sink("crm", &url, extra));
    let app = TestApp::spawn(config).await;
    let body = event_body("message.received", "down-up-1", "Hello");
    let (_, id) = app.post_event(body.clone()).await.outcome();

    let failed = wait_for_delivery(&app.store, "a failed attempt", |d| d.attempts >= 1).await;
    assert_eq!(failed.status, "pending");
    let error = failed.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("\"crm\"") && error.contains(&format!("http://127.0.0.1:{port}")),
        "{error}"
    );
    let listed = app.voltd(&["deliveries", "list"]).await;
    let checked = app.voltd(&["check-config"]).await;
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(checked.stdout.contains("[redacted]"), "{checked:?}");
    for shown in [&error, &listed.stdout, &checked.stdout] {
        for secret in ["hunter2", "bot", "qwerty", "sk-live-123", "/hook"] {
            let allowed = secret == "/hook" && shown == &checked.stdout;
            assert!(allowed || !shown.contains(secret), "{secret} in {shown}");
        }
    }

    let downstream = Downstream::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let delivered = wait_for_delivery(&app.store, "delivery after retry", |d| {
        d.status == "delivered"
    })
    .await;
    assert!(delivered.attempts >= 2, "{delivered:?}");
    let received = downstream.wait_for(1).await;
    assert_eq!(received[0].path, "/hook");
    assert_eq!(received[0].body, body.as_bytes());
    assert_eq!(received[0].headers["x-voltd-event-id"], id.to_string());
    assert_eq!(
        received[0].headers["x-voltd-event-type"],
        "message.received"
    );
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn deliveries_carry_a_standard_webhooks_signature() {
    voltd::skip_unless_available!(crate::BACKEND);
    let key = b"0123456789abcdef0123456789abcdef";
    let secret = format!("whsec_{}", STANDARD.encode(key));
    let downstream = Downstream::start();
    let extra = format!("signing_secret = {secret:?}\nheaders = {{ X-Team = \"sms\" }}\n");
    let config = TestConfig::new().extra_toml(
        "[[forward]]",
        &http_sink("signed", &downstream.url("/in"), &extra),
    );
    let app = TestApp::spawn(config).await;
    let body = event_body("message.received", "signed-1", "Sign me");
    let (_, id) = app.post_event(body.clone()).await.outcome();

    let request = downstream.wait_for(1).await.remove(0);
    let header = |name: &str| request.headers.get(name).cloned().unwrap_or_default();
    assert_eq!(header("x-team"), "sms");
    let timestamp: i64 = header("webhook-timestamp")
        .parse()
        .expect("a unix timestamp");
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 300);
    let message_id = header("webhook-id");
    assert!(message_id.contains(&id.to_string()), "{message_id}");

    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(format!("{message_id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header("webhook-signature"), expected);
    assert_eq!(request.body, body.as_bytes());
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_failing_command_is_retried_then_declared_dead() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new();
    let program = write_script(
        config.dir.path(),
        "fail.sh",
        "echo \"cannot handle $VOLT_EVENT_ID\" >&2\nprintf 'red\\033[31m\\n' >&2\nexit 3\n",
    );
    let sink = format!(
        "name = \"pager\"\ntype = \"command\"\nprogram = {program:?}\nmax_attempts = 3\n\
         backoff_initial_ms = 20\nbackoff_max_secs = 1\n"
    );
    let app = TestApp::spawn(config.extra_toml("[[forward]]", &sink)).await;
    let (_, id) = app
        .post_event(event_body("message.received", "dead-1", "x"))
        .await
        .outcome();

    let dead = wait_for_delivery(&app.store, "a dead delivery", |d| d.status == "dead").await;
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.event_id, id);
    let error = dead.last_error.unwrap();
    assert!(error.starts_with("sink \"pager\": "), "{error}");
    assert!(error.contains(&format!("cannot handle {id}")), "{error}");
    assert!(error.contains('3'), "{error}");

    let listed = app
        .voltd(&["deliveries", "list", "--status", "dead", "--json"])
        .await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let lines = json_lines(&listed.stdout);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["sink"], "pager");
    assert_eq!(lines[0]["attempts"], 3);
    assert!(lines[0]["next_attempt_at"].is_null(), "{lines:?}");
    assert!(
        lines[0]["last_error"].as_str().unwrap().contains('\u{1b}'),
        "{lines:?}"
    );
    let table = app.voltd(&["deliveries", "list"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    let row = table.stdout.lines().nth(1).unwrap_or_default().to_owned();
    assert_eq!(table.stdout.lines().count(), 2, "{table:?}");
    assert!(!row.chars().any(char::is_control), "{row:?}");
    assert!(
        row.contains(&format!(r"cannot handle {id}\nred\u{{1b}}[31m")),
        "{row:?}"
    );
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[3..6], ["dead", "3", "-"], "{row:?}");
    let pending = app
        .voltd(&["deliveries", "list", "--status", "pending", "--json"])
        .await;
    assert!(json_lines(&pending.stdout).is_empty(), "{pending:?}");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn commands_get_the_event_and_run_at_most_max_concurrency_at_once() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new();
    let dir = config.dir.path().to_owned();
    std::fs::create_dir(dir.join("running")).unwrap();
    let program = write_script(
        &dir,
        "handle.sh",
        r#"dir="$(dirname "$0")"
cat > "$dir/stdin-$VOLT_EVENT_ID.json"
echo "$VOLT_EVENT_TYPE|$VOLT_FROM|$VOLT_TO" > "$dir/env-$VOLT_EVENT_ID"
touch "$dir/running/$VOLT_EVENT_ID"
ls "$dir/running" | wc -l >> "$dir/concurrency"
sleep 0.4
rm "$dir/running/$VOLT_EVENT_ID"
"#,
    );
    let sink = format!(
        "name = \"script\"\ntype = \"command\"\nprogram = {program:?}\nmax_concurrency = 2\n"
    );
    let app = TestApp::spawn(config.extra_toml("[[forward]]", &sink)).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let body = event_body("message.received", &format!("conc-{n}"), "hi");
        ids.push(app.post_event(body).await.outcome().1);
    }

    poll_until("six delivered", || async {
        let all = deliveries(&app.store).await;
        (all.iter().filter(|d| d.status == "delivered").count() == 6).then_some(())
    })
    .await;
    let counts: Vec<usize> = std::fs::read_to_string(dir.join("concurrency"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.iter().max(), Some(&2), "{counts:?}");

    let stdin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("stdin-{}.json", ids[0]))).unwrap())
            .unwrap();
    assert_eq!(stdin["id"], ids[0]);
    assert_eq!(stdin["message_id"], "conc-0");
    assert_eq!(stdin["payload"]["payload"]["text"], "hi");
    let env = std::fs::read_to_string(dir.join(format!("env-{}", ids[0]))).unwrap();
    assert_eq!(env.trim(), "message.received|+15555550145|+15555550123");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn pending_deliveries_resume_after_a_restart() {
    voltd::skip_unless_available!(crate::BACKEND);
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}/after-restart");
    let config = TestConfig::new()
        .log_level("warn")
        .extra_toml("[[forward]]", &http_sink("later", &url, ""));
    let mut daemon = Daemon::spawn(config);
    daemon.wait_until_listening().await;
    let client = crate::helpers::http_client(std::time::Duration::from_secs(10));
    let body = event_body("message.received", "restart-1", "still there?");
    let reply = crate::helpers::send(
        &client,
        awc::http::Method::POST,
        &daemon.webhook_url(),
        body,
    )
    .await
    .unwrap();
    let (_, id) = reply.outcome();

    let store = Store::open(&daemon.config.database_url()).await.unwrap();
    wait_for_delivery(&store, "a failed attempt", |d| d.attempts >= 1).await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());

    let downstream = Downstream::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    daemon.restart();
    daemon.wait_until_listening().await;
    let received = downstream.wait_for(1).await;
    assert_eq!(received[0].headers["x-voltd-event-id"], id.to_string());
    wait_for_delivery(&store, "delivered after restart", |d| {
        d.status == "delivered"
    })
    .await;
    assert_eq!(deliveries(&store).await.len(), 1);
    store.close().await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
}

#[actix_web::test]
async fn a_slow_delivery_holds_up_no_other_event() {
    voltd::skip_unless_available!(crate::BACKEND);
    let downstream = Downstream::start();
    let config =
        TestConfig::new().extra_toml("[[forward]]", &http_sink("crm", &downstream.url("/in"), ""));
    let app = TestApp::spawn(config).await;
    let (_, slow) = app
        .post_event(event_body("message.received", "slow-1", "slow"))
        .await
        .outcome();
    let mut quick = Vec::new();
    for n in 0..3 {
        let body = event_body("message.received", &format!("quick-{n}"), "hi");
        quick.push(app.post_event(body).await.outcome().1);
    }

    let rows = poll_until("the quick events delivered", || async {
        let rows = deliveries(&app.store).await;
        let delivered = |id: &i64| {
            rows.iter()
                .any(|d| d.event_id == *id && d.status == "delivered")
        };
        quick.iter().all(delivered).then_some(rows)
    })
    .await;
    // The slow one is still being attempted: it went on as a pending delivery of its own.
    assert!(
        !rows
            .iter()
            .any(|d| d.event_id == slow && d.status == "delivered"),
        "{rows:?}"
    );
    let delivered = wait_for_delivery(&app.store, "the slow event delivered", |d| {
        d.event_id == slow && d.status == "delivered"
    })
    .await;
    assert_eq!(delivered.attempts, 1, "{delivered:?}");
    assert_eq!(deliveries(&app.store).await.len(), 4);
    assert_eq!(downstream.times_sent(slow), 1);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_delivery_cut_short_by_a_stop_is_attempted_after_the_restart() {
    voltd::skip_unless_available!(crate::BACKEND);
    let downstream = Downstream::start();
    let config = TestConfig::new()
        // The debug line says when an attempt's outcome is in.
        .log_level("warn,voltd::forward=debug")
        .extra_toml("[[forward]]", &http_sink("crm", &downstream.url("/in"), ""));
    let mut daemon = Daemon::spawn(config);
    daemon.wait_until_listening().await;
    let client = crate::helpers::http_client(std::time::Duration::from_secs(10));
    let url = daemon.webhook_url();
    let send = |body: String| crate::helpers::send(&client, awc::http::Method::POST, &url, body);
    let (_, quick) = send(event_body("message.received", "cut-1", "hi"))
        .await
        .unwrap()
        .outcome();
    let (_, slow) = send(event_body("message.received", "cut-2", "slow"))
        .await
        .unwrap()
        .outcome();
    // Both are with the endpoint, and voltd has the quick one's answer.
    downstream.wait_for(2).await;
    daemon
        .wait_for_log(&format!("Delivered sink=\"crm\" event={quick} "))
        .await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());

    daemon.restart();
    daemon.wait_until_listening().await;
    let store = Store::open(&daemon.config.database_url()).await.unwrap();
    wait_for_delivery(&store, "the cut-short delivery made again", |d| {
        d.event_id == slow && d.status == "delivered"
    })
    .await;
    // The quick one was recorded at the stop, so it is not sent again.
    assert_eq!(
        (downstream.times_sent(quick), downstream.times_sent(slow)),
        (1, 2),
        "{}",
        daemon.log()
    );
    store.close().await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
}

#[actix_web::test]
async fn filters_pick_events_and_replay_sends_again() {
    voltd::skip_unless_available!(crate::BACKEND);
    let downstream = Downstream::start();
    let config = TestConfig::new()
        .extra_toml(
            "[[forward]]",
            &http_sink(
                "received",
                &downstream.url("/received"),
                "event_types = [\"message.received\"]\n",
            ),
        )
        .extra_toml(
            "[[forward]]",
            &http_sink(
                "vip",
                &downstream.url("/vip"),
                "direction = \"inbound\"\nnumbers = [\"+15555550199\"]\n",
            ),
        );
    let app = TestApp::spawn(config).await;
    let (_, ordinary) = app
        .post_event(event_body("message.received", "f-1", "a"))
        .await
        .outcome();
    let sent = serde_json::json!({"payload": {"event_type": "message.sent", "id": "f-2",
        "direction": "outbound", "from_number": "+15555550199", "to_number": "+15555550145",
        "status": "sent"}});
    app.post_event(sent.to_string()).await.outcome();
    let vip_body = serde_json::json!({"payload": {"event_type": "message.received", "id": "f-3",
        "direction": "inbound", "from_number": "+15555550199", "to_number": "+15555550123",
        "text": "b"}});
    let (_, vip) = app.post_event(vip_body.to_string()).await.outcome();

    poll_until("three deliveries done", || async {
        let all = deliveries(&app.store).await;
        (all.iter().filter(|d| d.status == "delivered").count() == 3).then_some(())
    })
    .await;
    let mut routed: Vec<(String, String)> = deliveries(&app.store)
        .await
        .iter()
        .map(|d| (d.sink.clone(), d.event_id.to_string()))
        .collect();
    routed.sort();
    let expected = vec![
        ("received".to_owned(), ordinary.to_string()),
        ("received".to_owned(), vip.to_string()),
        ("vip".to_owned(), vip.to_string()),
    ];
    assert_eq!(routed, expected);
    assert_eq!(downstream.received().len(), 3);

    let replayed = app
        .voltd(&[
            "events",
            "replay",
            &ordinary.to_string(),
            "--sink",
            "received",
        ])
        .await;
    assert_eq!(replayed.code, 0, "{replayed:?}");
    assert!(
        replayed.stdout.contains("Queued 1 delivery;"),
        "{replayed:?}"
    );
    let received = downstream.wait_for(4).await;
    assert_eq!(received[3].path, "/received");
    assert_eq!(
        received[3].headers["x-voltd-event-id"],
        ordinary.to_string()
    );

    let since = app
        .voltd(&[
            "events",
            "replay",
            "--since",
            "2000-01-01T00:00:00Z",
            "--type",
            "message.received",
        ])
        .await;
    assert!(since.stdout.contains("Queued 3 deliveries;"), "{since:?}");
    downstream.wait_for(7).await;
    let unknown = app
        .voltd(&["events", "replay", "1", "--sink", "nope"])
        .await;
    assert_ne!(unknown.code, 0);
    assert!(unknown.stderr.contains("nope"), "{unknown:?}");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_test_event_is_stored_and_forwarded() {
    voltd::skip_unless_available!(crate::BACKEND);
    let downstream = Downstream::start();
    let config =
        TestConfig::new().extra_toml("[[forward]]", &http_sink("try", &downstream.url("/t"), ""));
    let app = TestApp::spawn(config).await;

    let sent = app
        .voltd(&["send-test-event", "--type", "message.finalized"])
        .await;
    assert_eq!(sent.code, 0, "{sent:?}");
    assert!(sent.stdout.contains("200"), "{sent:?}");

    let received = downstream.wait_for(1).await;
    assert_eq!(
        received[0].headers["x-voltd-event-type"],
        "message.finalized"
    );
    let stored = crate::helpers::stored_events(&app.store).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].body, received[0].body);
    assert_eq!(stored[0].fields.status.as_deref(), Some("delivered"));

    let again = app.voltd(&["send-test-event"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    poll_until("a second, distinct test event", || async {
        (crate::helpers::stored_events(&app.store).await.len() == 2).then_some(())
    })
    .await;
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_command_that_runs_too_long_is_killed() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new();
    let dir = config.dir.path().to_owned();
    let program = write_script(
        &dir,
        "slow.sh",
        "echo $$ > \"$(dirname \"$0\")/pid\"\nexec sleep 30\n",
    );
    let sink = format!(
        "name = \"slow\"\ntype = \"command\"\nprogram = {program:?}\ntimeout_secs = 1\n\
         max_attempts = 1\n"
    );
    let app = TestApp::spawn(config.extra_toml("[[forward]]", &sink)).await;
    app.post_event(event_body("message.received", "slow-1", "x"))
        .await
        .outcome();

    let dead = wait_for_delivery(&app.store, "a timed-out delivery", |d| d.status == "dead").await;
    assert!(dead.last_error.unwrap().contains("killed after 1 s"));
    let pid: i32 = std::fs::read_to_string(dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    poll_until("the command to be gone", || {
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.contains(") Z "));
        std::future::ready(gone.then_some(()))
    })
    .await;
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn tail_prints_new_events_until_interrupted() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    app.post_event(event_body("message.received", "before-tail", "old"))
        .await
        .outcome();
    let (mut tail, received) = spawn_tail(&app.config);
    let seen = std::cell::RefCell::new(Vec::new());
    let next_line = |needle: &'static str| {
        let (seen, received) = (&seen, &received);
        poll_until(needle, move || {
            if let Ok(line) = received.try_recv() {
                seen.borrow_mut().push(line);
            }
            let found = seen.borrow().iter().any(|l| l.contains(needle));
            std::future::ready(found.then_some(()))
        })
    };
    next_line("Ctrl-C stops").await;
    let (_, id) = app
        .post_event(event_body("message.received", "during-tail", "new"))
        .await
        .outcome();
    next_line("during-tail").await;

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(tail.id() as i32), Signal::SIGINT).unwrap();
    let status = poll_until("tail to exit", || {
        std::future::ready(tail.try_wait().unwrap())
    })
    .await;
    assert!(status.success(), "{status:?}");
    let seen = seen.take();
    let events: Vec<serde_json::Value> = seen
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{seen:?}");
    assert_eq!(events[0]["id"], id);
    assert_eq!(events[0]["message_id"], "during-tail");
    app.stop().await.unwrap();
}
