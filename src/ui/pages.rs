//! The page handlers: read what a page shows, then hand it to [`super::views`].

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::auth::Viewer;
use super::params::{ListQuery, filter_query};
use super::views::{self, InboxView, Message, Notice};
use super::{PageError, Status, UiState, html};
use crate::event::without_bom;
use crate::store::{DeliveryFilter, EventSummary, InboxFilter, Page};

/// Events on one page of the inbox.
const INBOX_PAGE: u32 = 50;
/// Events on one page of a conversation.
const THREAD_PAGE: u32 = 200;
/// Deliveries of each state on the deliveries page.
const DELIVERIES_SHOWN: u32 = 100;

pub async fn inbox(
    state: web::Data<UiState>,
    _: Viewer,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PageError> {
    let filter = query.filter().map_err(PageError::BadRequest)?;
    let page = query.page().map_err(PageError::BadRequest)?;
    let (rows, newer, older) = page_of(&state, &filter, page, INBOX_PAGE).await?;
    let ids: Vec<i64> = rows.iter().map(|row| row.header.id).collect();
    let deliveries = state.store.latest_deliveries(&ids).await?;
    let filters = filter_query(&filter);
    // Live only where new events belong: the newest page, with no end time.
    let live = (page == Page::Newest && filter.until.is_none()).then(|| {
        let newest = rows.first().map_or(0, |row| row.header.id);
        format!(
            "/live?{filters}{}after={newest}",
            if filters.is_empty() { "" } else { "&" }
        )
    });
    let view = InboxView {
        filter: &filter,
        filters,
        rows: &rows,
        deliveries: &deliveries,
        newer,
        older,
        live,
    };
    Ok(html(
        StatusCode::OK,
        views::inbox(&Status::of(&state), &view),
    ))
}

/// One page of events, newest first, with the ids to page to newer and older ones.
async fn page_of(
    state: &UiState,
    filter: &InboxFilter,
    page: Page,
    size: u32,
) -> Result<(Vec<EventSummary>, Option<i64>, Option<i64>), PageError> {
    // One more than shown tells whether there is another page.
    let mut rows = state.store.inbox(filter, page, size + 1).await?;
    let more = rows.len() > size as usize;
    if more {
        match page {
            Page::After(_) => drop(rows.remove(0)),
            _ => drop(rows.pop()),
        }
    }
    let (first, last) = (
        rows.first().map(|r| r.header.id),
        rows.last().map(|r| r.header.id),
    );
    let (newer, older) = match page {
        Page::Newest => (None, last.filter(|_| more)),
        Page::Before(_) => (first, last.filter(|_| more)),
        Page::After(_) => (first.filter(|_| more), last),
    };
    Ok((rows, newer, older))
}

/// What an action left to say on the page it returns to.
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    replayed: Option<usize>,
    retried: Option<i64>,
}

pub async fn event(
    state: web::Data<UiState>,
    _: Viewer,
    id: web::Path<String>,
    done: web::Query<Done>,
) -> Result<HttpResponse, PageError> {
    let missing = || PageError::NotFound(format!("no event with id {id}; the inbox lists them"));
    let id: i64 = id.parse().map_err(|_| missing())?;
    let event = state.store.event(id).await?.ok_or_else(missing)?;
    let deliveries = state.store.event_deliveries(id).await?;
    let body = pretty_body(&event.body);
    let notice = match (done.replayed, done.retried) {
        (Some(queued), _) => Some(Notice::Replayed(queued)),
        (_, Some(delivery)) => Some(Notice::Retried(delivery)),
        _ => None,
    };
    let markup = views::event(
        &Status::of(&state),
        &event,
        &body,
        &deliveries,
        state.actions.as_ref(),
        notice,
    );
    Ok(html(StatusCode::OK, markup))
}

/// The body pretty-printed when it is JSON, otherwise as text (invalid UTF-8 replaced).
fn pretty_body(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(without_bom(body))
        .ok()
        .and_then(|json| serde_json::to_string_pretty(&json).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

pub async fn conversation(
    state: web::Data<UiState>,
    _: Viewer,
    number: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PageError> {
    let number = number.into_inner();
    let filter = InboxFilter {
        number: Some(number.clone()),
        ..InboxFilter::default()
    };
    let page = query.page().map_err(PageError::BadRequest)?;
    let (mut rows, newer, older) = page_of(&state, &filter, page, THREAD_PAGE).await?;
    rows.reverse();
    let messages = thread(&rows);
    let markup = views::conversation(&Status::of(&state), &number, &messages, newer, older);
    Ok(html(StatusCode::OK, markup))
}

/// Events in time order as messages: the events of one message id (sent, then finalized)
/// are one message, which ends in the last status reported.
fn thread(events: &[EventSummary]) -> Vec<Message<'_>> {
    let mut messages: Vec<Message> = Vec::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for event in events {
        let at = match event.message_id.as_deref() {
            Some(id) => *by_id.entry(id).or_insert(messages.len()),
            None => messages.len(),
        };
        if at == messages.len() {
            messages.push(Message {
                first: event,
                events: Vec::new(),
                status: None,
                error_code: None,
            });
        }
        let message = &mut messages[at];
        message.events.push(event);
        let reported = event
            .status
            .as_deref()
            .or(match event.header.event_type.as_deref() {
                Some("message.received") => Some("received"),
                Some("message.sent") => Some("sent"),
                _ => None,
            });
        message.status = reported.or(message.status);
        message.error_code = event.error_code.as_deref().or(message.error_code);
    }
    messages
}

pub async fn deliveries(state: web::Data<UiState>, _: Viewer) -> Result<HttpResponse, PageError> {
    let counts = state.store.unfinished_delivery_counts().await?;
    let list = |status: &str| DeliveryFilter {
        status: Some(status.to_owned()),
        sink: None,
        limit: DELIVERIES_SHOWN,
    };
    let pending = state.store.list_deliveries(&list("pending")).await?;
    let dead = state.store.list_deliveries(&list("dead")).await?;
    let markup = views::deliveries(
        &Status::of(&state),
        &counts,
        &pending,
        &dead,
        state.actions.as_ref(),
    );
    Ok(html(StatusCode::OK, markup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventHeader, Timestamp};

    fn event(
        id: i64,
        event_type: &str,
        message_id: Option<&str>,
        status: Option<&str>,
    ) -> EventSummary {
        EventSummary {
            header: EventHeader {
                id,
                event_type: Some(event_type.to_owned()),
                direction: None,
                from: None,
                to: None,
            },
            received_at: Timestamp::now(),
            message_id: message_id.map(str::to_owned),
            status: status.map(str::to_owned),
            error_code: (status == Some("failed")).then(|| "30003".to_owned()),
            text: None,
            signature: "unchecked".to_owned(),
        }
    }

    #[test]
    fn a_message_ends_in_its_last_reported_status() {
        let events = [
            event(1, "message.received", None, None),
            event(2, "message.sent", Some("m1"), Some("sent")),
            event(3, "message.received", None, None),
            event(4, "message.finalized", Some("m1"), Some("failed")),
        ];
        let shown: Vec<(i64, usize, Option<&str>, Option<&str>)> = thread(&events)
            .iter()
            .map(|m| (m.first.header.id, m.events.len(), m.status, m.error_code))
            .collect();
        assert_eq!(
            shown,
            [
                (1, 1, Some("received"), None),
                (2, 2, Some("failed"), Some("30003")),
                (3, 1, Some("received"), None),
            ]
        );
    }

    #[test]
    fn json_bodies_are_pretty_and_others_kept() {
        assert_eq!(pretty_body(br#"{"a":[1]}"#), "{\n  \"a\": [\n    1\n  ]\n}");
        assert_eq!(pretty_body(b"Yes \xff"), "Yes \u{fffd}");
    }
}
