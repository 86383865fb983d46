//! Forwarding with several instances on one PostgreSQL database: one instance forwards, each
//! event reaches the sink once whichever instance stored it, and another instance takes over
//! when the forwarder dies.

use std::collections::HashMap;
use std::time::Duration;

use awc::http::Method;
use nix::sys::signal::Signal;
use voltd::store::Store;

use crate::daemon::Daemon;
use crate::forwarding::{Downstream, deliveries, http_sink};
use crate::helpers::{TestConfig, event_body, http_client, poll_until, send};

const FORWARDS: &str = "Forwarding stored events";
const STANDS_BY: &str = "Another instance forwards stored events";
const TAKES_OVER: &str = "this one takes over";

/// An instance forwarding to `sink_url`, on `first`'s database (or a new one).
fn instance(sink_url: &str, first: Option<&TestConfig>) -> TestConfig {
    let mut config = TestConfig::new()
        .log_level("info")
        .extra_toml("admin", "enabled = false")
        .extra_toml("[[forward]]", &http_sink("crm", sink_url, ""));
    if let Some(first) = first {
        config.schema = first.schema.clone();
    }
    config
}

/// Post `count` distinct events named `prefix-N`, spread over `urls` from several clients at
/// once (so commits of the instances interleave); returns the stored ids.
async fn post_events(urls: &[String], prefix: &str, count: usize) -> Vec<i64> {
    let client = http_client(Duration::from_secs(10));
    let senders: Vec<_> = (0..count)
        .map(|n| {
            let url = urls[n % urls.len()].clone();
            let body = event_body("message.received", &format!("{prefix}-{n}"), "fwd");
            let client = client.clone();
            actix_web::rt::spawn(async move {
                let reply = send(&client, Method::POST, &url, body).await.unwrap();
                reply.outcome().1
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(count);
    for sender in senders {
        ids.push(sender.await.unwrap());
    }
    ids
}

/// Every one of `ids`, and nothing else, reached the sink exactly once.
fn assert_each_arrived_once(downstream: &Downstream, ids: &[i64]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in downstream.received() {
        *seen
            .entry(request.headers["x-voltd-event-id"].clone())
            .or_default() += 1;
    }
    let expected: HashMap<String, usize> = ids.iter().map(|id| (id.to_string(), 1)).collect();
    assert_eq!(seen, expected, "each event reaches the sink exactly once");
}

async fn wait_until_all_delivered(store: &Store, count: usize) {
    poll_until("every delivery recorded as delivered", || async {
        let all = deliveries(store).await;
        (all.len() == count && all.iter().all(|d| d.status == "delivered")).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn one_instance_forwards_and_another_takes_over_when_it_dies() {
    voltd::skip_unless_available!(crate::BACKEND);
    let downstream = Downstream::start();
    let sink_url = downstream.url("/in");
    let first_config = instance(&sink_url, None);
    let second_config = instance(&sink_url, Some(&first_config));
    let store = Store::open(&first_config.database_url()).await.unwrap();
    let mut first = Daemon::spawn(first_config);
    first.wait_until_listening().await;
    first.wait_for_log(FORWARDS).await;
    let mut second = Daemon::spawn(second_config);
    second.wait_until_listening().await;
    second.wait_for_log(STANDS_BY).await;

    let urls = [first.webhook_url(), second.webhook_url()];
    let mut ids = post_events(&urls, "both", 60).await;
    downstream.wait_for(ids.len()).await;
    wait_until_all_delivered(&store, ids.len()).await;
    assert!(!second.log().contains(FORWARDS), "{}", second.log());

    first.signal(Signal::SIGKILL);
    assert_eq!(first.exit_code().await, None, "killed by the signal");
    second.wait_for_log(TAKES_OVER).await;
    ids.extend(post_events(&[second.webhook_url()], "after", 20).await);
    downstream.wait_for(ids.len()).await;
    wait_until_all_delivered(&store, ids.len()).await;

    assert_each_arrived_once(&downstream, &ids);
    store.close().await;
    second.signal(Signal::SIGTERM);
    assert_eq!(second.exit_code().await, Some(0), "{}", second.log());
}

/// End the session that holds `schema`'s forwarding role, as a server restart or a cut
/// connection would; returns how many sessions were ended.
async fn end_forwarding_session(schema: &str) -> i64 {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&voltd::testing::postgres::url())
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' \
         AND classid::text::bigint = (hashtext($1)::bigint & 4294967295) AND objid = 2 \
         AND objsubid = 2",
    )
    .bind(schema)
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

#[actix_web::test]
async fn forwarding_resumes_after_its_database_session_ends() {
    voltd::skip_unless_available!(crate::BACKEND);
    let downstream = Downstream::start();
    let config = instance(&downstream.url("/in"), None);
    let schema = config.schema.clone().expect("a PostgreSQL schema");
    let mut daemon = Daemon::spawn(config);
    daemon.wait_until_listening().await;
    daemon.wait_for_log(FORWARDS).await;
    let mut ids = post_events(&[daemon.webhook_url()], "before", 3).await;
    downstream.wait_for(ids.len()).await;

    assert_eq!(end_forwarding_session(schema.name()).await, 1);
    daemon.wait_for_log("Lost the forwarding role").await;
    ids.extend(post_events(&[daemon.webhook_url()], "after", 3).await);
    downstream.wait_for(ids.len()).await;
    assert_each_arrived_once(&downstream, &ids);
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
}
