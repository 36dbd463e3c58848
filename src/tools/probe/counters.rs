//! What one probe counts: packets, bytes, keyframes and loss per SSRC, from the RTP packets
//! its tracks read. No I/O: the track readers feed it, the report reads it.

use std::collections::HashMap;
use std::time::Instant;

use super::keyframe::{KeyframePart, h264_keyframe_part, vp8_starts_keyframe};

/// Recent sequence numbers remembered per SSRC, so duplicates and late packets within this
/// distance of the newest one are recognised instead of being counted twice.
const SEQ_WINDOW: u64 = 1024;

/// Audio or video: which counters a packet goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaKind {
    Audio,
    Video,
}

/// Video codecs whose keyframes the probe recognises (and which it can be told to offer alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VideoCodec {
    H264,
    Vp8,
}

/// The parts of an RTP packet the counters need.
pub(super) struct PacketInfo<'a> {
    pub(super) ssrc: u32,
    pub(super) sequence_number: u16,
    pub(super) timestamp: u32,
    pub(super) payload: &'a [u8],
    /// Header plus payload, in bytes.
    pub(super) size: usize,
    /// The RTP marker bit: the last packet of a video frame.
    pub(super) marker: bool,
    pub(super) at: Instant,
}

/// What [`Counters::record`] tells the track reader.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Recorded {
    /// Counted.
    Counted,
    /// Counted; a delta-frame video packet arrived before any keyframe on its SSRC.
    WaitingForKeyframe,
    /// Measurement is over: nothing more is counted.
    Frozen,
}

/// Running totals of one probe.
#[derive(Debug, Default)]
pub(super) struct Counters {
    frozen: bool,
    first_packet: Option<Instant>,
    pub(super) first_keyframe: Option<Instant>,
    video_packets: u64,
    audio_packets: u64,
    video_bytes: u64,
    total_bytes: u64,
    keyframes: u64,
    sequences: HashMap<u32, SequenceTracker>,
    /// RTP timestamp of the last key picture counted per SSRC, so a keyframe split over many
    /// packets (FU-A fragments, several IDR slices) counts once.
    last_keyframe_ts: HashMap<u32, u32>,
}

/// Totals derived from [`Counters`] at the end.
pub(super) struct Summary {
    pub(super) video_packets: u64,
    pub(super) audio_packets: u64,
    pub(super) video_bytes: u64,
    pub(super) packets_lost: u64,
    pub(super) keyframes: u64,
    pub(super) bitrate_kbps: f64,
}

impl Counters {
    pub(super) fn record(
        &mut self,
        kind: MediaKind,
        codec: Option<VideoCodec>,
        packet: &PacketInfo<'_>,
    ) -> Recorded {
        if self.frozen {
            return Recorded::Frozen;
        }
        self.first_packet.get_or_insert(packet.at);
        self.total_bytes += packet.size as u64;
        self.sequences
            .entry(packet.ssrc)
            .or_default()
            .push(packet.sequence_number);
        match kind {
            MediaKind::Audio => {
                self.audio_packets += 1;
                Recorded::Counted
            }
            MediaKind::Video => {
                self.video_packets += 1;
                self.video_bytes += packet.size as u64;
                let part = match codec {
                    Some(VideoCodec::H264) => h264_keyframe_part(packet.payload),
                    Some(VideoCodec::Vp8) if vp8_starts_keyframe(packet.payload) => {
                        KeyframePart::Picture
                    }
                    _ => KeyframePart::None,
                };
                if part != KeyframePart::None {
                    // The viewer's wait ends with the first packet of a keyframe, parameter
                    // sets included.
                    self.first_keyframe.get_or_insert(packet.at);
                }
                // Counted on the picture, once per RTP timestamp: parameter sets sent apart,
                // FU-A fragments and extra slices of the same picture all share it.
                if part == KeyframePart::Picture
                    && self.last_keyframe_ts.insert(packet.ssrc, packet.timestamp)
                        != Some(packet.timestamp)
                {
                    self.keyframes += 1;
                }
                // Only a packet of a delta frame means "cannot decode yet": parameter sets are the
                // keyframe arriving, and asking then would make a shared encoder send another.
                if part == KeyframePart::None
                    && codec.is_some()
                    && !self.last_keyframe_ts.contains_key(&packet.ssrc)
                {
                    Recorded::WaitingForKeyframe
                } else {
                    Recorded::Counted
                }
            }
        }
    }

    /// Stops counting and hands back the totals so far.
    pub(super) fn freeze(&mut self) -> Counters {
        let totals = std::mem::take(self);
        self.frozen = true;
        totals
    }

    pub(super) fn summary(&self, end: Instant) -> Summary {
        let window = self
            .first_packet
            .map(|first| end.saturating_duration_since(first).as_secs_f64())
            .unwrap_or(0.0);
        Summary {
            video_packets: self.video_packets,
            audio_packets: self.audio_packets,
            video_bytes: self.video_bytes,
            packets_lost: self.sequences.values().map(SequenceTracker::lost).sum(),
            keyframes: self.keyframes,
            bitrate_kbps: if window > 0.0 {
                self.total_bytes as f64 * 8.0 / 1000.0 / window
            } else {
                0.0
            },
        }
    }
}

/// Loss on one SSRC from its RTP sequence numbers.
///
/// Sequence numbers are extended to 64 bits (so 65535 → 0 is a step of one) relative to the
/// newest packet; a bitmap of the last `SEQ_WINDOW` numbers tells a first arrival from a
/// duplicate. Loss is "expected minus received" over the run from the first packet to the
/// newest, so a late (reordered or retransmitted) packet fills its gap, and never goes negative.
#[derive(Debug, Clone)]
pub struct SequenceTracker {
    /// Extended number of the first packet; earlier ones are ignored.
    base: u64,
    /// Extended number of the newest packet; `None` before the first.
    highest: Option<u64>,
    /// Distinct sequence numbers received in `base..=highest`.
    received: u64,
    /// Bit `n % SEQ_WINDOW` set when extended number `n` (within the window) arrived.
    seen: [u64; (SEQ_WINDOW / 64) as usize],
    /// Arrivals of a number already received (within the window): a sender or network that
    /// repeats itself, which a load test must tell apart from loss.
    duplicates: u64,
}

impl Default for SequenceTracker {
    fn default() -> Self {
        Self {
            base: 0,
            highest: None,
            received: 0,
            seen: [0; (SEQ_WINDOW / 64) as usize],
            duplicates: 0,
        }
    }
}

impl SequenceTracker {
    /// Records one arrival of `seq`.
    pub fn push(&mut self, seq: u16) {
        let Some(highest) = self.highest else {
            // Start one cycle up so a packet from just before the first can be placed below it.
            let ext = (1 << 16) + u64::from(seq);
            self.base = ext;
            self.highest = Some(ext);
            self.received = 1;
            self.set(ext);
            return;
        };
        // The signed distance from the newest packet picks the nearest cycle for `seq`.
        let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
        let ext = highest.wrapping_add_signed(delta);
        if delta > 0 {
            // Forget what the window is about to reuse.
            if delta as u64 >= SEQ_WINDOW {
                self.seen = [0; (SEQ_WINDOW / 64) as usize];
            } else {
                for n in highest + 1..=ext {
                    self.clear(n);
                }
            }
            self.highest = Some(ext);
            self.received += 1;
            self.set(ext);
        } else if ext >= self.base && highest - ext < SEQ_WINDOW && !self.is_set(ext) {
            // Late but new: it fills a gap counted so far as lost.
            self.received += 1;
            self.set(ext);
        } else if ext >= self.base && highest - ext < SEQ_WINDOW {
            self.duplicates += 1;
        }
        // Otherwise: older than the window, or from before the first packet.
    }

    /// Packets that arrived again after their first arrival.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets missing so far.
    pub fn lost(&self) -> u64 {
        match self.highest {
            Some(highest) => (highest - self.base + 1).saturating_sub(self.received),
            None => 0,
        }
    }

    fn bit(n: u64) -> (usize, u64) {
        let slot = n % SEQ_WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn set(&mut self, n: u64) {
        let (word, mask) = Self::bit(n);
        self.seen[word] |= mask;
    }

    fn clear(&mut self, n: u64) {
        let (word, mask) = Self::bit(n);
        self.seen[word] &= !mask;
    }

    fn is_set(&self, n: u64) -> bool {
        let (word, mask) = Self::bit(n);
        self.seen[word] & mask != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(seqs: &[u16]) -> SequenceTracker {
        let mut t = SequenceTracker::default();
        for &s in seqs {
            t.push(s);
        }
        t
    }

    #[test]
    fn loss_counts_gaps() {
        assert_eq!(tracker(&[]).lost(), 0);
        assert_eq!(tracker(&[10, 11, 12]).lost(), 0);
        assert_eq!(tracker(&[10, 13, 14]).lost(), 2);
        assert_eq!(tracker(&[10, 12, 14, 16]).lost(), 3);
    }

    #[test]
    fn loss_handles_wrap_around() {
        assert_eq!(tracker(&[65533, 65534, 65535, 0, 1]).lost(), 0);
        assert_eq!(tracker(&[65534, 65535, 1, 2]).lost(), 1);
        assert_eq!(tracker(&[65535, 0]).lost(), 0);
        // Many cycles without loss.
        let run: Vec<u16> = (0..200_000u32).map(|n| (n + 60_000) as u16).collect();
        assert_eq!(tracker(&run).lost(), 0);
    }

    #[test]
    fn duplicates_and_reordering_are_not_loss() {
        assert_eq!(tracker(&[1, 2, 2, 3, 3, 3]).lost(), 0);
        assert_eq!(tracker(&[1, 3, 2, 4]).lost(), 0);
        assert_eq!(tracker(&[65535, 1, 0, 2]).lost(), 0);
        // A retransmission fills its gap; a second copy changes nothing.
        assert_eq!(tracker(&[1, 2, 4, 5, 3, 3]).lost(), 0);
        assert_eq!(tracker(&[1, 2, 4, 5, 3, 3]).duplicates(), 1);
        assert_eq!(tracker(&[1, 2, 2, 3, 3, 3]).duplicates(), 3);
        assert_eq!(tracker(&[1, 3, 2, 4]).duplicates(), 0);
        // A duplicate must not hide a real loss.
        assert_eq!(tracker(&[1, 2, 2, 4]).lost(), 1);
        // A packet from before the first one neither counts as loss nor hides one.
        assert_eq!(tracker(&[5, 4, 7]).lost(), 1);
        // A packet older than the window is ignored, not double-counted.
        let mut t = tracker(&[1]);
        for s in 3..3000 {
            t.push(s);
        }
        assert_eq!(t.lost(), 1);
        t.push(2);
        assert_eq!(t.lost(), 1);
        t.push(2999);
        assert_eq!(t.lost(), 1);
    }

    #[test]
    fn a_keyframe_counts_once_whatever_its_packets() {
        let mut c = Counters::default();
        let now = Instant::now();
        let packet = |seq: u16, ts: u32, payload: &'static [u8]| PacketInfo {
            ssrc: 7,
            sequence_number: seq,
            timestamp: ts,
            payload,
            size: 12 + payload.len(),
            marker: false,
            at: now,
        };
        let h264 = Some(VideoCodec::H264);
        // A delta frame first: the reader should ask for a keyframe.
        assert_eq!(
            c.record(MediaKind::Video, h264, &packet(1, 0, &[0x41, 0x9a])),
            Recorded::WaitingForKeyframe
        );
        // SPS/PPS STAP-A, then the IDR in FU-A fragments, all one timestamp: one keyframe.
        // The parameter sets are the keyframe arriving, so no keyframe request for them.
        assert_eq!(
            c.record(
                MediaKind::Video,
                h264,
                &packet(2, 3000, &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]),
            ),
            Recorded::Counted
        );
        assert!(c.first_keyframe.is_some());
        c.record(MediaKind::Video, h264, &packet(3, 3000, &[0x7c, 0x85, 0]));
        c.record(MediaKind::Video, h264, &packet(4, 3000, &[0x7c, 0x45, 0]));
        assert_eq!(c.keyframes, 1);
        // Parameter sets stamped apart from their IDR still make one keyframe.
        c.record(
            MediaKind::Video,
            h264,
            &packet(40, 4000, &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]),
        );
        c.record(MediaKind::Video, h264, &packet(41, 4001, &[0x65, 0x88]));
        assert_eq!(c.keyframes, 2);
        assert_eq!(
            c.record(MediaKind::Video, h264, &packet(5, 6000, &[0x41, 0x9a])),
            Recorded::Counted
        );
        // The next IDR counts again; a second slice of it does not.
        c.record(MediaKind::Video, h264, &packet(6, 9000, &[0x65, 0x88]));
        c.record(MediaKind::Video, h264, &packet(7, 9000, &[0x65, 0xb8]));
        assert_eq!(c.keyframes, 3);
        assert_eq!(c.video_packets, 9);
        let frozen = c.freeze();
        assert_eq!(frozen.keyframes, 3);
        assert_eq!(
            c.record(MediaKind::Video, h264, &packet(8, 9000, &[0x65])),
            Recorded::Frozen
        );
    }
}
