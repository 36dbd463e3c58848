//! The per-message gate: the bans, blocked terms, party-chat rule and slow-mode clock every
//! chat line is checked against, as the hub's [`Gate`](crate::chat::Gate).
//!
//! An in-memory mirror of what the store holds, so the checks on every line never touch
//! the disk; [`apply`](super::apply) changes both. The hub holds the gate, the gate holds
//! nothing of the hub: the room modes come with each party line.
//!
//! Blocked terms match as substrings of the text's folded form ([`fold`]: NFKC, lower case,
//! Unicode's confusable skeleton, letters and digits only): "spam" also hides "SPAMMER",
//! "spam.example", "ｓｐａｍ", "sp\u{200b}am", "s p a m" and "ѕраm" (Cyrillic). Folding
//! away spaces makes innocent phrases match more often ("has pam" hides "spam");
//! whole-word matching would be gentler, but is defeated by gluing a term to anything, so
//! moderators should prefer specific terms.
//!
//! A party viewer's session brings every nickname it spoke as ([`PartyLine::aliases`]): a
//! ban or timeout on any of them holds under the others, and slow mode counts per session.
//! A ban may also cover watching ("ban from the party"): those logins are kept in a
//! setting, and [`MessageGate::may_watch`] answers for the WHEP door.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::action::PartyChatMode;
use super::audit::Audit;
use crate::chat::text::fold;
use crate::chat::{self, ChatEvent, Origin, PartyLine, Refusal, RoomModes};
use crate::store::{self, Ban, Store, StoreError};
use crate::util::clock::unix_ms;
use crate::util::lock::Locked;

/// Past this many speakers, the slow-mode clock forgets the ones that may post again.
const SLOW_TRACKED: usize = 4096;
/// The settings key of the party-chat rule.
pub(super) const PARTY_CHAT_KEY: &str = "party_chat";
/// The settings key of the party logins banned from watching too, a JSON list.
pub(super) const WATCH_BANS_KEY: &str = "party_watch_bans";

/// The gate. Shared (`Arc`) by the hub, which asks it, and moderation, which changes it.
#[derive(Debug)]
pub(super) struct MessageGate {
    /// A std `Mutex`: every section is short and none awaits.
    rules: Mutex<Rules>,
    /// Sees every Twitch event, to log what Twitch's own moderators did.
    audit: Arc<Audit>,
}

#[derive(Debug, Default)]
struct Rules {
    /// Bans in force, by (origin, lower-case login); expired ones are dropped on sight.
    bans: HashMap<(&'static str, String), Ban>,
    /// Blocked terms, folded ([`fold`]).
    terms: Vec<String>,
    party_chat: PartyChatMode,
    /// Last accepted party post per speaker (a session, or a nickname), in ms, for slow mode.
    last_post: HashMap<String, i64>,
    /// Party logins whose ban covers watching too, not only the chat.
    watch_bans: HashSet<String>,
}

impl MessageGate {
    /// The bans, terms and party-chat rule in `store`; Twitch events go on to `audit`.
    pub(super) fn load(store: &Store, audit: Arc<Audit>) -> Result<MessageGate, StoreError> {
        let mut rules = Rules::default();
        for ban in store.bans()? {
            rules.bans.insert(ban_key(ban.origin, &ban.login), ban);
        }
        rules.terms = store
            .blocked_terms()?
            .into_iter()
            .map(|t| fold(&t.term))
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(list) = store.setting(WATCH_BANS_KEY)? {
            match serde_json::from_str::<Vec<String>>(&list) {
                Ok(list) => rules.watch_bans = list.into_iter().collect(),
                Err(e) => tracing::warn!("ignoring stored party bans I cannot read: {e}"),
            }
        }
        if let Some(mode) = store.setting(PARTY_CHAT_KEY)? {
            match serde_json::from_str(&mode) {
                Ok(mode) => rules.party_chat = mode,
                Err(e) => tracing::warn!("ignoring a stored party-chat rule I cannot read: {e}"),
            }
        }
        Ok(MessageGate {
            rules: Mutex::new(rules),
            audit,
        })
    }

    fn rules(&self) -> MutexGuard<'_, Rules> {
        // Every section leaves the mirror consistent between statements; a panic in one
        // loses at most that one change, so a poisoned lock is used as is.
        self.rules.locked()
    }

    // ── what moderation changes ─────────────────────────────────────────────────────────

    /// Keeps `ban.login` out (replacing an earlier ban in the same chat). `watching`: a
    /// party ban that covers watching too. Returns the logins banned from watching now,
    /// for the store.
    pub(super) fn ban(&self, ban: Ban, watching: bool) -> Vec<String> {
        let mut rules = self.rules();
        if ban.origin == Origin::Party {
            if watching {
                rules.watch_bans.insert(ban.login.clone());
            } else {
                rules.watch_bans.remove(&ban.login);
            }
        }
        rules.bans.insert(ban_key(ban.origin, &ban.login), ban);
        watch_list(&rules)
    }

    /// Lets `login` (lower case) back in. Returns the logins banned from watching now.
    pub(super) fn unban(&self, origin: Origin, login: &str) -> Vec<String> {
        let mut rules = self.rules();
        rules.bans.remove(&ban_key(origin, login));
        if origin == Origin::Party {
            rules.watch_bans.remove(login);
        }
        watch_list(&rules)
    }

    /// Blocks `term` (folded, not empty) from now on.
    pub(super) fn add_term(&self, term: &str) {
        let mut rules = self.rules();
        if !term.is_empty() && !rules.terms.iter().any(|t| t == term) {
            rules.terms.push(term.to_owned());
        }
    }

    /// Stops blocking `term` (folded).
    pub(super) fn remove_term(&self, term: &str) {
        self.rules().terms.retain(|t| t != term);
    }

    /// The party-chat rule now.
    pub(super) fn party_chat(&self) -> PartyChatMode {
        self.rules().party_chat
    }

    /// Sets the party-chat rule.
    pub(super) fn set_party_chat(&self, mode: PartyChatMode) {
        self.rules().party_chat = mode;
    }

    // ── the checks ──────────────────────────────────────────────────────────────────────

    /// Whether party line `line` may be posted at `now_ms` with the room in `modes`. A line
    /// that passes counts for slow mode.
    pub(super) fn check_party(
        &self,
        line: &PartyLine<'_>,
        modes: &RoomModes,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let login = line.nick.trim().to_lowercase();
        let mut rules = self.rules();
        rules.check_bans(&login, line.aliases, now_ms)?;
        match rules.party_chat {
            PartyChatMode::Open => {}
            PartyChatMode::Closed => return Err(Refusal::Closed),
            PartyChatMode::MinMinutes(minutes) => {
                let needed = u64::from(minutes) * 60;
                let been = line.in_party_for.as_secs();
                if been < needed {
                    return Err(Refusal::TooNew {
                        minutes,
                        to_go_s: needed - been,
                    });
                }
            }
        }
        if modes.subs_only {
            return Err(Refusal::SubsOnly);
        }
        if modes.followers_only_minutes.is_some() {
            return Err(Refusal::FollowersOnly);
        }
        if modes.emote_only {
            return Err(Refusal::EmoteOnly);
        }
        if matches_term(&rules.terms, line.text) {
            return Err(Refusal::BlockedTerm);
        }
        let speaker = line.speaker.to_lowercase();
        if modes.slow_s > 0 {
            let slow_ms = modes.slow_s as i64 * 1000;
            if let Some(last) = rules.last_post.get(&speaker)
                && now_ms - last < slow_ms
            {
                let wait = (slow_ms - (now_ms - last) + 999) / 1000;
                return Err(Refusal::Slow(wait as u64));
            }
            if rules.last_post.len() >= SLOW_TRACKED {
                rules.last_post.retain(|_, t| now_ms - *t < slow_ms);
            }
        }
        // Kept even with slow mode off, so turning it on applies to the last post too.
        rules.last_post.insert(speaker, now_ms);
        Ok(())
    }

    /// Whether a session that spoke as `aliases` may take the new nickname `nick`.
    pub(super) fn check_speaker(
        &self,
        nick: &str,
        aliases: &[String],
        now_ms: i64,
    ) -> Result<(), Refusal> {
        self.rules()
            .check_bans(&nick.trim().to_lowercase(), aliases, now_ms)
    }

    /// Whether a session that spoke as `aliases` may watch: not when any of them is banned
    /// from the whole party.
    pub(super) fn may_watch(&self, aliases: &[String]) -> bool {
        let rules = self.rules();
        if rules.watch_bans.is_empty() {
            return true;
        }
        !aliases
            .iter()
            .any(|a| rules.watch_bans.contains(&a.trim().to_lowercase()))
    }

    /// Whether a Twitch event must not reach viewers: a message or notice whose text has a
    /// blocked term, or a message from a user banned or timed out in the party.
    pub(super) fn hides(&self, event: &ChatEvent) -> bool {
        let mut rules = self.rules();
        if let ChatEvent::Message(m) = event {
            let key = ban_key(m.origin, &m.sender.login);
            if let Some(ban) = rules.bans.get(&key) {
                match ban.expires_at_ms {
                    Some(until) if until <= unix_ms() => {
                        rules.bans.remove(&key);
                    }
                    _ => return true,
                }
            }
        }
        event.text().is_some_and(|t| matches_term(&rules.terms, t))
    }
}

impl Rules {
    /// A ban or timeout on party login `login` (lower case) or any of the session's
    /// `aliases`; expired ones are dropped on the way.
    fn check_bans(&mut self, login: &str, aliases: &[String], now_ms: i64) -> Result<(), Refusal> {
        let names = std::iter::once(login.to_owned())
            .chain(aliases.iter().map(|a| a.trim().to_lowercase()));
        for name in names {
            let key = ban_key(Origin::Party, &name);
            let Some(ban) = self.bans.get(&key) else {
                continue;
            };
            let other = name != login;
            match ban.expires_at_ms {
                None if other => return Err(Refusal::BannedAs(name)),
                None => return Err(Refusal::Banned),
                Some(until) if until > now_ms => {
                    let left = ((until - now_ms + 999) / 1000) as u64;
                    return Err(if other {
                        Refusal::TimedOutAs(name, left)
                    } else {
                        Refusal::TimedOut(left)
                    });
                }
                Some(_) => {
                    self.bans.remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// The logins banned from watching, sorted, as the store keeps them.
fn watch_list(rules: &Rules) -> Vec<String> {
    let mut list: Vec<String> = rules.watch_bans.iter().cloned().collect();
    list.sort();
    list
}

impl chat::Gate for MessageGate {
    fn admit_twitch(&self, event: &ChatEvent) -> bool {
        self.audit.observe(event);
        !self.hides(event)
    }

    fn admit_party(
        &self,
        line: &PartyLine<'_>,
        modes: &RoomModes,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        self.check_party(line, modes, now_ms)
    }

    fn admit_speaker(&self, nick: &str, aliases: &[String], now_ms: i64) -> Result<(), Refusal> {
        self.check_speaker(nick, aliases, now_ms)
    }
}

/// How bans are keyed: the chat (spelled as stored) and the login.
fn ban_key(origin: Origin, login: &str) -> (&'static str, String) {
    (store::origin_str(origin), login.to_owned())
}

/// Whether `text`, folded, contains one of `terms` (folded, not empty).
pub(super) fn matches_term(terms: &[String], text: &str) -> bool {
    if terms.is_empty() {
        return false;
    }
    let text = fold(text);
    terms.iter().any(|t| text.contains(t.as_str()))
}
