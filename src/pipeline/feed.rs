//! Feeds: the movie, the webcam and the microphone, each in a pipeline of its own that ends in
//! appsinks pushing into the composite's [`Slot`]s.
//!
//! Keeping them apart is what lets the movie pause, seek or be replaced, and the webcam die,
//! while the composite keeps its clock and its encoder running. A feed knows nothing of the
//! conductor: what its bus says goes out as a [`FeedReport`] through the [`Reporter`] it was
//! opened with.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_app as gst_app;

use gst::prelude::*;

use super::PipelineError;
use super::slot::Slot;
use super::source::MovieSource;
use crate::gst_util::{self, BusEvent, PrerollError};

/// Which feed a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    /// The movie.
    Movie,
    /// The webcam.
    Webcam,
    /// The microphone.
    Mic,
}

/// What a feed's bus said, tagged so that reports from a feed already replaced are recognised.
#[derive(Debug)]
pub struct FeedReport {
    /// Which feed.
    pub kind: FeedKind,
    /// Which instance of it (its [`Feed::generation`]).
    pub generation: u64,
    /// What it said.
    pub event: BusEvent,
}

/// Where a feed sends its reports, from GStreamer's threads.
pub type Reporter = Arc<dyn Fn(FeedReport) + Send + Sync>;

/// When a feed last delivered a frame: beaten on the feed's streaming thread, read by the
/// watchdog.
pub struct Heartbeat {
    /// What the beats count from.
    origin: Instant,
    /// Milliseconds from `origin` to the last beat (an atomic: streaming threads write it).
    last_ms: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that beat just now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records a beat now.
    pub fn beat(&self) {
        self.last_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn silence(&self) -> Duration {
        self.origin
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// How long a movie may take to open before we call it undecodable.
const PREROLL_TIMEOUT: Duration = Duration::from_secs(15);

/// One running feed pipeline.
pub struct Feed {
    /// The feed's own pipeline.
    pub pipeline: gst::Pipeline,
    /// Tag of the pushes into the slots; see [`Slot::activate`].
    pub generation: u64,
    /// Where the movie stops (the demo's generated movie has no natural end).
    pub stop: Option<gst::ClockTime>,
    /// Length, when known.
    pub duration: Option<gst::ClockTime>,
}

impl Feed {
    /// Stops the pipeline. Done on a helper thread: a wedged source must not wedge the caller.
    pub fn stop(self) {
        let pipeline = self.pipeline;
        std::thread::spawn(move || {
            let _ = pipeline.set_state(gst::State::Null);
        });
    }

    /// Sets the size movie frames are letterboxed to (the layout's movie rectangle).
    pub fn set_video_size(&self, size: (u32, u32)) {
        if let Some(caps) = self.pipeline.by_name(MOVIE_SIZE) {
            caps.set_property("caps", movie_caps(size));
        }
    }

    /// Current position, when the pipeline knows it.
    pub fn position(&self) -> Option<gst::ClockTime> {
        self.pipeline.query_position::<gst::ClockTime>()
    }

    /// Flushing seek to `position`, keeping the feed's stop point.
    pub fn seek(&self, position: gst::ClockTime) -> Result<(), PipelineError> {
        let (stop_type, stop) = match self.stop {
            Some(stop) => (gst::SeekType::Set, gst::GenericFormattedValue::from(stop)),
            None => (
                gst::SeekType::None,
                gst::GenericFormattedValue::from(gst::ClockTime::NONE),
            ),
        };
        self.pipeline
            .seek(
                1.0,
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::SeekType::Set,
                position,
                stop_type,
                stop,
            )
            .map_err(|_| PipelineError::Control("the movie cannot seek".into()))
    }
}

/// The movie's two slots in the composite.
#[derive(Clone)]
pub struct MovieSlots {
    /// Its pictures.
    pub video: Arc<Slot>,
    /// Its sound.
    pub audio: Arc<Slot>,
}

impl MovieSlots {
    /// Lets the movie feed of `generation` show (and be heard) from now on.
    pub fn activate(&self, generation: u64) {
        self.video.activate(generation);
        self.audio.activate(generation);
    }
}

/// Builds the movie feed, prerolls it (so an undecodable file fails here, with a reason) and
/// leaves it paused. Its pushes count once the caller activates `Feed::generation` on the slots.
pub fn open_movie(
    source: &MovieSource,
    size: (u32, u32),
    slots: MovieSlots,
    report: Reporter,
) -> Result<Feed, PipelineError> {
    let pipeline = gst::Pipeline::with_name("movie");
    let generation = Slot::reserve_generation();
    let stop = match source {
        MovieSource::Uri { uri } => {
            decode_uri(&pipeline, uri, slots, generation, size)?;
            None
        }
        MovieSource::Generated {
            video,
            audio,
            seconds,
        } => {
            generate(&pipeline, (video, audio), slots, generation, size)?;
            Some(gst::ClockTime::from_seconds(*seconds))
        }
    };
    if let Err(e) = gst_util::preroll(&pipeline, PREROLL_TIMEOUT) {
        let _ = pipeline.set_state(gst::State::Null);
        let reason = match e {
            PrerollError::Failed(message) => message,
            PrerollError::Refused => "it failed to open".into(),
            PrerollError::TimedOut(t) => format!("it did not open within {} s", t.as_secs()),
        };
        return Err(PipelineError::Movie(format!(
            "cannot play movie {}: {reason}",
            source.location()
        )));
    }
    let mut feed = Feed {
        pipeline,
        generation,
        stop,
        duration: None,
    };
    if stop.is_some() {
        // Test sources never end: the stop point makes them a movie of fixed length.
        feed.seek(gst::ClockTime::ZERO)?;
    }
    feed.duration = stop.or_else(|| feed.pipeline.query_duration::<gst::ClockTime>());
    forward_reports(&feed.pipeline, FeedKind::Movie, generation, report);
    Ok(feed)
}

/// A movie from a URI: `uridecodebin3`, whose streams are attached as they appear.
fn decode_uri(
    pipeline: &gst::Pipeline,
    uri: &str,
    slots: MovieSlots,
    generation: u64,
    size: (u32, u32),
) -> Result<(), PipelineError> {
    let decode = gst_util::make_with("uridecodebin3", |b| b.property("uri", uri))?;
    pipeline.add(&decode).map_err(PipelineError::internal)?;
    let weak = pipeline.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let result = if name.starts_with("video/") {
            attach_video_sink(&pipeline, pad, slots.video.clone(), generation, size)
        } else if name.starts_with("audio/") {
            attach_audio_sink(&pipeline, pad, slots.audio.clone(), generation, None)
        } else {
            attach_fakesink(&pipeline, pad)
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot attach movie stream {name}");
        }
    });
    Ok(())
}

/// The demo's movie: a picture and a tone from two source descriptions.
fn generate(
    pipeline: &gst::Pipeline,
    (video, audio): (&str, &str),
    slots: MovieSlots,
    generation: u64,
    size: (u32, u32),
) -> Result<(), PipelineError> {
    let vsrc = source_bin(video, "videoconvert", "demo movie video")?;
    let asrc = source_bin(audio, "audioconvert", "demo movie audio")?;
    pipeline
        .add_many([&vsrc, &asrc])
        .map_err(PipelineError::internal)?;
    let src_pad = |bin: &gst::Bin| bin.static_pad("src").expect("ghost src pad");
    attach_video_sink(pipeline, &src_pad(&vsrc), slots.video, generation, size)?;
    attach_audio_sink(pipeline, &src_pad(&asrc), slots.audio, generation, None)
}

/// Starts the webcam feed. Every frame beats `heartbeat`, for the watchdog.
pub fn open_webcam(
    description: &str,
    slot: Arc<Slot>,
    report: Reporter,
    heartbeat: Arc<Heartbeat>,
) -> Result<Feed, PipelineError> {
    let pipeline = gst::Pipeline::with_name("webcam");
    let src = source_bin(description, "videoconvert", "webcam source")?;
    let scale = gst_util::make("videoscale")?;
    // Cameras can be 4K; the webcam rectangle never is, so cap the size early.
    let caps = gst_util::capsfilter(
        &gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", gst::IntRange::new(2, 1280))
            .field("height", gst::IntRange::new(2, 720))
            .build(),
    )?;
    let generation = Slot::reserve_generation();
    slot.activate(generation);
    // Drop rather than queue: a late camera frame is worth nothing.
    let sink = slot_sink(slot, generation, 2, true, move |_| heartbeat.beat());
    gst_util::add_chain(
        &pipeline,
        &[src.upcast_ref(), &scale, &caps, sink.upcast_ref()],
    )
    .map_err(|_| {
        PipelineError::Config(format!(
            "webcam source `{description}` does not produce video"
        ))
    })?;
    play_live(pipeline, FeedKind::Webcam, generation, report, description)
}

/// Starts the microphone feed. `level` receives the loudness of each buffer (dBFS × 100),
/// which drives the ducking.
pub fn open_mic(
    description: &str,
    slot: Arc<Slot>,
    report: Reporter,
    level: Arc<AtomicI32>,
) -> Result<Feed, PipelineError> {
    let pipeline = gst::Pipeline::with_name("mic");
    let src = source_bin(description, "audioconvert", "mic source")?;
    pipeline.add(&src).map_err(PipelineError::internal)?;
    let generation = Slot::reserve_generation();
    slot.activate(generation);
    let pad = src.static_pad("src").ok_or_else(|| {
        PipelineError::Config(format!("mic source `{description}` has no output"))
    })?;
    attach_audio_sink(&pipeline, &pad, slot, generation, Some(level))?;
    play_live(pipeline, FeedKind::Mic, generation, report, description)
}

/// Forwards the reports of a live device feed and plays it.
fn play_live(
    pipeline: gst::Pipeline,
    kind: FeedKind,
    generation: u64,
    report: Reporter,
    description: &str,
) -> Result<Feed, PipelineError> {
    forward_reports(&pipeline, kind, generation, report);
    pipeline.set_state(gst::State::Playing).map_err(|_| {
        let device = if kind == FeedKind::Mic {
            "mic"
        } else {
            "webcam"
        };
        PipelineError::Source(format!("{device} `{description}` failed to start"))
    })?;
    Ok(Feed {
        pipeline,
        generation,
        stop: None,
        duration: None,
    })
}

/// Parses a user's source description. `tail` is appended because a description may end in
/// caps (`… ! video/x-raw,width=640`), which GStreamer only accepts before another element.
///
/// Only the tail's output is ghosted: letting GStreamer ghost every unlinked pad would also
/// ghost the input of an element waiting for a demuxer's dynamic pad, and break the link.
fn source_bin(description: &str, tail: &str, what: &str) -> Result<gst::Bin, PipelineError> {
    let bin = gst::parse::bin_from_description(
        &format!("{description} ! {tail} name=cowatch-source-tail"),
        false,
    )
    .map_err(|e| PipelineError::Config(format!("{what} `{description}`: {e}")))?;
    let tail_src = bin
        .by_name("cowatch-source-tail")
        .and_then(|t| t.static_pad("src"))
        .ok_or_else(|| PipelineError::Internal(format!("{what}: no output")))?;
    let ghost = gst::GhostPad::builder_with_target(&tail_src)
        .map_err(PipelineError::internal)?
        .name("src")
        .build();
    bin.add_pad(&ghost).map_err(PipelineError::internal)?;
    Ok(bin)
}

fn attach_video_sink(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    slot: Arc<Slot>,
    generation: u64,
    size: (u32, u32),
) -> Result<(), PipelineError> {
    let queue = gst_util::make("queue")?;
    let convert = gst_util::make("videoconvert")?;
    // Letterboxed to the movie rectangle and converted to the canvas format here, on the
    // feed's own thread: the compositor then only copies the frame, and the two cores share
    // the work.
    let scale = gst_util::make_with("videoscale", |b| b.property("add-borders", true))?;
    let caps = gst_util::make_with("capsfilter", |b| {
        b.name(MOVIE_SIZE).property("caps", movie_caps(size))
    })?;
    let sink = slot_sink(slot, generation, 2, false, |_| {});
    link_branch(
        pipeline,
        pad,
        &[&queue, &convert, &scale, &caps, sink.upcast_ref()],
    )
}

/// Name of the capsfilter that sets the movie's output size.
const MOVIE_SIZE: &str = "movie-size";

fn movie_caps((width, height): (u32, u32)) -> gst::Caps {
    super::canvas::frame_caps("I420", width, height)
}

fn attach_audio_sink(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    slot: Arc<Slot>,
    generation: u64,
    level: Option<Arc<AtomicI32>>,
) -> Result<(), PipelineError> {
    let queue = gst_util::make("queue")?;
    let convert = gst_util::make("audioconvert")?;
    let resample = gst_util::make("audioresample")?;
    let caps = gst_util::capsfilter(&super::canvas::audio_caps())?;
    let sink = slot_sink(slot, generation, 8, false, move |sample| {
        if let (Some(level), Some(buffer)) = (&level, sample.buffer()) {
            level.store(loudness_centi_db(buffer), Ordering::Relaxed);
        }
    });
    link_branch(
        pipeline,
        pad,
        &[&queue, &convert, &resample, &caps, sink.upcast_ref()],
    )
}

/// An appsink, paced by the feed's clock, that pushes every sample into `slot` (after
/// `inspect` has looked at it).
fn slot_sink(
    slot: Arc<Slot>,
    generation: u64,
    max_buffers: u32,
    drop: bool,
    inspect: impl Fn(&gst::Sample) + Send + Sync + 'static,
) -> gst_app::AppSink {
    let sink = gst_app::AppSink::builder()
        .sync(true)
        .max_buffers(max_buffers)
        .drop(drop)
        .build();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                inspect(&sample);
                slot.push_sample(generation, &sample);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sink
}

fn attach_fakesink(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<(), PipelineError> {
    let sink = gst_util::make_with("fakesink", |b| {
        b.property("sync", false).property("async", false)
    })?;
    link_branch(pipeline, pad, &[&sink])
}

/// Adds a chain of elements to a playing pipeline and feeds it from `pad`.
fn link_branch(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    elements: &[&gst::Element],
) -> Result<(), PipelineError> {
    gst_util::add_chain(pipeline, elements).map_err(PipelineError::internal)?;
    for element in elements {
        element
            .sync_state_with_parent()
            .map_err(PipelineError::internal)?;
    }
    let sink_pad = elements[0]
        .static_pad("sink")
        .expect("branch head has a sink pad");
    pad.link(&sink_pad)
        .map_err(|e| PipelineError::Internal(format!("cannot link {}: {e:?}", pad.name())))?;
    Ok(())
}

/// RMS loudness of interleaved S16 samples, in hundredths of dBFS (atomics hold integers).
fn loudness_centi_db(buffer: &gst::BufferRef) -> i32 {
    let Ok(map) = buffer.map_readable() else {
        return -10_000;
    };
    let samples = map
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0);
    let (sum, n) = samples.fold((0.0, 0usize), |(s, n), x| (s + x * x, n + 1));
    if n == 0 || sum == 0.0 {
        return -10_000;
    }
    let db = 10.0 * (sum / n as f64).log10();
    (db * 100.0).round().max(-10_000.0) as i32
}

/// Sends the feed's errors and EOS to `report`, tagged so stale feeds are recognised.
fn forward_reports(pipeline: &gst::Pipeline, kind: FeedKind, generation: u64, report: Reporter) {
    gst_util::forward_bus(pipeline, move |event| {
        report(FeedReport {
            kind,
            generation,
            event,
        });
    });
}
