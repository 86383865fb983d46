//! `[verify]`: checking the signature Volt puts on each event.

use std::path::PathBuf;

use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Serialize, Serializer};

use super::fields;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySettings {
    /// As set; [`VerifySettings::effective_mode`] says what applies.
    #[serde(deserialize_with = "fields::optional_any_case")]
    pub mode: Option<VerifyMode>,
    /// Volt's public key: read where signatures are checked, so loading does no I/O.
    pub public_key_file: Option<PathBuf>,
}

/// What to do with Volt's `X-Respond-Flow-Signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Not checked; stored as "unchecked".
    Off,
    /// Checked and recorded with the event; invalid or missing signatures are still stored.
    Log,
    /// Checked; an invalid or missing signature gets 401 and is not stored.
    Enforce,
}

impl VerifySettings {
    /// The mode defaults to "log" once a key file is set, so that adding a key never starts
    /// rejecting events by surprise.
    pub fn effective_mode(&self) -> VerifyMode {
        self.mode.unwrap_or(match self.public_key_file {
            Some(_) => VerifyMode::Log,
            None => VerifyMode::Off,
        })
    }
}

/// `check-config` shows the mode that applies, not only the one written.
impl Serialize for VerifySettings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut table = serializer.serialize_struct("VerifySettings", 2)?;
        table.serialize_field("mode", &self.effective_mode())?;
        match &self.public_key_file {
            Some(path) => table.serialize_field("public_key_file", path)?,
            None => table.skip_field("public_key_file")?,
        }
        table.end()
    }
}
