//! `[admin]`: the listener for health and metrics, apart from the public webhook listener.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::fields;

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    pub enabled: bool,
    /// Unset means `DEFAULT_LISTEN`, where a port already taken only costs the admin
    /// endpoints, so that a second instance on one machine still receives events.
    #[serde(
        deserialize_with = "fields::optional_socket_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub listen: Option<SocketAddr>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
        }
    }
}

impl AdminSettings {
    /// Where to listen; `None` when disabled.
    pub fn address(&self) -> Option<SocketAddr> {
        self.enabled.then(|| self.listen.unwrap_or(DEFAULT_LISTEN))
    }

    /// Whether `listen` was set: only then is failing to bind it fatal.
    pub fn is_explicit(&self) -> bool {
        self.listen.is_some()
    }
}
