//! The public webhook endpoint: `POST <path of server.public_url>`.
//!
//! The body is taken as raw bytes under an explicit size limit and read deadline, stored
//! exactly as received, and answered with 200 only once the store has committed it.

pub mod access;
mod extract;
pub mod tls;

use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use anyhow::Context;
use chrono::Utc;

use access::{AccessPolicy, ClientIp};
use tls::ReloadableCert;

use crate::config::{ServerSettings, VerifyMode, VerifySettings};
use crate::error_chain::ErrorChain;
use crate::event::{NewEvent, StoreOutcome, Verdict};
use crate::log_limit::LogLimiter;
use crate::ops::metrics::{Metrics, Rejection};
use crate::store::{EventWriter, WriteError};
use crate::volt::signature::{self, SIGNATURE_HEADER};
pub use extract::extract;

/// How long a sender should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";
/// At most one refusal warning per reason in this interval; the rest are counted.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What the endpoint needs, shared by all workers.
pub struct Receiver {
    writer: EventWriter,
    metrics: Arc<Metrics>,
    verify: VerifySettings,
    max_body_bytes: usize,
    body_timeout: Duration,
    refusals: LogLimiter,
    unverified: LogLimiter,
}

impl Receiver {
    pub fn new(
        writer: EventWriter,
        metrics: Arc<Metrics>,
        verify: VerifySettings,
        max_body_bytes: usize,
        body_timeout: Duration,
    ) -> Self {
        Self {
            writer,
            metrics,
            verify,
            max_body_bytes,
            body_timeout,
            refusals: LogLimiter::new(WARNING_INTERVAL),
            unverified: LogLimiter::new(WARNING_INTERVAL),
        }
    }

    /// Count a refusal and log it at WARN, rate-limited so a flood cannot flood the journal.
    fn refuse(&self, error: ReceiveError, reason: Rejection, detail: &str) -> ReceiveError {
        self.metrics.rejected(reason);
        if let Some(suppressed) = self.refusals.permit() {
            tracing::warn!(?reason, suppressed, "Refused a webhook request: {detail}");
        }
        error
    }
}

/// Serve the webhook endpoint on `listener` (plain HTTP, or TLS with `tls`), refusing clients
/// outside `server.allow_ips`. The server runs once awaited; signals are left to the caller.
pub fn serve(
    settings: &ServerSettings,
    listener: TcpListener,
    receiver: Receiver,
    tls: Option<&Arc<ReloadableCert>>,
) -> anyhow::Result<Server> {
    let local_addr = listener.local_addr()?;
    let path = settings.webhook_path().to_owned();
    let access = web::Data::new(AccessPolicy::new(
        settings.allow_ips.clone(),
        settings.trusted_proxies.clone(),
        receiver.metrics.clone(),
    ));
    let receiver = web::Data::new(receiver);
    // Without allow_ips or trusted proxies the peer address is all there is to know.
    let filter_clients = !settings.allow_ips.is_empty() || !settings.trusted_proxies.is_empty();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(access.clone())
            .wrap(Condition::new(filter_clients, from_fn(access::enforce)))
            .configure(configure(&path, receiver.clone()))
    })
    // A slow or silent client holds only its own connection, and only this long.
    .client_request_timeout(settings.request_timeout)
    .client_disconnect_timeout(Duration::from_secs(5))
    .max_connections(per_worker(settings.max_connections));
    let server = match tls {
        Some(cert) => server.listen_rustls_0_23(listener, cert.server_config()?),
        None => server.listen(listener),
    }
    .with_context(|| format!("cannot serve on {local_addr}"))?
    // Signals are handled in one place (the CLI) so shutdown also stops registration.
    .disable_signals()
    .shutdown_timeout(settings.shutdown_timeout.as_secs())
    .run();
    Ok(server)
}

/// actix applies its connection cap per worker thread.
fn per_worker(total: usize) -> usize {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    total.div_ceil(workers).max(1)
}

/// Register the webhook route and the JSON 404 for every other path.
fn configure(path: &str, receiver: web::Data<Receiver>) -> impl FnOnce(&mut web::ServiceConfig) {
    let path = path.to_owned();
    move |cfg| {
        cfg.app_data(receiver)
            .service(
                web::resource(path)
                    .route(web::post().to(receive))
                    .default_service(web::to(method_not_allowed)),
            )
            .default_service(web::to(not_found));
    }
}

/// Errors of the endpoint, each with a stable JSON body; details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("payload too large")]
    TooLarge,
    #[error("could not read the request body")]
    BadBody,
    #[error("the request body did not arrive in time")]
    Timeout,
    #[error("signature missing or invalid")]
    BadSignature,
    #[error("event not stored, try again")]
    Unavailable,
    #[error("not found")]
    NotFound,
    #[error("method not allowed; use POST")]
    MethodNotAllowed,
}

impl ResponseError for ReceiveError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody => StatusCode::BAD_REQUEST,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unavailable => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            Self::MethodNotAllowed => {
                response.insert_header((header::ALLOW, "POST"));
            }
            _ => {}
        }
        response.json(serde_json::json!({ "status": "error", "error": self.to_string() }))
    }
}

/// The whole body, within the size limit and the read deadline.
async fn read_body(
    request: &HttpRequest,
    payload: web::Payload,
    receiver: &Receiver,
) -> Result<web::Bytes, ReceiveError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = receiver.max_body_bytes;
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(receiver.refuse(
            ReceiveError::TooLarge,
            Rejection::size,
            "body over max_body_bytes",
        ));
    }
    match tokio::time::timeout(receiver.body_timeout, payload.to_bytes_limited(limit)).await {
        Ok(Ok(Ok(body))) => Ok(body),
        Ok(Ok(Err(e))) => {
            Err(receiver.refuse(ReceiveError::BadBody, Rejection::client, &e.to_string()))
        }
        Ok(Err(_)) => Err(receiver.refuse(
            ReceiveError::TooLarge,
            Rejection::size,
            "body over max_body_bytes",
        )),
        Err(_) => Err(receiver.refuse(
            ReceiveError::Timeout,
            Rejection::timeout,
            "body read timed out",
        )),
    }
}

fn check_signature(request: &HttpRequest, body: &[u8], verify: &VerifySettings) -> Verdict {
    match &verify.key {
        Some(key) => {
            let header = request
                .headers()
                .get(SIGNATURE_HEADER)
                .map(|v| v.as_bytes());
            signature::verify(key, header, body)
        }
        None => Verdict::Unchecked,
    }
}

async fn receive(
    request: HttpRequest,
    payload: web::Payload,
    receiver: web::Data<Receiver>,
) -> Result<HttpResponse, ReceiveError> {
    let body = read_body(&request, payload, &receiver).await?;
    let signature = check_signature(&request, &body, &receiver.verify);
    if matches!(signature, Verdict::Invalid | Verdict::Missing) {
        if receiver.verify.mode == VerifyMode::Enforce {
            return Err(receiver.refuse(
                ReceiveError::BadSignature,
                Rejection::signature,
                &format!("signature {signature}"),
            ));
        }
        if let Some(suppressed) = receiver.unverified.permit() {
            tracing::warn!(%signature, suppressed, "Storing an event whose Volt signature did not verify (verify.mode = \"log\")");
        }
    }
    let (fields, is_json) = extract(&body);
    let client = request.extensions().get::<ClientIp>().map(|ip| ip.0);
    let event = NewEvent {
        received_at: Utc::now(),
        content_type: request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        remote_addr: client
            .or_else(|| request.peer_addr().map(|a| a.ip()))
            .map(ip_text),
        // Without a copy when the body is a buffer of its own.
        body: Vec::from(body),
        fields,
        signature,
    };
    let bytes = event.body.len();
    let summary = Summary::of(&event);
    let outcome = receiver.writer.submit(event).await.map_err(|e| match &e {
        WriteError::QueueFull => receiver.refuse(
            ReceiveError::Unavailable,
            Rejection::backpressure,
            "write queue full; answering 503",
        ),
        _ => {
            tracing::error!(error = %ErrorChain(&e), "Event not stored; answering 503");
            receiver.metrics.rejected(Rejection::store);
            ReceiveError::Unavailable
        }
    })?;
    let [event_type, direction, from, to] = summary.parts();
    receiver.metrics.event_stored(
        summary.has_event_type.then_some(event_type),
        outcome.is_duplicate(),
    );
    if !is_json || !summary.has_event_type {
        tracing::warn!(
            id = outcome.id(),
            bytes,
            is_json,
            "Event has no recognisable Volt fields; stored raw"
        );
    }
    tracing::info!(
        id = outcome.id(),
        event_type,
        direction,
        from,
        to,
        bytes,
        duplicate = outcome.is_duplicate(),
        signature = signature.as_str(),
        "Event stored"
    );
    Ok(stored_response(outcome))
}

/// The fields the "Event stored" line names, kept in one string because the event itself
/// goes to the writer.
struct Summary {
    text: String,
    ends: [usize; 4],
    has_event_type: bool,
}

impl Summary {
    fn of(event: &NewEvent) -> Self {
        let f = &event.fields;
        let parts =
            [&f.event_type, &f.direction, &f.from, &f.to].map(|p| p.as_deref().unwrap_or(""));
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let ends = parts.map(|part| {
            text.push_str(part);
            text.len()
        });
        Self {
            text,
            ends,
            has_event_type: f.event_type.is_some(),
        }
    }

    /// Event type, direction, from and to; empty when absent.
    fn parts(&self) -> [&str; 4] {
        let mut start = 0;
        self.ends.map(|end| {
            let part = &self.text[start..end];
            start = end;
            part
        })
    }
}

/// `{"status":"stored","id":N}` (or `duplicate`), written without the formatting machinery.
fn stored_response(outcome: StoreOutcome) -> HttpResponse {
    let (status, id) = match outcome {
        StoreOutcome::Stored(id) => ("stored", id),
        StoreOutcome::Duplicate(id) => ("duplicate", id),
    };
    let mut body = String::with_capacity(48);
    body.push_str(r#"{"status":""#);
    body.push_str(status);
    body.push_str(r#"","id":"#);
    push_decimal(&mut body, id);
    body.push('}');
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(body)
}

fn push_decimal(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    let mut digits = [0u8; 20];
    let mut rest = n.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        out.push(char::from(digit));
    }
}

/// An address as `IpAddr`'s `Display` writes it; IPv4 without the formatting machinery.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_decimal(&mut text, i64::from(octet));
    }
    text
}

async fn not_found(receiver: web::Data<Receiver>) -> HttpResponse {
    receiver
        .refuse(ReceiveError::NotFound, Rejection::path, "unknown path")
        .error_response()
}

async fn method_not_allowed(receiver: web::Data<Receiver>) -> HttpResponse {
    receiver
        .refuse(
            ReceiveError::MethodNotAllowed,
            Rejection::method,
            "method other than POST",
        )
        .error_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.45",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn decimals_read_as_display_writes_them() {
        for n in [0, 7, 10, 99, 1234567890, -1, -45, i64::MAX, i64::MIN] {
            let mut text = String::new();
            push_decimal(&mut text, n);
            assert_eq!(text, n.to_string());
        }
    }

    #[test]
    fn summary_parts_are_the_logged_fields() {
        let mut event = NewEvent {
            received_at: Utc::now(),
            content_type: None,
            remote_addr: None,
            body: Vec::new(),
            fields: crate::event::EventFields {
                event_type: Some("message.received".into()),
                from: Some("+1555".into()),
                to: Some("+1666".into()),
                ..Default::default()
            },
            signature: Verdict::Unchecked,
        };
        let summary = Summary::of(&event);
        assert!(summary.has_event_type);
        assert_eq!(summary.parts(), ["message.received", "", "+1555", "+1666"]);
        event.fields = Default::default();
        let summary = Summary::of(&event);
        assert!(!summary.has_event_type);
        assert_eq!(summary.parts(), ["", "", "", ""]);
    }
}
