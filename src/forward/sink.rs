//! One delivery attempt to one sink.

use super::{command, http};
use crate::config::{ForwardSettings, Target};
use crate::event::StoredEvent;

/// How much of a failing answer or a command's stderr is kept as the last error.
pub(super) const ERROR_KEEP_BYTES: usize = 1024;

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    Failed(String),
}

/// A sink ready to send: HTTP sinks own a client (awc clients belong to the runtime thread
/// that built them, so this is built inside the delivery task).
pub struct Sink {
    pub settings: ForwardSettings,
    http: Option<awc::Client>,
}

impl Sink {
    pub fn new(settings: ForwardSettings) -> Self {
        let http = matches!(settings.target, Target::Http(_)).then(|| {
            awc::Client::builder()
                .timeout(settings.timeout)
                .connector(awc::Connector::new().timeout(settings.timeout))
                .finish()
        });
        Self { settings, http }
    }

    pub async fn deliver(&self, event: &StoredEvent) -> Attempt {
        let result = match (&self.settings.target, &self.http) {
            (Target::Http(target), Some(client)) => http::post(client, target, event).await,
            (Target::Command(target), _) => {
                command::run(target, self.settings.timeout, event).await
            }
            (Target::Http(_), None) => Err("no HTTP client".to_owned()),
        };
        match result {
            Ok(()) => Attempt::Delivered,
            Err(error) => Attempt::Failed(format!("sink {:?}: {error}", self.settings.name)),
        }
    }
}

pub(super) fn truncate(text: &str) -> String {
    if text.len() <= ERROR_KEEP_BYTES {
        return text.to_owned();
    }
    let mut end = ERROR_KEEP_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
