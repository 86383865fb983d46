//! A PostgreSQL store can restart or fail over under a running daemon: the events of the
//! batch that met the broken connection get 503 (Volt delivers them again), and the writer
//! reconnects for the next.

use sqlx::Connection;

use crate::helpers::{
    TestApp, TestConfig, dead_port, event_body, poll_until, spawn_tail, stored_events, voltd,
};

#[actix_web::test]
async fn the_writer_reconnects_after_its_connection_is_cut() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let (status, first_id) = app
        .post_event(event_body("message.received", "before-cut", "one"))
        .await
        .outcome();
    assert_eq!(status, "stored");

    assert!(
        cut_connections(&app).await > 0,
        "the daemon's connections were found"
    );

    let app = &app;
    let refused = std::cell::Cell::new(0);
    let (status, after_id) = poll_until("an event stored after the cut", || {
        let refused = &refused;
        async move {
            let reply = app
                .post_event(event_body("message.received", "after-cut", "two"))
                .await;
            match reply.status {
                200 => Some(reply.outcome()),
                503 => {
                    refused.set(refused.get() + 1);
                    None
                }
                other => panic!("unexpected {other}: {reply:?}"),
            }
        }
    })
    .await;
    assert_eq!(status, "stored");
    assert!(after_id > first_id);
    assert!(
        refused.get() <= 2,
        "{} refusals before reconnecting",
        refused.get()
    );
    let stored = stored_events(&app.store).await;
    assert_eq!(stored.len(), 2);
}

/// End every server session of this test's daemon and CLI (they carry the test's schema as
/// their application name); returns how many there were.
async fn cut_connections(app: &TestApp) -> i64 {
    let schema = app
        .config
        .schema
        .as_ref()
        .expect("a PostgreSQL test")
        .name();
    let mut admin = sqlx::PgConnection::connect(&voltd::testing::postgres::url())
        .await
        .unwrap();
    let cut = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) AS terminated",
    )
    .bind(schema)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    cut
}

#[actix_web::test]
async fn events_tail_carries_on_after_its_connection_is_cut() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let (mut tail, received) = spawn_tail(&app.config);
    let seen = std::cell::RefCell::new(String::new());
    let printed = |message_id: &'static str| {
        let (seen, received) = (&seen, &received);
        poll_until(message_id, move || {
            while let Ok(line) = received.try_recv() {
                seen.borrow_mut().push_str(&line);
            }
            std::future::ready(seen.borrow().contains(message_id).then_some(()))
        })
    };
    // Events are posted until the tail, once started, prints one.
    let mut n = 0;
    poll_until("the tail to print an event", || {
        n += 1;
        let body = event_body("message.received", &format!("before-cut-{n}"), "x");
        let (app, seen, received) = (&app, &seen, &received);
        async move {
            app.post_event(body).await.outcome();
            let line = received.try_recv().ok()?;
            seen.borrow_mut().push_str(&line);
            Some(())
        }
    })
    .await;
    assert!(cut_connections(&app).await > 0);
    poll_until("an event stored after the cut", || async {
        let reply = app
            .post_event(event_body("message.received", "after-cut", "y"))
            .await;
        (reply.status == 200).then_some(())
    })
    .await;
    printed("after-cut").await;
    assert_eq!(tail.try_wait().unwrap(), None, "the tail is still running");
    tail.kill().unwrap();
    tail.wait().unwrap();
    app.stop().await.unwrap();
}

/// A server that accepts connections and never answers (frozen, or behind a broken proxy)
/// fails the command within the connect timeout instead of hanging it.
#[actix_web::test]
async fn a_server_that_never_answers_is_an_error_not_a_hang() {
    voltd::skip_unless_available!(crate::BACKEND);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let config = TestConfig::new();
    let text = config.write(dead_port()).replace(
        &config.database_url(),
        &format!("postgres://voltd:s3cret@127.0.0.1:{port}/voltd"),
    );
    std::fs::write(config.config_path(), text).unwrap();
    let started = std::time::Instant::now();
    let output = voltd(
        Some(&config.config_path()),
        config.dir.path(),
        &["events", "list"],
    )
    .await;
    assert_eq!(output.code, 1, "{output:?}");
    assert!(
        output
            .stderr
            .contains("did not accept the connection within 10 s"),
        "{output:?}"
    );
    assert!(!output.stderr.contains("s3cret"), "{output:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(18));
    drop(silent);
}
