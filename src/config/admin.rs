//! `[admin]`: the listener for health, metrics and the web inbox, apart from the public
//! webhook listener.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

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
    /// Serve the web inbox (`/`, `/events/..`, `/conversations/..`, `/deliveries`).
    pub ui: bool,
    /// Offer replay buttons in the inbox (POST with a CSRF token); read-only when false.
    pub ui_actions: bool,
    /// A file holding the password of the web inbox (HTTP Basic, any user name). Required
    /// when the listener is not on a loopback address. A relative path is looked up in
    /// `$CREDENTIALS_DIRECTORY` first, as `api.token_file` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui_password_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            ui: true,
            ui_actions: false,
            ui_password_file: None,
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

    /// Whether the web inbox is served.
    pub fn serves_ui(&self) -> bool {
        self.enabled && self.ui
    }

    /// The inbox shows every stored message, so anyone who can reach a listener beyond this
    /// machine must give a password: the rule `validate` applies.
    pub fn ui_needs_password(&self) -> bool {
        self.serves_ui() && self.address().is_some_and(|addr| !addr.ip().is_loopback())
    }
}
