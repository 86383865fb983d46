//! Durable at speed: a 200 means committed, even across a crash; repeats collapse to one row
//! under concurrency; a full queue answers 503 instead of losing events.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use awc::http::Method;
use nix::sys::signal::Signal;
use sqlx::Connection;
use voltd::config::Backend;
use voltd::store::Store;

use crate::daemon::Daemon;
use crate::helpers::{
    TestApp, TestConfig, event_body, fixture, http_client, poll_until, send, stored_events,
};

const CLIENTS: usize = 32;
const ROUNDS: usize = 3;
/// Acknowledged events before the daemon is killed, in the first round; later rounds go
/// further so the kill lands at a different point of the stream.
const KILL_AFTER: usize = 300;

#[actix_web::test]
async fn a_crash_under_load_loses_no_acknowledged_event() {
    voltd::skip_unless_available!(crate::BACKEND);
    let mut daemon = Daemon::spawn(TestConfig::new().log_level("warn"));
    let mut acknowledged: Vec<(String, i64)> = Vec::new();
    for round in 0..ROUNDS {
        daemon.wait_until_listening().await;

        acknowledged.extend(load_then_kill(&mut daemon, round).await);
        daemon.restart();
        daemon.wait_until_listening().await;

        let stored = stored_ids_by_message_id(&daemon.config.database_url()).await;
        for (message_id, id) in &acknowledged {
            assert_eq!(
                stored.get(message_id),
                Some(&vec![*id]),
                "round {round}: {message_id}"
            );
        }
        assert_eq!(integrity_check(&daemon.config.database_url()).await, "ok");
    }
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
}

/// Post unique events from [`CLIENTS`] concurrent clients, SIGKILL the daemon once
/// enough were acknowledged, and return every acknowledged (message id, event id).
async fn load_then_kill(daemon: &mut Daemon, round: usize) -> Vec<(String, i64)> {
    let client = http_client(Duration::from_secs(10));
    let url = daemon.webhook_url();
    let acknowledged = Rc::new(RefCell::new(Vec::new()));
    let unexpected = Rc::new(RefCell::new(Vec::new()));
    let next = Rc::new(Cell::new(0_u64));
    let senders: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            let (acknowledged, unexpected, next) =
                (acknowledged.clone(), unexpected.clone(), next.clone());
            actix_web::rt::spawn(async move {
                loop {
                    let n = next.replace(next.get() + 1);
                    let message_id = format!("crash-{round}-{n}");
                    let body = event_body("message.received", &message_id, "load");
                    match send(&client, Method::POST, &url, body).await {
                        Ok(reply) if reply.status == 200 => {
                            acknowledged
                                .borrow_mut()
                                .push((message_id, reply.outcome().1));
                        }
                        Ok(reply) if reply.status == 503 => {}
                        Ok(reply) => unexpected.borrow_mut().push(reply),
                        // The daemon is gone: this client's stream ends here.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let counted = acknowledged.clone();
    poll_until("events to be acknowledged", || {
        std::future::ready((counted.borrow().len() >= KILL_AFTER * (round + 1)).then_some(()))
    })
    .await;
    daemon.signal(Signal::SIGKILL);
    for sender in senders {
        sender.await.unwrap();
    }
    assert_eq!(daemon.exit_code().await, None, "killed by the signal");
    assert!(unexpected.borrow().is_empty(), "{:?}", unexpected.borrow());
    acknowledged.take()
}

async fn stored_ids_by_message_id(database_url: &str) -> HashMap<String, Vec<i64>> {
    let store = Store::open(database_url).await.unwrap();
    let mut stored: HashMap<String, Vec<i64>> = HashMap::new();
    for event in stored_events(&store).await {
        let message_id = event.fields.message_id.expect("every load event has an id");
        stored.entry(message_id).or_default().push(event.id);
    }
    store.close().await;
    stored
}

/// SQLite's own check of the file; PostgreSQL has no such check for a crashed client (the
/// server was never at risk), so there: every index valid and no dedup key stored twice.
async fn integrity_check(database_url: &str) -> String {
    if crate::BACKEND == Backend::Postgres {
        let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
        let (indexes_valid, repeated_keys): (bool, i64) = sqlx::query_as(
            "SELECT (SELECT bool_and(indisvalid) FROM pg_index \
                     WHERE indrelid = 'events'::regclass), \
                    (SELECT COUNT(*) - COUNT(DISTINCT dedup_key) FROM events \
                     WHERE dedup_key IS NOT NULL)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        return match (indexes_valid, repeated_keys) {
            (true, 0) => "ok".to_owned(),
            other => format!("indexes valid, keys stored twice: {other:?}"),
        };
    }
    let mut conn = sqlx::SqliteConnection::connect(database_url).await.unwrap();
    let result = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    result
}

#[actix_web::test]
async fn concurrent_repeats_of_one_event_store_one_row() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let body = event_body("message.received", "repeated-m-1", "Yes");

    let deliveries: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, body) = (app.client().clone(), app.webhook_url(), body.clone());
            actix_web::rt::spawn(async move { send(&client, Method::POST, &url, body).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for delivery in deliveries {
        outcomes.push(delivery.await.unwrap().unwrap().outcome());
    }

    let stored: Vec<_> = outcomes.iter().filter(|(s, _)| s == "stored").collect();
    assert_eq!(stored.len(), 1, "{outcomes:?}");
    let id = stored[0].1;
    assert!(
        outcomes
            .iter()
            .all(|(s, i)| *i == id && (s == "stored" || s == "duplicate")),
        "{outcomes:?}"
    );
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_repeat_delivered_after_a_restart_is_a_duplicate() {
    voltd::skip_unless_available!(crate::BACKEND);
    // The database outlives both daemons, and each daemon's own directory.
    let dir = tempfile::tempdir().unwrap();
    let first = TestConfig::new();
    let url = match crate::BACKEND {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("voltd.db").display()),
        Backend::Postgres => first.database_url(),
    };
    let schema = first.schema.clone();
    let app = TestApp::spawn(first.storage_url(url.clone())).await;
    let stored = app.post_event(fixture("message-sent.json")).await.outcome();
    app.stop().await.unwrap();

    let mut second = TestConfig::new().storage_url(url);
    second.schema = schema;
    let app = TestApp::spawn(second).await;
    let repeat = app.post_event(fixture("message-sent.json")).await.outcome();
    assert_eq!(stored.0, "stored");
    assert_eq!(repeat, ("duplicate".to_owned(), stored.1));
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_full_queue_answers_503_and_never_loses_an_acknowledged_event() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new().queue_capacity(1).max_batch(1);
    let app = TestApp::spawn(config).await;

    let requests: Vec<_> = (0..128)
        .map(|n| {
            let (client, url) = (app.client().clone(), app.webhook_url());
            let body = event_body("message.received", &format!("burst-{n}"), "burst");
            actix_web::rt::spawn(async move { send(&client, Method::POST, &url, body).await })
        })
        .collect();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for request in requests {
        let reply = request.await.unwrap().unwrap();
        match reply.status {
            200 => acknowledged.push(reply.outcome().1),
            503 => {
                assert_eq!(reply.retry_after.as_deref(), Some("1"), "{reply:?}");
                refused += 1;
            }
            _ => panic!("neither stored nor refused: {reply:?}"),
        }
    }

    assert_eq!(
        app.store.count_events().await.unwrap(),
        acknowledged.len() as i64
    );
    for id in &acknowledged {
        assert!(
            app.store.event(*id).await.unwrap().is_some(),
            "event {id} missing"
        );
    }
    // A burst of 128 against a queue of one must both fill and drain it.
    assert!(
        refused > 0 && !acknowledged.is_empty(),
        "{} stored, {refused} refused",
        acknowledged.len()
    );
    app.stop().await.unwrap();
}
