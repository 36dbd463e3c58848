//! Moderation: who may do what to the chat, what happened, and what Twitch is told.
//!
//! - `action`: the [`Action`]s the mod tools send, who acts ([`Actor`]), and the checks an
//!   action passes before anything changes;
//! - `apply`: an action applied in the party, through the chat hub;
//! - `forward`: an action forwarded to Twitch, and the IRC echo it will cause;
//! - `gate`: the per-message gate every chat line passes (bans, blocked terms, the
//!   party-chat rule, room modes, slow mode);
//! - `audit`: the audit log, of ours and of Twitch's own moderators;
//! - [`helix`]: the Twitch Helix client for the actions that reach Twitch;
//!
//! [`Moderation::open`] loads the bans, blocked terms and party-chat rule (persisted through
//! [`Store`], mirrored in memory by the gate so the per-message checks never touch the
//! disk) and builds the chat hub with the gate in it: a hub viewers can see cannot exist
//! without its gate. [`Moderation::apply`] runs one moderator [`Action`]:
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
//! Every chat line passes the gate in the hub before the hub numbers it: a party post
//! (refused with a [`Refusal`] the viewer reads), a Twitch message (hidden), and what
//! Twitch's own moderators do (CLEARCHAT, CLEARMSG, ROOMSTATE) is written to the audit log
//! on the way.

mod action;
mod apply;
mod audit;
mod forward;
mod gate;
pub mod helix;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::chat::{Chat, ChatConfig, ChatEvent, PartyLine};
use crate::store::{self, Ban, BlockedTerm, Store, StoreError};
use crate::util::clock::unix_ms;
use audit::{Audit, Record};
use gate::MessageGate;
use helix::Helix;

/// Why a party line was refused: the gate's answer, as the hub reports it.
pub use crate::chat::Refusal;
/// What an actor may do: the party's roles.
pub use crate::party::Role;
pub use action::{
    Action, Actor, MAX_PARTY_MINUTES, MAX_TERM_CHARS, MAX_TIMEOUT_S, ModError, Outcome,
    PartyChatMode, Target,
};

/// The moderation handle. Cheap to clone; every clone is the same.
#[derive(Clone)]
pub struct Moderation {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// The hub actions apply to; it holds the same gate.
    chat: Chat,
    helix: Option<Helix>,
    gate: Arc<MessageGate>,
    audit: Arc<Audit>,
}

impl Moderation {
    /// Loads the bans, terms and party-chat rule from `store`, and builds the party's chat
    /// hub (with `chat`'s settings) around the gate they make. `helix` is `None` when no
    /// moderator token is configured: actions then stay in the party.
    pub fn open(
        store: Store,
        helix: Option<Helix>,
        chat: ChatConfig,
    ) -> Result<(Moderation, Chat), StoreError> {
        let audit = Arc::new(Audit::new(store.clone()));
        let gate = Arc::new(MessageGate::load(&store, audit.clone())?);
        let chat = Chat::gated(chat, gate.clone());
        let moderation = Moderation {
            inner: Arc::new(Inner {
                store,
                chat: chat.clone(),
                helix,
                gate,
                audit,
            }),
        };
        Ok((moderation, chat))
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
        self.inner.gate.party_chat()
    }

    /// Runs one action (see the module documentation for the order of things).
    pub async fn apply(&self, actor: &Actor, action: Action) -> Result<Outcome, ModError> {
        let name = action.name();
        let mut record = Record::of(&action);
        let channel = self.channel();
        let local = action::check(actor, &action).and_then(|()| {
            apply::InParty {
                chat: &self.inner.chat,
                store: &self.inner.store,
                gate: &self.inner.gate,
                channel: &channel,
                actor,
                now: unix_ms(),
            }
            .apply(&action, &mut record)
        });
        let forward = match local {
            Ok(forward) => forward,
            Err(e) => {
                self.inner
                    .audit
                    .action(actor, name, &record, &format!("error: {e}"));
                return Err(e);
            }
        };
        let twitch = match (&self.inner.helix, forward) {
            (_, forward::Forward::None) | (None, _) => None,
            (Some(helix), forward) => Some(
                forward::forward(helix, self.inner.audit.echoes(), forward)
                    .await
                    .map_err(|e| e.to_string()),
            ),
        };
        let result = match &twitch {
            Some(Err(e)) => {
                tracing::warn!(action = name, actor = actor.name, "Twitch refused: {e}");
                format!("error: {e} (applied in the party)")
            }
            _ => "ok".to_owned(),
        };
        self.inner.audit.action(actor, name, &record, &result);
        Ok(Outcome {
            applied: true,
            twitch,
        })
    }

    /// The channel login for events we publish.
    fn channel(&self) -> String {
        match &self.inner.helix {
            Some(h) => h.broadcaster_login().to_owned(),
            None => String::new(),
        }
    }

    // ── the gate, asked directly ────────────────────────────────────────────────────────

    /// Whether party viewer `login`, here for `in_party_for`, may post `text` now: the
    /// gate's answer for a party line, as the hub gets it. A post that passes counts for
    /// slow mode.
    pub fn check_party_post(
        &self,
        login: &str,
        text: &str,
        in_party_for: Duration,
    ) -> Result<(), Refusal> {
        self.check_party_post_at(login, text, in_party_for, unix_ms())
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
        let line = PartyLine::sessionless(login, text, in_party_for);
        self.inner
            .gate
            .check_party(&line, &self.inner.chat.modes(), now_ms)
    }

    /// Whether a viewer whose session spoke as `aliases` may watch: not when a ban on any
    /// of them covers the whole party (see [`Action::Ban`]'s `whole_party`).
    pub fn may_watch(&self, aliases: &[String]) -> bool {
        self.inner.gate.may_watch(aliases)
    }

    /// Whether a Twitch event must not reach viewers: a message or notice whose text has a
    /// blocked term, or a message from a user banned or timed out in the party. It reads
    /// only the in-memory mirror.
    pub fn hides(&self, event: &ChatEvent) -> bool {
        self.inner.gate.hides(event)
    }

    /// Writes what Twitch's own moderators did (CLEARCHAT, CLEARMSG, ROOMSTATE changes)
    /// to the audit log, as actor `twitch`, as the gate does for every Twitch event. The
    /// echoes of actions forwarded from here, and the ROOMSTATE Twitch sends on join, are
    /// not logged again.
    pub fn observe(&self, event: &ChatEvent) {
        self.inner.audit.observe(event);
    }
}

impl fmt::Debug for Moderation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moderation")
            .field("forwards_to_twitch", &self.forwards_to_twitch())
            .finish_non_exhaustive()
    }
}
