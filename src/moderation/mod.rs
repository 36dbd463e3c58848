//! Moderation: who may do what to the chat, what happened, and what Twitch is told.
//!
//! - [`helix`]: the Twitch Helix client for the actions that reach Twitch.
//!
//! [`Moderation`] owns the bans, blocked terms, party-chat rule and audit log (persisted
//! through [`Store`], mirrored in memory so the per-message checks never touch the disk).
//! [`Moderation::apply`] runs one moderator [`Action`]:
//!
//! 1. the actor must be the host or a moderator, and the action must be well formed;
//! 2. it applies in the party at once, through the chat hub: a deleted message vanishes
//!    for every viewer, a timed-out or banned user's messages are cleared, room modes are
//!    published as the new merged room state;
//! 3. then, when a Helix token is configured and the action concerns Twitch (a Twitch
//!    user or message, a room mode, clearing the chat), it is forwarded to Twitch, and
//!    Twitch's answer comes back in the [`Outcome`] for the moderator to read;
//! 4. one audit record says who did what to whom, when, and how it ended.
//!
//! The chat hub consults it for every message (plain methods, no async): a party post goes
//! through [`Moderation::check_party_post`], a Twitch message through
//! [`Moderation::hides`], and what Twitch's own moderators do (CLEARCHAT, CLEARMSG,
//! ROOMSTATE) is written to the audit log by [`Moderation::observe`].
//!
//! Blocked terms match as case-insensitive substrings (Unicode lower case): "spam" also
//! hides "SPAMMER" and "spam.example". Whole-word matching would be gentler to innocent
//! words, but is defeated by gluing a term to anything; moderators should prefer specific
//! terms.

pub mod helix;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chat::model::{Clear, ClearKind, Delete, ServerNotice};
use crate::chat::{Chat, ChatEvent, Origin, RoomModes, RoomState, now_ms};
use crate::store::{self, Ban, BlockedTerm, NewAuditEntry, Store, StoreError};
use helix::{ChatSettingsPatch, Helix, HelixError};

/// Longest timeout, as Twitch allows: two weeks in seconds.
pub const MAX_TIMEOUT_S: u32 = helix::MAX_TIMEOUT_S;
/// Longest blocked term, in characters.
pub const MAX_TERM_CHARS: usize = 100;
/// Longest "been in the party for" rule, in minutes (a day).
pub const MAX_PARTY_MINUTES: u32 = 24 * 60;
/// How long a forwarded action waits for Twitch to echo it over IRC (CLEARCHAT/CLEARMSG),
/// so the echo is not logged a second time as a Twitch moderator's action.
const ECHO_WINDOW_MS: i64 = 30_000;
/// Past this many nicknames, the slow-mode clock forgets the ones that may post again.
const SLOW_TRACKED: usize = 4096;
/// The settings key of the party-chat rule.
const PARTY_CHAT_KEY: &str = "party_chat";

/// What someone may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The streamer.
    Host,
    /// Holds a moderator link.
    Moderator,
    /// Anyone else.
    Viewer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Moderator => "moderator",
            Role::Viewer => "viewer",
        }
    }
}

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
    },
    /// Lifts a ban or timeout.
    Unban {
        /// Who.
        target: Target,
    },
    /// Clears the whole chat.
    ClearChat,
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
            Action::ClearChat => "clear_chat",
            Action::Slow { .. } => "slow",
            Action::EmoteOnly { .. } => "emote_only",
            Action::FollowersOnly { .. } => "followers_only",
            Action::SubsOnly { .. } => "subs_only",
            Action::AddBlockedTerm { .. } => "add_blocked_term",
            Action::RemoveBlockedTerm { .. } => "remove_blocked_term",
            Action::PartyChat { .. } => "party_chat",
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

/// Why a party message was refused; the text is shown to the viewer as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Banned from the party chat.
    #[error("you are banned from the party chat")]
    Banned,
    /// Timed out.
    #[error("you are timed out for {0} more s")]
    TimedOut(u64),
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

/// The moderation handle. Cheap to clone; every clone is the same.
#[derive(Clone)]
pub struct Moderation {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    chat: Chat,
    helix: Option<Helix>,
    /// In-memory mirror of what the per-message checks need; a std `Mutex` because every
    /// section is short and none awaits.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bans in force, by (origin, lower-case login); expired ones are dropped on sight.
    bans: HashMap<(&'static str, String), Ban>,
    /// Blocked terms in lower case.
    terms: Vec<String>,
    party_chat: PartyChatMode,
    /// Last accepted party post per login, in ms, for slow mode.
    last_post: HashMap<String, i64>,
    /// Forwarded actions whose IRC echo is still expected.
    echoes: Vec<(Echo, i64)>,
    /// Twitch's room modes as last known, to log only real changes by Twitch moderators.
    twitch_modes: Option<RoomModes>,
}

/// An action of ours Twitch will echo over IRC.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Echo {
    /// A CLEARCHAT for this login (`None`: the whole chat).
    Clear(Option<String>),
    /// A CLEARMSG for this message.
    Delete(String),
    /// A ROOMSTATE bringing the room to these modes.
    Modes(RoomModes),
}

/// What the local step learnt that forwarding needs.
enum Forward {
    /// Nothing goes to Twitch.
    None,
    Delete(String),
    Ban {
        login: String,
        user_id: Option<String>,
        duration_s: Option<u32>,
        reason: Option<String>,
    },
    Unban {
        login: String,
        user_id: Option<String>,
    },
    ClearChat,
    Settings(ChatSettingsPatch, RoomModes),
}

/// Audit fields of one action.
struct Record {
    target: Option<String>,
    detail: Option<String>,
}

impl Moderation {
    /// Loads the bans, terms and party-chat rule from `store`. `helix` is `None` when no
    /// moderator token is configured: actions then stay in the party.
    pub fn open(store: Store, chat: Chat, helix: Option<Helix>) -> Result<Moderation, StoreError> {
        let mut state = State::default();
        for ban in store.bans()? {
            state
                .bans
                .insert((store::origin_str(ban.origin), ban.login.clone()), ban);
        }
        state.terms = store
            .blocked_terms()?
            .into_iter()
            .map(|t| t.term.to_lowercase())
            .collect();
        if let Some(mode) = store.setting(PARTY_CHAT_KEY)? {
            match serde_json::from_str(&mode) {
                Ok(mode) => state.party_chat = mode,
                Err(e) => tracing::warn!("ignoring a stored party-chat rule I cannot read: {e}"),
            }
        }
        Ok(Moderation {
            inner: Arc::new(Inner {
                store,
                chat,
                helix,
                state: Mutex::new(state),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every section leaves the mirror consistent between statements; a panic in one
        // loses at most that one change, so a poisoned lock is used as is.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database, for the web layer's lists (moderator links, settings).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether actions reach Twitch.
    pub fn forwards_to_twitch(&self) -> bool {
        self.inner.helix.is_some()
    }

    /// Bans and timeouts in force, newest first.
    pub fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        self.inner.store.bans()
    }

    /// Blocked terms, oldest first.
    pub fn blocked_terms(&self) -> Result<Vec<BlockedTerm>, StoreError> {
        self.inner.store.blocked_terms()
    }

    /// The latest `limit` audit records, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<store::AuditEntry>, StoreError> {
        self.inner.store.audit(limit)
    }

    /// The party-chat rule now.
    pub fn party_chat(&self) -> PartyChatMode {
        self.state().party_chat
    }

    /// Runs one action (see the module documentation for the order of things).
    pub async fn apply(&self, actor: &Actor, action: Action) -> Result<Outcome, ModError> {
        let name = action.name();
        let mut record = Record {
            target: target_of(&action),
            detail: None,
        };
        let local = if actor.role == Role::Viewer {
            Err(ModError::Forbidden)
        } else {
            validate(&action).and_then(|()| self.apply_locally(actor, &action, &mut record))
        };
        let forward = match local {
            Ok(forward) => forward,
            Err(e) => {
                self.audit_action(actor, name, &record, &format!("error: {e}"));
                return Err(e);
            }
        };
        let twitch = match (&self.inner.helix, forward) {
            (_, Forward::None) | (None, _) => None,
            (Some(helix), forward) => Some(
                self.forward(helix, forward)
                    .await
                    .map_err(|e| e.to_string()),
            ),
        };
        let result = match &twitch {
            Some(Err(e)) => format!("error: {e} (applied in the party)"),
            _ => "ok".to_owned(),
        };
        if let Some(Err(e)) = &twitch {
            tracing::warn!(action = name, actor = actor.name, "Twitch refused: {e}");
        }
        self.audit_action(actor, name, &record, &result);
        Ok(Outcome {
            applied: true,
            twitch,
        })
    }

    fn audit_action(&self, actor: &Actor, action: &str, record: &Record, result: &str) {
        let entry = NewAuditEntry {
            at_ms: now_ms(),
            actor_role: actor.role.as_str(),
            actor_name: &actor.name,
            action,
            target: record.target.as_deref(),
            detail: record.detail.as_deref(),
            result,
        };
        if let Err(e) = self.inner.store.record(&entry) {
            tracing::error!(action, "cannot write the audit log: {e}");
        }
    }

    /// Step 2: the party sees the action now. Returns what Twitch should be told.
    fn apply_locally(
        &self,
        actor: &Actor,
        action: &Action,
        record: &mut Record,
    ) -> Result<Forward, ModError> {
        let chat = &self.inner.chat;
        let store = &self.inner.store;
        let now = now_ms();
        Ok(match action {
            Action::DeleteMessage { message_id } => {
                let Some(event) = chat
                    .backlog()
                    .into_iter()
                    .find(|e| e.message_id() == Some(message_id.as_str()))
                else {
                    return Err(ModError::NotFound(format!(
                        "message {message_id} is not in the chat (any more)"
                    )));
                };
                let origin = origin_of(&event);
                let login = event.sender_login().unwrap_or_default().to_owned();
                record.target = Some(format!("{}:{login}", store::origin_str(origin)));
                record.detail = Some(format!(
                    "message {message_id}: {}",
                    excerpt(text_of(&event).unwrap_or_default())
                ));
                chat.publish(ChatEvent::Delete(Delete {
                    channel: channel_of(&event),
                    message_id: message_id.clone(),
                    target_login: login,
                }));
                if origin == Origin::Twitch {
                    Forward::Delete(message_id.clone())
                } else {
                    Forward::None
                }
            }
            Action::Timeout { target, seconds } => {
                record.detail = Some(format!("{seconds} s"));
                self.ban_locally(actor, target, Some(*seconds), None, now)?
            }
            Action::Ban { target, reason } => {
                record.detail = reason.clone();
                self.ban_locally(actor, target, None, reason.clone(), now)?
            }
            Action::Unban { target } => {
                let login = login_of(target);
                let was = store.unban(target.origin, &login)?;
                self.state()
                    .bans
                    .remove(&(store::origin_str(target.origin), login.clone()));
                match target.origin {
                    Origin::Party if !was => {
                        return Err(ModError::NotFound(format!("{login} is not banned")));
                    }
                    Origin::Party => Forward::None,
                    Origin::Twitch => {
                        if !was {
                            record.detail = Some("not banned in the party".into());
                        }
                        Forward::Unban {
                            user_id: target.user_id.clone().or_else(|| self.seen_user_id(&login)),
                            login,
                        }
                    }
                }
            }
            Action::ClearChat => {
                chat.publish(ChatEvent::Clear(Clear {
                    // Ignored by the hub for a whole-chat clear, which empties both sides.
                    origin: Origin::Twitch,
                    channel: self.channel(),
                    action: ClearKind::Clear,
                    target_login: None,
                    target_user_id: None,
                    duration_s: None,
                    timestamp_ms: now,
                }));
                Forward::ClearChat
            }
            Action::Slow { seconds } => {
                record.detail = Some(if *seconds == 0 {
                    "off".into()
                } else {
                    format!("{seconds} s")
                });
                self.set_modes(
                    |m| m.slow_s = u64::from(*seconds),
                    ChatSettingsPatch {
                        slow_mode: Some(*seconds > 0),
                        slow_mode_wait_time: (*seconds > 0).then_some(*seconds),
                        ..Default::default()
                    },
                )
            }
            Action::EmoteOnly { on } => {
                record.detail = Some(on_off(*on).into());
                self.set_modes(
                    |m| m.emote_only = *on,
                    ChatSettingsPatch {
                        emote_mode: Some(*on),
                        ..Default::default()
                    },
                )
            }
            Action::FollowersOnly { minutes } => {
                record.detail = Some(match minutes {
                    None => "off".into(),
                    Some(m) => format!("{m} min"),
                });
                self.set_modes(
                    |m| m.followers_only_minutes = minutes.map(u64::from),
                    ChatSettingsPatch {
                        follower_mode: Some(minutes.is_some()),
                        follower_mode_duration: *minutes,
                        ..Default::default()
                    },
                )
            }
            Action::SubsOnly { on } => {
                record.detail = Some(on_off(*on).into());
                self.set_modes(
                    |m| m.subs_only = *on,
                    ChatSettingsPatch {
                        subscriber_mode: Some(*on),
                        ..Default::default()
                    },
                )
            }
            Action::AddBlockedTerm { term } => {
                let term = term.trim();
                let key = term.to_lowercase();
                if !store.add_blocked_term(term, &actor.name)? {
                    record.detail = Some("already blocked".into());
                }
                {
                    let mut state = self.state();
                    if !state.terms.contains(&key) {
                        state.terms.push(key.clone());
                    }
                }
                // What viewers already see goes too.
                let mut hidden = 0;
                for event in chat.backlog() {
                    if text_of(&event).is_some_and(|t| t.to_lowercase().contains(&key)) {
                        chat.publish(ChatEvent::Delete(Delete {
                            channel: channel_of(&event),
                            message_id: event.message_id().unwrap_or_default().to_owned(),
                            target_login: event.sender_login().unwrap_or_default().to_owned(),
                        }));
                        hidden += 1;
                    }
                }
                if hidden > 0 {
                    record.detail = Some(format!("{hidden} message(s) hidden"));
                }
                Forward::None
            }
            Action::RemoveBlockedTerm { term } => {
                if !store.remove_blocked_term(term)? {
                    return Err(ModError::NotFound(format!(
                        "{:?} is not blocked",
                        term.trim()
                    )));
                }
                let key = term.trim().to_lowercase();
                self.state().terms.retain(|t| *t != key);
                Forward::None
            }
            Action::PartyChat { mode } => {
                let json =
                    serde_json::to_string(mode).map_err(|e| ModError::Invalid(e.to_string()))?;
                store.set_setting(PARTY_CHAT_KEY, &json)?;
                self.state().party_chat = *mode;
                let (msg_id, text) = match mode {
                    PartyChatMode::Open => ("party_chat_open", "The party chat is open.".into()),
                    PartyChatMode::Closed => {
                        ("party_chat_closed", "The party chat is closed.".into())
                    }
                    PartyChatMode::MinMinutes(m) => (
                        "party_chat_min_minutes",
                        format!(
                            "The party chat is open to viewers who have been here {m} minutes."
                        ),
                    ),
                };
                record.detail = Some(json);
                chat.publish(ChatEvent::ServerNotice(ServerNotice {
                    msg_id: Some(msg_id.into()),
                    text,
                }));
                Forward::None
            }
        })
    }

    fn ban_locally(
        &self,
        actor: &Actor,
        target: &Target,
        duration_s: Option<u32>,
        reason: Option<String>,
        now: i64,
    ) -> Result<Forward, ModError> {
        let login = login_of(target);
        let user_id = match &target.user_id {
            Some(id) => Some(id.clone()),
            None if target.origin == Origin::Twitch => self.seen_user_id(&login),
            None => None,
        };
        let ban = Ban {
            origin: target.origin,
            login: login.clone(),
            user_id: user_id.clone(),
            reason: reason.clone(),
            expires_at_ms: duration_s.map(|s| now + i64::from(s) * 1000),
            by: actor.name.clone(),
            at_ms: now,
        };
        self.inner.store.ban(&ban)?;
        self.state()
            .bans
            .insert((store::origin_str(target.origin), login.clone()), ban);
        self.inner.chat.publish(ChatEvent::Clear(Clear {
            origin: target.origin,
            channel: self.channel(),
            action: if duration_s.is_some() {
                ClearKind::Timeout
            } else {
                ClearKind::Ban
            },
            target_login: Some(login.clone()),
            target_user_id: user_id.clone(),
            duration_s: duration_s.map(u64::from),
            timestamp_ms: now,
        }));
        Ok(match target.origin {
            Origin::Party => Forward::None,
            Origin::Twitch => Forward::Ban {
                login,
                user_id,
                duration_s,
                reason,
            },
        })
    }

    /// Publishes the merged room modes after `change`; returns the Twitch patch.
    fn set_modes(&self, change: impl FnOnce(&mut RoomModes), patch: ChatSettingsPatch) -> Forward {
        let mut modes = self.inner.chat.modes();
        change(&mut modes);
        self.inner.chat.publish(ChatEvent::RoomState(RoomState {
            channel: self.channel(),
            modes: modes.clone(),
        }));
        Forward::Settings(patch, modes)
    }

    /// Step 3: tells Twitch. The IRC echo is expected before the call, since Twitch may
    /// send it before its HTTP answer arrives, and forgotten if the call fails.
    async fn forward(&self, helix: &Helix, forward: Forward) -> Result<(), HelixError> {
        let (echo, result) = match forward {
            Forward::None => return Ok(()),
            Forward::Delete(id) => {
                let echo = self.expect_echo(Echo::Delete(id.clone()));
                (echo, helix.delete_message(Some(&id)).await)
            }
            Forward::ClearChat => {
                let echo = self.expect_echo(Echo::Clear(None));
                (echo, helix.delete_message(None).await)
            }
            Forward::Ban {
                login,
                user_id,
                duration_s,
                reason,
            } => {
                let user_id = match user_id {
                    Some(id) => id,
                    None => helix.user_id(&login).await?,
                };
                let echo = self.expect_echo(Echo::Clear(Some(login)));
                (
                    echo,
                    helix.ban(&user_id, duration_s, reason.as_deref()).await,
                )
            }
            Forward::Unban { login, user_id } => {
                // Twitch sends nothing over IRC for an unban.
                let user_id = match user_id {
                    Some(id) => id,
                    None => helix.user_id(&login).await?,
                };
                return helix.unban(&user_id).await;
            }
            Forward::Settings(patch, modes) => {
                let echo = self.expect_echo(Echo::Modes(modes));
                (echo, helix.update_chat_settings(&patch).await.map(drop))
            }
        };
        if result.is_err() {
            self.forget_echo(&echo);
        }
        result
    }

    fn expect_echo(&self, echo: Echo) -> Echo {
        let now = now_ms();
        let mut state = self.state();
        state.echoes.retain(|(_, until)| *until > now);
        state.echoes.push((echo.clone(), now + ECHO_WINDOW_MS));
        echo
    }

    fn forget_echo(&self, echo: &Echo) {
        let mut state = self.state();
        if let Some(i) = state.echoes.iter().position(|(e, _)| e == echo) {
            state.echoes.remove(i);
        }
    }

    /// A Twitch user id from the chat backlog, when the user wrote recently.
    fn seen_user_id(&self, login: &str) -> Option<String> {
        self.inner
            .chat
            .backlog()
            .iter()
            .rev()
            .find_map(|e| match e {
                ChatEvent::Message(m)
                    if m.origin == Origin::Twitch
                        && m.sender.login == login
                        && !m.sender.id.is_empty() =>
                {
                    Some(m.sender.id.clone())
                }
                _ => None,
            })
    }

    /// The channel login for events we publish.
    fn channel(&self) -> String {
        match &self.inner.helix {
            Some(h) => h.broadcaster_login().to_owned(),
            None => String::new(),
        }
    }

    // ── hooks for the chat hub ──────────────────────────────────────────────────────────

    /// Whether party viewer `login`, here for `in_party_for`, may post `text` now. A post
    /// that passes counts for slow mode, so call this once per post, right before posting,
    /// and not while holding the hub's lock (it reads the room modes from the hub).
    pub fn check_party_post(
        &self,
        login: &str,
        text: &str,
        in_party_for: Duration,
    ) -> Result<(), Refusal> {
        self.check_party_post_at(login, text, in_party_for, now_ms())
    }

    /// [`check_party_post`](Self::check_party_post) at a given time (ms since the epoch),
    /// for tests and replays.
    pub fn check_party_post_at(
        &self,
        login: &str,
        text: &str,
        in_party_for: Duration,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let login = login.trim().to_lowercase();
        let modes = self.inner.chat.modes();
        let mut state = self.state();
        let key = (store::origin_str(Origin::Party), login.clone());
        if let Some(ban) = state.bans.get(&key) {
            match ban.expires_at_ms {
                None => return Err(Refusal::Banned),
                Some(until) if until > now_ms => {
                    let left = (until - now_ms + 999) / 1000;
                    return Err(Refusal::TimedOut(left as u64));
                }
                Some(_) => {
                    state.bans.remove(&key);
                }
            }
        }
        match state.party_chat {
            PartyChatMode::Open => {}
            PartyChatMode::Closed => return Err(Refusal::Closed),
            PartyChatMode::MinMinutes(minutes) => {
                let needed = u64::from(minutes) * 60;
                let been = in_party_for.as_secs();
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
        if matches_term(&state.terms, text) {
            return Err(Refusal::BlockedTerm);
        }
        if modes.slow_s > 0 {
            let slow_ms = modes.slow_s as i64 * 1000;
            if let Some(last) = state.last_post.get(&login)
                && now_ms - last < slow_ms
            {
                let wait = (slow_ms - (now_ms - last) + 999) / 1000;
                return Err(Refusal::Slow(wait as u64));
            }
            if state.last_post.len() >= SLOW_TRACKED {
                state.last_post.retain(|_, t| now_ms - *t < slow_ms);
            }
        }
        // Kept even with slow mode off, so turning it on applies to the last post too.
        state.last_post.insert(login, now_ms);
        Ok(())
    }

    /// Whether a Twitch event must not reach viewers: a message or notice whose text has a
    /// blocked term, or a message from a user banned or timed out in the party. The hub
    /// calls it before publishing; it reads only the in-memory mirror.
    pub fn hides(&self, event: &ChatEvent) -> bool {
        let mut state = self.state();
        if let ChatEvent::Message(m) = event {
            let key = (store::origin_str(m.origin), m.sender.login.clone());
            if let Some(ban) = state.bans.get(&key) {
                match ban.expires_at_ms {
                    Some(until) if until <= now_ms() => {
                        state.bans.remove(&key);
                    }
                    _ => return true,
                }
            }
        }
        text_of(event).is_some_and(|t| matches_term(&state.terms, t))
    }

    /// Writes what Twitch's own moderators did (CLEARCHAT, CLEARMSG, ROOMSTATE changes)
    /// to the audit log, as actor `twitch`. Call it for events that came from Twitch only.
    /// The echoes of actions forwarded from here, and the ROOMSTATE Twitch sends on join,
    /// are not logged again.
    pub fn observe(&self, event: &ChatEvent) {
        let now = now_ms();
        let (action, target, detail) = match event {
            ChatEvent::Clear(c) => {
                if self.consume_echo(&Echo::Clear(c.target_login.clone()), now) {
                    return;
                }
                let action = match c.action {
                    ClearKind::Timeout => "timeout",
                    ClearKind::Ban => "ban",
                    ClearKind::Clear => "clear_chat",
                };
                (
                    action,
                    c.target_login.as_ref().map(|l| format!("twitch:{l}")),
                    c.duration_s.map(|s| format!("{s} s")),
                )
            }
            ChatEvent::Delete(d) => {
                if self.consume_echo(&Echo::Delete(d.message_id.clone()), now) {
                    return;
                }
                (
                    "delete_message",
                    Some(format!("twitch:{}", d.target_login)),
                    Some(format!("message {}", d.message_id)),
                )
            }
            ChatEvent::RoomState(room) => {
                let ours = self.consume_echo(&Echo::Modes(room.modes.clone()), now);
                let before = self.state().twitch_modes.replace(room.modes.clone());
                let Some(before) = before else {
                    // The state Twitch sends on join: nobody did anything.
                    return;
                };
                if ours {
                    return;
                }
                let changes = mode_changes(&before, &room.modes);
                if changes.is_empty() {
                    return;
                }
                ("room_modes", None, Some(changes.join(", ")))
            }
            _ => return,
        };
        let entry = NewAuditEntry {
            at_ms: now,
            actor_role: "twitch",
            actor_name: "twitch",
            action,
            target: target.as_deref(),
            detail: detail.as_deref(),
            result: "ok",
        };
        if let Err(e) = self.inner.store.record(&entry) {
            tracing::error!(action, "cannot write the audit log: {e}");
        }
    }

    fn consume_echo(&self, echo: &Echo, now: i64) -> bool {
        let mut state = self.state();
        state.echoes.retain(|(_, until)| *until > now);
        match state.echoes.iter().position(|(e, _)| e == echo) {
            Some(i) => {
                state.echoes.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Moderation as the chat hub's gate. Weak, because moderation holds the hub: a strong
/// handle both ways would keep both alive forever.
struct WeakGate(std::sync::Weak<Inner>);

impl crate::chat::Gate for WeakGate {
    fn hides(&self, event: &ChatEvent) -> bool {
        self.0
            .upgrade()
            .is_some_and(|inner| Moderation { inner }.hides(event))
    }

    fn observe(&self, event: &ChatEvent) {
        if let Some(inner) = self.0.upgrade() {
            Moderation { inner }.observe(event);
        }
    }
}

impl Moderation {
    /// Puts this moderation between Twitch and the hub's viewers (blocked terms, party
    /// bans of Twitch users, the audit of Twitch's own moderators).
    pub fn guard(&self, chat: &Chat) {
        chat.set_gate(Arc::new(WeakGate(Arc::downgrade(&self.inner))));
    }
}

impl fmt::Debug for Moderation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moderation")
            .field("forwards_to_twitch", &self.forwards_to_twitch())
            .finish_non_exhaustive()
    }
}

/// Step 1: shape and range checks (the actor's role is checked before).
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
        Action::Ban { target, reason } => {
            check_target(target)?;
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
    if !(1..=25).contains(&chars) || !login.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(ModError::Invalid(format!("{login:?} is not a login")));
    }
    if target.origin == Origin::Party && target.user_id.is_some() {
        return Err(ModError::Invalid("party viewers have no Twitch id".into()));
    }
    Ok(())
}

/// A target's login as stored and compared: trimmed, lower case.
fn login_of(target: &Target) -> String {
    target.login.trim().to_lowercase()
}

fn target_of(action: &Action) -> Option<String> {
    match action {
        Action::Timeout { target, .. } | Action::Ban { target, .. } | Action::Unban { target } => {
            Some(format!(
                "{}:{}",
                store::origin_str(target.origin),
                login_of(target)
            ))
        }
        Action::AddBlockedTerm { term } | Action::RemoveBlockedTerm { term } => {
            Some(term.trim().to_owned())
        }
        _ => None,
    }
}

fn matches_term(terms: &[String], text: &str) -> bool {
    if terms.is_empty() {
        return false;
    }
    let text = text.to_lowercase();
    terms.iter().any(|t| text.contains(t.as_str()))
}

/// What each room mode became, for the audit log.
fn mode_changes(before: &RoomModes, after: &RoomModes) -> Vec<String> {
    let mut out = Vec::new();
    if before.slow_s != after.slow_s {
        out.push(match after.slow_s {
            0 => "slow off".to_owned(),
            s => format!("slow {s} s"),
        });
    }
    if before.emote_only != after.emote_only {
        out.push(format!("emote-only {}", on_off(after.emote_only)));
    }
    if before.followers_only_minutes != after.followers_only_minutes {
        out.push(match after.followers_only_minutes {
            None => "followers-only off".to_owned(),
            Some(m) => format!("followers-only {m} min"),
        });
    }
    if before.subs_only != after.subs_only {
        out.push(format!("subs-only {}", on_off(after.subs_only)));
    }
    if before.r9k != after.r9k {
        out.push(format!("unique-chat {}", on_off(after.r9k)));
    }
    out
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn origin_of(event: &ChatEvent) -> Origin {
    match event {
        ChatEvent::Message(m) => m.origin,
        _ => Origin::Twitch,
    }
}

fn channel_of(event: &ChatEvent) -> String {
    match event {
        ChatEvent::Message(m) => m.channel.clone(),
        ChatEvent::Notice(n) => n.channel.clone(),
        _ => String::new(),
    }
}

/// The text a user wrote, in a message or notice.
fn text_of(event: &ChatEvent) -> Option<&str> {
    match event {
        ChatEvent::Message(m) => Some(&m.text),
        ChatEvent::Notice(n) => n.text.as_deref(),
        _ => None,
    }
}

/// The first 80 characters, for the audit log.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if text.chars().nth(80).is_some() {
        out.push('…');
    }
    out
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
        assert_eq!(a, Action::ClearChat);
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
