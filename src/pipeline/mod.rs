//! The host pipeline: movie, webcam and mic in; one composite, encoded once, out as RTP.
//!
//! ```text
//!  movie feed ──┐ (own pipelines, so they can pause, seek, swap or die)
//!  webcam feed ─┼─► slots ─► compositor + audiomixer ─► x264/opus ─► RTP appsinks ─► subscribers
//!  mic feed ────┘                 ▲ layout, ducking                  └─► recording (--record)
//!                        conductor thread (controls, watchdog, health)
//! ```
//!
//! [`Pipeline`] is the handle the rest of the program holds. It knows nothing of HTTP or
//! viewers: it offers RTP, keyframes on request, controls and health.

mod canvas;
mod conductor;
mod ducking;
mod feed;
pub mod layout;
pub mod output;
pub mod presets;
mod slot;
pub mod source;
pub mod timecode;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_video as gst_video;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot, watch};

use gst::prelude::*;

pub use canvas::{ChatArea, FPS};
use conductor::{Command, Conductor, Shared};
use layout::Layout;
use output::{CodecParams, Output, OutputStats, RtpPacket};
use presets::EncoderPreset;
use source::{MicSource, MovieSource, WebcamSource};

/// Errors at the pipeline's boundary. Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The movie cannot be found, opened or decoded.
    #[error("{0}")]
    Movie(String),
    /// A webcam or mic source is unusable.
    #[error("{0}")]
    Source(String),
    /// A preset, source description or setting is invalid.
    #[error("{0}")]
    Config(String),
    /// A layout file is invalid.
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    /// A GStreamer plugin is not installed.
    #[error("{0}")]
    MissingPlugin(String),
    /// A control cannot be applied now.
    #[error("{0}")]
    Control(String),
    /// No movie is loaded.
    #[error("no movie is loaded")]
    NoMovie,
    /// The pipeline has stopped.
    #[error("the pipeline has stopped")]
    Stopped,
    /// Something that should not happen; the message names it.
    #[error("internal pipeline error: {0}")]
    Internal(String),
}

/// What the pipeline is asked to do. Cloned freely; the pipeline keeps its own copy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The movie.
    pub movie: MovieSource,
    /// Start the movie over at its end (the demo) instead of showing the intermission slate.
    pub loop_movie: bool,
    /// The webcam.
    pub webcam: WebcamSource,
    /// The microphone.
    pub mic: MicSource,
    /// Where things go on the canvas.
    pub layout: Layout,
    /// Video encoder preset.
    pub encoder: EncoderPreset,
    /// Video bitrate.
    pub bitrate_kbps: u32,
    /// How much quieter the movie gets while the streamer talks.
    pub duck_db: f64,
    /// Write the encoded streams to this Matroska file too.
    pub record: Option<PathBuf>,
    /// Stamp a machine-readable clock into each frame (see [`timecode`]), for latency checks.
    pub timecode: bool,
}

/// Default video bitrate: 720p30 looks good at 2.5 Mbit/s and fits most upload links.
pub const DEFAULT_BITRATE_KBPS: u32 = 2500;

/// Default ducking amount.
pub const DEFAULT_DUCK_DB: f64 = 12.0;

/// Overall state of the composite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    /// Being built.
    Starting,
    /// Producing output.
    Live,
    /// The composite itself failed; see `errors`.
    Failed,
    /// Shut down.
    Stopped,
}

/// State of the movie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MovieState {
    /// Playing.
    Playing,
    /// Paused by the host; viewers see the frozen frame.
    Paused,
    /// Reached its end; viewers see the intermission slate.
    Ended,
    /// Failed mid-way; viewers see the intermission slate.
    Failed,
}

/// State of the webcam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebcamState {
    /// Frames are flowing.
    Live,
    /// It failed or went silent; the slate shows and it is retried.
    Lost,
    /// Turned off by the host.
    Off,
    /// None configured.
    None,
}

/// State of the microphone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MicState {
    /// Mixed in.
    Live,
    /// Muted by the host.
    Muted,
    /// It failed; movie sound only.
    Lost,
    /// None configured.
    None,
}

/// One error from an element, as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// Path of the element that failed.
    pub element: String,
    /// GStreamer's message.
    pub message: String,
    /// Seconds since start.
    pub at_s: f64,
}

/// The movie part of [`Health`].
#[derive(Debug, Clone, Serialize)]
pub struct MovieHealth {
    /// Name of the movie.
    pub title: String,
    /// Playing, paused, ended.
    pub state: MovieState,
    /// Position in the movie.
    pub position_s: Option<f64>,
    /// Length of the movie, when known.
    pub duration_s: Option<f64>,
    /// Whether it starts over at its end.
    pub looping: bool,
}

/// The output part of [`Health`].
#[derive(Debug, Clone, Serialize)]
pub struct OutputHealth {
    /// Encoded video frames so far.
    pub video_frames: u64,
    /// Keyframes among them.
    pub keyframes: u64,
    /// Video RTP packets.
    pub video_packets: u64,
    /// Audio RTP packets.
    pub audio_packets: u64,
    /// Running time of the last encoded frame; only ever grows.
    pub last_video_pts_s: f64,
}

impl From<&OutputStats> for OutputHealth {
    fn from(s: &OutputStats) -> Self {
        Self {
            video_frames: s.video_frames.load(Ordering::Relaxed),
            keyframes: s.keyframes.load(Ordering::Relaxed),
            video_packets: s.video_packets.load(Ordering::Relaxed),
            audio_packets: s.audio_packets.load(Ordering::Relaxed),
            last_video_pts_s: s.last_video_pts_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// A snapshot of the pipeline, served as `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Overall state.
    pub state: PipelineState,
    /// Seconds since start.
    pub uptime_s: f64,
    /// The movie.
    pub movie: MovieHealth,
    /// The webcam.
    pub webcam: WebcamState,
    /// The microphone.
    pub mic: MicState,
    /// Gain applied to the movie sound by ducking (1.0 = not ducked).
    pub movie_gain: f64,
    /// The streamer's movie volume (1.0 = as decoded).
    pub movie_volume: f64,
    /// How many dB the movie ducks under the voice.
    pub duck_db: f64,
    /// Current layout name.
    pub layout: String,
    /// Video encoder preset.
    pub encoder: String,
    /// Video bitrate.
    pub bitrate_kbps: u32,
    /// What left the pipeline.
    pub output: OutputHealth,
    /// The latest element errors, oldest first.
    pub errors: Vec<ErrorReport>,
}

/// Something that happened, for whoever listens (logs, the host page).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HealthEvent {
    /// An element failed.
    Error {
        /// Element path.
        element: String,
        /// Message.
        message: String,
    },
    /// The webcam failed; the slate shows.
    WebcamLost {
        /// Why.
        reason: String,
    },
    /// The movie reached its end.
    MovieEnded,
    /// The movie started over.
    MovieLooped,
    /// Another movie is playing.
    MovieLoaded {
        /// Its name.
        title: String,
    },
}

/// Handle to the running pipeline. Cheap to clone; the pipeline stops when
/// [`Pipeline::shutdown`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    commands: Mutex<mpsc::Sender<Command>>,
    shared: Arc<Shared>,
    output: Output,
    encoder_src: gst::Pad,
    video_sink_pad: gst::Pad,
    audio_sink_pad: gst::Pad,
    video_codec: output::RtpCodec,
    audio_codec: output::RtpCodec,
    /// What the conductor announces as the chat area; handed out to the chat overlay.
    chat_area: watch::Receiver<Option<ChatArea>>,
}

impl Pipeline {
    /// Builds and starts the pipeline. Fails, with a message naming the culprit, when the
    /// movie cannot be opened, a plugin is missing or a description is invalid.
    pub fn start(settings: Settings) -> Result<Self, PipelineError> {
        gst::init().map_err(|e| PipelineError::Internal(format!("GStreamer: {e}")))?;
        let output = Output::new();
        let canvas = canvas::Canvas::build(
            &settings.layout,
            &settings.encoder,
            settings.bitrate_kbps,
            settings.record.as_deref(),
            settings.timecode,
            &output,
        )?;
        let (tx, rx) = mpsc::channel();
        forward_composite_bus(&canvas.pipeline, tx.clone());
        let movie = feed::open_movie(
            &settings.movie,
            (settings.layout.movie.width, settings.layout.movie.height),
            canvas.movie.clone(),
            canvas.movie_audio.clone(),
            tx.clone(),
        )?;
        let shared = Arc::new(Shared {
            health: Mutex::new(placeholder_health(&settings)),
            events: broadcast::channel(64).0,
        });
        let (chat_area_tx, chat_area) = watch::channel(ChatArea::of(&settings.layout));
        let inner = Inner {
            chat_area,
            commands: Mutex::new(tx.clone()),
            shared: shared.clone(),
            output: output.clone(),
            encoder_src: canvas.outputs.encoder_src.clone(),
            video_sink_pad: canvas
                .outputs
                .video_sink
                .static_pad("sink")
                .expect("sink pad"),
            audio_sink_pad: canvas
                .outputs
                .audio_sink
                .static_pad("sink")
                .expect("sink pad"),
            video_codec: canvas.outputs.video_codec.clone(),
            audio_codec: canvas.outputs.audio_codec.clone(),
        };
        let mut conductor = Conductor {
            canvas,
            layout: settings.layout.clone(),
            movie: Some(movie),
            movie_source: settings.movie.clone(),
            movie_state: MovieState::Paused,
            loop_movie: settings.loop_movie,
            webcam_source: settings.webcam.clone(),
            webcam: None,
            webcam_state: WebcamState::None,
            webcam_last_frame: Arc::new(AtomicU64::new(0)),
            webcam_since: Instant::now(),
            mic_source: settings.mic.clone(),
            mic: None,
            mic_state: MicState::None,
            mic_level: Arc::new(AtomicI32::new(-10_000)),
            ducker: ducking::Ducker::new(settings.duck_db),
            movie_gain: 1.0,
            movie_volume: 1.0,
            duck_db: settings.duck_db,
            state: PipelineState::Starting,
            errors: Vec::new(),
            started: Instant::now(),
            stats: output.stats.clone(),
            shared,
            commands: tx,
            encoder: settings.encoder.name.clone(),
            bitrate_kbps: settings.bitrate_kbps,
            chat_area: chat_area_tx,
        };
        if let Err(e) = conductor.start() {
            let _ = conductor.canvas.pipeline.set_state(gst::State::Null);
            return Err(e);
        }
        std::thread::Builder::new()
            .name("conductor".into())
            .spawn(move || conductor.run(rx))
            .map_err(|e| PipelineError::Internal(format!("cannot start the conductor: {e}")))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Resumes the movie.
    pub async fn play(&self) -> Result<(), PipelineError> {
        self.request(Command::Play).await
    }

    /// Pauses the movie; the stream goes on showing the frozen frame.
    pub async fn pause(&self) -> Result<(), PipelineError> {
        self.request(Command::Pause).await
    }

    /// Moves the movie to `position`.
    pub async fn seek(&self, position: Duration) -> Result<(), PipelineError> {
        let position = gst::ClockTime::from_nseconds(position.as_nanos() as u64);
        self.request(|r| Command::Seek(position, r)).await
    }

    /// Replaces the movie. The current one keeps playing until the new one is ready; if the
    /// new one cannot be opened, nothing changes and the error says why.
    pub async fn load(&self, movie: MovieSource) -> Result<(), PipelineError> {
        self.request(|r| Command::Load(movie, r)).await
    }

    /// Switches layout while live.
    pub async fn set_layout(&self, layout: Layout) -> Result<(), PipelineError> {
        self.request(|r| Command::Layout(Box::new(layout), r)).await
    }

    /// Turns the webcam on or off (off shows the camera-off slate).
    pub async fn set_webcam(&self, on: bool) -> Result<(), PipelineError> {
        self.request(|r| Command::Webcam(on, r)).await
    }

    /// Mutes or unmutes the microphone.
    pub async fn set_mic_muted(&self, muted: bool) -> Result<(), PipelineError> {
        self.request(|r| Command::MicMute(muted, r)).await
    }

    /// Sets the movie's volume, 0.0 (silent) to 1.5; ducking still applies on top.
    pub async fn set_volume(&self, volume: f64) -> Result<(), PipelineError> {
        if !(0.0..=1.5).contains(&volume) {
            return Err(PipelineError::Control(format!(
                "volume {volume} is out of range: use 0.0 to 1.5"
            )));
        }
        self.request(|r| Command::Volume(volume, r)).await
    }

    /// Sets how many dB the movie ducks while the mic carries voice (0 to 60).
    pub async fn set_duck_db(&self, db: f64) -> Result<(), PipelineError> {
        if !(0.0..=60.0).contains(&db) {
            return Err(PipelineError::Control(format!(
                "ducking of {db} dB is out of range: use 0 to 60"
            )));
        }
        self.request(|r| Command::DuckDb(db, r)).await
    }

    /// Shows `image` in the layout's chat area (`None`: the plain panel) until the next call
    /// or a layout whose chat area has another size. Returns at once: the picture is swapped
    /// in by the conductor, never drawn on the video side. Fails only when the pipeline has
    /// stopped.
    pub fn set_chat_panel(&self, image: Option<image::RgbaImage>) -> Result<(), PipelineError> {
        self.send(Command::ChatPanel(image))
    }

    /// The chat area of the current layout (`None` when it shows no chat), updated on layout
    /// switches; closed when the pipeline stops.
    pub fn chat_area(&self) -> watch::Receiver<Option<ChatArea>> {
        self.inner.chat_area.clone()
    }

    /// Asks the encoder for a keyframe now (with SPS/PPS), e.g. for a viewer who just joined.
    pub fn request_keyframe(&self) {
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        self.inner.encoder_src.send_event(event);
    }

    /// Video RTP packets from now on.
    pub fn subscribe_video(&self) -> broadcast::Receiver<RtpPacket> {
        self.inner.output.video.subscribe()
    }

    /// Audio RTP packets from now on.
    pub fn subscribe_audio(&self) -> broadcast::Receiver<RtpPacket> {
        self.inner.output.audio.subscribe()
    }

    /// The codecs of both streams, from the payloaders' negotiated caps once they flow.
    pub fn codecs(&self) -> CodecParams {
        CodecParams {
            video: output::codec_from_caps(
                self.inner.video_sink_pad.current_caps().as_deref(),
                &self.inner.video_codec,
            ),
            audio: output::codec_from_caps(
                self.inner.audio_sink_pad.current_caps().as_deref(),
                &self.inner.audio_codec,
            ),
        }
    }

    /// The latest health snapshot (refreshed 20 times a second).
    pub fn health(&self) -> Health {
        self.inner.shared.health.lock().unwrap().clone()
    }

    /// Health events from now on.
    pub fn events(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.shared.events.subscribe()
    }

    /// Stops everything, finishing the recording; returns when done.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    async fn request(
        &self,
        make: impl FnOnce(conductor::Reply) -> Command,
    ) -> Result<(), PipelineError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| PipelineError::Stopped)?
    }

    fn send(&self, command: Command) -> Result<(), PipelineError> {
        self.inner
            .commands
            .lock()
            .unwrap()
            .send(command)
            .map_err(|_| PipelineError::Stopped)
    }
}

fn placeholder_health(settings: &Settings) -> Health {
    Health {
        state: PipelineState::Starting,
        uptime_s: 0.0,
        movie: MovieHealth {
            title: settings.movie.title(),
            state: MovieState::Paused,
            position_s: None,
            duration_s: None,
            looping: settings.loop_movie,
        },
        webcam: WebcamState::None,
        mic: MicState::None,
        movie_gain: 1.0,
        movie_volume: 1.0,
        duck_db: settings.duck_db,
        layout: settings.layout.name.clone(),
        encoder: settings.encoder.name.clone(),
        bitrate_kbps: settings.bitrate_kbps,
        output: OutputHealth::from(&OutputStats::default()),
        errors: Vec::new(),
    }
}

/// Sends the composite's errors and EOS to the conductor.
fn forward_composite_bus(pipeline: &gst::Pipeline, tx: mpsc::Sender<Command>) {
    let bus = pipeline.bus().expect("pipelines have a bus");
    bus.set_sync_handler(move |_, msg| {
        let event = match msg.view() {
            gst::MessageView::Eos(_) => Some(feed::FeedEvent::Eos),
            gst::MessageView::Error(err) => Some(feed::FeedEvent::Error {
                element: msg
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_else(|| "unknown".into()),
                message: err.error().to_string(),
            }),
            gst::MessageView::Warning(w) => {
                tracing::warn!(
                    element = %msg.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                    message = %w.error(),
                    "composite warning"
                );
                None
            }
            _ => None,
        };
        if let Some(event) = event {
            let _ = tx.send(Command::Composite(event));
        }
        gst::BusSyncReply::Drop
    });
}
