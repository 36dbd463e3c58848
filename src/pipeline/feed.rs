//! Feeds: the movie, the webcam and the microphone, each in a pipeline of its own that ends in
//! appsinks pushing into the composite's [`Slot`]s.
//!
//! Keeping them apart is what lets the movie pause, seek or be replaced, and the webcam die,
//! while the composite keeps its clock and its encoder running.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use gstreamer as gst;
use gstreamer_app as gst_app;

use gst::prelude::*;

use super::PipelineError;
use super::conductor::Command;
use super::slot::Slot;
use super::source::MovieSource;

/// Which feed a bus message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    /// The movie.
    Movie,
    /// The webcam.
    Webcam,
    /// The microphone.
    Mic,
}

/// What a feed's bus reported, forwarded to the conductor.
#[derive(Debug)]
pub enum FeedEvent {
    /// The stream ended.
    Eos,
    /// An element failed.
    Error {
        /// Path of the failing element.
        element: String,
        /// GStreamer's message.
        message: String,
    },
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
        let stop = match self.stop {
            Some(stop) => gst::GenericFormattedValue::from(stop),
            None => gst::GenericFormattedValue::from(gst::ClockTime::NONE),
        };
        self.pipeline
            .seek(
                1.0,
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::SeekType::Set,
                position,
                if self.stop.is_some() {
                    gst::SeekType::Set
                } else {
                    gst::SeekType::None
                },
                stop,
            )
            .map_err(|_| PipelineError::Control("the movie cannot seek".into()))
    }
}

/// Builds the movie feed, prerolls it (so an undecodable file fails here, with a reason) and
/// leaves it paused. Its pushes count once the caller activates `Feed::generation` on the slots.
pub fn open_movie(
    source: &MovieSource,
    size: (u32, u32),
    video: Arc<Slot>,
    audio: Arc<Slot>,
    events: Sender<Command>,
) -> Result<Feed, PipelineError> {
    let pipeline = gst::Pipeline::with_name("movie");
    let generation = Slot::reserve_generation();
    let mut stop = None;
    match source {
        MovieSource::Uri { uri } => {
            let decode = make("uridecodebin3")?;
            decode.set_property("uri", uri);
            pipeline.add(&decode).map_err(internal)?;
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
                    attach_video_sink(&pipeline, pad, video.clone(), generation, size)
                } else if name.starts_with("audio/") {
                    attach_audio_sink(&pipeline, pad, audio.clone(), generation, None)
                } else {
                    attach_fakesink(&pipeline, pad)
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "cannot attach movie stream {name}");
                }
            });
        }
        MovieSource::Generated {
            video: vdesc,
            audio: adesc,
            seconds,
        } => {
            let vsrc = source_bin(vdesc, "videoconvert", "demo movie video")?;
            let asrc = source_bin(adesc, "audioconvert", "demo movie audio")?;
            pipeline.add_many([&vsrc, &asrc]).map_err(internal)?;
            attach_video_sink(
                &pipeline,
                &vsrc.static_pad("src").expect("ghost src pad"),
                video,
                generation,
                size,
            )?;
            attach_audio_sink(
                &pipeline,
                &asrc.static_pad("src").expect("ghost src pad"),
                audio,
                generation,
                None,
            )?;
            stop = Some(gst::ClockTime::from_seconds(*seconds));
        }
    }
    preroll(&pipeline, &source.location())?;
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
    forward_bus(&feed.pipeline, FeedKind::Movie, generation, events);
    Ok(feed)
}

/// Starts the webcam feed. `last_frame_ms` receives the time of every frame for the watchdog.
pub fn open_webcam(
    description: &str,
    slot: Arc<Slot>,
    events: Sender<Command>,
    last_frame: Arc<AtomicU64>,
) -> Result<Feed, PipelineError> {
    let pipeline = gst::Pipeline::with_name("webcam");
    let src = source_bin(description, "videoconvert", "webcam source")?;
    let scale = make("videoscale")?;
    // Cameras can be 4K; the webcam rectangle never is, so cap the size early.
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", gst::IntRange::new(2, 1280))
                .field("height", gst::IntRange::new(2, 720))
                .build(),
        )
        .build()
        .map_err(internal)?;
    let generation = Slot::reserve_generation();
    slot.activate(generation);
    // Drop rather than queue: a late camera frame is worth nothing.
    let sink = slot_sink(slot, generation, 2, true, move |_| {
        last_frame.store(now_ms(), Ordering::Relaxed);
    });
    pipeline
        .add_many([src.upcast_ref(), &scale, &caps, sink.upcast_ref()])
        .map_err(internal)?;
    gst::Element::link_many([src.upcast_ref(), &scale, &caps, sink.upcast_ref()]).map_err(
        |_| {
            PipelineError::Config(format!(
                "webcam source `{description}` does not produce video"
            ))
        },
    )?;
    forward_bus(&pipeline, FeedKind::Webcam, generation, events);
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| PipelineError::Source(format!("webcam `{description}` failed to start")))?;
    Ok(Feed {
        pipeline,
        generation,
        stop: None,
        duration: None,
    })
}

/// Starts the microphone feed. `level` receives the loudness of each buffer (dBFS × 100),
/// which drives the ducking.
pub fn open_mic(
    description: &str,
    slot: Arc<Slot>,
    events: Sender<Command>,
    level: Arc<AtomicI32>,
) -> Result<Feed, PipelineError> {
    let pipeline = gst::Pipeline::with_name("mic");
    let src = source_bin(description, "audioconvert", "mic source")?;
    pipeline.add(&src).map_err(internal)?;
    let generation = Slot::reserve_generation();
    slot.activate(generation);
    let pad = src.static_pad("src").ok_or_else(|| {
        PipelineError::Config(format!("mic source `{description}` has no output"))
    })?;
    attach_audio_sink(&pipeline, &pad, slot, generation, Some(level))?;
    forward_bus(&pipeline, FeedKind::Mic, generation, events);
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| PipelineError::Source(format!("mic `{description}` failed to start")))?;
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
        .map_err(internal)?
        .name("src")
        .build();
    bin.add_pad(&ghost).map_err(internal)?;
    Ok(bin)
}

/// Milliseconds on a monotonic clock shared by the feeds and the watchdog.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

fn attach_video_sink(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    slot: Arc<Slot>,
    generation: u64,
    size: (u32, u32),
) -> Result<(), PipelineError> {
    let queue = make("queue")?;
    let convert = make("videoconvert")?;
    // Letterboxed to the movie rectangle and converted to the canvas format here, on the
    // feed's own thread: the compositor then only copies the frame, and the two cores share
    // the work.
    let scale = gst::ElementFactory::make("videoscale")
        .property("add-borders", true)
        .build()
        .map_err(internal)?;
    let caps = gst::ElementFactory::make("capsfilter")
        .name(MOVIE_SIZE)
        .property("caps", movie_caps(size))
        .build()
        .map_err(internal)?;
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
    let queue = make("queue")?;
    let convert = make("audioconvert")?;
    let resample = make("audioresample")?;
    let caps = gst::ElementFactory::make("capsfilter")
        .property("caps", super::canvas::audio_caps())
        .build()
        .map_err(internal)?;
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
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        .map_err(internal)?;
    link_branch(pipeline, pad, &[&sink])
}

fn link_branch(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    elements: &[&gst::Element],
) -> Result<(), PipelineError> {
    pipeline
        .add_many(elements.iter().copied())
        .map_err(internal)?;
    gst::Element::link_many(elements.iter().copied()).map_err(internal)?;
    for element in elements {
        element.sync_state_with_parent().map_err(internal)?;
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

/// Waits for the pipeline to preroll; an error or a timeout means the movie cannot be played.
fn preroll(pipeline: &gst::Pipeline, title: &str) -> Result<(), PipelineError> {
    let fail = |reason: String| {
        let _ = pipeline.set_state(gst::State::Null);
        Err(PipelineError::Movie(format!(
            "cannot play movie {title}: {reason}"
        )))
    };
    if pipeline.set_state(gst::State::Paused).is_err() {
        return fail(first_error(pipeline).unwrap_or_else(|| "it failed to open".into()));
    }
    let bus = pipeline.bus().expect("pipelines have a bus");
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(PREROLL_TIMEOUT.as_secs()),
        &[gst::MessageType::AsyncDone, gst::MessageType::Error],
    );
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::AsyncDone(_)) => Ok(()),
        Some(gst::MessageView::Error(err)) => fail(err.error().to_string()),
        _ => fail(format!(
            "it did not open within {} s",
            PREROLL_TIMEOUT.as_secs()
        )),
    }
}

fn first_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_mseconds(500),
        &[gst::MessageType::Error],
    )?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(err.error().to_string()),
        _ => None,
    }
}

/// Sends the feed's errors and EOS to the conductor, tagged so stale feeds are recognised.
fn forward_bus(pipeline: &gst::Pipeline, kind: FeedKind, generation: u64, events: Sender<Command>) {
    let bus = pipeline.bus().expect("pipelines have a bus");
    bus.set_sync_handler(move |_, msg| {
        let event = match msg.view() {
            gst::MessageView::Eos(_) => Some(FeedEvent::Eos),
            gst::MessageView::Error(err) => Some(FeedEvent::Error {
                element: msg
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_else(|| "unknown".into()),
                message: err.error().to_string(),
            }),
            _ => None,
        };
        if let Some(event) = event {
            let _ = events.send(Command::Feed {
                kind,
                generation,
                event,
            });
        }
        gst::BusSyncReply::Drop
    });
}

fn make(factory: &str) -> Result<gst::Element, PipelineError> {
    super::canvas::make(factory)
}

fn internal(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Internal(e.to_string())
}
