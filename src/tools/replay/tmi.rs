//! A Twitch chat (TMI) server on this machine: `cowatch twitch-replay` and `cowatch bench chat`
//! replay captures through it, and the tests build their Twitch stand-in on it.
//!
//! It speaks enough of Twitch's IRC dialect (<https://dev.twitch.tv/docs/irc/>) for the real
//! `twitch-irc` client to log in (anonymously or with an `oauth:` token), request
//! capabilities, join and part channels, answer PINGs, and read whatever lines the server's
//! owner sends to a channel, unchanged. Whoever starts it may decide on each JOIN and hear
//! each PRIVMSG through [`Hooks`], and end a channel's connections with [`TmiServer::hang_up`].
//!
//! Everything addresses a channel; channel names are compared without the leading `#` and
//! case-insensitively, as Twitch logins are ([`channel_key`]).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

/// Longest client line accepted; Twitch allows 8 KiB of tags plus a 500-character message,
/// so anything far beyond is a broken client and is disconnected rather than buffered.
const MAX_LINE: u64 = 64 * 1024;

/// How long [`HangUp::After`] lets a connection drain its queue before cutting it, like
/// Twitch, which closes shortly after RECONNECT whether or not the client has read everything.
const HANG_UP_GRACE: Duration = Duration::from_secs(2);

/// How long [`TmiServer::hang_up`] waits for the sockets to be gone, so whoever acts right
/// after it sees the connections already closed.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Handle to a running server; clones share the same server. It runs on the tokio runtime
/// that started it, for as long as that runtime lives.
#[derive(Clone)]
pub struct TmiServer {
    inner: Arc<Inner>,
}

/// What the owner of a server decides and learns as clients act. The default lets every
/// JOIN in, with no badges, and ignores what clients say.
///
/// Hooks run on the connection's task, before the server answers; they should be quick and
/// must not call back into the server.
pub trait Hooks: Send + Sync + 'static {
    /// A logged-in client `login` JOINs `channel` (its [`channel_key`]).
    fn join(&self, channel: &str, login: &str) -> Join {
        let _ = (channel, login);
        Join::Accept {
            badges: String::new(),
        }
    }

    /// A logged-in client `login` sent a PRIVMSG of `text` (the trailing parameter,
    /// unchanged) to `channel` (its [`channel_key`]). It is not echoed to anyone.
    fn privmsg(&self, channel: &str, login: &str, text: &str) {
        let _ = (channel, login, text);
    }
}

/// How the server answers a JOIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// The replies Twitch sends, with these USERSTATE badges (e.g. `moderator/1`; empty for
    /// none). The `mod`, `subscriber` and `user-type` tags follow from them, as on Twitch.
    Accept {
        /// Comma-separated `name/version` badges.
        badges: String,
    },
    /// No reply: the connection is closed at once.
    Refuse,
}

/// How [`TmiServer::hang_up`] ends a channel's connections.
#[derive(Debug, Clone, Copy)]
pub enum HangUp<'a> {
    /// Send this line last (e.g. `:tmi.twitch.tv RECONNECT`, as Twitch does before a
    /// restart), let the connection drain its queue for a moment, then close it.
    After(&'a str),
    /// Cut at once without a word; queued lines are discarded.
    Now,
}

/// The default [`Hooks`].
struct Plain;

impl Hooks for Plain {}

/// State shared by the handles, the accept loop and the connection tasks.
struct Inner {
    addr: SocketAddr,
    hooks: Arc<dyn Hooks>,
    state: Mutex<State>,
    /// Woken on every JOIN, PART, PRIVMSG and closed connection, so waiters need not poll.
    changed: Notify,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    conns: HashMap<u64, Conn>,
    /// Connections joined to each channel, by id.
    members: HashMap<String, HashSet<u64>>,
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

impl TmiServer {
    /// Starts a server on `addr` (port 0 for any free one) on the current tokio runtime.
    pub async fn start(addr: SocketAddr) -> io::Result<TmiServer> {
        Self::with_hooks(addr, Arc::new(Plain)).await
    }

    /// Like [`TmiServer::start`], with `hooks` deciding on JOINs and hearing PRIVMSGs.
    pub async fn with_hooks(addr: SocketAddr, hooks: Arc<dyn Hooks>) -> io::Result<TmiServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            addr,
            hooks,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(accept_loop(Arc::clone(&inner), listener));
        tracing::debug!(%addr, "TMI server listening");
        Ok(TmiServer { inner })
    }

    /// The address clients connect to (plain TCP, no TLS).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Waits until at least one connection has joined `channel`; false on timeout.
    ///
    /// Lets the owner send only once a client is there to receive, instead of sleeping.
    pub async fn wait_joined(&self, channel: &str, timeout: Duration) -> bool {
        let key = channel_key(channel);
        self.wait_for(timeout, || {
            self.inner
                .lock()
                .members
                .get(&key)
                .is_some_and(|m| !m.is_empty())
        })
        .await
    }

    /// Waits until `cond` holds, checking it again whenever a client joins, parts, says
    /// something or goes away; false on timeout. With [`Hooks`], this waits on what the
    /// hooks saw.
    pub async fn wait_for(&self, timeout: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            // Registered before checking, so a change between the check and the wait
            // still wakes us.
            notified.as_mut().enable();
            if cond() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond();
            }
        }
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
    /// them. Made for replaying thousands of lines faster than real time.
    pub async fn send_batch(&self, channel: &str, lines: &[String]) -> usize {
        let len = lines.iter().map(|l| l.len() + 2).sum();
        let mut buf = BytesMut::with_capacity(len);
        for line in lines {
            buf.put_slice(line.trim_end_matches(['\r', '\n']).as_bytes());
            buf.put_slice(b"\r\n");
        }
        self.route(channel, buf.freeze())
    }

    /// Ends the connections joined to `channel` as `how` says; returns once they are closed.
    ///
    /// They stop counting as joined at once (for every channel they joined, since their
    /// socket is going away), so [`TmiServer::wait_joined`] afterwards waits for a rejoin.
    pub async fn hang_up(&self, channel: &str, how: HangUp<'_>) {
        let conns = self.detach(channel, |conn| match how {
            // A closed queue means the writer is already gone: nothing left to say.
            HangUp::After(line) => {
                let _ = conn.tx.send(Out::Data(Bytes::from(format!("{line}\r\n"))));
                let _ = conn.tx.send(Out::Close);
            }
            HangUp::Now => {
                conn.kill.send_replace(true);
            }
        });
        tracing::debug!(channel, count = conns.len(), ?how, "hanging up");
        for (kill, mut done) in conns {
            if let HangUp::After(_) = how {
                let drained = tokio::time::timeout(HANG_UP_GRACE, done.wait_for(|d| *d)).await;
                if drained.is_ok() {
                    continue;
                }
                // A client too slow to read its queue gets cut, as Twitch would.
                kill.send_replace(true);
            }
            let _ = tokio::time::timeout(CLOSE_WAIT, done.wait_for(|d| *d)).await;
        }
    }

    /// Enqueues `bytes` to every connection joined to `channel`.
    fn route(&self, channel: &str, bytes: Bytes) -> usize {
        let state = self.inner.lock();
        let Some(members) = state.members.get(&channel_key(channel)) else {
            return 0;
        };
        members
            .iter()
            .filter_map(|id| state.conns.get(id))
            .filter(|conn| conn.tx.send(Out::Data(bytes.clone())).is_ok())
            .count()
    }

    /// Takes the channel's connections out of routing, applies `f` to each, and returns
    /// what is needed to cut them and wait for them.
    fn detach(
        &self,
        channel: &str,
        f: impl Fn(&Conn),
    ) -> Vec<(watch::Sender<bool>, watch::Receiver<bool>)> {
        let mut state = self.inner.lock();
        let ids: Vec<u64> = state
            .members
            .get(&channel_key(channel))
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(conn) = state.conns.get_mut(&id) else {
                continue;
            };
            f(conn);
            out.push((conn.kill.clone(), conn.done.clone()));
            let joined = std::mem::take(&mut conn.joined);
            state.leave(id, joined);
        }
        drop(state);
        self.inner.changed.notify_waiters();
        out
    }
}

impl std::fmt::Debug for TmiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TmiServer")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Locks the state; a panicking thread must not take the server down with it, so
    /// poisoning is ignored (the state is only ever left consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a closed connection, so nothing is routed to it any more.
    fn unregister(&self, id: u64) {
        let mut state = self.lock();
        if let Some(conn) = state.conns.remove(&id) {
            state.leave(id, conn.joined);
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

impl State {
    /// Takes connection `id` out of the `channels` it had joined.
    fn leave(&mut self, id: u64, channels: impl IntoIterator<Item = String>) {
        for name in channels {
            if let Some(members) = self.members.get_mut(&name) {
                members.remove(&id);
            }
        }
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id, %peer, "TMI connection");
                tokio::spawn(serve_connection(Arc::clone(&inner), stream, id));
            }
            Err(err) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::debug!(%err, "TMI server accept failed");
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
    tracing::debug!(id, "TMI connection closed");
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
                tracing::debug!(id, "TMI client line too long, closing");
                return;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(id, %err, "TMI client read failed");
                return;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            continue;
        }
        tracing::trace!(id, line, "TMI server <");
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
                tracing::debug!(id = session.id, login, "TMI login refused");
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
                reply(format!(
                    ":{login}!{login}@{login}.tmi.twitch.tv PART #{key}\r\n"
                ));
                state.leave(session.id, [key]);
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
            inner.hooks.privmsg(&channel_key(target), login, text);
            inner.changed.notify_waiters();
        }
        _ => {}
    }
    Flow::Continue
}

/// Handles the JOIN of one channel: the replies Twitch sends, or the refusal.
fn join(inner: &Inner, id: u64, login: &str, tx: &mpsc::UnboundedSender<Out>, name: &str) -> Flow {
    let key = channel_key(name);
    let Join::Accept { badges } = inner.hooks.join(&key, login) else {
        tracing::debug!(id, channel = key, "TMI JOIN refused, closing");
        return Flow::Stop;
    };
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
    let mut state = inner.lock();
    let _ = tx.send(Out::Data(Bytes::from(text)));
    state.members.entry(key.clone()).or_default().insert(id);
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
        tracing::debug!(%err, "TMI client write failed");
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

/// A channel's key: Twitch channel names are logins, so `#Foo`, `foo` and `#foo` match.
pub fn channel_key(channel: &str) -> String {
    channel.trim_start_matches('#').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
