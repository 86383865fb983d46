//! HTTP sinks: POST the raw body, with optional Standard Webhooks signing.

use chrono::Utc;
use secrecy::ExposeSecret as _;

use super::signing::sign;
use super::sink::{DeliveryError, ERROR_KEEP_BYTES, delivery_key, truncate};
use crate::config::{HttpTarget, origin};
use crate::event::StoredEvent;
use crate::printable::scrubbed;

pub(super) async fn post(
    client: &awc::Client,
    target: &HttpTarget,
    event: &StoredEvent,
) -> Result<(), DeliveryError> {
    let url = &target.url;
    let mut request = client
        .post(url.as_str())
        .insert_header((
            "Content-Type",
            event.content_type.as_deref().unwrap_or("application/json"),
        ))
        .insert_header(("X-Voltd-Event-Id", event.id.to_string()))
        .insert_header((
            "X-Voltd-Event-Type",
            event.fields.event_type.as_deref().unwrap_or(""),
        ));
    for (name, value) in &target.headers {
        request = request.insert_header((name.as_str(), value.as_str()));
    }
    if let Some(key) = &target.signing_key {
        let message_id = delivery_key(event);
        let timestamp = Utc::now().timestamp();
        request = request
            .insert_header(("webhook-id", message_id.as_str()))
            .insert_header(("webhook-timestamp", timestamp.to_string()))
            .insert_header((
                "webhook-signature",
                sign(key.expose_secret(), &message_id, timestamp, &event.body),
            ));
    }
    // awc's own error is not kept: its text may include the whole URL (see RequestFailure).
    let mut response =
        request
            .send_body(event.body.clone())
            .await
            .map_err(|e| DeliveryError::Request {
                origin: origin(url),
                source: e.into(),
            })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.body().limit(ERROR_KEEP_BYTES * 16).await;
    // The answer is logged and kept with the delivery: a sink that echoes the request must not
    // put the credentials of `headers` there.
    let secrets: Vec<&str> = target.headers.values().map(String::as_str).collect();
    Err(DeliveryError::Status {
        origin: origin(url),
        status,
        body: body
            .map(|b| truncate(&scrubbed(&String::from_utf8_lossy(&b), &secrets)))
            .unwrap_or_default(),
    })
}
