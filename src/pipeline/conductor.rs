//! The conductor: one thread that owns the composite and the feeds and applies every change to
//! them in order. Controls, feed failures and timers all arrive as [`Command`]s, so no two
//! changes ever race (a seek during a movie swap, a webcam loss during a layout switch).

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use tokio::sync::{broadcast, oneshot, watch};

use gst::prelude::*;

use super::canvas::{Canvas, ChatArea};
use super::ducking::Ducker;
use super::feed::{self, Feed, FeedEvent, FeedKind};
use super::layout::Layout;
use super::output::OutputStats;
use super::source::{MicSource, MovieSource, WebcamSource};
use super::{
    ErrorReport, Health, HealthEvent, MicState, MovieState, PipelineError, PipelineState,
    WebcamState,
};
use crate::overlay::slate::SlateKind;

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
    /// The movie's volume (0.0 to 1.5), before ducking.
    Volume(f64, Reply),
    /// How many dB the movie ducks under the voice.
    DuckDb(f64, Reply),
    /// A chat panel drawn by the overlay (`None`: the plain panel). Nobody waits for an answer:
    /// the renderer must never wait on the video side.
    ChatPanel(Option<image::RgbaImage>),
    /// A feed's bus spoke.
    Feed {
        /// Which feed.
        kind: FeedKind,
        /// Which instance of it.
        generation: u64,
        /// What it said.
        event: FeedEvent,
    },
    /// The composite's bus spoke.
    Composite(FeedEvent),
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

/// Everything the conductor owns.
pub struct Conductor {
    pub(super) canvas: Canvas,
    pub(super) layout: Layout,
    pub(super) movie: Option<Feed>,
    pub(super) movie_source: MovieSource,
    pub(super) movie_state: MovieState,
    pub(super) loop_movie: bool,
    pub(super) webcam_source: WebcamSource,
    pub(super) webcam: Option<Feed>,
    pub(super) webcam_state: WebcamState,
    pub(super) webcam_last_frame: Arc<AtomicU64>,
    pub(super) webcam_since: Instant,
    pub(super) mic_source: MicSource,
    pub(super) mic: Option<Feed>,
    pub(super) mic_state: MicState,
    pub(super) mic_level: Arc<AtomicI32>,
    pub(super) ducker: Ducker,
    pub(super) movie_gain: f64,
    /// The streamer's movie volume, applied on top of ducking.
    pub(super) movie_volume: f64,
    /// The current ducking depth, for health.
    pub(super) duck_db: f64,
    pub(super) state: PipelineState,
    pub(super) errors: Vec<ErrorReport>,
    pub(super) started: Instant,
    pub(super) stats: Arc<OutputStats>,
    pub(super) shared: Arc<Shared>,
    pub(super) commands: Sender<Command>,
    pub(super) encoder: String,
    pub(super) bitrate_kbps: u32,
    /// The chat area of the current layout, for the chat overlay; dropped with the conductor,
    /// which tells the overlay the pipeline has stopped.
    pub(super) chat_area: watch::Sender<Option<ChatArea>>,
}

impl Conductor {
    /// Runs until [`Command::Shutdown`] or until every handle is gone.
    pub fn run(mut self, rx: Receiver<Command>) {
        let mut last_tick = Instant::now();
        loop {
            match rx.recv_timeout(TICK.saturating_sub(last_tick.elapsed())) {
                Ok(Command::Shutdown(done)) => {
                    self.shutdown(&rx);
                    let _ = done.send(());
                    return;
                }
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown(&rx);
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
                let result = self.set_webcam(on);
                self.answer(reply, result);
            }
            Command::MicMute(muted, reply) => {
                let result = self.set_mic_muted(muted);
                self.answer(reply, result);
            }
            Command::Volume(volume, reply) => {
                self.movie_volume = volume;
                self.apply_movie_gain();
                self.publish();
                self.answer(reply, Ok(()));
            }
            Command::DuckDb(db, reply) => {
                self.ducker.set_amount(db);
                self.duck_db = db;
                self.publish();
                self.answer(reply, Ok(()));
            }
            Command::ChatPanel(panel) => self.canvas.set_chat_panel(&self.layout, panel),
            Command::Feed {
                kind,
                generation,
                event,
            } => {
                self.feed_event(kind, generation, event);
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
    pub(super) fn start(&mut self) -> Result<(), PipelineError> {
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
        self.canvas.movie.activate(feed.generation);
        self.canvas.movie_audio.activate(feed.generation);
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
            self.canvas.movie.activate(feed.generation);
            self.canvas.movie_audio.activate(feed.generation);
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
        if let Some(duration) = feed.duration
            && position > duration
        {
            return Err(PipelineError::Control(format!(
                "position {:.1} s is past the end of the movie ({:.1} s)",
                position.seconds_f64(),
                duration.seconds_f64()
            )));
        }
        feed.seek(position)?;
        if self.movie_state == MovieState::Ended {
            // Back from the intermission slate.
            self.canvas.movie.activate(feed.generation);
            self.canvas.movie_audio.activate(feed.generation);
            self.movie_state = MovieState::Playing;
            let _ = feed.pipeline.set_state(gst::State::Playing);
        }
        Ok(())
    }

    fn load(&mut self, source: MovieSource, reply: Reply) {
        let video = self.canvas.movie.clone();
        let audio = self.canvas.movie_audio.clone();
        let commands = self.commands.clone();
        let source_for_thread = source.clone();
        let size = (self.layout.movie.width, self.layout.movie.height);
        // Opening can take seconds (network, probing): the composite must not wait for it.
        std::thread::spawn(move || {
            let result = feed::open_movie(&source_for_thread, size, video, audio, commands.clone());
            let _ = commands.send(Command::Loaded(Box::new(result), source_for_thread, reply));
        });
        tracing::info!(movie = %source.title(), "opening movie");
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
        let area = ChatArea::of(&self.layout);
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

    fn set_webcam(&mut self, on: bool) -> Result<(), PipelineError> {
        if on {
            if matches!(self.webcam_source, WebcamSource::None) {
                return Err(PipelineError::Control(
                    "no webcam is configured (--webcam none)".into(),
                ));
            }
            if self.webcam.is_none() {
                self.start_webcam();
            }
        } else {
            if let Some(feed) = self.webcam.take() {
                feed.stop();
            }
            self.webcam_state = WebcamState::Off;
            self.canvas
                .show_webcam_slate(&self.layout, SlateKind::CameraOff);
        }
        Ok(())
    }

    fn set_mic_muted(&mut self, muted: bool) -> Result<(), PipelineError> {
        if matches!(self.mic_source, MicSource::None) {
            return Err(PipelineError::Control(
                "no mic is configured (--mic none)".into(),
            ));
        }
        self.canvas.mic_pad.set_property("mute", muted);
        if self.mic_state != MicState::Lost {
            self.mic_state = if muted {
                MicState::Muted
            } else {
                MicState::Live
            };
        }
        Ok(())
    }

    fn start_webcam(&mut self) {
        let WebcamSource::Description(description) = &self.webcam_source else {
            self.webcam_state = WebcamState::None;
            self.canvas
                .show_webcam_slate(&self.layout, SlateKind::CameraOff);
            return;
        };
        self.webcam_since = Instant::now();
        self.webcam_last_frame
            .store(feed::now_ms(), Ordering::Relaxed);
        match feed::open_webcam(
            description,
            self.canvas.webcam.clone(),
            self.commands.clone(),
            self.webcam_last_frame.clone(),
        ) {
            Ok(feed) => {
                self.webcam = Some(feed);
                self.webcam_state = WebcamState::Live;
            }
            Err(e) => self.webcam_lost(&e.to_string()),
        }
    }

    fn webcam_lost(&mut self, reason: &str) {
        if let Some(feed) = self.webcam.take() {
            feed.stop();
        }
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
        let MicSource::Description(description) = &self.mic_source else {
            self.mic_state = MicState::None;
            return;
        };
        match feed::open_mic(
            description,
            self.canvas.mic.clone(),
            self.commands.clone(),
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
        if let Some(feed) = self.mic.take() {
            feed.stop();
        }
        tracing::warn!(reason, "mic lost; continuing with movie sound only");
        self.mic_state = MicState::Lost;
    }

    fn feed_event(&mut self, kind: FeedKind, generation: u64, event: FeedEvent) {
        let current = match kind {
            FeedKind::Movie => self.movie.as_ref(),
            FeedKind::Webcam => self.webcam.as_ref(),
            FeedKind::Mic => self.mic.as_ref(),
        }
        .map(|f| f.generation);
        if current != Some(generation) {
            return; // A feed we already replaced.
        }
        if let FeedEvent::Error { element, message } = &event {
            tracing::error!(feed = ?kind, element, message, "feed error");
            self.record_error(element, message);
        }
        match (kind, event) {
            (FeedKind::Movie, FeedEvent::Eos) if self.loop_movie => {
                if let Some(feed) = &self.movie
                    && feed.seek(gst::ClockTime::ZERO).is_ok()
                {
                    self.emit(HealthEvent::MovieLooped);
                    return;
                }
                self.movie_ended("");
            }
            (FeedKind::Movie, FeedEvent::Eos) => self.movie_ended(""),
            (FeedKind::Movie, FeedEvent::Error { message, .. }) => {
                self.movie_ended(&format!("the movie failed: {message}"));
                self.movie_state = MovieState::Failed;
            }
            (FeedKind::Webcam, FeedEvent::Eos) => self.webcam_lost("the webcam stream ended"),
            (FeedKind::Webcam, FeedEvent::Error { message, .. }) => self.webcam_lost(&message),
            (FeedKind::Mic, FeedEvent::Eos) => self.mic_lost("the mic stream ended"),
            (FeedKind::Mic, FeedEvent::Error { message, .. }) => self.mic_lost(&message),
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

    fn composite_event(&mut self, event: FeedEvent) {
        if let FeedEvent::Error { element, message } = event {
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
            WebcamState::Live => {
                let silent =
                    feed::now_ms().saturating_sub(self.webcam_last_frame.load(Ordering::Relaxed));
                if silent > WEBCAM_TIMEOUT.as_millis() as u64 {
                    self.webcam_lost("no frames from the webcam");
                }
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
        let health = Health {
            state: self.state,
            uptime_s: self.started.elapsed().as_secs_f64(),
            movie: super::MovieHealth {
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
            encoder: self.encoder.clone(),
            bitrate_kbps: self.bitrate_kbps,
            output: super::OutputHealth::from(&*self.stats),
            errors: self.errors.clone(),
        };
        *self.shared.health.lock().unwrap() = health;
    }

    fn shutdown(&mut self, rx: &Receiver<Command>) {
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
            match rx.recv_timeout(left) {
                Ok(Command::Composite(FeedEvent::Eos)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = self.canvas.pipeline.set_state(gst::State::Null);
        self.state = PipelineState::Stopped;
        self.publish();
    }
}
