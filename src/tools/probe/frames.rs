//! The pictures a viewer could show, from the video's RTP packets alone: which frames arrived
//! whole and decodable, when, and at what size. Nothing is decoded; a frame is
//!
//! - **whole** once every sequence number from the one after the previous frame's marker
//!   packet up to its own marker has arrived (late resends count when they come);
//! - **shown** when it is whole and either a keyframe or the next frame of an unbroken chain
//!   since one, no earlier than the frame before it (a decoder shows frames in order);
//! - **skipped** when it cannot be shown: a later keyframe arrived whole first, or it stayed
//!   incomplete for [`GIVE_UP_AFTER`] (it breaks the chain until the next keyframe, as it would
//!   a real decoder's).
//!
//! The picture's size comes from the keyframes (H.264 SPS, VP8 key frame header). Times are
//! milliseconds after the probe received the server's answer. This is what tells a probe's
//! "switched to 360p at 4.2 s, longest freeze 380 ms" without a decoder.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::counters::{PacketInfo, VideoCodec};
use super::keyframe::{KeyframePart, h264_keyframe_part, vp8_starts_keyframe};
use super::picture::{PictureSize, h264_carries_no_picture, h264_payload_size, vp8_payload_size};

/// An incomplete frame is given up after this long without its missing packets: a real
/// jitter buffer waits about as long for resends before it asks for a keyframe.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(1);
/// Gaps between shown frames shorter than this are the stream's own pace, not worth a record.
const GAP_RECORDED: Duration = Duration::from_millis(100);
/// At most this many packets wait for their frame; beyond that the oldest frame is given up
/// (a stream without marker bits must not grow the probe without bound).
const MAX_WAITING: usize = 20_000;
/// At most this many gaps and size changes are kept.
const MAX_RECORDS: usize = 10_000;

/// The picture changed size: from `at_ms` on, frames are `width`x`height`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SizeChange {
    pub at_ms: f64,
    pub width: u32,
    pub height: u32,
}

/// A time without a new frame: after the frame shown at `after_ms`, none for `ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gap {
    pub after_ms: f64,
    pub ms: f64,
}

/// What the probe's pictures did so far. Times are ms after the answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VideoTimeline {
    /// Every size the shown frames had, in order (the first is the first keyframe's).
    pub sizes: Vec<SizeChange>,
    /// Frames shown.
    pub frames: u64,
    /// Frames that could not be shown (incomplete, or after a frame that was).
    pub skipped: u64,
    pub first_frame_ms: Option<f64>,
    pub last_frame_ms: Option<f64>,
    /// Gaps over 100 ms between shown frames, in order.
    pub gaps: Vec<Gap>,
    /// When this timeline was read (or the probe stopped watching).
    pub now_ms: f64,
}

impl VideoTimeline {
    /// The size of the frames shown now.
    pub fn size(&self) -> Option<PictureSize> {
        self.sizes.last().map(|c| PictureSize {
            width: c.width,
            height: c.height,
        })
    }

    /// When frames first had `height` lines at or after `from_ms` (`from_ms` itself when they
    /// already had it then).
    pub fn first_at_height(&self, height: u32, from_ms: f64) -> Option<f64> {
        let before = self.sizes.iter().rev().find(|c| c.at_ms <= from_ms);
        if before.is_some_and(|c| c.height == height) {
            return Some(from_ms);
        }
        self.sizes
            .iter()
            .find(|c| c.at_ms > from_ms && c.height == height)
            .map(|c| c.at_ms)
    }

    /// The longest time between `from_ms` and `to_ms` in which no new frame was shown; the
    /// end counts, so a picture that stopped is frozen until `to_ms`. Gaps under 100 ms are not
    /// recorded: a result below that only says there was no longer one.
    pub fn longest_freeze(&self, from_ms: f64, to_ms: f64) -> f64 {
        let overlap = |start: f64, end: f64| (end.min(to_ms) - start.max(from_ms)).max(0.0);
        let gaps = self
            .gaps
            .iter()
            .map(|g| overlap(g.after_ms, g.after_ms + g.ms));
        let tail = match self.last_frame_ms {
            Some(last) => overlap(last, to_ms),
            None => overlap(from_ms, to_ms),
        };
        gaps.fold(tail, f64::max)
    }

    /// One line for people: sizes with their times, frames, the worst gaps.
    pub fn describe(&self) -> String {
        let sizes: Vec<String> = self
            .sizes
            .iter()
            .map(|c| format!("{}x{} at {:.1} s", c.width, c.height, c.at_ms / 1000.0))
            .collect();
        let mut worst = self.gaps.clone();
        worst.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        let gaps: Vec<String> = worst
            .iter()
            .take(5)
            .map(|g| format!("{:.0} ms after {:.1} s", g.ms, g.after_ms / 1000.0))
            .collect();
        format!(
            "sizes [{}]; {} frames shown, {} skipped; last at {}; longest gaps [{}]; read at \
             {:.1} s",
            sizes.join(", "),
            self.frames,
            self.skipped,
            self.last_frame_ms
                .map_or("-".into(), |ms| format!("{:.1} s", ms / 1000.0)),
            gaps.join(", "),
            self.now_ms / 1000.0
        )
    }
}

/// A live view of one probe's pictures: the probe writes, a test reads while it runs.
#[derive(Debug, Clone, Default)]
pub struct VideoWatch(Arc<Mutex<Frames>>);

impl VideoWatch {
    /// What the pictures did so far.
    pub fn timeline(&self) -> VideoTimeline {
        let frames = self.0.lock().expect("frames lock");
        let mut timeline = frames.timeline.clone();
        let now = frames.stopped.unwrap_or_else(Instant::now);
        timeline.now_ms = frames.ms(now);
        timeline
    }

    /// `at` in the timeline's time (ms after the answer); `None` before the answer.
    pub fn ms_at(&self, at: Instant) -> Option<f64> {
        let frames = self.0.lock().expect("frames lock");
        frames.answered.map(|_| frames.ms(at))
    }

    /// The zero of the timeline.
    pub(super) fn answered(&self, at: Instant) {
        self.0
            .lock()
            .expect("frames lock")
            .answered
            .get_or_insert(at);
    }

    /// Nothing more is recorded after `at`.
    pub(super) fn stop(&self, at: Instant) {
        self.0
            .lock()
            .expect("frames lock")
            .stopped
            .get_or_insert(at);
    }

    pub(super) fn record(&self, codec: Option<VideoCodec>, packet: &PacketInfo<'_>) {
        let mut frames = self.0.lock().expect("frames lock");
        if frames.stopped.is_none()
            && let Some(codec) = codec
        {
            frames.push(codec, packet);
        }
    }
}

/// One packet waiting for its frame to be whole.
#[derive(Debug)]
struct Waiting {
    at: Instant,
    /// Starts a keyframe.
    key: bool,
    /// Part of a picture (not only parameter sets).
    picture: bool,
    size: Option<PictureSize>,
}

/// The frame tracker behind [`VideoWatch`].
#[derive(Debug, Default)]
struct Frames {
    answered: Option<Instant>,
    stopped: Option<Instant>,
    ssrc: Option<u32>,
    /// Newest extended sequence number of `ssrc`.
    highest: Option<u64>,
    /// Where the next frame not yet shown or skipped starts.
    next: Option<u64>,
    waiting: BTreeMap<u64, Waiting>,
    markers: BTreeSet<u64>,
    /// The frame before `next` was shown: a delta frame after it can be too.
    chain: bool,
    /// The size the newest keyframe announced.
    announced: Option<PictureSize>,
    last_shown: Option<Instant>,
    timeline: VideoTimeline,
}

impl Frames {
    fn ms(&self, at: Instant) -> f64 {
        self.answered.map_or(0.0, |zero| {
            if at >= zero {
                at.duration_since(zero).as_secs_f64() * 1000.0
            } else {
                -(zero.duration_since(at).as_secs_f64() * 1000.0)
            }
        })
    }

    fn push(&mut self, codec: VideoCodec, packet: &PacketInfo<'_>) {
        self.answered.get_or_insert(packet.at);
        if self.ssrc != Some(packet.ssrc) {
            // A new stream starts over; what was shown stays shown.
            self.ssrc = Some(packet.ssrc);
            self.highest = None;
            self.next = None;
            self.waiting.clear();
            self.markers.clear();
            self.chain = false;
        }
        let ext = self.extend(packet.sequence_number);
        let next = *self.next.get_or_insert(ext);
        if ext < next {
            // A late copy of a frame already shown or given up.
            return;
        }
        let (key, picture, size) = match codec {
            VideoCodec::H264 => (
                h264_keyframe_part(packet.payload) == KeyframePart::Picture,
                !h264_carries_no_picture(packet.payload),
                h264_payload_size(packet.payload),
            ),
            VideoCodec::Vp8 => (
                vp8_starts_keyframe(packet.payload),
                true,
                vp8_payload_size(packet.payload),
            ),
        };
        self.waiting.entry(ext).or_insert(Waiting {
            at: packet.at,
            key,
            picture,
            size,
        });
        if packet.marker {
            self.markers.insert(ext);
        }
        self.resolve(packet.at);
        while self.waiting.len() > MAX_WAITING {
            let Some((&oldest, _)) = self.waiting.first_key_value() else {
                break;
            };
            self.give_up(oldest + 1);
            self.resolve(packet.at);
        }
    }

    /// Extends a 16-bit sequence number to 64 bits, relative to the newest one.
    fn extend(&mut self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            let ext = (1 << 16) + u64::from(seq);
            self.highest = Some(ext);
            return ext;
        };
        let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
        let ext = highest.wrapping_add_signed(delta);
        if delta > 0 {
            self.highest = Some(ext);
        }
        ext
    }

    /// Shows or skips every frame that can be decided now, oldest first.
    fn resolve(&mut self, now: Instant) {
        loop {
            let Some(start) = self.next else { return };
            let Some(&end) = self.markers.range(start..).next() else {
                return;
            };
            if self.whole(start, end) {
                self.finish(start, end);
                continue;
            }
            if let Some(key_start) = self.whole_keyframe_after(end) {
                self.give_up(key_start);
                continue;
            }
            let marker_at = self.waiting.get(&end).map_or(now, |w| w.at);
            if now.saturating_duration_since(marker_at) > GIVE_UP_AFTER {
                self.give_up(end + 1);
                continue;
            }
            return;
        }
    }

    fn whole(&self, start: u64, end: u64) -> bool {
        self.waiting.range(start..=end).count() as u64 == end - start + 1
    }

    /// Where the first whole keyframe after the frame ending at `end` starts, if one has
    /// arrived: the frames before it can no longer matter.
    fn whole_keyframe_after(&self, end: u64) -> Option<u64> {
        let mut start = end + 1;
        for &marker in self.markers.range(end + 1..) {
            if self.whole(start, marker) && self.waiting.range(start..=marker).any(|(_, w)| w.key) {
                return Some(start);
            }
            start = marker + 1;
        }
        None
    }

    /// The frame `start..=end` is whole: show it if it can be decoded.
    fn finish(&mut self, start: u64, end: u64) {
        let mut key = false;
        let mut picture = false;
        let mut done = None::<Instant>;
        for w in self.waiting.range(start..=end).map(|(_, w)| w) {
            key |= w.key;
            picture |= w.picture;
            done = Some(done.map_or(w.at, |d| d.max(w.at)));
            if let Some(size) = w.size {
                self.announced = Some(size);
            }
        }
        self.forget_before(end + 1);
        // Parameter sets sent as a frame of their own are part of the keyframe to come.
        let Some(done) = done.filter(|_| picture) else {
            return;
        };
        if key || self.chain {
            self.chain = true;
            self.show(done, key);
        } else {
            self.timeline.skipped += 1;
        }
    }

    fn show(&mut self, done: Instant, key: bool) {
        // In order: a frame is shown no earlier than the one before it.
        let at = self.last_shown.map_or(done, |last| last.max(done));
        let at_ms = self.ms(at);
        if let Some(last) = self.last_shown {
            let gap = at.duration_since(last);
            if gap > GAP_RECORDED && self.timeline.gaps.len() < MAX_RECORDS {
                self.timeline.gaps.push(Gap {
                    after_ms: self.ms(last),
                    ms: gap.as_secs_f64() * 1000.0,
                });
            }
        }
        self.last_shown = Some(at);
        let timeline = &mut self.timeline;
        timeline.frames += 1;
        timeline.first_frame_ms.get_or_insert(at_ms);
        timeline.last_frame_ms = Some(at_ms);
        if key
            && let Some(size) = self.announced
            && timeline.size() != Some(size)
            && timeline.sizes.len() < MAX_RECORDS
        {
            timeline.sizes.push(SizeChange {
                at_ms,
                width: size.width,
                height: size.height,
            });
        }
    }

    /// Gives up every frame before `start`: the chain is broken until the next keyframe.
    fn give_up(&mut self, start: u64) {
        // Each marker is the end of one frame; a frame whose marker was lost counts too.
        let frames = self.markers.range(..start).count().max(1);
        self.timeline.skipped += frames as u64;
        self.forget_before(start);
        self.chain = false;
    }

    fn forget_before(&mut self, start: u64) {
        self.waiting = self.waiting.split_off(&start);
        self.markers = self.markers.split_off(&start);
        self.next = Some(start);
    }
}

#[cfg(test)]
mod tests {
    use gstreamer as gst;
    use gstreamer_app as gst_app;

    use gst::prelude::*;

    use super::*;

    /// One RTP packet: marker bit, sequence number, payload.
    type Rtp = (bool, u16, Vec<u8>);

    /// RTP packets of `frames` frames of `width`x`height`, payloaded as the broadcaster's
    /// presets do.
    fn rtp(codec: VideoCodec, width: u32, height: u32, frames: u32) -> Vec<Rtp> {
        gst::init().unwrap();
        let encode = match codec {
            VideoCodec::H264 => {
                "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=2000 ! \
                 video/x-h264,profile=constrained-baseline ! \
                 rtph264pay config-interval=-1 aggregate-mode=zero-latency mtu=1200"
            }
            VideoCodec::Vp8 => {
                "vp8enc deadline=1 keyframe-max-dist=10 target-bitrate=2000000 ! \
                 rtpvp8pay picture-id-mode=15-bit mtu=1200"
            }
        };
        let description = format!(
            "videotestsrc num-buffers={frames} pattern=snow ! video/x-raw,format=I420,\
             width={width},height={height},framerate=30/1 ! {encode} ! appsink name=sink \
             sync=false"
        );
        let pipeline = gst::parse::launch(&description)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut packets = Vec::new();
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
            let buffer = sample.buffer().unwrap().map_readable().unwrap();
            let data = buffer.as_slice();
            // Fixed 12-byte header: the payloaders add no CSRC or extension here.
            let marker = data[1] & 0x80 != 0;
            let seq = u16::from_be_bytes([data[2], data[3]]);
            packets.push((marker, seq, data[12..].to_vec()));
        }
        pipeline.set_state(gst::State::Null).unwrap();
        packets
    }

    /// Feeds `packets` to a fresh watch, one frame every `frame_ms`, skipping the indices in
    /// `drop`; returns the timeline.
    fn watch(codec: VideoCodec, streams: &[(u32, &[Rtp])], drop: &[usize]) -> VideoTimeline {
        let watch = VideoWatch::default();
        let zero = Instant::now();
        watch.answered(zero);
        let mut at = zero;
        let mut i = 0;
        for &(ssrc, packets) in streams {
            for (marker, seq, payload) in packets {
                if !drop.contains(&i) {
                    let packet = PacketInfo {
                        ssrc,
                        sequence_number: *seq,
                        timestamp: 0,
                        payload,
                        size: 12 + payload.len(),
                        marker: *marker,
                        at,
                    };
                    watch.record(Some(codec), &packet);
                }
                if *marker {
                    at += Duration::from_millis(33);
                }
                i += 1;
            }
        }
        watch.stop(at);
        watch.timeline()
    }

    #[test]
    fn every_frame_of_a_clean_stream_is_shown_at_its_size() {
        for codec in [VideoCodec::H264, VideoCodec::Vp8] {
            let packets = rtp(codec, 640, 360, 30);
            let timeline = watch(codec, &[(1, &packets)], &[]);
            assert_eq!(timeline.frames, 30, "{codec:?}: {timeline:?}");
            assert_eq!(timeline.skipped, 0, "{codec:?}: {timeline:?}");
            assert_eq!(
                timeline.sizes,
                [SizeChange {
                    at_ms: 0.0,
                    width: 640,
                    height: 360
                }],
                "{codec:?}"
            );
            assert!(timeline.gaps.is_empty(), "{codec:?}: {timeline:?}");
            assert!(timeline.longest_freeze(0.0, timeline.now_ms) < 40.0);
        }
    }

    #[test]
    fn a_lost_packet_freezes_the_picture_until_the_next_keyframe() {
        let packets = rtp(VideoCodec::H264, 640, 360, 30);
        // key-int-max=10: keyframes at frames 0, 10 and 20. Lose the first packet of the first
        // frame after frame 1 that has more than one (a lone packet would take its marker along
        // and merge two frames).
        let ends: Vec<usize> = (0..packets.len()).filter(|&i| packets[i].0).collect();
        let (lost_frame, lost) = (2..10)
            .find(|&k| ends[k] > ends[k - 1] + 1)
            .map(|k| (k, ends[k - 1] + 1))
            .expect("frames 2 to 9 are all one packet each");
        let timeline = watch(VideoCodec::H264, &[(1, &packets)], &[lost]);
        // Frames from the damaged one to 9 cannot be shown; the keyframe at 10 restarts the
        // picture, a gap of the frames skipped and one more.
        let skipped = 10 - lost_frame as u64;
        assert_eq!(timeline.frames, 30 - skipped, "{timeline:?}");
        assert_eq!(timeline.skipped, skipped, "{timeline:?}");
        let longest = timeline.longest_freeze(0.0, timeline.now_ms);
        let expected = (skipped + 1) as f64 * 33.0;
        assert!((longest - expected).abs() < 1.0, "{longest} {timeline:?}");
        assert_eq!(timeline.gaps.len(), 1, "{timeline:?}");
    }

    #[test]
    fn a_switch_to_a_smaller_rendition_shows_as_a_new_size() {
        // The broadcaster's switch: the 360p rendition's keyframe follows the 720p frames on
        // the same SSRC with the next sequence number.
        let big = rtp(VideoCodec::H264, 1280, 720, 10);
        let mut small = rtp(VideoCodec::H264, 640, 360, 10);
        let next = big.last().unwrap().1.wrapping_add(1);
        for (i, packet) in small.iter_mut().enumerate() {
            packet.1 = next.wrapping_add(i as u16);
        }
        let joined: Vec<_> = big.iter().chain(&small).cloned().collect();
        let timeline = watch(VideoCodec::H264, &[(9, &joined)], &[]);
        assert_eq!(timeline.frames, 20, "{timeline:?}");
        let heights: Vec<u32> = timeline.sizes.iter().map(|c| c.height).collect();
        assert_eq!(heights, [720, 360], "{timeline:?}");
        let switched = timeline.first_at_height(360, 0.0).unwrap();
        assert!((300.0..=350.0).contains(&switched), "{timeline:?}");
        assert_eq!(timeline.first_at_height(720, 100.0), Some(100.0));
        // A new SSRC starts over at its own keyframe.
        let timeline = watch(VideoCodec::H264, &[(9, &big), (10, &small)], &[]);
        assert_eq!(timeline.frames, 20, "{timeline:?}");
        assert_eq!(timeline.sizes.len(), 2, "{timeline:?}");
    }

    #[test]
    fn a_stream_that_stops_is_frozen_until_now() {
        let timeline = VideoTimeline {
            last_frame_ms: Some(1000.0),
            first_frame_ms: Some(0.0),
            gaps: vec![Gap {
                after_ms: 200.0,
                ms: 300.0,
            }],
            now_ms: 5000.0,
            ..VideoTimeline::default()
        };
        assert_eq!(timeline.longest_freeze(0.0, 1000.0), 300.0);
        assert_eq!(timeline.longest_freeze(400.0, 1000.0), 100.0);
        assert_eq!(timeline.longest_freeze(0.0, 5000.0), 4000.0);
        let empty = VideoTimeline::default();
        assert_eq!(empty.longest_freeze(100.0, 600.0), 500.0);
    }
}
