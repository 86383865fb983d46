//! `[api]`: Volt's GraphQL endpoint, the API token, and when to register with Volt.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{fields, show};

const DEFAULT_URL: &str = "https://api.respondflow.com/graphql";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    #[serde(deserialize_with = "fields::http_url")]
    pub url: Url,
    /// The token as set in `api.token` or `VOLT_API__TOKEN`. A token in `token_file` is read
    /// by the commands that call Volt, not while loading.
    #[serde(
        deserialize_with = "fields::optional_secret",
        serialize_with = "show::redacted",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(deserialize_with = "fields::any_case")]
    pub register: RegisterMode,
    #[serde(rename = "timeout_secs", with = "fields::positive_secs")]
    pub timeout: Duration,
    #[serde(deserialize_with = "fields::positive")]
    pub register_attempts: u32,
    #[serde(rename = "retry_initial_ms", with = "fields::millis")]
    pub retry_initial: Duration,
    #[serde(rename = "retry_max_secs", with = "fields::secs")]
    pub retry_max: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            url: Url::parse(DEFAULT_URL).expect("the default API URL is a URL"),
            token: None,
            token_file: None,
            register: RegisterMode::default(),
            timeout: Duration::from_secs(10),
            register_attempts: 10,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// When to call Volt's `registerWebhook` at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterMode {
    /// Register when a token is configured, otherwise only receive.
    #[default]
    Auto,
    /// A token is required; without one the daemon refuses to start.
    Always,
    /// Never register (the URL is managed in Volt's portal).
    Never,
}

impl ApiSettings {
    /// Whether a token is configured, inline or as a file (whose reading may still fail).
    pub fn has_token(&self) -> bool {
        self.token.is_some() || self.token_file.is_some()
    }

    /// Whether start-up should call `registerWebhook`.
    pub fn should_register(&self) -> bool {
        match self.register {
            RegisterMode::Never => false,
            RegisterMode::Always => true,
            RegisterMode::Auto => self.has_token(),
        }
    }
}
