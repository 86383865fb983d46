//! Configuration: built-in defaults, then `volt.toml`, then `VOLT_*` environment variables,
//! deserialised straight into typed settings.
//!
//! Each kind of value is checked as it is read (`fields`), the rules between keys once after
//! (`Settings::validate`), so the rest of the daemon can rely on consistent values and never
//! fails on configuration later. Loading reads nothing but the file: the API token file and
//! Volt's public key are read by the parts that use them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

mod admin;
mod api;
mod fields;
mod forward;
mod log;
mod server;
mod show;
mod storage;
#[cfg(test)]
mod tests;
mod verify;

pub use admin::AdminSettings;
pub use api::{ApiSettings, RegisterMode};
pub use forward::{
    AmqpTarget, BrokerTls, ClientCertificate, CommandTarget, Direction, ForwardSettings,
    HttpTarget, NatsTarget, RedisTarget, RetrySettings, SinkFilter, SinkType, Target, origin,
    url_without_secrets,
};
pub use log::{LogFormat, LogLevel, LogSettings};
pub use server::{ServerSettings, TlsFiles};
pub use storage::{Backend, StorageSettings, redacted_url};
pub use verify::{VerifyMode, VerifySettings};

/// Where the configuration file is looked for when `--config` is not given.
pub const CONFIG_ENV: &str = "VOLTD_CONFIG";
const DEFAULT_PATHS: [&str; 2] = ["./volt.toml", "/etc/voltd/volt.toml"];
const ENV_PREFIX: &str = "VOLT_";
/// Said with every error in a `VOLT_*` variable: a single underscore between section and key
/// is the usual slip, and it reads as an unknown key.
const VARIABLE_FORM: &str = "variables are VOLT_<SECTION>__<KEY>, with two underscores between \
                             section and key, e.g. VOLT_SERVER__LISTEN";

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
    #[error("cannot read the configuration file {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file's text is not shown: the line could hold a secret.
    #[error("{path} is not valid TOML: line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The file and the `VOLT_*` variables, each valid, do not combine.
    #[error("cannot combine {path} with the VOLT_* variables; {VARIABLE_FORM}")]
    Layers {
        path: PathBuf,
        #[source]
        source: config::ConfigError,
    },
    /// A value in the file that cannot be read.
    #[error("{key}: {message}")]
    Value { key: String, message: String },
    /// A key in the file that does not exist.
    #[error("{key}: {message}; remove or correct that key (see the example volt.toml)")]
    UnknownKey { key: String, message: String },
    /// A `VOLT_*` variable whose value cannot be read.
    #[error("{variable} ({key}): {message}")]
    VariableValue {
        variable: String,
        key: String,
        message: String,
    },
    /// A `VOLT_*` variable that names no key.
    #[error("{variable} ({key}): {message}; {VARIABLE_FORM}")]
    UnknownVariable {
        variable: String,
        key: String,
        message: String,
    },
    /// Values that do not go together.
    #[error("{key}: {message}")]
    Conflict { key: String, message: String },
}

/// Validated settings. Construct with [`Settings::load`] or [`Settings::from_toml`].
///
/// Field order is the order `check-config` shows the sections in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The file the settings were read from.
    #[serde(skip)]
    pub source: PathBuf,
    #[serde(default)]
    pub api: ApiSettings,
    pub server: ServerSettings,
    #[serde(default)]
    pub storage: StorageSettings,
    #[serde(default)]
    pub verify: VerifySettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub log: LogSettings,
    /// `[[forward]]` sinks stored events are delivered to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<ForwardSettings>,
}

impl Settings {
    /// Find the configuration file (explicit path, `$VOLTD_CONFIG`, `./volt.toml`,
    /// `/etc/voltd/volt.toml`), then load it with the environment on top.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let path = locate(explicit)?;
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Unreadable {
            path: path.clone(),
            source,
        })?;
        Self::from_toml(&path, &text, std::env::vars())
    }

    /// Build settings from TOML text and an explicit environment (testable without touching
    /// the process environment).
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        let variables: Vec<String> = env.keys().cloned().collect();
        check_syntax(path, text)?;
        let layers = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("server.allow_ips")
                    .with_list_parse_key("server.trusted_proxies")
                    .source(Some(env)),
            )
            .build()
            .map_err(|source| ConfigError::Layers {
                path: path.to_path_buf(),
                source,
            })?;
        let mut settings: Self = serde_path_to_error::deserialize(layers)
            .map_err(|error| explain(&error, &variables))?;
        settings.source = path.to_path_buf();
        settings.validate()?;
        Ok(settings)
    }

    /// The rules between keys; each value on its own was checked as it was read.
    fn validate(&self) -> Result<(), ConfigError> {
        let conflict = |key: &str, message: &str| ConfigError::Conflict {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        if let Some(message) = self.server.public_url_placeholder() {
            return Err(ConfigError::Value {
                key: "server.public_url".to_owned(),
                message,
            });
        }
        let api = &self.api;
        if api.token.is_some() && api.token_file.is_some() {
            return Err(conflict(
                "api.token",
                "set either api.token or api.token_file, not both",
            ));
        }
        if api
            .token
            .as_ref()
            .is_some_and(|token| token.expose_secret().chars().any(char::is_control))
        {
            return Err(conflict(
                "api.token",
                "contains a line break or another control character; the token is one line \
                 (check api.token / VOLT_API__TOKEN)",
            ));
        }
        if api.register == RegisterMode::Always && !api.has_token() {
            return Err(conflict(
                "api.register",
                "is \"always\" but no token is configured; set api.token_file (or \
                 VOLT_API__TOKEN), or use register = \"auto\"",
            ));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(conflict(
                "server.tls_cert",
                "set both server.tls_cert and server.tls_key (PEM files), or neither",
            ));
        }
        if self.verify.effective_mode() != VerifyMode::Off && self.verify.public_key_file.is_none()
        {
            return Err(conflict(
                "verify.mode",
                "needs verify.public_key_file: Volt's public key (id_rsa.pub, or PEM)",
            ));
        }
        if self.admin.ui_needs_password() && self.admin.ui_password_file.is_none() {
            return Err(conflict(
                "admin.ui_password_file",
                "admin.listen is not a loopback address, so the web inbox (every stored \
                 message) would be open to the network; put a password in a file and set \
                 admin.ui_password_file to it, listen on 127.0.0.1, or set admin.ui = false",
            ));
        }
        // Deliveries are recorded by sink name.
        for (index, sink) in self.forward.iter().enumerate() {
            if self.forward[..index].iter().any(|s| s.name == sink.name) {
                return Err(ConfigError::Conflict {
                    key: format!("forward[{index}]"),
                    message: format!(
                        "sink {:?}: the name is used by another [[forward]] entry",
                        sink.name
                    ),
                });
            }
        }
        Ok(())
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

/// The file as TOML, checked before the `config` crate reads it: that crate's error quotes the
/// offending line, which may be `token = "..."`. This one says where, and what the parser
/// expected, without any of the file's text.
fn check_syntax(path: &Path, text: &str) -> Result<(), ConfigError> {
    let Err(error) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let offset = error.span().map_or(0, |span| span.start).min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    Err(ConfigError::Syntax {
        path: path.to_path_buf(),
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        message: error.message().trim().replace('\n', "; "),
    })
}

/// Name the key (or the `VOLT_*` variable) that failed, with the reader's own message: the
/// `config` crate's rendering would add its own " for key ..." and repeat the path.
fn explain(
    error: &serde_path_to_error::Error<config::ConfigError>,
    variables: &[String],
) -> ConfigError {
    let mut key = error.path().to_string();
    // The config crate adds a key to an error on its way out of each value, never out of a
    // key: the key it reports falls short of the path exactly when the key is unknown. (It
    // writes `forward[0]type` where the path says `forward[0].type`.)
    let same_key = |reached: &str| reached.replace('.', "") == key.replace('.', "");
    let unknown = match error.inner() {
        config::ConfigError::At { key: reached, .. }
        | config::ConfigError::Type { key: reached, .. } => {
            !reached.as_deref().is_some_and(same_key)
        }
        config::ConfigError::NotFound(_) => false,
        _ => true,
    };
    let mut inner = error.inner();
    while let config::ConfigError::At { error, .. } = inner {
        inner = error;
    }
    let message = match inner {
        config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } => format!("expected {expected}, found {unexpected}"),
        // The path ends at the table the key is missing from, the config crate's key with the
        // key itself. Without a [server] table, what is missing is its one required key.
        config::ConfigError::NotFound(missing) => {
            let field = missing.rsplit(['.', ']']).next().unwrap_or(missing);
            key = match (key.as_str(), field) {
                (".", "server") => "server.public_url".to_owned(),
                (".", field) => field.to_owned(),
                (table, field) => format!("{table}.{field}"),
            };
            required(&key)
        }
        other => other.to_string(),
    };
    // Where the value may be a credential, the message names only its kind.
    let message = if is_secret(&key) {
        without_quoted(&message)
    } else {
        message
    };
    match (variable_for(&key, variables), unknown) {
        (Some(variable), false) => ConfigError::VariableValue {
            variable: variable.to_owned(),
            key,
            message,
        },
        (Some(variable), true) => ConfigError::UnknownVariable {
            variable: variable.to_owned(),
            key,
            message,
        },
        (None, false) => ConfigError::Value { key, message },
        (None, true) => ConfigError::UnknownKey { key, message },
    }
}

/// Keys whose values are credentials: the token, a sink's header values and signing secret.
fn is_secret(key: &str) -> bool {
    key == "api.token"
        || key.starts_with("forward")
            && (key.contains(".headers") || key.ends_with(".signing_secret"))
}

/// `text` without what it quotes: serde and `config` put the value they could not read in
/// quotes or backticks (`invalid type: string "...", expected a map`).
fn without_quoted(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '`') => quote = Some(c),
            (None, c) => kept.push(c),
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
        }
    }
    kept.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" ,", ",")
}

fn required(key: &str) -> String {
    match key {
        "server.public_url" => "is required: the URL Volt will POST events to, such as \
                                          \"https://hooks.example.com/volt/<long random string>\" \
                                          ([server] public_url, or VOLT_SERVER__PUBLIC_URL)"
            .to_owned(),
        _ => "is required".to_owned(),
    }
}

/// The variable that set `key` (or the list or table it is part of). The environment is the
/// last layer, so a key that a variable sets has its value from there.
fn variable_for<'a>(key: &str, variables: &'a [String]) -> Option<&'a str> {
    variables
        .iter()
        .find(|variable| {
            let dotted = variable[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            key.strip_prefix(&dotted)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
        .map(String::as_str)
}

/// A segment of at least 16 characters mixing letters and digits counts as a secret.
fn has_secret_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        segment.len() >= 16
            && segment.chars().any(|c| c.is_ascii_digit())
            && segment.chars().any(|c| c.is_ascii_alphabetic())
    })
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
