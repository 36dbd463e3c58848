//! A stand-in for Twitch chat (TMI) on 127.0.0.1, for tests and benchmarks.
//!
//! Twitch itself can never be reached from tests, yet the chat bridge has to be exercised
//! through the real `twitch-irc` client, so this server speaks enough of Twitch's IRC
//! dialect for that client to log in, join, receive messages and reconnect.
//! See <https://dev.twitch.tv/docs/irc/>.
//!
//! Everything a test does addresses a channel, because one server is shared by every test
//! of the process (`twitch-irc`'s transport address is process-global); tests stay
//! independent by each using its own channel name. Channel names are compared without the
//! leading `#` and case-insensitively, as Twitch logins are.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

/// Longest client line accepted; Twitch allows 8 KiB of tags plus a 500-character message,
/// so anything far beyond is a broken client and is disconnected rather than buffered.
const MAX_LINE: u64 = 64 * 1024;

/// How long `reconnect` lets a connection drain its queue before cutting it, like Twitch,
/// which closes shortly after RECONNECT whether or not the client has read everything.
const RECONNECT_GRACE: Duration = Duration::from_secs(2);

/// How long `drop_connections` waits for the sockets to be gone, so a test that acts
/// right after it sees the connections already closed.
const DROP_WAIT: Duration = Duration::from_secs(2);

/// Handle to a running test server; clones share the same server.
///
/// A test keeps a handle to steer what "Twitch" sends to its channel and to check what its
/// code sent back.
#[derive(Clone)]
pub struct TestServer {
    inner: Arc<Inner>,
}

/// State shared by the handles, the accept loop and the connection tasks.
struct Inner {
    addr: SocketAddr,
    state: Mutex<State>,
    /// Woken on every JOIN, PART and received PRIVMSG, so waiters need not poll.
    changed: Notify,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    conns: HashMap<u64, Conn>,
    channels: HashMap<String, Channel>,
}

/// Per-channel test configuration and observations; it outlives connections so a test
/// can configure a channel before its client connects and count rejoins afterwards.
#[derive(Default)]
struct Channel {
    /// Connections currently joined, by id.
    members: HashSet<u64>,
    joins: usize,
    join_attempts: usize,
    refuse: bool,
    badges: String,
    received: Vec<Received>,
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

/// What the routing side keeps of a connection.
struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    kill: watch::Sender<bool>,
    done: watch::Receiver<bool>,
    joined: HashSet<String>,
}

/// Work for a connection's writer task.
enum Out {
    /// Bytes to write as they are (already CRLF-terminated).
    Data(Bytes),
    /// Flush what was queued before, then close the socket.
    Close,
}

/// Whether the reader keeps going after a line.
enum Flow {
    Continue,
    Stop,
}

impl TestServer {
    /// Starts a server on an ephemeral port of 127.0.0.1 on the current tokio runtime.
    ///
    /// A test that wants a private server (raw-socket tests) uses this; it lives as long
    /// as that runtime. Tests using `twitch-irc` need [`TestServer::shared`] instead.
    pub async fn start() -> io::Result<TestServer> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a server on `addr` (for `cowatch twitch-replay`, where a party on another
    /// terminal connects to a known port).
    pub async fn start_on(addr: SocketAddr) -> io::Result<TestServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            addr,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(accept_loop(Arc::clone(&inner), listener));
        tracing::debug!(%addr, "TMI test server listening");
        Ok(TestServer { inner })
    }

    /// The address clients connect to (plain TCP, no TLS).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
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

    /// Waits until at least one connection has joined `channel`; false on timeout.
    ///
    /// Lets a test send only once the client is there to receive, instead of sleeping.
    pub async fn wait_joined(&self, channel: &str, timeout: Duration) -> bool {
        let key = channel_key(channel);
        self.wait_until(timeout, |state| {
            state
                .channels
                .get(&key)
                .is_some_and(|c| !c.members.is_empty())
        })
        .await
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

    /// Sends one raw line (without CRLF; the server appends it) to every connection
    /// joined to `channel`; returns how many got it.
    ///
    /// The line is sent unchanged, whatever channel it names inside, so captures of real
    /// Twitch traffic can be replayed as they are; `channel` only routes it.
    pub async fn send(&self, channel: &str, line: &str) -> usize {
        let line = line.trim_end_matches(['\r', '\n']);
        let mut buf = BytesMut::with_capacity(line.len() + 2);
        buf.put_slice(line.as_bytes());
        buf.put_slice(b"\r\n");
        self.route(channel, buf.freeze())
    }

    /// Sends many lines in order as one buffer, so each connection gets them with the
    /// fewest syscalls (one write and flush per batch); returns how many connections got
    /// them. Made for benchmarks replaying thousands of lines faster than real time.
    pub async fn send_batch(&self, channel: &str, lines: &[String]) -> usize {
        let len = lines.iter().map(|l| l.len() + 2).sum();
        let mut buf = BytesMut::with_capacity(len);
        for line in lines {
            buf.put_slice(line.trim_end_matches(['\r', '\n']).as_bytes());
            buf.put_slice(b"\r\n");
        }
        self.route(channel, buf.freeze())
    }

    /// Sends `:tmi.twitch.tv RECONNECT` to the channel's connections, then closes them,
    /// as Twitch does before a restart; returns once they are closed.
    ///
    /// The connections stop counting as joined at once, so [`TestServer::wait_joined`]
    /// afterwards waits for the client's rejoin.
    pub async fn reconnect(&self, channel: &str) {
        let line = Bytes::from_static(b":tmi.twitch.tv RECONNECT\r\n");
        let conns = self.detach(channel, |conn| {
            // A closed queue means the writer is already gone: nothing left to say.
            let _ = conn.tx.send(Out::Data(line.clone()));
            let _ = conn.tx.send(Out::Close);
        });
        tracing::debug!(channel, count = conns.len(), "RECONNECT");
        for (kill, mut done) in conns {
            let timed_out = tokio::time::timeout(RECONNECT_GRACE, done.wait_for(|d| *d))
                .await
                .is_err();
            if timed_out {
                // A client too slow to read its queue gets cut, as Twitch would.
                kill.send_replace(true);
                let _ = tokio::time::timeout(DROP_WAIT, done.wait_for(|d| *d)).await;
            }
        }
    }

    /// Closes the channel's connections abruptly without a word (no RECONNECT, queued
    /// lines discarded), to test the client's recovery from a lost connection.
    pub async fn drop_connections(&self, channel: &str) {
        let conns = self.detach(channel, |conn| {
            conn.kill.send_replace(true);
        });
        tracing::debug!(channel, count = conns.len(), "dropping connections");
        for (_, mut done) in conns {
            let _ = tokio::time::timeout(DROP_WAIT, done.wait_for(|d| *d)).await;
        }
    }

    /// While set, a connection that JOINs `channel` is closed at once, to test backoff.
    ///
    /// Per channel, not global, because tests share the server: connections are still
    /// accepted and logged in, only the JOIN of this channel gets the socket closed.
    pub fn set_refuse_joins(&self, channel: &str, refuse: bool) {
        let mut state = self.inner.lock();
        state
            .channels
            .entry(channel_key(channel))
            .or_default()
            .refuse = refuse;
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
        let key = channel_key(channel);
        self.wait_until(timeout, |state| {
            state
                .channels
                .get(&key)
                .is_some_and(|c| c.received.len() >= count)
        })
        .await
    }

    /// USERSTATE badges sent to joiners of `channel` (e.g. `"moderator/1"`; default none),
    /// so a test can make the bot a moderator, subscriber or broadcaster there.
    ///
    /// The `mod`, `subscriber` and `user-type` tags follow from the badges, as on Twitch.
    /// Applies to later JOINs only.
    pub fn set_bot_badges(&self, channel: &str, badges: &str) {
        let mut state = self.inner.lock();
        state
            .channels
            .entry(channel_key(channel))
            .or_default()
            .badges = badges.to_owned();
    }

    fn with_channel<R: Default>(&self, channel: &str, f: impl FnOnce(&Channel) -> R) -> R {
        let state = self.inner.lock();
        state
            .channels
            .get(&channel_key(channel))
            .map(f)
            .unwrap_or_default()
    }

    /// Enqueues `bytes` to every connection joined to `channel`.
    fn route(&self, channel: &str, bytes: Bytes) -> usize {
        let state = self.inner.lock();
        let Some(chan) = state.channels.get(&channel_key(channel)) else {
            return 0;
        };
        chan.members
            .iter()
            .filter_map(|id| state.conns.get(id))
            .filter(|conn| conn.tx.send(Out::Data(bytes.clone())).is_ok())
            .count()
    }

    /// Takes the channel's connections out of routing (for every channel they joined,
    /// since their socket is going away), applies `f` to each, and returns what is needed
    /// to cut them and wait for them.
    fn detach(
        &self,
        channel: &str,
        f: impl Fn(&Conn),
    ) -> Vec<(watch::Sender<bool>, watch::Receiver<bool>)> {
        let mut state = self.inner.lock();
        let ids: Vec<u64> = state
            .channels
            .get(&channel_key(channel))
            .map(|c| c.members.iter().copied().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(conn) = state.conns.get_mut(&id) else {
                continue;
            };
            f(conn);
            out.push((conn.kill.clone(), conn.done.clone()));
            let joined = std::mem::take(&mut conn.joined);
            for name in joined {
                if let Some(c) = state.channels.get_mut(&name) {
                    c.members.remove(&id);
                }
            }
        }
        drop(state);
        self.inner.changed.notify_waiters();
        out
    }

    async fn wait_until(&self, timeout: Duration, cond: impl Fn(&State) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            // Registered before checking, so a change between the check and the wait
            // still wakes us.
            notified.as_mut().enable();
            if cond(&self.inner.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond(&self.inner.lock());
            }
        }
    }
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Locks the state; a panicking test thread must not take the other tests down with
    /// it, so poisoning is ignored (the state is only ever left consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a closed connection, so nothing is routed to it any more.
    fn unregister(&self, id: u64) {
        let mut state = self.lock();
        if let Some(conn) = state.conns.remove(&id) {
            for name in conn.joined {
                if let Some(c) = state.channels.get_mut(&name) {
                    c.members.remove(&id);
                }
            }
        }
        drop(state);
        self.changed.notify_waiters();
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

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id, %peer, "TMI test connection");
                tokio::spawn(serve_connection(Arc::clone(&inner), stream, id));
            }
            Err(err) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::debug!(%err, "TMI test server accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve_connection(inner: Arc<Inner>, stream: TcpStream, id: u64) {
    // Lines are small and latency-sensitive (benchmarks measure it).
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let (kill_tx, kill_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    inner.lock().conns.insert(
        id,
        Conn {
            tx: tx.clone(),
            kill: kill_tx.clone(),
            done: done_rx,
            joined: HashSet::new(),
        },
    );
    let writer = tokio::spawn(write_loop(write_half, rx, kill_tx.clone()));
    read_loop(&inner, id, read_half, &tx, kill_rx).await;
    inner.unregister(id);
    // With every sender gone the writer drains what is queued and closes.
    drop(tx);
    let _ = writer.await;
    done_tx.send_replace(true);
    tracing::debug!(id, "TMI test connection closed");
}

/// Per-connection session state of the reader.
struct Session {
    id: u64,
    pass: Option<String>,
    login: Option<String>,
}

async fn read_loop(
    inner: &Inner,
    id: u64,
    read_half: OwnedReadHalf,
    tx: &mpsc::UnboundedSender<Out>,
    mut kill: watch::Receiver<bool>,
) {
    let mut reader = BufReader::new(read_half);
    let mut buf = Vec::with_capacity(1024);
    let mut session = Session {
        id,
        pass: None,
        login: None,
    };
    loop {
        buf.clear();
        let mut limited = (&mut reader).take(MAX_LINE);
        let read = tokio::select! {
            biased;
            _ = kill.wait_for(|k| *k) => return,
            read = limited.read_until(b'\n', &mut buf) => read,
        };
        match read {
            Ok(0) => return,
            Ok(_) if !buf.ends_with(b"\n") && buf.len() as u64 >= MAX_LINE => {
                tracing::debug!(id, "TMI test client line too long, closing");
                return;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(id, %err, "TMI test client read failed");
                return;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            continue;
        }
        tracing::trace!(id, line, "TMI test server <");
        if let Flow::Stop = handle_line(inner, &mut session, tx, line) {
            return;
        }
    }
}

fn handle_line(
    inner: &Inner,
    session: &mut Session,
    tx: &mpsc::UnboundedSender<Out>,
    line: &str,
) -> Flow {
    let Some((command, params)) = parse_line(line) else {
        return Flow::Continue;
    };
    let reply = |text: String| {
        let _ = tx.send(Out::Data(Bytes::from(text)));
    };
    match command.to_ascii_uppercase().as_str() {
        "CAP"
            if params
                .first()
                .is_some_and(|p| p.eq_ignore_ascii_case("REQ")) =>
        {
            let caps = params.get(1).copied().unwrap_or_default();
            reply(format!(":tmi.twitch.tv CAP * ACK :{caps}\r\n"));
        }
        "PASS" => session.pass = params.first().map(|p| (*p).to_owned()),
        "NICK" => {
            let Some(login) = params.first().map(|l| l.to_ascii_lowercase()) else {
                return Flow::Continue;
            };
            let anonymous = login.starts_with("justinfan");
            if !anonymous
                && session
                    .pass
                    .as_deref()
                    .is_some_and(|p| !p.starts_with("oauth:"))
            {
                tracing::debug!(id = session.id, login, "TMI test login refused");
                reply(":tmi.twitch.tv NOTICE * :Login authentication failed\r\n".to_owned());
                let _ = tx.send(Out::Close);
                return Flow::Stop;
            }
            reply(welcome(&login));
            session.login = Some(login);
        }
        "JOIN" => {
            let Some(login) = session.login.clone() else {
                return Flow::Continue;
            };
            let targets = params.first().copied().unwrap_or_default();
            for name in targets.split(',').filter(|n| n.starts_with('#')) {
                if let Flow::Stop = join(inner, session.id, &login, tx, name) {
                    return Flow::Stop;
                }
            }
        }
        "PART" => {
            let Some(login) = session.login.as_deref() else {
                return Flow::Continue;
            };
            let targets = params.first().copied().unwrap_or_default();
            for name in targets.split(',').filter(|n| n.starts_with('#')) {
                let key = channel_key(name);
                let mut state = inner.lock();
                if let Some(conn) = state.conns.get_mut(&session.id) {
                    conn.joined.remove(&key);
                }
                if let Some(c) = state.channels.get_mut(&key) {
                    c.members.remove(&session.id);
                }
                reply(format!(
                    ":{login}!{login}@{login}.tmi.twitch.tv PART #{key}\r\n"
                ));
                drop(state);
                inner.changed.notify_waiters();
            }
        }
        "PING" => match params.last() {
            Some(arg) => reply(format!(":tmi.twitch.tv PONG tmi.twitch.tv :{arg}\r\n")),
            None => reply(":tmi.twitch.tv PONG tmi.twitch.tv\r\n".to_owned()),
        },
        "PRIVMSG" => {
            let (Some(login), Some(target), Some(text)) =
                (session.login.as_deref(), params.first(), params.get(1))
            else {
                return Flow::Continue;
            };
            let received = Received {
                login: login.to_owned(),
                text: (*text).to_owned(),
                at: Instant::now(),
            };
            inner
                .lock()
                .channels
                .entry(channel_key(target))
                .or_default()
                .received
                .push(received);
            inner.changed.notify_waiters();
        }
        _ => {}
    }
    Flow::Continue
}

/// Handles the JOIN of one channel: the replies Twitch sends, or the refusal.
fn join(inner: &Inner, id: u64, login: &str, tx: &mpsc::UnboundedSender<Out>, name: &str) -> Flow {
    let key = channel_key(name);
    let mut state = inner.lock();
    let chan = state.channels.entry(key.clone()).or_default();
    chan.join_attempts += 1;
    if chan.refuse {
        drop(state);
        tracing::debug!(id, channel = key, "TMI test JOIN refused, closing");
        return Flow::Stop;
    }
    chan.joins += 1;
    let badges = chan.badges.clone();
    let has = |badge: &str| badges.split(',').any(|b| b.starts_with(badge));
    let moderator = has("moderator/");
    let subscriber = has("subscriber/");
    let user_type = if moderator { "mod" } else { "" };
    let text = format!(
        ":{login}!{login}@{login}.tmi.twitch.tv JOIN #{key}\r\n\
         :{login}.tmi.twitch.tv 353 {login} = #{key} :{login}\r\n\
         :{login}.tmi.twitch.tv 366 {login} #{key} :End of /NAMES list\r\n\
         @badge-info=;badges={badges};color=;display-name={login};emote-sets=0;mod={};subscriber={};user-type={user_type} :tmi.twitch.tv USERSTATE #{key}\r\n\
         @emote-only=0;followers-only=-1;r9k=0;room-id=12345;slow=0;subs-only=0 :tmi.twitch.tv ROOMSTATE #{key}\r\n",
        u8::from(moderator),
        u8::from(subscriber),
    );
    // Queued and made a member under one lock, so a `send` that sees the member is
    // ordered after the JOIN replies.
    let _ = tx.send(Out::Data(Bytes::from(text)));
    chan.members.insert(id);
    if let Some(conn) = state.conns.get_mut(&id) {
        conn.joined.insert(key);
    }
    drop(state);
    inner.changed.notify_waiters();
    Flow::Continue
}

fn welcome(login: &str) -> String {
    format!(
        ":tmi.twitch.tv 001 {login} :Welcome, GLHF!\r\n\
         :tmi.twitch.tv 002 {login} :Your host is tmi.twitch.tv\r\n\
         :tmi.twitch.tv 003 {login} :This server is rather new\r\n\
         :tmi.twitch.tv 004 {login} :-\r\n\
         :tmi.twitch.tv 375 {login} :-\r\n\
         :tmi.twitch.tv 372 {login} :You are in a maze of twisty passages, all alike.\r\n\
         :tmi.twitch.tv 376 {login} :>\r\n"
    )
}

/// Writes the connection's queue, batching whatever is queued into one flush.
async fn write_loop(
    write_half: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    kill: watch::Sender<bool>,
) {
    let mut kill_rx = kill.subscribe();
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);
    let result = tokio::select! {
        biased;
        _ = kill_rx.wait_for(|k| *k) => Ok(()),
        result = pump(&mut writer, &mut rx) => result,
    };
    if let Err(err) = result {
        tracing::debug!(%err, "TMI test client write failed");
    }
    // Whatever ended the writer ends the connection: stop the reader too.
    kill.send_replace(true);
}

async fn pump(
    writer: &mut BufWriter<OwnedWriteHalf>,
    rx: &mut mpsc::UnboundedReceiver<Out>,
) -> io::Result<()> {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Data(bytes) => writer.write_all(&bytes).await?,
                Out::Close => {
                    writer.flush().await?;
                    return writer.shutdown().await;
                }
            }
            next = rx.try_recv().ok();
        }
        writer.flush().await?;
    }
    writer.shutdown().await
}

/// Splits a client line into command and parameters, ignoring tags and prefix.
fn parse_line(line: &str) -> Option<(&str, Vec<&str>)> {
    let mut rest = line;
    if rest.starts_with('@') {
        rest = rest.split_once(' ').map_or("", |(_, r)| r);
    }
    rest = rest.trim_start_matches(' ');
    if rest.starts_with(':') {
        rest = rest.split_once(' ').map_or("", |(_, r)| r);
    }
    let mut params = Vec::new();
    let mut command = None;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if command.is_some()
            && let Some(trailing) = rest.strip_prefix(':')
        {
            params.push(trailing);
            break;
        }
        let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_none() {
            command = Some(word);
        } else {
            params.push(word);
        }
        rest = tail;
    }
    command.map(|c| (c, params))
}

/// Channel map key: Twitch channel names are logins, so `#Foo`, `foo` and `#foo` match.
fn channel_key(channel: &str) -> String {
    channel.trim_start_matches('#').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    const STEP: Duration = Duration::from_secs(5);

    /// A bare IRC client, to see exactly what the server puts on the wire.
    struct RawClient {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl RawClient {
        async fn connect(server: &TestServer) -> RawClient {
            let stream = TcpStream::connect(server.addr()).await.expect("connect");
            let (read_half, writer) = stream.into_split();
            RawClient {
                reader: BufReader::new(read_half),
                writer,
            }
        }

        async fn send(&mut self, line: &str) {
            let line = format!("{line}\r\n");
            self.writer.write_all(line.as_bytes()).await.expect("write");
        }

        /// The next line without CRLF, or None at EOF.
        async fn line(&mut self) -> Option<String> {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, self.reader.read_line(&mut line))
                .await
                .expect("timed out waiting for a line")
                .ok()?;
            if n == 0 {
                return None;
            }
            assert!(line.ends_with("\r\n"), "line not CRLF-terminated: {line:?}");
            line.truncate(line.len() - 2);
            Some(line)
        }

        async fn expect(&mut self, want: &str) {
            assert_eq!(self.line().await.as_deref(), Some(want));
        }

        async fn expect_eof(&mut self) {
            assert_eq!(self.line().await, None);
        }

        /// Logs in and skips the welcome.
        async fn login(server: &TestServer, login: &str) -> RawClient {
            let mut client = RawClient::connect(server).await;
            client.send("PASS oauth:secret").await;
            client.send(&format!("NICK {login}")).await;
            for _ in 0..7 {
                client.line().await.expect("welcome line");
            }
            client
        }

        /// Joins and skips the five JOIN replies.
        async fn join(&mut self, channel: &str) {
            self.send(&format!("JOIN #{channel}")).await;
            for _ in 0..5 {
                self.line().await.expect("JOIN reply");
            }
        }
    }

    #[tokio::test]
    async fn handshake_replies_in_order() {
        let server = TestServer::start().await.expect("start");
        server.set_bot_badges("hs_b", "moderator/1");
        let mut c = RawClient::connect(&server).await;
        c.send("CAP REQ :twitch.tv/commands twitch.tv/tags").await;
        c.send("PASS oauth:abcdef").await;
        c.send("NICK HsBot").await;
        c.send("JOIN #hs_a,#hs_b").await;
        c.expect(":tmi.twitch.tv CAP * ACK :twitch.tv/commands twitch.tv/tags")
            .await;
        c.expect(":tmi.twitch.tv 001 hsbot :Welcome, GLHF!").await;
        c.expect(":tmi.twitch.tv 002 hsbot :Your host is tmi.twitch.tv")
            .await;
        c.expect(":tmi.twitch.tv 003 hsbot :This server is rather new")
            .await;
        c.expect(":tmi.twitch.tv 004 hsbot :-").await;
        c.expect(":tmi.twitch.tv 375 hsbot :-").await;
        c.expect(":tmi.twitch.tv 372 hsbot :You are in a maze of twisty passages, all alike.")
            .await;
        c.expect(":tmi.twitch.tv 376 hsbot :>").await;
        for (chan, badges, moderator, user_type) in
            [("hs_a", "", 0, ""), ("hs_b", "moderator/1", 1, "mod")]
        {
            c.expect(&format!(":hsbot!hsbot@hsbot.tmi.twitch.tv JOIN #{chan}"))
                .await;
            c.expect(&format!(":hsbot.tmi.twitch.tv 353 hsbot = #{chan} :hsbot"))
                .await;
            c.expect(&format!(
                ":hsbot.tmi.twitch.tv 366 hsbot #{chan} :End of /NAMES list"
            ))
            .await;
            c.expect(&format!(
                "@badge-info=;badges={badges};color=;display-name=hsbot;emote-sets=0;\
                 mod={moderator};subscriber=0;user-type={user_type} :tmi.twitch.tv USERSTATE #{chan}"
            ))
            .await;
            c.expect(&format!(
                "@emote-only=0;followers-only=-1;r9k=0;room-id=12345;slow=0;subs-only=0 \
                 :tmi.twitch.tv ROOMSTATE #{chan}"
            ))
            .await;
        }
        assert!(server.wait_joined("#hs_a", STEP).await);
        assert_eq!((server.joins("hs_a"), server.joins("HS_B")), (1, 1));

        c.send("PING :hello there").await;
        c.expect(":tmi.twitch.tv PONG tmi.twitch.tv :hello there")
            .await;
        // What twitch-irc itself sends.
        c.send("PING tmi.twitch.tv").await;
        c.expect(":tmi.twitch.tv PONG tmi.twitch.tv :tmi.twitch.tv")
            .await;
        // Unknown commands are ignored; LF alone ends a line too.
        c.writer
            .write_all(b"WHO #hs_a\nPART #hs_a\n")
            .await
            .expect("write");
        c.expect(":hsbot!hsbot@hsbot.tmi.twitch.tv PART #hs_a")
            .await;
        assert!(!server.wait_joined("hs_a", Duration::ZERO).await);
        assert!(server.wait_joined("hs_b", Duration::ZERO).await);
    }

    #[tokio::test]
    async fn anonymous_login_accepted_bad_pass_refused() {
        let server = TestServer::shared();
        let mut anon = RawClient::connect(&server).await;
        anon.send("PASS SCHMOOPIIE").await;
        anon.send("NICK justinfan12345").await;
        anon.expect(":tmi.twitch.tv 001 justinfan12345 :Welcome, GLHF!")
            .await;

        let mut bad = RawClient::connect(&server).await;
        bad.send("PASS SCHMOOPIIE").await;
        bad.send("NICK somebot").await;
        bad.expect(":tmi.twitch.tv NOTICE * :Login authentication failed")
            .await;
        bad.expect_eof().await;
    }

    #[tokio::test]
    async fn routes_by_channel() {
        let server = TestServer::shared();
        let mut a = RawClient::login(&server, "route_bot_a").await;
        let mut b = RawClient::login(&server, "route_bot_b").await;
        a.join("route_a").await;
        b.join("route_b").await;

        // Sent unchanged, whatever channel the line names.
        let line = "@id=1 :someone!someone@someone.tmi.twitch.tv PRIVMSG #elsewhere :hi a";
        assert_eq!(server.send("route_a", line).await, 1);
        assert_eq!(server.send("#route_b", "marker b").await, 1);
        assert_eq!(server.send("route_nobody", "lost").await, 0);
        a.expect(line).await;
        b.expect("marker b").await;

        let batch: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
        assert_eq!(server.send_batch("route_b", &batch).await, 1);
        for want in &batch {
            b.expect(want).await;
        }
        assert_eq!(server.send("route_a", "marker a").await, 1);
        a.expect("marker a").await;
    }

    #[tokio::test]
    async fn reconnect_sends_reconnect_then_eof() {
        let server = TestServer::shared();
        let mut c = RawClient::login(&server, "reconnect_bot").await;
        c.join("reconnect_chan").await;
        server.send("reconnect_chan", "before").await;
        server.reconnect("reconnect_chan").await;
        c.expect("before").await;
        c.expect(":tmi.twitch.tv RECONNECT").await;
        c.expect_eof().await;
        assert_eq!(server.send("reconnect_chan", "after").await, 0);
        assert!(!server.wait_joined("reconnect_chan", Duration::ZERO).await);

        let mut again = RawClient::login(&server, "reconnect_bot").await;
        again.join("reconnect_chan").await;
        assert_eq!(server.joins("reconnect_chan"), 2);
    }

    #[tokio::test]
    async fn drop_connections_closes_without_a_word() {
        let server = TestServer::shared();
        let mut c = RawClient::login(&server, "drop_bot").await;
        c.join("drop_chan").await;
        server.drop_connections("drop_chan").await;
        c.expect_eof().await;
        assert_eq!(server.send("drop_chan", "after").await, 0);
    }

    #[tokio::test]
    async fn records_received_privmsg_without_echo() {
        let server = TestServer::shared();
        let mut c = RawClient::login(&server, "say_bot").await;
        c.join("say_chan").await;
        c.send("PRIVMSG #say_chan :hello world").await;
        c.send("@reply-parent-msg-id=abc PRIVMSG #Say_Chan :: second")
            .await;
        assert!(server.wait_received("say_chan", 2, STEP).await);
        assert_eq!(
            server.received("say_chan"),
            vec![
                ("say_bot".to_owned(), "hello world".to_owned()),
                ("say_bot".to_owned(), ": second".to_owned()),
            ]
        );
        let timed = server.received_at("say_chan");
        assert!(timed[0].at <= timed[1].at);
        // Not echoed: the next thing the client reads is the PONG.
        c.send("PING :x").await;
        c.expect(":tmi.twitch.tv PONG tmi.twitch.tv :x").await;
    }

    #[tokio::test]
    async fn refused_join_closes_socket() {
        let server = TestServer::shared();
        server.set_refuse_joins("refuse_chan", true);
        let mut c = RawClient::login(&server, "refuse_bot").await;
        c.send("JOIN #refuse_chan").await;
        c.expect_eof().await;
        assert_eq!(server.join_attempts("refuse_chan"), 1);
        assert_eq!(server.joins("refuse_chan"), 0);
        assert!(!server.wait_joined("refuse_chan", Duration::ZERO).await);

        server.set_refuse_joins("refuse_chan", false);
        let mut c = RawClient::login(&server, "refuse_bot").await;
        c.join("refuse_chan").await;
        assert!(server.wait_joined("refuse_chan", STEP).await);
        assert_eq!(server.joins("refuse_chan"), 1);
        assert_eq!(server.join_attempts("refuse_chan"), 2);
    }

    #[tokio::test]
    async fn slow_client_does_not_block_others() {
        let server = TestServer::shared();
        // Never reads: its socket buffers fill up and its writer blocks.
        let mut slow = RawClient::login(&server, "slow_bot").await;
        slow.join("slow_chan").await;
        let mut fast = RawClient::login(&server, "fast_bot").await;
        fast.join("fast_chan").await;

        let big: Vec<String> = (0..2000).map(|i| format!("{i:01000}")).collect();
        let started = Instant::now();
        for _ in 0..20 {
            assert_eq!(server.send_batch("slow_chan", &big).await, 1);
        }
        assert!(started.elapsed() < STEP, "send blocked on a slow client");
        assert_eq!(server.send("fast_chan", "still here").await, 1);
        fast.expect("still here").await;

        // A writer stuck on a full socket can still be cut.
        server.drop_connections("slow_chan").await;
        assert!(!server.wait_joined("slow_chan", Duration::ZERO).await);
    }

    #[test]
    fn parses_client_lines() {
        assert_eq!(
            parse_line("@a=b;c= :nick!u@h PRIVMSG #chan :hi there"),
            Some(("PRIVMSG", vec!["#chan", "hi there"]))
        );
        assert_eq!(parse_line("PING"), Some(("PING", vec![])));
        assert_eq!(parse_line("JOIN  #a,#b"), Some(("JOIN", vec!["#a,#b"])));
        assert_eq!(
            parse_line("PRIVMSG #c :"),
            Some(("PRIVMSG", vec!["#c", ""]))
        );
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("@only-tags"), None);
    }

    mod twitch_irc_client {
        use super::*;
        use async_trait::async_trait;
        use twitch_irc::login::StaticLoginCredentials;
        use twitch_irc::message::ServerMessage;
        use twitch_irc::transport::tcp::{MakeConnection, TCPTransport, TCPTransportConnectError};
        use twitch_irc::{ClientConfig, TwitchIRCClient};

        /// Where `TestConnector` connects; twitch-irc's connector has no instance to carry it.
        static ADDR: OnceLock<SocketAddr> = OnceLock::new();

        /// twitch-irc's TCP transport hard-codes Twitch's hostname; this points it here.
        struct TestConnector;

        #[async_trait]
        impl MakeConnection for TestConnector {
            type Socket = TcpStream;

            async fn new_socket() -> Result<TcpStream, TCPTransportConnectError> {
                let addr = ADDR.get().copied().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotConnected, "no TMI test server")
                })?;
                Ok(TcpStream::connect(addr).await?)
            }
        }

        type Client = TwitchIRCClient<TCPTransport<TestConnector>, StaticLoginCredentials>;

        fn client(
            config: ClientConfig<StaticLoginCredentials>,
        ) -> (tokio::sync::mpsc::UnboundedReceiver<ServerMessage>, Client) {
            let server = TestServer::shared();
            ADDR.get_or_init(|| server.addr());
            Client::new(config)
        }

        /// The next PRIVMSG the client gets, skipping everything else.
        async fn next_privmsg(
            incoming: &mut tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
        ) -> twitch_irc::message::PrivmsgMessage {
            tokio::time::timeout(STEP, async {
                loop {
                    match incoming.recv().await {
                        Some(ServerMessage::Privmsg(msg)) => return msg,
                        Some(_) => {}
                        None => panic!("client closed"),
                    }
                }
            })
            .await
            .expect("timed out waiting for a PRIVMSG")
        }

        #[tokio::test]
        async fn receives_a_real_privmsg() {
            let server = TestServer::shared();
            let (mut incoming, client) = client(ClientConfig::default());
            client.join("wondible".to_owned()).expect("join");
            assert!(server.wait_joined("wondible", STEP).await);
            let line = "@badge-info=;badges=broadcaster/1;color=#1E90FF;display-name=wondible;emotes=;flags=;id=036fe963-8707-44a1-8fb2-e1412343825d;mod=0;room-id=56623426;subscriber=0;tmi-sent-ts=1546013301508;turbo=0;user-id=56623426;user-type= :wondible!wondible@wondible.tmi.twitch.tv PRIVMSG #wondible :test";
            assert_eq!(server.send("wondible", line).await, 1);
            let msg = next_privmsg(&mut incoming).await;
            assert_eq!(msg.sender.login, "wondible");
            assert_eq!(msg.message_text, "test");
            assert_eq!(msg.channel_login, "wondible");
        }

        #[tokio::test]
        async fn says_and_rejoins_after_reconnect() {
            let server = TestServer::shared();
            server.set_bot_badges("tmi_rejoin", "moderator/1");
            let (mut incoming, client) = client(ClientConfig::new_simple(
                StaticLoginCredentials::new("cowatch_bot".to_owned(), Some("token".to_owned())),
            ));
            client.join("tmi_rejoin".to_owned()).expect("join");
            assert!(server.wait_joined("tmi_rejoin", STEP).await);
            let userstate = tokio::time::timeout(STEP, async {
                loop {
                    if let Some(ServerMessage::UserState(msg)) = incoming.recv().await {
                        return msg;
                    }
                }
            })
            .await
            .expect("USERSTATE");
            assert!(userstate.badges.iter().any(|b| b.name == "moderator"));

            client
                .privmsg("tmi_rejoin".to_owned(), "hello chat".to_owned())
                .await
                .expect("privmsg");
            assert!(server.wait_received("tmi_rejoin", 1, STEP).await);
            assert_eq!(
                server.received("tmi_rejoin"),
                vec![("cowatch_bot".to_owned(), "hello chat".to_owned())]
            );

            let started = Instant::now();
            server.reconnect("tmi_rejoin").await;
            assert!(
                server
                    .wait_joined("tmi_rejoin", Duration::from_secs(10))
                    .await
            );
            assert_eq!(server.joins("tmi_rejoin"), 2);
            server
                .send(
                    "tmi_rejoin",
                    "@badge-info=;badges=;color=;display-name=Viewer;emotes=;flags=;id=1;mod=0;room-id=12345;subscriber=0;tmi-sent-ts=1546013301508;turbo=0;user-id=42;user-type= :viewer!viewer@viewer.tmi.twitch.tv PRIVMSG #tmi_rejoin :back",
                )
                .await;
            let msg = next_privmsg(&mut incoming).await;
            assert_eq!(
                (msg.sender.login.as_str(), msg.message_text.as_str()),
                ("viewer", "back")
            );
            eprintln!("rejoined {:?} after RECONNECT", started.elapsed());
        }
    }
}
