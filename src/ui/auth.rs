//! The inbox's password (HTTP Basic, any user name) and the comparison of secrets.
//!
//! Secrets are compared as SHA-256 digests with a constant-time equality, so neither the
//! position of the first wrong byte nor the length of the password shows in the time an
//! answer takes.

use std::future::{Ready, ready};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::UiState;
use crate::volt::token::resolve_credential;

#[derive(Debug, thiserror::Error)]
pub enum UiPasswordError {
    #[error(
        "admin.ui_password_file: cannot read {} (check the path and that the voltd user may \
         read it)",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "admin.ui_password_file: {} is empty; put the web inbox's password in it",
        path.display()
    )]
    Empty { path: PathBuf },
}

/// The password of the web inbox, kept as its digest.
#[derive(Clone)]
pub struct Password(Arc<[u8; 32]>);

impl Password {
    /// Read `file` (relative: in `$CREDENTIALS_DIRECTORY` first); surrounding white space,
    /// such as the newline an editor adds, is not part of the password.
    pub fn load(file: &Path) -> Result<Self, UiPasswordError> {
        let path = resolve_credential(file, std::env::var_os("CREDENTIALS_DIRECTORY"));
        let text = std::fs::read_to_string(&path)
            .map(SecretString::from)
            .map_err(|source| UiPasswordError::Unreadable {
                path: path.clone(),
                source,
            })?;
        let password = text.expose_secret().trim();
        if password.is_empty() {
            return Err(UiPasswordError::Empty { path });
        }
        Ok(Self(Arc::new(digest(password.as_bytes()))))
    }

    fn accepts(&self, given: &[u8]) -> bool {
        same_secret(&self.0[..], &digest(given))
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Whether `given` is `expected`, in time that does not depend on where they differ.
pub fn same_secret(expected: &[u8], given: &[u8]) -> bool {
    bool::from(digest(expected).ct_eq(&digest(given)))
}

/// Proof that the request may see the inbox: it gave the password, or none is configured
/// (a loopback listener; see `AdminSettings::ui_needs_password`).
pub struct Viewer;

impl FromRequest for Viewer {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let password = request
            .app_data::<web::Data<UiState>>()
            .and_then(|state| state.password.clone());
        let Some(password) = password else {
            return ready(Ok(Self));
        };
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| basic_password(value.as_bytes()));
        ready(match given {
            Some(given) if password.accepts(&given) => Ok(Self),
            _ => Err(actix_web::error::InternalError::from_response(
                "the web inbox needs its password (admin.ui_password_file)",
                HttpResponse::Unauthorized()
                    .insert_header((
                        header::WWW_AUTHENTICATE,
                        r#"Basic realm="voltd", charset="UTF-8""#,
                    ))
                    .body("The voltd web inbox needs its password (admin.ui_password_file).\n"),
            )
            .into()),
        })
    }
}

/// The password of an `Authorization: Basic ...` header; the user name is not checked.
fn basic_password(header: &[u8]) -> Option<Vec<u8>> {
    let encoded = header.strip_prefix(b"Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_after_the_first_colon() {
        let header = |credentials: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        };
        assert_eq!(
            basic_password(header("anyone:pa:ss").as_bytes()).as_deref(),
            Some(&b"pa:ss"[..])
        );
        assert_eq!(basic_password(header("no colon").as_bytes()), None);
        assert_eq!(basic_password(b"Bearer abc"), None);
        assert_eq!(basic_password(b"Basic !!!"), None);
    }

    #[test]
    fn the_file_is_trimmed_and_compared_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ui-password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let password = Password::load(&file).unwrap();
        assert!(password.accepts(b"s3cret"));
        for wrong in [&b"s3cre"[..], b"s3cret\n", b"s3crett", b""] {
            assert!(!password.accepts(wrong), "{wrong:?}");
        }
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(
            Password::load(&file),
            Err(UiPasswordError::Empty { .. })
        ));
        let missing = Password::load(&dir.path().join("absent")).err().unwrap();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }
}
