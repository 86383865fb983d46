//! NATS JetStream sinks: publish each event's raw body to a subject, with its metadata as
//! headers, and count it delivered only on the stream's acknowledgement.
//!
//! One client per sink, which keeps its connection and re-establishes it with backoff; the
//! attempts in flight share it. A `tls://` URL, or a server that requires it, connects with
//! TLS.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishError, context::PublishErrorKind};

use super::sink::{DeliveryError, delivery_key};
use crate::config::{NatsTarget, origin};
use crate::event::StoredEvent;

/// The sink's JetStream context. The client connects in the background and keeps trying, so
/// a server that is down now is no error here: the attempts fail until it answers.
pub(super) async fn connect(
    target: &NatsTarget,
    timeout: Duration,
) -> Result<jetstream::Context, DeliveryError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| DeliveryError::Nats {
        origin: origin(&target.url),
        subject: target.subject.clone(),
        source,
    };
    let mut options = match &target.credentials_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| failed(Box::new(e)))?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(path) = &target.tls.ca_file {
        options = options.add_root_certificates(path.clone());
    }
    if let Some(certificate) = &target.client_certificate {
        options = options
            .add_client_certificate(certificate.cert_file.clone(), certificate.key_file.clone());
    }
    let client = options
        .name("voltd")
        .connection_timeout(timeout)
        .retry_on_initial_connect()
        .connect(target.url.as_str())
        .await
        .map_err(|e| failed(Box::new(e)))?;
    let mut context = jetstream::new(client);
    context.set_timeout(timeout);
    Ok(context)
}

/// Delivered once the stream that captures the subject acknowledges the message.
pub(super) async fn publish(
    context: &jetstream::Context,
    target: &NatsTarget,
    event: &StoredEvent,
) -> Result<(), DeliveryError> {
    let failed = |source: PublishError| {
        if source.kind() == PublishErrorKind::StreamNotFound {
            DeliveryError::NoStream {
                subject: target.subject.clone(),
            }
        } else {
            DeliveryError::Nats {
                origin: origin(&target.url),
                subject: target.subject.clone(),
                source: Box::new(source),
            }
        }
    };
    let ack = context
        .publish_with_headers(
            target.subject.clone(),
            headers(event),
            event.body.clone().into(),
        )
        .await
        .map_err(failed)?;
    ack.await.map_err(failed)?;
    Ok(())
}

fn headers(event: &StoredEvent) -> HeaderMap {
    // A line break would end the header block early.
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .unwrap_or_default()
            .replace(['\r', '\n'], " ")
    };
    let mut headers = HeaderMap::new();
    // JetStream drops a message whose id it has seen within the stream's duplicate window.
    headers.insert("Nats-Msg-Id", delivery_key(event).as_str());
    headers.insert("Voltd-Event-Id", event.id.to_string().as_str());
    headers.insert("Voltd-Event-Type", text(&event.fields.event_type).as_str());
    headers.insert("Voltd-Direction", text(&event.fields.direction).as_str());
    headers.insert("Voltd-From", text(&event.fields.from).as_str());
    headers.insert("Voltd-To", text(&event.fields.to).as_str());
    headers.insert("Voltd-Received-At", event.received_at_text().as_str());
    headers.insert("Content-Type", text(&event.content_type).as_str());
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientCertificate;
    use crate::forward::sink::sample_event;
    use crate::testing::brokers::Broker;
    use crate::testing::certificates::TestAuthority;
    use crate::testing::nats::{PrivateNats, ServerTls, TestNatsStream};

    /// The sinks' sample event, its `to` number carrying a line break that must not become
    /// a header of its own.
    fn event(id: i64) -> StoredEvent {
        let mut event = sample_event(id);
        event.fields.to = Some("+15555550199\r\nX-Injected: 1".into());
        event
    }

    #[actix_web::test]
    async fn each_event_is_one_message_with_its_body_and_metadata() {
        crate::skip_unless_broker!(Broker::Nats);
        let stream = TestNatsStream::new().await;
        let target = stream.target();
        let context = connect(&target, Duration::from_secs(5)).await.unwrap();
        let sent = event(41);
        publish(&context, &target, &sent).await.unwrap();
        // The same key again is a duplicate the stream drops.
        publish(&context, &target, &sent).await.unwrap();
        let messages = stream.messages().await;
        let [message] = &messages[..] else {
            panic!("one message expected, got {}", messages.len());
        };
        assert_eq!(message.body, sent.body);
        assert_eq!(message.header("Nats-Msg-Id"), "voltd_evt_41");
        assert_eq!(message.header("Voltd-Event-Id"), "41");
        assert_eq!(message.header("Voltd-Event-Type"), "message.received");
        assert_eq!(message.header("Voltd-Direction"), "inbound");
        assert_eq!(message.header("Voltd-From"), "+15555550100");
        assert_eq!(message.header("Voltd-To"), "+15555550199  X-Injected: 1");
        assert_eq!(message.header("Voltd-Received-At"), sent.received_at_text());
        assert_eq!(message.header("Content-Type"), "application/json");
        assert!(message.headers.get("X-Injected").is_none());
        stream.delete().await;
    }

    #[actix_web::test]
    async fn a_subject_no_stream_captures_is_a_failed_attempt_that_says_so() {
        crate::skip_unless_broker!(Broker::Nats);
        let stream = TestNatsStream::new().await;
        let target = stream.uncaptured_target();
        let context = connect(&target, Duration::from_secs(5)).await.unwrap();
        let error = publish(&context, &target, &event(1)).await.unwrap_err();
        let text = error.last_error("bus");
        let expected = format!(
            "sink \"bus\": no JetStream stream captures subject {:?}",
            target.subject
        );
        assert!(text.starts_with(&expected), "{text}");
        assert!(stream.messages().await.is_empty());
        stream.delete().await;
    }

    #[actix_web::test]
    async fn an_unreachable_server_is_a_failed_attempt_that_names_it() {
        let target = NatsTarget {
            url: format!("nats://127.0.0.1:{}", crate::testing::brokers::free_port())
                .parse()
                .unwrap(),
            subject: "volt.events".into(),
            tls: crate::config::BrokerTls::default(),
            credentials_file: None,
            client_certificate: None,
        };
        let context = connect(&target, Duration::from_secs(1)).await.unwrap();
        let error = publish(&context, &target, &event(1)).await.unwrap_err();
        let text = error.last_error("bus");
        let expected = format!(
            "sink \"bus\": publishing to subject \"volt.events\" at {} failed: ",
            origin(&target.url)
        );
        assert!(text.starts_with(&expected), "{text}");
    }

    /// Publishing one event to `target` succeeds or fails within a short timeout.
    async fn publish_one(target: &NatsTarget) -> Result<(), DeliveryError> {
        let context = connect(target, Duration::from_secs(2)).await?;
        publish(&context, target, &event(7)).await
    }

    #[actix_web::test]
    async fn a_server_that_requires_tls_is_reached_with_its_ca_file() {
        crate::skip_unless_broker!(Broker::Nats);
        let authority = TestAuthority::generate();
        let nats = PrivateNats::start_tls(&ServerTls::Required(&authority.server()));
        let trusting =
            async_nats::ConnectOptions::new().add_root_certificates(authority.ca_file.clone());
        let stream = TestNatsStream::on_with(nats.url(), trusting).await;

        let untrusting = stream.target();
        let error = publish_one(&untrusting).await.unwrap_err();
        assert!(
            error.last_error("bus").contains("failed"),
            "{}",
            error.last_error("bus")
        );

        let mut target = stream.target();
        target.tls.ca_file = Some(authority.ca_file.clone());
        publish_one(&target).await.unwrap();
        let messages = stream.messages().await;
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].body, event(7).body);
    }

    #[actix_web::test]
    async fn a_server_that_verifies_clients_takes_the_sinks_client_certificate() {
        crate::skip_unless_broker!(Broker::Nats);
        let authority = TestAuthority::generate();
        let server = authority.server();
        let client = authority.client();
        let nats = PrivateNats::start_tls(&ServerTls::ClientsVerified(&server, &authority));
        let own = async_nats::ConnectOptions::new()
            .add_root_certificates(authority.ca_file.clone())
            .add_client_certificate(client.cert_file.clone(), client.key_file.clone());
        let stream = TestNatsStream::on_with(nats.url(), own).await;
        let mut target = stream.target();
        target.tls.ca_file = Some(authority.ca_file.clone());

        publish_one(&target).await.unwrap_err();
        assert!(stream.messages().await.is_empty());

        target.client_certificate = Some(ClientCertificate {
            cert_file: client.cert_file.clone(),
            key_file: client.key_file.clone(),
        });
        publish_one(&target).await.unwrap();
        assert_eq!(stream.messages().await.len(), 1);
    }
}
