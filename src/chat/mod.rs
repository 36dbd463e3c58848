//! Chat: the Twitch channel's messages and the party's own, as one ordered stream of events.
//!
//! - [`model`]: the typed events and their JSON.
//! - [`bridge`]: the Twitch IRC link (`twitch-irc`), which feeds the hub and relays party
//!   messages to Twitch under Twitch's rate limits.
//!
//! The [`Chat`] hub keeps the backlog late joiners get, the room modes and the link state,
//! numbers every event, serialises it once and hands it to every subscriber (the WebSocket
//! of each viewer page, the overlay renderer). Data flows one way: Twitch → model → hub →
//! viewers.

pub mod bridge;
pub mod model;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

pub use model::{ChatEvent, ChatMessage, Connection, Origin, RoomModes, RoomState};

/// Messages a late joiner gets, like Twitch's own chat shows on load.
pub const DEFAULT_BACKLOG: usize = 150;
/// Twitch's limit on one chat message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Events a subscriber may fall behind before it misses some. At 100× the xqcow capture
/// (≈1,100 messages/s) this is several seconds of slack for a slow page.
const LIVE_CAPACITY: usize = 16 * 1024;
/// Party messages one nickname may send in a burst, and how fast that allowance returns.
const PARTY_BURST: u32 = 5;
const PARTY_REFILL: Duration = Duration::from_secs(2);

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

/// Why a party message was refused; the text is shown to the viewer as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PostError {
    /// Bad nickname.
    #[error("nickname must be 2 to 25 letters, digits or underscores (got {0:?})")]
    BadNick(String),
    /// Nothing to say.
    #[error("message is empty")]
    Empty,
    /// Longer than Twitch allows.
    #[error("message is {0} characters; the limit is {MAX_MESSAGE_CHARS}")]
    TooLong(usize),
    /// Flooding.
    #[error("you are sending messages too fast; wait {0} s")]
    TooFast(u64),
}

/// What moderation does to Twitch's lines before anyone sees them. A trait, so chat knows
/// nothing of moderation: moderation plugs itself in with [`Chat::set_gate`].
pub trait Gate: Send + Sync {
    /// Whether to keep this event from every viewer (e.g. a blocked term).
    fn hides(&self, event: &ChatEvent) -> bool;
    /// Sees every Twitch event, e.g. to log what Twitch's moderators did.
    fn observe(&self, event: &ChatEvent);
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
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Published>>,
}

struct State {
    seq: u64,
    backlog: VecDeque<Arc<Published>>,
    room: RoomState,
    connection: Connection,
    party_allowance: HashMap<String, (u32, Instant)>,
    relay: Option<mpsc::Sender<String>>,
    gate: Option<Arc<dyn Gate>>,
}

impl Chat {
    /// A hub with no Twitch link yet (state `off`).
    pub fn new(config: ChatConfig) -> Chat {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        Chat {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State {
                    seq: 0,
                    backlog: VecDeque::new(),
                    room: RoomState::default(),
                    connection: Connection::Off,
                    party_allowance: HashMap::new(),
                    relay: None,
                    gate: None,
                }),
                live,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the backlog half-edited in a way that
        // matters more than losing chat, so a poisoned lock is used as is.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies an event to the backlog and state, and sends it to every subscriber.
    /// Returns it as subscribers got it.
    pub fn publish(&self, event: ChatEvent) -> Arc<Published> {
        let mut state = self.state();
        // Sending under the lock keeps `subscribe`'s snapshot and live stream seamless.
        state.seq += 1;
        let seq = state.seq;
        match &event {
            ChatEvent::Clear(clear) => match &clear.target_login {
                Some(login) => state.backlog.retain(|p| {
                    !(origin(&p.event) == clear.origin
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

    /// Puts moderation between Twitch and the viewers.
    pub fn set_gate(&self, gate: Arc<dyn Gate>) {
        self.state().gate = Some(gate);
    }

    /// An event from Twitch: the gate sees it and may hide it; otherwise it is published.
    /// Returns whether it was published.
    pub fn publish_from_twitch(&self, event: ChatEvent) -> bool {
        let gate = self.state().gate.clone();
        if let Some(gate) = gate {
            gate.observe(&event);
            if gate.hides(&event) {
                return false;
            }
        }
        self.publish(event);
        true
    }

    /// The party is over: its chat is forgotten, here and on every page (a whole-chat
    /// clear), as Teleparty does. Nothing of it was written anywhere.
    pub fn end_party(&self) {
        self.state().party_allowance.clear();
        self.publish(ChatEvent::Clear(model::Clear {
            origin: Origin::Party,
            channel: String::new(),
            action: model::ClearKind::Clear,
            target_login: None,
            target_user_id: None,
            duration_s: None,
            timestamp_ms: now_ms(),
        }));
    }

    /// Appends every message and notice to `path` as JSON lines, for streamers who turn on
    /// chat logging (off by default: the party's chat is gone when it ends).
    pub fn spawn_log(&self, path: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
        let mut live = self.inner.live.subscribe();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await;
            let mut file = match file {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!("cannot open the chat log {}: {e}", path.display());
                    return;
                }
            };
            loop {
                match live.recv().await {
                    Ok(p) if p.event.is_backlogged() => {
                        let mut line = p.json.to_vec();
                        line.push(b'\n');
                        if let Err(e) = file.write_all(&line).await {
                            tracing::error!("chat log {}: {e}; logging stops", path.display());
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("chat log fell behind; {n} events not logged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
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

    /// A party viewer says something. On success the message is in the stream (and queued
    /// for Twitch when relaying is on); on error nothing changed.
    pub fn post(&self, nick: &str, text: &str) -> Result<Arc<Published>, PostError> {
        let (nick, text) = validate(nick, text)?;
        let login = nick.to_lowercase();
        let relay = {
            let mut state = self.state();
            let now = Instant::now();
            let (tokens, since) = state
                .party_allowance
                .entry(login.clone())
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
            state.relay.clone()
        };
        let message = ChatMessage {
            id: party_id(),
            origin: Origin::Party,
            channel: String::new(),
            sender: model::User {
                id: String::new(),
                login: login.clone(),
                display_name: nick.to_owned(),
            },
            color: None,
            display_color: model::display_color(None, &login),
            badges: Vec::new(),
            text: text.to_owned(),
            emotes: Vec::new(),
            fragments: vec![model::Fragment::Text {
                text: text.to_owned(),
            }],
            is_action: false,
            first_msg: false,
            bits: None,
            reply: None,
            msg_id: None,
            timestamp_ms: now_ms(),
        };
        let published = self.publish(ChatEvent::Message(message));
        if self.inner.config.relay_party
            && let Some(relay) = relay
            && relay.try_send(format!("[party] {nick}: {text}")).is_err()
        {
            tracing::warn!("party relay queue full; message stays in the party only");
        }
        Ok(published)
    }
}

/// Checks a party message's nickname and text; returns them trimmed.
pub fn validate<'a>(nick: &'a str, text: &'a str) -> Result<(&'a str, &'a str), PostError> {
    let nick = nick.trim();
    let nick_chars = nick.chars().count();
    if !(2..=25).contains(&nick_chars) || !nick.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(PostError::BadNick(nick.to_owned()));
    }
    let text = text.trim();
    if text.is_empty() {
        return Err(PostError::Empty);
    }
    let chars = text.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(PostError::TooLong(chars));
    }
    Ok((nick, text))
}

/// Where a backlogged event came from (notices only come from Twitch).
fn origin(event: &ChatEvent) -> Origin {
    match event {
        ChatEvent::Message(m) => m.origin,
        _ => Origin::Twitch,
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

/// Milliseconds since the epoch, the unit of Twitch's `tmi-sent-ts`.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn party_id() -> String {
    let mut bytes = [0u8; 12];
    // Ids only need to be unique within the party; a failed RNG falls back to the clock.
    if getrandom::fill(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&now_ms().to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("party-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Clear, ClearKind, Delete};

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
}
