//! The request body: read whole within the size limit and the read deadline, then decoded
//! from its `Content-Encoding`, the decoded size bounded by the same limit.

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt as _;

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
    body: Vec<u8>,
    codings: &[Coding],
    receiver: &Receiver,
) -> Result<Vec<u8>, ReceiveError> {
    if codings.is_empty() {
        return Ok(body);
    }
    decode::decode(body, codings, receiver.max_body_bytes).map_err(|error| match error {
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
) -> Result<Vec<u8>, ReceiveError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = receiver.max_body_bytes;
    let too_large = || {
        receiver.refuse(
            ReceiveError::TooLarge,
            Rejection::size,
            "body over max_body_bytes",
        )
    };
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let capacity = declared.map_or(UNDECLARED_INITIAL_BYTES, |length| {
        (length as usize).min(MAX_INITIAL_BYTES)
    });
    match tokio::time::timeout(receiver.body_timeout, collect(payload, capacity, limit)).await {
        Ok(Ok(Some(body))) => Ok(body),
        Ok(Ok(None)) => Err(too_large()),
        Ok(Err(e)) => {
            Err(receiver.refuse(ReceiveError::BadBody, Rejection::client, &e.to_string()))
        }
        Err(_) => Err(receiver.refuse(
            ReceiveError::Timeout,
            Rejection::timeout,
            "body read timed out",
        )),
    }
}

/// A body without `Content-Length` (chunked) starts in a buffer this size, which grows.
const UNDECLARED_INITIAL_BYTES: usize = 4096;
/// A declared length reserves at most this much before the bytes arrive: a sender that
/// declares `max_body_bytes` and then stalls holds no more than this, however many of them
/// there are. A larger body grows the buffer as it comes.
const MAX_INITIAL_BYTES: usize = 64 * 1024;

/// The payload's bytes in one buffer of `capacity` to start with; `None` once they pass
/// `limit`.
///
/// actix-web's `to_bytes_limited` would reserve 32 KiB for every body, whatever its
/// declared length: 100 MB for 3,000 slow senders, and that much kept with each event
/// queued for the writer.
async fn collect(
    mut payload: web::Payload,
    capacity: usize,
    limit: usize,
) -> Result<Option<Vec<u8>>, PayloadError> {
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
