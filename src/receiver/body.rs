//! The request body: read whole within the size limit and the read deadline, then decoded
//! from its `Content-Encoding`, the decoded size bounded by the same limit.

use actix_web::http::header;
use actix_web::{HttpRequest, web};

use super::decode::{self, Coding, DecodeError};
use super::{LOGGED_PATH_CHARS, ReceiveError, Receiver};
use crate::error_chain::ErrorChain;
use crate::ops::metrics::Rejection;
use crate::printable::visible_start;

/// The codings of the request's `Content-Encoding`, refused before its body is read when
/// voltd cannot undo one of them.
pub(super) fn content_codings(
    request: &HttpRequest,
    receiver: &Receiver,
) -> Result<Vec<Coding>, ReceiveError> {
    let Some(header) = request.headers().get(header::CONTENT_ENCODING) else {
        return Ok(Vec::new());
    };
    decode::codings(header.as_bytes()).map_err(|error| {
        let detail = match &error {
            DecodeError::Unsupported(name) => format!(
                "Content-Encoding {} is not supported",
                visible_start(name, LOGGED_PATH_CHARS)
            ),
            other => other.to_string(),
        };
        receiver.refuse(
            ReceiveError::UnsupportedEncoding,
            Rejection::encoding,
            &detail,
        )
    })
}

/// The body as sent, then decoded: `max_body_bytes` bounds both what arrives and what it
/// decodes to.
pub(super) fn decoded(
    body: web::Bytes,
    codings: &[Coding],
    receiver: &Receiver,
) -> Result<Vec<u8>, ReceiveError> {
    if codings.is_empty() {
        // Without a copy when the body is a buffer of its own.
        return Ok(Vec::from(body));
    }
    decode::decode(Vec::from(body), codings, receiver.max_body_bytes).map_err(|error| match error {
        DecodeError::TooLarge => receiver.refuse(
            ReceiveError::TooLarge,
            Rejection::size,
            "decoded body over max_body_bytes",
        ),
        other => receiver.refuse(
            ReceiveError::BadBody,
            Rejection::encoding,
            &ErrorChain(&other).to_string(),
        ),
    })
}

/// The whole body, within the size limit and the read deadline.
pub(super) async fn read(
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
