//! Volt signature checking end to end: the public half of the test key given to voltd as a
//! PEM file, events signed with the private half.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::Pkcs1v15Sign;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use sha2::{Digest, Sha256};
use voltd::testing::signing_key;

use crate::helpers::{TestApp, TestConfig, fixture, json_lines, stored_events};

fn signature_of(body: &[u8]) -> String {
    let signature = signing_key()
        .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(body))
        .expect("sign");
    STANDARD.encode(signature)
}

/// A config whose `[verify]` holds the test key, in `mode` (None: the default).
fn verifying(mode: Option<&str>) -> TestConfig {
    let config = TestConfig::new();
    let pem = signing_key()
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let key_path = config.dir.path().join("volt.pub");
    std::fs::write(&key_path, pem).unwrap();
    let mode = mode
        .map(|m| format!("\nmode = \"{m}\""))
        .unwrap_or_default();
    config.extra_toml("verify", &format!("public_key_file = {key_path:?}{mode}"))
}

async fn post_signed(app: &TestApp, body: &[u8], signature: Option<&str>) -> u16 {
    let mut request = app.client().post(app.webhook_url());
    if let Some(signature) = signature {
        request = request.insert_header(("X-Respond-Flow-Signature", signature));
    }
    request
        .send_body(body.to_vec())
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[actix_web::test]
async fn log_mode_stores_every_event_with_its_verdict() {
    let app = TestApp::spawn(verifying(None)).await;
    let body = fixture("message-received.json");

    assert_eq!(
        post_signed(&app, &body, Some(&signature_of(&body))).await,
        200
    );
    assert_eq!(
        post_signed(&app, b"tampered", Some(&signature_of(&body))).await,
        200
    );
    assert_eq!(post_signed(&app, b"unsigned", None).await, 200);

    let mut verdicts: Vec<String> = stored_events(&app.store)
        .await
        .iter()
        .map(|e| e.signature.as_str().to_owned())
        .collect();
    verdicts.sort();
    assert_eq!(verdicts, ["invalid", "missing", "valid"]);
    let listed = json_lines(&app.voltd(&["events", "list", "--json"]).await.stdout);
    let newest = listed[0]["id"].to_string();
    let shown = app.voltd(&["events", "show", &newest]).await;
    assert!(
        shown.stdout.contains(r#""signature": "missing""#),
        "{shown:?}"
    );
    let table = app.voltd(&["events", "list"]).await.stdout;
    assert!(
        table.contains("SIGNATURE") && table.contains("invalid"),
        "{table}"
    );
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn enforce_mode_refuses_bad_signatures_without_storing() {
    let app = TestApp::spawn(verifying(Some("enforce"))).await;
    let body = fixture("message-sent.json");

    assert_eq!(post_signed(&app, &body, None).await, 401);
    assert_eq!(
        post_signed(&app, &body, Some("bm90IGEgc2lnbmF0dXJl")).await,
        401
    );
    assert_eq!(
        post_signed(&app, b"other body", Some(&signature_of(&body))).await,
        401
    );
    assert!(stored_events(&app.store).await.is_empty());

    assert_eq!(
        post_signed(&app, &body, Some(&signature_of(&body))).await,
        200
    );
    let events = stored_events(&app.store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].signature.as_str(), "valid");
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn without_a_key_events_are_unchecked() {
    let app = TestApp::spawn(TestConfig::new()).await;
    assert_eq!(post_signed(&app, b"x", Some("anything")).await, 200);
    assert_eq!(
        stored_events(&app.store).await[0].signature.as_str(),
        "unchecked"
    );
    app.stop().await.unwrap();
}

#[actix_web::test]
async fn enforce_without_a_key_is_a_configuration_error() {
    let config = TestConfig::new().extra_toml("verify", "mode = \"enforce\"");
    config.write(1);
    let output = crate::helpers::voltd(
        Some(&config.config_path()),
        config.dir.path(),
        &["check-config"],
    )
    .await;
    assert_eq!(output.code, 78, "{output:?}");
    assert!(output.stderr.contains("verify.mode"), "{}", output.stderr);
}
