//! The conductor: one thread that owns the composite and the feeds and applies every change to
//! them in order. Controls, feed reports and timers all arrive as [`Command`]s, so no two
//! changes ever race (a seek during a movie swap, a webcam loss during a layout switch).
//!
//! Controls reach it already checked ([`super::controls`]); what only the running pipeline
//! knows (is a movie loaded, how long is it) is checked here.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use tokio::sync::{broadcast, oneshot, watch};

use gst::prelude::*;

use super::canvas::Canvas;
use super::controls::{self, AudioChange};
use super::ducking::Ducker;
use super::feed::{self, Feed, FeedKind, FeedReport, Heartbeat, MovieSlots, Reporter};
use super::health::{Geometry, MovieHealth, RenditionHealth};
use super::layout::Layout;
use super::output::OutputStats;
use super::source::{MicSource, MovieSource, Publication, WebcamSource};
use super::{
    ErrorReport, Health, HealthEvent, MicState, MovieState, OutputHealth, PipelineError,
    PipelineState, Settings, WebcamState,
};
use crate::gst_util::{self, BusEvent};
use crate::overlay::chat::ChatArea;
use crate::overlay::slate::SlateKind;
use crate::util::lock::Locked;

/// How often timers run: ducking, keepalives, the webcam watchdog, health.
const TICK: Duration = Duration::from_millis(50);

/// A webcam silent for this long is considered lost.
const WEBCAM_TIMEOUT: Duration = Duration::from_millis(2500);

/// How long after losing the webcam we try it again (a replugged camera comes back).
const WEBCAM_RETRY: Duration = Duration::from_secs(10);

/// How many pipeline errors `/healthz` keeps.
const MAX_ERRORS: usize = 16;

/// Answer to a control request.
pub type Reply = oneshot::Sender<Result<(), PipelineError>>;

/// Everything the conductor reacts to.
pub enum Command {
    /// Resume the movie.
    Play(Reply),
    /// Pause the movie (the composite keeps running on its last frame).
    Pause(Reply),
    /// Move the movie to a position.
    Seek(gst::ClockTime, Reply),
    /// Open another movie; the current one plays until the new one is ready.
    Load(MovieSource, Reply),
    /// A movie opened by a helper thread (or failed to).
    Loaded(Box<Result<Feed, PipelineError>>, MovieSource, Reply),
    /// Switch layout.
    Layout(Box<Layout>, Reply),
    /// Webcam on (true) or off.
    Webcam(bool, Reply),
    /// Microphone muted (true) or open.
    MicMute(bool, Reply),
    /// A publisher's camera and mic replace the local ones (`None`: back to the local ones).
    Publish(Option<Box<Publication>>, Reply),
    /// The movie's volume (before ducking) and/or ducking depth.
    Audio(AudioChange, Reply),
    /// A chat panel drawn by the overlay (`None`: the plain panel). Nobody waits for an answer:
    /// the renderer must never wait on the video side.
    ChatPanel(Option<image::RgbaImage>),
    /// A feed's bus spoke.
    Feed(FeedReport),
    /// The composite's bus spoke.
    Composite(BusEvent),
    /// Stop everything, finishing the recording.
    Shutdown(oneshot::Sender<()>),
}

/// Shared read side: what `/healthz` shows, refreshed every tick.
pub struct Shared {
    /// Latest health snapshot.
    pub health: Mutex<Health>,
    /// Health events to subscribers.
    pub events: broadcast::Sender<HealthEvent>,
}

/// What the handle keeps of the conductor: the way in, and what it publishes.
pub struct Link {
    /// Where commands go.
    pub commands: Sender<Command>,
    /// Health, refreshed every tick.
    pub shared: Arc<Shared>,
    /// The chat area of the current layout; closed when the conductor ends.
    pub chat_area: watch::Receiver<Option<ChatArea>>,
}

/// Everything the conductor owns.
pub struct Conductor {
    /// Where its commands arrive.
    inbox: Receiver<Command>,
    /// A way into `inbox` for feed reports and the movie loader. Because the conductor holds
    /// it, the inbox never closes under it: it stops on [`Command::Shutdown`].
    commands: Sender<Command>,
    canvas: Canvas,
    layout: Layout,
    movie: Option<Feed>,
    movie_source: MovieSource,
    movie_state: MovieState,
    loop_movie: bool,
    webcam_source: WebcamSource,
    webcam: Option<Feed>,
    webcam_state: WebcamState,
    /// Beaten by every webcam frame; the watchdog reads it.
    webcam_heartbeat: Arc<Heartbeat>,
    /// When the webcam was last started or lost, for the retry.
    webcam_since: Instant,
    mic_source: MicSource,
    /// A publisher's camera and mic, used instead of the two sources above while set.
    published: Option<Publication>,
    mic: Option<Feed>,
    mic_state: MicState,
    /// The mic's loudness (dBFS × 100), written by its feed; drives the ducking.
    mic_level: Arc<AtomicI32>,
    ducker: Ducker,
    movie_gain: f64,
    /// The streamer's movie volume, applied on top of ducking.
    movie_volume: f64,
    /// The current ducking depth, for health.
    duck_db: f64,
    state: PipelineState,
    errors: Vec<ErrorReport>,
    started: Instant,
    stats: Arc<OutputStats>,
    shared: Arc<Shared>,
    encoder: String,
    bitrate_kbps: u32,
    /// The chat area of the current layout, for the chat overlay; dropped with the conductor,
    /// which tells the overlay the pipeline has stopped.
    chat_area: watch::Sender<Option<ChatArea>>,
}

impl Conductor {
    /// A conductor for the composite `canvas`, set up as `settings` say (nothing runs yet:
    /// see [`Conductor::spawn`]), and the link the handle keeps. `stats` are the output's
    /// counters, shown in health.
    pub fn new(canvas: Canvas, settings: &Settings, stats: Arc<OutputStats>) -> (Self, Link) {
        let (commands, inbox) = mpsc::channel();
        let composite = commands.clone();
        gst_util::forward_bus(&canvas.pipeline, move |event| {
            let _ = composite.send(Command::Composite(event));
        });
        let shared = Arc::new(Shared {
            health: Mutex::new(Health::placeholder(settings)),
            events: broadcast::channel(64).0,
        });
        let (chat_area, chat_area_rx) = watch::channel(settings.layout.chat_area());
        let link = Link {
            commands: commands.clone(),
            shared: shared.clone(),
            chat_area: chat_area_rx,
        };
        let conductor = Self {
            inbox,
            commands,
            canvas,
            layout: settings.layout.clone(),
            movie: None,
            movie_source: settings.movie.clone(),
            movie_state: MovieState::Paused,
            loop_movie: settings.loop_movie,
            webcam_source: settings.webcam.clone(),
            webcam: None,
            webcam_state: WebcamState::None,
            webcam_heartbeat: Arc::new(Heartbeat::new()),
            webcam_since: Instant::now(),
            mic_source: settings.mic.clone(),
            published: None,
            mic: None,
            mic_state: MicState::None,
            mic_level: Arc::new(AtomicI32::new(-10_000)),
            ducker: Ducker::new(settings.duck_db),
            movie_gain: 1.0,
            movie_volume: 1.0,
            duck_db: settings.duck_db,
            state: PipelineState::Starting,
            errors: Vec::new(),
            started: Instant::now(),
            stats,
            shared,
            encoder: settings.encoder.name.clone(),
            bitrate_kbps: settings.bitrate_kbps,
            chat_area,
        };
        (conductor, link)
    }

    /// Opens the movie, starts the composite and the feeds, and runs the conductor on a
    /// thread of its own until [`Command::Shutdown`]. On failure the composite is stopped
    /// and the error says why.
    pub fn spawn(mut self) -> Result<(), PipelineError> {
        if let Err(e) = self.start() {
            let _ = self.canvas.pipeline.set_state(gst::State::Null);
            return Err(e);
        }
        std::thread::Builder::new()
            .name("conductor".into())
            .spawn(move || self.run())
            .map(drop)
            .map_err(|e| PipelineError::Internal(format!("cannot start the conductor: {e}")))
    }

    /// Runs until [`Command::Shutdown`] or until every sender is gone.
    fn run(mut self) {
        let mut last_tick = Instant::now();
        loop {
            match self
                .inbox
                .recv_timeout(TICK.saturating_sub(last_tick.elapsed()))
            {
                Ok(Command::Shutdown(done)) => {
                    self.shutdown();
                    let _ = done.send(());
                    return;
                }
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown();
                    return;
                }
            }
            if last_tick.elapsed() >= TICK {
                let dt = last_tick.elapsed();
                last_tick = Instant::now();
                self.tick(dt);
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Play(reply) => {
                let result = self.play();
                self.answer(reply, result);
            }
            Command::Pause(reply) => {
                let result = self.pause();
                self.answer(reply, result);
            }
            Command::Seek(position, reply) => {
                let result = self.seek(position);
                self.answer(reply, result);
            }
            Command::Load(source, reply) => self.load(source, reply),
            Command::Loaded(result, source, reply) => {
                let result = self.loaded(*result, source);
                self.answer(reply, result);
            }
            Command::Layout(layout, reply) => {
                self.set_layout(*layout);
                self.answer(reply, Ok(()));
            }
            Command::Webcam(on, reply) => {
                self.set_webcam(on);
                self.answer(reply, Ok(()));
            }
            Command::Publish(publication, reply) => {
                self.set_publication(publication.map(|p| *p));
                self.answer(reply, Ok(()));
            }
            Command::MicMute(muted, reply) => {
                self.set_mic_muted(muted);
                self.answer(reply, Ok(()));
            }
            Command::Audio(change, reply) => {
                self.set_audio(change);
                self.answer(reply, Ok(()));
            }
            Command::ChatPanel(panel) => self.canvas.set_chat_panel(&self.layout, panel),
            Command::Feed(report) => {
                self.feed_event(report);
                self.publish();
            }
            Command::Composite(event) => {
                self.composite_event(event);
                self.publish();
            }
            Command::Shutdown(_) => unreachable!("handled by run"),
        }
    }

    /// Replies after publishing, so whoever changed something reads it back in `/healthz`.
    fn answer(&self, reply: Reply, result: Result<(), PipelineError>) {
        self.publish();
        let _ = reply.send(result);
    }

    /// Starts everything; called once, before the loop.
    fn start(&mut self) -> Result<(), PipelineError> {
        let size = (self.layout.movie.width, self.layout.movie.height);
        self.movie = Some(feed::open_movie(
            &self.movie_source,
            size,
            self.movie_slots(),
            self.reporter(),
        )?);
        self.canvas.apply_layout(&self.layout);
        self.canvas
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| PipelineError::Internal("the composite failed to start".into()))?;
        // Layers pushed before PLAYING had no running time yet: push them again.
        self.canvas.apply_layout(&self.layout);
        self.start_movie()?;
        self.start_webcam();
        self.start_mic();
        self.state = PipelineState::Live;
        self.publish();
        Ok(())
    }

    fn start_movie(&mut self) -> Result<(), PipelineError> {
        let Some(feed) = &self.movie else {
            self.show_intermission("");
            return Ok(());
        };
        self.movie_slots().activate(feed.generation);
        feed.pipeline.set_state(gst::State::Playing).map_err(|_| {
            PipelineError::Movie(format!("cannot play {}", self.movie_source.title()))
        })?;
        self.movie_state = MovieState::Playing;
        Ok(())
    }

    fn play(&mut self) -> Result<(), PipelineError> {
        let feed = self.movie.as_ref().ok_or(PipelineError::NoMovie)?;
        if self.movie_state == MovieState::Ended {
            feed.seek(gst::ClockTime::ZERO)?;
            self.movie_slots().activate(feed.generation);
        }
        feed.pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| PipelineError::Control("the movie refused to play".into()))?;
        self.movie_state = MovieState::Playing;
        Ok(())
    }

    fn pause(&mut self) -> Result<(), PipelineError> {
        let feed = self.movie.as_ref().ok_or(PipelineError::NoMovie)?;
        if self.movie_state == MovieState::Ended {
            return Ok(());
        }
        feed.pipeline
            .set_state(gst::State::Paused)
            .map_err(|_| PipelineError::Control("the movie refused to pause".into()))?;
        self.movie_state = MovieState::Paused;
        Ok(())
    }

    fn seek(&mut self, position: gst::ClockTime) -> Result<(), PipelineError> {
        let feed = self.movie.as_ref().ok_or(PipelineError::NoMovie)?;
        controls::within_movie(position, feed.duration)?;
        feed.seek(position)?;
        if self.movie_state == MovieState::Ended {
            // Back from the intermission slate.
            self.movie_slots().activate(feed.generation);
            self.movie_state = MovieState::Playing;
            let _ = feed.pipeline.set_state(gst::State::Playing);
        }
        Ok(())
    }

    fn load(&mut self, source: MovieSource, reply: Reply) {
        tracing::info!(movie = %source.title(), "opening movie");
        let slots = self.movie_slots();
        let report = self.reporter();
        let commands = self.commands.clone();
        let size = (self.layout.movie.width, self.layout.movie.height);
        // Opening can take seconds (network, probing): the composite must not wait for it.
        std::thread::spawn(move || {
            let result = feed::open_movie(&source, size, slots, report);
            let _ = commands.send(Command::Loaded(Box::new(result), source, reply));
        });
    }

    /// The movie's slots, for a movie feed to push into.
    fn movie_slots(&self) -> MovieSlots {
        MovieSlots {
            video: self.canvas.movie.clone(),
            audio: self.canvas.movie_audio.clone(),
        }
    }

    /// Where feeds report: back into this conductor's inbox, from GStreamer's threads.
    fn reporter(&self) -> Reporter {
        let commands = self.commands.clone();
        Arc::new(move |report| {
            let _ = commands.send(Command::Feed(report));
        })
    }

    fn loaded(
        &mut self,
        result: Result<Feed, PipelineError>,
        source: MovieSource,
    ) -> Result<(), PipelineError> {
        // A failed open changes nothing: the current movie keeps playing.
        let feed = result?;
        if let Some(old) = self.movie.replace(feed) {
            old.stop();
        }
        self.movie_source = source;
        self.start_movie()?;
        let title = self.movie_source.title();
        tracing::info!(movie = %title, "movie loaded");
        self.emit(HealthEvent::MovieLoaded { title });
        Ok(())
    }

    fn set_layout(&mut self, layout: Layout) {
        let canvas_changed =
            (layout.width, layout.height) != (self.layout.width, self.layout.height);
        self.layout = layout;
        if canvas_changed {
            self.canvas.set_canvas(&self.layout);
        }
        self.canvas.apply_layout(&self.layout);
        if let Some(feed) = &self.movie {
            feed.set_video_size((self.layout.movie.width, self.layout.movie.height));
        }
        // The overlay draws the panel again at the new size as soon as it hears of it.
        let area = self.layout.chat_area();
        self.chat_area.send_if_modified(|current| {
            let changed = *current != area;
            *current = area;
            changed
        });
        match self.webcam_state {
            WebcamState::Live => {}
            WebcamState::Lost => self
                .canvas
                .show_webcam_slate(&self.layout, SlateKind::CameraOff),
            WebcamState::Off | WebcamState::None => self
                .canvas
                .show_webcam_slate(&self.layout, SlateKind::CameraOff),
        }
        if self.movie_state == MovieState::Ended || self.movie.is_none() {
            self.show_intermission("");
        }
        tracing::info!(layout = %self.layout.name, "layout switched");
    }

    /// Turns the webcam on or off; the handle has checked that "on" has a webcam to start.
    fn set_webcam(&mut self, on: bool) {
        if on {
            if self.webcam.is_none() {
                self.start_webcam();
            }
        } else {
            stop(&mut self.webcam);
            self.webcam_state = WebcamState::Off;
            self.canvas
                .show_webcam_slate(&self.layout, SlateKind::CameraOff);
        }
    }

    /// Mutes or opens the mic; the handle has checked that there is one.
    fn set_mic_muted(&mut self, muted: bool) {
        self.canvas.mic_pad.set_property("mute", muted);
        if self.mic_state != MicState::Lost {
            self.mic_state = if muted {
                MicState::Muted
            } else {
                MicState::Live
            };
        }
    }

    fn set_audio(&mut self, change: AudioChange) {
        if let Some(volume) = change.volume {
            self.movie_volume = volume;
            self.apply_movie_gain();
        }
        if let Some(db) = change.duck_db {
            self.ducker.set_amount(db);
            self.duck_db = db;
        }
    }

    /// Swaps the webcam and mic feeds for a publisher's, or back to the local ones. A webcam
    /// the host turned off stays off, and a muted mic stays muted.
    fn set_publication(&mut self, publication: Option<Publication>) {
        match &publication {
            Some(p) => {
                tracing::info!(video = %p.video, "a publisher's camera and mic replace the local ones")
            }
            None => tracing::info!("back to the local camera and mic"),
        }
        self.published = publication;
        let webcam_off = self.webcam_state == WebcamState::Off;
        stop(&mut self.webcam);
        if !webcam_off {
            self.start_webcam();
        }
        let muted = self.mic_state == MicState::Muted;
        stop(&mut self.mic);
        self.start_mic();
        if muted && self.mic_state == MicState::Live {
            self.mic_state = MicState::Muted;
        }
    }

    /// What the webcam feed is opened from: the publisher's video, else the local source.
    fn webcam_description(&self) -> Option<String> {
        match (&self.published, &self.webcam_source) {
            (Some(p), _) => Some(p.video.clone()),
            (None, WebcamSource::Description(d)) => Some(d.clone()),
            (None, WebcamSource::None) => None,
        }
    }

    /// What the mic feed is opened from: the publisher's audio, else the local source.
    fn mic_description(&self) -> Option<String> {
        match (&self.published, &self.mic_source) {
            (Some(p), _) => p.audio.clone(),
            (None, MicSource::Description(d)) => Some(d.clone()),
            (None, MicSource::None) => None,
        }
    }

    fn start_webcam(&mut self) {
        let Some(description) = self.webcam_description() else {
            self.webcam_state = WebcamState::None;
            self.canvas
                .show_webcam_slate(&self.layout, SlateKind::CameraOff);
            return;
        };
        self.webcam_since = Instant::now();
        self.webcam_heartbeat.beat();
        match feed::open_webcam(
            &description,
            self.canvas.webcam.clone(),
            self.reporter(),
            self.webcam_heartbeat.clone(),
        ) {
            Ok(feed) => {
                self.webcam = Some(feed);
                self.webcam_state = WebcamState::Live;
            }
            Err(e) => self.webcam_lost(&e.to_string()),
        }
    }

    fn webcam_lost(&mut self, reason: &str) {
        stop(&mut self.webcam);
        if self.webcam_state != WebcamState::Lost {
            tracing::warn!(reason, "webcam lost; showing the camera-off slate");
            self.emit(HealthEvent::WebcamLost {
                reason: reason.to_string(),
            });
        }
        self.webcam_state = WebcamState::Lost;
        self.webcam_since = Instant::now();
        self.canvas
            .show_webcam_slate(&self.layout, SlateKind::CameraOff);
    }

    fn start_mic(&mut self) {
        let Some(description) = self.mic_description() else {
            self.mic_state = MicState::None;
            return;
        };
        match feed::open_mic(
            &description,
            self.canvas.mic.clone(),
            self.reporter(),
            self.mic_level.clone(),
        ) {
            Ok(feed) => {
                self.mic = Some(feed);
                self.mic_state = MicState::Live;
            }
            Err(e) => self.mic_lost(&e.to_string()),
        }
    }

    fn mic_lost(&mut self, reason: &str) {
        stop(&mut self.mic);
        tracing::warn!(reason, "mic lost; continuing with movie sound only");
        self.mic_state = MicState::Lost;
    }

    fn feed_event(&mut self, report: FeedReport) {
        let FeedReport {
            kind,
            generation,
            event,
        } = report;
        let current = match kind {
            FeedKind::Movie => self.movie.as_ref(),
            FeedKind::Webcam => self.webcam.as_ref(),
            FeedKind::Mic => self.mic.as_ref(),
        }
        .map(|f| f.generation);
        if current != Some(generation) {
            return; // A feed we already replaced.
        }
        if let BusEvent::Error { element, message } = &event {
            tracing::error!(feed = ?kind, element, message, "feed error");
            self.record_error(element, message);
        }
        match (kind, event) {
            (FeedKind::Movie, BusEvent::Eos) if self.loop_movie => {
                if let Some(feed) = &self.movie
                    && feed.seek(gst::ClockTime::ZERO).is_ok()
                {
                    self.emit(HealthEvent::MovieLooped);
                    return;
                }
                self.movie_ended("");
            }
            (FeedKind::Movie, BusEvent::Eos) => self.movie_ended(""),
            (FeedKind::Movie, BusEvent::Error { message, .. }) => {
                self.movie_ended(&format!("the movie failed: {message}"));
                self.movie_state = MovieState::Failed;
            }
            (FeedKind::Webcam, BusEvent::Eos) => self.webcam_lost("the webcam stream ended"),
            (FeedKind::Webcam, BusEvent::Error { message, .. }) => self.webcam_lost(&message),
            (FeedKind::Mic, BusEvent::Eos) => self.mic_lost("the mic stream ended"),
            (FeedKind::Mic, BusEvent::Error { message, .. }) => self.mic_lost(&message),
        }
    }

    fn movie_ended(&mut self, caption: &str) {
        self.movie_state = MovieState::Ended;
        self.show_intermission(caption);
        self.emit(HealthEvent::MovieEnded);
    }

    fn show_intermission(&self, caption: &str) {
        self.canvas
            .show_movie_slate(&self.layout, SlateKind::Intermission, caption);
    }

    fn composite_event(&mut self, event: BusEvent) {
        if let BusEvent::Error { element, message } = event {
            tracing::error!(element, message, "composite pipeline error");
            self.record_error(&element, &message);
            self.state = PipelineState::Failed;
        }
    }

    fn record_error(&mut self, element: &str, message: &str) {
        let report = ErrorReport {
            element: element.to_string(),
            message: message.to_string(),
            at_s: self.started.elapsed().as_secs_f64(),
        };
        if self.errors.len() == MAX_ERRORS {
            self.errors.remove(0);
        }
        self.errors.push(report);
        self.emit(HealthEvent::Error {
            element: element.to_string(),
            message: message.to_string(),
        });
    }

    fn emit(&self, event: HealthEvent) {
        let _ = self.shared.events.send(event);
    }

    fn tick(&mut self, dt: Duration) {
        let now = Instant::now();
        for slot in [
            &self.canvas.background,
            &self.canvas.movie,
            &self.canvas.border,
            &self.canvas.webcam,
        ] {
            slot.keepalive(now);
        }
        match self.webcam_state {
            WebcamState::Live if self.webcam_heartbeat.silence() > WEBCAM_TIMEOUT => {
                self.webcam_lost("no frames from the webcam");
            }
            WebcamState::Lost if self.webcam_since.elapsed() >= WEBCAM_RETRY => {
                tracing::info!("trying the webcam again");
                self.start_webcam();
            }
            _ => {}
        }
        let mic_db = (self.mic_state == MicState::Live)
            .then(|| f64::from(self.mic_level.load(Ordering::Relaxed)) / 100.0);
        let gain = self.ducker.update(mic_db, dt);
        if (gain - self.movie_gain).abs() > 1e-4 {
            self.movie_gain = gain;
            self.apply_movie_gain();
        }
        self.publish();
    }

    /// The streamer's volume times the ducking gain, on the mixer pad.
    fn apply_movie_gain(&self) {
        self.canvas
            .movie_audio_pad
            .set_property("volume", self.movie_volume * self.movie_gain);
    }

    fn publish(&self) {
        let position = self.movie.as_ref().and_then(|f| f.position());
        let duration = self.movie.as_ref().and_then(|f| f.duration);
        let output = OutputHealth::from(&*self.stats);
        let health = Health {
            state: self.state,
            uptime_s: self.started.elapsed().as_secs_f64(),
            movie: MovieHealth {
                title: self.movie_source.title(),
                state: self.movie_state,
                position_s: position.map(|p| p.seconds_f64()),
                duration_s: duration.map(|d| d.seconds_f64()),
                looping: self.loop_movie,
            },
            webcam: self.webcam_state,
            mic: self.mic_state,
            movie_gain: self.movie_gain,
            movie_volume: self.movie_volume,
            duck_db: self.duck_db,
            layout: self.layout.name.clone(),
            geometry: Geometry::of(&self.layout),
            encoder: self.encoder.clone(),
            bitrate_kbps: self.bitrate_kbps,
            renditions: self.renditions(&output),
            output,
            errors: self.errors.clone(),
        };
        *self.shared.health.locked() = health;
    }

    /// The main rendition, then every on-demand one.
    fn renditions(&self, output: &OutputHealth) -> Vec<RenditionHealth> {
        std::iter::once(RenditionHealth::main(&self.canvas.outputs.main, output))
            .chain(
                self.canvas
                    .outputs
                    .renditions
                    .iter()
                    .map(|r| r.health(self.started)),
            )
            .collect()
    }

    fn shutdown(&mut self) {
        for feed in [self.movie.take(), self.webcam.take(), self.mic.take()]
            .into_iter()
            .flatten()
        {
            let _ = feed.pipeline.set_state(gst::State::Null);
        }
        // EOS lets the recorder write its index; wait for it, but not forever.
        self.canvas.pipeline.send_event(gst::event::Eos::new());
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.inbox.recv_timeout(left) {
                Ok(Command::Composite(BusEvent::Eos)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = self.canvas.pipeline.set_state(gst::State::Null);
        self.state = PipelineState::Stopped;
        self.publish();
    }
}

/// Stops the feed in `slot`, if any, leaving it empty.
fn stop(slot: &mut Option<Feed>) {
    if let Some(feed) = slot.take() {
        feed.stop();
    }
}
