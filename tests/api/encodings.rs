//! `Content-Encoding`: compressed events are stored decoded, with their encoding recorded, and
//! the size limit holds for what a body decodes to.

use voltd::testing::encoding::compressed;

use crate::helpers::{TestApp, TestConfig, event_body, stored_events};

#[actix_web::test]
async fn compressed_events_are_stored_decoded_with_their_encoding() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;

    for (header, coding) in [
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("deflate", "raw-deflate"),
        ("br", "br"),
    ] {
        let body = event_body("message.received", &format!("m-{coding}"), "hi");
        let (status, id) = app
            .post_encoded_event(header, compressed(coding, body.as_bytes()))
            .await
            .outcome();

        assert_eq!(status, "stored", "{coding}");
        let event = app.store.event(id).await.unwrap().expect("stored");
        assert_eq!(event.body, body.as_bytes(), "{coding}");
        assert_eq!(event.content_encoding.as_deref(), Some(header));
        assert_eq!(event.fields.message_id, Some(format!("m-{coding}")));
    }
    let plain = app.post_event("plain").await.outcome().1;
    let shown = app.voltd(&["events", "show", &plain.to_string()]).await;
    assert!(
        shown.stdout.contains("\"content_encoding\": null"),
        "{shown:?}"
    );
    let shown = app
        .voltd(&["events", "show", &(plain - 1).to_string()])
        .await;
    assert!(
        shown.stdout.contains("\"content_encoding\": \"br\""),
        "{shown:?}"
    );
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_compressed_repeat_of_a_plain_event_is_a_duplicate() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;
    let body = event_body("message.received", "m-repeat", "hi");

    let (_, first) = app.post_event(body.clone()).await.outcome();
    let repeat = app
        .post_encoded_event("gzip", compressed("gzip", body.as_bytes()))
        .await;

    assert_eq!(repeat.outcome(), ("duplicate".to_owned(), first));
    assert_eq!(stored_events(&app.store).await.len(), 1);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn a_bomb_is_refused_by_its_decoded_size_and_not_stored() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new().max_body_bytes(1024)).await;
    let bomb = compressed("gzip", &vec![0; 512 * 1024]);
    assert!(bomb.len() < 1024, "the bomb passes the limit as sent");

    let reply = app.post_encoded_event("gzip", bomb).await;
    let at_limit = app
        .post_encoded_event("br", compressed("br", &[b'x'; 1024]))
        .await;

    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(at_limit.status, 200, "{at_limit:?}");
    assert_eq!(stored_events(&app.store).await.len(), 1);
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn unknown_or_corrupt_encodings_are_refused_and_not_stored() {
    voltd::skip_unless_available!(crate::BACKEND);
    let app = TestApp::spawn(TestConfig::new()).await;

    let unknown = app.post_encoded_event("zstd", "not zstd either").await;
    let corrupt = app.post_encoded_event("gzip", "not gzip").await;

    assert_eq!(unknown.status, 415, "{unknown:?}");
    let message = unknown.json()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("gzip, deflate or br"), "{message}");
    assert_eq!(corrupt.status, 400, "{corrupt:?}");
    assert!(stored_events(&app.store).await.is_empty());
    app.stop().await.unwrap();
}
