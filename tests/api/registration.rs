//! Start-up registration with Volt: serve first, then register; retry what is transient,
//! stop on what is not.

use crate::daemon::Daemon;
use crate::fake_volt::{FakeVolt, PROBE_BODY, TokenRejection};
use crate::helpers::{TestApp, TestConfig, dead_port, poll_until, stored_events};

const TOKEN: &str = "volt-test-token-7d2c";

#[actix_web::test]
async fn registration_succeeds_because_the_url_is_served_first() {
    voltd::skip_unless_available!(crate::BACKEND);
    let volt = FakeVolt::builder(TOKEN).start().await;
    let app = TestApp::spawn(TestConfig::new().volt(&volt).token(TOKEN)).await;

    let store = &app.store;
    let registrations = poll_until("a recorded registration", || async move {
        let found = store.registrations().await.unwrap();
        (!found.is_empty()).then_some(found)
    })
    .await;

    assert_eq!(registrations.len(), 1);
    assert_eq!(registrations[0].id, "wh_01");
    assert_eq!(registrations[0].url, app.webhook_url());
    let calls = volt.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(calls[0].probe_status, Some(200));
    let events = stored_events(store).await;
    assert_eq!(events.len(), 1, "Volt's probe is stored like any event");
    assert_eq!(events[0].body, PROBE_BODY.as_bytes());
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn transient_volt_errors_are_retried_until_registration_succeeds() {
    voltd::skip_unless_available!(crate::BACKEND);
    let volt = FakeVolt::builder(TOKEN).unavailable_first(2).start().await;
    let config = TestConfig::new()
        .volt(&volt)
        .token(TOKEN)
        .register_attempts(5);
    let app = TestApp::spawn(config).await;

    let store = &app.store;
    poll_until("a recorded registration", || async move {
        (!store.registrations().await.unwrap().is_empty()).then_some(())
    })
    .await;

    let probes: Vec<_> = volt.calls().iter().map(|c| c.probe_status).collect();
    assert_eq!(probes, [None, None, Some(200)]);
    assert_eq!(store.registrations().await.unwrap().len(), 1);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn an_unreachable_volt_api_is_retried_then_start_up_fails() {
    voltd::skip_unless_available!(crate::BACKEND);
    let config = TestConfig::new()
        .volt_url(format!("http://127.0.0.1:{}/graphql", dead_port()))
        .token(TOKEN)
        .register_attempts(2);
    let app = TestApp::spawn(config).await;

    let error = app.exited().await.unwrap_err();

    let message = format!("{error:#}");
    assert!(message.contains("after 2 attempts"), "{message}");
    assert!(message.contains("Volt API unavailable"), "{message}");
    assert!(message.contains("api.url"), "{message}");
}

/// Nothing listening at `api.url` (a typo in its host or port) is not worth ten attempts
/// and minutes of backoff: a few refusals end start-up, and the message says what to fix.
#[actix_web::test]
async fn a_refused_api_url_fails_after_a_few_attempts_and_names_it() {
    voltd::skip_unless_available!(crate::BACKEND);
    let api_url = format!("http://127.0.0.1:{}/graphql", dead_port());
    let config = TestConfig::new()
        .volt_url(api_url.clone())
        .token(TOKEN)
        .register_attempts(10);
    let mut daemon = Daemon::spawn(config);

    let code = daemon.exit_code().await;

    let log = daemon.log();
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(log.matches("will retry").count(), 2, "{log}");
    assert!(
        log.contains(&format!(
            "nothing accepts connections at api.url, refused 3 times in a row; check that \
             api.url is Volt's GraphQL endpoint (its scheme, host name and port): Volt API \
             unavailable: the request to {api_url} failed"
        )),
        "{log}"
    );
    assert!(log.contains("Connection refused"), "{log}");
}

#[actix_web::test]
async fn a_graphql_error_is_not_retried() {
    voltd::skip_unless_available!(crate::BACKEND);
    let volt = FakeVolt::builder(TOKEN)
        .graphql_error("url must use https")
        .start()
        .await;
    let config = TestConfig::new()
        .volt(&volt)
        .token(TOKEN)
        .register_attempts(5);
    let app = TestApp::spawn(config).await;

    let error = app.exited().await.unwrap_err();

    assert!(
        format!("{error:#}").contains("url must use https"),
        "{error:#}"
    );
    assert_eq!(volt.calls().len(), 1);
}

#[actix_web::test]
async fn a_rejected_token_stops_the_daemon_with_exit_78() {
    voltd::skip_unless_available!(crate::BACKEND);
    for rejection in [
        TokenRejection::Http401,
        TokenRejection::GraphQlError,
        TokenRejection::EchoingHeaders,
    ] {
        let volt = FakeVolt::builder(TOKEN)
            .rejecting_tokens_with(rejection)
            .start()
            .await;
        let wrong_token = "expired-token-Qx93Lm";
        let mut daemon = Daemon::spawn(TestConfig::new().volt(&volt).token(wrong_token));

        let code = daemon.exit_code().await;

        let log = daemon.log();
        assert_eq!(code, Some(78), "{rejection:?}:\n{log}");
        assert!(log.contains("Volt rejected the API token"), "{log}");
        assert!(log.contains("api.token"), "{log}");
        assert!(!log.contains(wrong_token), "the token leaked:\n{log}");
        assert_eq!(volt.calls().len(), 1, "a rejected token is not retried");
    }
}

#[actix_web::test]
async fn an_unreachable_webhook_url_is_retried_and_explained() {
    voltd::skip_unless_available!(crate::BACKEND);
    let volt = FakeVolt::builder(TOKEN).start().await;
    let config = TestConfig::new()
        .volt(&volt)
        .token(TOKEN)
        .register_attempts(3)
        .public_url_port(dead_port());
    let mut daemon = Daemon::spawn(config);

    let code = daemon.exit_code().await;

    let log = daemon.log();
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(log.matches("will retry").count(), 2, "{log}");
    assert!(
        log.contains("Volt could not reach the webhook URL"),
        "{log}"
    );
    assert!(log.contains("reverse proxy or firewall"), "{log}");
    let probes: Vec<_> = volt.calls().iter().map(|c| c.probe_status).collect();
    assert_eq!(probes, [None, None, None]);
}

#[actix_web::test]
async fn the_register_command_registers_a_served_url() {
    voltd::skip_unless_available!(crate::BACKEND);
    let volt = FakeVolt::builder(TOKEN).start().await;
    let app = TestApp::spawn(TestConfig::new().volt(&volt).token(TOKEN).register("never")).await;

    let output = app.voltd(&["register"]).await;

    assert_eq!(output.code, 0, "{output:?}");
    let expected = format!("Registered webhook wh_01 for {}", app.webhook_url());
    assert!(output.stdout.contains(&expected), "{output:?}");
    assert!(
        !format!("{output:?}").contains(TOKEN),
        "the token was printed"
    );
    assert_eq!(app.store.registrations().await.unwrap().len(), 1);
    assert_eq!(volt.calls().len(), 1);
    app.stop().await.unwrap();
}
