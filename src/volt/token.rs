//! The Volt API token: set inline (`api.token`, `VOLT_API__TOKEN`) or read from
//! `api.token_file` by the commands that call Volt, so that commands which only look at the
//! store work without access to it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret as _, SecretString};

use crate::config::ApiSettings;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "api.token_file: cannot read {} (check the path and that the voltd user may read it)",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("api.token_file: {} is empty; put the Volt API token in it", path.display())]
    Empty { path: PathBuf },
    #[error(
        "api.token_file: the token in {} contains a line break or another control character; \
         the token is one line",
        path.display()
    )]
    ControlCharacter { path: PathBuf },
    #[error(
        "api.token: this command calls Volt and needs a token; set api.token_file in volt.toml \
         (or VOLT_API__TOKEN)"
    )]
    NotConfigured,
}

/// The configured token, reading `api.token_file` when that is how it is given.
pub fn load(api: &ApiSettings) -> Result<Option<SecretString>, TokenError> {
    match (&api.token, &api.token_file) {
        (Some(token), _) => Ok(Some(token.clone())),
        (None, Some(file)) => read_file(&resolve_credential(
            file,
            std::env::var_os("CREDENTIALS_DIRECTORY"),
        ))
        .map(Some),
        (None, None) => Ok(None),
    }
}

/// systemd's `LoadCredential=` places files under `$CREDENTIALS_DIRECTORY`; a relative
/// credential file (`token_file`, `admin.ui_password_file`) is resolved there so that the
/// unit can name just the credential.
pub fn resolve_credential(file: &Path, credentials_directory: Option<OsString>) -> PathBuf {
    match credentials_directory {
        Some(directory) if file.is_relative() => PathBuf::from(directory).join(file),
        _ => file.to_path_buf(),
    }
}

fn read_file(path: &Path) -> Result<SecretString, TokenError> {
    let text = std::fs::read_to_string(path)
        .map(SecretString::from)
        .map_err(|source| TokenError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    let token = text.expose_secret().trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    if token.chars().any(char::is_control) {
        return Err(TokenError::ControlCharacter {
            path: path.to_path_buf(),
        });
    }
    Ok(SecretString::from(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_file_is_looked_up_among_the_credentials() {
        let credentials = Some(OsString::from("/run/credentials/voltd.service"));
        assert_eq!(
            resolve_credential(Path::new("volt-token"), credentials.clone()),
            Path::new("/run/credentials/voltd.service/volt-token")
        );
        assert_eq!(
            resolve_credential(Path::new("/etc/voltd/volt-token"), credentials),
            Path::new("/etc/voltd/volt-token")
        );
        assert_eq!(
            resolve_credential(Path::new("volt-token"), None),
            Path::new("volt-token")
        );
    }

    #[test]
    fn the_file_holds_one_trimmed_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("volt-token");
        std::fs::write(&file, "  tok-123\n").unwrap();
        assert_eq!(read_file(&file).unwrap().expose_secret(), "tok-123");
        std::fs::write(&file, "\n \n").unwrap();
        assert!(matches!(read_file(&file), Err(TokenError::Empty { .. })));
        std::fs::write(&file, "tok\n123\n").unwrap();
        assert!(matches!(
            read_file(&file),
            Err(TokenError::ControlCharacter { .. })
        ));
        let missing = dir.path().join("nowhere");
        let error = read_file(&missing).unwrap_err();
        assert!(error.to_string().contains("nowhere"), "{error}");
        assert!(std::error::Error::source(&error).is_some());
    }
}
