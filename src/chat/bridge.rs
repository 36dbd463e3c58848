//! The Twitch IRC link: joins one channel with `twitch-irc`, turns its lines into chat
//! events for the hub, reports the link state, and relays party messages to Twitch under
//! Twitch's send limits.
//!
//! `twitch-irc` reconnects and rejoins by itself; this module adds what it does not do:
//! a configurable server address (its TCP transport hard-codes Twitch's host), backoff
//! between failed attempts, a link state the page can show, and send throttling.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use twitch_irc::message::ServerMessage;
use twitch_irc::transport::Transport;
use twitch_irc::transport::tcp::{MakeConnection, TCPTransport, TCPTransportConnectError, TLS};
use twitch_irc::{ClientConfig, TwitchIRCClient};

// Where it always was, for the modules that take a token from here.
pub use super::login::Secret;
use super::login::{LiveCredentials, LiveToken};
use super::model::{self, Connection, RoomModes};
use super::{Chat, ChatEvent};
use crate::shutdown::Shutdown;
use crate::util::lock::{Locked, RwLocked};

/// Twitch's window for counting sent messages.
pub const SEND_WINDOW: Duration = Duration::from_secs(30);
/// Messages per window for a normal account.
pub const SEND_LIMIT_USER: usize = 20;
/// Messages per window when the account is a moderator or the broadcaster.
pub const SEND_LIMIT_MOD: usize = 100;
/// Relayed messages waiting for a send slot; beyond this they stay in the party only.
pub const RELAY_QUEUE: usize = 200;
/// How often the link state is checked against what the client has joined.
const STATE_POLL: Duration = Duration::from_millis(250);

/// What the bridge connects to and as whom.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Channel login, without `#`.
    pub channel: String,
    /// Login and token to send with; `None` reads anonymously (`justinfan…`). The token is
    /// read again for each new connection, so a refreshed one is used from the next on.
    pub credentials: Option<(String, LiveToken)>,
    /// Plain-TCP IRC server to use instead of Twitch (tests, `bench chat`).
    pub irc_addr: Option<SocketAddr>,
}

/// The running bridge; dropping it, or cancelling the token it was started with,
/// disconnects.
pub struct Bridge {
    /// Ends the link when the handle is dropped.
    _stop: tokio_util::sync::DropGuard,
}

impl Bridge {
    /// Starts the link in the background. Errors come out as link state and logs, never as
    /// a dead task: the client retries until shutdown, or until the bridge is dropped.
    pub fn start(config: BridgeConfig, chat: Chat, shutdown: &Shutdown) -> Bridge {
        // Its own signal, so dropping the handle ends the link as it always did.
        let shutdown = shutdown.child();
        let stop = shutdown.token();
        let (relay_tx, relay_rx) = mpsc::channel(RELAY_QUEUE);
        if config.credentials.is_some() {
            chat.set_relay(relay_tx);
        }
        let credentials = match &config.credentials {
            Some((login, token)) => LiveCredentials {
                login: login.clone(),
                token: token.clone(),
            },
            None => LiveCredentials::anonymous(),
        };
        let _stop = stop.clone().drop_guard();
        match config.irc_addr {
            Some(addr) => {
                set_irc_addr(addr);
                shutdown.spawn(
                    "twitch-bridge",
                    run::<TCPTransport<Backoff<PlainAddr>>>(
                        config,
                        credentials,
                        chat,
                        relay_rx,
                        stop,
                    ),
                )
            }
            None => shutdown.spawn(
                "twitch-bridge",
                run::<TCPTransport<Backoff<TLS>>>(config, credentials, chat, relay_rx, stop),
            ),
        };
        Bridge { _stop }
    }
}

async fn run<T: Transport>(
    config: BridgeConfig,
    credentials: LiveCredentials,
    chat: Chat,
    mut relay_rx: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    let login = credentials.login.clone();
    let channel = config.channel.to_lowercase();
    let mut client_config = ClientConfig::new_simple(credentials);
    // One connection, one channel: Twitch's connection-rate limit is far away, and the
    // `Backoff` connector slows down repeated failures, so reconnect soon after a drop.
    client_config.new_connection_every = Duration::from_millis(500);
    // twitch-irc opens another connection once 5 sends wait on one (it guesses 150 ms per
    // send); that would reorder relayed messages. The limiter below does the pacing.
    client_config.max_waiting_messages_per_connection = RELAY_QUEUE;
    let (mut incoming, client) = TwitchIRCClient::<T, LiveCredentials>::new(client_config);
    chat.publish(ChatEvent::Connection(Connection::Connecting));
    if let Err(e) = client.join(channel.clone()) {
        tracing::error!("cannot join Twitch channel {channel:?}: {e}");
        return;
    }
    tracing::info!(channel, "joining Twitch chat");
    let mut state = Connection::Connecting;
    let mut modes = RoomModes::default();
    let mut limiter = SendLimiter::new(SEND_LIMIT_USER);
    let mut queue: VecDeque<String> = VecDeque::new();
    let mut relay_closed = false;
    let mut poll = tokio::time::interval(STATE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Messages sent while disconnected would pile up inside twitch-irc, which opens more
        // connections for them; hold them here until the link is back.
        let next_send = if queue.is_empty() || state != Connection::Connected {
            None
        } else {
            Some(limiter.next_slot())
        };
        tokio::select! {
            () = stop.cancelled() => {
                tracing::info!(channel, "leaving Twitch chat");
                return;
            }
            message = incoming.recv() => {
                let Some(message) = message else {
                    tracing::error!("twitch-irc client stopped; chat link is down");
                    set_state(&chat, &mut state, Connection::Reconnecting);
                    return;
                };
                match &message {
                    ServerMessage::Reconnect(_) => set_state(&chat, &mut state, Connection::Reconnecting),
                    ServerMessage::Join(j) if j.user_login == login => {
                        set_state(&chat, &mut state, Connection::Connected);
                    }
                    ServerMessage::UserState(u) => {
                        let moderator = u.badges.iter().any(|b| b.name == "moderator" || b.name == "broadcaster");
                        limiter.set_limit(if moderator { SEND_LIMIT_MOD } else { SEND_LIMIT_USER });
                    }
                    _ => {}
                }
                match model::from_twitch(&message, &modes) {
                    Some(event) => {
                        if let ChatEvent::RoomState(next) = &event {
                            modes = next.modes.clone();
                        }
                        chat.receive_twitch(event);
                    }
                    None => tracing::trace!(command = message.source().command, "not shown in chat"),
                }
            }
            _ = poll.tick() => {
                let (_, joined) = client.get_channel_status(channel.clone()).await;
                if joined {
                    set_state(&chat, &mut state, Connection::Connected);
                } else if state == Connection::Connected {
                    set_state(&chat, &mut state, Connection::Reconnecting);
                }
            }
            // Without a sending login nobody holds the sender: a closed channel would wake
            // this loop forever, so the branch is off once it is closed.
            text = relay_rx.recv(), if !relay_closed => {
                match text {
                    Some(text) if queue.len() < RELAY_QUEUE => queue.push_back(text),
                    Some(_) => tracing::warn!("relay to Twitch is {RELAY_QUEUE} messages behind; dropping one"),
                    None => relay_closed = true,
                }
            }
            () = sleep_until(next_send) => {
                if let Some(text) = queue.pop_front() {
                    limiter.record();
                    // `privmsg`, not `say`: `say` prefixes ". " to defuse commands, and a
                    // relayed line starts with "[party]", which is never a command.
                    let text: String = text.chars().take(super::MAX_MESSAGE_CHARS).collect();
                    if let Err(e) = client.privmsg(channel.clone(), text).await {
                        tracing::warn!("relay to Twitch failed: {e}");
                    }
                }
            }
        }
    }
}

/// Publishes a link state change (and only a change).
fn set_state(chat: &Chat, state: &mut Connection, next: Connection) {
    if *state != next {
        tracing::info!("Twitch chat: {next:?}");
        *state = next;
        chat.publish(ChatEvent::Connection(next));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Twitch counts sent messages over a sliding 30 s window; going over locks the account
/// out for 30 minutes. A bucket whose every spent token returns exactly one window later
/// can never exceed the window (a classic refilling bucket with burst = limit can: a full
/// burst plus the refill lands more than `limit` in one window).
#[derive(Debug)]
pub struct SendLimiter {
    limit: usize,
    sent: VecDeque<Instant>,
}

impl SendLimiter {
    /// A limiter for `limit` messages per [`SEND_WINDOW`].
    pub fn new(limit: usize) -> SendLimiter {
        SendLimiter {
            limit,
            sent: VecDeque::new(),
        }
    }

    /// Changes the limit, e.g. when the account turns out to be a moderator.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    /// The earliest time the next message may go.
    pub fn next_slot(&mut self) -> Instant {
        let now = Instant::now();
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= SEND_WINDOW)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.limit {
            now
        } else {
            self.sent[self.sent.len() - self.limit] + SEND_WINDOW
        }
    }

    /// Marks one message as sent now.
    pub fn record(&mut self) {
        self.sent.push_back(Instant::now());
    }
}

static IRC_ADDR: RwLock<Option<SocketAddr>> = RwLock::new(None);

/// `twitch-irc` builds connections from a static constructor, so the address it connects
/// to is process-wide: one party, one upstream. (Tests share one test server for the same
/// reason.)
fn set_irc_addr(addr: SocketAddr) {
    *IRC_ADDR.write_locked() = Some(addr);
}

/// Plain TCP to the address given with `--twitch-irc-addr`.
pub struct PlainAddr;

#[async_trait]
impl MakeConnection for PlainAddr {
    type Socket = TcpStream;

    async fn new_socket() -> Result<TcpStream, TCPTransportConnectError> {
        let addr = *IRC_ADDR.read_locked();
        let addr = addr.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no IRC address set")
        })?;
        Ok(TcpStream::connect(addr).await?)
    }
}

/// Waits before retrying after failed connection attempts, doubling the wait up to
/// [`MAX_BACKOFF`], so a dead or unreachable server is not hammered (`twitch-irc` on its own
/// retries at a fixed pace forever). A RECONNECT or a drop after a working connection
/// retries at once.
pub struct Backoff<C>(std::marker::PhantomData<C>);

/// Longest wait between attempts; below the client's 20 s connect timeout.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Connection attempts that failed in a row, process-wide like the address.
static FAILURES: Mutex<u32> = Mutex::new(0);

/// The wait before the next attempt after `failures` failed ones in a row.
fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => (Duration::from_millis(250) * 2u32.saturating_pow(n.min(16))).min(MAX_BACKOFF),
    }
}

#[async_trait]
impl<C: MakeConnection + Send + Sync> MakeConnection for Backoff<C> {
    type Socket = C::Socket;

    async fn new_socket() -> Result<C::Socket, TCPTransportConnectError> {
        let wait = backoff(*FAILURES.locked());
        if !wait.is_zero() {
            tracing::info!("reconnecting to Twitch chat in {:.1} s", wait.as_secs_f32());
            tokio::time::sleep(wait).await;
        }
        let result = C::new_socket().await;
        let mut failures = FAILURES.locked();
        match &result {
            Ok(_) => *failures = 0,
            Err(e) => {
                *failures = failures.saturating_add(1);
                tracing::warn!("cannot connect to Twitch chat: {e}");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_never_lets_more_than_the_limit_into_a_window() {
        let mut l = SendLimiter::new(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(l.next_slot() <= Instant::now());
            l.record();
        }
        let next = l.next_slot();
        assert!(next >= start + SEND_WINDOW);
        assert!(next <= Instant::now() + SEND_WINDOW);
        l.set_limit(SEND_LIMIT_MOD);
        assert!(l.next_slot() <= Instant::now());
    }

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("oauth:abcdef");
        assert_eq!(format!("{s:?}"), "Secret(…)");
        assert_eq!(s.expose(), "abcdef");
    }
}
