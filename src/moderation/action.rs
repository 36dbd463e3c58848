//! Moderator actions as the mod tools send them, who acts, how an action ended, and the
//! shape and range checks every action passes before anything changes.

use serde::{Deserialize, Serialize};

use super::helix;
use crate::chat::{Origin, is_nick_char};
use crate::party::Role;
use crate::store::{self, StoreError};

/// Longest timeout, as Twitch allows: two weeks in seconds.
pub const MAX_TIMEOUT_S: u32 = helix::MAX_TIMEOUT_S;
/// Longest blocked term, in characters.
pub const MAX_TERM_CHARS: usize = 100;
/// Longest "been in the party for" rule, in minutes (a day).
pub const MAX_PARTY_MINUTES: u32 = 24 * 60;
/// Longest Twitch login, in characters.
const MAX_LOGIN_CHARS: usize = 25;

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// What they may do.
    pub role: Role,
    /// Their name, for the audit log (a moderator link's label, the host's login…).
    pub name: String,
}

/// The user an action is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A Twitch user or a party nickname (the same login may be both).
    #[serde(with = "origin_serde")]
    pub origin: Origin,
    /// Their login; compared in lower case.
    pub login: String,
    /// Their Twitch user id when known; looked up otherwise.
    #[serde(default)]
    pub user_id: Option<String>,
}

impl Target {
    /// The login as stored and compared: trimmed, lower case.
    pub(super) fn key(&self) -> String {
        self.login.trim().to_lowercase()
    }
}

/// Who may post in the party chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PartyChatMode {
    /// Everyone.
    #[default]
    Open,
    /// No one.
    Closed,
    /// Viewers who have been in the party this many minutes: the party's counterpart of
    /// followers-only.
    MinMinutes(u32),
}

/// A moderator's action. Its JSON is what the mod tools send, e.g.
/// `{"action":"timeout","target":{"origin":"twitch","login":"onche"},"seconds":600}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Removes one message (it must still be in the backlog).
    DeleteMessage {
        /// Its id.
        message_id: String,
    },
    /// Keeps a user out for a while and clears their messages.
    Timeout {
        /// Who.
        target: Target,
        /// How long: 1 to 1,209,600 (two weeks).
        seconds: u32,
    },
    /// Keeps a user out until unbanned and clears their messages.
    Ban {
        /// Who.
        target: Target,
        /// Why (at most 500 characters, Twitch's limit).
        #[serde(default)]
        reason: Option<String>,
        /// A party viewer only: ban from the whole party, not only from the chat. Their
        /// session (whatever nickname it uses) can no longer start watching.
        #[serde(default)]
        whole_party: bool,
    },
    /// Lifts a ban or timeout.
    Unban {
        /// Who.
        target: Target,
    },
    /// Clears the whole chat. A struct variant, even empty: serde lets unknown fields
    /// through on a unit variant of a tagged enum, and every action refuses them.
    ClearChat {},
    /// One message per this many seconds per user; 0 turns slow mode off. Twitch accepts
    /// 3 to 120, and so does the party, which shares the room modes.
    Slow {
        /// Seconds.
        seconds: u32,
    },
    /// Emote-only mode.
    EmoteOnly {
        /// On or off.
        on: bool,
    },
    /// Followers-only mode: `None` off, else the minimum follow age in minutes.
    FollowersOnly {
        /// Minutes, 0 to 129,600 (three months).
        #[serde(default)]
        minutes: Option<u32>,
    },
    /// Subscribers-only mode.
    SubsOnly {
        /// On or off.
        on: bool,
    },
    /// Hides messages containing `term` from now on, and the backlog's at once.
    AddBlockedTerm {
        /// 1 to 100 characters.
        term: String,
    },
    /// Stops blocking `term`.
    RemoveBlockedTerm {
        /// The term, in any letter case.
        term: String,
    },
    /// Opens, closes or limits the party chat.
    PartyChat {
        /// The new rule.
        mode: PartyChatMode,
    },
}

impl Action {
    /// The action's name, as in its JSON and the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Action::DeleteMessage { .. } => "delete_message",
            Action::Timeout { .. } => "timeout",
            Action::Ban { .. } => "ban",
            Action::Unban { .. } => "unban",
            Action::ClearChat {} => "clear_chat",
            Action::Slow { .. } => "slow",
            Action::EmoteOnly { .. } => "emote_only",
            Action::FollowersOnly { .. } => "followers_only",
            Action::SubsOnly { .. } => "subs_only",
            Action::AddBlockedTerm { .. } => "add_blocked_term",
            Action::RemoveBlockedTerm { .. } => "remove_blocked_term",
            Action::PartyChat { .. } => "party_chat",
        }
    }

    /// Whom or what the action is about, for the audit log, as far as the action itself
    /// says (applying it may learn more, e.g. a deleted message's author).
    pub(super) fn target_label(&self) -> Option<String> {
        match self {
            Action::Timeout { target, .. }
            | Action::Ban { target, .. }
            | Action::Unban { target } => Some(format!(
                "{}:{}",
                store::origin_str(target.origin),
                target.key()
            )),
            Action::AddBlockedTerm { term } | Action::RemoveBlockedTerm { term } => {
                Some(term.trim().to_owned())
            }
            _ => None,
        }
    }
}

/// How an action went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Applied in the party (always true: a failure locally is an error instead).
    pub applied: bool,
    /// Twitch's answer when the action was forwarded: `Err` holds the message to show the
    /// moderator (Twitch's own for an API error). `None` when not forwarded.
    pub twitch: Option<Result<(), String>>,
}

/// Why an action was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ModError {
    /// The actor may not moderate.
    #[error("only the host and moderators may do that")]
    Forbidden,
    /// The action is malformed (the text says how).
    #[error("{0}")]
    Invalid(String),
    /// The message, user or term is not there.
    #[error("{0}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Step 1: whether `actor` may act at all, then shape and range checks.
pub(super) fn check(actor: &Actor, action: &Action) -> Result<(), ModError> {
    if !actor.role.may_moderate() {
        return Err(ModError::Forbidden);
    }
    validate(action)
}

/// Shape and range checks (the actor's role is checked before).
fn validate(action: &Action) -> Result<(), ModError> {
    let invalid = |s: String| Err(ModError::Invalid(s));
    match action {
        Action::DeleteMessage { message_id } if message_id.trim().is_empty() => {
            invalid("which message?".into())
        }
        Action::Timeout { target, seconds } => {
            check_target(target)?;
            if !(1..=MAX_TIMEOUT_S).contains(seconds) {
                return invalid(format!(
                    "a timeout lasts 1 to {MAX_TIMEOUT_S} seconds (two weeks); got {seconds}"
                ));
            }
            Ok(())
        }
        Action::Ban {
            target,
            reason,
            whole_party,
        } => {
            check_target(target)?;
            if *whole_party && target.origin != Origin::Party {
                return invalid("only a party viewer can be banned from the whole party".into());
            }
            if reason
                .as_ref()
                .is_some_and(|r| r.chars().count() > helix::MAX_REASON_CHARS)
            {
                return invalid(format!(
                    "a ban reason has at most {} characters",
                    helix::MAX_REASON_CHARS
                ));
            }
            Ok(())
        }
        Action::Unban { target } => check_target(target),
        Action::Slow { seconds } if *seconds != 0 && !helix::SLOW_MODE_RANGE.contains(seconds) => {
            invalid(format!(
                "slow mode is off (0) or {} to {} seconds, as on Twitch; got {seconds}",
                helix::SLOW_MODE_RANGE.start(),
                helix::SLOW_MODE_RANGE.end()
            ))
        }
        Action::FollowersOnly { minutes: Some(m) } if *m > helix::FOLLOWER_MINUTES_MAX => {
            invalid(format!(
                "followers-only asks at most {} minutes (three months); got {m}",
                helix::FOLLOWER_MINUTES_MAX
            ))
        }
        Action::AddBlockedTerm { term } | Action::RemoveBlockedTerm { term } => {
            let chars = term.trim().chars().count();
            if !(1..=MAX_TERM_CHARS).contains(&chars) {
                return invalid(format!(
                    "a blocked term has 1 to {MAX_TERM_CHARS} characters; got {chars}"
                ));
            }
            // Terms match on letters and digits only (see `gate`): one without any would
            // match every message.
            if crate::chat::text::fold(term).is_empty() {
                return invalid(format!("{:?} has no letter or digit to match", term.trim()));
            }
            Ok(())
        }
        Action::PartyChat {
            mode: PartyChatMode::MinMinutes(m),
        } if !(1..=MAX_PARTY_MINUTES).contains(m) => invalid(format!(
            "the party chat can ask for 1 to {MAX_PARTY_MINUTES} minutes; got {m}"
        )),
        _ => Ok(()),
    }
}

/// A login as Twitch allows them (and party nicknames, which follow the same rule).
fn check_target(target: &Target) -> Result<(), ModError> {
    let login = target.login.trim();
    let chars = login.chars().count();
    if !(1..=MAX_LOGIN_CHARS).contains(&chars) || !login.chars().all(is_nick_char) {
        return Err(ModError::Invalid(format!("{login:?} is not a login")));
    }
    if target.origin == Origin::Party && target.user_id.is_some() {
        return Err(ModError::Invalid("party viewers have no Twitch id".into()));
    }
    Ok(())
}

/// `Origin` has no `Deserialize`; actions arriving as JSON need one.
mod origin_serde {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::chat::Origin;

    pub fn serialize<S: Serializer>(origin: &Origin, s: S) -> Result<S::Ok, S::Error> {
        origin.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Origin, D::Error> {
        match String::deserialize(d)?.as_str() {
            "twitch" => Ok(Origin::Twitch),
            "party" => Ok(Origin::Party),
            other => Err(D::Error::unknown_variant(other, &["twitch", "party"])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_from_json() {
        let a: Action = serde_json::from_str(
            r#"{"action":"timeout","target":{"origin":"twitch","login":"onche"},"seconds":600}"#,
        )
        .unwrap();
        assert_eq!(
            a,
            Action::Timeout {
                target: Target {
                    origin: Origin::Twitch,
                    login: "onche".into(),
                    user_id: None
                },
                seconds: 600
            }
        );
        let a: Action =
            serde_json::from_str(r#"{"action":"party_chat","mode":{"min_minutes":10}}"#).unwrap();
        assert_eq!(
            a,
            Action::PartyChat {
                mode: PartyChatMode::MinMinutes(10)
            }
        );
        let a: Action = serde_json::from_str(r#"{"action":"clear_chat"}"#).unwrap();
        assert_eq!(a, Action::ClearChat {});
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"action":"clear_chat"}"#
        );
        let unknown = serde_json::from_str::<Action>(r#"{"action":"clear_chat","everything":1}"#)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field `everything`"), "{unknown}");
        let a: Action = serde_json::from_str(
            r#"{"action":"ban","target":{"origin":"party","login":"x1"},"whole_party":true}"#,
        )
        .unwrap();
        assert!(matches!(
            a,
            Action::Ban {
                whole_party: true,
                ..
            }
        ));
        let a: Action = serde_json::from_str(r#"{"action":"followers_only"}"#).unwrap();
        assert_eq!(a, Action::FollowersOnly { minutes: None });
        assert!(
            serde_json::from_str::<Action>(
                r#"{"action":"ban","target":{"origin":"irc","login":"x"}}"#
            )
            .is_err()
        );
        // What serialises reads back.
        let json = serde_json::to_string(&Action::PartyChat {
            mode: PartyChatMode::Closed,
        })
        .unwrap();
        assert_eq!(json, r#"{"action":"party_chat","mode":"closed"}"#);
    }

    #[test]
    fn validation_ranges() {
        let twitch = |login: &str| Target {
            origin: Origin::Twitch,
            login: login.into(),
            user_id: None,
        };
        assert!(
            validate(&Action::Timeout {
                target: twitch("a"),
                seconds: 0
            })
            .is_err()
        );
        assert!(
            validate(&Action::Timeout {
                target: twitch("a"),
                seconds: 1_209_601
            })
            .is_err()
        );
        assert!(
            validate(&Action::Timeout {
                target: twitch("a"),
                seconds: 1_209_600
            })
            .is_ok()
        );
        assert!(
            validate(&Action::Timeout {
                target: twitch("a b"),
                seconds: 5
            })
            .is_err()
        );
        assert!(validate(&Action::Slow { seconds: 2 }).is_err());
        assert!(validate(&Action::Slow { seconds: 0 }).is_ok());
        assert!(validate(&Action::AddBlockedTerm { term: " ".into() }).is_err());
        assert!(
            validate(&Action::AddBlockedTerm {
                term: "x".repeat(101)
            })
            .is_err()
        );
        assert!(
            validate(&Action::PartyChat {
                mode: PartyChatMode::MinMinutes(0)
            })
            .is_err()
        );
    }
}
