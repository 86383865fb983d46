//! Configuration errors end with exit 78 and say what to fix; the token is never shown.

use nix::sys::signal::Signal;

use crate::daemon::Daemon;
use crate::fake_volt::FakeVolt;
use crate::helpers::{TestConfig, dead_port, voltd};

#[actix_web::test]
async fn an_unknown_key_is_named() {
    let config = TestConfig::new();
    let text = config
        .write(dead_port())
        .replace("[log]", "[log]\ncolour = \"blue\"");
    std::fs::write(config.config_path(), text).unwrap();

    let output = voltd(
        Some(&config.config_path()),
        config.dir.path(),
        &["check-config"],
    )
    .await;

    assert_eq!(output.code, 78, "{output:?}");
    assert!(output.stderr.contains("colour"), "{output:?}");
}

#[actix_web::test]
async fn a_malformed_secret_line_is_not_shown() {
    const SECRET: &str = "s3cret-token-Wq8Z";
    let config = TestConfig::new().token(SECRET);
    for broken in [
        format!("token = \"{SECRET}\n"),
        format!("token = {SECRET}\n"),
        format!("token = \"{SECRET}\" \"{SECRET}\"\n"),
    ] {
        let text = config
            .write(dead_port())
            .replace(&format!("token = \"{SECRET}\"\n"), &broken);
        std::fs::write(config.config_path(), text).unwrap();
        for command in ["check-config", "run"] {
            let output = voltd(Some(&config.config_path()), config.dir.path(), &[command]).await;

            assert_eq!(output.code, 78, "{command}: {output:?}");
            assert!(
                output.stderr.contains("is not valid TOML: line 3, column "),
                "{command}: {output:?}"
            );
            assert!(
                !output.stderr.contains(SECRET) && !output.stdout.contains(SECRET),
                "the token leaked: {output:?}"
            );
        }
    }
}

#[actix_web::test]
async fn a_missing_config_file_lists_what_was_tried() {
    let empty = tempfile::tempdir().unwrap();

    let output = voltd(None, empty.path(), &["check-config"]).await;

    assert_eq!(output.code, 78, "{output:?}");
    assert!(output.stderr.contains("./volt.toml"), "{output:?}");
    assert!(output.stderr.contains("/etc/voltd/volt.toml"), "{output:?}");
    assert!(output.stderr.contains("--config"), "{output:?}");

    let named = empty.path().join("nowhere.toml");
    let output = voltd(Some(&named), empty.path(), &["run"]).await;
    assert_eq!(output.code, 78, "{output:?}");
    assert!(output.stderr.contains("nowhere.toml"), "{output:?}");
}

#[actix_web::test]
async fn the_packaged_config_does_not_start_until_public_url_is_replaced() {
    let packaged = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/volt.toml");
    let dir = tempfile::tempdir().unwrap();
    // The relative token_file is read from the working directory outside systemd.
    std::fs::write(dir.path().join("volt-token"), "tok").unwrap();

    let output = voltd(Some(&packaged), dir.path(), &["check-config"]).await;

    assert_eq!(output.code, 78, "{output:?}");
    for expected in [
        "server.public_url: ",
        "hooks.your-domain.example and path segment CHANGE-ME",
        "your host name",
        "openssl rand -hex 16",
    ] {
        assert!(output.stderr.contains(expected), "{expected}: {output:?}");
    }

    let edited = dir.path().join("volt.toml");
    let text = std::fs::read_to_string(&packaged).unwrap().replace(
        "https://hooks.your-domain.example/volt/CHANGE-ME",
        "https://hooks.mycompany.com/volt/3f9c1d2e7a4b5c6d8e9f0a1b2c3d4e5f",
    );
    std::fs::write(&edited, text).unwrap();
    let output = voltd(Some(&edited), dir.path(), &["check-config"]).await;
    assert_eq!(output.code, 0, "{output:?}");
}

#[actix_web::test]
async fn register_always_without_a_token_refuses_to_start() {
    let config = TestConfig::new().register("always");
    config.write(dead_port());

    let output = voltd(Some(&config.config_path()), config.dir.path(), &["run"]).await;

    assert_eq!(output.code, 78, "{output:?}");
    assert!(output.stderr.contains("api.register"), "{output:?}");
    assert!(
        !config.dir.path().join("voltd.db").exists(),
        "nothing was started"
    );
}

#[actix_web::test]
async fn unreadable_credential_files_stop_run_before_anything_starts() {
    for (section, key) in [
        ("api", "token_file = \"/nonexistent/volt-token\""),
        ("verify", "public_key_file = \"/nonexistent/volt.pub\""),
    ] {
        let config = TestConfig::new().extra_toml(section, key);
        config.write(dead_port());
        for command in ["run", "check-config"] {
            let output = voltd(Some(&config.config_path()), config.dir.path(), &[command]).await;

            assert_eq!(output.code, 78, "{command}: {output:?}");
            assert!(
                output.stderr.contains(&format!("{section}."))
                    && output.stderr.contains("/nonexistent/"),
                "{command}: {output:?}"
            );
        }
        assert!(
            !config.dir.path().join("voltd.db").exists(),
            "nothing was started"
        );
    }
}

#[actix_web::test]
async fn a_sink_file_that_cannot_be_read_stops_run_before_anything_starts() {
    for (sink, file) in [
        (
            "name = \"bus\"\ntype = \"redis\"\nurl = \"rediss://127.0.0.1:1/0\"\nstream = \"s\"\n\
             ca_file = \"/nonexistent/broker-ca.pem\"",
            "ca_file /nonexistent/broker-ca.pem",
        ),
        (
            "name = \"bus\"\ntype = \"nats\"\nurl = \"tls://127.0.0.1:1\"\nsubject = \"s\"\n\
             credentials_file = \"/nonexistent/voltd.creds\"",
            "credentials_file /nonexistent/voltd.creds",
        ),
    ] {
        let config = TestConfig::new().extra_toml("[[forward]]", sink);
        config.write(dead_port());
        for command in ["run", "check-config"] {
            let output = voltd(Some(&config.config_path()), config.dir.path(), &[command]).await;

            assert_eq!(output.code, 78, "{command}: {output:?}");
            let expected = format!("[[forward]] sink \"bus\": cannot read {file}");
            assert!(output.stderr.contains(&expected), "{command}: {output:?}");
        }
        assert!(
            !config.dir.path().join("voltd.db").exists(),
            "nothing was started"
        );
    }
}

#[actix_web::test]
async fn a_malformed_postgres_url_is_a_configuration_error_for_every_command() {
    let config = TestConfig::new();
    let text = config.write(dead_port()).replace(
        &format!("url = {:?}", config.database_url()),
        "url = \"postgres://voltd:pa#ss@127.0.0.1:5432/voltd\"",
    );
    std::fs::write(config.config_path(), text).unwrap();

    for command in ["check-config", "run", "migrate"] {
        let output = voltd(Some(&config.config_path()), config.dir.path(), &[command]).await;

        assert_eq!(output.code, 78, "{command}: {output:?}");
        assert!(
            output.stderr.contains("storage.url") && !output.stderr.contains("pa#ss"),
            "{command}: {output:?}"
        );
    }
}

#[actix_web::test]
async fn migrate_creates_a_fresh_database() {
    let config = TestConfig::new();
    config.write(dead_port());

    let output = voltd(Some(&config.config_path()), config.dir.path(), &["migrate"]).await;

    assert_eq!(output.code, 0, "{output:?}");
    assert!(output.stdout.contains("Migrations applied"), "{output:?}");
    let store = voltd::store::Store::open(&config.database_url())
        .await
        .unwrap();
    assert_eq!(store.count_events().await.unwrap(), 0);
    assert!(store.registrations().await.unwrap().is_empty());
    store.close().await;
    let listed = voltd(
        Some(&config.config_path()),
        config.dir.path(),
        &["events", "list", "--json"],
    )
    .await;
    assert_eq!((listed.code, listed.stdout.as_str()), (0, ""), "{listed:?}");
}

/// A token no other output could contain by chance.
const SECRET: &str = "tok-SENTINEL-91f3c0a7e5d2";

#[actix_web::test]
async fn check_config_redacts_the_token() {
    let config = TestConfig::new().token(SECRET);
    config.write(dead_port());

    let output = voltd(
        Some(&config.config_path()),
        config.dir.path(),
        &["check-config"],
    )
    .await;

    assert_eq!(output.code, 0, "{output:?}");
    assert!(
        output.stdout.contains("token = \"[redacted]\""),
        "{output:?}"
    );
    assert!(!format!("{output:?}").contains(SECRET), "{output:?}");
}

#[actix_web::test]
async fn check_config_prints_toml_that_reads_back_to_the_same_output() {
    let sink = "name = \"crm\"\ntype = \"http\"\n\
                url = \"https://bot:hunter2@crm.example.com/in?key=qwerty\"\n\
                headers = { Authorization = \"Bearer sk-live-123\" }\n\
                signing_secret = \"whsec_c2VjcmV0LWtleS1ieXRlcw==\"";
    let config = TestConfig::new()
        .token(SECRET)
        .extra_toml("server", "allow_ips = [\"203.0.113.0/24\", \"::1\"]")
        .extra_toml("[[forward]]", sink);
    config.write(dead_port());
    let path = config.config_path();

    let first = voltd(Some(&path), config.dir.path(), &["check-config"]).await;
    assert_eq!(first.code, 0, "{first:?}");
    std::fs::write(&path, &first.stdout).unwrap();
    let second = voltd(Some(&path), config.dir.path(), &["check-config"]).await;

    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(second.stdout, first.stdout);
    for secret in [SECRET, "hunter2", "qwerty", "sk-live-123", "c2VjcmV0"] {
        assert!(
            !first.stdout.contains(secret),
            "{secret} in {}",
            first.stdout
        );
    }
}

#[actix_web::test]
async fn the_token_never_reaches_the_log_even_at_trace_level() {
    let volt = FakeVolt::builder(SECRET).start().await;
    let config = TestConfig::new()
        .volt(&volt)
        .token(SECRET)
        .log_level("trace");
    let mut daemon = Daemon::spawn(config);
    daemon.wait_for_log("Registered with Volt").await;

    daemon.signal(Signal::SIGTERM);
    let code = daemon.exit_code().await;

    let log = daemon.log();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(volt.calls().len(), 1);
    assert!(log.contains("TRACE"), "the log is as verbose as it gets");
    assert!(!log.contains(SECRET), "the token leaked into the log");
}

#[actix_web::test]
async fn inspecting_the_store_does_not_need_the_token_file() {
    let config = TestConfig::new().extra_toml("api", "token_file = \"/nonexistent/volt-token\"");
    config.write(dead_port());
    let path = config.config_path();
    let run = |args: &'static [&'static str]| voltd(Some(&path), config.dir.path(), args);

    let listed = run(&["events", "list"]).await;
    assert_eq!(
        listed.code, 1,
        "no database yet, and none is created: {listed:?}"
    );
    assert!(listed.stderr.contains("no database at"), "{listed:?}");
    assert_eq!(run(&["migrate"]).await.code, 0);
    let listed = run(&["events", "list"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");

    let checked = run(&["check-config"]).await;
    assert_eq!(checked.code, 78, "{checked:?}");
    assert!(
        checked.stderr.contains("/nonexistent/volt-token"),
        "{checked:?}"
    );
}
