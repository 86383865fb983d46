//! sd_notify against a fake `NOTIFY_SOCKET`: readiness after serving, status lines, watchdog
//! pings while healthy, and STOPPING on SIGTERM.

use std::os::unix::net::UnixDatagram;

use nix::sys::signal::Signal;

use crate::daemon::Daemon;
use crate::helpers::{TestConfig, poll_until};

/// Every datagram received so far, one message per line.
fn drain(socket: &UnixDatagram, seen: &mut Vec<String>) {
    let mut buffer = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buffer) {
        seen.extend(
            String::from_utf8_lossy(&buffer[..n])
                .lines()
                .map(str::to_owned),
        );
    }
}

#[actix_web::test]
async fn readiness_status_watchdog_and_stopping_are_reported() {
    let config = TestConfig::new();
    let socket_path = config.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_nonblocking(true).unwrap();
    let config = config
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        // 400 ms: voltd must ping at least every 200 ms.
        .env("WATCHDOG_USEC", "400000");
    let mut daemon = Daemon::spawn(config);
    daemon.wait_until_listening().await;

    let mut seen = Vec::new();
    let seen = &mut seen;
    poll_until("READY=1, a ready status and two watchdog pings", || {
        drain(&socket, seen);
        let ready = seen.iter().any(|m| m == "READY=1");
        let status = seen.iter().any(|m| m.starts_with("STATUS=ready: "));
        let pings = seen.iter().filter(|m| *m == "WATCHDOG=1").count();
        std::future::ready((ready && status && pings >= 2).then_some(()))
    })
    .await;

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
    drain(&socket, seen);
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
