//! A certificate authority made for one test, and the server and client certificates it
//! signs, as the PEM files a broker and a sink read. They live in a directory of their own,
//! removed with the authority.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct TestAuthority {
    issuer: Issuer<'static, KeyPair>,
    directory: PathBuf,
    /// The authority's own certificate, what a client or server trusts.
    pub ca_file: PathBuf,
}

/// A certificate and its private key, as files.
pub struct CertifiedKey {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestAuthority {
    /// A new authority, with a key of its own.
    pub fn generate() -> Self {
        let directory =
            std::env::temp_dir().join(format!("voltd-test-ca-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&directory).expect("a directory for the test certificates");
        let mut params = CertificateParams::new(Vec::new()).expect("parameters for a CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a key for the CA");
        let certificate = params.self_signed(&key).expect("the CA's certificate");
        let ca_file = directory.join("ca.pem");
        std::fs::write(&ca_file, certificate.pem()).expect("the CA's file");
        Self {
            issuer: Issuer::new(params, key),
            directory,
            ca_file,
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self) -> CertifiedKey {
        self.sign("server", ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate, as a server that verifies its clients asks for.
    pub fn client(&self) -> CertifiedKey {
        self.sign("client", ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn sign(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> CertifiedKey {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("parameters for a certificate");
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("a key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        let files = CertifiedKey {
            cert_file: self.directory.join(format!("{name}.pem")),
            key_file: self.directory.join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert_file, certificate.pem()).expect("the certificate's file");
        std::fs::write(&files.key_file, key.serialize_pem()).expect("the key's file");
        files
    }
}

impl Drop for TestAuthority {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
