//! Party lines in: the nickname rule (also sent to the pages as [`NickRule`]), the checks on
//! a line's shape (its text normalized first, see [`text`](super::text)), the per-speaker
//! flood allowance, and the message a line becomes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::gate::{PartyBadge, Refusal};
use super::model::{self, Badge, ChatMessage, Fragment, Origin, User};
use super::text::{self, TextError};

/// Twitch's limit on one chat message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Shortest nickname, in characters.
pub const NICK_MIN_CHARS: usize = 2;
/// Longest nickname, in characters (Twitch's limit on a login).
pub const NICK_MAX_CHARS: usize = 25;
/// [`is_nick_char`] as a regular expression, for the pages (JavaScript with the `u` flag).
const NICK_PATTERN: &str = r"^[\p{L}\p{N}_]+$";
/// Party messages one speaker (a session, with all its nicknames) may send in a burst, and how fast that allowance returns.
pub(super) const PARTY_BURST: u32 = 5;
const PARTY_REFILL: Duration = Duration::from_secs(2);
/// Past this many speakers, the allowance forgets those whose bucket is full again.
const ALLOWANCES_TRACKED: usize = 4096;

/// Why a party message was refused; the text is shown to the viewer as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PostError {
    /// Bad nickname.
    #[error(
        "nickname must be {NICK_MIN_CHARS} to {NICK_MAX_CHARS} letters, digits or underscores (got {0:?})"
    )]
    BadNick(String),
    /// Nothing visible to say.
    #[error("message is empty")]
    Empty,
    /// A control character in the text.
    #[error(transparent)]
    Text(#[from] TextError),
    /// Longer than Twitch allows.
    #[error("message is {0} characters; the limit is {MAX_MESSAGE_CHARS}")]
    TooLong(usize),
    /// Flooding.
    #[error("you are sending messages too fast; wait {0} s")]
    TooFast(u64),
    /// The gate said no (a ban, slow mode, a closed party chat…).
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// The nickname rule as the pages get it, so they check what the server checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NickRule {
    /// Fewest characters.
    pub min_chars: usize,
    /// Most characters.
    pub max_chars: usize,
    /// Which characters, as a regular expression with Unicode classes.
    pub pattern: &'static str,
    /// The rule in words, for the form's hint.
    pub hint: String,
}

/// The nickname rule [`validate`] applies.
pub fn nick_rule() -> NickRule {
    NickRule {
        min_chars: NICK_MIN_CHARS,
        max_chars: NICK_MAX_CHARS,
        pattern: NICK_PATTERN,
        hint: format!("{NICK_MIN_CHARS} to {NICK_MAX_CHARS} letters, digits or underscores"),
    }
}

/// Whether `c` may appear in a nickname (and a Twitch login): a letter, a digit or `_`.
pub fn is_nick_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Checks a party message's nickname and text; returns them normalized (NFKC, trimmed,
/// invisible characters gone: see [`text`](super::text)).
pub fn validate(nick: &str, text: &str) -> Result<(String, String), PostError> {
    let nick = text::clean_nick(nick);
    let nick_chars = nick.chars().count();
    if !(NICK_MIN_CHARS..=NICK_MAX_CHARS).contains(&nick_chars) || !nick.chars().all(is_nick_char) {
        return Err(PostError::BadNick(nick));
    }
    let text = text::clean(text)?;
    if text.is_empty() {
        return Err(PostError::Empty);
    }
    let chars = text.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(PostError::TooLong(chars));
    }
    Ok((nick, text))
}

/// Each speaker's flood allowance (a session's, whatever nickname it uses): a bucket of [`PARTY_BURST`] that refills one message per
/// [`PARTY_REFILL`].
#[derive(Debug, Default)]
pub(super) struct Allowance(HashMap<String, (u32, Instant)>);

impl Allowance {
    /// Spends one message of `speaker`'s allowance, or says how long to wait.
    pub(super) fn spend(&mut self, speaker: &str, now: Instant) -> Result<(), PostError> {
        if self.0.len() >= ALLOWANCES_TRACKED && !self.0.contains_key(speaker) {
            // Full buckets say nothing; forgetting them bounds memory.
            let full = PARTY_REFILL * PARTY_BURST;
            self.0
                .retain(|_, (_, since)| now.duration_since(*since) < full);
        }
        let (tokens, since) = self
            .0
            .entry(speaker.to_owned())
            .or_insert((PARTY_BURST, now));
        let earned = (now.duration_since(*since).as_millis() / PARTY_REFILL.as_millis()) as u32;
        if earned > 0 {
            *tokens = (*tokens + earned).min(PARTY_BURST);
            *since = now;
        }
        if *tokens == 0 {
            let wait = PARTY_REFILL.saturating_sub(now.duration_since(*since));
            return Err(PostError::TooFast(wait.as_secs().max(1)));
        }
        *tokens -= 1;
        Ok(())
    }

    /// Forgets every speaker (the party is over).
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

/// The message a party line becomes, with the hub's id for it, and the badge the server
/// gives its author (never one the author asked for).
pub(super) fn party_message(
    id: String,
    nick: &str,
    text: &str,
    badge: Option<PartyBadge>,
    timestamp_ms: i64,
) -> ChatMessage {
    let login = nick.to_lowercase();
    ChatMessage {
        id,
        origin: Origin::Party,
        channel: String::new(),
        display_color: model::display_color(None, &login),
        sender: User {
            id: String::new(),
            login,
            display_name: nick.to_owned(),
        },
        color: None,
        badges: badge
            .map(|b| Badge {
                name: b.name().to_owned(),
                version: "1".to_owned(),
            })
            .into_iter()
            .collect(),
        text: text.to_owned(),
        emotes: Vec::new(),
        fragments: vec![Fragment::Text {
            text: text.to_owned(),
        }],
        is_action: false,
        first_msg: false,
        bits: None,
        reply: None,
        msg_id: None,
        timestamp_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nick_rule_reads_as_the_pages_expect() {
        assert_eq!(
            serde_json::to_string(&nick_rule()).unwrap(),
            r#"{"min_chars":2,"max_chars":25,"pattern":"^[\\p{L}\\p{N}_]+$","hint":"2 to 25 letters, digits or underscores"}"#
        );
        assert_eq!(
            PostError::BadNick("x".into()).to_string(),
            "nickname must be 2 to 25 letters, digits or underscores (got \"x\")"
        );
    }
}
