//! Step 4 of an action, and what Twitch's own moderators do: one audit record per action,
//! saying who did what to whom, when, and how it ended.
//!
//! Twitch's moderators act over IRC (CLEARCHAT, CLEARMSG, ROOMSTATE changes); those are
//! logged as actor `twitch`, except the echoes of actions forwarded from here and the
//! ROOMSTATE Twitch sends on join.

use std::sync::Mutex;

use super::action::{Action, Actor};
use super::forward::{Echo, Echoes};
use crate::chat::model::ClearKind;
use crate::chat::{ChatEvent, RoomModes};
use crate::store::{NewAuditEntry, Store};
use crate::util::clock::unix_ms;
use crate::util::lock::Locked;

/// What an audit record says about one action besides who and what.
#[derive(Debug, Default)]
pub(super) struct Record {
    /// To whom or what, e.g. `twitch:onche`.
    pub(super) target: Option<String>,
    /// Parameters, e.g. `600 s`.
    pub(super) detail: Option<String>,
}

impl Record {
    /// What `action` itself says; applying it may add more.
    pub(super) fn of(action: &Action) -> Record {
        Record {
            target: action.target_label(),
            detail: None,
        }
    }
}

/// The audit log, and the memory it needs to log Twitch's moderators once.
#[derive(Debug)]
pub(super) struct Audit {
    store: Store,
    /// Forwarded actions whose IRC echo is still expected.
    echoes: Echoes,
    /// Twitch's room modes as last known, to log only real changes by Twitch moderators.
    /// A std `Mutex`: sections are short and none awaits.
    twitch_modes: Mutex<Option<RoomModes>>,
}

impl Audit {
    /// An audit log written to `store`.
    pub(super) fn new(store: Store) -> Audit {
        Audit {
            store,
            echoes: Echoes::default(),
            twitch_modes: Mutex::new(None),
        }
    }

    /// The echoes forwarding expects.
    pub(super) fn echoes(&self) -> &Echoes {
        &self.echoes
    }

    /// Records what `actor` did and how it ended (`ok` or `error: …`).
    pub(super) fn action(&self, actor: &Actor, action: &str, record: &Record, result: &str) {
        self.write(&NewAuditEntry {
            at_ms: unix_ms(),
            actor_role: actor.role.as_str(),
            actor_name: &actor.name,
            action,
            target: record.target.as_deref(),
            detail: record.detail.as_deref(),
            result,
        });
    }

    /// Records what Twitch's own moderators did, as actor `twitch`. Call it for events that
    /// came from Twitch only.
    pub(super) fn observe(&self, event: &ChatEvent) {
        let now = unix_ms();
        let (action, target, detail) = match event {
            ChatEvent::Clear(c) => {
                if self
                    .echoes
                    .consume(&Echo::Clear(c.target_login.clone()), now)
                {
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
                if self
                    .echoes
                    .consume(&Echo::Delete(d.message_id.clone()), now)
                {
                    return;
                }
                (
                    "delete_message",
                    Some(format!("twitch:{}", d.target_login)),
                    Some(format!("message {}", d.message_id)),
                )
            }
            ChatEvent::RoomState(room) => {
                let ours = self.echoes.consume(&Echo::Modes(room.modes.clone()), now);
                let before = self.twitch_modes.locked().replace(room.modes.clone());
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
        self.write(&NewAuditEntry {
            at_ms: now,
            actor_role: "twitch",
            actor_name: "twitch",
            action,
            target: target.as_deref(),
            detail: detail.as_deref(),
            result: "ok",
        });
    }

    /// The log is a record, not a gate: a failed write is logged and the action stands.
    fn write(&self, entry: &NewAuditEntry<'_>) {
        if let Err(e) = self.store.record(entry) {
            tracing::error!(action = entry.action, "cannot write the audit log: {e}");
        }
    }
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

/// `on` or `off`, as the audit log words a switch.
pub(super) fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}
