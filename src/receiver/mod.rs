//! The public webhook endpoint: `POST <path of server.public_url>`.
//!
//! The body is taken as raw bytes under an explicit size limit, stored exactly as received,
//! and answered with 200 only once the store has committed it.

mod extract;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::Utc;

use crate::event::{NewEvent, StoreOutcome};
use crate::store::{EventWriter, WriteError};
pub use extract::extract;

/// How long a sender should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";

/// Register the webhook route and the JSON 404 for every other path.
pub fn configure(path: &str, max_body_bytes: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    let path = path.to_owned();
    move |cfg| {
        cfg.app_data(web::PayloadConfig::new(max_body_bytes))
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

async fn receive(
    request: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
    writer: web::Data<EventWriter>,
) -> Result<HttpResponse, ReceiveError> {
    let body = body.map_err(|e| {
        let too_large = e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE;
        tracing::warn!(error = %e, "Rejected a webhook request body");
        if too_large {
            ReceiveError::TooLarge
        } else {
            ReceiveError::BadBody
        }
    })?;
    let (fields, is_json) = extract(&body);
    let event = NewEvent {
        received_at: Utc::now(),
        content_type: request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        remote_addr: request.peer_addr().map(|a| a.to_string()),
        body: body.to_vec(),
        fields,
    };
    let bytes = event.body.len();
    let summary = event.fields.clone();
    let outcome = writer.submit(event).await.map_err(|e| {
        match &e {
            WriteError::QueueFull => tracing::warn!("Write queue full; answering 503"),
            _ => tracing::error!(error = %e, "Event not stored; answering 503"),
        }
        ReceiveError::Unavailable
    })?;
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

async fn not_found() -> HttpResponse {
    ReceiveError::NotFound.error_response()
}

async fn method_not_allowed() -> HttpResponse {
    ReceiveError::MethodNotAllowed.error_response()
}
