//! Why an HTTP request sent with awc got no answer, in words that never include its URL.

use std::io;

use actix_web::error::ParseError;
use awc::error::{ConnectError, SendRequestError};

/// awc's [`SendRequestError`] is not kept as the source: it is neither `Send` nor `Sync` (some
/// variants hold a `Box<dyn Error>`), so it could not travel inside an `anyhow::Error`, and
/// its text may include the whole URL, whose credentials and path secrets must not reach a
/// log line or a stored delivery error. The parts worth keeping are kept as sources.
#[derive(Debug, thiserror::Error)]
pub enum RequestFailure {
    #[error("no answer in time")]
    Timeout,
    #[error("cannot resolve the host name")]
    Resolve,
    #[error("cannot connect")]
    Connect(#[source] Option<io::Error>),
    #[error("cannot send the request")]
    Send(#[source] io::Error),
    #[error("the answer is not valid HTTP")]
    InvalidAnswer(#[source] ParseError),
    #[error("the request failed")]
    Other,
}

impl From<SendRequestError> for RequestFailure {
    fn from(error: SendRequestError) -> Self {
        match error {
            SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
                Self::Timeout
            }
            SendRequestError::Connect(ConnectError::Resolver(_) | ConnectError::NoRecords) => {
                Self::Resolve
            }
            SendRequestError::Connect(ConnectError::Io(e)) => Self::Connect(Some(e)),
            SendRequestError::Connect(_) => Self::Connect(None),
            SendRequestError::Send(e) => Self::Send(e),
            SendRequestError::Response(e) => Self::InvalidAnswer(e),
            _ => Self::Other,
        }
    }
}
