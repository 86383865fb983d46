//! Redis stream sinks: `XADD` each event, its raw body and its metadata as the entry's fields.
//!
//! One [`ConnectionManager`] per sink: a single multiplexed connection, so the attempts in
//! flight are pipelined on it, which it re-establishes with backoff when it drops. A
//! `rediss://` URL connects with TLS.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::sink::{DeliveryError, delivery_key};
use crate::config::{RedisTarget, origin};
use crate::event::StoredEvent;

/// Reconnection waits start here and double up to [`RECONNECT_MAX_DELAY`].
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// The sink's connection; made without connecting, which happens on the first command.
pub(super) fn connect(
    target: &RedisTarget,
    timeout: Duration,
) -> Result<ConnectionManager, DeliveryError> {
    let failed = |source| DeliveryError::Redis {
        origin: origin(&target.url),
        stream: target.stream.clone(),
        source,
    };
    // With a ca_file, only its authorities are trusted for a rediss:// server.
    let client = match super::files::ca_pem(&target.tls).map_err(DeliveryError::CaFile)? {
        Some(pem) => {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.into_bytes()),
            };
            redis::Client::build_with_tls(target.url.as_str(), certificates)
        }
        None => redis::Client::open(target.url.as_str()),
    }
    .map_err(failed)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY);
    ConnectionManager::new_lazy_with_config(client, config).map_err(failed)
}

/// Delivered once Redis answers the `XADD` with the new entry's id.
pub(super) async fn append(
    mut connection: ConnectionManager,
    target: &RedisTarget,
    event: &StoredEvent,
) -> Result<(), DeliveryError> {
    xadd(target, event)
        .query_async::<()>(&mut connection)
        .await
        .map_err(|source| DeliveryError::Redis {
            origin: origin(&target.url),
            stream: target.stream.clone(),
            source,
        })
}

fn xadd(target: &RedisTarget, event: &StoredEvent) -> redis::Cmd {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let mut command = redis::cmd("XADD");
    command.arg(&target.stream);
    if let Some(max_len) = target.max_len {
        command.arg("MAXLEN").arg("~").arg(max_len);
    }
    command
        .arg("*")
        .arg("id")
        .arg(event.id)
        .arg("key")
        .arg(delivery_key(event))
        .arg("event_type")
        .arg(text(&event.fields.event_type))
        .arg("direction")
        .arg(text(&event.fields.direction))
        .arg("from")
        .arg(text(&event.fields.from))
        .arg("to")
        .arg(text(&event.fields.to))
        .arg("received_at")
        .arg(event.received_at_text())
        .arg("body")
        .arg(&event.body[..]);
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::sink::sample_event as event;
    use crate::testing::brokers::{Broker, TestStream};
    use crate::testing::certificates::TestAuthority;
    use crate::testing::proxy::TcpProxy;

    #[actix_web::test]
    async fn each_event_is_one_entry_with_its_body_and_metadata() {
        crate::skip_unless_broker!(Broker::Redis);
        let stream = TestStream::new();
        let target = stream.target(None);
        let connection = connect(&target, Duration::from_secs(5)).unwrap();
        let sent = event(41);
        append(connection, &target, &sent).await.unwrap();
        let entries = stream.entries();
        let [(_, fields)] = &entries[..] else {
            panic!("one entry expected: {entries:?}");
        };
        let field = |name: &str| String::from_utf8(fields[name].clone()).unwrap();
        assert_eq!(field("id"), "41");
        assert_eq!(field("key"), "voltd_evt_41");
        assert_eq!(field("event_type"), "message.received");
        assert_eq!(field("direction"), "inbound");
        assert_eq!(field("from"), "+15555550100");
        assert_eq!(field("to"), "+15555550199");
        assert_eq!(field("received_at"), sent.received_at_text());
        assert_eq!(fields["body"], sent.body);
        assert_eq!(fields.len(), 8, "{fields:?}");
    }

    #[actix_web::test]
    async fn max_len_trims_the_stream_approximately() {
        crate::skip_unless_broker!(Broker::Redis);
        let stream = TestStream::new();
        let target = stream.target(Some(10));
        let connection = connect(&target, Duration::from_secs(5)).unwrap();
        for id in 1..=1_000 {
            append(connection.clone(), &target, &event(id))
                .await
                .unwrap();
        }
        let kept = stream.entries().len();
        // `MAXLEN ~` removes whole nodes of the stream (100 entries each by default).
        assert!((10..=200).contains(&kept), "{kept} entries kept");
    }

    #[actix_web::test]
    async fn rediss_checks_the_certificate_against_the_ca_file() {
        crate::skip_unless_broker!(Broker::Redis);
        let stream = TestStream::new();
        let authority = TestAuthority::generate();
        let proxy = TcpProxy::start_tls(stream.url(), &authority.server());
        let mut target = stream.target(None);
        target.url = proxy.tls_url_for(stream.url(), "rediss");

        // The public roots do not vouch for the test's certificate.
        let connection = connect(&target, Duration::from_secs(5)).unwrap();
        let error = append(connection, &target, &event(1)).await.unwrap_err();
        let text = error.last_error("bus");
        assert!(text.contains("certificate"), "{text}");

        target.tls.ca_file = Some(authority.ca_file.clone());
        let connection = connect(&target, Duration::from_secs(5)).unwrap();
        append(connection, &target, &event(2)).await.unwrap();
        let entries = stream.entries();
        let [(_, fields)] = &entries[..] else {
            panic!("one entry expected: {entries:?}");
        };
        assert_eq!(fields["id"], b"2");
    }

    #[actix_web::test]
    async fn an_unreachable_server_is_a_failed_attempt_that_names_it() {
        let target = RedisTarget {
            url: format!(
                "redis://127.0.0.1:{}/0",
                crate::testing::brokers::free_port()
            )
            .parse()
            .unwrap(),
            stream: "volt:events".into(),
            max_len: None,
            tls: crate::config::BrokerTls::default(),
        };
        let connection = connect(&target, Duration::from_secs(2)).unwrap();
        let error = append(connection, &target, &event(1)).await.unwrap_err();
        let text = error.last_error("bus");
        let expected = format!(
            "sink \"bus\": XADD to stream \"volt:events\" at {} failed: ",
            origin(&target.url)
        );
        assert!(text.starts_with(&expected), "{text}");
    }
}
