//! Forwarding to message brokers, against the real servers: what arrives, and a broker that
//! is down (or, for RabbitMQ, cut off by a proxy) for a while and then back.

use std::cell::RefCell;

use lapin::message::Delivery;
use lapin::types::AMQPValue;
use url::Url;
use voltd::config::origin;
use voltd::testing::amqp::TestQueue;
use voltd::testing::brokers::{Broker, Entry, PrivateRedis, TestStream};
use voltd::testing::nats::{PrivateNats, TestNatsStream};
use voltd::testing::proxy::TcpProxy;

use crate::forwarding::{deliveries, wait_for_delivery};
use crate::helpers::{TestApp, TestConfig, event_body, poll_until};

fn redis_sink(name: &str, stream: &TestStream) -> String {
    format!(
        "name = {name:?}\ntype = \"redis\"\nurl = \"{}\"\nstream = {:?}\nbackoff_initial_ms = 50\n\
         backoff_max_secs = 1\n",
        stream.url(),
        stream.key()
    )
}

async fn wait_for_entries(stream: &TestStream, count: usize) -> Vec<Entry> {
    poll_until(&format!("{count} entries in {}", stream.key()), || {
        let entries = stream.try_entries().unwrap_or_default();
        std::future::ready((entries.len() >= count).then_some(entries))
    })
    .await
}

/// Posts `count` events while the sink's broker is down, adding their ids to `ids`, and waits
/// for a failed attempt: returns its error.
async fn post_while_down(app: &TestApp, count: usize, ids: &mut Vec<i64>) -> String {
    for n in 0..count {
        let body = event_body("message.received", &format!("down-{n}"), "while down");
        ids.push(app.post_event(body).await.outcome().1);
    }
    let failed = poll_until("a failed attempt while the broker is down", || async {
        deliveries(&app.store)
            .await
            .into_iter()
            .find(|d| d.status == "pending" && d.attempts >= 1)
    })
    .await;
    failed.last_error.unwrap_or_default()
}

fn field(entry: &Entry, name: &str) -> String {
    String::from_utf8_lossy(&entry.1[name]).into_owned()
}

#[actix_web::test]
async fn events_reach_a_redis_stream_with_their_body_and_metadata() {
    voltd::skip_unless_available!(crate::BACKEND);
    voltd::skip_unless_broker!(Broker::Redis);
    let stream = TestStream::new();
    let config = TestConfig::new().extra_toml("[[forward]]", &redis_sink("bus", &stream));
    let app = TestApp::spawn(config).await;
    let body = event_body("message.received", "redis-1", "Hello bus");
    let (_, id) = app.post_event(body.clone()).await.outcome();

    let entries = wait_for_entries(&stream, 1).await;
    let entry = &entries[0];
    assert_eq!(field(entry, "id"), id.to_string());
    assert_eq!(field(entry, "key"), format!("voltd_evt_{id}"));
    assert_eq!(field(entry, "event_type"), "message.received");
    assert_eq!(entry.1["body"], body.as_bytes());
    let event = app.store.event(id).await.unwrap().unwrap();
    assert_eq!(field(entry, "received_at"), event.received_at_text());
    assert_eq!(field(entry, "from"), event.fields.from.unwrap_or_default());
    assert_eq!(field(entry, "to"), event.fields.to.unwrap_or_default());
    assert_eq!(
        field(entry, "direction"),
        event.fields.direction.unwrap_or_default()
    );
    poll_until("the delivery recorded", || async {
        let all = deliveries(&app.store).await;
        all.iter().all(|d| d.status == "delivered").then_some(())
    })
    .await;

    // A replay sends the event again under the same key, for the consumer to drop.
    let replayed = app.voltd(&["events", "replay", &id.to_string()]).await;
    assert_eq!(replayed.code, 0, "{replayed:?}");
    let entries = wait_for_entries(&stream, 2).await;
    assert_eq!(field(&entries[1], "key"), format!("voltd_evt_{id}"));
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_redis_server_that_was_down_receives_every_event_once_it_is_back() {
    voltd::skip_unless_available!(crate::BACKEND);
    voltd::skip_unless_broker!(Broker::Redis);
    let mut redis = PrivateRedis::start();
    let stream = TestStream::on(redis.url());
    let config = TestConfig::new().extra_toml("[[forward]]", &redis_sink("bus", &stream));
    let app = TestApp::spawn(config).await;
    let (_, first) = app
        .post_event(event_body("message.received", "up-1", "before"))
        .await
        .outcome();
    wait_for_entries(&stream, 1).await;

    redis.stop();
    let mut ids = vec![first];
    let error = post_while_down(&app, 20, &mut ids).await;
    assert!(
        error.contains("sink \"bus\": XADD to stream")
            && error.contains(&redis.url().port().unwrap().to_string()),
        "{error}"
    );

    // The restarted server kept nothing: what arrives is what was sent after it came back.
    redis.resume();
    poll_until("every event sent while Redis was down", || {
        let entries = stream.try_entries().unwrap_or_default();
        let mut received: Vec<i64> = entries
            .iter()
            .map(|e| field(e, "id").parse().unwrap())
            .collect();
        // At least once: an answer lost as the server went away means that entry again.
        received.sort();
        received.dedup();
        std::future::ready((received == ids[1..]).then_some(()))
    })
    .await;
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn events_reach_a_jetstream_stream_with_their_body_and_metadata() {
    voltd::skip_unless_available!(crate::BACKEND);
    voltd::skip_unless_broker!(Broker::Nats);
    let stream = TestNatsStream::new().await;
    let uncaptured = stream.uncaptured_target();
    let sinks = format!(
        "name = \"bus\"\ntype = \"nats\"\nurl = \"{url}\"\nsubject = {:?}\n\
         [[forward]]\nname = \"nowhere\"\ntype = \"nats\"\nurl = \"{url}\"\nsubject = {:?}\n\
         backoff_initial_ms = 50\nbackoff_max_secs = 1\n",
        stream.subject(),
        uncaptured.subject,
        url = stream.url(),
    );
    let config = TestConfig::new().extra_toml("[[forward]]", &sinks);
    let app = TestApp::spawn(config).await;
    let body = event_body("message.received", "nats-1", "Hello bus");
    let (_, id) = app.post_event(body.clone()).await.outcome();

    let message = poll_until("the message in the stream", || async {
        stream.messages().await.into_iter().next()
    })
    .await;
    assert_eq!(message.body, body.as_bytes());
    assert_eq!(message.header("Nats-Msg-Id"), format!("voltd_evt_{id}"));
    assert_eq!(message.header("Voltd-Event-Id"), id.to_string());
    assert_eq!(message.header("Voltd-Event-Type"), "message.received");
    let event = app.store.event(id).await.unwrap().unwrap();
    assert_eq!(
        message.header("Voltd-Received-At"),
        event.received_at_text()
    );
    assert_eq!(
        message.header("Voltd-From"),
        event.fields.from.unwrap_or_default()
    );
    let (delivered, failed) = poll_until("both deliveries attempted", || async {
        let all = deliveries(&app.store).await;
        let delivered = all
            .iter()
            .find(|d| d.sink == "bus" && d.status == "delivered")
            .cloned();
        let failed = all
            .iter()
            .find(|d| d.sink == "nowhere" && d.attempts >= 1)
            .cloned();
        delivered.zip(failed)
    })
    .await;
    assert_eq!(delivered.attempts, 1);
    assert_eq!(failed.status, "pending");
    let error = failed.last_error.unwrap_or_default();
    assert!(
        error.contains("no JetStream stream captures subject"),
        "{error}"
    );
    app.stop().await.unwrap();
    stream.delete().await;
}

#[actix_web::test]
async fn a_nats_server_that_was_down_receives_every_event_once_it_is_back() {
    voltd::skip_unless_available!(crate::BACKEND);
    voltd::skip_unless_broker!(Broker::Nats);
    let mut nats = PrivateNats::start();
    let stream = TestNatsStream::on(nats.url()).await;
    let sink = format!(
        "name = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = {:?}\ntimeout_secs = 2\n\
         backoff_initial_ms = 50\nbackoff_max_secs = 1\n",
        stream.url(),
        stream.subject()
    );
    let app = TestApp::spawn(TestConfig::new().extra_toml("[[forward]]", &sink)).await;
    let (_, first) = app
        .post_event(event_body("message.received", "up-1", "before"))
        .await
        .outcome();
    poll_until("the first message", || async {
        stream.messages().await.into_iter().next()
    })
    .await;

    nats.stop();
    let mut ids = vec![first];
    let error = post_while_down(&app, 10, &mut ids).await;
    assert!(
        error.contains("sink \"bus\": publishing to subject")
            && error.contains(&nats.url().port().unwrap().to_string()),
        "{error}"
    );

    // The stream is on disk, so it holds the first event too; repeats are dropped by id.
    nats.resume();
    poll_until("every event, once each", || async {
        let received: Vec<i64> = stream
            .try_messages()
            .await
            .unwrap_or_default()
            .iter()
            .map(|m| m.header("Voltd-Event-Id").parse().unwrap())
            .collect();
        let mut sorted = received.clone();
        sorted.sort();
        (sorted == ids).then_some(())
    })
    .await;
    app.stop().await.unwrap();
    stream.delete().await;
}

fn amqp_sink(name: &str, url: &Url, routing_key: &str) -> String {
    format!(
        "name = {name:?}\ntype = \"amqp\"\nurl = \"{url}\"\nrouting_key = {routing_key:?}\n\
         backoff_initial_ms = 50\nbackoff_max_secs = 1\n"
    )
}

/// The event id a message carries, checked against its `message_id`.
fn event_id(message: &Delivery) -> i64 {
    let headers = message.properties.headers().clone().expect("headers");
    let Some(AMQPValue::LongLongInt(id)) = headers.inner().get("id").cloned() else {
        panic!("no 64-bit id header: {headers:?}");
    };
    let key = message
        .properties
        .message_id()
        .as_ref()
        .map(|k| k.to_string());
    assert_eq!(key, Some(format!("voltd_evt_{id}")));
    id
}

#[actix_web::test]
async fn events_reach_a_rabbitmq_queue_and_an_unroutable_key_is_a_failed_attempt() {
    voltd::skip_unless_available!(crate::BACKEND);
    voltd::skip_unless_broker!(Broker::RabbitMq);
    let queue = TestQueue::declare().await;
    let (url, unroutable) = (queue.url(), format!("{}-nobody", queue.name()));
    let config = TestConfig::new()
        .extra_toml("[[forward]]", &amqp_sink("rabbit", url, queue.name()))
        .extra_toml("[[forward]]", &amqp_sink("lost", url, &unroutable));
    let app = TestApp::spawn(config).await;
    let body = event_body("message.received", "amqp-1", "Hello rabbit");
    let (_, id) = app.post_event(body.clone()).await.outcome();

    let message = poll_until("a message in the test queue", || queue.take()).await;
    assert_eq!(message.data, body.as_bytes());
    let key = format!("voltd_evt_{id}");
    assert_eq!(
        message.properties.message_id().as_ref().map(|k| k.as_str()),
        Some(key.as_str())
    );
    let headers = message.properties.headers().clone().expect("headers");
    assert!(headers.inner().contains_key("event_type"), "{headers:?}");
    let failed = poll_until("the delivered and the failed delivery recorded", || async {
        let all = deliveries(&app.store).await;
        let delivered = all
            .iter()
            .any(|d| d.sink == "rabbit" && d.status == "delivered");
        let failed = all
            .into_iter()
            .find(|d| d.sink == "lost" && d.status == "pending" && d.attempts >= 1);
        failed.filter(|_| delivered)
    })
    .await;
    let error = failed.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!("routing key {unroutable:?}")) && error.contains("unroutable"),
        "{error}"
    );
    app.stop().await.unwrap();
    queue.delete().await;
}

#[actix_web::test]
async fn a_rabbitmq_broker_that_was_cut_off_receives_every_event_once_it_is_back() {
    voltd::skip_unless_available!(crate::BACKEND);
    voltd::skip_unless_broker!(Broker::RabbitMq);
    // The queue is read over the test's own connection, which the proxy does not carry.
    let queue = TestQueue::declare().await;
    let proxy = TcpProxy::start(queue.url());
    let url = proxy.url_for(queue.url());
    let sink = amqp_sink("rabbit", &url, queue.name()) + "timeout_secs = 2\n";
    let app = TestApp::spawn(TestConfig::new().extra_toml("[[forward]]", &sink)).await;
    let (_, first) = app
        .post_event(event_body("message.received", "up-1", "before"))
        .await
        .outcome();
    let message = poll_until("the first message", || queue.take()).await;
    assert_eq!(event_id(&message), first);
    // Cut before its confirmation arrived, the first event would be sent again.
    wait_for_delivery(&app.store, "the first delivery recorded", |d| {
        d.status == "delivered"
    })
    .await;

    proxy.take_down().await;
    let mut ids = vec![first];
    let error = post_while_down(&app, 10, &mut ids).await;
    // The connection's own failure (lapin's "IO error: ..."), or, for the attempts made while
    // the sink waits to connect again, that wait.
    let cause = error
        .strip_prefix(&format!(
            "sink \"rabbit\": publish to exchange \"\" with routing key {:?} at {} failed: ",
            queue.name(),
            origin(&url)
        ))
        .unwrap_or_else(|| panic!("{error}"));
    assert!(
        cause.starts_with("IO error") || cause.starts_with("not connected"),
        "{error}"
    );
    assert!(!error.contains("guest"), "{error}");

    // At least once, as the sink promises: RabbitMQ does not drop repeats, and a confirmation
    // that comes later than `timeout_secs` means the message again, under the same id.
    proxy.bring_up();
    let received = RefCell::new(Vec::new());
    poll_until("every event sent while RabbitMQ was cut off", || async {
        while let Some(message) = queue.take().await {
            received.borrow_mut().push(event_id(&message));
        }
        let mut distinct = received.borrow().clone();
        distinct.sort();
        distinct.dedup();
        (distinct == ids[1..]).then_some(())
    })
    .await;
    app.stop().await.unwrap();
    queue.delete().await;
}
