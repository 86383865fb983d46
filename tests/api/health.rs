//! Health that tells the truth: a database that cannot take writes stops start-up; one that
//! stops committing while the daemon runs turns `/readyz`, the metric and systemd's status
//! line to "not ready" within seconds, and back once it commits again; a database not there
//! yet at start-up is waited for.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use awc::http::Method;
use nix::sys::signal::Signal;
use sqlx::{Connection, SqliteConnection};

use crate::daemon::Daemon;
use crate::helpers::{
    NotifySocket, PATIENCE, TestConfig, dead_port, event_body, http_client, poll_until, send, voltd,
};

/// `/readyz` must answer well within a probe's usual one-second timeout.
const READYZ_DEADLINE: Duration = Duration::from_millis(900);

/// `config` with the admin listener on a port of its own; returns its address too.
fn with_admin(config: TestConfig) -> (TestConfig, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], dead_port()));
    let config = config.extra_toml("admin", &format!("listen = \"{admin}\""));
    (config, admin)
}

/// `/readyz`: its status and body, checked to have come within [`READYZ_DEADLINE`].
async fn readyz(admin: SocketAddr) -> (u16, String) {
    let client = http_client(Duration::from_secs(5));
    let started = Instant::now();
    let reply = send(&client, Method::GET, &format!("http://{admin}/readyz"), "")
        .await
        .expect("readyz answers");
    let took = started.elapsed();
    assert!(took < READYZ_DEADLINE, "/readyz took {took:?}");
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

async fn metric_line(admin: SocketAddr, name: &str) -> String {
    let client = http_client(Duration::from_secs(5));
    let reply = send(&client, Method::GET, &format!("http://{admin}/metrics"), "")
        .await
        .expect("metrics answer");
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    text.lines()
        .find(|line| line.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .to_owned()
}

/// `program` found on the test's own `PATH` (the daemon runs with an empty environment).
fn on_path(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed (util-linux)"))
}

/// A database file without write permission. Root ignores file permissions, so when the
/// tests run as root voltd runs under `setpriv` without the capabilities that let root
/// write anyway, and the file's mode means what it says, as for the service's own user.
#[actix_web::test]
async fn a_database_that_cannot_be_written_stops_start_up() {
    let config = TestConfig::new();
    config.write(dead_port());
    let migrate = voltd(Some(&config.config_path()), config.dir.path(), &["migrate"]).await;
    assert_eq!(migrate.code, 0, "{migrate:?}");
    let database = config.dir.path().join("voltd.db");
    let mut permissions = std::fs::metadata(&database).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o444);
    std::fs::set_permissions(&database, permissions).unwrap();

    let setpriv = on_path("setpriv");
    let is_root =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let wrapper: Vec<&str> = if is_root {
        let without = "-dac_override,-dac_read_search,-fowner";
        vec![
            setpriv.to_str().unwrap(),
            "--inh-caps",
            without,
            "--bounding-set",
            without,
        ]
    } else {
        Vec::new()
    };
    let mut daemon = Daemon::spawn_wrapped(config, &wrapper);

    let code = daemon.exit_code().await;
    let log = daemon.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("cannot write to the store at sqlite://"),
        "{log}"
    );
    assert!(log.contains("readonly database"), "{log}");
    assert!(!log.contains("Receiving webhook events"), "{log}");
}

/// Another process holding SQLite's write lock (a backup, a `sqlite3` shell in a
/// transaction) makes every commit wait and then fail, as a full disk does: not ready, 503s,
/// one error line, an unhealthy status and no watchdog pings, then all back by themselves.
#[actix_web::test]
async fn a_store_that_cannot_commit_is_not_ready_until_it_commits_again() {
    let config = TestConfig::new();
    let socket = NotifySocket::bind(config.dir.path());
    let (config, admin) = with_admin(
        config
            .env("NOTIFY_SOCKET", socket.path())
            .env("WATCHDOG_USEC", "400000"),
    );
    let mut daemon = Daemon::spawn(config);
    daemon.wait_until_listening().await;
    socket
        .wait_for("READY=1", |seen| seen.iter().any(|m| m == "READY=1"))
        .await;
    assert_eq!(readyz(admin).await.0, 200);
    assert_eq!(
        metric_line(admin, "voltd_store_healthy").await,
        "voltd_store_healthy 1"
    );

    let mut lock = SqliteConnection::connect(&daemon.config.database_url())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe("BEGIN IMMEDIATE"))
        .execute(&mut lock)
        .await
        .unwrap();
    // Each batch waits for SQLite's busy timeout (10 s) before it fails: the first event
    // makes a batch of its own, the others queue behind it and make a second.
    let client = http_client(Duration::from_secs(60));
    let url = daemon.webhook_url();
    let post = |n: usize| {
        let (client, url) = (client.clone(), url.clone());
        let body = event_body("message.received", &format!("locked-{n}"), "x");
        actix_web::rt::spawn(async move { send(&client, Method::POST, &url, body).await })
    };
    let mut senders = vec![post(0)];
    let stalled = poll_until("/readyz to see the commit stall", || async {
        let (status, body) = readyz(admin).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(stalled.contains("has not answered"), "{stalled}");
    senders.extend((1..20).map(post));
    for sender in senders {
        let reply = sender.await.unwrap();
        let reply = reply.unwrap_or_else(|e| panic!("{e}:\n{}", daemon.log()));
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.retry_after.as_deref(), Some("1"), "{reply:?}");
    }
    let (status, failing) = readyz(admin).await;
    assert_eq!(status, 503);
    assert!(failing.contains("cannot commit"), "{failing}");
    assert!(failing.contains("database is locked"), "{failing}");
    assert_eq!(
        metric_line(admin, "voltd_store_healthy").await,
        "voltd_store_healthy 0"
    );
    socket
        .wait_for("an unhealthy status line", |seen| {
            seen.iter()
                .any(|m| m.starts_with("STATUS=unhealthy: the store cannot commit since "))
        })
        .await;
    // Unhealthy since the first commit stalled, over ten seconds of 200 ms watchdog
    // intervals ago.
    let seen = socket.messages();
    let unhealthy_at = seen
        .iter()
        .position(|m| m.starts_with("STATUS=unhealthy: the store has not answered since "))
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert!(
        !seen[unhealthy_at..].iter().any(|m| m == "WATCHDOG=1"),
        "a watchdog ping while unhealthy: {seen:?}"
    );
    let pings_while_unhealthy = count(&seen, "WATCHDOG=1");

    sqlx::raw_sql(sqlx::AssertSqlSafe("ROLLBACK"))
        .execute(&mut lock)
        .await
        .unwrap();
    lock.close().await.unwrap();
    poll_until("/readyz to be ready again", || async {
        (readyz(admin).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        metric_line(admin, "voltd_store_healthy").await,
        "voltd_store_healthy 1"
    );
    socket
        .wait_for("a ready status and a watchdog ping again", |seen| {
            let back = seen
                .iter()
                .rposition(|m| m.starts_with("STATUS=ready: "))
                .zip(seen.iter().rposition(|m| m.starts_with("STATUS=unhealthy")))
                .is_some_and(|(ready, unhealthy)| ready > unhealthy);
            back && count(seen, "WATCHDOG=1") > pings_while_unhealthy
        })
        .await;
    let reply = send(
        &client,
        Method::POST,
        &url,
        event_body("message.received", "after-the-lock", "y"),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
    let log = daemon.log();
    let lines = log.matches("Event not stored; answering 503").count();
    assert!(
        (1..=2).contains(&lines),
        "one line per 10 s, not one per refusal:\n{log}"
    );
    assert!(log.contains("The store cannot commit"), "{log}");
    assert!(log.contains("The store commits again"), "{log}");
}

fn count(messages: &[String], message: &str) -> usize {
    messages.iter().filter(|m| *m == message).count()
}

/// An SQLite directory that appears only after start (a disk mounted late): voltd waits,
/// telling systemd, and starts once it can open the database.
#[actix_web::test]
async fn a_database_that_appears_after_start_up_is_waited_for() {
    let config = TestConfig::new();
    let socket = NotifySocket::bind(config.dir.path());
    let later = config.dir.path().join("mounted-later");
    let url = format!("sqlite://{}", later.join("voltd.db").display());
    let config = config.storage_url(url).env("NOTIFY_SOCKET", socket.path());
    let mut daemon = Daemon::spawn(config);

    socket
        .wait_for("a waiting status and more start-up time", |seen| {
            seen.iter()
                .any(|m| m.starts_with("STATUS=waiting for the database, attempt 2: "))
                && seen.iter().any(|m| m.starts_with("EXTEND_TIMEOUT_USEC="))
        })
        .await;
    assert!(!socket.messages().iter().any(|m| m == "READY=1"));
    std::fs::create_dir(&later).unwrap();
    socket
        .wait_for("READY=1", |seen| seen.iter().any(|m| m == "READY=1"))
        .await;
    let reply = send(
        &http_client(Duration::from_secs(10)),
        Method::POST,
        &daemon.webhook_url(),
        "stored once the disk is there",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("Cannot reach the database yet; will retry"),
        "{}",
        daemon.log()
    );
}

#[actix_web::test]
async fn a_database_that_never_appears_ends_start_up_after_startup_retry_secs() {
    let config = TestConfig::new();
    let missing = config.dir.path().join("never-mounted/voltd.db");
    let config = config
        .storage_url(format!("sqlite://{}", missing.display()))
        .extra_toml("storage", "startup_retry_secs = 1");
    let started = Instant::now();
    let mut daemon = Daemon::spawn(config);

    let code = daemon.exit_code().await;
    let log = daemon.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(
            "the database could not be reached within 1 s of start-up \
             (storage.startup_retry_secs): cannot open the store at sqlite://"
        ),
        "{log}"
    );
    assert!(log.contains("unable to open database file"), "{log}");
    assert!(started.elapsed() < PATIENCE, "{:?}", started.elapsed());
}

/// A malformed URL is a configuration error: refused at once, never waited on.
#[actix_web::test]
async fn a_malformed_database_url_is_not_retried() {
    let config = TestConfig::new().storage_url("postgres://voltd@db:99999/voltd".to_owned());
    let mut daemon = Daemon::spawn(config);
    let code = daemon.exit_code().await;
    let log = daemon.log();
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("not a valid PostgreSQL URL"), "{log}");
    assert!(!log.contains("will retry"), "{log}");
}
