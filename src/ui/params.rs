//! The inbox's query string: filters and the page, read strictly so that a mistyped value
//! is told, not silently ignored. Empty fields (an unused box of the filter form) are absent.

use chrono::{DateTime, NaiveDateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::store::{InboxFilter, Page};

/// The query string as sent.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    direction: Option<String>,
    number: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

/// `value` unless it is empty or only white space.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl ListQuery {
    pub fn filter(&self) -> Result<InboxFilter, String> {
        let direction = given(&self.direction)
            .map(|d| match d {
                "inbound" | "outbound" => Ok(d.to_owned()),
                other => Err(format!(
                    "direction {other:?} is neither \"inbound\" nor \"outbound\""
                )),
            })
            .transpose()?;
        Ok(InboxFilter {
            event_type: given(&self.event_type).map(str::to_owned),
            direction,
            number: given(&self.number).map(str::to_owned),
            since: given(&self.since).map(|t| time("since", t)).transpose()?,
            until: given(&self.until).map(|t| time("until", t)).transpose()?,
        })
    }

    pub fn page(&self) -> Result<Page, String> {
        match (id("before", &self.before)?, id("after", &self.after)?) {
            (None, None) => Ok(Page::Newest),
            (Some(before), None) => Ok(Page::Before(before)),
            (None, Some(after)) => Ok(Page::After(after)),
            (Some(_), Some(_)) => Err("give before or after, not both".to_owned()),
        }
    }
}

fn id(name: &str, value: &Option<String>) -> Result<Option<i64>, String> {
    given(value)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{name} {v:?} is not an event id (a whole number)"))
        })
        .transpose()
}

/// RFC 3339, or the `2026-11-30T08:00` of a browser's date-time field, taken as UTC.
fn time(name: &str, value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Ok(time.to_utc());
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|time| time.and_utc())
        .ok_or_else(|| {
            format!("{name} {value:?} is not a time; use RFC 3339 such as 2026-11-30T08:00:00Z")
        })
}

/// The query string of `filter` (without the page), `&`-joined, for links that keep it.
pub fn filter_query(filter: &InboxFilter) -> String {
    let times = [("since", filter.since), ("until", filter.until)]
        .into_iter()
        .filter_map(|(name, time)| Some((name, time?.to_rfc3339())));
    [
        ("type", filter.event_type.clone()),
        ("direction", filter.direction.clone()),
        ("number", filter.number.clone()),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
    .chain(times)
    .map(|(name, value)| format!("{name}={}", encode(&value)))
    .collect::<Vec<_>>()
    .join("&")
}

/// `value` percent-encoded for a path segment or a query value.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsed as actix's `web::Query` does for the handlers.
    fn query(pairs: &str) -> ListQuery {
        actix_web::web::Query::<ListQuery>::from_query(pairs)
            .unwrap()
            .into_inner()
    }

    #[test]
    fn empty_boxes_are_absent_and_times_read_both_ways() {
        let q = query(
            "type=&direction=inbound&number=+1555&since=2026-11-30T08:00&until=2026-11-30T09:00:00%2B01:00",
        );
        let filter = q.filter().unwrap();
        assert_eq!(filter.event_type, None);
        assert_eq!(filter.direction.as_deref(), Some("inbound"));
        // A `+` in a query string is a space; the form sends `%2B`, and trimming keeps this
        // hand-typed one usable.
        assert_eq!(filter.number.as_deref(), Some("1555"));
        assert_eq!(
            filter.since.unwrap().to_rfc3339(),
            "2026-11-30T08:00:00+00:00"
        );
        assert_eq!(
            filter.until.unwrap().to_rfc3339(),
            "2026-11-30T08:00:00+00:00"
        );
        assert_eq!(q.page().unwrap(), Page::Newest);
        assert_eq!(
            filter_query(&filter),
            "direction=inbound&number=1555&since=2026%2D11%2D30T08%3A00%3A00%2B00%3A00&until=2026%2D11%2D30T08%3A00%3A00%2B00%3A00"
        );
    }

    #[test]
    fn mistakes_are_told() {
        let error = |pairs: &str| {
            let q = query(pairs);
            q.filter().and(q.page()).unwrap_err()
        };
        assert!(error("direction=sideways").contains("sideways"));
        assert!(error("since=yesterday").contains("RFC 3339"));
        assert!(error("before=abc").contains("not an event id"));
        assert!(error("before=1&after=2").contains("not both"));
        assert_eq!(query("after=7").page().unwrap(), Page::After(7));
    }
}
