//! Prometheus metrics. One `Metrics` value is created at start-up and shared (no global
//! recorder), so tests can run several apps in one process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::volt::registration::RegistrationState;

/// Event types Volt is known to send. Anything else is counted as `other`, so a sender cannot
/// create unbounded label values.
const KNOWN_EVENT_TYPES: [&str; 3] = ["message.sent", "message.finalized", "message.received"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventTypeLabel {
    event_type: &'static str,
}

/// Why a request to the webhook listener was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Rejection {
    size,
    path,
    method,
    signature,
    backpressure,
    store,
    client,
    address,
    timeout,
    encoding,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabel {
    reason: Rejection,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Sink names come from the configuration, so the label set stays bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkOutcomeLabel {
    sink: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    events_received: Family<EventTypeLabel, Counter>,
    /// The series of `events_received` by label (known types, then `other`), looked up in the
    /// family once each, when first used: a series appears only once it has counted an event.
    received_series: [OnceLock<Counter>; KNOWN_EVENT_TYPES.len() + 1],
    duplicates: Counter,
    rejections: Family<RejectionLabel, Counter>,
    commit_seconds: Histogram,
    batch_events: Histogram,
    queue_depth: Gauge,
    store_healthy: Gauge,
    registration_attempts: Family<OutcomeLabel, Counter>,
    registration_state: Family<StateLabel, Gauge>,
    deliveries: Family<SinkOutcomeLabel, Counter>,
    delivery_attempts: Family<SinkOutcomeLabel, Counter>,
    delivery_backlog: Gauge,
    delivery_oldest_seconds: Gauge<f64, AtomicU64>,
    stored_since_start: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("voltd");
        let events_received = Family::<EventTypeLabel, Counter>::default();
        registry.register(
            "events_received",
            "Events committed to the store (duplicates included), by event type",
            events_received.clone(),
        );
        let duplicates = Counter::default();
        registry.register(
            "events_duplicate",
            "Repeat deliveries answered as duplicates without a new row",
            duplicates.clone(),
        );
        let rejections = Family::<RejectionLabel, Counter>::default();
        registry.register(
            "requests_rejected",
            "Webhook requests refused, by reason (size, path, method, signature, backpressure, store, client, address, timeout, encoding)",
            rejections.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "store_commit_seconds",
            "Time to commit one batch of events (one fsync)",
            commit_seconds.clone(),
        );
        let batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "store_batch_events",
            "Events per committed batch",
            batch_events.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "store_queue_depth",
            "Events waiting to be committed",
            queue_depth.clone(),
        );
        let store_healthy = Gauge::default();
        registry.register(
            "store_healthy",
            "1 while the store commits; 0 while commits fail or stall (as /readyz reports)",
            store_healthy.clone(),
        );
        let registration_attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "registration_attempts",
            "Calls to Volt's registerWebhook, by outcome",
            registration_attempts.clone(),
        );
        let registration_state = Family::<StateLabel, Gauge>::default();
        registry.register(
            "registration_state",
            "1 for the current registration state",
            registration_state.clone(),
        );
        let deliveries = Family::<SinkOutcomeLabel, Counter>::default();
        registry.register(
            "forward_deliveries",
            "Forwarding deliveries finished, by sink and outcome (delivered, dead)",
            deliveries.clone(),
        );
        let delivery_attempts = Family::<SinkOutcomeLabel, Counter>::default();
        registry.register(
            "forward_attempts",
            "Forwarding attempts, by sink and outcome (success, failure)",
            delivery_attempts.clone(),
        );
        let delivery_backlog = Gauge::default();
        registry.register(
            "forward_backlog",
            "Deliveries pending, and stored events not yet attempted (sampled every few seconds)",
            delivery_backlog.clone(),
        );
        let delivery_oldest_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "forward_oldest_pending_seconds",
            "How long the oldest pending delivery or event not yet attempted has waited (sampled every few seconds)",
            delivery_oldest_seconds.clone(),
        );
        let build_info = Family::<BuildLabel, Gauge>::default();
        build_info
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "voltd version", build_info);
        let metrics = Self {
            registry,
            events_received,
            received_series: Default::default(),
            duplicates,
            rejections,
            commit_seconds,
            batch_events,
            queue_depth,
            store_healthy,
            registration_attempts,
            registration_state,
            deliveries,
            delivery_attempts,
            delivery_backlog,
            delivery_oldest_seconds,
            stored_since_start: AtomicU64::new(0),
        };
        Arc::new(metrics)
    }

    pub fn event_stored(&self, event_type: Option<&str>, duplicate: bool) {
        let index = event_type
            .and_then(|t| KNOWN_EVENT_TYPES.iter().position(|known| *known == t))
            .unwrap_or(KNOWN_EVENT_TYPES.len());
        self.received_series[index]
            .get_or_init(|| {
                let event_type = KNOWN_EVENT_TYPES.get(index).copied().unwrap_or("other");
                self.events_received
                    .get_or_create(&EventTypeLabel { event_type })
                    .clone()
            })
            .inc();
        if duplicate {
            self.duplicates.inc();
        } else {
            self.stored_since_start.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// New rows written since this process started (duplicates excluded).
    pub fn stored_since_start(&self) -> u64 {
        self.stored_since_start.load(Ordering::Relaxed)
    }

    /// Repeat deliveries answered since this process started.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.get()
    }

    /// Deliveries pending at the forwarder's last sample (0 without forwarding).
    pub fn delivery_backlog(&self) -> i64 {
        self.delivery_backlog.get()
    }

    pub fn rejected(&self, reason: Rejection) {
        self.rejections
            .get_or_create(&RejectionLabel { reason })
            .inc();
    }

    pub fn batch_committed(&self, events: usize, seconds: f64) {
        self.batch_events.observe(events as f64);
        self.commit_seconds.observe(seconds);
    }

    pub fn registration_attempt(&self, outcome: &'static str) {
        self.registration_attempts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn delivery_attempt(&self, sink: &str, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        self.delivery_attempts
            .get_or_create(&SinkOutcomeLabel {
                sink: sink.to_owned(),
                outcome,
            })
            .inc();
    }

    /// `outcome` is `delivered` or `dead`.
    pub fn delivery_finished(&self, sink: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&SinkOutcomeLabel {
                sink: sink.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn set_delivery_backlog(&self, pending: i64, oldest_seconds: f64) {
        self.delivery_backlog.set(pending);
        self.delivery_oldest_seconds.set(oldest_seconds);
    }

    /// Whether the store commits, as `/readyz` judges it; sampled before each [`Self::render`].
    pub fn set_store_healthy(&self, healthy: bool) {
        self.store_healthy.set(i64::from(healthy));
    }

    /// The Prometheus text exposition, with the queue depth and registration state sampled
    /// now.
    pub fn render(&self, queue_depth: usize, registration: RegistrationState) -> String {
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        for state in RegistrationState::ALL {
            self.registration_state
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(i64::from(state == registration));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.event_stored(Some("message.received"), false);
        metrics.event_stored(Some("attacker.invented"), true);
        metrics.rejected(Rejection::size);
        metrics.set_store_healthy(false);
        let text = metrics.render(3, RegistrationState::Registered);
        assert!(
            text.contains(r#"voltd_events_received_total{event_type="message.received"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"voltd_events_received_total{event_type="other"} 1"#),
            "{text}"
        );
        assert!(!text.contains("attacker"));
        assert!(text.contains("voltd_events_duplicate_total 1"), "{text}");
        assert!(
            text.contains(r#"voltd_requests_rejected_total{reason="size"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"voltd_registration_state{state="registered"} 1"#),
            "{text}"
        );
        assert!(text.contains("voltd_store_queue_depth 3"), "{text}");
        assert!(text.contains("voltd_store_healthy 0"), "{text}");
    }
}
