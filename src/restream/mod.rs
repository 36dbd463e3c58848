//! Restream: the composite to RTMP servers (Twitch, YouTube, an nginx of one's own), as the
//! broadcast's second road to viewers. Twitch is then the CDN.
//!
//! ```text
//!   pipeline ── H.264 (the main encode, not encoded again) + AAC from the mix ──► EncodedFeed
//!                                                                                    │
//!   one task per target (push.rs): appsrc → parse → flvmux → rtmp2sink ──► rtmp(s)://…/app/KEY
//!        └─ failed: wait (target.rs: 0.5, 1, 2, 2 s…) and connect again; the viewers never see it
//! ```
//!
//! Targets come from `--restream` at start and from the host page while live
//! ([`Restream::add`], [`Restream::remove`]). Each has a task owned by the party's
//! [`Shutdown`]; removing a target stops its task. The stream key is in the URL only for the
//! sink that connects; everything else sees [`TargetUrl::shown`].

mod push;
pub mod target;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use crate::util::lock::Locked;

use target::Backoff;
pub use target::TargetUrl;

/// Most targets at once: each is an upload of the whole stream.
pub const MAX_TARGETS: usize = 8;

/// Why a target cannot be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum RestreamError {
    /// The URL is not a usable target; the message says why, without the key.
    #[error("{0}")]
    Invalid(String),
    /// The target is already there, or there are [`MAX_TARGETS`].
    #[error("{0}")]
    Conflict(String),
    /// No target has this id.
    #[error("no restream target has the id {0}")]
    NotFound(u32),
    /// This party cannot restream (not H.264, no AAC encoder); the message says why.
    #[error("cannot restream: {0}")]
    Unavailable(String),
}

/// The restream of a party (`--restream`, repeatable).
#[derive(Debug, Clone, Default)]
pub struct RestreamConfig {
    /// The targets at start.
    pub targets: Vec<TargetUrl>,
    /// `TWITCH_STREAM_KEY`, for targets added from the host page without a key.
    pub stream_key: Option<StreamKey>,
}

/// A stream key from the environment; shown nowhere, not even in `Debug`.
#[derive(Clone)]
pub struct StreamKey(String);

impl StreamKey {
    /// The key given by the streamer.
    pub fn new(text: impl Into<String>) -> StreamKey {
        StreamKey(text.into())
    }
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(…)")
    }
}

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Connecting, or connected and waiting for the first bytes to leave.
    Connecting,
    /// The stream is flowing to the server.
    Live,
    /// The last attempt failed; another comes after the wait.
    Retrying,
}

/// One target as `/healthz` and the host page show it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// Its id, for removing it.
    pub id: u32,
    /// Its URL with the stream key hidden.
    pub url: String,
    /// Where it stands.
    pub status: Status,
    /// What reached the server over the last second, in kbit/s (0 unless live).
    pub bitrate_kbps: u32,
    /// How many times it connected again after a failure.
    pub reconnects: u32,
    /// Why the last attempt failed, the key hidden.
    pub last_error: Option<String>,
}

/// What a target's task and its readers share.
pub(crate) struct TargetShared {
    id: u32,
    url: TargetUrl,
    state: Mutex<TargetState>,
}

#[derive(Debug)]
struct TargetState {
    status: Status,
    bitrate_kbps: u32,
    reconnects: u32,
    last_error: Option<String>,
}

impl TargetShared {
    fn set_status(&self, status: Status) {
        let mut state = self.state.locked();
        if state.status != status {
            if status == Status::Live {
                tracing::info!(target = self.url.shown(), "restream is live");
            }
            state.status = status;
        }
        if status != Status::Live {
            state.bitrate_kbps = 0;
        }
    }

    fn set_bitrate(&self, kbps: u32) {
        self.state.locked().bitrate_kbps = kbps;
    }

    fn report(&self) -> TargetReport {
        let state = self.state.locked();
        TargetReport {
            id: self.id,
            url: self.url.shown().to_owned(),
            status: state.status,
            bitrate_kbps: state.bitrate_kbps,
            reconnects: state.reconnects,
            last_error: state.last_error.clone(),
        }
    }
}

/// Handle to the party's restream. Cheap to clone.
#[derive(Clone)]
pub struct Restream {
    inner: Arc<Inner>,
}

struct Inner {
    pipeline: Pipeline,
    keyframe: Arc<dyn Fn() + Send + Sync>,
    shutdown: Shutdown,
    stream_key: Option<StreamKey>,
    targets: Mutex<Vec<Running>>,
    next_id: AtomicU32,
}

struct Running {
    shared: Arc<TargetShared>,
    stop: CancellationToken,
}

impl Restream {
    /// Starts the targets of `config`. `keyframe` asks the encoder for a keyframe through the
    /// party's gate (at most one a second for everybody). Fails when targets are given and
    /// this party cannot restream.
    pub fn start(
        config: RestreamConfig,
        pipeline: Pipeline,
        keyframe: Arc<dyn Fn() + Send + Sync>,
        shutdown: &Shutdown,
    ) -> Result<Restream, RestreamError> {
        let restream = Restream {
            inner: Arc::new(Inner {
                pipeline,
                keyframe,
                shutdown: shutdown.clone(),
                stream_key: config.stream_key,
                targets: Mutex::new(Vec::new()),
                next_id: AtomicU32::new(1),
            }),
        };
        for url in config.targets {
            restream.start_target(url)?;
        }
        Ok(restream)
    }

    /// Adds a target while live: `text` is a URL or `twitch`, as `--restream` takes.
    pub fn add(&self, text: &str) -> Result<TargetReport, RestreamError> {
        let key = self.inner.stream_key.as_ref().map(|k| k.0.as_str());
        let url = TargetUrl::parse(text, key).map_err(RestreamError::Invalid)?;
        self.start_target(url)
    }

    /// Stops and forgets target `id`.
    pub fn remove(&self, id: u32) -> Result<(), RestreamError> {
        let mut targets = self.inner.targets.locked();
        let at = targets
            .iter()
            .position(|t| t.shared.id == id)
            .ok_or(RestreamError::NotFound(id))?;
        let gone = targets.remove(at);
        gone.stop.cancel();
        tracing::info!(target = gone.shared.url.shown(), "restream target removed");
        Ok(())
    }

    /// Every target, in the order they were added.
    pub fn report(&self) -> Vec<TargetReport> {
        self.inner
            .targets
            .locked()
            .iter()
            .map(|t| t.shared.report())
            .collect()
    }

    fn start_target(&self, url: TargetUrl) -> Result<TargetReport, RestreamError> {
        // Asked first, so a party that cannot restream says why before any task starts.
        drop(
            self.inner
                .pipeline
                .encoded_feed()
                .map_err(|e| RestreamError::Unavailable(e.to_string()))?,
        );
        let mut targets = self.inner.targets.locked();
        if targets.iter().any(|t| t.shared.url == url) {
            return Err(RestreamError::Conflict(format!(
                "already restreaming to {}",
                url.shown()
            )));
        }
        if targets.len() >= MAX_TARGETS {
            return Err(RestreamError::Conflict(format!(
                "at most {MAX_TARGETS} restream targets at once"
            )));
        }
        let shared = Arc::new(TargetShared {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            url,
            state: Mutex::new(TargetState {
                status: Status::Connecting,
                bitrate_kbps: 0,
                reconnects: 0,
                last_error: None,
            }),
        });
        let owner = self.inner.shutdown.child();
        let stop = owner.token();
        tracing::info!(target = shared.url.shown(), "restreaming");
        owner.spawn(
            "restream",
            run(
                shared.clone(),
                self.inner.pipeline.clone(),
                self.inner.keyframe.clone(),
                stop.clone(),
            ),
        );
        let report = shared.report();
        targets.push(Running { shared, stop });
        Ok(report)
    }
}

/// One target's life: connect, and after each failure wait and connect again, until stopped.
async fn run(
    target: Arc<TargetShared>,
    pipeline: Pipeline,
    keyframe: Arc<dyn Fn() + Send + Sync>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        if attempts > 1 {
            target.state.locked().reconnects = attempts - 1;
        }
        let started = Instant::now();
        backoff.connected(started);
        let ended = push::connect(&target, &pipeline, keyframe.as_ref(), &stop).await;
        let push::Ended::Failed(why) = ended else {
            return;
        };
        let wait = backoff.failed(Instant::now());
        tracing::warn!(
            target = target.url.shown(),
            error = why.as_str(),
            retry_in_s = wait.as_secs(),
            "restream failed; trying again"
        );
        {
            let mut state = target.state.locked();
            state.last_error = Some(why);
        }
        target.set_status(Status::Retrying);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
