//! The public webhook endpoint: `POST <path of server.public_url>`.
//!
//! The body is taken as raw bytes under an explicit size limit and read deadline, stored
//! exactly as received, and answered with 200 only once the store has committed it.

pub mod access;
mod body;
pub mod decode;
pub mod extract;
pub mod signatures;
pub mod tls;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use anyhow::Context;
use chrono::Utc;
use serde::Serialize;

use access::{AccessPolicy, ClientIp};
use signatures::SignatureCheck;
use tls::ReloadableCert;

use crate::config::{ServerSettings, VerifyMode};
use crate::error_chain::ErrorChain;
use crate::event::{NewEvent, StoreOutcome, Verdict};
use crate::log_limit::{LogLimiter, LogLimiterByKind};
use crate::ops::metrics::{Metrics, Rejection};
use crate::printable::visible_start;
use crate::store::{EventWriter, WriteError};
use crate::volt::signature::{self, SIGNATURE_HEADER};
pub use extract::extract;

/// How long a sender should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";
/// At most one refusal warning per reason in this interval; the rest are counted.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// After an answer to a request whose body was not read to its end (408, 413), how long the
/// connection may linger, its input read and discarded, before it is closed; also the most a
/// TLS close may take. Lingering lets the answer reach a client that is still sending
/// (closing at once would reset the connection and could destroy the answer), but a client
/// that stalls must not hold the connection long after its answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How much of a refused request's path a log line shows.
const LOGGED_PATH_CHARS: usize = 100;

/// What the endpoint needs, shared by all workers.
pub struct Receiver {
    writer: EventWriter,
    metrics: Arc<Metrics>,
    verify: SignatureCheck,
    max_body_bytes: usize,
    body_timeout: Duration,
    refusals: LogLimiterByKind<Rejection>,
    unverified: LogLimiter,
    unrecognised: LogLimiter,
}

impl Receiver {
    pub fn new(
        writer: EventWriter,
        metrics: Arc<Metrics>,
        verify: SignatureCheck,
        max_body_bytes: usize,
        body_timeout: Duration,
    ) -> Self {
        Self {
            writer,
            metrics,
            verify,
            max_body_bytes,
            body_timeout,
            refusals: LogLimiterByKind::new(WARNING_INTERVAL),
            unverified: LogLimiter::new(WARNING_INTERVAL),
            unrecognised: LogLimiter::new(WARNING_INTERVAL),
        }
    }

    /// Count a refusal and log it at WARN, at most once per interval for each reason, so a
    /// flood cannot flood the journal nor hide a refusal of another kind.
    fn refuse(&self, error: ReceiveError, reason: Rejection, detail: &str) -> ReceiveError {
        self.metrics.rejected(reason);
        if let Some(suppressed) = self.refusals.permit(reason) {
            tracing::warn!(?reason, suppressed, "Refused a webhook request: {detail}");
        }
        error
    }

    /// An event the store could not commit: counted, and logged as an error with the same
    /// limit as a refusal (a full disk would otherwise log a line for every request).
    fn not_stored(&self, error: &WriteError) -> ReceiveError {
        self.metrics.rejected(Rejection::store);
        if let Some(suppressed) = self.refusals.permit(Rejection::store) {
            tracing::error!(
                error = %ErrorChain(error),
                suppressed,
                "Event not stored; answering 503"
            );
        }
        ReceiveError::Unavailable
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
    .client_disconnect_timeout(CLOSE_TIMEOUT)
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
    #[error(
        "Content-Encoding not supported; send {}, or no Content-Encoding",
        decode::SUPPORTED
    )]
    UnsupportedEncoding,
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
            Self::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        // The rest of the body was never read: the connection cannot carry another request,
        // and a slow sender must not hold it open after its answer.
        if matches!(
            self,
            Self::Timeout | Self::TooLarge | Self::UnsupportedEncoding
        ) {
            response.force_close();
        }
        match self {
            Self::Unavailable => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS));
            }
            Self::MethodNotAllowed => {
                response.insert_header((header::ALLOW, "POST"));
            }
            _ => {}
        }
        response.json(Answer::Error {
            error: self.to_string(),
        })
    }
}

/// Every JSON body the endpoint answers with, `status` first:
/// `{"status":"stored","id":N}`, `{"status":"duplicate","id":N}`,
/// `{"status":"error","error":"..."}`.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Answer {
    Stored { id: i64 },
    Duplicate { id: i64 },
    Error { error: String },
}

fn check_signature(request: &HttpRequest, body: &[u8], verify: &SignatureCheck) -> Verdict {
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
    let codings = body::content_codings(&request, &receiver)?;
    let body = body::read(&request, payload, &receiver).await?;
    let body = body::decoded(body, &codings, &receiver)?;
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
    // The event moves to the writer; the log line names these once it is stored.
    let event_type = fields.event_type.clone();
    let direction = fields.direction.clone();
    let from = fields.from.clone();
    let to = fields.to.clone();
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
            .map(|ip| ip.to_string()),
        content_encoding: decode::recorded(&codings),
        body,
        fields,
        signature,
    };
    let bytes = event.body.len();
    let outcome = receiver.writer.submit(event).await.map_err(|e| match &e {
        WriteError::QueueFull => receiver.refuse(
            ReceiveError::Unavailable,
            Rejection::backpressure,
            "write queue full; answering 503",
        ),
        _ => receiver.not_stored(&e),
    })?;
    receiver
        .metrics
        .event_stored(event_type.as_deref(), outcome.is_duplicate());
    if (!is_json || event_type.is_none())
        && let Some(suppressed) = receiver.unrecognised.permit()
    {
        tracing::warn!(
            id = outcome.id(),
            bytes,
            is_json,
            suppressed,
            "Event has no recognisable Volt fields; stored raw"
        );
    }
    tracing::info!(
        id = outcome.id(),
        event_type = event_type.as_deref().unwrap_or(""),
        direction = direction.as_deref().unwrap_or(""),
        from = from.as_deref().unwrap_or(""),
        to = to.as_deref().unwrap_or(""),
        bytes,
        duplicate = outcome.is_duplicate(),
        signature = signature.as_str(),
        "Event stored"
    );
    Ok(stored_response(outcome))
}

fn stored_response(outcome: StoreOutcome) -> HttpResponse {
    HttpResponse::Ok().json(match outcome {
        StoreOutcome::Stored(id) => Answer::Stored { id },
        StoreOutcome::Duplicate(id) => Answer::Duplicate { id },
    })
}

async fn not_found(request: HttpRequest, receiver: web::Data<Receiver>) -> HttpResponse {
    let path = visible_start(request.path(), LOGGED_PATH_CHARS);
    receiver
        .refuse(
            ReceiveError::NotFound,
            Rejection::path,
            &format!("unknown path {path}"),
        )
        .error_response()
}

async fn method_not_allowed(request: HttpRequest, receiver: web::Data<Receiver>) -> HttpResponse {
    let method = visible_start(request.method().as_str(), LOGGED_PATH_CHARS);
    receiver
        .refuse(
            ReceiveError::MethodNotAllowed,
            Rejection::method,
            &format!("method {method} instead of POST"),
        )
        .error_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: HttpResponse) -> (StatusCode, String, String) {
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[actix_web::test]
    async fn refusals_answer_a_stable_json_body() {
        let (status, content_type, body) =
            body_of(ReceiveError::Unavailable.error_response()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(content_type, "application/json");
        assert_eq!(
            body,
            r#"{"status":"error","error":"event not stored, try again"}"#
        );
        let (_, _, body) = body_of(ReceiveError::MethodNotAllowed.error_response()).await;
        assert_eq!(
            body,
            r#"{"status":"error","error":"method not allowed; use POST"}"#
        );
    }

    #[actix_web::test]
    async fn stored_events_are_answered_with_their_id() {
        let (status, content_type, body) = body_of(stored_response(StoreOutcome::Stored(7))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        assert_eq!(body, r#"{"status":"stored","id":7}"#);
        let (_, _, body) = body_of(stored_response(StoreOutcome::Duplicate(i64::MAX))).await;
        assert_eq!(body, r#"{"status":"duplicate","id":9223372036854775807}"#);
    }
}
