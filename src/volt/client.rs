//! A small GraphQL client over awc. It stores nothing; callers decide what to record.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::webhook::Webhook;

const REGISTER_WEBHOOK: &str = include_str!("register_webhook.graphql");
/// Volt's answers are small; anything larger is not an answer we understand.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum VoltError {
    #[error(
        "Volt rejected the API token ({detail}); check api.token / api.token_file: the token \
         may be wrong, expired or lack permission to manage webhooks"
    )]
    Unauthorized { detail: String },
    #[error(
        "Volt could not reach the webhook URL ({detail}): its test request to server.public_url \
         did not get a 200. Check that the URL is public, that the reverse proxy or firewall \
         forwards it to voltd's listener, that TLS is valid, and that the path matches"
    )]
    WebhookUnreachable { detail: String },
    #[error("Volt API unavailable: {detail}")]
    Transient { detail: String },
    #[error("Volt refused the registration: {detail}")]
    Rejected { detail: String },
}

impl VoltError {
    /// Worth trying again later: transport failures, timeouts, 429, 5xx, and Volt failing to
    /// reach us (a proxy or DNS change may fix that while we wait).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Transient { .. } | Self::WebhookUnreachable { .. }
        )
    }

    /// A short form for a status line.
    pub fn brief(&self) -> String {
        match self {
            Self::WebhookUnreachable { .. } => "Volt could not reach public_url".to_owned(),
            other => other.to_string().chars().take(120).collect(),
        }
    }

    /// A credential problem: the daemon should stop with EX_CONFIG.
    pub fn is_credential(&self) -> bool {
        matches!(self, Self::Unauthorized { .. })
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
            .map_err(|e| VoltError::Transient {
                detail: format!("request to {} failed: {e}", self.endpoint),
            })?;
        let status = response.status();
        let body = response
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| VoltError::Transient {
                detail: format!("reading the response failed: {e}"),
            })?;
        interpret(status, &body)
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
/// failures even on HTTP 200.
fn interpret(status: StatusCode, body: &[u8]) -> Result<Webhook, VoltError> {
    let parsed: Option<GraphQlResponse> = serde_json::from_slice(body).ok();
    let messages = parsed
        .as_ref()
        .map(|r| {
            r.errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|m| !m.is_empty());
    let detail = || {
        let text = messages.clone().unwrap_or_else(|| snippet(body));
        format!("HTTP {}: {text}", status.as_u16())
    };
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(VoltError::Unauthorized { detail: detail() });
    }
    if let Some(messages) = &messages {
        let lower = messages.to_lowercase();
        if lower.contains("failed to respond successfully") {
            return Err(VoltError::WebhookUnreachable { detail: detail() });
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
            return Err(VoltError::Unauthorized { detail: detail() });
        }
    }
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        return Err(VoltError::Transient { detail: detail() });
    }
    if messages.is_some() || !status.is_success() {
        return Err(VoltError::Rejected { detail: detail() });
    }
    let webhook = parsed
        .and_then(|r| r.data)
        .and_then(|mut data| data.get_mut("registerWebhook").map(Value::take))
        .and_then(|w| webhook_from(&w));
    webhook.ok_or_else(|| VoltError::Rejected {
        detail: format!("unexpected answer: {}", snippet(body)),
    })
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

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}{name}")).unwrap()
    }

    #[test]
    fn success_is_parsed() {
        let webhook = interpret(StatusCode::OK, &fixture("register-ok.json")).unwrap();
        assert_eq!(webhook.id, "wh_01");
        assert_eq!(
            webhook.created_at.as_deref(),
            Some("2026-11-26T20:00:00.000Z")
        );
    }

    #[test]
    fn graphql_errors_on_http_200_are_classified() {
        let e = interpret(StatusCode::OK, &fixture("register-unauthorized.json")).unwrap_err();
        assert!(e.is_credential(), "{e}");
        let e = interpret(StatusCode::OK, &fixture("register-unreachable.json")).unwrap_err();
        assert!(matches!(e, VoltError::WebhookUnreachable { .. }), "{e}");
        assert!(e.is_transient());
        let e =
            interpret(StatusCode::OK, br#"{"errors":[{"message":"invalid url"}]}"#).unwrap_err();
        assert!(matches!(e, VoltError::Rejected { .. }), "{e}");
    }

    #[test]
    fn http_statuses_are_classified() {
        assert!(
            interpret(StatusCode::FORBIDDEN, b"")
                .unwrap_err()
                .is_credential()
        );
        assert!(
            interpret(StatusCode::BAD_GATEWAY, b"<html>")
                .unwrap_err()
                .is_transient()
        );
        assert!(
            interpret(StatusCode::TOO_MANY_REQUESTS, b"")
                .unwrap_err()
                .is_transient()
        );
        let e = interpret(StatusCode::BAD_REQUEST, b"nope").unwrap_err();
        assert!(!e.is_transient() && !e.is_credential());
    }

    #[test]
    fn numeric_id_is_kept_as_text() {
        let w = interpret(
            StatusCode::OK,
            br#"{"data":{"registerWebhook":{"id":7,"url":"u"}}}"#,
        );
        assert_eq!(w.unwrap().id, "7");
    }

    #[test]
    fn missing_data_is_an_error_not_a_panic() {
        assert!(interpret(StatusCode::OK, b"{}").is_err());
        assert!(interpret(StatusCode::OK, b"").is_err());
    }
}
