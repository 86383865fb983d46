//! `[[forward]]` sections: where stored events are sent, and which ones.
//!
//! A new sink type is a [`SinkType`] word, a [`Target`] variant with its settings, its keys
//! in [`SinkEntry`] (listed in [`SinkEntry::typed_keys`]), and an arm in each conversion.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretSlice;
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use super::{fields, show};

const DEFAULT_MAX_ATTEMPTS: u32 = 10;
const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(3_600);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A sink, checked: read from and shown as one flat `[[forward]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(try_from = "SinkEntry", into = "SinkEntry")]
pub struct ForwardSettings {
    pub name: String,
    pub target: Target,
    pub filter: SinkFilter,
    pub timeout: Duration,
    pub max_concurrency: usize,
    pub retry: RetrySettings,
}

/// Where a sink delivers, by type.
#[derive(Debug, Clone)]
pub enum Target {
    Http(HttpTarget),
    Command(CommandTarget),
    Redis(RedisTarget),
    Nats(NatsTarget),
    Amqp(AmqpTarget),
}

/// `type = "http"`: the event's original body is POSTed to `url`.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub url: Url,
    pub headers: BTreeMap<String, String>,
    /// Standard Webhooks signing key, decoded.
    pub signing_key: Option<SecretSlice<u8>>,
}

/// `type = "command"`: `program` runs once per event, with the event on stdin.
#[derive(Debug, Clone)]
pub struct CommandTarget {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// `type = "redis"`: each event is appended to a Redis stream with `XADD`.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub url: Url,
    pub stream: String,
    /// Trims the stream to about this many entries (`MAXLEN ~`) as it grows.
    pub max_len: Option<u64>,
    pub tls: BrokerTls,
}

/// `type = "nats"`: each event is published to a subject that a JetStream stream captures.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    pub url: Url,
    pub subject: String,
    pub tls: BrokerTls,
    /// A `.creds` file (a user JWT and its NKey seed), for servers that use decentralised
    /// authentication.
    pub credentials_file: Option<PathBuf>,
    /// For servers that verify their clients' certificates (mutual TLS).
    pub client_certificate: Option<ClientCertificate>,
}

/// A client certificate and its private key, both PEM files, read where they are used (see
/// `forward::files`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `type = "amqp"`: each event is published to a RabbitMQ (AMQP 0-9-1) exchange, persistent,
/// and counts as delivered once the broker confirms it.
#[derive(Debug, Clone)]
pub struct AmqpTarget {
    pub url: Url,
    /// `""` is the default exchange, which routes to the queue named by the routing key.
    pub exchange: String,
    pub routing_key: String,
    pub tls: BrokerTls,
}

/// How a broker sink checks its server's TLS certificate: against the certificate
/// authorities of `ca_file` (PEM) when it is set, else against the public roots. The file is
/// read where it is used (see `forward::files`), so loading does no I/O.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerTls {
    pub ca_file: Option<PathBuf>,
}

/// The words of `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    Http,
    Command,
    Redis,
    Nats,
    Amqp,
}

impl SinkType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Command => "command",
            Self::Redis => "redis",
            Self::Nats => "nats",
            Self::Amqp => "amqp",
        }
    }

    /// A command runs one at a time unless asked otherwise; an HTTP endpoint takes a few. A
    /// broker takes many commands in flight on its one connection (they are pipelined), and
    /// a sustained stream of events needs them.
    fn default_concurrency(self) -> usize {
        match self {
            Self::Http => 4,
            Self::Command => 1,
            Self::Redis => 256,
            Self::Nats => 256,
            Self::Amqp => 256,
        }
    }

    /// The URL schemes a sink of this type connects with.
    fn url_schemes(self) -> &'static [&'static str] {
        match self {
            Self::Http => &["http", "https"],
            Self::Command => &[],
            Self::Redis => &["redis", "rediss"],
            Self::Nats => &["nats", "tls"],
            Self::Amqp => &["amqp", "amqps"],
        }
    }
}

impl Target {
    pub fn sink_type(&self) -> SinkType {
        match self {
            Self::Http(_) => SinkType::Http,
            Self::Command(_) => SinkType::Command,
            Self::Redis(_) => SinkType::Redis,
            Self::Nats(_) => SinkType::Nats,
            Self::Amqp(_) => SinkType::Amqp,
        }
    }
}

/// Which events a sink receives; an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkFilter {
    pub event_types: Vec<String>,
    pub direction: Option<Direction>,
    pub numbers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    /// As the event's `direction` field says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
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
                .is_none_or(|wanted| direction == Some(wanted.as_str()))
            && (self.numbers.is_empty() || listed(&self.numbers, from) || listed(&self.numbers, to))
    }
}

/// One `[[forward]]` entry as written: one flat table, whose `type` says which of the
/// type-specific keys apply. (serde's `flatten` could split common and typed keys, but it
/// cannot be combined with `deny_unknown_fields`.) Shown by `check-config` with its secrets
/// redacted, in a form that reads back.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SinkEntry {
    name: String,
    #[serde(rename = "type", deserialize_with = "fields::any_case")]
    kind: SinkType,
    /// Its scheme is checked against the type's, once the type is known.
    #[serde(
        default,
        serialize_with = "show::sink_url",
        skip_serializing_if = "Option::is_none"
    )]
    url: Option<Url>,
    #[serde(
        default,
        deserialize_with = "headers",
        serialize_with = "show::redacted_values",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    headers: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "signing_secret",
        serialize_with = "show::redacted",
        skip_serializing_if = "Option::is_none"
    )]
    signing_secret: Option<SecretSlice<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    program: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    #[serde(
        default,
        deserialize_with = "fields::optional_positive",
        skip_serializing_if = "Option::is_none"
    )]
    max_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    exchange: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    routing_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credentials_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key_file: Option<PathBuf>,
    #[serde(
        rename = "timeout_secs",
        default = "default_timeout",
        with = "fields::positive_secs"
    )]
    timeout: Duration,
    /// Its default depends on the type.
    #[serde(default, deserialize_with = "fields::optional_positive")]
    max_concurrency: Option<usize>,
    #[serde(default)]
    event_types: Vec<String>,
    #[serde(
        default,
        deserialize_with = "fields::optional_any_case",
        skip_serializing_if = "Option::is_none"
    )]
    direction: Option<Direction>,
    #[serde(default)]
    numbers: Vec<String>,
    #[serde(
        default = "default_max_attempts",
        deserialize_with = "fields::positive"
    )]
    max_attempts: u32,
    #[serde(
        rename = "backoff_initial_ms",
        default = "default_backoff_initial",
        with = "fields::positive_millis"
    )]
    backoff_initial: Duration,
    #[serde(
        rename = "backoff_max_secs",
        default = "default_backoff_max",
        with = "fields::positive_secs"
    )]
    backoff_max: Duration,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

fn default_backoff_initial() -> Duration {
    DEFAULT_BACKOFF_INITIAL
}

fn default_backoff_max() -> Duration {
    DEFAULT_BACKOFF_MAX
}

impl SinkEntry {
    /// The type-specific keys this entry sets, each with the types it belongs to.
    fn typed_keys(&self) -> impl Iterator<Item = (&'static str, &'static [SinkType])> {
        const HTTP: &[SinkType] = &[SinkType::Http];
        const COMMAND: &[SinkType] = &[SinkType::Command];
        const REDIS: &[SinkType] = &[SinkType::Redis];
        const NATS: &[SinkType] = &[SinkType::Nats];
        const AMQP: &[SinkType] = &[SinkType::Amqp];
        const BROKERS: &[SinkType] = &[SinkType::Redis, SinkType::Nats, SinkType::Amqp];
        [
            (
                "url",
                &[
                    SinkType::Http,
                    SinkType::Redis,
                    SinkType::Nats,
                    SinkType::Amqp,
                ][..],
                self.url.is_some(),
            ),
            ("headers", HTTP, !self.headers.is_empty()),
            ("signing_secret", HTTP, self.signing_secret.is_some()),
            ("program", COMMAND, self.program.is_some()),
            ("args", COMMAND, !self.args.is_empty()),
            ("stream", REDIS, self.stream.is_some()),
            ("max_len", REDIS, self.max_len.is_some()),
            ("subject", NATS, self.subject.is_some()),
            ("exchange", AMQP, self.exchange.is_some()),
            ("routing_key", AMQP, self.routing_key.is_some()),
            ("ca_file", BROKERS, self.ca_file.is_some()),
            ("credentials_file", NATS, self.credentials_file.is_some()),
            ("client_cert_file", NATS, self.client_cert_file.is_some()),
            ("client_key_file", NATS, self.client_key_file.is_some()),
        ]
        .into_iter()
        .filter(|(_, _, set)| *set)
        .map(|(key, owners, _)| (key, owners))
    }
}

/// What is wrong with one `[[forward]]` entry.
#[derive(Debug)]
struct SinkError {
    name: String,
    problem: String,
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sink {:?}: {}", self.name, self.problem)
    }
}

impl TryFrom<SinkEntry> for ForwardSettings {
    type Error = SinkError;

    fn try_from(entry: SinkEntry) -> Result<Self, SinkError> {
        let name = entry.name.trim().to_owned();
        let error = |problem: String| SinkError {
            name: name.clone(),
            problem,
        };
        if name.is_empty() {
            return Err(error(
                "every [[forward]] entry needs a non-empty name".to_owned(),
            ));
        }
        let kind = entry.kind;
        if let Some((key, owners)) = entry
            .typed_keys()
            .find(|(_, owners)| !owners.contains(&kind))
        {
            let types: Vec<String> = owners
                .iter()
                .map(|owner| format!("type = \"{}\"", owner.as_str()))
                .collect();
            return Err(error(format!(
                "{key} only applies to {}",
                types.join(" or ")
            )));
        }
        let needs = |key: &str| error(format!("type = \"{}\" needs a {key}", kind.as_str()));
        let url = match entry.url {
            Some(url) => {
                fields::url_with_scheme(&url, kind.url_schemes())
                    .map_err(|why| error(format!("url {why}")))?;
                Some(url)
            }
            None => None,
        };
        let tls = BrokerTls {
            ca_file: entry.ca_file,
        };
        // Plain redis:// and amqp:// never use TLS; nats:// does when the server asks for it.
        if tls.ca_file.is_some()
            && let Some(url) = url
                .as_ref()
                .filter(|u| ["redis", "amqp"].contains(&u.scheme()))
        {
            return Err(error(format!(
                "ca_file needs TLS: use {}s:// instead of {}://",
                url.scheme(),
                url.scheme()
            )));
        }
        let target = match kind {
            SinkType::Http => Target::Http(HttpTarget {
                url: url.ok_or_else(|| needs("url"))?,
                headers: entry.headers,
                signing_key: entry.signing_secret,
            }),
            SinkType::Command => Target::Command(CommandTarget {
                program: entry.program.ok_or_else(|| needs("program"))?,
                args: entry.args,
            }),
            SinkType::Redis => Target::Redis(RedisTarget {
                url: url.ok_or_else(|| needs("url"))?,
                stream: entry
                    .stream
                    .filter(|stream| !stream.is_empty())
                    .ok_or_else(|| {
                        needs("stream (the key of the Redis stream, e.g. volt:events)")
                    })?,
                max_len: entry.max_len,
                tls,
            }),
            SinkType::Nats => Target::Nats(NatsTarget {
                url: url.ok_or_else(|| needs("url"))?,
                subject: entry
                    .subject
                    .filter(|subject| !subject.is_empty())
                    .ok_or_else(|| {
                        needs("subject (one that a JetStream stream captures, e.g. volt.events)")
                    })?,
                tls,
                credentials_file: entry.credentials_file,
                client_certificate: match (entry.client_cert_file, entry.client_key_file) {
                    (Some(cert_file), Some(key_file)) => Some(ClientCertificate {
                        cert_file,
                        key_file,
                    }),
                    (None, None) => None,
                    _ => {
                        return Err(error(
                            "client_cert_file and client_key_file go together: set both for a \
                             client certificate, or neither"
                                .to_owned(),
                        ));
                    }
                },
            }),
            SinkType::Amqp => Target::Amqp(AmqpTarget {
                url: url
                    .ok_or_else(|| needs("url (e.g. amqp://user:password@127.0.0.1:5672/%2f)"))?,
                exchange: entry.exchange.unwrap_or_default(),
                routing_key: entry.routing_key.ok_or_else(|| {
                    needs("routing_key (with the default exchange, the name of the queue)")
                })?,
                tls,
            }),
        };
        Ok(Self {
            name,
            target,
            filter: SinkFilter {
                event_types: entry.event_types,
                direction: entry.direction,
                numbers: entry.numbers,
            },
            timeout: entry.timeout,
            max_concurrency: entry.max_concurrency.unwrap_or(kind.default_concurrency()),
            retry: RetrySettings {
                max_attempts: entry.max_attempts,
                initial: entry.backoff_initial,
                max: entry.backoff_max,
            },
        })
    }
}

impl From<ForwardSettings> for SinkEntry {
    fn from(sink: ForwardSettings) -> Self {
        let mut entry = Self {
            name: sink.name,
            kind: sink.target.sink_type(),
            url: None,
            headers: BTreeMap::new(),
            signing_secret: None,
            program: None,
            args: Vec::new(),
            stream: None,
            max_len: None,
            subject: None,
            exchange: None,
            routing_key: None,
            ca_file: None,
            credentials_file: None,
            client_cert_file: None,
            client_key_file: None,
            timeout: sink.timeout,
            max_concurrency: Some(sink.max_concurrency),
            event_types: sink.filter.event_types,
            direction: sink.filter.direction,
            numbers: sink.filter.numbers,
            max_attempts: sink.retry.max_attempts,
            backoff_initial: sink.retry.initial,
            backoff_max: sink.retry.max,
        };
        match sink.target {
            Target::Http(http) => {
                entry.url = Some(http.url);
                entry.headers = http.headers;
                entry.signing_secret = http.signing_key;
            }
            Target::Command(command) => {
                entry.program = Some(command.program);
                entry.args = command.args;
            }
            Target::Redis(redis) => {
                entry.url = Some(redis.url);
                entry.stream = Some(redis.stream);
                entry.max_len = redis.max_len;
                entry.ca_file = redis.tls.ca_file;
            }
            Target::Nats(nats) => {
                entry.url = Some(nats.url);
                entry.subject = Some(nats.subject);
                entry.ca_file = nats.tls.ca_file;
                entry.credentials_file = nats.credentials_file;
                if let Some(certificate) = nats.client_certificate {
                    entry.client_cert_file = Some(certificate.cert_file);
                    entry.client_key_file = Some(certificate.key_file);
                }
            }
            Target::Amqp(amqp) => {
                entry.url = Some(amqp.url);
                entry.exchange = Some(amqp.exchange);
                entry.routing_key = Some(amqp.routing_key);
                entry.ca_file = amqp.tls.ca_file;
            }
        }
        entry
    }
}

/// Header names and values that an HTTP request can carry.
fn headers<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    use awc::http::header::{HeaderName, HeaderValue};
    let headers = BTreeMap::<String, String>::deserialize(deserializer)?;
    match headers.iter().find(|(name, value)| {
        HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err()
    }) {
        // Not quoted: what a secret's message quotes is left out (see `without_quoted`).
        Some((name, _)) => Err(serde::de::Error::custom(format!(
            "header {} is not valid: a name is a token such as X-Team, a value one line \
             of visible characters",
            name.escape_debug()
        ))),
        None => Ok(headers),
    }
}

fn signing_secret<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretSlice<u8>>, D::Error> {
    let secret = secrecy::SecretString::from(String::deserialize(deserializer)?);
    signing_key(secrecy::ExposeSecret::expose_secret(&secret))
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Standard Webhooks secrets are `whsec_` followed by base64 key bytes; any other string
/// is used as the key as written.
fn signing_key(secret: &str) -> Result<SecretSlice<u8>, String> {
    let key = match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD
            .decode(encoded)
            // The decoder's reason names a character of the secret.
            .map_err(|_| "the part after whsec_ is not standard base64".to_owned())?,
        None => secret.as_bytes().to_vec(),
    };
    if key.is_empty() {
        return Err("is empty; set the key, or remove signing_secret".to_owned());
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

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::config::{ConfigError, Settings};

    fn filter(types: &[&str], direction: Option<Direction>, numbers: &[&str]) -> SinkFilter {
        SinkFilter {
            event_types: types.iter().map(|s| s.to_string()).collect(),
            direction,
            numbers: numbers.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(SinkFilter::default().matches(None, None, None, None));
    }

    #[test]
    fn every_condition_must_hold() {
        let f = filter(&["message.received"], Some(Direction::Inbound), &["+1555"]);
        let received = Some("message.received");
        assert!(f.matches(received, Some("inbound"), Some("+1555"), None));
        assert!(f.matches(received, Some("inbound"), None, Some("+1555")));
        assert!(!f.matches(received, Some("outbound"), Some("+1555"), None));
        assert!(!f.matches(Some("message.sent"), Some("inbound"), Some("+1555"), None));
        assert!(!f.matches(received, Some("inbound"), Some("+1999"), None));
    }

    fn load(forward: &str) -> Result<Settings, ConfigError> {
        let text = format!(
            "[server]\npublic_url = \"https://hooks.example.com/volt/a1b2c3d4e5f6a7b8c9\"\n{forward}"
        );
        Settings::from_toml(std::path::Path::new("volt.toml"), &text, [])
    }

    #[test]
    fn sinks_are_read_with_defaults() {
        let settings = load(
            "[[forward]]\nname = \"crm\"\ntype = \"http\"\nurl = \"https://crm.example.com/in\"\n\
             headers = { Authorization = \"Bearer x\" }\n\
             [[forward]]\nname = \"script\"\ntype = \"Command\"\nprogram = \"/usr/local/bin/on-sms\"\n\
             args = [\"--quiet\"]\nevent_types = [\"message.received\"]\ndirection = \"Inbound\"\n",
        )
        .unwrap();
        let [crm, script] = &settings.forward[..] else {
            panic!("two sinks expected: {:?}", settings.forward);
        };
        assert_eq!(crm.retry.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(crm.retry.initial, DEFAULT_BACKOFF_INITIAL);
        assert_eq!(crm.timeout, DEFAULT_TIMEOUT);
        assert_eq!(crm.max_concurrency, 4);
        assert!(matches!(&crm.target, Target::Http(http) if http.headers.len() == 1));
        assert_eq!(script.max_concurrency, 1);
        assert_eq!(script.filter.event_types, ["message.received"]);
        assert_eq!(script.filter.direction, Some(Direction::Inbound));
        assert!(matches!(&script.target, Target::Command(command) if command.args == ["--quiet"]));
    }

    #[test]
    fn a_redis_sink_is_read_and_shown_without_its_password() {
        let settings = load(
            "[[forward]]\nname = \"bus\"\ntype = \"redis\"\n\
             url = \"redis://:hunter2@127.0.0.1:6379/0\"\nstream = \"volt:events\"\nmax_len = 1000\n",
        )
        .unwrap();
        let [bus] = &settings.forward[..] else {
            panic!("one sink expected: {:?}", settings.forward);
        };
        assert_eq!(bus.max_concurrency, 256);
        let Target::Redis(redis) = &bus.target else {
            panic!("a redis target expected: {bus:?}");
        };
        assert_eq!(
            (redis.stream.as_str(), redis.max_len),
            ("volt:events", Some(1000))
        );
        let shown = toml::to_string(&SinkEntry::from(bus.clone())).unwrap();
        assert!(
            shown.contains("url = \"redis://127.0.0.1:6379/0\""),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_nats_sink_is_read_and_shown_without_its_password() {
        let settings = load(
            "[[forward]]\nname = \"bus\"\ntype = \"nats\"\n\
             url = \"nats://voltd:hunter2@127.0.0.1:4222\"\nsubject = \"volt.events\"\n",
        )
        .unwrap();
        let [bus] = &settings.forward[..] else {
            panic!("one sink expected: {:?}", settings.forward);
        };
        assert_eq!(bus.max_concurrency, 256);
        let Target::Nats(nats) = &bus.target else {
            panic!("a nats target expected: {bus:?}");
        };
        assert_eq!(nats.subject, "volt.events");
        let shown = toml::to_string(&SinkEntry::from(bus.clone())).unwrap();
        assert!(shown.contains("url = \"nats://127.0.0.1:4222\""), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        for (forward, expected) in [
            (
                "url = \"redis://x/\"\nsubject = \"s\"\n",
                "url \"redis://x/\" is not a URL with a host and the scheme nats",
            ),
            ("url = \"nats://x/\"\n", "type = \"nats\" needs a subject"),
            (
                "url = \"nats://x/\"\nsubject = \"s\"\nstream = \"s\"\n",
                "stream only applies to type = \"redis\"",
            ),
        ] {
            let err = load(&format!(
                "[[forward]]\nname = \"a\"\ntype = \"nats\"\n{forward}"
            ))
            .err()
            .unwrap()
            .to_string();
            assert!(err.contains(expected), "{forward}: {err}");
        }
    }

    #[test]
    fn an_amqp_sink_is_read_and_shown_without_its_password() {
        let settings = load(
            "[[forward]]\nname = \"rabbit\"\ntype = \"amqp\"\n\
             url = \"amqp://guest:hunter2@127.0.0.1:5672/%2f\"\nrouting_key = \"volt-events\"\n",
        )
        .unwrap();
        let [rabbit] = &settings.forward[..] else {
            panic!("one sink expected: {:?}", settings.forward);
        };
        assert_eq!(rabbit.max_concurrency, 256);
        let Target::Amqp(amqp) = &rabbit.target else {
            panic!("an amqp target expected: {rabbit:?}");
        };
        assert_eq!(
            (amqp.exchange.as_str(), amqp.routing_key.as_str()),
            ("", "volt-events")
        );
        let shown = toml::to_string(&SinkEntry::from(rabbit.clone())).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("routing_key = \"volt-events\""), "{shown}");
        assert!(load(&format!("[[forward]]\n{shown}")).is_ok(), "{shown}");
    }

    #[test]
    fn broker_sinks_take_tls_urls_a_ca_file_and_nats_credentials() {
        // Loading reads neither file (see forward::files), so they need not exist.
        let (ca, creds) = ("/etc/voltd/broker-ca.pem", "/etc/voltd/voltd.creds");
        let mut forward = String::new();
        let nats_extra = format!(
            "subject = \"s\"\ncredentials_file = \"{creds}\"\n\
             client_cert_file = \"/etc/voltd/client.pem\"\n\
             client_key_file = \"/etc/voltd/client-key.pem\""
        );
        for (name, kind, url, extra) in [
            ("r", "redis", "rediss://:pw@broker:6380/0", "stream = \"s\""),
            ("n", "nats", "tls://broker:4222", nats_extra.as_str()),
            (
                "a",
                "amqp",
                "amqps://u:pw@broker:5671/%2f",
                "routing_key = \"q\"",
            ),
        ] {
            forward.push_str(&format!(
                "[[forward]]\nname = {name:?}\ntype = {kind:?}\nurl = {url:?}\n{extra}\n\
                 ca_file = \"{ca}\"\n"
            ));
        }
        let settings = load(&forward).unwrap();
        let [redis, nats, amqp] = &settings.forward[..] else {
            panic!("three sinks expected: {:?}", settings.forward);
        };
        let Target::Nats(target) = &nats.target else {
            panic!("{nats:?}");
        };
        assert_eq!(
            target.credentials_file.as_deref(),
            Some(std::path::Path::new(creds))
        );
        assert_eq!(
            target.client_certificate,
            Some(ClientCertificate {
                cert_file: "/etc/voltd/client.pem".into(),
                key_file: "/etc/voltd/client-key.pem".into(),
            })
        );
        for sink in [redis, nats, amqp] {
            let shown = toml::to_string(&SinkEntry::from(sink.clone())).unwrap();
            assert!(shown.contains(&format!("ca_file = \"{ca}\"")), "{shown}");
            assert!(!shown.contains("pw@"), "{shown}");
        }
        let shown: Vec<String> = settings
            .forward
            .iter()
            .map(|sink| toml::to_string(&SinkEntry::from(sink.clone())).unwrap())
            .collect();
        let again = format!("[[forward]]\n{}", shown.join("[[forward]]\n"));
        assert!(again.contains("credentials_file"), "{again}");
        assert!(again.contains("client_key_file"), "{again}");
        let reloaded = load(&again).unwrap();
        let Target::Nats(reloaded) = &reloaded.forward[1].target else {
            panic!("{again}");
        };
        assert_eq!(reloaded.client_certificate, target.client_certificate);
    }

    #[test]
    fn a_client_certificate_takes_both_files_and_only_nats_takes_one() {
        let nats = "[[forward]]\nname = \"n\"\ntype = \"nats\"\nurl = \"tls://b:4222\"\n\
                    subject = \"s\"\n";
        let error = load(&format!("{nats}client_cert_file = \"/c.pem\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("client_cert_file and client_key_file go together"),
            "{error}"
        );
        let redis = "[[forward]]\nname = \"r\"\ntype = \"redis\"\nurl = \"rediss://b/\"\n\
                     stream = \"s\"\nclient_cert_file = \"/c.pem\"\nclient_key_file = \"/k.pem\"\n";
        let error = load(redis).unwrap_err().to_string();
        assert!(error.contains("client_cert_file"), "{error}");
    }

    #[test]
    fn mistakes_are_named() {
        for (forward, expected) in [
            (
                "name = \"a\"\ntype = \"http\"\n",
                "forward[0]: sink \"a\": type = \"http\" needs a url",
            ),
            (
                "name = \"a\"\ntype = \"mail\"\n",
                "forward[0].type: unknown variant `mail`",
            ),
            ("name = \"a\"\ntype = \"command\"\n", "needs a program"),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"http://x/\"\nargs = [\"-v\"]\n",
                "sink \"a\": args only applies to type = \"command\"",
            ),
            (
                "name = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\ndirection = \"up\"\n",
                "forward[0].direction: unknown variant `up`, expected `inbound` or `outbound`",
            ),
            (
                "name = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\nmax_attempts = 0\n",
                "forward[0].max_attempts: must be greater than zero",
            ),
            (
                "name = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\ncolour = 1\n",
                "forward[0].colour: unknown field `colour`",
            ),
            (
                "name = \" \"\ntype = \"command\"\nprogram = \"/bin/true\"\n",
                "needs a non-empty name",
            ),
            (
                "type = \"command\"\nprogram = \"/bin/true\"\n",
                "forward[0].name: is required",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"mailto:a@example.com\"\n",
                "forward[0]: sink \"a\": url \"mailto:a@example.com\" is not a URL with a \
                 host and the scheme http or https; use an absolute http:// or https:// URL",
            ),
            (
                "name = \"a\"\ntype = \"redis\"\nurl = \"http://x/\"\nstream = \"s\"\n",
                "sink \"a\": url \"http://x/\" is not a URL with a host and the scheme redis or \
                 rediss; use an absolute redis:// or rediss:// URL",
            ),
            (
                "name = \"a\"\ntype = \"redis\"\nurl = \"redis://x/\"\n",
                "sink \"a\": type = \"redis\" needs a stream",
            ),
            (
                "name = \"a\"\ntype = \"redis\"\nurl = \"redis://x/\"\nstream = \"s\"\nmax_len = 0\n",
                "forward[0].max_len: must be greater than zero",
            ),
            (
                "name = \"a\"\ntype = \"amqp\"\nurl = \"amqp://x/%2f\"\n",
                "sink \"a\": type = \"amqp\" needs a routing_key (with the default exchange, \
                 the name of the queue)",
            ),
            (
                "name = \"a\"\ntype = \"amqp\"\nurl = \"redis://x/\"\nrouting_key = \"q\"\n",
                "sink \"a\": url \"redis://x/\" is not a URL with a host and the scheme amqp or \
                 amqps; use an absolute amqp:// or amqps:// URL",
            ),
            (
                "name = \"a\"\ntype = \"redis\"\nurl = \"redis://x/\"\nstream = \"s\"\nexchange = \"e\"\n",
                "sink \"a\": exchange only applies to type = \"amqp\"",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"http://x/\"\nstream = \"s\"\n",
                "sink \"a\": stream only applies to type = \"redis\"",
            ),
            (
                "name = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\nurl = \"redis://x/\"\n",
                "sink \"a\": url only applies to type = \"http\" or type = \"redis\" or type = \"nats\" \
                 or type = \"amqp\"",
            ),
            (
                "name = \"a\"\ntype = \"redis\"\nurl = \"redis://x/\"\nstream = \"s\"\n\
                 ca_file = \"/dev/null\"\n",
                "sink \"a\": ca_file needs TLS: use rediss:// instead of redis://",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"https://x/\"\nca_file = \"/x.pem\"\n",
                "sink \"a\": ca_file only applies to type = \"redis\" or type = \"nats\" or \
                 type = \"amqp\"",
            ),
            (
                "name = \"a\"\ntype = \"redis\"\nurl = \"redis://x/\"\nstream = \"s\"\n\
                 credentials_file = \"/x.creds\"\n",
                "sink \"a\": credentials_file only applies to type = \"nats\"",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"http://x/\"\nheaders = { \"a b\" = \"c\" }\n",
                "forward[0].headers: header a b is not valid",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"http://x/\"\nsigning_secret = \"whsec_\"\n",
                "forward[0].signing_secret: is empty",
            ),
        ] {
            let err = load(&format!("[[forward]]\n{forward}"))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(expected), "{forward}: {err}");
            let unknown_key = expected.contains("unknown field");
            assert_eq!(err.contains("remove or correct"), unknown_key, "{err}");
        }
        let twice = "[[forward]]\nname = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\n";
        let err = load(&format!("{twice}{twice}")).err().unwrap();
        assert_eq!(
            err.to_string(),
            "forward[1]: sink \"a\": the name is used by another [[forward]] entry"
        );
    }

    #[test]
    fn a_fraction_in_a_sink_is_refused() {
        let err = load(
            "[[forward]]\nname = \"a\"\ntype = \"command\"\nprogram = \"/bin/true\"\n\
             timeout_secs = 2.5\n",
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .starts_with("forward[0].timeout_secs: 2.5 is not a whole number"),
            "{err}"
        );
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
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(key.expose_secret().len(), 24);
        assert!(signing_key("whsec_%%%").is_err());
        assert_eq!(signing_key("plain").unwrap().expose_secret(), b"plain");
    }
}
