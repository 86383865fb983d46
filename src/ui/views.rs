//! The pages' markup. maud escapes every value interpolated with `(..)`; nothing here
//! writes unescaped text but the compiled-in stylesheet and script links.

use maud::{DOCTYPE, Markup, html};

use super::Status;
use super::actions::Actions;
use super::params::encode;
use crate::event::StoredEvent;
use crate::printable::visible_start;
use crate::store::{
    DeliveryCount, DeliveryRecord, EventSummary, InboxFilter, SinkState, Timestamp,
};
use crate::volt::registration::RegistrationState;

/// Characters of a text's first line shown in a list.
const FIRST_LINE_CHARS: usize = 90;
/// Event types offered by the filter form; any other can be typed into the address.
const KNOWN_TYPES: [&str; 3] = ["message.received", "message.sent", "message.finalized"];

fn layout(title: &str, status: &Status, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · voltd" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/inbox.js" defer {}
            }
            body {
                (strip(status))
                main { (content) }
            }
        }
    }
}

/// Registration, readiness and counters, on every page.
fn strip(status: &Status) -> Markup {
    let registered = matches!(
        status.registration,
        RegistrationState::Registered
            | RegistrationState::NotRequired
            | RegistrationState::OtherInstance
    );
    html! {
        header.strip {
            nav {
                a href="/" { "Inbox" }
                a href="/deliveries" { "Deliveries" }
            }
            span.fact { "Registration: "
                b class=(if registered { "state-ok" } else { "state-bad" }) {
                    (status.registration.as_str().replace('_', " "))
                }
                " for " b { (status.public_url) }
            }
            span.fact { "Readiness: "
                @match &status.ready {
                    Ok(()) => b.state-ok { "ready" },
                    Err(reason) => b.state-bad title=(reason) { "not ready: " (reason) },
                }
            }
            span.fact { "Stored since start: " b { (status.stored_since_start) } }
            span.fact { "Duplicates: " b { (status.duplicates) } }
            span.fact { "Deliveries pending: " b { (status.delivery_backlog) } }
        }
    }
}

pub struct InboxView<'a> {
    pub filter: &'a InboxFilter,
    /// The filter as a query string, for the paging links.
    pub filters: String,
    pub rows: &'a [EventSummary],
    pub deliveries: &'a [SinkState],
    pub newer: Option<i64>,
    pub older: Option<i64>,
    /// The live stream's URL, on the page new events belong to.
    pub live: Option<String>,
}

pub fn inbox(status: &Status, view: &InboxView) -> Markup {
    let filter = view.filter;
    let link = |key: &str, id: i64| {
        let filters = &view.filters;
        if filters.is_empty() {
            format!("/?{key}={id}")
        } else {
            format!("/?{filters}&{key}={id}")
        }
    };
    let content = html! {
        h1 { "Inbox " @if view.live.is_some() { span #live .live { "connecting" } } }
        form.filters method="get" action="/" {
            label { "Type"
                select name="type" {
                    option value="" { "any" }
                    @for known in KNOWN_TYPES {
                        option value=(known) selected[filter.event_type.as_deref() == Some(known)] { (known) }
                    }
                    @if let Some(other) = filter.event_type.as_deref().filter(|t| !KNOWN_TYPES.contains(t)) {
                        option value=(other) selected { (other) }
                    }
                }
            }
            label { "Direction"
                select name="direction" {
                    option value="" { "both" }
                    @for direction in ["inbound", "outbound"] {
                        option value=(direction) selected[filter.direction.as_deref() == Some(direction)] { (direction) }
                    }
                }
            }
            label { "Number"
                input type="search" name="number" placeholder="+15555550123" value=[filter.number.as_deref()];
            }
            label { "Since (UTC)"
                input type="datetime-local" name="since" value=[filter.since.map(|t| t.format("%Y-%m-%dT%H:%M").to_string())];
            }
            label { "Until (UTC)"
                input type="datetime-local" name="until" value=[filter.until.map(|t| t.format("%Y-%m-%dT%H:%M").to_string())];
            }
            button type="submit" { "Filter" }
            a href="/" { "Clear" }
        }
        table {
            thead { tr {
                th { "Received (UTC)" } th { "Type" } th { "Direction" } th { "From" } th { "To" }
                th { "Text" } th { "Signature" } th { "Deliveries" }
            } }
            tbody data-live=[view.live.as_deref()] {
                @for row in view.rows {
                    (inbox_row(row, view.deliveries))
                }
                @if view.rows.is_empty() {
                    tr.empty-row { td.empty colspan="8" { "No events match." } }
                }
            }
        }
        div.pager {
            @if let Some(id) = view.newer { a href=(link("after", id)) { "← Newer" } }
            @if let Some(id) = view.older { a href=(link("before", id)) { "Older →" } }
        }
    };
    layout("Inbox", status, content)
}

/// One row of the inbox; also what the live stream sends for a new event.
pub fn inbox_row(row: &EventSummary, deliveries: &[SinkState]) -> Markup {
    let first_line = row
        .text
        .as_deref()
        .and_then(|text| text.lines().next())
        .map(|line| visible_start(line, FIRST_LINE_CHARS));
    html! {
        @let e = &row.header;
        tr id=(format!("event-{}", e.id)) {
            td.time { a href=(format!("/events/{}", e.id)) { (time(row.received_at)) } }
            td { (or_dash(e.event_type.as_deref())) }
            td { (or_dash(e.direction.as_deref())) }
            td { (number(e.from.as_deref())) }
            td { (number(e.to.as_deref())) }
            td.text title=[row.text.as_deref()] { (or_dash(first_line.as_deref())) }
            td { span class=(format!("badge {}", row.signature)) { (row.signature) } }
            td {
                @for state in deliveries.iter().filter(|d| d.event_id == e.id) {
                    span class=(format!("badge {}", state.status)) { (state.sink) ": " (state.status) }
                }
            }
        }
    }
}

fn time(at: Timestamp) -> String {
    at.0.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("–")
}

/// A phone number, linked to its conversation.
fn number(value: Option<&str>) -> Markup {
    html! {
        @match value {
            Some(n) => a href=(format!("/conversations/{}", encode(n))) { (n) },
            None => "–",
        }
    }
}

/// What an action did, said on the page it returns to.
pub enum Notice {
    Replayed(usize),
    Retried(i64),
}

pub fn event(
    status: &Status,
    event: &StoredEvent,
    body: &str,
    deliveries: &[DeliveryRecord],
    actions: Option<&Actions>,
    notice: Option<Notice>,
) -> Markup {
    let f = &event.fields;
    let fields: [(&str, Option<String>); 13] = [
        ("Id", Some(event.id.to_string())),
        (
            "Received (UTC)",
            Some(
                event
                    .received_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
        ),
        ("Type", f.event_type.clone()),
        ("Direction", f.direction.clone()),
        ("From", f.from.clone()),
        ("To", f.to.clone()),
        ("Message id", f.message_id.clone()),
        ("Status", f.status.clone()),
        ("Error code", f.error_code.clone()),
        ("Text", f.text.clone()),
        ("Content type", event.content_type.clone()),
        ("Remote address", event.remote_addr.clone()),
        ("Signature", Some(event.signature.as_str().to_owned())),
    ];
    let content = html! {
        @match notice {
            Some(Notice::Replayed(n)) => div.notice { "Queued " (n) " deliveries; the forwarder sends them within a second." },
            Some(Notice::Retried(id)) => div.notice { "Delivery " (id) " queued again as a new delivery." },
            None => {},
        }
        h1 { "Event " (event.id) }
        dl.fields {
            @for (name, value) in &fields {
                dt { (name) }
                dd { (or_dash(value.as_deref())) }
            }
            @if let Some(from) = f.from.as_deref() {
                dt { "Conversation" } dd { (number(Some(from))) }
            }
        }
        h2 { "Body (" (event.body.len()) " bytes)" }
        pre #body { (body) }
        h2 { "Deliveries" }
        @if let Some(actions) = actions {
            form.inline method="post" action=(format!("/events/{}/replay", event.id)) {
                input type="hidden" name="csrf" value=(actions.csrf());
                button type="submit" { "Replay to every sink" }
            }
        }
        (delivery_table(deliveries, actions, false))
    };
    layout(&format!("Event {}", event.id), status, content)
}

fn delivery_table(
    deliveries: &[DeliveryRecord],
    actions: Option<&Actions>,
    with_event: bool,
) -> Markup {
    html! {
        @if deliveries.is_empty() {
            p.empty { "None." }
        } @else {
            table {
                thead { tr {
                    th { "Delivery" } @if with_event { th { "Event" } } th { "Sink" } th { "State" }
                    th { "Attempts" } th { "Next attempt" } th { "Updated" } th { "Last error" }
                    @if actions.is_some() { th {} }
                } }
                tbody {
                    @for d in deliveries {
                        tr {
                            td { (d.id) }
                            @if with_event { td { a href=(format!("/events/{}", d.event_id)) { (d.event_id) } } }
                            td { (d.sink) }
                            td { span class=(format!("badge {}", d.status)) { (d.status) } }
                            td { (d.attempts) }
                            td.time { (d.next_attempt_at.map(time).unwrap_or_default()) }
                            td.time { (time(d.updated_at)) }
                            td { (or_dash(d.last_error.as_deref())) }
                            @if let Some(actions) = actions {
                                td { @if d.status == "dead" {
                                    form.inline method="post" action=(format!("/deliveries/{}/retry", d.id)) {
                                        input type="hidden" name="csrf" value=(actions.csrf());
                                        button type="submit" { "Retry" }
                                    }
                                } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One message of a conversation: the events of its message id, in time order.
pub struct Message<'a> {
    pub first: &'a EventSummary,
    pub events: Vec<&'a EventSummary>,
    pub status: Option<&'a str>,
    pub error_code: Option<&'a str>,
}

pub fn conversation(
    status: &Status,
    with: &str,
    messages: &[Message],
    newer: Option<i64>,
    older: Option<i64>,
) -> Markup {
    let base = format!("/conversations/{}", encode(with));
    let content = html! {
        h1 { "Conversation with " (with) }
        div.pager {
            @if let Some(id) = older { a href=(format!("{base}?before={id}")) { "↑ Earlier" } }
        }
        div.thread {
            @for message in messages {
                @let first = message.first;
                @let head = &first.header;
                div class=(format!("message {}", head.direction.as_deref().unwrap_or("unknown"))) data-event=(head.id) {
                    div.body { (or_dash(first.text.as_deref())) }
                    div.meta {
                        (time(first.received_at)) " · "
                        (or_dash(head.from.as_deref())) " → " (or_dash(head.to.as_deref())) " · "
                        @if let Some(state) = message.status {
                            span class=(format!("badge {state}")) { (state) }
                        }
                        @if let Some(code) = message.error_code { "error " (code) " " }
                        @for event in &message.events {
                            a href=(format!("/events/{}", event.header.id)) { "#" (event.header.id) } " "
                        }
                    }
                }
            }
            @if messages.is_empty() { p.empty { "No messages with this number." } }
        }
        div.pager {
            @if let Some(id) = newer { a href=(format!("{base}?after={id}")) { "↓ Later" } }
        }
    };
    layout(&format!("Conversation with {with}"), status, content)
}

pub fn deliveries(
    status: &Status,
    counts: &[DeliveryCount],
    pending: &[DeliveryRecord],
    dead: &[DeliveryRecord],
    actions: Option<&Actions>,
) -> Markup {
    let content = html! {
        h1 { "Deliveries" }
        @if counts.is_empty() {
            p.empty { "Nothing pending, nothing dead." }
        } @else {
            table {
                thead { tr { th { "Sink" } th { "State" } th { "Deliveries" } } }
                tbody { @for c in counts { tr {
                    td { (c.sink) } td { span class=(format!("badge {}", c.status)) { (c.status) } } td { (c.count) }
                } } }
            }
        }
        h2 { "Dead (newest " (dead.len()) ")" }
        (delivery_table(dead, actions, true))
        h2 { "Pending (newest " (pending.len()) ")" }
        (delivery_table(pending, None, true))
    };
    layout("Deliveries", status, content)
}

pub fn error_page(message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "voltd" } link rel="stylesheet" href="/assets/style.css"; }
            body { main { h1 { "Cannot show this page" } p { (message) } p { a href="/" { "Back to the inbox" } } } }
        }
    }
}
