//! The signature check the endpoint applies: `[verify]`'s mode, and Volt's public key read
//! from its file when the receiver is set up (loading the configuration reads no files).

use std::sync::Arc;

use crate::config::{VerifyMode, VerifySettings};
use crate::volt::signature::{KeyError, VoltPublicKey};

/// The key file named by `verify.public_key_file` cannot be used. The message is the key's
/// name; the cause says what is wrong with the file.
#[derive(Debug, thiserror::Error)]
#[error("verify.public_key_file")]
pub struct PublicKeyError(#[source] pub KeyError);

pub struct SignatureCheck {
    pub mode: VerifyMode,
    /// Present whenever `mode` is not `Off`.
    pub key: Option<Arc<VoltPublicKey>>,
}

impl SignatureCheck {
    /// Read the key file when one is set, even with `mode = "off"`, so that a broken file is
    /// found now rather than when someone turns checking on.
    pub fn load(settings: &VerifySettings) -> Result<Self, PublicKeyError> {
        let key = match &settings.public_key_file {
            Some(path) => Some(Arc::new(
                VoltPublicKey::from_file(path).map_err(PublicKeyError)?,
            )),
            None => None,
        };
        let mode = settings.effective_mode();
        Ok(Self {
            mode,
            key: key.filter(|_| mode != VerifyMode::Off),
        })
    }
}
