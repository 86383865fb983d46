//! Replay from the inbox (`[admin] ui_actions = true`): one event to every sink that wants
//! it, or one dead delivery to its sink. Only as POST forms carrying the CSRF token: a page
//! elsewhere cannot read the token, so it cannot make a visitor's browser replay.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::auth::{Viewer, same_secret};
use super::{PageError, UiState};
use crate::config::ForwardSettings;
use crate::forward::sink_wants;
use crate::store::EventSelection;

/// The CSRF token of this process, and the sinks a replay goes to.
#[derive(Clone)]
pub struct Actions {
    csrf: Arc<str>,
    sinks: Arc<[ForwardSettings]>,
}

impl Actions {
    /// A fresh random token each start: a form from before a restart is refused.
    pub fn new(sinks: Vec<ForwardSettings>) -> Self {
        Self {
            csrf: hex::encode(rand::random::<[u8; 32]>()).into(),
            sinks: sinks.into(),
        }
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn sinks(&self) -> &[ForwardSettings] {
        &self.sinks
    }
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// The actions, when they are on and the form carries this process's token.
fn allowed<'a>(state: &'a UiState, form: &ActionForm) -> Result<&'a Actions, PageError> {
    let actions = state.actions.as_ref().ok_or_else(|| {
        PageError::Forbidden(
            "replay from the web inbox is off; set [admin] ui_actions = true to allow it".into(),
        )
    })?;
    if !same_secret(actions.csrf.as_bytes(), form.csrf.as_bytes()) {
        return Err(PageError::Forbidden(
            "this form is out of date (voltd restarted since it was shown); reload the page \
             and try again"
                .into(),
        ));
    }
    Ok(actions)
}

fn see_other(location: String) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

pub async fn replay_event(
    state: web::Data<UiState>,
    _: Viewer,
    id: web::Path<i64>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, PageError> {
    let actions = allowed(&state, &form)?;
    let id = id.into_inner();
    if state.store.event(id).await?.is_none() {
        return Err(PageError::NotFound(format!("no event with id {id}")));
    }
    let sinks = actions.sinks();
    if sinks.is_empty() {
        return Err(PageError::BadRequest(
            "no [[forward]] sinks are configured, so there is nowhere to replay to".into(),
        ));
    }
    let names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
    let selection = EventSelection {
        id: Some(id),
        ..EventSelection::default()
    };
    let queued = state
        .store
        .queue_replay(&selection, &names, |sink, event| {
            sink_wants(sinks, sink, event)
        })
        .await?;
    tracing::info!(id, queued, "Event replayed from the web inbox");
    Ok(see_other(format!("/events/{id}?replayed={queued}")))
}

pub async fn retry_delivery(
    state: web::Data<UiState>,
    _: Viewer,
    id: web::Path<i64>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, PageError> {
    let actions = allowed(&state, &form)?;
    let id = id.into_inner();
    let delivery = state
        .store
        .delivery(id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("no delivery with id {id}")))?;
    if !actions.sinks().iter().any(|s| s.name == delivery.sink) {
        return Err(PageError::BadRequest(format!(
            "sink {:?} is no longer configured, so the delivery cannot be retried",
            delivery.sink
        )));
    }
    if !state.store.retry_dead_delivery(id).await? {
        return Err(PageError::BadRequest(format!(
            "delivery {id} is {}, not dead; only a dead delivery is retried",
            delivery.status
        )));
    }
    tracing::info!(id, event_id = delivery.event_id, sink = %delivery.sink, "Dead delivery retried from the web inbox");
    Ok(see_other(format!(
        "/events/{}?retried={id}",
        delivery.event_id
    )))
}
