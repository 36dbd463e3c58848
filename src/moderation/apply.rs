//! Step 2 of an action: the party sees it at once, through the chat hub and the gate. A
//! deleted message vanishes for every viewer, a timed-out or banned user's messages are
//! cleared, room modes are published as the new merged room state, a blocked term hides
//! what viewers already see. Each step returns what Twitch must then be told.

use super::action::{Action, Actor, ModError, PartyChatMode, Target};
use super::audit::{Record, on_off};
use super::forward::Forward;
use super::gate::{MessageGate, PARTY_CHAT_KEY, WATCH_BANS_KEY, matches_term};
use super::helix::ChatSettingsPatch;
use crate::chat::model::{Clear, ClearKind, Delete, ServerNotice};
use crate::chat::text::fold;
use crate::chat::{Chat, ChatEvent, Origin, RoomModes, RoomState};
use crate::store::{self, Ban, Store};

/// Everything applying one action in the party touches.
pub(super) struct InParty<'a> {
    /// The hub viewers watch.
    pub(super) chat: &'a Chat,
    /// Where bans, terms and the party-chat rule are kept.
    pub(super) store: &'a Store,
    /// The in-memory mirror the per-message checks read.
    pub(super) gate: &'a MessageGate,
    /// The channel login for events we publish (empty without Helix).
    pub(super) channel: &'a str,
    /// Who acts.
    pub(super) actor: &'a Actor,
    /// When, in ms since the epoch.
    pub(super) now: i64,
}

impl InParty<'_> {
    /// Applies `action` (already checked) and fills in `record`. Returns what Twitch should
    /// be told.
    pub(super) fn apply(&self, action: &Action, record: &mut Record) -> Result<Forward, ModError> {
        match action {
            Action::DeleteMessage { message_id } => self.delete_message(message_id, record),
            Action::Timeout { target, seconds } => {
                record.detail = Some(format!("{seconds} s"));
                self.ban(target, Some(*seconds), None, false)
            }
            Action::Ban {
                target,
                reason,
                whole_party,
            } => {
                record.detail = match (whole_party, reason) {
                    (false, reason) => reason.clone(),
                    (true, None) => Some("from the whole party".into()),
                    (true, Some(r)) => Some(format!("from the whole party: {r}")),
                };
                self.ban(target, None, reason.clone(), *whole_party)
            }
            Action::Unban { target } => self.unban(target, record),
            Action::ClearChat {} => Ok(self.clear_chat()),
            Action::Slow { .. }
            | Action::EmoteOnly { .. }
            | Action::FollowersOnly { .. }
            | Action::SubsOnly { .. } => Ok(self.set_modes(action, record)),
            Action::AddBlockedTerm { term } => self.add_term(term, record),
            Action::RemoveBlockedTerm { term } => self.remove_term(term),
            Action::PartyChat { mode } => self.set_party_chat(*mode, record),
        }
    }

    fn delete_message(&self, message_id: &str, record: &mut Record) -> Result<Forward, ModError> {
        let Some(event) = self
            .chat
            .backlog()
            .into_iter()
            .find(|e| e.message_id() == Some(message_id))
        else {
            return Err(ModError::NotFound(format!(
                "message {message_id} is not in the chat (any more)"
            )));
        };
        let origin = event.origin();
        let login = event.sender_login().unwrap_or_default().to_owned();
        record.target = Some(format!("{}:{login}", store::origin_str(origin)));
        record.detail = Some(format!(
            "message {message_id}: {}",
            excerpt(event.text().unwrap_or_default())
        ));
        self.chat.publish(ChatEvent::Delete(Delete {
            channel: event.channel().to_owned(),
            message_id: message_id.to_owned(),
            target_login: login,
        }));
        Ok(match origin {
            Origin::Twitch => Forward::Delete(message_id.to_owned()),
            Origin::Party => Forward::None,
        })
    }

    /// A timeout (`duration_s`) or a ban; `watching`: a ban from the whole party.
    fn ban(
        &self,
        target: &Target,
        duration_s: Option<u32>,
        reason: Option<String>,
        watching: bool,
    ) -> Result<Forward, ModError> {
        let login = target.key();
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
            expires_at_ms: duration_s.map(|s| self.now + i64::from(s) * 1000),
            by: self.actor.name.clone(),
            at_ms: self.now,
        };
        self.store.ban(&ban)?;
        let watch_bans = self.gate.ban(ban, watching);
        if target.origin == Origin::Party {
            self.save_watch_bans(&watch_bans)?;
        }
        self.chat.publish(ChatEvent::Clear(Clear {
            origin: target.origin,
            channel: self.channel.to_owned(),
            action: if duration_s.is_some() {
                ClearKind::Timeout
            } else {
                ClearKind::Ban
            },
            target_login: Some(login.clone()),
            target_user_id: user_id.clone(),
            duration_s: duration_s.map(u64::from),
            timestamp_ms: self.now,
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

    fn unban(&self, target: &Target, record: &mut Record) -> Result<Forward, ModError> {
        let login = target.key();
        let was = self.store.unban(target.origin, &login)?;
        let watch_bans = self.gate.unban(target.origin, &login);
        if target.origin == Origin::Party {
            self.save_watch_bans(&watch_bans)?;
        }
        match target.origin {
            Origin::Party if !was => Err(ModError::NotFound(format!("{login} is not banned"))),
            Origin::Party => Ok(Forward::None),
            Origin::Twitch => {
                if !was {
                    record.detail = Some("not banned in the party".into());
                }
                Ok(Forward::Unban {
                    user_id: target.user_id.clone().or_else(|| self.seen_user_id(&login)),
                    login,
                })
            }
        }
    }

    /// The party logins banned from watching, kept as a setting (the store's bans table
    /// has no column for it).
    fn save_watch_bans(&self, list: &[String]) -> Result<(), ModError> {
        let json = serde_json::to_string(list).map_err(|e| ModError::Invalid(e.to_string()))?;
        self.store.set_setting(WATCH_BANS_KEY, &json)?;
        Ok(())
    }

    fn clear_chat(&self) -> Forward {
        self.chat.publish(ChatEvent::Clear(Clear {
            // Ignored by the hub for a whole-chat clear, which empties both sides.
            origin: Origin::Twitch,
            channel: self.channel.to_owned(),
            action: ClearKind::Clear,
            target_login: None,
            target_user_id: None,
            duration_s: None,
            timestamp_ms: self.now,
        }));
        Forward::ClearChat
    }

    /// Publishes the merged room modes after a room-mode action; returns the Twitch patch.
    fn set_modes(&self, action: &Action, record: &mut Record) -> Forward {
        let mut modes = self.chat.modes();
        let Some((detail, patch)) = change_modes(action, &mut modes) else {
            return Forward::None;
        };
        record.detail = Some(detail);
        self.chat.publish(ChatEvent::RoomState(RoomState {
            channel: self.channel.to_owned(),
            modes: modes.clone(),
        }));
        Forward::Settings(patch, modes)
    }

    fn add_term(&self, term: &str, record: &mut Record) -> Result<Forward, ModError> {
        let term = term.trim();
        let key = fold(term);
        if !self.store.add_blocked_term(term, &self.actor.name)? {
            record.detail = Some("already blocked".into());
        }
        self.gate.add_term(&key);
        // What viewers already see goes too.
        let mut hidden = 0;
        for event in self.chat.backlog() {
            if event
                .text()
                .is_some_and(|t| matches_term(std::slice::from_ref(&key), t))
            {
                self.chat.publish(ChatEvent::Delete(Delete {
                    channel: event.channel().to_owned(),
                    message_id: event.message_id().unwrap_or_default().to_owned(),
                    target_login: event.sender_login().unwrap_or_default().to_owned(),
                }));
                hidden += 1;
            }
        }
        if hidden > 0 {
            record.detail = Some(format!("{hidden} message(s) hidden"));
        }
        Ok(Forward::None)
    }

    fn remove_term(&self, term: &str) -> Result<Forward, ModError> {
        if !self.store.remove_blocked_term(term)? {
            return Err(ModError::NotFound(format!(
                "{:?} is not blocked",
                term.trim()
            )));
        }
        // Another stored spelling of the same folded term keeps it blocked.
        let folded = fold(term);
        if !self
            .store
            .blocked_terms()?
            .iter()
            .any(|t| fold(&t.term) == folded)
        {
            self.gate.remove_term(&folded);
        }
        Ok(Forward::None)
    }

    fn set_party_chat(
        &self,
        mode: PartyChatMode,
        record: &mut Record,
    ) -> Result<Forward, ModError> {
        let json = serde_json::to_string(&mode).map_err(|e| ModError::Invalid(e.to_string()))?;
        self.store.set_setting(PARTY_CHAT_KEY, &json)?;
        self.gate.set_party_chat(mode);
        let (msg_id, text) = match mode {
            PartyChatMode::Open => ("party_chat_open", "The party chat is open.".into()),
            PartyChatMode::Closed => ("party_chat_closed", "The party chat is closed.".into()),
            PartyChatMode::MinMinutes(m) => (
                "party_chat_min_minutes",
                format!("The party chat is open to viewers who have been here {m} minutes."),
            ),
        };
        record.detail = Some(json);
        self.chat.publish(ChatEvent::ServerNotice(ServerNotice {
            msg_id: Some(msg_id.into()),
            text,
        }));
        Ok(Forward::None)
    }

    /// A Twitch user id from the chat backlog, when the user wrote recently.
    fn seen_user_id(&self, login: &str) -> Option<String> {
        self.chat.backlog().iter().rev().find_map(|e| match e {
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
}

/// A room-mode action's effect: changes `modes`, and returns the audit detail and the
/// Twitch patch with only that mode's fields. `None` for other actions.
fn change_modes(action: &Action, modes: &mut RoomModes) -> Option<(String, ChatSettingsPatch)> {
    let mut patch = ChatSettingsPatch::default();
    let detail = match *action {
        Action::Slow { seconds } => {
            modes.slow_s = u64::from(seconds);
            patch.slow_mode = Some(seconds > 0);
            patch.slow_mode_wait_time = (seconds > 0).then_some(seconds);
            match seconds {
                0 => "off".to_owned(),
                s => format!("{s} s"),
            }
        }
        Action::EmoteOnly { on } => {
            modes.emote_only = on;
            patch.emote_mode = Some(on);
            on_off(on).to_owned()
        }
        Action::FollowersOnly { minutes } => {
            modes.followers_only_minutes = minutes.map(u64::from);
            patch.follower_mode = Some(minutes.is_some());
            patch.follower_mode_duration = minutes;
            match minutes {
                None => "off".to_owned(),
                Some(m) => format!("{m} min"),
            }
        }
        Action::SubsOnly { on } => {
            modes.subs_only = on;
            patch.subscriber_mode = Some(on);
            on_off(on).to_owned()
        }
        _ => return None,
    };
    Some((detail, patch))
}

/// The first 80 characters, for the audit log.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if text.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}
