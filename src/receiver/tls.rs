//! TLS on the public listener (rustls), for deployments without a reverse proxy.
//!
//! The certificate sits behind a resolver that can be swapped at run time: SIGHUP re-reads
//! the PEM files and new handshakes use the new certificate while open connections carry on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;

use crate::error_chain::ErrorChain;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read the TLS certificate from {} (check server.tls_cert: a PEM file readable \
         by the voltd user)",
        path.display()
    )]
    Certificate {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error(
        "no CERTIFICATE block in {}; server.tls_cert names a PEM file holding the certificate \
         chain",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "cannot read the TLS key from {} (check server.tls_key: a PEM file readable by the \
         voltd user)",
        path.display()
    )]
    Key {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error(
        "the TLS key {} does not fit the certificate {}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        key: PathBuf,
        cert: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot set up TLS")]
    Setup(#[source] rustls::Error),
}

/// The current certificate and key, replaceable while serving.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let current = RwLock::new(Arc::new(read(cert_path, key_path)?));
        Ok(Arc::new(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current,
        }))
    }

    /// Re-read both files; on any error the certificate in use stays as it was.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(read(&self.cert_path, &self.key_path)?);
        match self.current.write() {
            Ok(mut current) => *current = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// A rustls server configuration that asks this resolver on every handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = match self.current.read() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(current.clone())
    }
}

/// SIGHUP re-reads the TLS certificate and key; a bad pair is logged and the old one kept.
/// Without TLS the signal is acknowledged and ignored, rather than ending the process as
/// SIGHUP does by default (`systemctl reload` must never stop the receiver).
pub async fn reload_on_hangup(
    mut hangup: Signal,
    cert: Option<Arc<ReloadableCert>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = hangup.recv() => match cert.as_deref().map(ReloadableCert::reload) {
                Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
                Some(Err(e)) => tracing::error!(error = %ErrorChain(&e), "TLS certificate not reloaded; keeping the current one"),
                None => tracing::info!("SIGHUP received; nothing to reload without TLS"),
            },
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let certificate_error = |source| TlsError::Certificate {
        path: cert_path.to_owned(),
        source,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(certificate_error)?
        .collect::<Result<_, _>>()
        .map_err(certificate_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Key {
        path: key_path.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Mismatch {
        key: key_path.to_owned(),
        cert: cert_path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_certificate_is_named_with_its_cause() {
        let directory = tempfile::tempdir().unwrap();
        let cert = directory.path().join("absent-cert.pem");
        let key = directory.path().join("absent-key.pem");
        let error = ReloadableCert::load(&cert, &key).unwrap_err();
        assert!(matches!(error, TlsError::Certificate { .. }), "{error:?}");
        let line = ErrorChain(&error).to_string();
        assert!(line.contains("absent-cert.pem"), "{line}");
        assert!(line.contains("server.tls_cert"), "{line}");
        assert_eq!(line.matches("No such file").count(), 1, "{line}");
    }
}
