//! Configuration: built-in defaults, then `volt.toml`, then `VOLT_*` environment variables.
//!
//! Everything is validated once, right after loading, so the rest of the daemon can rely on
//! typed, consistent values and never has to fail on configuration later.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use url::Url;

mod forward;
mod storage;

pub use forward::{
    ForwardSettings, RawForward, RetrySettings, SinkFilter, Target, origin, url_without_secrets,
};
pub use storage::{Backend, redacted_url};

use crate::volt::signature::VoltPublicKey;

/// Where the configuration file is looked for when `--config` is not given.
pub const CONFIG_ENV: &str = "VOLTD_CONFIG";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Bounded so the duplicate lookup of a batch stays within SQLite's bind-parameter limit.
const MAX_BATCH_LIMIT: usize = 10_000;
const DEFAULT_PATHS: [&str; 2] = ["./volt.toml", "/etc/voltd/volt.toml"];
const ENV_PREFIX: &str = "VOLT";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no configuration file found (tried {tried}); pass --config PATH, set {CONFIG_ENV}, \
         or copy the example volt.toml to one of those paths"
    )]
    NotFound { tried: String },
    #[error("configuration file {path} does not exist; check the --config / {CONFIG_ENV} value")]
    Missing { path: PathBuf },
    #[error("{path} is a directory; --config / {CONFIG_ENV} names the file, e.g. {path}/volt.toml")]
    Directory { path: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Value { key: &'static str, message: String },
}

/// Whether loading reads the API token file. Commands that never call Volt (listing events,
/// migrations) skip it, so an operator can inspect the store without access to the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Read,
    Skip,
}

/// When to call Volt's `registerWebhook` at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterMode {
    /// Register when a token is configured, otherwise only receive.
    Auto,
    /// A token is required; without one the daemon refuses to start.
    Always,
    /// Never register (the URL is managed in Volt's portal).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The file/environment shape, before validation. Every section rejects unknown keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    api: RawApi,
    server: RawServer,
    storage: RawStorage,
    admin: RawAdmin,
    verify: RawVerify,
    log: RawLog,
    #[serde(default)]
    forward: Vec<forward::RawForward>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    url: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
    register: String,
    timeout_secs: u64,
    register_attempts: u32,
    retry_initial_ms: u64,
    retry_max_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    public_url: Option<String>,
    max_body_bytes: usize,
    shutdown_timeout_secs: u64,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    allow_ips: Vec<String>,
    trusted_proxies: Vec<String>,
    request_timeout_secs: u64,
    max_connections: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: String,
    queue_capacity: usize,
    max_batch: usize,
    retention_days: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    enabled: bool,
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    mode: Option<String>,
    public_key_file: Option<PathBuf>,
}

/// What to do with Volt's `X-Respond-Flow-Signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Not checked; stored as "unchecked".
    Off,
    /// Checked and recorded with the event; invalid or missing signatures are still stored.
    Log,
    /// Checked; an invalid or missing signature gets 401 and is not stored.
    Enforce,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: String,
    format: String,
}

const DEFAULTS: &str = r#"
[api]
url = "https://api.respondflow.com/graphql"
register = "auto"
timeout_secs = 10
register_attempts = 10
retry_initial_ms = 500
retry_max_secs = 60

[server]
listen = "127.0.0.1:8080"
max_body_bytes = 1048576
shutdown_timeout_secs = 30
allow_ips = []
trusted_proxies = []
request_timeout_secs = 10
max_connections = 10000

[storage]
url = "sqlite://voltd.db"
queue_capacity = 8192
max_batch = 512
retention_days = 0

[admin]
enabled = true

[verify]

[log]
level = "info"
format = "text"
"#;

/// Validated settings. Construct with [`Settings::load`] or [`Settings::from_toml`].
#[derive(Clone)]
pub struct Settings {
    pub source: PathBuf,
    pub api: ApiSettings,
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub admin: AdminSettings,
    pub verify: VerifySettings,
    pub log: LogSettings,
    /// `[[forward]]` sinks stored events are delivered to.
    pub forward: Vec<ForwardSettings>,
}

#[derive(Clone)]
pub struct ApiSettings {
    pub url: Url,
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    pub register: RegisterMode,
    pub timeout: Duration,
    pub register_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    pub tls: Option<TlsFiles>,
    /// Client networks allowed to post; empty allows everyone.
    pub allow_ips: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// A request's head and body must both arrive within this.
    pub request_timeout: Duration,
    pub max_connections: usize,
}

/// PEM files for TLS on the public listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub url: String,
    pub queue_capacity: usize,
    pub max_batch: usize,
    /// Events older than this are deleted; `None` keeps everything.
    pub retention: Option<Duration>,
}

/// Signature verification of incoming events.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    pub mode: VerifyMode,
    pub public_key_file: Option<PathBuf>,
    /// Loaded and checked at start-up; present whenever `mode` is not `Off`.
    pub key: Option<Arc<VoltPublicKey>>,
}

/// The admin listener (health and metrics), separate from the public webhook listener.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `None` when disabled.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` was set explicitly: only then is failing to bind it fatal, so that a
    /// second instance on one machine still receives events without its own admin port.
    pub explicit: bool,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

impl ApiSettings {
    /// Whether start-up should call `registerWebhook`.
    pub fn should_register(&self) -> bool {
        match self.register {
            RegisterMode::Never => false,
            RegisterMode::Always => true,
            RegisterMode::Auto => self.token.is_some(),
        }
    }
}

impl ServerSettings {
    /// The route served: the path of `public_url`.
    pub fn webhook_path(&self) -> &str {
        self.public_url.path()
    }
}

impl Settings {
    /// Find the configuration file (explicit path, `$VOLTD_CONFIG`, `./volt.toml`,
    /// `/etc/voltd/volt.toml`), then load it with the environment on top.
    pub fn load(explicit: Option<&Path>, secrets: Secrets) -> Result<Self, ConfigError> {
        let path = locate(explicit)?;
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&path, &text, std::env::vars(), secrets)
    }

    /// Build settings from TOML text and an explicit environment (testable without touching
    /// the process environment).
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::parse(path, text, env, Secrets::Read)
    }

    fn parse(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        secrets: Secrets,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("VOLT_"))
            .collect();
        let env_keys: Vec<String> = env.keys().cloned().collect();
        let raw: RawSettings = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("server.allow_ips")
                    .with_list_parse_key("server.trusted_proxies")
                    .source(Some(env)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| invalid(describe_config_error(e, &env_keys)))?;
        if let Some((key, number)) = fractional_number(text) {
            return Err(invalid(format!(
                "{key}: {number} is not a whole number; every number in volt.toml is one"
            )));
        }
        Self::validate(path, raw, secrets)
    }

    fn validate(path: &Path, raw: RawSettings, secrets: Secrets) -> Result<Self, ConfigError> {
        let api_url = parse_http_url("api.url", &raw.api.url)?;
        let token = match (raw.api.token, &raw.api.token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Value {
                    key: "api.token",
                    message: "set either api.token or api.token_file, not both".into(),
                });
            }
            (Some(token), None) => Some(token),
            (None, Some(file)) if secrets == Secrets::Read => {
                let token = read_token_file(file)?;
                if token.trim().is_empty() {
                    return Err(ConfigError::Value {
                        key: "api.token_file",
                        message: format!(
                            "{} is empty; put the Volt API token in it",
                            file.display()
                        ),
                    });
                }
                Some(token)
            }
            (None, Some(_)) => None,
            (None, None) => None,
        };
        let token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        if token
            .as_deref()
            .is_some_and(|t| t.chars().any(char::is_control))
        {
            return Err(ConfigError::Value {
                key: "api.token",
                message: "contains a line break or another control character; the token is one \
                          line (check api.token / api.token_file / VOLT_API__TOKEN)"
                    .into(),
            });
        }
        let token = token.map(SecretString::from);
        let register = parse_choice(
            "api.register",
            &raw.api.register,
            &[
                ("auto", RegisterMode::Auto),
                ("always", RegisterMode::Always),
                ("never", RegisterMode::Never),
            ],
        )?;
        let log_format = parse_choice(
            "log.format",
            &raw.log.format,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )?;
        if register == RegisterMode::Always && token.is_none() && secrets == Secrets::Read {
            return Err(ConfigError::Value {
                key: "api.register",
                message: "is \"always\" but no token is configured; set api.token_file \
                          (or VOLT_API__TOKEN), or use register = \"auto\""
                    .into(),
            });
        }
        if raw.api.timeout_secs == 0 {
            return Err(positive("api.timeout_secs"));
        }
        if raw.api.register_attempts == 0 {
            return Err(positive("api.register_attempts"));
        }
        let listen = parse_socket_addr("server.listen", &raw.server.listen)?;
        let tls = match (raw.server.tls_cert, raw.server.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Value {
                    key: "server.tls_cert",
                    message: "set both server.tls_cert and server.tls_key (PEM files), or neither"
                        .into(),
                });
            }
        };
        let public_url = raw.server.public_url.ok_or(ConfigError::Value {
            key: "server.public_url",
            message: "is required: the URL Volt will POST events to, such as \
                      \"https://hooks.example.com/volt/<long random string>\""
                .into(),
        })?;
        let public_url = parse_http_url("server.public_url", &public_url)?;
        let allow_ips = parse_networks("server.allow_ips", &raw.server.allow_ips)?;
        let trusted_proxies =
            parse_networks("server.trusted_proxies", &raw.server.trusted_proxies)?;
        if raw.server.request_timeout_secs == 0 {
            return Err(positive("server.request_timeout_secs"));
        }
        if raw.server.max_connections == 0 {
            return Err(positive("server.max_connections"));
        }
        if raw.server.max_body_bytes == 0 {
            return Err(positive("server.max_body_bytes"));
        }
        if raw.storage.queue_capacity == 0 {
            return Err(positive("storage.queue_capacity"));
        }
        if raw.storage.max_batch == 0 || raw.storage.max_batch > MAX_BATCH_LIMIT {
            return Err(ConfigError::Value {
                key: "storage.max_batch",
                message: format!("must be between 1 and {MAX_BATCH_LIMIT}"),
            });
        }
        let verify = validate_verify(raw.verify)?;
        let admin_listen = match (&raw.admin.listen, raw.admin.enabled) {
            (_, false) => None,
            (listen, true) => {
                let text = listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
                Some(parse_socket_addr("admin.listen", text)?)
            }
        };
        match Backend::of_url(&raw.storage.url) {
            Some(Backend::Sqlite) if is_durable_sqlite_url(&raw.storage.url) => {}
            Some(Backend::Postgres) => check_postgres_url(&raw.storage.url)?,
            _ => {
                return Err(ConfigError::Value {
                    key: "storage.url",
                    message: format!(
                        "{:?} is not supported; use \"sqlite://PATH\" with a file path, such as \
                         \"sqlite:///var/lib/voltd/voltd.db\" (an in-memory database would lose \
                         every event), or \"postgres://USER@HOST/DATABASE\" for a store shared \
                         by several instances",
                        redacted_url(&raw.storage.url)
                    ),
                });
            }
        }
        if !is_log_filter(&raw.log.level) {
            return Err(ConfigError::Value {
                key: "log.level",
                message: format!(
                    "{:?} is not a log level; use error, warn, info, debug or trace",
                    raw.log.level
                ),
            });
        }
        let forward = forward::validate(raw.forward)?;
        Ok(Self {
            source: path.to_path_buf(),
            api: ApiSettings {
                url: api_url,
                token,
                token_file: raw.api.token_file,
                register,
                timeout: Duration::from_secs(raw.api.timeout_secs),
                register_attempts: raw.api.register_attempts,
                retry_initial: Duration::from_millis(raw.api.retry_initial_ms),
                retry_max: Duration::from_secs(raw.api.retry_max_secs),
            },
            server: ServerSettings {
                listen,
                public_url,
                max_body_bytes: raw.server.max_body_bytes,
                shutdown_timeout: Duration::from_secs(raw.server.shutdown_timeout_secs),
                tls,
                allow_ips,
                trusted_proxies,
                request_timeout: Duration::from_secs(raw.server.request_timeout_secs),
                max_connections: raw.server.max_connections,
            },
            storage: StorageSettings {
                url: raw.storage.url,
                queue_capacity: raw.storage.queue_capacity,
                max_batch: raw.storage.max_batch,
                retention: (raw.storage.retention_days > 0)
                    .then(|| Duration::from_secs(u64::from(raw.storage.retention_days) * 86_400)),
            },
            verify,
            admin: AdminSettings {
                listen: admin_listen,
                explicit: raw.admin.listen.is_some(),
            },
            log: LogSettings {
                level: raw.log.level,
                format: log_format,
            },
            forward,
        })
    }

    /// Advice that does not stop the daemon: `check-config` prints it, `run` logs it.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let url = &self.server.public_url;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if url.scheme() == "http" && !loopback {
            warnings.push(format!(
                "server.public_url {url} uses plain http to a non-loopback host: events (and the \
                 secret path) cross the network unencrypted; put voltd behind a TLS reverse proxy \
                 and use an https URL"
            ));
        }
        if !has_secret_segment(url.path()) {
            warnings.push(
                "server.public_url has no long random path segment; anyone who guesses the path \
                 can post events. Add one, e.g. /volt/$(openssl rand -hex 16)"
                    .to_owned(),
            );
        }
        if url.path().contains("change-me") {
            warnings.push(
                "server.public_url still has the example path segment \"change-me-...\"; \
                 replace it with your own random string (openssl rand -hex 16)"
                    .to_owned(),
            );
        }
        if loopback && self.api.should_register() {
            warnings.push(format!(
                "server.public_url {url} points at this machine's loopback address; Volt cannot \
                 reach it, so registration will fail"
            ));
        }
        warnings
    }
}

/// `info`, or a filter such as `info,voltd=debug,sqlx=warn`: a bare word must be a level (a
/// typo such as "inof" would otherwise be read as a target name and silence all logging).
fn is_log_filter(value: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |word: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word.trim()));
    !value.trim().is_empty()
        && value.parse::<tracing_subscriber::EnvFilter>().is_ok()
        && value
            .split(',')
            .all(|directive| match directive.split_once('=') {
                Some((target, level)) => !target.trim().is_empty() && is_level(level),
                None => is_level(directive),
            })
}

/// A PostgreSQL URL that the driver accepts whole: a typo in a parameter (`sslmode=requre`)
/// or a password with unencoded `#`, `/` or `?` is a configuration error, not a failure to
/// connect on every restart.
fn check_postgres_url(url: &str) -> Result<(), ConfigError> {
    let invalid = |problem: String| ConfigError::Value {
        key: "storage.url",
        message: format!(
            "{:?} is not a valid PostgreSQL URL ({problem}); the form is \
             \"postgres://USER@HOST:PORT/DATABASE?PARAMETER=VALUE\". Percent-encode special \
             characters in the user or password (# as %23, / as %2F, ? as %3F, @ as %40), or \
             leave the password out and set PGPASSWORD",
            redacted_url(url)
        ),
    };
    let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if parsed.fragment().is_some() {
        return Err(invalid("it contains '#'".into()));
    }
    sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(|e| invalid(e.to_string().replace("error with configuration: ", "")))?;
    Ok(())
}

/// A file path: an in-memory or path-less database would lose every event on exit.
fn is_durable_sqlite_url(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    !path.is_empty() && !path.contains(":memory:") && !url.contains("mode=memory")
}

/// One of a fixed set of words, case-insensitively, with an error that lists them.
fn parse_choice<T: Copy>(
    key: &'static str,
    value: &str,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value.trim()))
        .map(|(_, choice)| *choice)
        .ok_or_else(|| ConfigError::Value {
            key,
            message: format!(
                "{value:?} is not one of {}",
                choices
                    .iter()
                    .map(|(name, _)| format!("\"{name}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// A segment of at least 16 characters mixing letters and digits counts as a secret.
fn has_secret_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        segment.len() >= 16
            && segment.chars().any(|c| c.is_ascii_digit())
            && segment.chars().any(|c| c.is_ascii_alphabetic())
    })
}

fn positive(key: &'static str) -> ConfigError {
    ConfigError::Value {
        key,
        message: "must be greater than zero".into(),
    }
}

fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let named = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = named {
        return if path.is_file() {
            Ok(path)
        } else if path.is_dir() {
            Err(ConfigError::Directory { path })
        } else {
            Err(ConfigError::Missing { path })
        };
    }
    let mut candidates = Vec::new();
    for candidate in DEFAULT_PATHS {
        let path = PathBuf::from(candidate);
        if path.is_file() {
            return Ok(path);
        }
        candidates.push(candidate);
    }
    Err(ConfigError::NotFound {
        tried: candidates.join(", "),
    })
}

fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    // systemd's LoadCredential= places files under $CREDENTIALS_DIRECTORY; a relative
    // token_file is resolved there first so the unit can name just the credential.
    let resolved = match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if path.is_relative() => PathBuf::from(dir).join(path),
        _ => path.to_path_buf(),
    };
    std::fs::read_to_string(&resolved).map_err(|e| ConfigError::Value {
        key: "api.token_file",
        message: format!(
            "cannot read {}: {e}; check the path and that the voltd user may read it",
            resolved.display()
        ),
    })
}

fn parse_socket_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Value {
        key,
        message: format!(
            "{value:?} is not a socket address; use IP:PORT such as \"127.0.0.1:8080\" or \"[::]:8080\""
        ),
    })
}

/// The mode defaults to "log" once a key is configured, so adding a key never starts
/// rejecting events by surprise.
fn validate_verify(raw: RawVerify) -> Result<VerifySettings, ConfigError> {
    let key = match &raw.public_key_file {
        Some(path) => Some(Arc::new(VoltPublicKey::from_file(path).map_err(|e| {
            ConfigError::Value {
                key: "verify.public_key_file",
                message: e.to_string(),
            }
        })?)),
        None => None,
    };
    let mode = raw
        .mode
        .map(|mode| {
            parse_choice(
                "verify.mode",
                &mode,
                &[
                    ("off", VerifyMode::Off),
                    ("log", VerifyMode::Log),
                    ("enforce", VerifyMode::Enforce),
                ],
            )
        })
        .transpose()?;
    let mode = mode.unwrap_or(if key.is_some() {
        VerifyMode::Log
    } else {
        VerifyMode::Off
    });
    if mode != VerifyMode::Off && key.is_none() {
        return Err(ConfigError::Value {
            key: "verify.mode",
            message: "needs verify.public_key_file: Volt's public key (id_rsa.pub, or PEM)".into(),
        });
    }
    Ok(VerifySettings {
        mode,
        public_key_file: raw.public_key_file,
        key: key.filter(|_| mode != VerifyMode::Off),
    })
}

/// CIDR networks; a bare address means just that address.
/// Empty entries are skipped, so that an empty `VOLT_*` variable clears the list.
fn parse_networks(key: &'static str, values: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    values
        .iter()
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
        .map(|value| {
            value
                .parse::<IpNet>()
                .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| ConfigError::Value {
                    key,
                    message: format!(
                        "{value:?} is not an IP network; use CIDR such as \"203.0.113.0/24\" or an address"
                    ),
                })
        })
        .collect()
}

fn parse_http_url(key: &'static str, value: &str) -> Result<Url, ConfigError> {
    let bad = |why: &str| ConfigError::Value {
        key,
        message: format!("{value:?} {why}; use an absolute http:// or https:// URL"),
    };
    let url = Url::parse(value).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("is not an http(s) URL with a host"));
    }
    Ok(url)
}

/// The config crate names the offending key in its own words; keep them, they are precise.
/// The config crate names the offending key; say whether it came from the environment, and
/// what to do about it.
/// The first number with a fraction in the file, with its key. voltd has no such settings,
/// and reading `timeout_secs = 1.5` as a whole number would silently round it.
fn fractional_number(text: &str) -> Option<(String, f64)> {
    fn find(key: &str, value: &config::Value) -> Option<(String, f64)> {
        match &value.kind {
            config::ValueKind::Float(number) => Some((key.to_owned(), *number)),
            config::ValueKind::Table(table) => table.iter().find_map(|(name, value)| {
                find(
                    &format!("{key}{}{name}", if key.is_empty() { "" } else { "." }),
                    value,
                )
            }),
            config::ValueKind::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, value)| find(&format!("{key}[{i}]"), value)),
            _ => None,
        }
    }
    let file = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .ok()?;
    let root: std::collections::BTreeMap<String, config::Value> = file.try_deserialize().ok()?;
    root.iter().find_map(|(name, value)| find(name, value))
}

fn describe_config_error(e: config::ConfigError, env_keys: &[String]) -> String {
    let text = e.to_string();
    let Some(field) = text
        .split("unknown field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
    else {
        return text;
    };
    let from_env = env_keys.iter().find(|key| {
        key.to_ascii_lowercase()
            .trim_start_matches("volt_")
            .ends_with(field)
    });
    match from_env {
        Some(variable) => format!(
            "unknown key `{field}` from the environment variable {variable}; variables are \
             VOLT_<SECTION>__<KEY> with two underscores, e.g. VOLT_SERVER__LISTEN (see the \
             example volt.toml for the keys)"
        ),
        None => format!("{text}; remove or correct that key (see the example volt.toml)"),
    }
}

/// The effective configuration as TOML, with the token redacted.
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = match &self.api.token {
            Some(t) if !t.expose_secret().is_empty() => "\"[redacted]\"",
            _ => "(none)",
        };
        writeln!(f, "# from {}", self.source.display())?;
        writeln!(f, "[api]")?;
        writeln!(f, "url = {:?}", self.api.url.as_str())?;
        writeln!(f, "token = {token}")?;
        if let Some(file) = &self.api.token_file {
            writeln!(f, "token_file = {:?}", file.display().to_string())?;
        }
        writeln!(f, "register = {:?}", mode_name(self.api.register))?;
        writeln!(f, "timeout_secs = {}", self.api.timeout.as_secs())?;
        writeln!(f, "register_attempts = {}", self.api.register_attempts)?;
        writeln!(
            f,
            "retry_initial_ms = {}",
            self.api.retry_initial.as_millis()
        )?;
        writeln!(f, "retry_max_secs = {}", self.api.retry_max.as_secs())?;
        writeln!(f, "\n[server]")?;
        writeln!(f, "listen = \"{}\"", self.server.listen)?;
        writeln!(f, "public_url = {:?}", self.server.public_url.as_str())?;
        writeln!(f, "max_body_bytes = {}", self.server.max_body_bytes)?;
        writeln!(
            f,
            "shutdown_timeout_secs = {}",
            self.server.shutdown_timeout.as_secs()
        )?;
        let list = |nets: &[IpNet]| {
            let items: Vec<String> = nets.iter().map(|n| format!("\"{n}\"")).collect();
            format!("[{}]", items.join(", "))
        };
        writeln!(f, "allow_ips = {}", list(&self.server.allow_ips))?;
        writeln!(
            f,
            "trusted_proxies = {}",
            list(&self.server.trusted_proxies)
        )?;
        writeln!(
            f,
            "request_timeout_secs = {}",
            self.server.request_timeout.as_secs()
        )?;
        writeln!(f, "max_connections = {}", self.server.max_connections)?;
        if let Some(tls) = &self.server.tls {
            writeln!(f, "tls_cert = {:?}", tls.cert.display().to_string())?;
            writeln!(f, "tls_key = {:?}", tls.key.display().to_string())?;
        }
        writeln!(f, "\n[storage]")?;
        writeln!(f, "url = {:?}", redacted_url(&self.storage.url))?;
        writeln!(f, "queue_capacity = {}", self.storage.queue_capacity)?;
        writeln!(f, "max_batch = {}", self.storage.max_batch)?;
        writeln!(
            f,
            "retention_days = {}",
            self.storage.retention.map_or(0, |d| d.as_secs() / 86_400)
        )?;
        writeln!(f, "\n[verify]")?;
        writeln!(
            f,
            "mode = {:?}",
            match self.verify.mode {
                VerifyMode::Off => "off",
                VerifyMode::Log => "log",
                VerifyMode::Enforce => "enforce",
            }
        )?;
        if let Some(path) = &self.verify.public_key_file {
            writeln!(f, "public_key_file = {:?}", path.display().to_string())?;
        }
        writeln!(f, "\n[admin]")?;
        writeln!(f, "enabled = {}", self.admin.listen.is_some())?;
        if let Some(listen) = self.admin.listen {
            writeln!(f, "listen = \"{listen}\"")?;
        }
        writeln!(f, "\n[log]")?;
        writeln!(f, "level = {:?}", self.log.level)?;
        write!(
            f,
            "format = {:?}",
            match self.log.format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
        )?;
        write!(f, "{}", forward::display(&self.forward))
    }
}

impl fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSettings")
            .field("url", &self.url.as_str())
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("register", &self.register)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn mode_name(mode: RegisterMode) -> &'static str {
    match mode {
        RegisterMode::Auto => "auto",
        RegisterMode::Always => "always",
        RegisterMode::Never => "never",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[server]\npublic_url = \"https://hooks.example.com/volt/a1b2c3d4e5f6a7b8c9\"\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::from_toml(Path::new("volt.toml"), text, env)
    }

    #[test]
    fn a_broken_postgres_url_is_a_configuration_error_without_its_password() {
        for url in [
            "postgres://postgres:pa#ss@127.0.0.1:5432/db",
            "postgres://u:secret@127.0.0.1:99999/db",
            "postgres://u:secret@127.0.0.1:abc/db",
            "postgres://u:secret@127.0.0.1/db?sslmode=bogus",
        ] {
            let text = format!("{MINIMAL}\n[storage]\nurl = {url:?}\n");
            let error = load(&text, &[]).err().unwrap().to_string();
            assert!(error.contains("storage.url"), "{url}: {error}");
            assert!(
                error.contains("not a valid PostgreSQL URL"),
                "{url}: {error}"
            );
            assert!(
                !error.contains("secret") && !error.contains("pa#ss"),
                "{error}"
            );
        }
        let text =
            format!("{MINIMAL}\n[storage]\nurl = \"postgres://u@db/voltd?sslmode=require\"\n");
        assert!(load(&text, &[]).is_ok());
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
    fn a_number_with_a_fraction_is_refused_not_rounded() {
        for (section, key) in [("api", "timeout_secs"), ("storage", "retention_days")] {
            let text = format!("{MINIMAL}\n[{section}]\n{key} = 1.5\n");
            let error = load(&text, &[]).err().unwrap().to_string();
            assert!(
                error.contains(&format!("{section}.{key}: 1.5 is not a whole number")),
                "{error}"
            );
        }
        let forward = format!(
            "{MINIMAL}\n[[forward]]\nname = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\n\
             timeout_secs = 2.5\n"
        );
        let error = load(&forward, &[]).err().unwrap().to_string();
        assert!(error.contains("forward[0].timeout_secs: 2.5"), "{error}");
        assert!(load(&format!("{MINIMAL}\n[api]\ntimeout_secs = 2\n"), &[]).is_ok());
    }

    #[test]
    fn defaults_apply_under_a_minimal_file() {
        let s = load(MINIMAL, &[]).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.api.register, RegisterMode::Auto);
        assert!(!s.api.should_register());
        assert_eq!(s.server.webhook_path(), "/volt/a1b2c3d4e5f6a7b8c9");
        assert_eq!(s.storage.url, "sqlite://voltd.db");
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = load(
            MINIMAL,
            &[
                ("VOLT_API__TOKEN", "tok-123"),
                ("VOLT_SERVER__LISTEN", "0.0.0.0:9999"),
            ],
        )
        .unwrap();
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:9999");
        assert!(s.api.should_register());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(&format!("{MINIMAL}colour = \"blue\"\n"), &[])
            .err()
            .unwrap();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = load("[server]\npublic_url = \n", &[]).err().unwrap();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn always_without_token_is_refused() {
        let err = load(&format!("{MINIMAL}[api]\nregister = \"always\"\n"), &[])
            .err()
            .unwrap();
        assert!(err.to_string().contains("api.register"), "{err}");
    }

    #[test]
    fn display_redacts_the_token() {
        let s = load(MINIMAL, &[("VOLT_API__TOKEN", "very-secret-token")]).unwrap();
        let shown = format!("{s} {:?}", s.api);
        assert!(!shown.contains("very-secret-token"));
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn bad_values_are_explained() {
        for (text, key) in [
            (
                "[server]\npublic_url = \"ftp://x/y\"\n",
                "server.public_url",
            ),
            (
                "[server]\npublic_url = \"/relative\"\n",
                "server.public_url",
            ),
            (
                &format!("{MINIMAL}listen = \"localhost\"\n") as &str,
                "server.listen",
            ),
            ("[api]\nregister = \"sometimes\"\n", "register"),
        ] {
            let err = load(text, &[]).err().unwrap();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn networks_from_file_and_environment() {
        let s = load(
            &format!("{MINIMAL}allow_ips = [\"203.0.113.0/24\", \"::1\"]\n"),
            &[("VOLT_SERVER__TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")],
        )
        .unwrap();
        assert_eq!(s.server.allow_ips.len(), 2);
        assert_eq!(s.server.trusted_proxies.len(), 2);
        let err = load(&format!("{MINIMAL}allow_ips = [\"nope\"]\n"), &[])
            .err()
            .unwrap();
        assert!(err.to_string().contains("server.allow_ips"), "{err}");
    }

    #[test]
    fn choices_and_levels_are_checked_with_helpful_messages() {
        for (text, key, hint) in [
            (
                "[api]\nregister = \"sometimes\"\n",
                "api.register",
                "\"always\"",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format", "\"json\""),
            ("[log]\nlevel = \"inof\"\n", "log.level", "info"),
            (
                "[storage]\nurl = \"sqlite::memory:\"\n",
                "storage.url",
                "in-memory",
            ),
            (
                "[storage]\nurl = \"sqlite://\"\n",
                "storage.url",
                "file path",
            ),
        ] {
            let err = load(&format!("{MINIMAL}{text}"), &[])
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(key) && err.contains(hint), "{text}: {err}");
        }
        let s = load(
            &format!("{MINIMAL}[log]\nlevel = \"warn,voltd=debug\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(s.log.level, "warn,voltd=debug");
        let s = load(MINIMAL, &[("VOLT_API__REGISTER", "Never")]).unwrap();
        assert_eq!(s.api.register, RegisterMode::Never);
    }

    #[test]
    fn a_token_with_a_line_break_is_refused() {
        let err = load(MINIMAL, &[("VOLT_API__TOKEN", "line1\nline2")])
            .err()
            .unwrap();
        assert!(err.to_string().contains("line break"), "{err}");
    }

    #[test]
    fn unknown_environment_keys_name_the_variable() {
        let err = load(MINIMAL, &[("VOLT_SERVER__LISTNE", "x")])
            .err()
            .unwrap();
        assert!(err.to_string().contains("VOLT_SERVER__LISTNE"), "{err}");
        let err = load(MINIMAL, &[("VOLT_SERVER_LISTEN", "x")]).err().unwrap();
        assert!(err.to_string().contains("two underscores"), "{err}");
    }

    #[test]
    fn secret_segment_detection() {
        assert!(has_secret_segment("/volt/9f8e7d6c5b4a39281706"));
        assert!(!has_secret_segment("/webhook"));
        assert!(!has_secret_segment("/volt/aaaaaaaaaaaaaaaaaaaa"));
    }
}
