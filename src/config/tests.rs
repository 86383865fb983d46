use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret as _;

use super::*;

const MINIMAL: &str =
    "[server]\npublic_url = \"https://hooks.example.com/volt/a1b2c3d4e5f6a7b8c9\"\n";

fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Settings::from_toml(Path::new("volt.toml"), text, env)
}

fn error(text: &str, env: &[(&str, &str)]) -> String {
    match load(text, env) {
        Ok(_) => panic!("accepted:\n{text}\n{env:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_apply_under_a_minimal_file() {
    let s = load(MINIMAL, &[]).unwrap();
    assert_eq!(s.source, Path::new("volt.toml"));
    assert_eq!(s.api.url.as_str(), "https://api.respondflow.com/graphql");
    assert!(s.api.token.is_none() && s.api.token_file.is_none());
    assert_eq!(s.api.register, RegisterMode::Auto);
    assert!(!s.api.should_register());
    assert_eq!(s.api.timeout, Duration::from_secs(10));
    assert_eq!(s.api.register_attempts, 10);
    assert_eq!(s.api.retry_initial, Duration::from_millis(500));
    assert_eq!(s.api.retry_max, Duration::from_secs(60));
    assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.server.webhook_path(), "/volt/a1b2c3d4e5f6a7b8c9");
    assert_eq!(s.server.max_body_bytes, 1_048_576);
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(30));
    assert!(s.server.allow_ips.is_empty() && s.server.trusted_proxies.is_empty());
    assert_eq!(s.server.request_timeout, Duration::from_secs(10));
    assert_eq!(s.server.max_connections, 10_000);
    assert!(s.server.tls().is_none());
    assert_eq!(s.storage.url, "sqlite://voltd.db");
    assert_eq!(s.storage.queue_capacity, 8192);
    assert_eq!(
        s.storage.dedup_window,
        std::time::Duration::from_secs(30 * 86_400)
    );
    assert_eq!(s.storage.max_batch, 512);
    assert_eq!(s.storage.retention, None);
    assert_eq!(s.storage.startup_retry, Duration::from_secs(60));
    assert_eq!(s.admin.address().unwrap().to_string(), "127.0.0.1:9090");
    assert!(!s.admin.is_explicit());
    assert_eq!(s.verify.effective_mode(), VerifyMode::Off);
    assert_eq!(s.log.level.as_str(), "info");
    assert_eq!(s.log.format, LogFormat::Text);
    assert!(s.forward.is_empty());
}

#[test]
fn the_shipped_volt_toml_is_valid() {
    let text = include_str!("../../volt.toml");
    let s = load(text, &[]).unwrap();
    let defaults = load(MINIMAL, &[]).unwrap();
    assert_eq!(s.api.url, defaults.api.url);
    assert_eq!(s.storage.url, defaults.storage.url);
    assert_eq!(s.server.max_body_bytes, defaults.server.max_body_bytes);
}

#[test]
fn environment_overrides_the_file() {
    let text = format!("{MINIMAL}listen = \"127.0.0.1:1\"\n[storage]\nretention_days = 2\n");
    let s = load(
        &text,
        &[
            ("VOLT_API__TOKEN", "tok-123"),
            ("VOLT_SERVER__LISTEN", "0.0.0.0:9999"),
            ("VOLT_STORAGE__RETENTION_DAYS", "7"),
            ("VOLT_ADMIN__ENABLED", "false"),
            ("OTHER_SERVER__LISTEN", "not read"),
        ],
    )
    .unwrap();
    assert_eq!(s.server.listen.to_string(), "0.0.0.0:9999");
    assert_eq!(s.storage.retention, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(s.admin.address(), None);
    assert!(s.api.should_register());
}

#[test]
fn unknown_keys_in_the_file_are_named() {
    let err = error(&format!("{MINIMAL}listne = \"x\"\n"), &[]);
    assert!(
        err.starts_with("server.listne: unknown field `listne`, expected one of `listen`")
            && err.ends_with("; remove or correct that key (see the example volt.toml)"),
        "{err}"
    );
    assert!(error(&format!("{MINIMAL}[log]\ncolour = \"blue\"\n"), &[]).contains("log.colour"));
    assert!(error(&format!("{MINIMAL}[logs]\nlevel = \"info\"\n"), &[]).starts_with("logs:"));
}

#[test]
fn unknown_environment_keys_name_the_variable() {
    let err = error(MINIMAL, &[("VOLT_SERVER__LISTNE", "x")]);
    assert!(
        err.starts_with("VOLT_SERVER__LISTNE (server.listne): unknown field `listne`"),
        "{err}"
    );
    let err = error(MINIMAL, &[("VOLT_SERVER_LISTEN", "x")]);
    assert!(
        err.starts_with("VOLT_SERVER_LISTEN (server_listen)"),
        "{err}"
    );
    assert!(err.contains("two underscores"), "{err}");
}

#[test]
fn a_bad_value_in_a_variable_names_the_variable() {
    let err = error(MINIMAL, &[("VOLT_SERVER__LISTEN", "localhost")]);
    assert!(
        err.starts_with("VOLT_SERVER__LISTEN (server.listen): \"localhost\" is not a socket"),
        "{err}"
    );
    let err = error(
        MINIMAL,
        &[
            ("VOLT_SERVER__ALLOW_IPS", "10.0.0.0/8,nope"),
            ("VOLT_API__URL", "https://x.example/"),
        ],
    );
    assert!(
        err.starts_with("VOLT_SERVER__ALLOW_IPS (server.allow_ips): \"nope\""),
        "{err}"
    );
    assert!(!err.contains("two underscores"), "the name is right: {err}");
}

#[test]
fn a_number_with_a_fraction_is_refused_not_rounded() {
    for (section, key) in [("api", "timeout_secs"), ("storage", "retention_days")] {
        let err = error(&format!("{MINIMAL}\n[{section}]\n{key} = 1.5\n"), &[]);
        assert!(
            err.starts_with(&format!("{section}.{key}: 1.5 is not a whole number")),
            "{err}"
        );
    }
    let err = error(MINIMAL, &[("VOLT_API__TIMEOUT_SECS", "2.5")]);
    assert!(
        err.starts_with("VOLT_API__TIMEOUT_SECS (api.timeout_secs): 2.5 is not a whole number"),
        "{err}"
    );
    let s = load(&format!("{MINIMAL}\n[api]\ntimeout_secs = 2\n"), &[]).unwrap();
    assert_eq!(s.api.timeout, Duration::from_secs(2));
}

#[test]
fn choices_are_read_in_any_case_with_helpful_errors() {
    let s = load(MINIMAL, &[("VOLT_API__REGISTER", "Never")]).unwrap();
    assert_eq!(s.api.register, RegisterMode::Never);
    let s = load(
        &format!("{MINIMAL}[log]\nformat = \"JSON\"\n[verify]\nmode = \"Off\"\n"),
        &[],
    )
    .unwrap();
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.verify.mode, Some(VerifyMode::Off));
    for (text, expected) in [
        (
            "[api]\nregister = \"sometimes\"\n",
            "api.register: unknown variant `sometimes`, expected one of `auto`, `always`, `never`",
        ),
        (
            "[log]\nformat = \"xml\"\n",
            "log.format: unknown variant `xml`, expected `text` or `json`",
        ),
        (
            "[verify]\nmode = \"strict\"\n",
            "verify.mode: unknown variant `strict`, expected one of `off`, `log`, `enforce`",
        ),
    ] {
        assert_eq!(error(&format!("{MINIMAL}{text}"), &[]), expected);
    }
}

#[test]
fn networks_from_file_and_environment() {
    let s = load(
        &format!("{MINIMAL}allow_ips = [\"203.0.113.0/24\", \" ::1\"]\n"),
        &[("VOLT_SERVER__TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")],
    )
    .unwrap();
    assert_eq!(s.server.allow_ips.len(), 2);
    assert_eq!(s.server.trusted_proxies[1].to_string(), "10.0.0.0/8");
    assert_eq!(
        error(&format!("{MINIMAL}allow_ips = [\"nope\"]\n"), &[]),
        "server.allow_ips: \"nope\" is not an IP network; use CIDR such as \"203.0.113.0/24\" or \
         an address"
    );
}

#[test]
fn an_empty_list_variable_clears_the_list() {
    let text = format!("{MINIMAL}allow_ips = [\"10.0.0.0/8\"]\n");
    assert_eq!(load(&text, &[]).unwrap().server.allow_ips.len(), 1);
    let cleared = load(&text, &[("VOLT_SERVER__ALLOW_IPS", "")]).unwrap();
    assert!(cleared.server.allow_ips.is_empty());
    let two = load(
        &text,
        &[("VOLT_SERVER__ALLOW_IPS", "10.1.0.0/16, 192.0.2.7,")],
    )
    .unwrap();
    assert_eq!(two.server.allow_ips.len(), 2);
}

#[test]
fn each_kind_of_value_explains_itself() {
    for (text, expected) in [
        (
            "listen = \"localhost\"\n",
            "server.listen: \"localhost\" is not a socket address; use IP:PORT such as \
             \"127.0.0.1:8080\" or \"[::]:8080\"",
        ),
        (
            "[admin]\nlisten = \"9090\"\n",
            "admin.listen: \"9090\" is not a socket address",
        ),
        (
            "[api]\nurl = \"ftp://x/y\"\n",
            "api.url: \"ftp://x/y\" is not a URL with a host and the scheme http or https; use an absolute http:// \
             or https:// URL",
        ),
        (
            "[api]\nregister_attempts = 0\n",
            "api.register_attempts: must be greater than zero",
        ),
        (
            "[api]\ntimeout_secs = \"ten\"\n",
            "api.timeout_secs: \"ten\" is not a whole number",
        ),
        (
            "request_timeout_secs = 0\n",
            "server.request_timeout_secs: must be greater than zero",
        ),
        (
            "max_body_bytes = -1\n",
            "server.max_body_bytes: -1 is negative",
        ),
        (
            "[storage]\nmax_batch = 10001\n",
            "storage.max_batch: must be between 1 and 10000",
        ),
        (
            "[storage]\nqueue_capacity = 0\n",
            "storage.queue_capacity: must be greater than zero",
        ),
        (
            "[storage]\ndedup_window_days = 0\n",
            "storage.dedup_window_days: must be between 1 and 3650",
        ),
        (
            "[storage]\nurl = \"sqlite::memory:\"\n",
            "storage.url: \"sqlite::memory:\" is not supported; use \"sqlite://PATH\" with a \
             file path",
        ),
        (
            "[storage]\nurl = \"mysql://u:hunter2@db/voltd\"\n",
            "storage.url: \"mysql://u:redacted@db/voltd\" is not supported",
        ),
        (
            "[log]\nlevel = \"inof\"\n",
            "log.level: \"inof\" is not a log level; use error, warn, info, debug or trace",
        ),
        (
            "[admin]\nenabled = \"maybe\"\n",
            "admin.enabled: expected a boolean, found string \"maybe\"",
        ),
        (
            "[api]\nurl = [1]\n",
            "api.url: expected a string, found sequence",
        ),
    ] {
        let err = error(&format!("{MINIMAL}{text}"), &[]);
        assert!(err.starts_with(expected), "{text}: {err}");
        assert!(
            !err.contains("remove or correct"),
            "the key is right: {err}"
        );
    }
}

#[test]
fn public_url_is_required_and_checked() {
    for text in ["", "[server]\nlisten = \"127.0.0.1:1\"\n"] {
        let err = error(text, &[]);
        assert!(err.starts_with("server.public_url: is required"), "{err}");
    }
    let err = error("[server]\npublic_url = \"/relative\"\n", &[]);
    assert!(
        err.starts_with("server.public_url: \"/relative\" is not a URL"),
        "{err}"
    );
    let from_env = load("", &[("VOLT_SERVER__PUBLIC_URL", "https://x.example/a")]).unwrap();
    assert_eq!(from_env.server.webhook_path(), "/a");
}

#[test]
fn the_packaged_placeholders_in_public_url_are_refused_until_both_are_replaced() {
    let with = |url: &str| error(&format!("[server]\npublic_url = \"{url}\"\n"), &[]);
    let err = with("https://hooks.your-domain.example/volt/CHANGE-ME");
    assert!(err.starts_with("server.public_url: "), "{err}");
    assert!(
        err.contains("host hooks.your-domain.example and path segment CHANGE-ME"),
        "{err}"
    );
    assert!(err.contains("openssl rand -hex 16"), "{err}");
    let err = with("https://hooks.mycompany.com/volt/CHANGE-ME");
    assert!(err.contains("its path segment CHANGE-ME;"), "{err}");
    let err = with("https://hooks.your-domain.example/volt/9f8e7d6c5b4a39281706");
    assert!(err.contains("its host hooks.your-domain.example;"), "{err}");
    // The same rule whichever layer set the URL.
    let from_env = [(
        "VOLT_SERVER__PUBLIC_URL",
        "https://hooks.mycompany.com/CHANGE-ME/x",
    )];
    assert!(error("", &from_env).contains("CHANGE-ME"));
    // Only the whole segment is the placeholder: the repository's quick-start URL is not.
    load(
        "[server]\npublic_url = \"http://127.0.0.1:8080/volt/change-me-4f1c9a7e2b6d8035\"\n",
        &[],
    )
    .unwrap();
}

#[test]
fn a_syntax_error_names_the_line() {
    let err = error("[server]\npublic_url = \n", &[]);
    assert!(
        err.starts_with("volt.toml is not valid TOML: line 2, column 14: "),
        "{err}"
    );
}

#[test]
fn a_syntax_error_never_shows_a_secret() {
    const SECRET: &str = "s3cret-Vq81";
    for text in [
        format!("{MINIMAL}[api]\ntoken = \"{SECRET}\n"),
        format!("{MINIMAL}[api]\ntoken = {SECRET}\n"),
        format!("{MINIMAL}[api]\ntoken = \"{SECRET}\" x\n"),
        format!("{MINIMAL}[api]\ntoken = \"\\q{SECRET}\"\n"),
        format!("{MINIMAL}[api]\ntoken = \"\"\"{SECRET}\n"),
        format!("[[forward]]\nheaders = {{ Authorization = \"Bearer {SECRET}\" \n"),
        format!("[storage]\nurl = \"postgres://u:{SECRET}@db/v\" = 1\n"),
    ] {
        let err = error(&text, &[]);
        assert!(err.contains("is not valid TOML: line "), "{err}");
        assert!(!err.contains(SECRET), "{err}");
    }
}

#[test]
fn a_secret_of_the_wrong_type_is_not_shown() {
    let err = error(
        "[[forward]]\nname = \"a\"\ntype = \"http\"\nurl = \"http://x/\"\n\
         headers = \"Bearer s3cret-Vq81\"\n",
        &[],
    );
    assert_eq!(
        err,
        "forward[0].headers: invalid type: string, expected a map"
    );
    let err = error(
        "[[forward]]\nname = \"a\"\ntype = \"http\"\nurl = \"ftp://u:s3cret-Vq81@x/\"\n",
        &[],
    );
    assert!(
        err.starts_with("forward[0]: sink \"a\": url \"ftp://u:redacted@x/\""),
        "{err}"
    );
    let err = error(&format!("{MINIMAL}[api]\ntimeout_secs = \"4711x\"\n"), &[]);
    assert!(err.contains("4711"), "other values are shown: {err}");
}

#[test]
fn token_and_token_file_are_not_both_set() {
    let err = error(
        &format!("{MINIMAL}[api]\ntoken = \"a\"\ntoken_file = \"b\"\n"),
        &[],
    );
    assert_eq!(
        err,
        "api.token: set either api.token or api.token_file, not both"
    );
}

#[test]
fn a_token_with_a_line_break_is_refused() {
    let err = error(MINIMAL, &[("VOLT_API__TOKEN", "line1\nline2")]);
    assert!(err.contains("line break"), "{err}");
    let s = load(MINIMAL, &[("VOLT_API__TOKEN", " tok \n")]).unwrap();
    assert_eq!(s.api.token.unwrap().expose_secret(), "tok");
    let s = load(MINIMAL, &[("VOLT_API__TOKEN", "")]).unwrap();
    assert!(s.api.token.is_none());
}

#[test]
fn always_needs_a_token_or_a_token_file() {
    let always = format!("{MINIMAL}[api]\nregister = \"always\"\n");
    assert!(error(&always, &[]).starts_with("api.register: is \"always\" but no token"));
    assert!(load(&always, &[("VOLT_API__TOKEN", "t")]).is_ok());
    let from_file = load(&always, &[("VOLT_API__TOKEN_FILE", "volt-token")]).unwrap();
    assert!(from_file.api.should_register());
}

#[test]
fn tls_needs_both_files() {
    let err = error(&format!("{MINIMAL}tls_cert = \"c.pem\"\n"), &[]);
    assert!(err.starts_with("server.tls_cert: set both"), "{err}");
    let s = load(
        &format!("{MINIMAL}tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"),
        &[],
    )
    .unwrap();
    let tls = s.server.tls().unwrap();
    assert_eq!(
        (tls.cert, tls.key),
        (Path::new("c.pem"), Path::new("k.pem"))
    );
}

#[test]
fn verify_modes_follow_the_key_file() {
    let err = error(&format!("{MINIMAL}[verify]\nmode = \"enforce\"\n"), &[]);
    assert!(
        err.starts_with("verify.mode: needs verify.public_key_file"),
        "{err}"
    );
    let with_key = format!("{MINIMAL}[verify]\npublic_key_file = \"volt.pub\"\n");
    let s = load(&with_key, &[]).unwrap();
    assert_eq!(s.verify.effective_mode(), VerifyMode::Log);
    let s = load(&with_key, &[("VOLT_VERIFY__MODE", "off")]).unwrap();
    assert_eq!(s.verify.effective_mode(), VerifyMode::Off);
}

#[test]
fn an_explicit_admin_listen_is_required_to_bind() {
    let s = load(
        &format!("{MINIMAL}[admin]\nlisten = \"127.0.0.1:9191\"\n"),
        &[],
    )
    .unwrap();
    assert_eq!(s.admin.address().unwrap().port(), 9191);
    assert!(s.admin.is_explicit());
}

#[test]
fn an_inbox_beyond_loopback_needs_a_password() {
    let public = format!("{MINIMAL}[admin]\nlisten = \"0.0.0.0:9090\"\n");
    let refused = error(&public, &[]);
    assert!(refused.starts_with("admin.ui_password_file: "), "{refused}");
    let with_password = format!("{public}ui_password_file = \"ui-password\"\n");
    assert!(load(&with_password, &[]).unwrap().admin.ui_needs_password());
    let metrics_only = format!("{public}ui = false\n");
    assert!(!load(&metrics_only, &[]).unwrap().admin.ui_needs_password());
    let s = load(MINIMAL, &[]).unwrap();
    assert!(s.admin.serves_ui() && !s.admin.ui_needs_password() && !s.admin.ui_actions);
}

#[test]
fn secret_segment_detection() {
    assert!(has_secret_segment("/volt/9f8e7d6c5b4a39281706"));
    assert!(!has_secret_segment("/webhook"));
    assert!(!has_secret_segment("/volt/aaaaaaaaaaaaaaaaaaaa"));
}

#[test]
fn warnings_cover_plain_http_guessable_paths_and_loopback() {
    let s = load(
        "[server]\npublic_url = \"http://hooks.example.com/change-me\"\n",
        &[],
    )
    .unwrap();
    let warnings = s.warnings().join("\n");
    for expected in ["plain http", "no long random path segment", "change-me"] {
        assert!(warnings.contains(expected), "{expected}: {warnings}");
    }
    let s = load(
        "[server]\npublic_url = \"http://127.0.0.1/volt/a1b2c3d4e5f6a7b8c9\"\n",
        &[("VOLT_API__TOKEN", "t")],
    )
    .unwrap();
    assert_eq!(s.warnings().len(), 1, "{:?}", s.warnings());
    assert!(s.warnings()[0].contains("loopback"));
}
