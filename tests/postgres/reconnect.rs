//! A PostgreSQL store can restart or fail over under a running daemon: the events of the
//! batch that met the broken connection get 503 (Volt delivers them again), and the writer
//! reconnects for the next.

use sqlx::Connection;

use crate::helpers::{TestApp, TestConfig, event_body, poll_until, postgres_url, stored_events};

#[actix_web::test]
async fn the_writer_reconnects_after_its_connection_is_cut() {
    let app = TestApp::spawn(TestConfig::new()).await;
    let (status, first_id) = app
        .post_event(event_body("message.received", "before-cut", "one"))
        .await
        .outcome();
    assert_eq!(status, "stored");

    let schema = app
        .config
        .schema
        .as_ref()
        .expect("a PostgreSQL test")
        .name
        .clone();
    let mut admin = sqlx::PgConnection::connect(&postgres_url()).await.unwrap();
    let cut: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) AS terminated",
    )
    .bind(&schema)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(cut > 0, "the daemon's connections were found");
    admin.close().await.unwrap();

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
