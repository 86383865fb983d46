//! What `check-config` prints: the effective settings as TOML, secrets redacted.
//!
//! The settings serialise themselves; the secret fields name a writer from here. The result
//! is TOML that `voltd --config` reads back to the same settings, less the secrets, so that
//! an operator can start from it.

use std::collections::BTreeMap;

use serde::Serializer;
use url::Url;

use super::{Settings, redacted_url, url_without_secrets};

const REDACTED: &str = "[redacted]";

impl Settings {
    /// `# from <path>`, then the settings as TOML.
    pub fn check_config_view(&self) -> Result<String, toml::ser::Error> {
        Ok(format!(
            "# from {}\n{}",
            self.source.display(),
            toml::to_string(self)?
        ))
    }
}

/// Any secret, as `"[redacted]"`: the view shows that one is set, never what it is.
pub(super) fn redacted<T, S: Serializer>(_secret: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(REDACTED)
}

/// Header values are typically credentials (`Authorization`, API keys); the names are not.
pub(super) fn redacted_values<S: Serializer>(
    map: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.keys().map(|name| (name, REDACTED)))
}

pub(super) fn storage_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redacted_url(url))
}

/// A sink's URL without user, password or query; the path stays, as the operator may need it
/// to tell sinks apart.
pub(super) fn sink_url<S: Serializer>(url: &Option<Url>, serializer: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_str(&url_without_secrets(url)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::ConfigError;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::from_toml(Path::new("volt.toml"), text, env)
    }

    const FULL: &str = r#"
[api]
token = "very-secret-token"
register = "Always"
timeout_secs = 3

[server]
listen = "0.0.0.0:8443"
public_url = "https://hooks.example.com/volt/a1b2c3d4e5f6a7b8c9"
allow_ips = ["203.0.113.0/24", "::1"]
tls_cert = "/etc/voltd/cert.pem"
tls_key = "/etc/voltd/key.pem"

[storage]
url = "postgres://voltd:s3cret@db.internal:5432/voltd?sslmode=require"
retention_days = 30

[verify]
public_key_file = "/etc/voltd/volt.pub"

[admin]
listen = "127.0.0.1:9191"

[log]
level = "warn, voltd=debug"
format = "JSON"

[[forward]]
name = "crm"
type = "http"
url = "http://bot:hunter2@crm.example.com:8080/hooks/in?token=qwerty"
headers = { Authorization = "Bearer sk-live-123", X-Team = "sms" }
signing_secret = "whsec_c2VjcmV0LWtleS1ieXRlcw=="
direction = "inbound"

[[forward]]
name = "script"
type = "command"
program = "/usr/local/bin/on-sms"
args = ["--quiet"]
backoff_initial_ms = 250
"#;

    #[test]
    fn secrets_are_redacted_and_the_rest_is_shown() {
        let shown = load(FULL, &[]).unwrap().check_config_view().unwrap();
        for secret in [
            "very-secret-token",
            "s3cret",
            "hunter2",
            "bot",
            "qwerty",
            "sk-live-123",
            "\"sms\"",
            "c2VjcmV0",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in\n{shown}");
        }
        for kept in [
            "# from volt.toml\n",
            "token = \"[redacted]\"",
            "register = \"always\"",
            "timeout_secs = 3",
            "url = \"postgres://voltd:redacted@db.internal:5432/voltd?sslmode=require\"",
            "retention_days = 30",
            "mode = \"log\"",
            "level = \"warn,voltd=debug\"",
            "format = \"json\"",
            "url = \"http://crm.example.com:8080/hooks/in?…\"",
            "Authorization = \"[redacted]\"",
            "X-Team = \"[redacted]\"",
            "signing_secret = \"[redacted]\"",
            "max_concurrency = 4",
            "backoff_initial_ms = 250",
        ] {
            assert!(shown.contains(kept), "{kept} missing from\n{shown}");
        }
        assert!(!shown.contains("token_file"), "{shown}");
    }

    #[test]
    fn the_view_reads_back_to_itself() {
        for (text, env) in [
            (FULL, &[][..]),
            (
                "[server]\npublic_url = \"http://127.0.0.1:8080/volt/a1b2c3d4e5f6a7b8c9\"\n",
                &[("VOLT_API__TOKEN_FILE", "volt-token")][..],
            ),
        ] {
            let shown = load(text, env).unwrap().check_config_view().unwrap();
            let again = load(&shown, &[])
                .unwrap_or_else(|e| panic!("{e}\nwhen reading back\n{shown}"))
                .check_config_view()
                .unwrap();
            assert_eq!(again, shown);
        }
    }

    #[test]
    fn unset_values_are_left_out_not_invented() {
        let shown = load(
            "[server]\npublic_url = \"http://127.0.0.1:8080/volt/a1b2c3d4e5f6a7b8c9\"\n",
            &[("VOLT_API__TOKEN_FILE", "volt-token")],
        )
        .unwrap()
        .check_config_view()
        .unwrap();
        assert!(shown.contains("token_file = \"volt-token\""), "{shown}");
        for absent in [
            "token =",
            "tls_cert",
            "public_key_file",
            "[admin]\nenabled = true\nlisten",
            "[[forward]]",
        ] {
            assert!(!shown.contains(absent), "{absent} in\n{shown}");
        }
        assert!(shown.contains("mode = \"off\""), "{shown}");
    }
}
