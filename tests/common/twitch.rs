//! The tests' Twitch: cowatch's TMI server ([`TmiServer`]) with the controls only tests
//! need, built on its hooks.
//!
//! Twitch itself can never be reached from tests, yet the chat bridge has to be exercised
//! through the real `twitch-irc` client. A test steers what "Twitch" does on its channel
//! (refuse joins, give the bot badges, RECONNECT, drop the connection) and checks what its
//! code sent back.
//!
//! Everything a test does addresses a channel, because one server is shared by every test
//! of the process (`twitch-irc`'s transport address is process-global); tests stay
//! independent by each using its own channel name.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cowatch::tools::replay::tmi::{HangUp, Hooks, Join, TmiServer, channel_key};

/// A TMI server with test controls; clones share the same server. Everything
/// [`TmiServer`] does (address, `send`, `send_batch`, `wait_joined`) is there too.
#[derive(Clone)]
pub struct TestServer {
    server: TmiServer,
    channels: Arc<Channels>,
}

/// A PRIVMSG a client sent to a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Login of the connection that sent it, to tell the bot apart from other clients.
    pub login: String,
    /// The message text (trailing parameter), unchanged.
    pub text: String,
    /// When the server read it, so latency and pacing (rate limits) can be measured.
    pub at: Instant,
}

/// Per-channel settings and observations, kept by the server's hooks. They outlive
/// connections, so a test can configure a channel before its client connects and count
/// rejoins afterwards.
#[derive(Default)]
struct Channels(Mutex<HashMap<String, Channel>>);

#[derive(Default)]
struct Channel {
    joins: usize,
    join_attempts: usize,
    refuse: bool,
    badges: String,
    received: Vec<Received>,
}

impl Channels {
    /// Poisoning is ignored: a panicking test must not take the other tests down with it.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Hooks for Channels {
    fn join(&self, channel: &str, _login: &str) -> Join {
        let mut channels = self.lock();
        let chan = channels.entry(channel.to_owned()).or_default();
        chan.join_attempts += 1;
        if chan.refuse {
            return Join::Refuse;
        }
        chan.joins += 1;
        Join::Accept {
            badges: chan.badges.clone(),
        }
    }

    fn privmsg(&self, channel: &str, login: &str, text: &str) {
        self.lock()
            .entry(channel.to_owned())
            .or_default()
            .received
            .push(Received {
                login: login.to_owned(),
                text: text.to_owned(),
                at: Instant::now(),
            });
    }
}

impl Deref for TestServer {
    type Target = TmiServer;

    fn deref(&self) -> &TmiServer {
        &self.server
    }
}

impl TestServer {
    /// Starts a server on an ephemeral port of 127.0.0.1 on the current tokio runtime.
    ///
    /// A test that wants a private server (raw-socket tests) uses this; it lives as long
    /// as that runtime. Tests using `twitch-irc` need [`TestServer::shared`] instead.
    pub async fn start() -> io::Result<TestServer> {
        let channels = Arc::new(Channels::default());
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let server = TmiServer::with_hooks(addr, channels.clone()).await?;
        Ok(TestServer { server, channels })
    }

    /// Process-wide shared instance, started on first use.
    ///
    /// Tests share one server because `twitch-irc`'s transport address is global to the
    /// process. It runs on its own thread with its own runtime, so it survives the
    /// `#[tokio::test]` runtimes that come and go around it.
    ///
    /// # Panics
    ///
    /// If the server cannot be started at all (no thread, no runtime or no port): there is
    /// nothing a test could do without it.
    pub fn shared() -> TestServer {
        static SHARED: OnceLock<TestServer> = OnceLock::new();
        SHARED
            .get_or_init(|| match start_on_own_thread() {
                Ok(server) => server,
                Err(err) => panic!("cannot start the shared TMI test server: {err}"),
            })
            .clone()
    }

    /// Number of accepted JOINs of this channel so far, so a test can see a rejoin.
    pub fn joins(&self, channel: &str) -> usize {
        self.with_channel(channel, |c| c.joins)
    }

    /// Number of JOINs of this channel so far, refused ones included, so a test can
    /// count the client's attempts while joins are refused (backoff).
    pub fn join_attempts(&self, channel: &str) -> usize {
        self.with_channel(channel, |c| c.join_attempts)
    }

    /// Sends `:tmi.twitch.tv RECONNECT` to the channel's connections, then closes them,
    /// as Twitch does before a restart; returns once they are closed.
    ///
    /// The connections stop counting as joined at once, so `wait_joined` afterwards waits
    /// for the client's rejoin.
    pub async fn reconnect(&self, channel: &str) {
        self.hang_up(channel, HangUp::After(":tmi.twitch.tv RECONNECT"))
            .await;
    }

    /// Closes the channel's connections abruptly without a word (no RECONNECT, queued
    /// lines discarded), to test the client's recovery from a lost connection.
    pub async fn drop_connections(&self, channel: &str) {
        self.hang_up(channel, HangUp::Now).await;
    }

    /// While set, a connection that JOINs `channel` is closed at once, to test backoff.
    ///
    /// Per channel, not global, because tests share the server: connections are still
    /// accepted and logged in, only the JOIN of this channel gets the socket closed.
    pub fn set_refuse_joins(&self, channel: &str, refuse: bool) {
        self.channels
            .lock()
            .entry(channel_key(channel))
            .or_default()
            .refuse = refuse;
    }

    /// USERSTATE badges sent to joiners of `channel` (e.g. `"moderator/1"`; default none),
    /// so a test can make the bot a moderator, subscriber or broadcaster there.
    ///
    /// The `mod`, `subscriber` and `user-type` tags follow from the badges, as on Twitch.
    /// Applies to later JOINs only.
    pub fn set_bot_badges(&self, channel: &str, badges: &str) {
        self.channels
            .lock()
            .entry(channel_key(channel))
            .or_default()
            .badges = badges.to_owned();
    }

    /// PRIVMSGs clients sent to `channel`, as (login, text), oldest first: what the code
    /// under test said in Twitch chat.
    pub fn received(&self, channel: &str) -> Vec<(String, String)> {
        self.with_channel(channel, |c| {
            c.received
                .iter()
                .map(|r| (r.login.clone(), r.text.clone()))
                .collect()
        })
    }

    /// Like [`TestServer::received`], with the time each message arrived, for tests that
    /// check pacing or latency.
    pub fn received_at(&self, channel: &str) -> Vec<Received> {
        self.with_channel(channel, |c| c.received.clone())
    }

    /// Waits until clients have sent at least `count` PRIVMSGs to `channel`; false on
    /// timeout. Saves tests from polling [`TestServer::received`].
    pub async fn wait_received(&self, channel: &str, count: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, || {
            self.with_channel(channel, |c| c.received.len()) >= count
        })
        .await
    }

    fn with_channel<R: Default>(&self, channel: &str, f: impl FnOnce(&Channel) -> R) -> R {
        self.channels
            .lock()
            .get(&channel_key(channel))
            .map(f)
            .unwrap_or_default()
    }
}

/// Starts a server on a thread of its own with its own runtime, independent of whichever
/// test runtime asked for it.
fn start_on_own_thread() -> io::Result<TestServer> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tmi-test-server".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("tmi-test-server")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = tx.send(Err(err));
                    return;
                }
            };
            runtime.block_on(async move {
                let started = TestServer::start().await;
                let ok = started.is_ok();
                let _ = tx.send(started);
                if ok {
                    // Keep the runtime, and with it the server, for the rest of the process.
                    std::future::pending::<()>().await;
                }
            });
        })?;
    rx.recv().map_err(io::Error::other)?
}

/// A Twitch chat line as the bridge would publish it.
pub fn twitch_message(
    id: &str,
    login: &str,
    user_id: &str,
    text: &str,
) -> cowatch::chat::ChatEvent {
    cowatch::chat::ChatEvent::Message(cowatch::chat::model::ChatMessage {
        id: id.into(),
        origin: cowatch::chat::Origin::Twitch,
        channel: "party_host".into(),
        sender: cowatch::chat::model::User {
            id: user_id.into(),
            login: login.into(),
            display_name: login.into(),
        },
        color: None,
        display_color: "#FF7F50".into(),
        badges: Vec::new(),
        text: text.into(),
        emotes: Vec::new(),
        fragments: vec![cowatch::chat::model::Fragment::Text { text: text.into() }],
        is_action: false,
        first_msg: false,
        bits: None,
        reply: None,
        msg_id: None,
        timestamp_ms: cowatch::util::clock::unix_ms(),
    })
}
