//! sd_notify against a fake `NOTIFY_SOCKET`: readiness after serving, status lines, watchdog
//! pings while healthy, and STOPPING on SIGTERM.

use nix::sys::signal::Signal;

use crate::daemon::Daemon;
use crate::helpers::{NotifySocket, TestConfig};

#[actix_web::test]
async fn readiness_status_watchdog_and_stopping_are_reported() {
    let config = TestConfig::new();
    let socket = NotifySocket::bind(config.dir.path());
    let config = config
        .env("NOTIFY_SOCKET", socket.path())
        // 400 ms: voltd must ping at least every 200 ms.
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Daemon::spawn(config);
    daemon.wait_until_listening().await;

    socket
        .wait_for("READY=1, a ready status and two watchdog pings", |seen| {
            let ready = seen.iter().any(|m| m == "READY=1");
            let status = seen.iter().any(|m| m.starts_with("STATUS=ready: "));
            let pings = seen.iter().filter(|m| *m == "WATCHDOG=1").count();
            ready && status && pings >= 2
        })
        .await;

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
    let seen = socket.messages();
    assert!(seen.iter().any(|m| m == "STOPPING=1"), "{seen:?}");
    let ready_at = seen.iter().position(|m| m == "READY=1").unwrap();
    let first_ping = seen.iter().position(|m| m == "WATCHDOG=1").unwrap();
    assert!(
        ready_at < first_ping,
        "watchdog pings only once ready: {seen:?}"
    );
}

#[actix_web::test]
async fn no_notify_socket_means_no_notifications_and_no_errors() {
    let mut daemon = Daemon::spawn(TestConfig::new());
    daemon.wait_until_listening().await;
    daemon.wait_for_log("Not registering with Volt").await;
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0));
    let log = daemon.log();
    assert!(!log.contains("sd_notify failed"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[actix_web::test]
async fn sighup_without_tls_does_not_stop_the_daemon() {
    let mut daemon = Daemon::spawn(TestConfig::new());
    daemon.wait_until_listening().await;
    daemon.wait_for_log("Not registering with Volt").await;
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("nothing to reload").await;
    let reply = crate::helpers::send(
        &crate::helpers::http_client(std::time::Duration::from_secs(10)),
        awc::http::Method::POST,
        &daemon.webhook_url(),
        "after SIGHUP",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
}
