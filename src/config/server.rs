//! `[server]`: the public webhook listener.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use url::Url;

use super::fields;

/// The placeholders in `public_url` of the packaged `/etc/voltd/volt.toml`
/// (packaging/volt.toml). A daemon started with either would register a URL that reaches
/// nobody, so the installed service refuses to start until the operator replaces both.
const PLACEHOLDER_HOST: &str = "hooks.your-domain.example";
const PLACEHOLDER_SEGMENT: &str = "CHANGE-ME";

/// No `Default`: `public_url` has none, so each other key carries its own default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(default = "default_listen", deserialize_with = "fields::socket_addr")]
    pub listen: SocketAddr,
    /// The URL Volt posts to; its path is the route served.
    #[serde(deserialize_with = "fields::http_url")]
    pub public_url: Url,
    #[serde(
        default = "default_max_body_bytes",
        deserialize_with = "fields::positive"
    )]
    pub max_body_bytes: usize,
    #[serde(
        rename = "shutdown_timeout_secs",
        default = "default_shutdown_timeout",
        with = "fields::secs"
    )]
    pub shutdown_timeout: Duration,
    /// Client networks allowed to post; empty allows everyone.
    #[serde(default, deserialize_with = "fields::networks")]
    pub allow_ips: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed.
    #[serde(default, deserialize_with = "fields::networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// A request's head and body must both arrive within this.
    #[serde(
        rename = "request_timeout_secs",
        default = "default_request_timeout",
        with = "fields::positive_secs"
    )]
    pub request_timeout: Duration,
    #[serde(
        default = "default_max_connections",
        deserialize_with = "fields::positive"
    )]
    pub max_connections: usize,
    /// Set together with `tls_key`, or neither (see [`ServerSettings::tls`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_connections() -> usize {
    10_000
}

/// PEM files for TLS on the public listener.
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl ServerSettings {
    /// The route served: the path of `public_url`.
    pub fn webhook_path(&self) -> &str {
        self.public_url.path()
    }

    /// What of the packaged template is still in `public_url`, and what to put there instead.
    pub(super) fn public_url_placeholder(&self) -> Option<String> {
        let url = &self.public_url;
        let host = url.host_str() == Some(PLACEHOLDER_HOST);
        let path = url
            .path_segments()
            .is_some_and(|mut segments| segments.any(|s| s == PLACEHOLDER_SEGMENT));
        let what = match (host, path) {
            (false, false) => return None,
            (true, false) => format!("its host {PLACEHOLDER_HOST}"),
            (false, true) => format!("its path segment {PLACEHOLDER_SEGMENT}"),
            (true, true) => {
                format!("its host {PLACEHOLDER_HOST} and path segment {PLACEHOLDER_SEGMENT}")
            }
        };
        Some(format!(
            "{url} still has the packaged placeholder in {what}; put there the https URL at which \
             Volt reaches this machine: your host name (the reverse proxy's TLS site) and, \
             instead of {PLACEHOLDER_SEGMENT}, a long random path segment from \
             `openssl rand -hex 16`, e.g. \"https://hooks.mycompany.com/volt/<32 hex digits>\""
        ))
    }

    /// The certificate and key when TLS is on (validation makes sure both or neither are set).
    pub fn tls(&self) -> Option<TlsFiles<'_>> {
        Some(TlsFiles {
            cert: self.tls_cert.as_deref()?,
            key: self.tls_key.as_deref()?,
        })
    }
}
