//! `[[forward]]` sections: where stored events are sent, and which ones.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;
use url::Url;

use super::ConfigError;

const DEFAULT_MAX_ATTEMPTS: u32 = 10;
const DEFAULT_BACKOFF_INITIAL_MS: u64 = 1_000;
const DEFAULT_BACKOFF_MAX_SECS: u64 = 3_600;
const DEFAULT_TIMEOUT_SECS: u64 = 10;
const DEFAULT_HTTP_CONCURRENCY: usize = 4;

/// One `[[forward]]` entry as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    signing_secret: Option<String>,
    program: Option<PathBuf>,
    #[serde(default)]
    args: Vec<String>,
    timeout_secs: Option<u64>,
    max_concurrency: Option<usize>,
    #[serde(default)]
    event_types: Vec<String>,
    direction: Option<String>,
    #[serde(default)]
    numbers: Vec<String>,
    max_attempts: Option<u32>,
    backoff_initial_ms: Option<u64>,
    backoff_max_secs: Option<u64>,
}

/// A validated sink.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    pub name: String,
    pub target: Target,
    pub filter: SinkFilter,
    pub timeout: Duration,
    pub max_concurrency: usize,
    pub retry: RetrySettings,
}

#[derive(Debug, Clone)]
pub enum Target {
    Http {
        url: Url,
        headers: BTreeMap<String, String>,
        signing_key: Option<SecretSlice<u8>>,
    },
    Command {
        program: PathBuf,
        args: Vec<String>,
    },
}

/// Which events a sink receives; an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkFilter {
    pub event_types: Vec<String>,
    pub direction: Option<String>,
    pub numbers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl SinkFilter {
    pub fn matches(
        &self,
        event_type: Option<&str>,
        direction: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> bool {
        let listed = |list: &[String], value: Option<&str>| {
            value.is_some_and(|v| list.iter().any(|item| item == v))
        };
        (self.event_types.is_empty() || listed(&self.event_types, event_type))
            && self
                .direction
                .as_deref()
                .is_none_or(|wanted| direction == Some(wanted))
            && (self.numbers.is_empty() || listed(&self.numbers, from) || listed(&self.numbers, to))
    }
}

fn invalid(name: &str, message: impl fmt::Display) -> ConfigError {
    ConfigError::Value {
        key: "forward",
        message: format!("sink {name:?}: {message}"),
    }
}

/// Check every sink; names must be unique because deliveries are recorded by name.
pub fn validate(raw: Vec<RawForward>) -> Result<Vec<ForwardSettings>, ConfigError> {
    let mut sinks: Vec<ForwardSettings> = Vec::with_capacity(raw.len());
    for entry in raw {
        let sink = validate_one(entry)?;
        if sinks.iter().any(|s| s.name == sink.name) {
            return Err(invalid(
                &sink.name,
                "the name is used by another [[forward]] entry",
            ));
        }
        sinks.push(sink);
    }
    Ok(sinks)
}

fn validate_one(raw: RawForward) -> Result<ForwardSettings, ConfigError> {
    let name = raw.name.trim().to_owned();
    if name.is_empty() {
        return Err(ConfigError::Value {
            key: "forward.name",
            message: "every [[forward]] entry needs a non-empty name".into(),
        });
    }
    let only_for = |present: bool, key: &str, kind: &str| {
        if present {
            Err(invalid(
                &name,
                format!("{key} only applies to type = \"{kind}\""),
            ))
        } else {
            Ok(())
        }
    };
    let (target, default_concurrency) = match raw.kind.as_str() {
        "http" => {
            only_for(
                raw.program.is_some() || !raw.args.is_empty(),
                "program/args",
                "command",
            )?;
            let url = raw
                .url
                .as_deref()
                .ok_or_else(|| invalid(&name, "type = \"http\" needs a url"))?;
            let url = Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| invalid(&name, format!("{url:?} is not an http(s) URL")))?;
            for (header, value) in &raw.headers {
                let valid = awc::http::header::HeaderName::from_bytes(header.as_bytes()).is_ok()
                    && awc::http::header::HeaderValue::from_str(value).is_ok();
                if !valid {
                    return Err(invalid(&name, format!("header {header:?} is not valid")));
                }
            }
            let signing_key = raw
                .signing_secret
                .as_deref()
                .map(|secret| signing_key(&name, secret))
                .transpose()?;
            let target = Target::Http {
                url,
                headers: raw.headers,
                signing_key,
            };
            (target, DEFAULT_HTTP_CONCURRENCY)
        }
        "command" => {
            only_for(
                raw.url.is_some() || !raw.headers.is_empty() || raw.signing_secret.is_some(),
                "url/headers/signing_secret",
                "http",
            )?;
            let program = raw
                .program
                .ok_or_else(|| invalid(&name, "type = \"command\" needs a program"))?;
            (
                Target::Command {
                    program,
                    args: raw.args,
                },
                1,
            )
        }
        other => {
            return Err(invalid(
                &name,
                format!("type {other:?} is unknown; use \"http\" or \"command\""),
            ));
        }
    };
    if let Some(direction) = &raw.direction
        && !matches!(direction.as_str(), "inbound" | "outbound")
    {
        return Err(invalid(
            &name,
            format!("direction {direction:?} must be \"inbound\" or \"outbound\""),
        ));
    }
    let positive = |value: Option<u64>, key: &str, default: u64| match value {
        Some(0) => Err(invalid(&name, format!("{key} must be greater than zero"))),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let timeout = positive(raw.timeout_secs, "timeout_secs", DEFAULT_TIMEOUT_SECS)?;
    let max_concurrency = positive(
        raw.max_concurrency.map(|n| n as u64),
        "max_concurrency",
        default_concurrency as u64,
    )?;
    let max_attempts = positive(
        raw.max_attempts.map(u64::from),
        "max_attempts",
        u64::from(DEFAULT_MAX_ATTEMPTS),
    )?;
    let initial = positive(
        raw.backoff_initial_ms,
        "backoff_initial_ms",
        DEFAULT_BACKOFF_INITIAL_MS,
    )?;
    let max = positive(
        raw.backoff_max_secs,
        "backoff_max_secs",
        DEFAULT_BACKOFF_MAX_SECS,
    )?;
    Ok(ForwardSettings {
        name,
        target,
        filter: SinkFilter {
            event_types: raw.event_types,
            direction: raw.direction,
            numbers: raw.numbers,
        },
        timeout: Duration::from_secs(timeout),
        max_concurrency: usize::try_from(max_concurrency).unwrap_or(usize::MAX),
        retry: RetrySettings {
            max_attempts: u32::try_from(max_attempts).unwrap_or(u32::MAX),
            initial: Duration::from_millis(initial),
            max: Duration::from_secs(max),
        },
    })
}

/// Standard Webhooks secrets are `whsec_` followed by base64 key bytes; any other string
/// is used as the key as written.
fn signing_key(name: &str, secret: &str) -> Result<SecretSlice<u8>, ConfigError> {
    let key = match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD.decode(encoded).map_err(|e| {
            invalid(
                name,
                format!("signing_secret after whsec_ is not base64: {e}"),
            )
        })?,
        None => secret.as_bytes().to_vec(),
    };
    if key.is_empty() {
        return Err(invalid(name, "signing_secret is empty"));
    }
    Ok(SecretSlice::from(key))
}

/// `url` without userinfo, and with any query replaced by `?…`: both often carry credentials.
pub fn url_without_secrets(url: &Url) -> String {
    let mut shown = format!("{}{}", origin(url), url.path());
    if url.query().is_some() {
        shown.push_str("?…");
    }
    shown
}

/// Only `scheme://host:port`: chat webhook URLs carry their secret in the path, so this is
/// all that errors and logs show of a sink's URL.
pub fn origin(url: &Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(host) => host.to_string(),
        None => String::new(),
    };
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The sinks as `[[forward]]` TOML, secrets redacted, for `check-config`.
pub fn display(sinks: &[ForwardSettings]) -> String {
    let mut out = String::new();
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    for sink in sinks {
        let _ = writeln!(out, "\n\n[[forward]]\nname = {:?}", sink.name);
        match &sink.target {
            Target::Http {
                url,
                headers,
                signing_key,
            } => {
                let _ = writeln!(out, "type = \"http\"\nurl = {:?}", url_without_secrets(url));
                // Header values are typically credentials (Authorization, API keys).
                for header in headers.keys() {
                    let _ = writeln!(out, "headers.{header:?} = \"[redacted]\"");
                }
                if signing_key
                    .as_ref()
                    .is_some_and(|k| !k.expose_secret().is_empty())
                {
                    let _ = writeln!(out, "signing_secret = \"[redacted]\"");
                }
            }
            Target::Command { program, args } => {
                let _ = writeln!(
                    out,
                    "type = \"command\"\nprogram = {:?}\nargs = {}",
                    program.display().to_string(),
                    list(args)
                );
            }
        }
        let _ = writeln!(out, "timeout_secs = {}", sink.timeout.as_secs());
        let _ = writeln!(out, "max_concurrency = {}", sink.max_concurrency);
        let _ = writeln!(out, "event_types = {}", list(&sink.filter.event_types));
        if let Some(direction) = &sink.filter.direction {
            let _ = writeln!(out, "direction = {direction:?}");
        }
        let _ = writeln!(out, "numbers = {}", list(&sink.filter.numbers));
        let _ = writeln!(out, "max_attempts = {}", sink.retry.max_attempts);
        let _ = writeln!(
            out,
            "backoff_initial_ms = {}",
            sink.retry.initial.as_millis()
        );
        let _ = write!(out, "backoff_max_secs = {}", sink.retry.max.as_secs());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(types: &[&str], direction: Option<&str>, numbers: &[&str]) -> SinkFilter {
        SinkFilter {
            event_types: types.iter().map(|s| s.to_string()).collect(),
            direction: direction.map(Into::into),
            numbers: numbers.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(SinkFilter::default().matches(None, None, None, None));
    }

    #[test]
    fn every_condition_must_hold() {
        let f = filter(&["message.received"], Some("inbound"), &["+1555"]);
        let received = Some("message.received");
        assert!(f.matches(received, Some("inbound"), Some("+1555"), None));
        assert!(f.matches(received, Some("inbound"), None, Some("+1555")));
        assert!(!f.matches(received, Some("outbound"), Some("+1555"), None));
        assert!(!f.matches(Some("message.sent"), Some("inbound"), Some("+1555"), None));
        assert!(!f.matches(received, Some("inbound"), Some("+1999"), None));
    }

    fn load(forward: &str) -> Result<crate::config::Settings, ConfigError> {
        let text = format!(
            "[server]\npublic_url = \"https://hooks.example.com/volt/a1b2c3d4e5f6a7b8c9\"\n{forward}"
        );
        crate::config::Settings::from_toml(std::path::Path::new("volt.toml"), &text, [])
    }

    #[test]
    fn sinks_are_read_with_defaults() {
        let settings = load(
            "[[forward]]\nname = \"crm\"\ntype = \"http\"\nurl = \"https://crm.example.com/in\"\n\
             headers = { Authorization = \"Bearer x\" }\n\
             [[forward]]\nname = \"script\"\ntype = \"command\"\nprogram = \"/usr/local/bin/on-sms\"\n\
             args = [\"--quiet\"]\nevent_types = [\"message.received\"]\n",
        )
        .unwrap();
        let [crm, script] = &settings.forward[..] else {
            panic!("two sinks expected: {:?}", settings.forward);
        };
        assert_eq!(crm.retry.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(crm.max_concurrency, DEFAULT_HTTP_CONCURRENCY);
        assert!(matches!(&crm.target, Target::Http { headers, .. } if headers.len() == 1));
        assert_eq!(script.max_concurrency, 1);
        assert_eq!(script.filter.event_types, ["message.received"]);
        let shown = settings.to_string();
        assert!(shown.contains("name = \"script\""), "{shown}");
    }

    #[test]
    fn mistakes_are_named() {
        for (forward, expected) in [
            ("name = \"a\"\ntype = \"http\"\n", "needs a url"),
            ("name = \"a\"\ntype = \"mail\"\n", "unknown"),
            ("name = \"a\"\ntype = \"command\"\n", "needs a program"),
            (
                "name = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\nurl = \"http://x/\"\n",
                "only applies",
            ),
            (
                "name = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\ndirection = \"up\"\n",
                "direction",
            ),
            (
                "name = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\nmax_attempts = 0\n",
                "max_attempts",
            ),
            (
                "name = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\ncolour = 1\n",
                "colour",
            ),
        ] {
            let err = load(&format!("[[forward]]\n{forward}")).err().unwrap();
            assert!(err.to_string().contains(expected), "{forward}: {err}");
        }
        let twice = "[[forward]]\nname = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\n";
        let err = load(&format!("{twice}{twice}")).err().unwrap();
        assert!(err.to_string().contains("used by another"), "{err}");
    }

    #[test]
    fn signing_secret_is_redacted() {
        let settings = load(
            "[[forward]]\nname = \"s\"\ntype = \"http\"\nurl = \"https://x.example.com/\"\n\
             signing_secret = \"whsec_c2VjcmV0LWtleS1ieXRlcw==\"\n",
        )
        .unwrap();
        let shown = settings.to_string();
        assert!(
            shown.contains("[redacted]") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
    }

    #[test]
    fn header_values_and_url_credentials_are_redacted() {
        let settings = load(
            "[[forward]]\nname = \"s\"\ntype = \"http\"\n\
             url = \"http://user:hunter2@crm.example.com:8080/hooks/in?token=qwerty\"\n\
             headers = { Authorization = \"Bearer sk-live-123\", X-Team = \"sms\" }\n",
        )
        .unwrap();
        let shown = display(&settings.forward);
        for secret in ["hunter2", "user", "qwerty", "token", "sk-live-123", "sms"] {
            assert!(!shown.contains(secret), "{secret} shown in\n{shown}");
        }
        for kept in [
            "url = \"http://crm.example.com:8080/hooks/in?…\"",
            "headers.\"Authorization\" = \"[redacted]\"",
            "headers.\"X-Team\" = \"[redacted]\"",
        ] {
            assert!(shown.contains(kept), "{kept} missing from\n{shown}");
        }
    }

    #[test]
    fn origin_keeps_only_scheme_host_and_port() {
        for (url, expected) in [
            (
                "https://hooks.chat.example/services/T0/B0/XyZ",
                "https://hooks.chat.example:443",
            ),
            ("http://u:p@[::1]:9000/a?b=c", "http://[::1]:9000"),
            ("http://127.0.0.1:81/", "http://127.0.0.1:81"),
        ] {
            assert_eq!(origin(&Url::parse(url).unwrap()), expected);
        }
        let plain = Url::parse("https://crm.example.com/in").unwrap();
        assert_eq!(
            url_without_secrets(&plain),
            "https://crm.example.com:443/in"
        );
    }

    #[test]
    fn whsec_secret_is_decoded() {
        let key = signing_key("s", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(key.expose_secret().len(), 24);
        assert!(signing_key("s", "whsec_%%%").is_err());
        assert_eq!(signing_key("s", "plain").unwrap().expose_secret(), b"plain");
    }
}
