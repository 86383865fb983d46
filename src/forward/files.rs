//! The files a broker sink names: its `ca_file`, and a NATS sink's `credentials_file` and
//! client certificate. Like the token and Volt's public key, they are read where they are
//! used, and checked before voltd starts (and by `check-config`), so that a wrong path stops
//! it with exit code 78 rather than failing every delivery.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use crate::config::{BrokerTls, ClientCertificate, ForwardSettings, Target};

/// A sink's file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[[forward]] sink {sink:?}: {problem}")]
pub struct SinkFileError {
    sink: String,
    problem: String,
}

/// Read every file the sinks name, as their first connection will.
pub fn check_files(sinks: &[ForwardSettings]) -> Result<(), SinkFileError> {
    for sink in sinks {
        let failed = |problem| SinkFileError {
            sink: sink.name.clone(),
            problem,
        };
        let (tls, credentials, client) = match &sink.target {
            Target::Redis(target) => (&target.tls, None, None),
            Target::Nats(target) => (
                &target.tls,
                target.credentials_file.as_ref(),
                target.client_certificate.as_ref(),
            ),
            Target::Amqp(target) => (&target.tls, None, None),
            Target::Http(_) | Target::Command(_) => continue,
        };
        ca_pem(tls).map_err(failed)?;
        if let Some(client) = client {
            check_client_certificate(client).map_err(failed)?;
        }
        if let Some(path) = credentials {
            std::fs::read(path).map_err(|e| {
                failed(format!(
                    "cannot read credentials_file {}: {e}",
                    path.display()
                ))
            })?;
        }
    }
    Ok(())
}

/// The client certificate's files hold a certificate and a private key, as PEM.
fn check_client_certificate(client: &ClientCertificate) -> Result<(), String> {
    pem_certificates("client_cert_file", &client.cert_file)?;
    let key = &client.key_file;
    PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "client_key_file {} holds no PEM private key ({e}; expected -----BEGIN PRIVATE \
             KEY-----, or an RSA or EC one)",
            key.display()
        )
    })?;
    Ok(())
}

/// The PEM text of the sink's `ca_file`, checked to hold at least one certificate.
pub(super) fn ca_pem(tls: &BrokerTls) -> Result<Option<String>, String> {
    tls.ca_file
        .as_deref()
        .map(|path| pem_certificates("ca_file", path))
        .transpose()
}

/// The text of the file that setting `key` names, checked to be PEM certificates, at least one.
fn pem_certificates(key: &str, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {key} {}: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {} is not PEM certificates: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{key} {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn sinks(forward: &str) -> Vec<ForwardSettings> {
        let text = format!(
            "[server]\npublic_url = \"https://hooks.example.com/volt/a1b2c3d4e5f6a7b8c9\"\n\
             [[forward]]\n{forward}"
        );
        Settings::from_toml(std::path::Path::new("volt.toml"), &text, [])
            .unwrap()
            .forward
    }

    #[test]
    fn unusable_files_are_named_with_their_sink() {
        for (forward, expected) in [
            (
                "name = \"r\"\ntype = \"redis\"\nurl = \"rediss://x/\"\nstream = \"s\"\n\
                 ca_file = \"/dev/null\"\n",
                "[[forward]] sink \"r\": ca_file /dev/null holds no certificate",
            ),
            (
                "name = \"a\"\ntype = \"amqp\"\nurl = \"amqps://x/\"\nrouting_key = \"q\"\n\
                 ca_file = \"/nonexistent/ca.pem\"\n",
                "[[forward]] sink \"a\": cannot read ca_file /nonexistent/ca.pem: No such file",
            ),
            (
                "name = \"n\"\ntype = \"nats\"\nurl = \"tls://x:4222\"\nsubject = \"s\"\n\
                 credentials_file = \"/nonexistent/voltd.creds\"\n",
                "[[forward]] sink \"n\": cannot read credentials_file /nonexistent/voltd.creds",
            ),
            (
                "name = \"n\"\ntype = \"nats\"\nurl = \"tls://x:4222\"\nsubject = \"s\"\n\
                 client_cert_file = \"/nonexistent/client.pem\"\n\
                 client_key_file = \"/dev/null\"\n",
                "[[forward]] sink \"n\": cannot read client_cert_file /nonexistent/client.pem",
            ),
        ] {
            let error = check_files(&sinks(forward)).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn a_ca_file_of_certificates_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        let certificate = rcgen::generate_simple_self_signed(vec!["broker".into()]).unwrap();
        std::fs::write(&ca_file, certificate.cert.pem()).unwrap();
        let forward = format!(
            "name = \"r\"\ntype = \"redis\"\nurl = \"rediss://x/\"\nstream = \"s\"\n\
             ca_file = \"{}\"\n",
            ca_file.display()
        );
        check_files(&sinks(&forward)).unwrap();
        let tls = BrokerTls {
            ca_file: Some(ca_file),
        };
        assert_eq!(ca_pem(&tls).unwrap(), Some(certificate.cert.pem()));
    }

    #[test]
    fn a_client_certificate_needs_a_certificate_and_a_private_key() {
        let authority = crate::testing::certificates::TestAuthority::generate();
        let client = authority.client();
        let nats = |cert: &std::path::Path, key: &std::path::Path| {
            format!(
                "name = \"n\"\ntype = \"nats\"\nurl = \"tls://x:4222\"\nsubject = \"s\"\n\
                 client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                cert.display(),
                key.display()
            )
        };
        check_files(&sinks(&nats(&client.cert_file, &client.key_file))).unwrap();
        let swapped = check_files(&sinks(&nats(&client.key_file, &client.cert_file)))
            .unwrap_err()
            .to_string();
        assert!(
            swapped.contains("client_cert_file") && swapped.contains("holds no certificate"),
            "{swapped}"
        );
        let no_key = check_files(&sinks(&nats(&client.cert_file, &client.cert_file)))
            .unwrap_err()
            .to_string();
        assert!(
            no_key.contains("client_key_file") && no_key.contains("holds no PEM private key"),
            "{no_key}"
        );
    }
}
