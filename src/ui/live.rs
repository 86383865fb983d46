//! `/live`: new inbox rows as Server-Sent Events, rendered as the inbox renders them.
//!
//! Each stream follows the store as `voltd events tail` does ([`Store::events_after`]), so
//! it also sees events that other instances sharing a PostgreSQL store received. It first
//! sends what was stored after the newest row the page shows (`after`, or `Last-Event-ID`
//! when the browser reconnects), so that nothing falls between the page and the stream.
//! Rejected: a broadcast from this process's writer, which would miss other instances'
//! events and need a second path for a reconnecting browser.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use tokio_util::sync::CancellationToken;

use super::auth::Viewer;
use super::params::ListQuery;
use super::views::inbox_row;
use super::{PageError, UiState};
use crate::error_chain::ErrorChain;
use crate::store::{EventSummary, FollowPosition, InboxFilter, Page, Store, StoreError};

/// How often a stream looks for new events: well inside the second a new row may take.
const POLL: Duration = Duration::from_millis(250);
/// A comment this often keeps proxies from closing an idle stream, and finds closed ones.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Most events one look sends; the rest follow on the next.
const BATCH: u32 = 100;

pub async fn stream(
    state: web::Data<UiState>,
    _: Viewer,
    request: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PageError> {
    let filter = query.filter().map_err(PageError::BadRequest)?;
    let shown = match query.page().map_err(PageError::BadRequest)? {
        Page::After(id) => id,
        _ => 0,
    };
    let reconnected = request
        .headers()
        .get("Last-Event-ID")
        .and_then(|id| id.to_str().ok()?.parse::<i64>().ok());
    let after = reconnected.map_or(shown, |id| id.max(shown));
    // Taken before the catch-up read, so an event stored in between is in one or the other.
    let position = state.store.follow_start().await?;
    let mut feed = Feed {
        store: state.store.clone(),
        filter,
        position,
        caught_up: HashSet::new(),
        queue: VecDeque::from([Bytes::from_static(b"retry: 1000\n\n")]),
        stop: state.streams.clone(),
        last_write: Instant::now(),
        failing: false,
    };
    let mut catch_up = feed
        .store
        .inbox(&feed.filter, Page::After(after), BATCH)
        .await?;
    catch_up.reverse();
    feed.caught_up = catch_up.iter().map(|e| e.header.id).collect();
    feed.send(catch_up).await?;
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        let next = feed.next().await?;
        Some((Ok::<_, Infallible>(next), feed))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events))
}

/// One browser's stream.
struct Feed {
    store: Store,
    filter: InboxFilter,
    position: FollowPosition,
    /// The catch-up's ids, which the follow may find again: each is sent once.
    caught_up: HashSet<i64>,
    queue: VecDeque<Bytes>,
    stop: CancellationToken,
    last_write: Instant,
    /// Whether the store failed at the last look (said once in the log, not each time).
    failing: bool,
}

impl Feed {
    /// The next bytes to send; `None` ends the stream (voltd is stopping).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.queue.pop_front() {
                self.last_write = Instant::now();
                return Some(bytes);
            }
            if self.last_write.elapsed() >= KEEPALIVE {
                self.queue.push_back(Bytes::from_static(b": keepalive\n\n"));
                continue;
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(POLL) => {}
            }
            match self.look().await {
                Ok(()) => self.failing = false,
                Err(e) => {
                    if !self.failing {
                        tracing::warn!(error = %ErrorChain(&e), "Live inbox cannot read the store; trying again");
                    }
                    self.failing = true;
                }
            }
        }
    }

    /// Queue the events stored since the last look that the filter lets through.
    async fn look(&mut self) -> Result<(), StoreError> {
        let found = self.store.events_after(self.position, BATCH).await?;
        let Some((last, _)) = found.last() else {
            return Ok(());
        };
        let ids: Vec<i64> = found.iter().map(|(_, id)| *id).collect();
        let mut events = self.store.event_summaries(&ids).await?;
        events.retain(|e| self.filter.matches(e) && !self.caught_up.contains(&e.header.id));
        self.send(events).await?;
        self.position = *last;
        Ok(())
    }

    /// Queue a row for each of `events`, oldest first.
    async fn send(&mut self, events: Vec<EventSummary>) -> Result<(), StoreError> {
        let ids: Vec<i64> = events.iter().map(|e| e.header.id).collect();
        let deliveries = self.store.latest_deliveries(&ids).await?;
        for event in &events {
            let row = inbox_row(event, &deliveries).into_string();
            self.queue
                .push_back(server_sent_event("row", event.header.id, &row));
        }
        Ok(())
    }
}

/// One event of the `text/event-stream` format. A line break ends a `data:` line there, so
/// each line of `data` goes on a line of its own (the browser joins them with `\n`).
fn server_sent_event(name: &str, id: i64, data: &str) -> Bytes {
    let mut event = format!("event: {name}\nid: {id}\n");
    for line in data.split(['\n', '\r']) {
        event.push_str("data: ");
        event.push_str(line);
        event.push('\n');
    }
    event.push('\n');
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_data_is_a_data_line() {
        assert_eq!(
            server_sent_event("row", 7, "<tr>a\r\nb</tr>"),
            "event: row\nid: 7\ndata: <tr>a\ndata: \ndata: b</tr>\n\n"
        );
    }
}
