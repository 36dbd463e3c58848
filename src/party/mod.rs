//! The party: who may do what. The host key, moderator links, the optional invite code and
//! the viewers' sessions (how long each has been in the party, which nickname it holds).
//!
//! Keys are random, carried in links, compared in constant time and never logged; moderator
//! keys are stored only as hashes (see [`crate::store`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::moderation::Role;
/// The crate's one random-id helper lives in the store, where moderator link ids are made;
/// re-exported for the invite code.
pub use crate::store::random_token;
use crate::store::{ModLink, Store, StoreError};

/// Sessions idle this long are forgotten (a page refreshes its session every minute).
const SESSION_IDLE: Duration = Duration::from_secs(10 * 60);
/// Most viewer sessions kept at once, so a flood of session requests cannot grow memory.
const MAX_SESSIONS: usize = 10_000;

/// A secret: shown nowhere, not even in `Debug`.
#[derive(Clone)]
pub struct Key(String);

impl Key {
    /// A fresh random key: 32 bytes, URL-safe base64.
    pub fn random() -> Key {
        Key(random_token(32))
    }

    /// A key given by the streamer (`COWATCH_HOST_KEY`).
    pub fn new(text: impl Into<String>) -> Key {
        Key(text.into())
    }

    /// The key itself, for the one link that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this key, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        // Lengths leak nothing useful: keys are random and of fixed length.
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

/// Party settings from the command line.
#[derive(Debug, Clone)]
pub struct PartyConfig {
    /// The host's key.
    pub host_key: Key,
    /// Viewers need this code in their link; `None` for a public party.
    pub invite: Option<Key>,
}

/// A viewer's session: a random token the page holds.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The token.
    #[serde(skip)]
    pub token: String,
    /// The nickname this session speaks as in party chat, once chosen.
    pub nick: Option<String>,
    /// When the session started.
    #[serde(skip)]
    pub joined: Instant,
    #[serde(skip)]
    seen: Instant,
}

impl Session {
    /// How long this viewer has been in the party.
    pub fn in_party_for(&self) -> Duration {
        self.joined.elapsed()
    }
}

/// Why a session request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// Unknown or expired session token.
    #[error("unknown session: reload the page")]
    Unknown,
    /// Someone else holds that nickname.
    #[error("the nickname {0:?} is taken")]
    NickTaken(String),
    /// Too many sessions.
    #[error("the party is full")]
    Full,
}

/// The party handle; cheap to clone.
#[derive(Clone)]
pub struct Party {
    inner: Arc<Inner>,
}

struct Inner {
    config: PartyConfig,
    store: Store,
    sessions: Mutex<HashMap<String, Session>>,
    show: Mutex<Show>,
}

/// What the host has put on.
#[derive(Debug, Default)]
struct Show {
    live: bool,
    title: Option<String>,
}

impl Party {
    /// A party with these keys; moderator links live in `store`.
    pub fn new(config: PartyConfig, store: Store) -> Party {
        Party {
            inner: Arc::new(Inner {
                config,
                store,
                sessions: Mutex::new(HashMap::new()),
                show: Mutex::new(Show {
                    live: true,
                    title: None,
                }),
            }),
        }
    }

    fn show(&self) -> MutexGuard<'_, Show> {
        self.inner.show.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the party is on (it starts live; the host can end it and go live again).
    pub fn is_live(&self) -> bool {
        self.show().live
    }

    /// Starts or ends the party.
    pub fn set_live(&self, live: bool) {
        self.show().live = live;
    }

    /// The library title playing, if it came from the library.
    pub fn current_title(&self) -> Option<String> {
        self.show().title.clone()
    }

    /// Records the library title now playing.
    pub fn set_current_title(&self, title: Option<String>) {
        self.show().title = title;
    }

    /// The role a presented key grants: the host key, a live moderator link, or nothing.
    pub fn role(&self, key: Option<&str>) -> Role {
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Role::Viewer;
        };
        if self.inner.config.host_key.matches(key) {
            return Role::Host;
        }
        match self.inner.store.find_mod_key(key) {
            Ok(Some(_)) => Role::Moderator,
            Ok(None) => Role::Viewer,
            Err(e) => {
                tracing::error!("cannot read moderator links: {e}");
                Role::Viewer
            }
        }
    }

    /// The moderator link's label for a key, for the audit log.
    pub fn moderator_name(&self, key: &str) -> Option<String> {
        self.inner
            .store
            .find_mod_key(key)
            .ok()
            .flatten()
            .map(|link| link.label)
    }

    /// Whether a viewer may enter: always for a public party, else with the invite code.
    pub fn admits(&self, invite: Option<&str>) -> bool {
        match &self.inner.config.invite {
            None => true,
            Some(code) => invite.is_some_and(|i| code.matches(i)),
        }
    }

    /// Whether viewers need an invite code.
    pub fn invite_only(&self) -> bool {
        self.inner.config.invite.is_some()
    }

    /// The invite code, for the host's share link.
    pub fn invite(&self) -> Option<&Key> {
        self.inner.config.invite.as_ref()
    }

    /// The host key, for the link printed at start.
    pub fn host_key(&self) -> &Key {
        &self.inner.config.host_key
    }

    /// Mints a moderator link: returns the link record and its key (shown once).
    pub fn add_moderator(&self, label: &str) -> Result<(ModLink, Key), StoreError> {
        let key = Key::random();
        let link = self.inner.store.add_mod_link(label, key.expose())?;
        Ok((link, key))
    }

    /// Revokes a moderator link; its key stops working at once.
    pub fn revoke_moderator(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.store.revoke_mod_link(id)
    }

    /// The moderator links (without keys).
    pub fn moderators(&self) -> Result<Vec<ModLink>, StoreError> {
        self.inner.store.mod_links()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a viewer session, or refreshes `token`'s when it is still known (a page that
    /// reloads keeps its time in the party).
    pub fn session(&self, token: Option<&str>) -> Result<Session, SessionError> {
        let mut sessions = self.sessions();
        let now = Instant::now();
        sessions.retain(|_, s| now.duration_since(s.seen) < SESSION_IDLE);
        if let Some(s) = token.and_then(|t| sessions.get_mut(t)) {
            s.seen = now;
            return Ok(s.clone());
        }
        if sessions.len() >= MAX_SESSIONS {
            return Err(SessionError::Full);
        }
        let session = Session {
            token: random_token(18),
            nick: None,
            joined: now,
            seen: now,
        };
        sessions.insert(session.token.clone(), session.clone());
        Ok(session)
    }

    /// The session behind `token`.
    pub fn find_session(&self, token: &str) -> Result<Session, SessionError> {
        let mut sessions = self.sessions();
        let s = sessions.get_mut(token).ok_or(SessionError::Unknown)?;
        s.seen = Instant::now();
        Ok(s.clone())
    }

    /// Claims `nick` for the session: a nickname belongs to one session at a time, so
    /// nobody can post as someone else (or dodge a ban by sharing a name).
    pub fn claim_nick(&self, token: &str, nick: &str) -> Result<Session, SessionError> {
        let login = nick.trim().to_lowercase();
        let mut sessions = self.sessions();
        let taken = sessions.iter().any(|(t, s)| {
            t != token && s.nick.as_deref().is_some_and(|n| n.to_lowercase() == login)
        });
        if taken {
            return Err(SessionError::NickTaken(nick.trim().to_owned()));
        }
        let s = sessions.get_mut(token).ok_or(SessionError::Unknown)?;
        s.nick = Some(nick.trim().to_owned());
        s.seen = Instant::now();
        Ok(s.clone())
    }

    /// Viewer sessions alive now.
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Nicknames of the viewers in the party now, for the host's viewer list.
    pub fn nicknames(&self) -> Vec<(String, Duration)> {
        let mut list: Vec<(String, Duration)> = self
            .sessions()
            .values()
            .filter_map(|s| s.nick.clone().map(|n| (n, s.in_party_for())))
            .collect();
        list.sort();
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(invite: Option<&str>) -> (Party, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "cowatch-party-{}-{}",
            std::process::id(),
            random_token(4)
        ));
        let store = Store::open(&dir).unwrap();
        (
            Party::new(
                PartyConfig {
                    host_key: Key::new("h".repeat(43)),
                    invite: invite.map(Key::new),
                },
                store,
            ),
            dir,
        )
    }

    #[test]
    fn roles_come_from_keys() {
        let (p, dir) = party(None);
        assert_eq!(p.role(None), Role::Viewer);
        assert_eq!(p.role(Some("")), Role::Viewer);
        assert_eq!(p.role(Some(&"h".repeat(43))), Role::Host);
        // Right length, wrong key.
        assert_eq!(p.role(Some(&"g".repeat(43))), Role::Viewer);
        let (link, key) = p.add_moderator("alice").unwrap();
        assert_eq!(p.role(Some(key.expose())), Role::Moderator);
        assert!(p.revoke_moderator(&link.id).unwrap());
        assert_eq!(p.role(Some(key.expose())), Role::Viewer);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn invite_only_parties_need_the_code() {
        let (open, d1) = party(None);
        assert!(open.admits(None));
        let (closed, d2) = party(Some("abc"));
        assert!(!closed.admits(None));
        assert!(!closed.admits(Some("abd")));
        assert!(closed.admits(Some("abc")));
        let _ = std::fs::remove_dir_all(d1);
        let _ = std::fs::remove_dir_all(d2);
    }

    #[test]
    fn a_nickname_belongs_to_one_session() {
        let (p, dir) = party(None);
        let a = p.session(None).unwrap();
        let b = p.session(None).unwrap();
        p.claim_nick(&a.token, "Alice").unwrap();
        assert_eq!(
            p.claim_nick(&b.token, "alice").unwrap_err(),
            SessionError::NickTaken("alice".into())
        );
        // The same page coming back keeps its session and time.
        let again = p.session(Some(&a.token)).unwrap();
        assert_eq!(again.nick.as_deref(), Some("Alice"));
        assert_eq!(again.joined, a.joined);
        assert_eq!(p.find_session("nope").unwrap_err(), SessionError::Unknown);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn keys_do_not_print() {
        assert_eq!(format!("{:?}", Key::new("secret")), "Key(…)");
    }
}
