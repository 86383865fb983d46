//! A small GraphQL client over awc. It stores nothing; callers decide what to record.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::error_chain::ErrorChain;
use crate::printable::scrubbed_start;
use crate::request_failure::RequestFailure;
use crate::webhook::Webhook;

const REGISTER_WEBHOOK: &str = include_str!("register_webhook.graphql");
/// Volt's answers are small; anything larger is not an answer we understand.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// How much of each GraphQL error message, or of a body without any, an error shows.
const SHOWN_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum VoltError {
    #[error(
        "Volt rejected the API token ({answer}); check api.token / api.token_file: the token \
         may be wrong, expired or lack permission to manage webhooks"
    )]
    Unauthorized { answer: VoltAnswer },
    #[error(
        "Volt could not reach the webhook URL ({answer}): its test request to server.public_url \
         did not get a 200. Check that the URL is public, that the reverse proxy or firewall \
         forwards it to voltd's listener, that TLS is valid, and that the path matches"
    )]
    WebhookUnreachable { answer: VoltAnswer },
    #[error("Volt API unavailable: {answer}")]
    Unavailable { answer: VoltAnswer },
    #[error(
        "Volt API unavailable: the request to {endpoint} failed (check api.url, and that this \
         host can reach it: DNS, firewall, outbound proxy)"
    )]
    Request {
        endpoint: Url,
        #[source]
        source: RequestFailure,
    },
    #[error("Volt API unavailable: its answer could not be read")]
    Response {
        #[source]
        source: PayloadError,
    },
    #[error("Volt refused the registration: {answer}")]
    Rejected { answer: VoltAnswer },
    #[error(
        "Volt's answer holds no webhook ({answer}); check that api.url is Volt's GraphQL endpoint"
    )]
    Unexpected { answer: VoltAnswer },
}

impl VoltError {
    /// Worth trying again later: transport failures, timeouts, 429, 5xx, and Volt failing to
    /// reach us (a proxy or DNS change may fix that while we wait).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Request { .. }
                | Self::Response { .. }
                | Self::WebhookUnreachable { .. }
        )
    }

    /// Nothing listens at `api.url`: the connection was refused outright, which a timeout
    /// or an HTTP error is not.
    pub fn is_connection_refused(&self) -> bool {
        matches!(
            self,
            Self::Request {
                source: RequestFailure::Connect(Some(e)),
                ..
            } if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    }

    /// A short form for a status line.
    pub fn brief(&self) -> String {
        match self {
            Self::WebhookUnreachable { .. } => "Volt could not reach public_url".to_owned(),
            other => ErrorChain(other).to_string().chars().take(120).collect(),
        }
    }

    /// A credential problem: the daemon should stop with EX_CONFIG.
    pub fn is_credential(&self) -> bool {
        matches!(self, Self::Unauthorized { .. })
    }
}

/// What Volt answered to a request that did not give a webhook.
#[derive(Debug, Clone)]
pub struct VoltAnswer {
    pub status: StatusCode,
    pub said: VoltSaid,
}

#[derive(Debug, Clone)]
pub enum VoltSaid {
    /// The `message` of each GraphQL error.
    Messages(Vec<String>),
    /// The start of a body that holds no GraphQL errors, trimmed; empty for an empty body.
    Body(String),
}

impl fmt::Display for VoltAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: ", self.status.as_u16())?;
        match &self.said {
            VoltSaid::Messages(messages) => f.write_str(&messages.join("; ")),
            VoltSaid::Body(snippet) if snippet.is_empty() => f.write_str("(empty body)"),
            VoltSaid::Body(snippet) => f.write_str(snippet),
        }
    }
}

pub struct VoltClient {
    http: awc::Client,
    endpoint: Url,
    token: SecretString,
}

impl VoltClient {
    /// awc clients are tied to the current actix runtime; build one where it is used.
    pub fn new(endpoint: Url, token: SecretString, timeout: Duration) -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore::from_iter(
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
        ))
        .with_no_client_auth();
        let http = awc::Client::builder()
            .timeout(timeout)
            .connector(
                awc::Connector::new()
                    .timeout(timeout)
                    .rustls_0_23(Arc::new(tls)),
            )
            .finish();
        Self {
            http,
            endpoint,
            token,
        }
    }

    /// `api.url`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub async fn register_webhook(&self, url: &str) -> Result<Webhook, VoltError> {
        let request = serde_json::json!({
            "query": REGISTER_WEBHOOK,
            "operationName": "RegisterWebhook",
            "variables": { "url": url },
        });
        let mut response = self
            .http
            .post(self.endpoint.as_str())
            .bearer_auth(self.token.expose_secret())
            .send_json(&request)
            .await
            .map_err(|e| VoltError::Request {
                endpoint: self.endpoint.clone(),
                source: e.into(),
            })?;
        let status = response.status();
        let body = response
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|source| VoltError::Response { source })?;
        interpret(status, &body, self.token.expose_secret())
    }
}

#[derive(Deserialize)]
struct GraphQlResponse {
    data: Option<Value>,
    #[serde(default)]
    errors: Vec<GraphQlError>,
}

#[derive(Deserialize)]
struct GraphQlError {
    message: String,
}

/// Turn an HTTP status and body into a webhook or a classified error. GraphQL errors are
/// failures even on HTTP 200. What Volt said is shortened, and `token` and any
/// `Authorization` or `Bearer` value are cut out of it: an API (or a proxy in front of it)
/// that echoes the request in its error would otherwise put the token into the log.
fn interpret(status: StatusCode, body: &[u8], token: &str) -> Result<Webhook, VoltError> {
    let parsed: Option<GraphQlResponse> = serde_json::from_slice(body).ok();
    let shown = |text: &str| scrubbed_start(text, &[token], SHOWN_CHARS);
    let messages: Vec<String> = parsed
        .as_ref()
        .map(|r| r.errors.iter().map(|e| shown(&e.message)).collect())
        .unwrap_or_default();
    let lower = messages.join("; ").to_lowercase();
    let answer = || VoltAnswer {
        status,
        said: if messages.is_empty() {
            VoltSaid::Body(shown(&String::from_utf8_lossy(body)))
        } else {
            VoltSaid::Messages(messages.clone())
        },
    };
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(VoltError::Unauthorized { answer: answer() });
    }
    if lower.contains("failed to respond successfully") {
        return Err(VoltError::WebhookUnreachable { answer: answer() });
    }
    if [
        "unauthorized",
        "unauthenticated",
        "forbidden",
        "invalid token",
        "jwt",
    ]
    .iter()
    .any(|word| lower.contains(word))
    {
        return Err(VoltError::Unauthorized { answer: answer() });
    }
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        return Err(VoltError::Unavailable { answer: answer() });
    }
    if !messages.is_empty() || !status.is_success() {
        return Err(VoltError::Rejected { answer: answer() });
    }
    let webhook = parsed
        .and_then(|r| r.data)
        .and_then(|mut data| data.get_mut("registerWebhook").map(Value::take))
        .and_then(|w| webhook_from(&w));
    webhook.ok_or_else(|| VoltError::Unexpected { answer: answer() })
}

fn webhook_from(value: &Value) -> Option<Webhook> {
    let text = |key: &str| match value.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    Some(Webhook {
        id: text("id")?,
        url: text("url").unwrap_or_default(),
        created_at: text("createdAt"),
        last_updated_at: text("lastUpdatedAt"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    const TOKEN: &str = "volt-token-7Hq2";

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}{name}")).unwrap()
    }

    fn answer(status: StatusCode, body: &[u8]) -> Result<Webhook, VoltError> {
        interpret(status, body, TOKEN)
    }

    #[test]
    fn success_is_parsed() {
        let webhook = answer(StatusCode::OK, &fixture("register-ok.json")).unwrap();
        assert_eq!(webhook.id, "wh_01");
        assert_eq!(
            webhook.created_at.as_deref(),
            Some("2026-11-26T20:00:00.000Z")
        );
    }

    #[test]
    fn graphql_errors_on_http_200_are_classified() {
        let e = answer(StatusCode::OK, &fixture("register-unauthorized.json")).unwrap_err();
        assert!(e.is_credential(), "{e}");
        let e = answer(StatusCode::OK, &fixture("register-unreachable.json")).unwrap_err();
        assert!(matches!(e, VoltError::WebhookUnreachable { .. }), "{e}");
        assert!(e.is_transient());
        let e = answer(StatusCode::OK, br#"{"errors":[{"message":"invalid url"}]}"#).unwrap_err();
        assert!(matches!(e, VoltError::Rejected { .. }), "{e}");
    }

    #[test]
    fn http_statuses_are_classified() {
        assert!(
            answer(StatusCode::FORBIDDEN, b"")
                .unwrap_err()
                .is_credential()
        );
        assert!(
            answer(StatusCode::BAD_GATEWAY, b"<html>")
                .unwrap_err()
                .is_transient()
        );
        assert!(
            answer(StatusCode::TOO_MANY_REQUESTS, b"")
                .unwrap_err()
                .is_transient()
        );
        let e = answer(StatusCode::BAD_REQUEST, b"nope").unwrap_err();
        assert!(!e.is_transient() && !e.is_credential());
    }

    #[test]
    fn the_message_says_the_status_and_what_volt_said() {
        let e = answer(
            StatusCode::OK,
            br#"{"errors":[{"message":"invalid url"},{"message":"use https"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Volt refused the registration: HTTP 200: invalid url; use https"
        );
        let e = answer(StatusCode::BAD_GATEWAY, b"  <html>bad gateway</html>\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Volt API unavailable: HTTP 502: <html>bad gateway</html>"
        );
        let e = answer(StatusCode::SERVICE_UNAVAILABLE, b"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Volt API unavailable: HTTP 503: (empty body)"
        );
    }

    #[test]
    fn a_token_volt_echoes_is_redacted() {
        let errors = format!(r#"{{"errors":[{{"message":"invalid token {TOKEN}"}}]}}"#);
        let body = format!("token {TOKEN} expired");
        let proxy = format!(
            "<pre>{}\nAuthorization: Bearer {TOKEN}\nX-Via: proxy</pre>",
            "request headers ".repeat(10)
        );
        let echoed = r#"{"errors":[{"message":"bad request; headers {\"authorization\": \"Bearer other-Zk81\"}"}]}"#;
        for (status, body) in [
            (StatusCode::OK, errors.as_bytes()),
            (StatusCode::UNAUTHORIZED, body.as_bytes()),
            (StatusCode::BAD_GATEWAY, body.as_bytes()),
            (StatusCode::BAD_REQUEST, proxy.as_bytes()),
            (StatusCode::INTERNAL_SERVER_ERROR, echoed.as_bytes()),
        ] {
            let e = answer(status, body).unwrap_err();
            let text = e.to_string();
            assert!(!text.contains(TOKEN) && !text.contains("Zk81"), "{text}");
            assert!(text.contains("[redacted]"), "{text}");
        }
    }

    #[test]
    fn numeric_id_is_kept_as_text() {
        let w = answer(
            StatusCode::OK,
            br#"{"data":{"registerWebhook":{"id":7,"url":"u"}}}"#,
        );
        assert_eq!(w.unwrap().id, "7");
    }

    #[test]
    fn long_answers_are_shortened() {
        let long = "x".repeat(5_000);
        let errors = format!(r#"{{"errors":[{{"message":"{long}"}},{{"message":"second"}}]}}"#);
        for body in [long.as_str(), errors.as_str()] {
            let text = answer(StatusCode::BAD_GATEWAY, body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(text.len() < 2 * SHOWN_CHARS + 100, "{} bytes", text.len());
        }
    }

    #[test]
    fn missing_data_is_an_error_not_a_panic() {
        assert!(answer(StatusCode::OK, b"{}").is_err());
        assert!(answer(StatusCode::OK, b"").is_err());
    }
}
