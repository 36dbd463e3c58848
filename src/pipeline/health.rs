//! What the pipeline reports: the state of each part, a health snapshot for `/healthz` and
//! the events for whoever listens. Written by the conductor, read through the handle.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::Settings;
use super::ladder::Encode;
use super::layout::{Layout, Rect};
use super::output::{OutputStats, RenditionId};

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

/// Whether a rendition is encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RenditionState {
    /// Frames reach its encoder.
    Running,
    /// Nobody needs it; its encoder sees no frame.
    Idle,
}

/// One rendition in [`Health`].
#[derive(Debug, Clone, Serialize)]
pub struct RenditionHealth {
    /// Which one (0: the main encode).
    pub id: RenditionId,
    /// Its name in the ladder (`720p`).
    pub name: String,
    /// Picture width it encodes.
    pub width: u32,
    /// Picture height it encodes.
    pub height: u32,
    /// Its target bitrate.
    pub bitrate_kbps: u32,
    /// Its RTP encoding name.
    pub codec: String,
    /// Whether it runs only while viewers need it.
    pub on_demand: bool,
    /// Whether it is encoding now.
    pub active: bool,
    /// The same, as a word.
    pub state: RenditionState,
    /// Frames its encoder produced so far.
    pub frames: u64,
    /// Keyframes among them.
    pub keyframes: u64,
    /// RTP packets it sent.
    pub packets: u64,
    /// Seconds after the pipeline's start when it last started.
    pub last_started_s: Option<f64>,
    /// Seconds after the pipeline's start when it last stopped.
    pub last_stopped_s: Option<f64>,
}

impl RenditionHealth {
    /// The main encode, `main`: always running since the start.
    pub fn main(main: &Encode, output: &OutputHealth) -> Self {
        Self {
            id: RenditionId::MAIN,
            name: main.name.clone(),
            width: main.width,
            height: main.height,
            bitrate_kbps: main.bitrate_kbps,
            codec: main.preset.codec.clone(),
            on_demand: false,
            active: true,
            state: RenditionState::Running,
            frames: output.video_frames,
            keyframes: output.keyframes,
            packets: output.video_packets,
            last_started_s: Some(0.0),
            last_stopped_s: None,
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
    /// Where the current layout puts things, in canvas pixels.
    pub geometry: Geometry,
    /// Video encoder preset.
    pub encoder: String,
    /// Video bitrate.
    pub bitrate_kbps: u32,
    /// What left the pipeline (the main rendition's video).
    pub output: OutputHealth,
    /// Every rendition, the main one first.
    pub renditions: Vec<RenditionHealth>,
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

/// Where a layout puts the composite's parts, in canvas pixels: the viewer page lays its
/// live chat exactly over the chat area, scaled as the video is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Geometry {
    /// The canvas: the size of the picture viewers receive.
    pub canvas: CanvasSize,
    /// The movie's area.
    pub movie: Rect,
    /// The webcam's outer rectangle, border included.
    pub webcam: Rect,
    /// The chat area; `None` when the layout burns no chat into the picture.
    pub chat: Option<Rect>,
}

/// A canvas's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CanvasSize {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Geometry {
    /// `layout`'s rectangles.
    pub fn of(layout: &Layout) -> Geometry {
        Geometry {
            canvas: CanvasSize {
                width: layout.width,
                height: layout.height,
            },
            movie: layout.movie,
            webcam: layout.webcam,
            chat: layout.chat,
        }
    }
}

impl Health {
    /// What `/healthz` shows while the pipeline is being built.
    pub fn placeholder(settings: &Settings) -> Health {
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
            geometry: Geometry::of(&settings.layout),
            encoder: settings.encoder.name.clone(),
            bitrate_kbps: settings.bitrate_kbps,
            output: OutputHealth::from(&OutputStats::default()),
            renditions: Vec::new(),
            errors: Vec::new(),
        }
    }
}
