//! What the hub asks before it numbers a line: the [`Gate`] every incoming line passes,
//! Twitch's and the party's alike, and the [`Refusal`] a party viewer reads when theirs
//! does not.
//!
//! The hub holds its gate from birth ([`Chat::gated`](super::Chat::gated)); the gate never
//! holds the hub, so the two cannot keep each other alive. Moderation implements it; chat
//! knows only this trait.

use std::time::Duration;

use super::model::{ChatEvent, RoomModes};

/// A party viewer's line on its way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartyLine<'a> {
    /// The nickname, trimmed.
    pub nick: &'a str,
    /// What they say, trimmed.
    pub text: &'a str,
    /// How long they have been in the party (for "open to viewers here N minutes").
    pub in_party_for: Duration,
    /// Whom the flood allowance and slow mode count against: the viewer's session, so a
    /// new nickname starts no new count; the nickname for lines without a session.
    pub speaker: &'a str,
    /// The other nicknames the same session spoke as: a ban or timeout on any of them
    /// keeps the session out under every name.
    pub aliases: &'a [String],
    /// The badge the server gives the author (the host, a moderator); never the author's
    /// own claim.
    pub badge: Option<PartyBadge>,
}

impl<'a> PartyLine<'a> {
    /// A line with no session behind it (tools, tests): limits count against `nick`.
    pub fn sessionless(nick: &'a str, text: &'a str, in_party_for: Duration) -> PartyLine<'a> {
        PartyLine {
            nick,
            text,
            in_party_for,
            speaker: nick,
            aliases: &[],
            badge: None,
        }
    }
}

/// A badge only the server gives, on the party lines of the host and the moderators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyBadge {
    /// The party's host.
    Host,
    /// A moderator (a live moderator link).
    Moderator,
}

impl PartyBadge {
    /// The badge set's name, as the pages read it (`moderator` is Twitch's own).
    pub fn name(self) -> &'static str {
        match self {
            PartyBadge::Host => "host",
            PartyBadge::Moderator => "moderator",
        }
    }
}

/// Decides, for every line, whether viewers see it. Calls are plain (no async), short,
/// and made without the hub's lock held.
pub trait Gate: Send + Sync {
    /// A Twitch event on its way to viewers: whether it may pass. Every Twitch event comes
    /// here, so the gate can also take note of what Twitch's own moderators did.
    fn admit_twitch(&self, event: &ChatEvent) -> bool;

    /// A party line, already validated, with the room `modes` now: `Ok` to publish it, or
    /// why not. A line that passes counts for slow mode.
    fn admit_party(
        &self,
        line: &PartyLine<'_>,
        modes: &RoomModes,
        now_ms: i64,
    ) -> Result<(), Refusal>;

    /// Whether a session that spoke as `aliases` may take the new nickname `nick`: not
    /// while it or any of them is banned or timed out.
    fn admit_speaker(&self, nick: &str, aliases: &[String], now_ms: i64) -> Result<(), Refusal> {
        let _ = (nick, aliases, now_ms);
        Ok(())
    }
}

/// Why a party line was refused; the text is shown to the viewer as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Banned from the party chat.
    #[error("you are banned from the party chat")]
    Banned,
    /// Timed out.
    #[error("you are timed out for {0} more s")]
    TimedOut(u64),
    /// Banned under another nickname of the same session.
    #[error("you are banned from the party chat as {0:?}; a new nickname does not change that")]
    BannedAs(String),
    /// Timed out under another nickname of the same session.
    #[error("you are timed out as {0:?} for {1} more s; a new nickname does not change that")]
    TimedOutAs(String, u64),
    /// The party chat is closed.
    #[error("the party chat is closed")]
    Closed,
    /// Not in the party long enough yet.
    #[error(
        "party chat is open to viewers who have been here {minutes} minutes; {} to go",
        human(*.to_go_s)
    )]
    TooNew {
        /// The rule.
        minutes: u32,
        /// Seconds left.
        to_go_s: u64,
    },
    /// Slow mode.
    #[error("the chat is in slow mode; wait {0} s")]
    Slow(u64),
    /// Emote-only mode: party viewers have no emotes.
    #[error("the chat is in emote-only mode")]
    EmoteOnly,
    /// Subscribers-only mode: party viewers are not subscribers.
    #[error("the chat is in subscribers-only mode")]
    SubsOnly,
    /// Followers-only mode: party viewers are not followers.
    #[error("the chat is in followers-only mode")]
    FollowersOnly,
    /// A blocked term.
    #[error("your message contains a blocked term")]
    BlockedTerm,
}

/// `75` → `1 min 15 s`.
fn human(seconds: u64) -> String {
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_texts() {
        assert_eq!(
            Refusal::TooNew {
                minutes: 5,
                to_go_s: 75
            }
            .to_string(),
            "party chat is open to viewers who have been here 5 minutes; 1 min 15 s to go"
        );
        assert_eq!(
            Refusal::TimedOut(30).to_string(),
            "you are timed out for 30 more s"
        );
    }
}
