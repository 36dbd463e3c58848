//! The sign-in on disk: one JSON file in the data directory, readable by its owner only
//! (mode 0600), replaced whole on every change (written beside it, then renamed over it), so
//! a crash mid-write leaves the old sign-in rather than half a new one. Rotation makes that
//! matter: after a refresh only the new refresh token works, so it must reach the disk
//! before anything else happens.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AuthError;
use super::token::SignIn;
use crate::chat::bridge::Secret;

/// The file's name in the data directory.
pub const FILE_NAME: &str = "twitch-sign-in.json";

/// Where a sign-in is kept.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

/// The file's content. Plain strings: this is the one place the tokens are written out.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    login: String,
    user_id: String,
    client_id: String,
    scopes: Vec<String>,
    access_token: String,
    refresh_token: String,
    obtained_at_ms: i64,
    expires_at_ms: i64,
}

impl TokenFile {
    /// The sign-in of the data directory `dir`.
    pub fn in_dir(dir: &Path) -> TokenFile {
        TokenFile {
            path: dir.join(FILE_NAME),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, reason: impl std::fmt::Display) -> AuthError {
        AuthError::File(format!("{}: {reason}", self.path.display()))
    }

    /// The stored sign-in; `None` when nobody signed in.
    pub fn load(&self) -> Result<Option<SignIn>, AuthError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let s: Stored = serde_json::from_str(&text).map_err(|e| {
            // serde_json's message names the line and column, never the value.
            self.error(format!(
                "unreadable ({e}); run `cowatch twitch login` again"
            ))
        })?;
        Ok(Some(SignIn {
            login: s.login,
            user_id: s.user_id,
            client_id: s.client_id,
            scopes: s.scopes,
            access_token: Secret::new(s.access_token),
            refresh_token: Secret::new(s.refresh_token),
            obtained_at_ms: s.obtained_at_ms,
            expires_at_ms: s.expires_at_ms,
        }))
    }

    /// Replaces the stored sign-in with `record`, creating the directory if needed.
    pub fn save(&self, record: &SignIn) -> Result<(), AuthError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
        let stored = Stored {
            login: record.login.clone(),
            user_id: record.user_id.clone(),
            client_id: record.client_id.clone(),
            scopes: record.scopes.clone(),
            access_token: record.access_token.expose().to_owned(),
            refresh_token: record.refresh_token.expose().to_owned(),
            obtained_at_ms: record.obtained_at_ms,
            expires_at_ms: record.expires_at_ms,
        };
        let text = serde_json::to_vec_pretty(&stored).map_err(|e| self.error(e))?;
        let temp = self.path.with_extension("json.new");
        let _ = std::fs::remove_file(&temp);
        let write = || -> std::io::Result<()> {
            // Created 0600: the tokens are never readable by others, not even for a moment.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            // An umask cannot widen 0600, but a file left by an older run could be wider.
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&temp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            self.error(e)
        })
    }

    /// Forgets the sign-in; true when there was one.
    pub fn remove(&self) -> Result<bool, AuthError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_survives_the_disk_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("cowatch-twitch-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = TokenFile::in_dir(&dir.join("data"));
        assert!(file.load().unwrap().is_none());
        let record = SignIn {
            login: "streamer".into(),
            user_id: "7".into(),
            client_id: "cid".into(),
            scopes: vec!["chat:read".into()],
            access_token: Secret::new("access-1"),
            refresh_token: Secret::new("refresh-1"),
            obtained_at_ms: 5,
            expires_at_ms: 10,
        };
        file.save(&record).unwrap();
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = file.load().unwrap().unwrap();
        assert_eq!(back.refresh_token.expose(), "refresh-1");
        assert_eq!((back.login.as_str(), back.expires_at_ms), ("streamer", 10));
        std::fs::write(file.path(), "{not json").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("cowatch twitch login"), "{err}");
        assert!(file.remove().unwrap());
        assert!(!file.remove().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
