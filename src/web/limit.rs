//! What one address, and everyone together, may take of the server: a hostile viewer gets its
//! share and no more (issue 13).
//!
//! 1. At start, the soft open-files limit is raised to the hard one ([`raise_nofile`]); the
//!    total caps are sized under it, so the server never runs out of descriptors and
//!    `/healthz` keeps answering.
//! 2. Every TCP connection takes a seat at accept ([`Listener`]): past the per-address or the
//!    total cap it gets a one-line `503` and is closed before hyper sees it.
//! 3. Every `/chat` socket takes a second seat ([`Limits::chat_seat`]), from a smaller total,
//!    so chat sockets alone can never fill the connections the rest of the site needs.
//! 4. `POST /whep`, `POST /api/session` and `POST /api/chat` are rate limited per address
//!    ([`rate_limit`]): `429` with `Retry-After` and a one-line reason.
//!
//! An address is an IPv4 address or an IPv6 /64 (what one household or one attacker gets).
//! Every number is a setting (`LimitConfig`, from `--…` flags and the config file); 0 turns a
//! limit off, which the load tests and benchmarks say on their command lines.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::AppState;
use super::extract::bearer;
use crate::party::Role;
use crate::shutdown::Shutdown;

/// `POST /whep` per address per minute: a household or a campus NAT joining together, and
/// each viewer's reconnects, fit; a script holding seats with offers does not.
pub const DEFAULT_WHEP_PER_MINUTE: u32 = 60;
/// `POST /api/session` per address per minute (one per page load).
pub const DEFAULT_SESSION_PER_MINUTE: u32 = 60;
/// `POST /api/chat` per address per minute: many people chatting behind one address; each
/// session is held to the chat's own slower rate besides.
pub const DEFAULT_CHAT_PER_MINUTE: u32 = 300;
/// TCP connections one address may hold (a viewer holds one or two: the chat socket and the
/// page's keep-alive connection).
pub const DEFAULT_CONNECTIONS_PER_ADDRESS: usize = 512;
/// `/chat` sockets one address may hold: one per open viewer page.
pub const DEFAULT_CHAT_SOCKETS_PER_ADDRESS: usize = 256;

/// Descriptors kept out of the connection total for everything else the process opens
/// (GStreamer, the UDP sockets, the store, the edges' HTTP clients, files being served), and
/// the share of the connection total `/chat` sockets may take: the rest stays for the pages,
/// the POSTs and `/healthz` whatever the sockets do.
const RESERVED_FDS_MIN: u64 = 128;
const CHAT_SHARE_PERCENT: usize = 75;

/// How often addresses not seen for a while are forgotten by the rate limiters.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The limits as configured (`--whep-per-minute` …). 0 means no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitConfig {
    /// `POST /whep` per address per minute (a burst of as many is allowed at once).
    pub whep_per_minute: u32,
    /// `POST /api/session` per address per minute.
    pub session_per_minute: u32,
    /// `POST /api/chat` per address per minute.
    pub chat_per_minute: u32,
    /// TCP connections one address may hold.
    pub connections_per_address: usize,
    /// `/chat` sockets one address may hold.
    pub chat_sockets_per_address: usize,
    /// TCP connections in total; `None`: sized under the open-files limit.
    pub connections: Option<usize>,
    /// Take the client's address from the last `X-Forwarded-For` entry (behind a reverse
    /// proxy, which must set it). The per-address connection cap then sees only the proxy and
    /// is not applied.
    pub trust_forwarded: bool,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            whep_per_minute: DEFAULT_WHEP_PER_MINUTE,
            session_per_minute: DEFAULT_SESSION_PER_MINUTE,
            chat_per_minute: DEFAULT_CHAT_PER_MINUTE,
            connections_per_address: DEFAULT_CONNECTIONS_PER_ADDRESS,
            chat_sockets_per_address: DEFAULT_CHAT_SOCKETS_PER_ADDRESS,
            connections: None,
            trust_forwarded: false,
        }
    }
}

impl LimitConfig {
    /// No limit at all: for a router driven in-process by tests, where every request shares
    /// one (unspecified) address.
    pub fn unlimited() -> Self {
        Self {
            whep_per_minute: 0,
            session_per_minute: 0,
            chat_per_minute: 0,
            connections_per_address: 0,
            chat_sockets_per_address: 0,
            connections: Some(0),
            trust_forwarded: false,
        }
    }
}

/// The totals the open-files limit `nofile` leaves room for: (connections, chat sockets).
/// 0 means unlimited.
pub fn totals(config: &LimitConfig, nofile: u64) -> (usize, usize) {
    let connections = config.connections.unwrap_or_else(|| {
        let reserve = RESERVED_FDS_MIN.max(nofile / 8);
        usize::try_from(nofile.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
    });
    let chat = if connections == 0 {
        0
    } else {
        (connections / 100 * CHAT_SHARE_PERCENT).max(1)
    };
    (connections, chat)
}

/// Raises the soft open-files limit to the hard one; returns the limit now in force.
pub fn raise_nofile() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// The key limits are kept under: the address, or its /64 for IPv6.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Seats counted per address and in total; a [`Seat`] gives its place back when dropped.
#[derive(Clone)]
struct Gate {
    state: Arc<Mutex<GateState>>,
    per_address: usize,
    total: usize,
}

#[derive(Default)]
struct GateState {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

/// Why a seat was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address holds its share.
    Address,
    /// The server holds all it can.
    Total,
}

/// A place taken at a [`Gate`], held for as long as the connection or socket lives.
pub struct Seat {
    gate: Gate,
    key: IpAddr,
}

impl Gate {
    fn new(per_address: usize, total: usize) -> Self {
        Self {
            state: Arc::default(),
            per_address,
            total,
        }
    }

    fn take(&self, ip: IpAddr) -> Result<Seat, Refusal> {
        let key = address_key(ip);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.total != 0 && state.total >= self.total {
            return Err(Refusal::Total);
        }
        let held = state.by_address.entry(key).or_default();
        if self.per_address != 0 && *held >= self.per_address {
            return Err(Refusal::Address);
        }
        *held += 1;
        state.total += 1;
        Ok(Seat {
            gate: self.clone(),
            key,
        })
    }

    fn held(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        state.total = state.total.saturating_sub(1);
        if let Some(held) = state.by_address.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                state.by_address.remove(&self.key);
            }
        }
    }
}

/// Which rate-limited call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limited {
    Whep,
    Session,
    Chat,
}

impl Limited {
    fn of(method: &Method, path: &str) -> Option<Self> {
        if method != Method::POST {
            return None;
        }
        match path {
            "/whep" => Some(Self::Whep),
            "/api/session" => Some(Self::Session),
            "/api/chat" => Some(Self::Chat),
            _ => None,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Whep => "WHEP offers",
            Self::Session => "session requests",
            Self::Chat => "chat messages",
        }
    }
}

type Limiter = DefaultKeyedRateLimiter<IpAddr>;

/// The limits in force: a cheap handle, shared by the listener and the handlers.
#[derive(Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

struct Inner {
    trust_forwarded: bool,
    whep: Option<Limiter>,
    session: Option<Limiter>,
    chat: Option<Limiter>,
    chat_sockets: Gate,
    connections: Gate,
}

fn limiter(per_minute: u32) -> Option<Limiter> {
    let n = NonZeroU32::new(per_minute)?;
    Some(RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)))
}

impl Limits {
    /// The limits of `config`, the totals sized under the open-files limit `nofile`.
    pub fn new(config: &LimitConfig, nofile: u64) -> Self {
        let (connections, chat_sockets) = totals(config, nofile);
        let per_address_connections = if config.trust_forwarded {
            0
        } else {
            config.connections_per_address
        };
        Self {
            inner: Arc::new(Inner {
                trust_forwarded: config.trust_forwarded,
                whep: limiter(config.whep_per_minute),
                session: limiter(config.session_per_minute),
                chat: limiter(config.chat_per_minute),
                chat_sockets: Gate::new(config.chat_sockets_per_address, chat_sockets),
                connections: Gate::new(per_address_connections, connections),
            }),
        }
    }

    /// No limits (see [`LimitConfig::unlimited`]).
    pub fn unlimited() -> Self {
        Self::new(&LimitConfig::unlimited(), 0)
    }

    /// The caps in force, for the start-up log line: (connections, chat sockets).
    pub fn caps(&self) -> (usize, usize) {
        (self.inner.connections.total, self.inner.chat_sockets.total)
    }

    /// Whether the client's address comes from `X-Forwarded-For`.
    pub fn trust_forwarded(&self) -> bool {
        self.inner.trust_forwarded
    }

    /// A `/chat` socket for `peer`, or the one-line reason it is refused.
    pub fn chat_seat(&self, peer: Peer) -> Result<Seat, &'static str> {
        self.inner
            .chat_sockets
            .take(peer.0)
            .map_err(|refusal| match refusal {
                Refusal::Address => "too many chat connections from your address",
                Refusal::Total => "the chat is at its connection limit: try again later",
            })
    }

    /// `/chat` sockets open now.
    pub fn chat_sockets(&self) -> usize {
        self.inner.chat_sockets.held()
    }

    /// Wraps `listener` so every connection takes a seat.
    pub fn listener(&self, listener: TcpListener) -> Listener {
        Listener {
            inner: listener,
            gate: self.inner.connections.clone(),
        }
    }

    /// Forgets addresses the rate limiters have not seen for a while, until `shutdown`, so
    /// an attacker spraying addresses cannot grow them for ever.
    pub fn spawn_sweeper(&self, shutdown: &Shutdown) {
        let limits = self.clone();
        let stop = shutdown.token();
        shutdown.spawn("rate-limit sweeper", async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = every.tick() => {
                        for limiter in [&limits.inner.whep, &limits.inner.session, &limits.inner.chat]
                            .into_iter()
                            .flatten()
                        {
                            limiter.retain_recent();
                            limiter.shrink_to_fit();
                        }
                    }
                }
            }
        });
    }

    /// `Ok`, or how long `peer` must wait before `call` is allowed again.
    fn check(&self, call: Limited, peer: Peer) -> Result<(), Duration> {
        let limiter = match call {
            Limited::Whep => &self.inner.whep,
            Limited::Session => &self.inner.session,
            Limited::Chat => &self.inner.chat,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter
            .check_key(&address_key(peer.0))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The middleware of the rate-limited POSTs. Callers with the host's or a moderator's key are
/// not limited: they are the party's own staff (a Stream Deck, a bot).
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(call) = Limited::of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let peer = match Peer::from_request_parts(&mut parts, &state).await {
        Ok(peer) => peer,
        Err(never) => match never {},
    };
    let staff = state
        .party
        .role(bearer(&parts.headers))
        .at_least(Role::Moderator);
    if !staff && let Err(wait) = state.limits.check(call, peer) {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, HeaderValue::from(seconds))],
            format!(
                "too many {} from your address: try again in {seconds} s",
                call.what()
            ),
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The TCP listener of the web server, with a seat per connection.
pub struct Listener {
    inner: TcpListener,
    gate: Gate,
}

/// What a refused connection reads before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 39\r\nConnection: close\r\n\r\ntoo many connections: try again later\r\n";

impl axum::serve::Listener for Listener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            };
            match self.gate.take(addr.ip()) {
                Ok(seat) => {
                    return (
                        Counted {
                            stream,
                            _seat: seat,
                        },
                        addr,
                    );
                }
                Err(refusal) => {
                    tracing::debug!(peer = %addr.ip(), ?refusal, "connection refused");
                    // A fresh socket's send buffer is empty: this never blocks, and a failure
                    // only means the client is gone already.
                    let _ = stream.try_write(REFUSED);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// As axum does: connection errors are the client's business; anything else (out of
/// descriptors, which the caps are there to prevent) is logged and waited out.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The address a request came from, for limits kept per address. The server is started with
/// connect info (`main`); a router driven without it (`oneshot` in tests) reads as the
/// unspecified address, which every such request then shares. Behind a reverse proxy
/// (`--trust-forwarded`) it is the last `X-Forwarded-For` entry: the one the proxy added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer(pub IpAddr);

impl FromRequestParts<AppState> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let forwarded = state
            .limits
            .trust_forwarded()
            .then(|| forwarded_for(&parts.headers))
            .flatten();
        let ip = forwarded
            .or_else(|| {
                parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<Remote>>()
                    .map(|info| info.0.0.ip())
            })
            .or_else(|| {
                parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.ip())
            })
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        // An IPv4 client on a dual-stack socket is the same client as over IPv4.
        Ok(Peer(ip.to_canonical()))
    }
}

/// The last address of the last `X-Forwarded-For` header: what our own proxy appended (the
/// entries before it are whatever the client claimed).
fn forwarded_for(headers: &axum::http::HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

/// The peer of a connection the [`Listener`] accepted (axum's connect info).
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub SocketAddr);

impl Connected<IncomingStream<'_, Listener>> for Remote {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        Remote(*stream.remote_addr())
    }
}

/// A connection holding its seat until it closes.
pub struct Counted {
    stream: TcpStream,
    _seat: Seat,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_added_address_is_the_last_forwarded_entry() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(forwarded_for(&headers), None);
        // What the client claimed comes first; our proxy appends what it saw.
        headers.append("x-forwarded-for", "6.6.6.6, 10.0.0.7".parse().unwrap());
        assert_eq!(forwarded_for(&headers), Some("10.0.0.7".parse().unwrap()));
        headers.append("x-forwarded-for", "2001:db8::1".parse().unwrap());
        assert_eq!(
            forwarded_for(&headers),
            Some("2001:db8::1".parse().unwrap())
        );
        headers.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(forwarded_for(&headers), None);
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_share_and_the_total_holds() {
        let gate = Gate::new(2, 3);
        let a1 = gate.take(ip("10.0.0.1")).unwrap();
        let _a2 = gate.take(ip("10.0.0.1")).unwrap();
        assert_eq!(gate.take(ip("10.0.0.1")).err(), Some(Refusal::Address));
        let _b1 = gate.take(ip("10.0.0.2")).unwrap();
        assert_eq!(gate.take(ip("10.0.0.3")).err(), Some(Refusal::Total));
        drop(a1);
        let _c1 = gate.take(ip("10.0.0.3")).unwrap();
        assert_eq!(gate.held(), 3);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let gate = Gate::new(1, 0);
        let _a = gate.take(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            gate.take(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::Address)
        );
        assert!(gate.take(ip("2001:db8:1:3::1")).is_ok());
        // An IPv4 client on a dual-stack socket is keyed as itself.
        let _v4 = gate.take(ip("::ffff:10.0.0.9")).unwrap();
        assert_eq!(gate.take(ip("10.0.0.9")).err(), Some(Refusal::Address));
    }

    #[test]
    fn totals_leave_room_under_the_open_files_limit() {
        let (connections, chat) = totals(&LimitConfig::default(), 1024);
        assert_eq!(connections, 1024 - 128);
        assert!(chat < connections && chat >= connections / 2, "{chat}");
        let (connections, _) = totals(&LimitConfig::default(), 1 << 20);
        assert_eq!(connections, (1 << 20) - (1 << 17));
        assert_eq!(totals(&LimitConfig::unlimited(), 1024), (0, 0));
    }

    #[test]
    fn a_burst_past_the_quota_waits() {
        let limits = Limits::new(
            &LimitConfig {
                whep_per_minute: 3,
                ..LimitConfig::default()
            },
            1024,
        );
        let peer = Peer(ip("10.0.0.1"));
        for _ in 0..3 {
            assert_eq!(limits.check(Limited::Whep, peer), Ok(()));
        }
        let wait = limits.check(Limited::Whep, peer).unwrap_err();
        assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(20));
        assert_eq!(limits.check(Limited::Whep, Peer(ip("10.0.0.2"))), Ok(()));
        // Each call has a quota of its own.
        assert_eq!(limits.check(Limited::Session, peer), Ok(()));
    }

    #[test]
    fn only_the_three_posts_are_limited() {
        assert_eq!(Limited::of(&Method::POST, "/whep"), Some(Limited::Whep));
        assert_eq!(Limited::of(&Method::OPTIONS, "/whep"), None);
        assert_eq!(Limited::of(&Method::POST, "/whep/abc/keyframe"), None);
        assert_eq!(Limited::of(&Method::POST, "/api/chat"), Some(Limited::Chat));
        assert_eq!(
            Limited::of(&Method::POST, "/api/session"),
            Some(Limited::Session)
        );
    }
}
