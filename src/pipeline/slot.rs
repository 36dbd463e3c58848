//! A slot is where an outside stream enters the live composite: an `appsrc` that restamps
//! every buffer with the composite's running time.
//!
//! Feeds (movie, webcam, mic) run in pipelines of their own so that pausing, seeking, swapping
//! the movie or losing the webcam never touches the composite's clock: its output timestamps
//! only ever increase. A video slot also remembers its last frame and pushes it again when
//! nothing new arrived for a while, which is what keeps a paused movie, a slate or a static
//! layer on screen without a producer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_app as gst_app;

use crate::util::lock::Locked;
use gst::prelude::*;

/// How long a video slot may stay silent before its last frame is pushed again.
pub const KEEPALIVE: Duration = Duration::from_millis(400);

/// Audio timestamps closer than this to the expected next one are made contiguous, so the
/// mixer sees no gaps from scheduling jitter; beyond it (pause, seek) the slot resyncs to now.
const AUDIO_RESYNC: gst::ClockTime = gst::ClockTime::from_mseconds(80);

/// Called when a slot's caps change, before the buffer with the new caps flows.
pub type CapsHook = Box<dyn Fn(&gst::Caps) + Send + Sync>;

/// An entry point into the composite.
pub struct Slot {
    /// The appsrc inside the composite pipeline.
    appsrc: gst_app::AppSrc,
    /// The composite, for its running time.
    pipeline: gst::Pipeline,
    /// Video slots repeat their last frame; audio slots never do (silence is the mixer's job).
    video: bool,
    /// Mutable state, touched from feed streaming threads and the conductor.
    state: Mutex<SlotState>,
    /// Lets the owner react to a new input size (the webcam crop depends on it).
    on_caps: Option<CapsHook>,
}

#[derive(Default)]
struct SlotState {
    caps: Option<gst::Caps>,
    last: Option<gst::Buffer>,
    last_push: Option<Instant>,
    next_audio_pts: Option<gst::ClockTime>,
    /// Only the feed with this tag may push (0: none), so a stopped feed's stragglers cannot
    /// overwrite a slate or the next movie.
    generation: u64,
}

impl Slot {
    /// Creates a slot around `appsrc`, configuring it as a live time-based source.
    pub fn new(
        appsrc: gst_app::AppSrc,
        pipeline: &gst::Pipeline,
        video: bool,
        on_caps: Option<CapsHook>,
    ) -> Self {
        appsrc.set_is_live(true);
        appsrc.set_format(gst::Format::Time);
        appsrc.set_do_timestamp(false);
        appsrc.set_block(false);
        appsrc.set_leaky_type(gst_app::AppLeakyType::Downstream);
        // A couple of frames of slack: more would only add latency when the composite stalls.
        appsrc.set_max_buffers(if video { 3 } else { 20 });
        appsrc.set_max_bytes(0);
        // We timestamp on arrival: no latency of our own, and no upper bound, so the mixers
        // can configure theirs.
        appsrc.set_latency(gst::ClockTime::ZERO, gst::ClockTime::NONE);
        Self {
            appsrc,
            pipeline: pipeline.clone(),
            video,
            state: Mutex::new(SlotState::default()),
            on_caps,
        }
    }

    /// A fresh tag for a feed that may push into this slot once [`Slot::activate`]d.
    pub fn reserve_generation() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Accepts pushes from the feed tagged `generation` only; everything else is dropped from
    /// now on.
    pub fn activate(&self, generation: u64) {
        let mut state = self.state.locked();
        state.generation = generation;
        state.next_audio_pts = None;
    }

    /// Pushes a sample coming from the feed of `generation`.
    pub fn push_sample(&self, generation: u64, sample: &gst::Sample) {
        let (Some(caps), Some(buffer)) = (sample.caps(), sample.buffer_owned()) else {
            return;
        };
        if self.state.locked().generation != generation {
            return;
        }
        self.push(caps, buffer);
    }

    /// Pushes a frame that is not from a feed (a slate, a static layer) and keeps it on screen.
    pub fn show(&self, caps: &gst::Caps, buffer: gst::Buffer) {
        self.activate(0);
        self.push(caps, buffer);
    }

    /// Pushes the last frame again if nothing was pushed for [`KEEPALIVE`].
    pub fn keepalive(&self, now: Instant) {
        if !self.video {
            return;
        }
        let (caps, buffer) = {
            let state = self.state.locked();
            match (&state.caps, &state.last, state.last_push) {
                (Some(caps), Some(last), Some(at)) if now.duration_since(at) >= KEEPALIVE => {
                    (caps.clone(), last.clone())
                }
                _ => return,
            }
        };
        self.push(&caps, buffer);
    }

    /// The caps of the last pushed buffer.
    pub fn caps(&self) -> Option<gst::Caps> {
        self.state.locked().caps.clone()
    }

    fn push(&self, caps: &gst::CapsRef, mut buffer: gst::Buffer) {
        let Some(now) = self.pipeline.current_running_time() else {
            // Not playing yet: nothing downstream could use a timestamp.
            return;
        };
        let caps_changed;
        {
            let mut state = self.state.locked();
            caps_changed = state.caps.as_ref().map(|c| c.as_ref()) != Some(caps);
            if caps_changed {
                state.caps = Some(caps.to_owned());
            }
            let pts = if self.video {
                now
            } else {
                let pts = match state.next_audio_pts {
                    Some(next) if next.absdiff(now) < AUDIO_RESYNC => next,
                    _ => now,
                };
                state.next_audio_pts = buffer.duration().map(|d| pts + d);
                pts
            };
            // Shallow copy: the frame's memory is shared, only the metadata is new.
            let b = buffer.make_mut();
            b.set_pts(pts);
            b.set_dts(gst::ClockTime::NONE);
            b.set_offset(u64::MAX);
            b.set_offset_end(u64::MAX);
            if self.video {
                // No duration: the compositor keeps showing a frame until the next one, which
                // is what a paused movie or a slate needs.
                b.set_duration(gst::ClockTime::NONE);
                state.last = Some(buffer.clone());
            }
            state.last_push = Some(Instant::now());
        }
        if caps_changed {
            let caps = caps.to_owned();
            if let Some(hook) = &self.on_caps {
                hook(&caps);
            }
            self.appsrc.set_caps(Some(&caps));
        }
        // Errors mean the composite is shutting down; the conductor reports that itself.
        let _ = self.appsrc.push_buffer(buffer);
    }
}
