//! The admin listener: liveness, readiness with its reasons, and Prometheus metrics.

use awc::http::Method;

use crate::fake_volt::FakeVolt;
use crate::helpers::{TestApp, TestConfig, fixture, poll_until, send};

const TOKEN: &str = "volt-admin-test-token";

pub fn with_admin(config: TestConfig) -> TestConfig {
    config.extra_toml("admin", r#"listen = "127.0.0.1:0""#)
}

async fn get(app: &TestApp, path: &str) -> (u16, String) {
    let reply = send(app.client(), Method::GET, &app.admin_url(path), "")
        .await
        .expect("admin request");
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

#[actix_web::test]
async fn health_readiness_and_metrics_are_served() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(with_admin(TestConfig::new())).await;

    assert_eq!(get(&app, "/healthz").await.0, 200);
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    app.post_event(fixture("message-received.json")).await;
    app.post_event(fixture("message-received.json")).await;
    app.request(Method::POST, "/elsewhere", "x").await;
    let (status, metrics) = get(&app, "/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        r#"voltd_events_received_total{event_type="message.received"} 2"#,
        "voltd_events_duplicate_total 1",
        r#"voltd_requests_rejected_total{reason="path"} 1"#,
        r#"voltd_registration_state{state="not_required"} 1"#,
        "voltd_store_commit_seconds_count 2",
        "voltd_store_batch_events_count 2",
        "voltd_store_queue_depth 0",
        r#"voltd_build_info{version=""#,
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in:\n{metrics}"
        );
    }
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn not_ready_while_registration_is_pending() {
    voltd::skip_unless_available!(crate::BACKEND);
    let volt = FakeVolt::builder(TOKEN)
        .unavailable_first(1_000)
        .start()
        .await;
    let config = with_admin(
        TestConfig::new()
            .volt(&volt)
            .token(TOKEN)
            .register_attempts(1_000),
    );
    let app = TestApp::spawn(config).await;

    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("registration with Volt in progress"),
        "{body}"
    );
    // Alive all the same, and still receiving.
    assert_eq!(get(&app, "/healthz").await.0, 200);
    assert_eq!(app.post_event("still stored").await.status, 200);
    let app = &app;
    poll_until("a counted transient registration failure", || async move {
        let (_, metrics) = get(app, "/metrics").await;
        metrics
            .contains(r#"voltd_registration_attempts_total{outcome="transient_failure"}"#)
            .then_some(())
    })
    .await;
}
