//! The webhook endpoint: store anything within the limit, answer only once it is committed.

use awc::http::Method;

use crate::helpers::{TestApp, TestConfig, WEBHOOK_PATH, event_body, fixture, send, stored_events};

#[actix_web::test]
async fn bodies_that_are_not_json_are_stored_byte_exact() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let bodies: [&[u8]; 3] = [b"", b"Yes", b"\xff\xfe not utf-8 {"];

    for body in bodies {
        let (status, id) = app.post_event(body.to_vec()).await.outcome();

        assert_eq!(status, "stored");
        let event = app.store.event(id).await.unwrap().expect("stored");
        assert_eq!(event.body, body);
        assert_eq!(
            event.fields,
            voltd::event::EventFields::default(),
            "{body:?}"
        );
        let json = serde_json::to_value(event.to_json()).unwrap();
        for key in [
            "event_type",
            "direction",
            "from",
            "to",
            "message_id",
            "payload",
        ] {
            assert!(json[key].is_null(), "{key} of {body:?}: {json}");
        }
    }
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_body_over_the_limit_is_refused_and_not_stored() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new().max_body_bytes(1024)).await;

    let too_large = app.post_event(vec![b'x'; 1025]).await;
    let at_limit = app.post_event(vec![b'x'; 1024]).await;

    assert_eq!(too_large.status, 413, "{too_large:?}");
    assert_eq!(too_large.json()["status"], "error");
    assert_eq!(at_limit.status, 200, "{at_limit:?}");
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn other_paths_are_404_and_other_methods_405() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let body = fixture("message-received.json");

    let elsewhere = app.request(Method::POST, "/volt/wrong", body.clone()).await;
    let root = app.request(Method::GET, "/", "").await;
    let get = app.request(Method::GET, WEBHOOK_PATH, "").await;
    let put = app.request(Method::PUT, WEBHOOK_PATH, body).await;

    assert_eq!(elsewhere.status, 404, "{elsewhere:?}");
    assert_eq!(root.status, 404, "{root:?}");
    for reply in [&get, &put] {
        assert_eq!(reply.status, 405, "{reply:?}");
        assert_eq!(reply.allow.as_deref(), Some("POST"));
    }
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_repeat_delivery_is_a_duplicate_of_the_first() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let body = fixture("message-sent.json");

    let first = app.post_event(body.clone()).await.outcome();
    let repeat = app.post_event(body).await.outcome();
    let finalized = app
        .post_event(fixture("message-finalized-failed.json"))
        .await
        .outcome();

    assert_eq!(first.0, "stored");
    assert_eq!(repeat, ("duplicate".to_owned(), first.1));
    assert_eq!(
        finalized.0, "stored",
        "same message, a later lifecycle event"
    );
    assert_eq!(app.store.count_events().await.unwrap(), 2);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn identical_bodies_without_a_message_id_are_two_events() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let reply = r#"{"payload":{"event_type":"message.received","from_number":"+15555550145","text":"Yes"}}"#;

    let first = app.post_event(reply).await.outcome();
    let second = app.post_event(reply).await.outcome();

    assert_eq!(first.0, "stored");
    assert_eq!(second.0, "stored");
    assert_ne!(first.1, second.1);
    assert_eq!(stored_events(&app.store).await.len(), 2);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn stored_fields_come_from_the_body() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;

    let (_, id) = app
        .post_event(event_body("message.received", "m-77", "Hello"))
        .await
        .outcome();

    let event = app.store.event(id).await.unwrap().expect("stored");
    assert_eq!(event.fields.event_type.as_deref(), Some("message.received"));
    assert_eq!(event.fields.message_id.as_deref(), Some("m-77"));
    assert_eq!(event.fields.text.as_deref(), Some("Hello"));
    assert_eq!(event.content_type.as_deref(), Some("application/json"));
    assert_eq!(event.remote_addr.as_deref(), Some("127.0.0.1"));
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn imperfect_strings_do_not_hide_the_fields_nor_the_dedup_key() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let bodies: [&[u8]; 2] = [
        b"{\"payload\":{\"event_type\":\"message.received\",\"id\":\"m-utf8\",\"text\":\"caf\xe9 \xff\xfe\"}}",
        br#"{"payload":{"event_type":"message.received","id":"m-surrogate","text":"half \ud83d pair"}}"#,
    ];

    for body in bodies {
        let (first, id) = app.post_event(body.to_vec()).await.outcome();
        let repeat = app.post_event(body.to_vec()).await.outcome();

        assert_eq!(first, "stored");
        assert_eq!(repeat, ("duplicate".to_owned(), id), "{body:?}");
        let event = app.store.event(id).await.unwrap().expect("stored");
        assert_eq!(event.body, body, "the body is stored as it came");
        assert_eq!(event.fields.event_type.as_deref(), Some("message.received"));
        assert!(event.fields.message_id.is_some(), "{body:?}");
    }
    assert_eq!(stored_events(&app.store).await.len(), 2);
    app.stop().await.unwrap();
}

/// An event the database will not take (on PostgreSQL a message id too long for the
/// deduplication index) fails alone: the events committed in the same batch are stored, and
/// the store is not taken for broken.
#[actix_web::test]
async fn an_event_the_database_refuses_does_not_fail_its_neighbours() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    // Random, so that PostgreSQL cannot compress it below its index row limit (2,704 bytes).
    let long_id: String = (0..10_000)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    // Sent together, so that they share batches.
    let senders: Vec<_> = (0..40)
        .map(|n| {
            let id = if n == 20 {
                long_id.clone()
            } else {
                format!("neighbour-{n}")
            };
            let (client, url) = (app.client().clone(), app.webhook_url());
            actix_web::rt::spawn(async move {
                send(
                    &client,
                    Method::POST,
                    &url,
                    event_body("message.received", &id, "x"),
                )
                .await
            })
        })
        .collect();
    for (n, sender) in senders.into_iter().enumerate() {
        let reply = sender.await.unwrap().expect("an answer");
        match (n, reply.status) {
            (20, 200) => assert_eq!(crate::BACKEND, voltd::config::Backend::Sqlite),
            (20, 503) => assert_eq!(reply.retry_after.as_deref(), Some("1")),
            (_, 200) => {}
            (n, _) => panic!("event {n}: {reply:?}"),
        }
    }
    let (status, _) = app
        .post_event(event_body("message.received", "afterwards", "x"))
        .await
        .outcome();
    assert_eq!(status, "stored");
    app.stop().await.unwrap();
}
