//! Viewers' sessions: a random token the page holds, how long it has been in the party, the
//! role its page presented, and the nicknames it speaks as.
//!
//! A session is the unit bans and limits hold on (see `chat::PartyLine`): it remembers every
//! nickname it used ([`Session::aliases`]), and may take new ones only slowly
//! ([`NICK_BURST`] at once, then one per [`NICK_REFILL`]). A nickname belongs to one session
//! at a time, compared in its folded form, so `аlice` (Cyrillic а) cannot pass for `alice`;
//! reserved names (the host's, the moderators', the system's) and their look-alikes are
//! nobody's.
//!
//! At most [`MAX_SESSIONS`] live at once. When they are all taken, a newcomer's session
//! takes the place of one that shows no life, in this order: one that never came back
//! after its first request and has no nickname (what a flood of session requests makes),
//! oldest first; then one without a nickname idle for [`SCARCE_IDLE`]; then any idle that
//! long. Only when every session is in use is the party full. Each request costs a few map
//! and ordered-index operations (O(log n)), never a scan of every session.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Role;
use crate::chat::text::fold;
use crate::util::id::random_token;
use crate::util::lock::Locked;

/// Sessions idle this long are forgotten.
const SESSION_IDLE: Duration = Duration::from_secs(10 * 60);
/// When every place is taken, a session idle this long may give its place to a newcomer.
const SCARCE_IDLE: Duration = Duration::from_secs(2 * 60);
/// Most viewer sessions kept at once, so a flood of session requests cannot grow memory.
const MAX_SESSIONS: usize = 10_000;
/// New nicknames a session may take at once...
pub const NICK_BURST: u32 = 3;
/// ...and how fast that allowance returns: three an hour after the first three.
pub const NICK_REFILL: Duration = Duration::from_secs(20 * 60);
/// Nicknames a session remembers; a ban on any of them holds. Bounded, with
/// [`NICK_REFILL`], so that outgrowing it takes days.
const MAX_ALIASES: usize = 64;
/// Names nobody may take, nor anything that looks like them (see [`fold`]).
const RESERVED: [&str; 7] = [
    "host",
    "mod",
    "moderator",
    "admin",
    "system",
    "cowatch",
    "broadcaster",
];

/// A viewer's session: a random token the page holds.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The token.
    #[serde(skip)]
    pub token: String,
    /// A number for this session, unique in this run, that is no secret: what limits and
    /// logs name it by.
    #[serde(skip)]
    pub id: u64,
    /// The nickname this session speaks as in party chat, once chosen.
    pub nick: Option<String>,
    /// Every nickname this session has taken, oldest first (the current one too).
    #[serde(skip)]
    pub aliases: Vec<String>,
    /// The role the page presented when it last said hello (its key's).
    #[serde(skip)]
    pub role: Role,
    /// When the session started.
    #[serde(skip)]
    pub joined: Instant,
    #[serde(skip)]
    seen: Instant,
    /// Whether the page came back after its first request.
    #[serde(skip)]
    returned: bool,
    /// New-nickname allowance: (left, since when it refills).
    #[serde(skip)]
    claims: (u32, Instant),
}

impl Session {
    /// How long this viewer has been in the party.
    pub fn in_party_for(&self) -> Duration {
        self.joined.elapsed()
    }

    /// Which eviction class the session is in (see the module documentation).
    fn class(&self) -> usize {
        match (&self.nick, self.returned) {
            (None, false) => 0,
            (None, true) => 1,
            (Some(_), _) => 2,
        }
    }
}

/// Why a session request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// Unknown or expired session token.
    #[error("unknown session: reload the page")]
    Unknown,
    /// Someone else holds that nickname (or one that looks the same).
    #[error("the nickname {0:?} is taken")]
    NickTaken(String),
    /// A reserved nickname, or one that looks like it.
    #[error(
        "the nickname {0:?} is reserved (it looks like the host's, a moderator's or the system's)"
    )]
    Reserved(String),
    /// Too many new nicknames.
    #[error("you changed nickname too often; wait {} or keep a nickname you used before", human(*.0))]
    TooManyNicks(u64),
    /// Every session is in use.
    #[error("the party is full")]
    Full,
    /// An invite-only party, and no (right) invite code.
    #[error("this party needs an invite: ask the host for the link")]
    Uninvited,
}

/// `75` → `2 min` (rounded up: a wait is never shorter than said).
fn human(seconds: u64) -> String {
    if seconds < 60 {
        format!("{seconds} s")
    } else {
        format!("{} min", seconds.div_ceil(60))
    }
}

/// Every live session. A std `Mutex`: every section is short and none awaits.
#[derive(Debug, Default)]
pub(super) struct Sessions(Mutex<Table>);

#[derive(Debug, Default)]
struct Table {
    by_token: HashMap<String, Session>,
    /// Each eviction class's sessions by (last seen, id): the oldest idle first.
    idle: [BTreeMap<(Instant, u64), String>; 3],
    /// Who holds each nickname, by its folded form.
    holders: HashMap<String, String>,
    /// Folded names nobody may take (the fixed ones and the streamer's).
    reserved: Vec<String>,
    next_id: u64,
}

impl Table {
    fn insert(&mut self, session: Session) {
        self.idle[session.class()].insert((session.seen, session.id), session.token.clone());
        self.by_token.insert(session.token.clone(), session);
    }

    /// Takes the session out of the map and the indexes.
    fn take(&mut self, token: &str) -> Option<Session> {
        let session = self.by_token.remove(token)?;
        self.idle[session.class()].remove(&(session.seen, session.id));
        if let Some(nick) = &session.nick {
            self.holders.remove(&fold(nick));
        }
        Some(session)
    }

    /// Changes a session (its index key follows); `None` when the token is unknown.
    fn update<T>(&mut self, token: &str, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let session = self.by_token.get_mut(token)?;
        self.idle[session.class()].remove(&(session.seen, session.id));
        let out = f(session);
        self.idle[session.class()].insert((session.seen, session.id), session.token.clone());
        Some(out)
    }

    /// Forgets sessions idle for [`SESSION_IDLE`]: only the oldest of each class are looked at.
    fn expire(&mut self, now: Instant) {
        for class in 0..self.idle.len() {
            while let Some((&(seen, _), token)) = self.idle[class].first_key_value() {
                if now.duration_since(seen) < SESSION_IDLE {
                    break;
                }
                let token = token.clone();
                self.take(&token);
            }
        }
    }

    /// Makes room for one more session, if one shows no life (module documentation).
    fn make_room(&mut self, now: Instant) -> bool {
        if self.by_token.len() < MAX_SESSIONS {
            return true;
        }
        for class in 0..self.idle.len() {
            let Some((&(seen, _), token)) = self.idle[class].first_key_value() else {
                continue;
            };
            if class == 0 || now.duration_since(seen) >= SCARCE_IDLE {
                let token = token.clone();
                self.take(&token);
                return true;
            }
        }
        false
    }
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Each section leaves the table whole; a poisoned lock is used as is.
        self.0.locked()
    }

    /// Also refuses `name` and its look-alikes as a nickname (the streamer's login).
    pub(super) fn reserve(&self, name: &str) {
        let folded = fold(name);
        let mut table = self.lock();
        if !folded.is_empty() && !table.reserved.contains(&folded) {
            table.reserved.push(folded);
        }
    }

    /// Starts a session for a page presenting `role`, or refreshes `token`'s when it is
    /// still known.
    pub(super) fn start(
        &self,
        token: Option<&str>,
        role: Role,
        now: Instant,
    ) -> Result<Session, SessionError> {
        let mut table = self.lock();
        table.expire(now);
        if let Some(session) = token.and_then(|t| {
            table.update(t, |s| {
                s.seen = now;
                s.returned = true;
                s.role = role;
                s.clone()
            })
        }) {
            return Ok(session);
        }
        if !table.make_room(now) {
            return Err(SessionError::Full);
        }
        table.next_id += 1;
        let session = Session {
            token: random_token(18),
            id: table.next_id,
            nick: None,
            aliases: Vec::new(),
            role,
            joined: now,
            seen: now,
            returned: false,
            claims: (NICK_BURST, now),
        };
        table.insert(session.clone());
        Ok(session)
    }

    /// The session behind `token`.
    pub(super) fn find(&self, token: &str, now: Instant) -> Result<Session, SessionError> {
        self.lock()
            .update(token, |s| {
                s.seen = now;
                s.returned = true;
                s.clone()
            })
            .ok_or(SessionError::Unknown)
    }

    /// Gives `nick` (already validated) to the session behind `token`, unless it is
    /// reserved, another session holds it (or a look-alike), or the session took too many
    /// new nicknames lately. Taking back a nickname the session used before is free.
    pub(super) fn claim_nick(
        &self,
        token: &str,
        nick: &str,
        now: Instant,
    ) -> Result<Session, SessionError> {
        let nick = nick.trim();
        let folded = fold(nick);
        let mut table = self.lock();
        if table.reserved.contains(&folded) || RESERVED.iter().any(|r| fold(r) == folded) {
            return Err(SessionError::Reserved(nick.to_owned()));
        }
        if table.holders.get(&folded).is_some_and(|t| t != token) {
            return Err(SessionError::NickTaken(nick.to_owned()));
        }
        let session = table.by_token.get(token).ok_or(SessionError::Unknown)?;
        let known = session.aliases.iter().any(|a| fold(a) == folded);
        let mut claims = session.claims;
        if !known {
            let earned = (now.duration_since(claims.1).as_secs() / NICK_REFILL.as_secs()) as u32;
            if earned > 0 {
                claims = ((claims.0 + earned).min(NICK_BURST), now);
            }
            if claims.0 == 0 {
                let wait = NICK_REFILL.saturating_sub(now.duration_since(claims.1));
                return Err(SessionError::TooManyNicks(wait.as_secs().max(1)));
            }
            claims.0 -= 1;
        }
        let old = session.nick.as_deref().map(fold);
        if let Some(old) = old {
            table.holders.remove(&old);
        }
        table.holders.insert(folded.clone(), token.to_owned());
        let session = table
            .update(token, |s| {
                s.claims = claims;
                s.seen = now;
                s.returned = true;
                s.nick = Some(nick.to_owned());
                s.aliases.retain(|a| fold(a) != folded);
                s.aliases.push(nick.to_owned());
                if s.aliases.len() > MAX_ALIASES {
                    s.aliases.remove(0);
                }
                s.clone()
            })
            .ok_or(SessionError::Unknown)?;
        Ok(session)
    }

    /// Sessions alive now.
    pub(super) fn count(&self) -> usize {
        self.lock().by_token.len()
    }

    /// The nicknames held, with how long each has been in the party, sorted.
    pub(super) fn nicknames(&self) -> Vec<(String, Duration)> {
        let mut list: Vec<(String, Duration)> = self
            .lock()
            .by_token
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

    #[test]
    fn a_flood_of_sessions_does_not_lock_newcomers_out() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let first = sessions.start(None, Role::Viewer, t0).unwrap();
        sessions.claim_nick(&first.token, "alice", t0).unwrap();
        for _ in 0..MAX_SESSIONS + 500 {
            sessions.start(None, Role::Viewer, t0).unwrap();
        }
        assert_eq!(sessions.count(), MAX_SESSIONS);
        // The flood pushed out its own kind, never the viewer who chose a nickname.
        assert!(sessions.find(&first.token, t0).is_ok());
        let newcomer = sessions.start(None, Role::Viewer, t0).unwrap();
        sessions.claim_nick(&newcomer.token, "bob", t0).unwrap();
        // Every place in use by a page that came back: now the party is full.
        let busy = Sessions::default();
        for _ in 0..MAX_SESSIONS {
            let s = busy.start(None, Role::Viewer, t0).unwrap();
            busy.start(Some(&s.token), Role::Viewer, t0).unwrap();
        }
        let later = t0 + Duration::from_secs(30);
        assert_eq!(
            busy.start(None, Role::Viewer, later).unwrap_err(),
            SessionError::Full
        );
        // ...until some are idle long enough to give way.
        let much_later = t0 + SCARCE_IDLE;
        assert!(busy.start(None, Role::Viewer, much_later).is_ok());
        // Idle ones are forgotten: all but the one that came at `much_later`.
        let gone = t0 + SESSION_IDLE;
        busy.start(None, Role::Viewer, gone).unwrap();
        assert_eq!(busy.count(), 2);
    }

    #[test]
    fn new_nicknames_come_slowly_and_old_ones_are_free() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let s = sessions.start(None, Role::Viewer, t0).unwrap();
        for nick in ["one_", "two_", "three_"] {
            sessions.claim_nick(&s.token, nick, t0).unwrap();
        }
        assert!(matches!(
            sessions.claim_nick(&s.token, "four_", t0),
            Err(SessionError::TooManyNicks(_))
        ));
        let back = sessions.claim_nick(&s.token, "one_", t0).unwrap();
        assert_eq!(back.aliases, ["two_", "three_", "one_"]);
        sessions
            .claim_nick(&s.token, "four_", t0 + NICK_REFILL)
            .unwrap();
        assert_eq!(
            SessionError::TooManyNicks(75).to_string(),
            "you changed nickname too often; wait 2 min or keep a nickname you used before"
        );
    }

    #[test]
    fn reserved_and_look_alike_names_are_refused() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        sessions.reserve("xQcOW");
        let a = sessions.start(None, Role::Viewer, t0).unwrap();
        let b = sessions.start(None, Role::Viewer, t0).unwrap();
        for nick in [
            "host",
            "Moderator",
            "h\u{043E}st",
            "admin",
            "xqcow",
            "Cowatch",
            "SYSTEM",
        ] {
            assert_eq!(
                sessions.claim_nick(&a.token, nick, t0).unwrap_err(),
                SessionError::Reserved(nick.into()),
                "{nick}"
            );
        }
        sessions.claim_nick(&a.token, "alice", t0).unwrap();
        assert_eq!(
            sessions
                .claim_nick(&b.token, "\u{0430}lice", t0)
                .unwrap_err(),
            SessionError::NickTaken("\u{0430}lice".into())
        );
    }
}
