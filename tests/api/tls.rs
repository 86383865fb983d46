//! TLS on the public listener with a certificate made in the test, and its reload on SIGHUP.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use awc::http::Method;
use nix::sys::signal::Signal;

use crate::daemon::Daemon;
use crate::helpers::{TestConfig, WEBHOOK_PATH, poll_until, send};

/// Write a fresh self-signed certificate for localhost; returns its DER for clients to trust.
fn write_certificate(dir: &Path) -> Vec<u8> {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), key.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.signing_key.serialize_pem()).unwrap();
    key.cert.der().to_vec()
}

fn client_trusting(certificate: &[u8]) -> awc::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            certificate.to_vec(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .connector(awc::Connector::new().rustls_0_23(Arc::new(config)))
        .finish()
}

#[actix_web::test]
async fn serves_https_and_reloads_the_certificate_on_sighup() {
    let config = TestConfig::new();
    let first = write_certificate(config.dir.path());
    let config = config.extra_toml("server", "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"");
    let mut daemon = Daemon::spawn(config);
    daemon.wait_until_listening().await;
    let url = format!("https://localhost:{}{WEBHOOK_PATH}", daemon.address.port());

    let old_client = client_trusting(&first);
    let reply = send(&old_client, Method::POST, &url, "over tls")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");

    let second = write_certificate(daemon.config.dir.path());
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("TLS certificate reloaded").await;
    let new_client = &client_trusting(&second);
    let url = &url;
    poll_until("a handshake with the new certificate", || async move {
        let reply = send(new_client, Method::POST, url, "after reload").await;
        reply.ok().filter(|r| r.status == 200).map(drop)
    })
    .await;
    // The connection opened before the reload was not dropped.
    let reply = send(&old_client, Method::POST, url, "old connection")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
}

#[actix_web::test]
async fn a_bad_certificate_is_a_configuration_error() {
    let config = TestConfig::new().extra_toml(
        "server",
        "tls_cert = \"missing.pem\"\ntls_key = \"missing-key.pem\"",
    );
    config.write(1);
    let output = crate::helpers::voltd(
        Some(&config.config_path()),
        config.dir.path(),
        &["check-config"],
    )
    .await;
    assert_eq!(output.code, 78, "{output:?}");
    assert!(output.stderr.contains("missing.pem"), "{}", output.stderr);
}
