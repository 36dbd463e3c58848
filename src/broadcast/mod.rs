//! WebRTC fan-out of the one encoded stream to many viewers, on `str0m` (sans-IO).
//!
//! One thread owns every viewer's `Rtc` and one UDP socket. Datagrams are routed to their viewer
//! by the ICE ufrag of STUN requests, then by the 5-tuple, through hash maps. RTP packets from
//! the pipeline are parsed once and written to every connected viewer as they are: nothing is
//! decoded or re-encoded here. Keyframe requests from viewers are merged into at most one
//! encoder keyframe per second. A new viewer starts with a forced keyframe already on its way;
//! else from the cached latest keyframe (replayed paced) when that is young or no keyframe may
//! be forced yet; else from a keyframe forced for it.
//!
//! This module knows no HTTP: the web layer hands it an offer and gets an answer.
//!
//! The parts, from the outside in:
//! - `Broadcaster` (here): the handle. `join` takes a pending place (`seats.rs`), accepts the
//!   offer (`offer.rs`) and hands the session over a channel; counters are [`Stats`].
//! - `run.rs`: the one thread that owns the socket, the clock and the pipeline's RTP, and
//!   executes what the engine asks for. It stops on the shutdown token, or when every
//!   `Broadcaster` handle is gone, or when the pipeline's streams end.
//! - `engine.rs`: the fan-out itself, sans-IO: it takes `now` with every input and returns
//!   datagrams to send, keyframes to ask for and its next deadline.
//! - `seats.rs`: who counts against `--max-viewers` (connected viewers only) and the caps on
//!   offers still connecting, per address and in total.
//! - `keyframes.rs`: where a new viewer's video starts, and the merging of keyframe requests;
//!   `viewer.rs`: one session and the pace of its replay; `rtp.rs`, `stun.rs`: just enough
//!   parsing to route and re-send packets.
//! - `tests/`: the engine on a virtual clock, with real str0m viewers and no sockets.

mod adapt;
mod engine;
mod keyframes;
mod load;
mod offer;
mod quality;
pub mod rtp;
mod run;
mod seats;
mod send;
mod stream;
mod stun;
mod viewer;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;

pub use offer::ViewerId;

/// Installs str0m's crypto once per process (anyone else building an `Rtc` calls it too).
pub fn init_crypto() {
    offer::init_crypto();
}

/// Why `offer` cannot be used, in one line for the one who sent it: no pointer, no dump.
pub fn offer_refusal(offer: &str, error: &str) -> String {
    offer::unreadable(offer, error).to_string()
}
pub use quality::{BadQuality, Quality};
pub use seats::{DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_ADDRESS, SeatLimits};
pub use stream::{Rendition, RenditionId};

/// Default UDP port of the fan-out.
pub const DEFAULT_PORT: u16 = 8189;

/// Default viewer cap: Prime Video Watch Party's limit.
pub const DEFAULT_MAX_VIEWERS: usize = 100;

/// How long an on-demand rendition's encoder runs on after its last viewer left: a viewer who
/// reloads the page, or the next one to join, finds it warm.
pub const RENDITION_LINGER: Duration = Duration::from_secs(30);

/// How long a connected viewer may stay silent before it is dropped.
pub const VIEWER_TIMEOUT: Duration = Duration::from_secs(15);

/// How long an answered offer may take to connect (ICE and DTLS) before it is dropped. Short:
/// a pending offer holds a place in the pending caps ([`SeatLimits`]) until then. A browser
/// on loopback or a LAN connects in well under a second; ICE-lite with our one host
/// candidate has no gathering to wait for.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `Retry-After` says to a viewer refused because too many offers are connecting: about
/// the time those take to connect or expire.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Errors a viewer (or the web layer) can get. Messages are one line and safe to show.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// The offer is not SDP we can use.
    #[error("malformed SDP offer: {0}")]
    BadOffer(String),
    /// Nothing in the offer can carry the party's streams.
    #[error("{0}")]
    Unsupported(String),
    /// The party is at its viewer cap: every seat is taken by a connected viewer.
    #[error("the party is full ({0} viewers)")]
    Full(usize),
    /// Seats are free, but too many offers are connecting at once: try again shortly.
    #[error("too many viewers are connecting; try again in a few seconds")]
    Busy,
    /// The server cannot send to more viewers than it has now: its fan-out has been falling
    /// behind the encoder for seconds.
    #[error("the party's server is at capacity; try again in a little while")]
    AtCapacity,
    /// This address has too many offers connecting (the number is its cap).
    #[error(
        "too many offers from your address are connecting (at most {0}); try again in a few seconds"
    )]
    TooManyFromAddress(usize),
    /// No such viewer session.
    #[error("no such viewer session")]
    NotFound,
    /// The UDP socket cannot be bound.
    #[error("cannot bind the WebRTC port {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The fan-out's thread or its runtime cannot be started.
    #[error("cannot start the fan-out's thread: {0}")]
    Thread(std::io::Error),
    /// The fan-out has stopped.
    #[error("the broadcaster has stopped")]
    Stopped,
}

/// Where the fan-out listens and what it tells browsers.
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    /// UDP address to bind.
    pub bind: SocketAddr,
    /// Address put in the ICE candidate: what viewers send to.
    pub advertise: SocketAddr,
    /// Viewer cap, and the caps on offers still connecting.
    pub seats: SeatLimits,
    /// How long an on-demand rendition runs after its last viewer ([`RENDITION_LINGER`]).
    pub rendition_linger: Duration,
}

/// Counters for `/healthz` and `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Viewers holding a session (connecting or connected).
    pub viewers: AtomicUsize,
    /// Viewers whose ICE and DTLS completed when every seat was taken: closed, never counted.
    pub refused_at_connect: AtomicU64,
    /// Viewers whose ICE and DTLS completed.
    pub connected: AtomicUsize,
    /// UDP bytes sent.
    pub bytes_sent: AtomicU64,
    /// UDP datagrams sent.
    pub packets_sent: AtomicU64,
    /// Datagrams the socket refused (buffer full).
    pub send_drops: AtomicU64,
    /// Keyframe requests received (PLI/FIR, and joins needing one).
    pub keyframes_requested: AtomicU64,
    /// Keyframes asked of the encoder after merging.
    pub keyframes_forced: AtomicU64,
    /// Viewers that joined since start.
    pub joins: AtomicU64,
    /// NACK messages received from viewers.
    pub nacks_received: AtomicU64,
    /// Video packets sent again (RTX) because a viewer reported them lost.
    pub packets_resent: AtomicU64,
    /// Times a viewer's media was paused because it went silent.
    pub media_pauses: AtomicU64,
    /// Video packets the fan-out fell too far behind the encoder to take: every viewer of
    /// that rendition lost them.
    pub video_lagged: AtomicU64,
    /// The fan-out's worst lag behind the encoder over its last second, in ms.
    pub fanout_lag_ms: AtomicU64,
    /// The fan-out has lagged for seconds: new viewers are turned away (see `load.rs`).
    pub saturated: std::sync::atomic::AtomicBool,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Viewers holding a session (pending or connected).
    pub viewers: usize,
    /// Viewers connected: the ones holding a seat.
    pub connected: usize,
    /// Offers answered and not yet connected.
    pub pending: usize,
    /// Viewers closed as they connected because every seat was taken meanwhile.
    pub refused_at_connect: u64,
    /// UDP bytes sent.
    pub bytes_sent: u64,
    /// UDP datagrams sent.
    pub packets_sent: u64,
    /// Datagrams dropped by a full socket buffer.
    pub send_drops: u64,
    /// Keyframe requests received.
    pub keyframes_requested: u64,
    /// Keyframes asked of the encoder.
    pub keyframes_forced: u64,
    /// Viewers that joined since start.
    pub joins: u64,
    /// NACK messages received.
    pub nacks_received: u64,
    /// Packets resent.
    pub packets_resent: u64,
    /// Times a viewer's media was paused because it went silent (a closed tab, a dead link).
    pub media_pauses: u64,
    /// Video packets lost because the fan-out fell behind the encoder (an overloaded server).
    pub video_lagged: u64,
    /// The fan-out's worst lag behind the encoder over its last second, in ms.
    pub fanout_lag_ms: u64,
    /// The fan-out cannot keep up: new viewers are told to come back later.
    pub saturated: bool,
}

/// One viewer, as `/metrics` and `/healthz` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ViewerStats {
    /// Session id.
    pub id: String,
    /// The video codec it receives.
    pub codec: String,
    /// Media flows.
    pub connected: bool,
    /// Seconds since media could first flow.
    pub connected_s: Option<f64>,
    /// Video packets sent (first sends).
    pub video_packets: u64,
    /// NACK messages it sent.
    pub nacks_received: u64,
    /// Video packets resent to it.
    pub packets_resent: u64,
    /// Keyframes it asked for (PLI/FIR, and its page's requests).
    pub keyframe_requests: u64,
    /// Fraction of packets it reports lost.
    pub loss: Option<f32>,
    /// Round trip time, in ms.
    pub rtt_ms: Option<f64>,
    /// The rendition it receives now (`720p`, `360p`).
    pub rendition: String,
    /// What it chose in the page's menu: `auto`, or a cap such as `360p`.
    pub quality: String,
    /// What str0m estimates its link carries (TWCC), in kbit/s.
    pub estimate_kbps: Option<u64>,
    /// Times it was moved between renditions.
    pub switches: u64,
    /// Times its media was paused because it went silent (a closed tab, a dead link).
    pub pauses: u64,
}

/// One rendition of the video, as the fan-out sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RenditionState {
    /// Which one.
    pub id: RenditionId,
    /// Its codec.
    pub codec: String,
    /// Its label (`720p`, `360p`).
    pub name: String,
    /// It runs only while someone receives it.
    pub on_demand: bool,
    /// Its encoder runs.
    pub active: bool,
    /// Viewers receiving it.
    pub viewers: usize,
}

/// Every session and rendition, for `/metrics` and `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct Sessions {
    /// The renditions.
    pub renditions: Vec<RenditionState>,
    /// The viewers.
    pub viewers: Vec<ViewerStats>,
}

/// A viewer's accepted session.
#[derive(Debug)]
pub struct Joined {
    /// Session id, for the WHEP resource URL.
    pub id: ViewerId,
    /// The SDP answer.
    pub answer: String,
}

pub(crate) enum Command {
    Join(Box<offer::Accepted>, seats::Ticket),
    Leave(ViewerId, oneshot::Sender<bool>),
    Keyframe(ViewerId, oneshot::Sender<bool>),
    MainKeyframe,
    Quality(ViewerId, Quality, oneshot::Sender<bool>),
    Sessions(oneshot::Sender<Sessions>),
}

/// Handle to the fan-out. Cheap to clone.
#[derive(Clone)]
pub struct Broadcaster {
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Stats>,
    config: Arc<BroadcastConfig>,
    seats: Arc<seats::Seats>,
    /// What the pipeline sends, the main rendition first.
    renditions: Arc<[Rendition]>,
}

impl Broadcaster {
    /// Binds the UDP socket and starts fanning out `pipeline`'s streams until `shutdown` is
    /// cancelled or the last handle is dropped.
    pub async fn start(
        mut config: BroadcastConfig,
        pipeline: Pipeline,
        shutdown: &Shutdown,
    ) -> Result<Self, BroadcastError> {
        offer::init_crypto();
        let socket = run::bind(config.bind).map_err(|e| BroadcastError::Bind(config.bind, e))?;
        if config.advertise.port() == 0 {
            // Port 0 (tests, or "any free port"): advertise the one the kernel picked.
            let bound = socket
                .local_addr()
                .map_err(|e| BroadcastError::Bind(config.bind, e))?;
            config.advertise.set_port(bound.port());
        }
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let renditions: Arc<[Rendition]> = run::renditions(&pipeline).into();
        let engine = engine::Engine::new(
            Instant::now(),
            config.advertise,
            stats.clone(),
            renditions.to_vec(),
            config.rendition_linger,
        );
        let io = run::Io {
            socket,
            pipeline,
            stats: stats.clone(),
            commands: rx,
            shutdown: shutdown.token(),
        };
        let running = run::spawn(engine, io).map_err(BroadcastError::Thread)?;
        shutdown.spawn("broadcaster", running);
        let counted = stats.clone();
        let ended = move || {
            let joined = counted.joins.load(Ordering::Relaxed);
            joined.saturating_sub(counted.viewers.load(Ordering::Relaxed) as u64)
        };
        shutdown.spawn(
            "memory trim",
            crate::util::trim::run(ended, shutdown.token()),
        );
        Ok(Self {
            commands: tx,
            stats,
            seats: seats::Seats::new(config.seats),
            config: Arc::new(config),
            renditions,
        })
    }

    /// Accepts a viewer's SDP offer, sent from `from`: answers it, or says in one line why it
    /// cannot. The answered offer is pending until its ICE and DTLS complete; only then does it
    /// take a seat (see `seats.rs`). A refused offer leaves nothing behind.
    pub fn join(&self, offer_sdp: &str, from: IpAddr) -> Result<Joined, BroadcastError> {
        // Before anything is reserved: one more viewer would cost every viewer packets.
        if self.stats.saturated.load(Ordering::Relaxed) {
            return Err(BroadcastError::AtCapacity);
        }
        // The place first, so concurrent offers cannot overshoot the caps; dropped (freed) on
        // every early return below.
        let ticket = self.seats.reserve(from)?;
        let accepted = offer::accept(
            offer_sdp,
            self.config.advertise,
            &self.renditions,
            Instant::now(),
        )?;
        let joined = Joined {
            id: accepted.id,
            answer: accepted.answer.clone(),
        };
        self.stats.viewers.fetch_add(1, Ordering::AcqRel);
        if self
            .commands
            .send(Command::Join(Box::new(accepted), ticket))
            .is_err()
        {
            self.stats.viewers.fetch_sub(1, Ordering::AcqRel);
            return Err(BroadcastError::Stopped);
        }
        self.stats.joins.fetch_add(1, Ordering::Relaxed);
        Ok(joined)
    }

    /// Ends a viewer's session.
    pub async fn leave(&self, id: ViewerId) -> Result<(), BroadcastError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Leave(id, tx))
            .map_err(|_| BroadcastError::Stopped)?;
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BroadcastError::NotFound),
            Err(_) => Err(BroadcastError::Stopped),
        }
    }

    /// Asks for a keyframe for viewer `id` (its page saw the picture freeze), merged with
    /// everyone else's requests as a PLI would be.
    pub async fn request_keyframe(&self, id: ViewerId) -> Result<(), BroadcastError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Keyframe(id, tx))
            .map_err(|_| BroadcastError::Stopped)?;
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BroadcastError::NotFound),
            Err(_) => Err(BroadcastError::Stopped),
        }
    }

    /// Asks for a keyframe of the main rendition for someone who is not a viewer of ours (a
    /// Janus edge's PLI), merged with the viewers' requests: the encoder still makes at most
    /// one a second, however many edges and viewers ask.
    pub fn request_main_keyframe(&self) {
        // Stopped: nobody is left to send it to.
        let _ = self.commands.send(Command::MainKeyframe);
    }

    /// The qualities a viewer may pick, highest first (`720p`, `360p`).
    pub fn qualities(&self) -> Vec<String> {
        let mut heights: Vec<(u32, &str)> = self
            .renditions
            .iter()
            .map(|r| (r.height, r.name.as_str()))
            .collect();
        heights.sort_unstable_by(|a, b| b.cmp(a));
        heights.dedup_by_key(|(h, _)| *h);
        heights
            .into_iter()
            .map(|(_, name)| name.to_string())
            .collect()
    }

    /// Sets what viewer `id` may be sent: Auto, or at most the rendition it picked. The switch
    /// happens at the next keyframe of the rendition it lands on, without a new session.
    pub async fn set_quality(&self, id: ViewerId, quality: Quality) -> Result<(), BroadcastError> {
        if let Quality::Max(height) = quality
            && !self.renditions.iter().any(|r| r.height == height)
        {
            return Err(BroadcastError::Unsupported(format!(
                "this party has no {quality} rendition: pick one of auto, {}",
                self.qualities().join(", ")
            )));
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Quality(id, quality, tx))
            .map_err(|_| BroadcastError::Stopped)?;
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BroadcastError::NotFound),
            Err(_) => Err(BroadcastError::Stopped),
        }
    }

    /// Every viewer's figures and every rendition's state.
    pub async fn sessions(&self) -> Result<Sessions, BroadcastError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Sessions(tx))
            .map_err(|_| BroadcastError::Stopped)?;
        rx.await.map_err(|_| BroadcastError::Stopped)
    }

    /// Current counters.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        let (_, pending) = self.seats.counts();
        StatsSnapshot {
            viewers: s.viewers.load(Ordering::Relaxed),
            connected: s.connected.load(Ordering::Relaxed),
            pending,
            refused_at_connect: s.refused_at_connect.load(Ordering::Relaxed),
            bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
            packets_sent: s.packets_sent.load(Ordering::Relaxed),
            send_drops: s.send_drops.load(Ordering::Relaxed),
            keyframes_requested: s.keyframes_requested.load(Ordering::Relaxed),
            keyframes_forced: s.keyframes_forced.load(Ordering::Relaxed),
            joins: s.joins.load(Ordering::Relaxed),
            nacks_received: s.nacks_received.load(Ordering::Relaxed),
            packets_resent: s.packets_resent.load(Ordering::Relaxed),
            media_pauses: s.media_pauses.load(Ordering::Relaxed),
            video_lagged: s.video_lagged.load(Ordering::Relaxed),
            fanout_lag_ms: s.fanout_lag_ms.load(Ordering::Relaxed),
            saturated: s.saturated.load(Ordering::Relaxed),
        }
    }

    /// The UDP address viewers send to.
    pub fn advertised(&self) -> SocketAddr {
        self.config.advertise
    }

    /// The configured cap.
    pub fn max_viewers(&self) -> usize {
        self.config.seats.max_viewers
    }
}

#[cfg(test)]
mod tests;
