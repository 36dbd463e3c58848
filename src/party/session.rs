//! Viewers' sessions: a random token the page holds, how long it has been in the party,
//! and the nickname it speaks as.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::util::id::random_token;
use crate::util::lock::Locked;

/// Sessions idle this long are forgotten (a page refreshes its session every minute).
const SESSION_IDLE: Duration = Duration::from_secs(10 * 60);
/// Most viewer sessions kept at once, so a flood of session requests cannot grow memory.
const MAX_SESSIONS: usize = 10_000;

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
    /// An invite-only party, and no (right) invite code.
    #[error("this party needs an invite: ask the host for the link")]
    Uninvited,
}

/// Every live session, by token. A std `Mutex`: every section is short and none awaits.
#[derive(Debug, Default)]
pub(super) struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // Each section leaves the map whole; a poisoned lock is used as is.
        self.0.locked()
    }

    /// Starts a session, or refreshes `token`'s when it is still known.
    pub(super) fn start(&self, token: Option<&str>) -> Result<Session, SessionError> {
        let mut sessions = self.lock();
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
    pub(super) fn find(&self, token: &str) -> Result<Session, SessionError> {
        let mut sessions = self.lock();
        let s = sessions.get_mut(token).ok_or(SessionError::Unknown)?;
        s.seen = Instant::now();
        Ok(s.clone())
    }

    /// Gives `nick` to the session behind `token`, unless another session holds it.
    pub(super) fn claim_nick(&self, token: &str, nick: &str) -> Result<Session, SessionError> {
        let login = nick.trim().to_lowercase();
        let mut sessions = self.lock();
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

    /// Sessions alive now.
    pub(super) fn count(&self) -> usize {
        self.lock().len()
    }

    /// The nicknames held, with how long each has been in the party, sorted.
    pub(super) fn nicknames(&self) -> Vec<(String, Duration)> {
        let mut list: Vec<(String, Duration)> = self
            .lock()
            .values()
            .filter_map(|s| s.nick.clone().map(|n| (n, s.in_party_for())))
            .collect();
        list.sort();
        list
    }
}
