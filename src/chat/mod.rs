//! Chat: the Twitch channel's messages and the party's own, as one ordered stream of events.
//!
//! - [`model`]: the typed events and their JSON; Twitch lines become events there.
//! - [`gate`]: what the hub asks before it numbers a line (moderation answers).
//! - [`post`]: party lines in: the nickname rule, the shape checks, the flood allowance.
//! - [`bridge`]: the Twitch IRC link (`twitch-irc`), which feeds the hub and relays party
//!   messages to Twitch under Twitch's rate limits.
//! - `log`: the optional chat log file.
//!
//! The [`Chat`] hub keeps the backlog late joiners get, the room modes and the link state,
//! numbers every event, serialises it once and hands it to every subscriber (the WebSocket
//! of each viewer page, the overlay renderer).
//!
//! Every chat line takes one route: in through the hub's door for its kind
//! ([`Chat::receive_twitch`] for the bridge's events, [`Chat::post_party`] for a party
//! viewer's line), past the hub's [`Gate`] (blocked terms, bans and timeouts, the party-chat
//! rule, room modes, slow mode), then numbered and published. Events the hub's owners make
//! themselves (a moderator's deletion, the link state) are published as they are
//! ([`Chat::publish`]). Data flows one way: Twitch or party → gate → hub → viewers.

pub mod bridge;
pub mod gate;
mod log;
pub mod login;
pub mod model;
pub mod post;
pub mod text;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::shutdown::Shutdown;
use crate::util::clock::unix_ms;
use crate::util::lock::Locked;
pub use gate::{Gate, PartyBadge, PartyLine, Refusal};
pub use model::{ChatEvent, ChatMessage, Connection, Origin, RoomModes, RoomState};
pub use post::{MAX_MESSAGE_CHARS, NickRule, PostError, is_nick_char, nick_rule, validate};

/// Messages a late joiner gets, like Twitch's own chat shows on load.
pub const DEFAULT_BACKLOG: usize = 150;
/// Events a subscriber may fall behind before it misses some. At 100× the xqcow capture
/// (≈1,100 messages/s) this is several seconds of slack for a slow page.
const LIVE_CAPACITY: usize = 16 * 1024;

/// One event as subscribers get it: numbered, and serialised once for every WebSocket.
#[derive(Debug)]
pub struct Published {
    /// Position in the stream; gaps mean a subscriber lagged.
    pub seq: u64,
    /// The event.
    pub event: ChatEvent,
    /// `{"seq":…,"type":…,…}` as UTF-8; `Bytes` so every WebSocket shares one copy.
    pub json: bytes::Bytes,
}

/// What a new subscriber gets: the current state, then everything after it.
pub struct Subscription {
    /// Link state, room modes, then the backlog, oldest first.
    pub snapshot: Vec<Arc<Published>>,
    /// Events after the snapshot, without gaps or repeats.
    pub live: broadcast::Receiver<Arc<Published>>,
}

/// Hub settings.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Messages kept for late joiners.
    pub backlog: usize,
    /// Relay party messages to Twitch (needs a sending login on the bridge).
    pub relay_party: bool,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            backlog: DEFAULT_BACKLOG,
            relay_party: false,
        }
    }
}

/// The chat hub. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

struct Inner {
    config: ChatConfig,
    /// Every incoming line passes it; set at birth and never changed, so no line can reach
    /// a viewer before it is in place.
    gate: Option<Arc<dyn Gate>>,
    /// When the hub started, in ms: party message ids are unique across restarts with it.
    started_ms: i64,
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Published>>,
}

struct State {
    seq: u64,
    backlog: VecDeque<Arc<Published>>,
    room: RoomState,
    connection: Connection,
    allowance: post::Allowance,
    /// Party messages so far, for their ids.
    party_posts: u64,
    relay: Option<mpsc::Sender<String>>,
}

impl Chat {
    /// A hub without a gate: every line that is well formed passes. For tools and tests;
    /// a party's hub comes with its gate from `Moderation::open`.
    pub fn new(config: ChatConfig) -> Chat {
        Chat::build(config, None)
    }

    /// A hub whose every incoming line passes `gate` first.
    pub fn gated(config: ChatConfig, gate: Arc<dyn Gate>) -> Chat {
        Chat::build(config, Some(gate))
    }

    fn build(config: ChatConfig, gate: Option<Arc<dyn Gate>>) -> Chat {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        Chat {
            inner: Arc::new(Inner {
                config,
                gate,
                started_ms: unix_ms(),
                state: Mutex::new(State {
                    seq: 0,
                    backlog: VecDeque::new(),
                    room: RoomState::default(),
                    connection: Connection::Off,
                    allowance: post::Allowance::default(),
                    party_posts: 0,
                    relay: None,
                }),
                live,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the backlog half-edited in a way that
        // matters more than losing chat, so a poisoned lock is used as is.
        self.inner.state.locked()
    }

    /// Applies an event to the backlog and state, and sends it to every subscriber, with no
    /// gate: for events the hub's owners make (a moderator's deletion, the link state).
    /// Returns it as subscribers got it.
    pub fn publish(&self, event: ChatEvent) -> Arc<Published> {
        let mut state = self.state();
        // Sending under the lock keeps `subscribe`'s snapshot and live stream seamless.
        state.seq += 1;
        let seq = state.seq;
        match &event {
            ChatEvent::Clear(clear) => match &clear.target_login {
                Some(login) => state.backlog.retain(|p| {
                    !(p.event.origin() == clear.origin
                        && p.event.sender_login() == Some(login.as_str()))
                }),
                None => state.backlog.clear(),
            },
            ChatEvent::Delete(delete) => state
                .backlog
                .retain(|p| p.event.message_id() != Some(delete.message_id.as_str())),
            ChatEvent::RoomState(room) => state.room = room.clone(),
            ChatEvent::Connection(c) => state.connection = *c,
            _ => {}
        }
        let published = Arc::new(published(seq, event));
        if published.event.is_backlogged() {
            state.backlog.push_back(published.clone());
            while state.backlog.len() > self.inner.config.backlog {
                state.backlog.pop_front();
            }
        }
        // No subscribers is fine: nobody is watching yet.
        let _ = self.inner.live.send(published.clone());
        published
    }

    /// An event from Twitch: the gate sees it and may hide it; otherwise it is published.
    /// Returns whether it was published.
    pub fn receive_twitch(&self, event: ChatEvent) -> bool {
        if let Some(gate) = &self.inner.gate
            && !gate.admit_twitch(&event)
        {
            return false;
        }
        self.publish(event);
        true
    }

    /// A party viewer says something: the line is checked (its shape, then the gate, then
    /// the speaker's flood allowance) and published. On success the message is in the
    /// stream (and queued for Twitch when relaying is on); on error nothing was published.
    pub fn post_party(&self, line: PartyLine<'_>) -> Result<Arc<Published>, PostError> {
        let (nick, text) = validate(line.nick, line.text)?;
        let (nick, text) = (nick.as_str(), text.as_str());
        let line = PartyLine { nick, text, ..line };
        if let Some(gate) = &self.inner.gate {
            gate.admit_party(&line, &self.modes(), unix_ms())?;
        }
        let (n, relay) = {
            let mut state = self.state();
            state
                .allowance
                .spend(&line.speaker.to_lowercase(), Instant::now())?;
            state.party_posts += 1;
            (state.party_posts, state.relay.clone())
        };
        let id = format!("party-{}-{n}", self.inner.started_ms);
        let message = post::party_message(id, nick, text, line.badge, unix_ms());
        let published = self.publish(ChatEvent::Message(message));
        if self.inner.config.relay_party
            && let Some(relay) = relay
            && relay.try_send(format!("[party] {nick}: {text}")).is_err()
        {
            tracing::warn!("party relay queue full; message stays in the party only");
        }
        Ok(published)
    }

    /// [`post_party`](Self::post_party) for a line whose author's time in the party does
    /// not matter (tools, tests, the host's own scripts).
    pub fn post(&self, nick: &str, text: &str) -> Result<Arc<Published>, PostError> {
        self.post_party(PartyLine::sessionless(nick, text, Duration::MAX))
    }

    /// Whether a session that spoke as `aliases` may take the new nickname `nick` (the
    /// gate's answer: not while it or any of them is banned or timed out).
    pub fn admit_speaker(&self, nick: &str, aliases: &[String]) -> Result<(), PostError> {
        match &self.inner.gate {
            Some(gate) => Ok(gate.admit_speaker(nick, aliases, unix_ms())?),
            None => Ok(()),
        }
    }

    /// The party is over: its chat is forgotten, here and on every page (a whole-chat
    /// clear), as Teleparty does. Nothing of it was written anywhere.
    pub fn end_party(&self) {
        self.state().allowance.clear();
        self.publish(ChatEvent::Clear(model::Clear {
            origin: Origin::Party,
            channel: String::new(),
            action: model::ClearKind::Clear,
            target_login: None,
            target_user_id: None,
            duration_s: None,
            timestamp_ms: unix_ms(),
        }));
    }

    /// Appends every message and notice to `path` as JSON lines, for streamers who turn on
    /// chat logging (off by default: the party's chat is gone when it ends), until shutdown.
    pub fn spawn_log(&self, path: std::path::PathBuf, shutdown: &Shutdown) {
        shutdown.spawn(
            "chat-log",
            log::run(path, self.inner.live.subscribe(), shutdown.token()),
        );
    }

    /// The state and backlog now, and the stream from here on.
    pub fn subscribe(&self) -> Subscription {
        let state = self.state();
        let mut snapshot = vec![
            Arc::new(published(
                state.seq,
                ChatEvent::Connection(state.connection),
            )),
            Arc::new(published(
                state.seq,
                ChatEvent::RoomState(state.room.clone()),
            )),
        ];
        snapshot.extend(state.backlog.iter().cloned());
        Subscription {
            snapshot,
            live: self.inner.live.subscribe(),
        }
    }

    /// The room modes now.
    pub fn modes(&self) -> RoomModes {
        self.state().room.modes.clone()
    }

    /// The Twitch link state now.
    pub fn connection(&self) -> Connection {
        self.state().connection
    }

    /// Messages and notices a late joiner would get now, oldest first.
    pub fn backlog(&self) -> Vec<ChatEvent> {
        self.state()
            .backlog
            .iter()
            .map(|p| p.event.clone())
            .collect()
    }

    /// Where relayed party messages go (the bridge's sender).
    pub fn set_relay(&self, relay: mpsc::Sender<String>) {
        self.state().relay = Some(relay);
    }
}

#[derive(Serialize)]
struct Numbered<'a> {
    seq: u64,
    #[serde(flatten)]
    event: &'a ChatEvent,
}

fn published(seq: u64, event: ChatEvent) -> Published {
    let json = serde_json::to_string(&Numbered { seq, event: &event })
        .unwrap_or_else(|e| format!("{{\"seq\":{seq},\"type\":\"error\",\"error\":\"{e}\"}}"));
    Published {
        seq,
        event,
        json: bytes::Bytes::from(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Clear, ClearKind, Delete};
    use post::PARTY_BURST;

    fn say(chat: &Chat, nick: &str, text: &str) -> String {
        chat.post(nick, text)
            .unwrap()
            .event
            .message_id()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn late_joiner_gets_state_then_backlog_without_deleted_messages() {
        let chat = Chat::new(ChatConfig::default());
        let a = say(&chat, "alice", "one");
        say(&chat, "bob", "two");
        chat.publish(ChatEvent::Delete(Delete {
            channel: String::new(),
            message_id: a,
            target_login: "alice".into(),
        }));
        let sub = chat.subscribe();
        let types: Vec<String> = sub
            .snapshot
            .iter()
            .map(|p| {
                serde_json::from_slice::<serde_json::Value>(&p.json).unwrap()["type"].to_string()
            })
            .collect();
        assert_eq!(types, ["\"connection\"", "\"room_state\"", "\"message\""]);
        assert_eq!(chat.backlog().len(), 1);
    }

    #[test]
    fn twitch_clear_does_not_touch_party_messages_of_the_same_name() {
        let chat = Chat::new(ChatConfig::default());
        say(&chat, "onche", "party side");
        chat.publish(ChatEvent::Clear(Clear {
            origin: Origin::Twitch,
            channel: "xqcow".into(),
            action: ClearKind::Timeout,
            target_login: Some("onche".into()),
            target_user_id: Some("1".into()),
            duration_s: Some(150),
            timestamp_ms: 0,
        }));
        assert_eq!(chat.backlog().len(), 1);
    }

    #[test]
    fn bad_party_posts_change_nothing() {
        let chat = Chat::new(ChatConfig::default());
        assert!(matches!(chat.post("x", "hi"), Err(PostError::BadNick(_))));
        assert!(matches!(
            chat.post("<b>x</b>", "hi"),
            Err(PostError::BadNick(_))
        ));
        assert!(matches!(chat.post("alice", "   "), Err(PostError::Empty)));
        let long = "a".repeat(501);
        assert!(matches!(
            chat.post("alice", &long),
            Err(PostError::TooLong(501))
        ));
        assert!(chat.backlog().is_empty());
        for _ in 0..PARTY_BURST {
            chat.post("alice", "spam").unwrap();
        }
        assert!(matches!(
            chat.post("alice", "spam"),
            Err(PostError::TooFast(_))
        ));
        assert_eq!(chat.backlog().len(), PARTY_BURST as usize);
    }

    #[test]
    fn backlog_is_bounded() {
        let chat = Chat::new(ChatConfig {
            backlog: 3,
            relay_party: false,
        });
        for i in 0..5 {
            say(&chat, &format!("user{i}"), "hi");
        }
        assert_eq!(chat.backlog().len(), 3);
    }

    /// Hides Twitch lines that say "hidden" and refuses party lines from "troll".
    struct Strict;

    impl Gate for Strict {
        fn admit_twitch(&self, event: &ChatEvent) -> bool {
            !matches!(event, ChatEvent::Message(m) if m.text == "hidden")
        }

        fn admit_party(
            &self,
            line: &PartyLine<'_>,
            _modes: &RoomModes,
            _now_ms: i64,
        ) -> Result<(), Refusal> {
            if line.nick == "troll" {
                Err(Refusal::Banned)
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn both_doors_pass_the_gate_before_anything_is_numbered() {
        let chat = Chat::gated(ChatConfig::default(), Arc::new(Strict));
        let twitch = |text: &str| {
            let mut m = post::party_message("t".into(), "onche", text, None, 0);
            m.origin = Origin::Twitch;
            ChatEvent::Message(m)
        };
        assert!(!chat.receive_twitch(twitch("hidden")));
        assert!(chat.receive_twitch(twitch("shown")));
        assert_eq!(
            chat.post("  troll ", "hi").unwrap_err(),
            PostError::Refused(Refusal::Banned)
        );
        // Shape checks come first: a bad line never reaches the gate.
        assert!(matches!(chat.post("x", "hi"), Err(PostError::BadNick(_))));
        let said = chat.post("alice", "hi").unwrap();
        assert_eq!(said.seq, 2, "refused lines took no number");
        assert_eq!(chat.backlog().len(), 2);
    }
}
