//! One encoding the fan-out sends (a rendition of the composite): the sequence space of its
//! packets, its GOP cache, its keyframe gate, and whether its encoder should be running.
//!
//! The main rendition always runs. An on-demand one (VP8 for browsers without H.264) runs while
//! a viewer receives it, and for [`BroadcastConfig::rendition_linger`] after the last one
//! leaves, so a viewer who reloads the page does not pay for a cold encoder.
//!
//! [`BroadcastConfig::rendition_linger`]: super::BroadcastConfig::rendition_linger

use std::time::{Duration, Instant};

use super::keyframes::{Gop, KeyframeGate};
use super::rtp::SeqUnwrapper;
pub use crate::pipeline::output::RenditionId;

/// What the pipeline offers: a rendition the fan-out can send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// Which of the pipeline's encodings it is.
    pub id: RenditionId,
    /// RTP encoding name: `H264` or `VP8`.
    pub codec: String,
    /// Its encoder runs only while someone receives it.
    pub on_demand: bool,
    /// Its label in the quality menu (`720p`, `360p`).
    pub name: String,
    /// Lines of its picture.
    pub height: u32,
    /// Its encoder's target, in kbit/s: what a viewer's link must carry for it.
    pub bitrate_kbps: u32,
}

/// The fan-out's state of one rendition.
#[derive(Debug)]
pub struct Stream {
    /// What it is.
    pub rendition: Rendition,
    /// Extends the pipeline's 16-bit sequence numbers.
    pub seq: SeqUnwrapper,
    /// Packets since its latest keyframe, for viewers who join now.
    pub gop: Gop,
    /// Merges keyframe requests of its viewers.
    pub gate: KeyframeGate,
    /// Viewers holding a session on it.
    viewers: usize,
    /// Its encoder is (asked to be) running.
    active: bool,
    /// Since when nobody receives it (on-demand renditions only).
    idle_since: Option<Instant>,
}

impl Stream {
    /// A stream of `rendition`; an on-demand one starts stopped.
    pub fn new(rendition: Rendition) -> Self {
        Self {
            active: !rendition.on_demand,
            rendition,
            seq: SeqUnwrapper::default(),
            gop: Gop::default(),
            gate: KeyframeGate::default(),
            viewers: 0,
            idle_since: None,
        }
    }

    /// A viewer takes this stream; true if its encoder must be started for it.
    pub fn add_viewer(&mut self) -> bool {
        self.viewers += 1;
        self.idle_since = None;
        if self.active {
            return false;
        }
        self.active = true;
        // What is cached is from before the encoder stopped: a viewer must not start there.
        self.gop = Gop::default();
        true
    }

    /// A viewer left this stream at `now`.
    pub fn remove_viewer(&mut self, now: Instant) {
        self.viewers = self.viewers.saturating_sub(1);
        if self.viewers == 0 && self.rendition.on_demand {
            self.idle_since = Some(now);
        }
    }

    /// Viewers on this stream.
    pub fn viewers(&self) -> usize {
        self.viewers
    }

    /// Whether its encoder is running.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// True, once, when the encoder should stop at `now`: nobody has received it for `linger`.
    pub fn poll_stop(&mut self, now: Instant, linger: Duration) -> bool {
        match self.deadline(linger) {
            Some(at) if now >= at => {
                self.active = false;
                self.idle_since = None;
                true
            }
            _ => false,
        }
    }

    /// When [`Stream::poll_stop`] is next due, if the encoder runs for nobody.
    pub fn deadline(&self, linger: Duration) -> Option<Instant> {
        self.idle_since.filter(|_| self.active).map(|t| t + linger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8() -> Stream {
        Stream::new(Rendition {
            id: RenditionId(1),
            codec: "VP8".into(),
            on_demand: true,
            name: "720p".into(),
            height: 720,
            bitrate_kbps: 2500,
        })
    }

    #[test]
    fn an_on_demand_stream_runs_from_its_first_viewer_until_the_linger_after_its_last() {
        let t0 = Instant::now();
        let linger = Duration::from_secs(30);
        let mut s = vp8();
        assert!(!s.is_active());
        assert_eq!(s.deadline(linger), None);
        assert!(s.add_viewer(), "the first viewer starts it");
        assert!(!s.add_viewer(), "the second finds it running");
        s.remove_viewer(t0);
        assert_eq!(s.deadline(linger), None, "one still watches");
        s.remove_viewer(t0 + Duration::from_secs(1));
        let at = t0 + Duration::from_secs(1) + linger;
        assert_eq!(s.deadline(linger), Some(at));
        assert!(!s.poll_stop(at - Duration::from_millis(1), linger));
        assert!(s.poll_stop(at, linger));
        assert!(!s.is_active());
        assert!(!s.poll_stop(at + linger, linger), "stopped once");
        assert!(s.add_viewer(), "and started again");
    }

    #[test]
    fn a_viewer_back_within_the_linger_keeps_it_running() {
        let t0 = Instant::now();
        let linger = Duration::from_secs(30);
        let mut s = vp8();
        s.add_viewer();
        s.remove_viewer(t0);
        assert!(!s.add_viewer(), "still running");
        assert_eq!(s.deadline(linger), None);
        assert!(!s.poll_stop(t0 + linger * 2, linger));
    }

    #[test]
    fn the_main_stream_always_runs() {
        let t0 = Instant::now();
        let mut s = Stream::new(Rendition {
            id: RenditionId::MAIN,
            codec: "H264".into(),
            on_demand: false,
            name: "720p".into(),
            height: 720,
            bitrate_kbps: 2500,
        });
        assert!(s.is_active());
        assert!(!s.add_viewer());
        s.remove_viewer(t0);
        assert_eq!(s.deadline(Duration::ZERO), None);
        assert!(!s.poll_stop(t0 + Duration::from_secs(100), Duration::ZERO));
    }
}
