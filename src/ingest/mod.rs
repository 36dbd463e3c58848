//! WHIP ingest (RFC 9725): the streamer's camera and mic from OBS, a browser or a phone, into
//! the composite's webcam and mic slots.
//!
//! One publisher at a time. Its WebRTC session runs on str0m (ICE-lite, receive only) on a UDP
//! socket of its own (`run.rs`). What it receives goes on, as plain RTP over loopback, to a
//! webcam and a mic feed the pipeline opens from GStreamer descriptions (`udpsrc`, jitter
//! buffer, depayloader, decoder; `publisher.rs`). From there the feeds behave as a local camera
//! and mic do: the same slots, the same ducking, the camera-off slate when frames stop.
//!
//! The workflow lives in the loop, which owns the sessions: a publish is accepted or refused
//! there (a second publisher is a conflict unless it replaces the first), and the loop tells
//! the pipeline when the publisher's feeds start and when they end (DELETE, silence, a
//! replacement, shutdown).

mod publisher;
mod run;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;

pub use publisher::PublisherId;

/// Default UDP port of the ingest: the fan-out's default plus one.
pub const DEFAULT_PORT: u16 = crate::broadcast::DEFAULT_PORT + 1;

/// A publisher not heard from for this long is gone (its slate shows sooner: the webcam's own
/// watchdog sees the frames stop).
const PUBLISHER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the ingest listens and what it tells publishers.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// UDP address to bind.
    pub bind: SocketAddr,
    /// Address put in the answer's ICE candidate: what publishers send to.
    pub advertise: SocketAddr,
    /// A key that may publish and do nothing else (OBS's Bearer token), besides the host's.
    pub key: Option<crate::party::Key>,
}

/// Why a publish or an unpublish was refused, in words for the publisher.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The offer is not SDP we can use.
    #[error("malformed SDP offer: {0}")]
    BadOffer(String),
    /// Nothing in the offer can be shown.
    #[error("{0}")]
    Unsupported(String),
    /// Someone already publishes, and this one did not ask to replace them.
    #[error(
        "someone is already publishing; ask to replace them (?replace=true) or stop them first"
    )]
    Busy,
    /// No such publisher session.
    #[error("no such publisher session")]
    NotFound,
    /// The pipeline would not take the publisher's feeds.
    #[error("the party cannot show the publisher: {0}")]
    Pipeline(String),
    /// The UDP socket cannot be bound.
    #[error("cannot bind the WHIP port {0} (--whip-port): {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The ingest has stopped.
    #[error("the ingest has stopped")]
    Stopped,
}

/// A publisher's accepted session.
#[derive(Debug)]
pub struct Published {
    /// Session id, for the WHIP resource URL.
    pub id: PublisherId,
    /// The SDP answer.
    pub answer: String,
}

/// The publisher now, as `/healthz` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublisherState {
    /// Session id.
    pub id: String,
    /// The video codec it sends.
    pub video: String,
    /// Whether it sends audio.
    pub audio: bool,
    /// ICE and DTLS completed.
    pub connected: bool,
    /// RTP packets received and passed on.
    pub packets: u64,
}

enum Command {
    Publish(
        Box<publisher::Accepted>,
        bool,
        oneshot::Sender<Result<(), IngestError>>,
    ),
    Unpublish(PublisherId, oneshot::Sender<Result<(), IngestError>>),
    State(oneshot::Sender<Option<PublisherState>>),
}

/// Handle to the ingest. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    commands: mpsc::UnboundedSender<Command>,
    advertise: SocketAddr,
    key: Option<std::sync::Arc<crate::party::Key>>,
}

impl Ingest {
    /// Binds the UDP socket and takes publishers into `pipeline` until `shutdown`.
    pub fn start(
        mut config: IngestConfig,
        pipeline: Pipeline,
        shutdown: &Shutdown,
    ) -> Result<Self, IngestError> {
        crate::broadcast::init_crypto();
        let socket = std::net::UdpSocket::bind(config.bind)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| IngestError::Bind(config.bind, e))?;
        if config.advertise.port() == 0 {
            let bound = socket
                .local_addr()
                .map_err(|e| IngestError::Bind(config.bind, e))?;
            config.advertise.set_port(bound.port());
        }
        let (commands, inbox) = mpsc::unbounded_channel();
        shutdown.spawn(
            "ingest",
            run::run(socket, inbox, pipeline, shutdown.token()),
        );
        Ok(Self {
            commands,
            advertise: config.advertise,
            key: config.key.map(std::sync::Arc::new),
        })
    }

    /// Whether `presented` is the ingest key (compared in constant time).
    pub fn is_ingest_key(&self, presented: &str) -> bool {
        self.key.as_ref().is_some_and(|k| k.matches(presented))
    }

    /// The ingest key, for the streamer's own terminal and the host's page only.
    pub fn key(&self) -> Option<&crate::party::Key> {
        self.key.as_deref()
    }

    /// Accepts a publisher's offer: answers it, or says in one line why not. Someone already
    /// publishing is a conflict unless `replace`.
    pub async fn publish(&self, offer: &str, replace: bool) -> Result<Published, IngestError> {
        let accepted = publisher::accept(offer, self.advertise, Instant::now())?;
        let published = Published {
            id: accepted.id,
            answer: accepted.answer.clone(),
        };
        self.ask(|reply| Command::Publish(Box::new(accepted), replace, reply))
            .await??;
        Ok(published)
    }

    /// Ends publisher `id`'s session: the local camera and mic come back.
    pub async fn unpublish(&self, id: PublisherId) -> Result<(), IngestError> {
        self.ask(|reply| Command::Unpublish(id, reply)).await?
    }

    /// The publisher now, if any.
    pub async fn state(&self) -> Result<Option<PublisherState>, IngestError> {
        self.ask(Command::State).await
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, IngestError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .map_err(|_| IngestError::Stopped)?;
        rx.await.map_err(|_| IngestError::Stopped)
    }
}
