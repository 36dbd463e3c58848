//! The composite's encoded streams for muxers outside the pipeline (the restream): the main
//! H.264 exactly as the encoder made it, and AAC encoded from the mix.
//!
//! Both branches sit behind closed valves, so a party without a restream target pays
//! nothing for them: no AAC encode, no copies. An [`EncodedFeed`] opens them while it lives;
//! the last one dropped closes them again.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer_app as gst_app;
use tokio::sync::broadcast;

use gst::prelude::*;

use crate::util::lock::Locked;

/// Samples a feed may fall behind before it lags: four seconds of video at 30 fps, and of
/// AAC frames (about 47 a second at 48 kHz).
const CHANNEL: usize = 256;

/// The valves and channels of the two branches.
pub(crate) struct Tap {
    video: broadcast::Sender<gst::Sample>,
    audio: broadcast::Sender<gst::Sample>,
    valves: [gst::Element; 2],
    /// How many feeds are open: the valves are open while this is above zero.
    feeds: Mutex<usize>,
}

impl Tap {
    /// Publishes what `video_sink` and `audio_sink` receive; `valves` gate the branches.
    pub(crate) fn new(
        (video_sink, audio_sink): (&gst_app::AppSink, &gst_app::AppSink),
        valves: [gst::Element; 2],
    ) -> Arc<Self> {
        for valve in &valves {
            crate::gst_util::open_valve_on_eos(valve);
        }
        let tap = Arc::new(Tap {
            video: broadcast::channel(CHANNEL).0,
            audio: broadcast::channel(CHANNEL).0,
            valves,
            feeds: Mutex::new(0),
        });
        forward(video_sink, tap.video.clone());
        forward(audio_sink, tap.audio.clone());
        tap
    }

    /// A new feed; the branches run from now until every feed is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> EncodedFeed {
        let feed = EncodedFeed {
            video: self.video.subscribe(),
            audio: self.audio.subscribe(),
            _open: Opened(self.clone()),
        };
        let mut feeds = self.feeds.locked();
        *feeds += 1;
        if *feeds == 1 {
            self.set_open(true);
        }
        feed
    }

    fn set_open(&self, open: bool) {
        for valve in &self.valves {
            valve.set_property("drop", !open);
        }
    }
}

/// The encoded composite, as long as it is held: `video` carries H.264 access units
/// (byte-stream, SPS and PPS before each keyframe), `audio` AAC frames with their caps. The
/// timestamps are the pipeline's; a consumer rebases them to its own start.
pub struct EncodedFeed {
    /// H.264 access units.
    pub video: broadcast::Receiver<gst::Sample>,
    /// AAC frames.
    pub audio: broadcast::Receiver<gst::Sample>,
    _open: Opened,
}

/// Counts one open feed; closes the valves when the last one goes.
struct Opened(Arc<Tap>);

impl Drop for Opened {
    fn drop(&mut self) {
        let mut feeds = self.0.feeds.locked();
        *feeds = feeds.saturating_sub(1);
        if *feeds == 0 {
            self.0.set_open(false);
        }
    }
}

fn forward(sink: &gst_app::AppSink, tx: broadcast::Sender<gst::Sample>) {
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                // No feed is fine: the valve is about to close.
                let _ = tx.send(sample);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}
