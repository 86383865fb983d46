//! The public webhook endpoint: `POST <path of server.public_url>`.
//!
//! The body is taken as raw bytes under an explicit size limit and read deadline, stored
//! exactly as received, and answered with 200 only once the store has committed it.

mod extract;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use chrono::Utc;

use crate::access::ClientIp;
use crate::config::{VerifyMode, VerifySettings};
use crate::event::{NewEvent, StoreOutcome};
use crate::log_limit::LogLimiter;
use crate::metrics::{Metrics, Rejection};
use crate::signature::{self, SIGNATURE_HEADER, Verdict};
use crate::store::{EventWriter, WriteError};
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

/// Register the webhook route and the JSON 404 for every other path.
pub fn configure(
    path: &str,
    receiver: web::Data<Receiver>,
) -> impl FnOnce(&mut web::ServiceConfig) {
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
            .map(|ip| ip.to_string()),
        body: body.to_vec(),
        fields,
        signature,
    };
    let bytes = event.body.len();
    let summary = event.fields.clone();
    let outcome = receiver.writer.submit(event).await.map_err(|e| match &e {
        WriteError::QueueFull => receiver.refuse(
            ReceiveError::Unavailable,
            Rejection::backpressure,
            "write queue full; answering 503",
        ),
        _ => {
            tracing::error!(error = %e, "Event not stored; answering 503");
            receiver.metrics.rejected(Rejection::store);
            ReceiveError::Unavailable
        }
    })?;
    receiver
        .metrics
        .event_stored(summary.event_type.as_deref(), outcome.is_duplicate());
    if !is_json || summary.event_type.is_none() {
        tracing::warn!(
            id = outcome.id(),
            bytes,
            is_json,
            "Event has no recognisable Volt fields; stored raw"
        );
    }
    tracing::info!(
        id = outcome.id(),
        event_type = summary.event_type.as_deref().unwrap_or(""),
        direction = summary.direction.as_deref().unwrap_or(""),
        from = summary.from.as_deref().unwrap_or(""),
        to = summary.to.as_deref().unwrap_or(""),
        bytes,
        duplicate = outcome.is_duplicate(),
        signature = signature.as_str(),
        "Event stored"
    );
    let (status, id) = match outcome {
        StoreOutcome::Stored(id) => ("stored", id),
        StoreOutcome::Duplicate(id) => ("duplicate", id),
    };
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(format!(r#"{{"status":"{status}","id":{id}}}"#)))
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
