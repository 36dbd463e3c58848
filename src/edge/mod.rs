//! Edges: Janus servers that carry viewers past what one machine serves.
//!
//! ```text
//!   pipeline ── main H.264 + Opus RTP ──► forward.rs (one UDP socket per edge) ──► Janus mountpoint
//!       ▲                                      ▲   │ RTCP SR every second        │ (janus.plugin.streaming)
//!       └── keyframe (≤ 1/s, all edges) ◄──────┘   ◄── PLI/FIR from the edge ◄───┘
//!
//!   poll task (one per edge, every POLL_EVERY): Janus HTTP API (janus.rs)
//!       session gone → new session · no mountpoint → create it · info → state, viewers, ports
//! ```
//!
//! 1. At start, each edge gets a poll task and a forward task, both owned by [`Shutdown`].
//! 2. The poll task opens a session on the edge, creates our RTP mountpoint (`create`,
//!    `type: rtp`, H.264 pt 96 + Opus pt 111, an RTCP port; the edge picks the ports) and
//!    reads it back with `info` every [`POLL_EVERY`]: viewers, ports. The same request keeps
//!    the session alive.
//! 3. An edge that does not answer is marked down and the forward task stops sending to it;
//!    when it answers again (a restarted Janus has neither our session nor our mountpoint),
//!    both are made again and the forwarding resumes to the new ports.
//! 4. [`Edges::place`] tells a new viewer's page where to watch (`placement.rs`); the page
//!    then talks to the edge's Janus itself.
//! 5. On shutdown our mountpoint and session are removed from every edge that answers.
//!
//! This module knows no HTTP of ours: `web/` asks it for a placement and for its state.

mod forward;
pub mod janus;
pub mod placement;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use crate::util::lock::Locked;

pub use forward::Targets;
pub use placement::{OriginLoad, Placement, Policy};

use forward::KeyframeGate;
use janus::{Client, Handle, JanusError, MountpointSpec};

/// How often each edge is asked how it is.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// The H.264 our encoder makes, as the mountpoint announces it to the edge's viewers.
pub const VIDEO_FMTP: &str = "profile-level-id=42e01f;packetization-mode=1";

/// Janus's streaming `admin_key`: shown nowhere, not even in `Debug`.
#[derive(Clone)]
pub struct EdgeSecret(String);

impl EdgeSecret {
    /// The secret given by the streamer.
    pub fn new(text: impl Into<String>) -> EdgeSecret {
        EdgeSecret(text.into())
    }

    /// The secret itself, for the one request body that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl std::str::FromStr for EdgeSecret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(EdgeSecret::new(text.trim()))
    }
}

impl<'de> serde::Deserialize<'de> for EdgeSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| EdgeSecret::new(s.trim()))
    }
}

impl std::fmt::Debug for EdgeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeSecret(…)")
    }
}

/// The edges of a party (`--edge`, `--edge-secret`, `--edge-policy`).
#[derive(Debug, Clone, Default)]
pub struct EdgeConfig {
    /// Each edge's Janus HTTP API base, `http://host:8088/janus`.
    pub urls: Vec<String>,
    /// The streaming plugin's `admin_key`, when the edges ask for one.
    pub secret: Option<EdgeSecret>,
    /// How viewers are spread.
    pub policy: Policy,
}

/// Checks an edge URL: http(s) with a host; returned without a trailing slash. The error is
/// one line naming the flag.
pub fn check_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| format!("--edge {text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "--edge {text:?} must be the Janus HTTP API, like http://host:8088/janus"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "--edge {text:?}: put no credentials in the URL (use --edge-secret)"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Whether an edge carries viewers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeState {
    /// Not answered yet.
    Connecting,
    /// Answers, and carries our mountpoint.
    Up,
    /// Did not answer its last poll (or refused our mountpoint).
    Down,
}

/// One edge, as `/healthz` and the host page show it. No secret in it.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeReport {
    /// Its Janus HTTP API base.
    pub url: String,
    /// Up or down.
    pub state: EdgeState,
    /// Viewers watching our mountpoint, as Janus counts them.
    pub viewers: u64,
    /// Our mountpoint's id on it.
    pub mountpoint: u64,
    /// RTP bytes sent to it.
    pub bytes_sent: u64,
    /// Datagrams the socket refused.
    pub send_drops: u64,
    /// Keyframe requests (PLI/FIR) it sent us.
    pub keyframe_requests: u64,
    /// Times its mountpoint was created (1 at start, one more per comeback).
    pub mountpoints_created: u64,
    /// Why it is down, when it is.
    pub error: Option<String>,
}

/// What one edge's tasks share with the handle.
struct EdgeShared {
    url: String,
    status: Mutex<Status>,
    bytes_sent: AtomicU64,
    send_drops: AtomicU64,
    keyframe_requests: AtomicU64,
    keyframes_forced: AtomicU64,
    mountpoints_created: AtomicU64,
}

#[derive(Debug, Clone)]
struct Status {
    state: EdgeState,
    viewers: u64,
    error: Option<String>,
    pending: placement::Pending,
}

/// Handle to the edges. Cheap to clone; a party without edges has an empty one.
#[derive(Clone, Default)]
pub struct Edges {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    policy: Policy,
    mountpoint: u64,
    edges: Vec<Arc<EdgeShared>>,
}

/// Asks the encoder for a keyframe of the main rendition, through whatever merges such
/// requests (in `main.rs`, the broadcaster).
pub type AskKeyframe = Arc<dyn Fn() + Send + Sync>;

impl Edges {
    /// No edges: every viewer watches the origin.
    pub fn none() -> Edges {
        Edges::default()
    }

    /// Starts polling and feeding every edge of `config` until `shutdown`. Returns at once:
    /// edges come up in the background.
    /// Keyframes the edges ask for go to `ask_keyframe`, which merges them with everyone
    /// else's (the broadcaster's gate).
    pub fn start(
        config: EdgeConfig,
        pipeline: Pipeline,
        ask_keyframe: AskKeyframe,
        shutdown: &Shutdown,
    ) -> Edges {
        // Janus ids are numbers; one that JavaScript reads exactly, and one per origin so two
        // parties sharing an edge do not meet.
        let mountpoint = u64::from(u32::from_be_bytes(crate::util::id::random_bytes::<4>())) + 1;
        let gate = Arc::new(Mutex::new(KeyframeGate::default()));
        let mut edges = Vec::new();
        for url in config.urls {
            let edge = Arc::new(EdgeShared {
                url,
                status: Mutex::new(Status {
                    state: EdgeState::Connecting,
                    viewers: 0,
                    error: None,
                    pending: Default::default(),
                }),
                bytes_sent: AtomicU64::new(0),
                send_drops: AtomicU64::new(0),
                keyframe_requests: AtomicU64::new(0),
                keyframes_forced: AtomicU64::new(0),
                mountpoints_created: AtomicU64::new(0),
            });
            let (targets_tx, targets_rx) = watch::channel(None);
            shutdown.spawn(
                "edge-forward",
                forward::run(
                    edge.clone(),
                    pipeline.clone(),
                    targets_rx,
                    gate.clone(),
                    ask_keyframe.clone(),
                    shutdown.token(),
                ),
            );
            shutdown.spawn(
                "edge-poll",
                poll(
                    edge.clone(),
                    MountpointSpec {
                        id: mountpoint,
                        video_fmtp: VIDEO_FMTP.to_owned(),
                    },
                    config.secret.clone(),
                    targets_tx,
                    shutdown.clone(),
                ),
            );
            edges.push(edge);
        }
        Edges {
            inner: Arc::new(Inner {
                policy: config.policy,
                mountpoint,
                edges,
            }),
        }
    }

    /// Whether any edge is configured.
    pub fn is_empty(&self) -> bool {
        self.inner.edges.is_empty()
    }

    /// Every edge's state.
    pub fn report(&self) -> Vec<EdgeReport> {
        self.inner
            .edges
            .iter()
            .map(|e| {
                let status = e.status.locked().clone();
                EdgeReport {
                    url: e.url.clone(),
                    state: status.state,
                    viewers: status.viewers,
                    mountpoint: self.inner.mountpoint,
                    bytes_sent: e.bytes_sent.load(Ordering::Relaxed),
                    send_drops: e.send_drops.load(Ordering::Relaxed),
                    keyframe_requests: e.keyframe_requests.load(Ordering::Relaxed),
                    mountpoints_created: e.mountpoints_created.load(Ordering::Relaxed),
                    error: status.error,
                }
            })
            .collect()
    }

    /// Where the next viewer watches, given the origin's load. `failed` is an edge URL the
    /// asking page could not play from just now: it is not handed back to that page.
    pub fn place(&self, origin: OriginLoad, failed: Option<&str>, now: Instant) -> Placement {
        let candidates: Vec<placement::Candidate> = self
            .inner
            .edges
            .iter()
            .map(|e| {
                let mut status = e.status.locked();
                placement::Candidate {
                    up: status.state == EdgeState::Up,
                    avoid: failed.is_some_and(|f| f.trim_end_matches('/') == e.url),
                    load: usize::try_from(status.viewers)
                        .unwrap_or(usize::MAX)
                        .saturating_add(status.pending.count(now)),
                }
            })
            .collect();
        match placement::choose(self.inner.policy, origin, &candidates) {
            placement::Choice::Origin => Placement::Origin,
            placement::Choice::Edge(i) => {
                let edge = &self.inner.edges[i];
                edge.status.locked().pending.add(now);
                Placement::Edge {
                    url: edge.url.clone(),
                    mountpoint: self.inner.mountpoint,
                }
            }
        }
    }
}

/// One edge's poll loop (see the module note, steps 2, 3 and 5).
async fn poll(
    edge: Arc<EdgeShared>,
    spec: MountpointSpec,
    secret: Option<EdgeSecret>,
    targets: watch::Sender<Option<Targets>>,
    shutdown: Shutdown,
) {
    let client = match Client::new(&edge.url) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(edge = %edge.url, error = %e, "cannot make an HTTP client for an edge");
            return;
        }
    };
    let mut session: Option<Handle> = None;
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let was = edge.status.locked().state;
        let result = tokio::select! {
            () = shutdown.cancelled() => break,
            result = check(&client, &edge, &spec, secret.as_ref(), &mut session) => result,
        };
        match result {
            Ok(target_ports) => {
                if was != EdgeState::Up {
                    tracing::info!(edge = %edge.url, mountpoint = spec.id, "edge up");
                }
                targets.send_if_modified(|t| {
                    let changed = *t != Some(target_ports);
                    *t = Some(target_ports);
                    changed
                });
            }
            Err(e) => {
                if was != EdgeState::Down {
                    tracing::warn!(edge = %edge.url, error = %e, "edge down");
                }
                // A refusal (a wrong key) comes over a working session: keep it rather than
                // leave one behind on the edge every poll until Janus times them out.
                if !matches!(e, JanusError::Plugin { .. }) {
                    session = None;
                }
                {
                    let mut status = edge.status.locked();
                    status.state = EdgeState::Down;
                    status.error = Some(e.to_string());
                }
                targets.send_if_modified(|t| t.take().is_some());
            }
        }
    }
    // Leave nothing behind on the edges that are still there.
    if let Some(at) = session {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = client.destroy(at, spec.id, secret.as_ref()).await;
            client.close(at).await;
        })
        .await;
    }
}

/// One poll: a session if we have none, our mountpoint if the edge has none, then its state.
async fn check(
    client: &Client,
    edge: &EdgeShared,
    spec: &MountpointSpec,
    secret: Option<&EdgeSecret>,
    session: &mut Option<Handle>,
) -> Result<Targets, JanusError> {
    let at = match *session {
        Some(at) => at,
        None => {
            let at = client.open().await?;
            *session = Some(at);
            at
        }
    };
    let info = match client.info(at, spec.id).await {
        Err(JanusError::Plugin { code, .. }) if code == janus::NO_SUCH_MOUNTPOINT => {
            client.create(at, spec, secret).await?;
            edge.mountpoints_created.fetch_add(1, Ordering::Relaxed);
            tracing::info!(edge = %edge.url, mountpoint = spec.id, "mountpoint created");
            client.info(at, spec.id).await?
        }
        Err(JanusError::SessionGone) => {
            *session = None;
            return Err(JanusError::SessionGone);
        }
        other => other?,
    };
    let host = edge_host(&edge.url)?;
    let addr = |port: u16| resolve(&host, port);
    let found = Targets {
        video: addr(info.video_port).await?,
        audio: addr(info.audio_port).await?,
        rtcp: match info.video_rtcp_port {
            Some(port) => Some(addr(port).await?),
            None => None,
        },
    };
    let mut status = edge.status.locked();
    status.state = EdgeState::Up;
    status.viewers = info.viewers;
    status.error = None;
    Ok(found)
}

fn edge_host(url: &str) -> Result<String, JanusError> {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .ok_or_else(|| JanusError::Protocol(format!("no host in {url}")))
}

async fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, JanusError> {
    tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.is_ipv4()))
        .ok_or_else(|| JanusError::Unreachable(format!("cannot resolve {host} to an IPv4 address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print_and_compare() {
        let secret = EdgeSecret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "EdgeSecret(…)");
        assert!(secret.matches("hunter2"));
        assert!(!secret.matches("hunter3"));
    }

    #[test]
    fn edge_urls_are_checked() {
        assert_eq!(
            check_url("http://127.0.0.1:8088/janus/").unwrap(),
            "http://127.0.0.1:8088/janus"
        );
        assert!(check_url("ftp://x/janus").unwrap_err().contains("--edge"));
        assert!(check_url("not a url").unwrap_err().contains("--edge"));
        assert!(
            check_url("http://admin:pw@x:8088/janus")
                .unwrap_err()
                .contains("--edge-secret")
        );
    }

    #[test]
    fn no_edges_places_everyone_on_the_origin() {
        let edges = Edges::none();
        let full = OriginLoad {
            viewers: 9,
            max: 9,
            saturated: false,
        };
        assert_eq!(edges.place(full, None, Instant::now()), Placement::Origin);
        assert!(edges.report().is_empty());
    }
}
