//! The host pipeline: movie, webcam and mic in; one composite, encoded once, out as RTP.
//!
//! ```text
//!  movie feed ──┐ (own pipelines, so they can pause, seek, swap or die)
//!  webcam feed ─┼─► slots ─► compositor + audiomixer ─► x264/opus ─► RTP appsinks ─► subscribers
//!  mic feed ────┘                 ▲ layout, ducking   │              └─► recording (--record)
//!                                 │                   └─► on demand: 360p H.264, VP8 720p/360p
//!                        conductor thread (controls, watchdog, health)
//! ```
//!
//! [`Pipeline`] is the handle the rest of the program holds. It knows nothing of HTTP or
//! viewers: it offers RTP, keyframes on request, controls and health.
//!
//! - The handle checks what a control asks ([`controls`]: ranges, seek positions, devices, the
//!   go-live plan) and sends the conductor a command.
//! - `conductor`: the one thread that applies commands to the composite (`canvas`) and the
//!   feeds (`feed`), runs the timers and publishes [`Health`] (`health`).
//! - A feed reports what its bus says as a `FeedReport`, through a callback the conductor
//!   gives it; feeds know nothing of the conductor.
//! - Renditions ([`output::RenditionId`]), as the [`ladder`] file lists them: the main encode
//!   (its first rung) always runs; the smaller rungs in the main codec, and every rung in each
//!   fallback codec (VP8, for browsers without H.264), encode the same frames, scaled, only
//!   while [`Pipeline::set_rendition_active`] says so (`rendition`). All of them stamp the
//!   same RTP timestamp on the same frame.
//! - The composite shows pictures drawn by [`crate::overlay`]; the chat panel's are handed in
//!   through [`Pipeline::set_chat_panel`] (by the `panel` module).

mod canvas;
mod conductor;
pub mod controls;
mod ducking;
mod feed;
mod health;
mod keyframe;
pub mod ladder;
pub mod layout;
pub mod layouts;
pub mod output;
pub mod presets;
mod rendition;
mod slot;
pub mod source;
mod tap;
pub mod timecode;

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer_video as gst_video;
use tokio::sync::{broadcast, oneshot, watch};

use gst::prelude::*;

use crate::gst_util::MissingElement;
use crate::overlay::chat::ChatArea;
use crate::util::lock::Locked;
pub use canvas::FPS;
use conductor::{Command, Conductor, Shared};
pub use controls::{AudioChange, Devices, GoLivePlan};
pub use health::{
    ErrorReport, Geometry, Health, HealthEvent, MicState, MovieHealth, MovieState, OutputHealth,
    PipelineState, RenditionHealth, RenditionState, WebcamState,
};
use ladder::{Encode, Ladder};
use layout::Layout;
use output::{CodecParams, Output, RenditionId, RenditionInfo, RtpPacket};
use presets::EncoderPreset;
use rendition::Rendition;
use source::{MicSource, MovieSource, Publication, WebcamSource};
pub use tap::EncodedFeed;

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
    /// An argument the pipeline refuses: out of range, past the end of the movie, a switch
    /// for a device that is not there. Asking again with the same argument cannot succeed.
    #[error("{0}")]
    Invalid(String),
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

impl PipelineError {
    /// An error from GStreamer glue that should not fail.
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<MissingElement> for PipelineError {
    fn from(e: MissingElement) -> Self {
        Self::MissingPlugin(e.to_string())
    }
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
    /// The layouts the host may switch to while live.
    pub layouts: layouts::LayoutFiles,
    /// Video encoder preset.
    pub encoder: EncoderPreset,
    /// Video bitrate of the main encode.
    pub bitrate_kbps: u32,
    /// The renditions: sizes, their bitrates, fallback codecs (`pipelines/ladder.toml`).
    pub ladder: Ladder,
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

/// Handle to the running pipeline. Cheap to clone; the pipeline stops when
/// [`Pipeline::shutdown`] is called.
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
    /// What the main encode is (size, bitrate).
    main: Encode,
    /// The on-demand renditions (the main one is the fields above).
    renditions: Vec<Arc<Rendition>>,
    /// The encoded streams for the restream, or why there are none.
    tap: Result<Arc<tap::Tap>, String>,
    /// What the conductor announces as the chat area; handed out to the chat panel.
    chat_area: watch::Receiver<Option<ChatArea>>,
    /// The devices configured at start, for checking switches before they are sent.
    devices: Devices,
    /// The layouts the host may switch to.
    layouts: layouts::LayoutFiles,
}

impl Pipeline {
    /// Builds and starts the pipeline. Fails, with a message naming the culprit, when the
    /// movie cannot be opened, a plugin is missing or a description is invalid.
    pub fn start(settings: Settings) -> Result<Self, PipelineError> {
        gst::init().map_err(|e| PipelineError::Internal(format!("GStreamer: {e}")))?;
        let output = Output::new();
        let canvas = canvas::Canvas::build(&settings, &output)?;
        let outputs = &canvas.outputs;
        let sink_pad = |sink: &gstreamer_app::AppSink| sink.static_pad("sink").expect("sink pad");
        let (video_sink_pad, audio_sink_pad) =
            (sink_pad(&outputs.video_sink), sink_pad(&outputs.audio_sink));
        let (encoder_src, video_codec, audio_codec) = (
            outputs.encoder_src.clone(),
            outputs.video_codec.clone(),
            outputs.audio_codec.clone(),
        );
        let (main, renditions) = (outputs.main.clone(), outputs.renditions.clone());
        let tap = outputs.tap.clone();
        let (conductor, link) = Conductor::new(canvas, &settings, output.stats.clone());
        conductor.spawn()?;
        Ok(Self {
            inner: Arc::new(Inner {
                commands: Mutex::new(link.commands),
                shared: link.shared,
                output,
                encoder_src,
                video_sink_pad,
                audio_sink_pad,
                video_codec,
                audio_codec,
                main,
                renditions,
                tap,
                chat_area: link.chat_area,
                devices: Devices::of(&settings),
                layouts: settings.layouts.clone(),
            }),
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

    /// Moves the movie to `position`; refused ([`PipelineError::Invalid`]) past its end.
    pub async fn seek(&self, position: Duration) -> Result<(), PipelineError> {
        let position = controls::seek_position(position)?;
        self.request(|r| Command::Seek(position, r)).await
    }

    /// Moves the movie to `position_s` seconds, a number from outside (an API call):
    /// refused unless finite, 0 or more and not past the end.
    pub async fn seek_seconds(&self, position_s: f64) -> Result<(), PipelineError> {
        self.seek(controls::seek_seconds(position_s)?).await
    }

    /// Replaces the movie. The current one keeps playing until the new one is ready; if the
    /// new one cannot be opened, nothing changes and the error says why.
    pub async fn load(&self, movie: MovieSource) -> Result<(), PipelineError> {
        self.request(|r| Command::Load(movie, r)).await
    }

    /// The layout `spec` names, as the host may choose it while live
    /// ([`layouts::LayoutFiles`]); the file is read off the async runtime.
    pub async fn find_layout(&self, spec: &str) -> Result<Layout, PipelineError> {
        let (files, spec) = (self.inner.layouts.clone(), spec.to_owned());
        tokio::task::spawn_blocking(move || files.load(&spec))
            .await
            .map_err(|e| PipelineError::Internal(format!("layout reader: {e}")))?
            .map_err(PipelineError::from)
    }

    /// Switches layout while live.
    pub async fn set_layout(&self, layout: Layout) -> Result<(), PipelineError> {
        self.request(|r| Command::Layout(Box::new(layout), r)).await
    }

    /// Turns the webcam on or off (off shows the camera-off slate); "on" is refused when
    /// no webcam is configured.
    pub async fn set_webcam(&self, on: bool) -> Result<(), PipelineError> {
        self.inner.devices.check_webcam(on)?;
        self.request(|r| Command::Webcam(on, r)).await
    }

    /// Puts a publisher's camera and mic (WHIP ingest) in place of the local ones, or, with
    /// `None`, goes back to them.
    pub async fn publish(&self, publication: Option<Publication>) -> Result<(), PipelineError> {
        self.request(|r| Command::Publish(publication.map(Box::new), r))
            .await
    }

    /// Mutes or unmutes the microphone; refused when no mic is configured.
    pub async fn set_mic_muted(&self, muted: bool) -> Result<(), PipelineError> {
        self.inner.devices.check_mic()?;
        self.request(|r| Command::MicMute(muted, r)).await
    }

    /// Sets the movie's volume ([`controls::VOLUME_RANGE`]; ducking still applies on top)
    /// and/or how many dB it ducks while the mic carries voice ([`controls::DUCK_DB_RANGE`]).
    /// Both are checked before either is applied.
    pub async fn set_audio(
        &self,
        volume: Option<f64>,
        duck_db: Option<f64>,
    ) -> Result<(), PipelineError> {
        let change = AudioChange::checked(volume, duck_db)?;
        self.request(|r| Command::Audio(change, r)).await
    }

    /// Goes live: checks the whole `plan` before anything changes, then loads the movie,
    /// switches the layout, the webcam and the mic, in that order, and plays.
    pub async fn go_live(&self, plan: GoLivePlan) -> Result<(), PipelineError> {
        let plan = plan.checked(self.inner.devices)?;
        if let Some(movie) = plan.movie {
            self.load(movie).await?;
        }
        if let Some(layout) = plan.layout {
            self.set_layout(layout).await?;
        }
        if let Some(on) = plan.webcam {
            self.set_webcam(on).await?;
        }
        if let Some(on) = plan.mic {
            self.set_mic_muted(!on).await?;
        }
        self.play().await
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
            .all_headers(false)
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

    /// The composite as H.264 (the main encode, not encoded again) and AAC from the mix, for
    /// muxing outside the pipeline; the AAC encode runs while a feed is held. Refused, saying
    /// why, when the main encode is not H.264 or no AAC encoder is installed.
    pub fn encoded_feed(&self) -> Result<EncodedFeed, PipelineError> {
        match &self.inner.tap {
            Ok(tap) => Ok(tap.open()),
            Err(why) => Err(PipelineError::Config(why.clone())),
        }
    }

    /// Every rendition of the composite, the main one first. An on-demand one encodes only
    /// between [`Pipeline::set_rendition_active`] calls.
    pub fn renditions(&self) -> Vec<RenditionInfo> {
        let main = &self.inner.main;
        let main = RenditionInfo {
            id: RenditionId::MAIN,
            codec: self.codecs().video,
            on_demand: false,
            name: main.name.clone(),
            width: main.width,
            height: main.height,
            bitrate_kbps: main.bitrate_kbps,
        };
        std::iter::once(main)
            .chain(self.inner.renditions.iter().map(|r| r.info()))
            .collect()
    }

    /// The rendition named `name` in the ladder (`360p`) encoded in `codec` (an RTP encoding
    /// name, `H264`, any case), if the pipeline has one.
    pub fn rendition_id(&self, codec: &str, name: &str) -> Option<RenditionId> {
        let main = &self.inner.main;
        if main.preset.codec.eq_ignore_ascii_case(codec) && main.name == name {
            return Some(RenditionId::MAIN);
        }
        self.inner
            .renditions
            .iter()
            .find(|r| r.codec().eq_ignore_ascii_case(codec) && r.name() == name)
            .map(|r| r.id())
    }

    /// RTP packets of rendition `id` from now on; `None` when there is no such rendition.
    pub fn subscribe_rendition(&self, id: RenditionId) -> Option<broadcast::Receiver<RtpPacket>> {
        if id == RenditionId::MAIN {
            return Some(self.subscribe_video());
        }
        self.rendition(id).map(|r| r.subscribe())
    }

    /// Starts (`true`) or stops an on-demand rendition; its first packets after a start are a
    /// keyframe. Asking for the state it is in changes nothing, and the main rendition is
    /// always on. Returns at once: nothing waits for the encoder. Fails for an unknown id or
    /// once the pipeline has stopped.
    pub fn set_rendition_active(&self, id: RenditionId, active: bool) -> Result<(), PipelineError> {
        if id == RenditionId::MAIN {
            return Ok(());
        }
        let rendition = self
            .rendition(id)
            .ok_or_else(|| PipelineError::Invalid(format!("there is no rendition {id}")))?;
        if self.inner.shared.health.locked().state == PipelineState::Stopped {
            return Err(PipelineError::Stopped);
        }
        rendition.set_active(active, std::time::Instant::now());
        Ok(())
    }

    /// Asks rendition `id`'s encoder for a keyframe now; nothing for an unknown id.
    pub fn request_keyframe_of(&self, id: RenditionId) {
        if id == RenditionId::MAIN {
            self.request_keyframe();
        } else if let Some(r) = self.rendition(id) {
            r.request_keyframe();
        }
    }

    fn rendition(&self, id: RenditionId) -> Option<&Rendition> {
        self.inner
            .renditions
            .iter()
            .find(|r| r.id() == id)
            .map(|r| &**r)
    }

    /// The latest health snapshot (refreshed 20 times a second).
    pub fn health(&self) -> Health {
        self.inner.shared.health.locked().clone()
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
            .locked()
            .send(command)
            .map_err(|_| PipelineError::Stopped)
    }
}
