//! The party: who may do what, and who is here. The host key, moderator links, the
//! optional invite code and the viewers' sessions (how long each has been in the party,
//! which nickname it holds); and the one workflow that needs them all, a viewer's chat line
//! ([`Party::post_chat`]).
//!
//! - `key`: secrets carried in links ([`Key`]);
//! - `role`: what each [`Role`] may do;
//! - `session`: viewers' [`Session`]s and their nicknames.
//!
//! Keys are random, carried in links, compared in constant time and never logged; moderator
//! keys are stored only as hashes (see [`crate::store`]).

mod key;
mod role;
mod session;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::chat::{self, Chat, PartyBadge, PartyLine, PostError, Published};
use crate::store::{ModLink, Store, StoreError};
use crate::util::lock::Locked;

pub use key::Key;
pub use role::Role;
pub use session::{Session, SessionError};

/// Party settings from the command line.
#[derive(Debug, Clone)]
pub struct PartyConfig {
    /// The host's key.
    pub host_key: Key,
    /// Viewers need this code in their link; `None` for a public party.
    pub invite: Option<Key>,
}

/// Why a viewer's chat line was not posted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChatError {
    /// The line itself, or the chat's gate, refused it.
    #[error(transparent)]
    Post(#[from] PostError),
    /// The session is unknown, or the nickname someone else's.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Why a moderator link was not made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum ModLinkError {
    /// The label is empty or too long.
    #[error("label must be 1 to {MAX_LABEL_CHARS} characters")]
    BadLabel,
    /// No live link has this id.
    #[error("no live moderator link {0:?}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest moderator-link label: a name for the audit log, not a note.
pub const MAX_LABEL_CHARS: usize = 50;

/// The party handle; cheap to clone.
#[derive(Clone)]
pub struct Party {
    inner: Arc<Inner>,
}

struct Inner {
    config: PartyConfig,
    store: Store,
    sessions: session::Sessions,
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
                sessions: session::Sessions::default(),
                show: Mutex::new(Show {
                    live: true,
                    title: None,
                }),
            }),
        }
    }

    fn show(&self) -> MutexGuard<'_, Show> {
        self.inner.show.locked()
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

    /// Lets in whoever may watch: anyone at a public party; at an invite-only one, the holders
    /// of the invite code and of a host or moderator key (who hand out the code themselves).
    pub fn admit(&self, role: Role, invite: Option<&str>) -> Result<(), SessionError> {
        if role != Role::Viewer || self.admits(invite) {
            Ok(())
        } else {
            Err(SessionError::Uninvited)
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

    /// Mints a moderator link labelled `label` (trimmed, 1 to [`MAX_LABEL_CHARS`]
    /// characters): returns the link record and its key (shown once).
    pub fn add_moderator(&self, label: &str) -> Result<(ModLink, Key), ModLinkError> {
        let label = label.trim();
        if !(1..=MAX_LABEL_CHARS).contains(&label.chars().count()) {
            return Err(ModLinkError::BadLabel);
        }
        let key = Key::random();
        let link = self.inner.store.add_mod_link(label, key.expose())?;
        Ok((link, key))
    }

    /// Revokes a moderator link; its key stops working at once.
    pub fn revoke_moderator(&self, id: &str) -> Result<(), ModLinkError> {
        if self.inner.store.revoke_mod_link(id)? {
            Ok(())
        } else {
            Err(ModLinkError::NotFound(id.to_owned()))
        }
    }

    /// The moderator links (without keys).
    pub fn moderators(&self) -> Result<Vec<ModLink>, StoreError> {
        self.inner.store.mod_links()
    }

    /// Starts a viewer session, or refreshes `token`'s when it is still known (a page that
    /// reloads keeps its time in the party).
    pub fn session(&self, token: Option<&str>) -> Result<Session, SessionError> {
        self.inner
            .sessions
            .start(token, Role::Viewer, Instant::now())
    }

    /// Refuses `name` and its look-alikes as a party nickname: the streamer's Twitch
    /// login, so nobody in the party passes for them.
    pub fn reserve_nick(&self, name: &str) {
        self.inner.sessions.reserve(name);
    }

    /// A page says hello: admitted as [`Party::admit`] says, then its session as
    /// [`Party::session`] gives it.
    pub fn open_session(
        &self,
        role: Role,
        invite: Option<&str>,
        token: Option<&str>,
    ) -> Result<Session, SessionError> {
        self.admit(role, invite)?;
        self.inner.sessions.start(token, role, Instant::now())
    }

    /// The session behind `token`.
    pub fn find_session(&self, token: &str) -> Result<Session, SessionError> {
        self.inner.sessions.find(token, Instant::now())
    }

    /// Claims `nick` for the session: a nickname belongs to one session at a time, so
    /// nobody can post as someone else (or dodge a ban by sharing a name); reserved names
    /// and look-alikes are nobody's; a session takes new nicknames only slowly.
    pub fn claim_nick(&self, token: &str, nick: &str) -> Result<Session, SessionError> {
        self.inner.sessions.claim_nick(token, nick, Instant::now())
    }

    /// The viewer of session `token` says `text` as `nick` in `chat`. In this order, each
    /// step refusing with its own error: the line's shape (nickname rule, normalized text,
    /// length), the session, a new nickname (refused while any name the session used is
    /// banned or timed out, then claimed as [`Party::claim_nick`] says), then the chat's own
    /// door (its gate: bans on any of the session's names, party-chat rule, room modes,
    /// slow mode; then the flood allowance; both counted per session). The host's and
    /// moderators' lines carry their badge. Returns the message as everyone sees it.
    pub fn post_chat(
        &self,
        chat: &Chat,
        token: &str,
        nick: &str,
        text: &str,
    ) -> Result<Arc<Published>, ChatError> {
        let (nick, text) = chat::validate(nick, text)?;
        let mut session = self.find_session(token)?;
        if session.nick.as_deref() != Some(nick.as_str()) {
            chat.admit_speaker(&nick, &session.aliases)?;
            session = self.claim_nick(token, &nick)?;
        }
        let speaker = format!("session {}", session.id);
        Ok(chat.post_party(PartyLine {
            nick: &nick,
            text: &text,
            in_party_for: session.in_party_for(),
            speaker: &speaker,
            aliases: &session.aliases,
            badge: match session.role {
                Role::Host => Some(PartyBadge::Host),
                Role::Moderator => Some(PartyBadge::Moderator),
                Role::Viewer => None,
            },
        })?)
    }

    /// Whether the viewer holding session `token` may watch: not when a ban on any
    /// nickname the session used covers the whole party (`may_watch` answers for those).
    /// An unknown token says nothing against its holder.
    pub fn may_watch(&self, token: &str, may_watch: impl FnOnce(&[String]) -> bool) -> bool {
        match self.find_session(token) {
            Ok(session) => may_watch(&session.aliases),
            Err(_) => true,
        }
    }

    /// Viewer sessions alive now.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.count()
    }

    /// Nicknames of the viewers in the party now, for the host's viewer list.
    pub fn nicknames(&self) -> Vec<(String, Duration)> {
        self.inner.sessions.nicknames()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party(invite: Option<&str>) -> (Party, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "cowatch-party-{}-{}",
            std::process::id(),
            crate::util::id::random_token(4)
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
        p.revoke_moderator(&link.id).unwrap();
        assert!(matches!(
            p.revoke_moderator(&link.id),
            Err(ModLinkError::NotFound(_))
        ));
        assert!(matches!(
            p.add_moderator(&"x".repeat(MAX_LABEL_CHARS + 1)),
            Err(ModLinkError::BadLabel)
        ));
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
    fn a_chat_line_is_checked_shape_then_session_then_nickname() {
        let (p, dir) = party(None);
        let chat = Chat::new(chat::ChatConfig::default());
        assert!(matches!(
            p.post_chat(&chat, "nope", "x", "hi"),
            Err(ChatError::Post(PostError::BadNick(_)))
        ));
        assert_eq!(
            p.post_chat(&chat, "nope", "alice", "hi").unwrap_err(),
            ChatError::Session(SessionError::Unknown)
        );
        let a = p.session(None).unwrap();
        let b = p.session(None).unwrap();
        p.post_chat(&chat, &a.token, " Alice ", "hi").unwrap();
        assert_eq!(
            p.find_session(&a.token).unwrap().nick.as_deref(),
            Some("Alice")
        );
        assert_eq!(
            p.post_chat(&chat, &b.token, "alice", "me too").unwrap_err(),
            ChatError::Session(SessionError::NickTaken("alice".into()))
        );
        assert_eq!(chat.backlog().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
