//! Which RTP packets carry a keyframe, so a viewer joining now knows where it can start.
//!
//! rtph264pay flags every packet that is not part of a keyframe (or the parameter sets before
//! one) as a delta unit; rtpvp8pay flags none, so every VP8 packet would look like a keyframe
//! and a viewer would wait for a GOP start that never comes. VP8 packets are therefore read
//! instead (RFC 7741): the first packet of a frame carries the VP8 payload header, whose P bit
//! is 0 for a keyframe, and every packet of that frame until the next frame starts shares its
//! answer.

/// How the keyframe flag of a video stream's packets is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeMarker {
    /// The payloader's DELTA_UNIT flag says it (H.264).
    BufferFlags,
    /// The VP8 payload says it; `frame_key` is the answer for the frame being packetized,
    /// `frame_ts` its RTP timestamp.
    Vp8 { frame_key: bool, frame_ts: u32 },
}

impl KeyframeMarker {
    /// The marker for a stream of `encoding_name` (as in SDP).
    pub fn for_codec(encoding_name: &str) -> Self {
        if encoding_name.eq_ignore_ascii_case("VP8") {
            Self::Vp8 {
                frame_key: false,
                frame_ts: 0,
            }
        } else {
            Self::BufferFlags
        }
    }

    /// Whether `packet` (a whole RTP packet) is part of a keyframe; `delta_unit` is the
    /// buffer's DELTA_UNIT flag. Call it for every packet of the stream, in order.
    pub fn is_keyframe(&mut self, packet: &[u8], delta_unit: bool) -> bool {
        match self {
            Self::BufferFlags => !delta_unit,
            Self::Vp8 {
                frame_key,
                frame_ts,
            } => {
                let Some((ts, payload)) = rtp_payload(packet) else {
                    return false;
                };
                match vp8_frame_start(payload) {
                    Some(key) => {
                        *frame_key = key;
                        *frame_ts = ts;
                    }
                    // A packet of another frame whose start we never saw is not trusted.
                    None if ts != *frame_ts => *frame_key = false,
                    None => {}
                }
                *frame_key
            }
        }
    }
}

/// The RTP timestamp and payload of `packet`; `None` when it is malformed.
fn rtp_payload(packet: &[u8]) -> Option<(u32, &[u8])> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let timestamp = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let mut start = 12 + usize::from(packet[0] & 0x0f) * 4;
    if packet[0] & 0x10 != 0 {
        let words = packet.get(start + 2..start + 4)?;
        start += 4 + usize::from(u16::from_be_bytes([words[0], words[1]])) * 4;
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    Some((timestamp, packet.get(start..end)?))
}

/// For the first packet of a VP8 frame (S bit set, partition 0), whether the frame is a
/// keyframe; `None` for every other packet.
fn vp8_frame_start(payload: &[u8]) -> Option<bool> {
    let first = *payload.first()?;
    let (extended, start, partition) = (first & 0x80 != 0, first & 0x10 != 0, first & 0x0f);
    if !start || partition != 0 {
        return None;
    }
    let mut header = 1;
    if extended {
        let flags = *payload.get(1)?;
        header = 2;
        if flags & 0x80 != 0 {
            // PictureID: 15 bits when its M bit is set, else 7.
            let long = *payload.get(header)? & 0x80 != 0;
            header += if long { 2 } else { 1 };
        }
        if flags & 0x40 != 0 {
            header += 1; // TL0PICIDX
        }
        if flags & 0x30 != 0 {
            header += 1; // TID/Y/KEYIDX
        }
    }
    // The VP8 payload header: P (inverse keyframe flag) is its lowest bit.
    Some(*payload.get(header)? & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet with `payload`, timestamp `ts`, no CSRC and no extension.
    fn rtp(ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 97, 0, 1];
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn vp8_frames_are_read_from_the_payload() {
        let mut m = KeyframeMarker::for_codec("VP8");
        // Keyframe with a 15-bit picture id: X, S set; I set; M set; then P = 0.
        assert!(m.is_keyframe(&rtp(10, &[0x90, 0x80, 0x80, 0x01, 0x10, 0x02]), false));
        // Its continuation (S clear) shares the answer.
        assert!(m.is_keyframe(&rtp(10, &[0x80, 0x80, 0x80, 0x01, 0xaa]), false));
        // Next frame: P = 1, a delta frame; its continuation too.
        assert!(!m.is_keyframe(&rtp(20, &[0x90, 0x80, 0x80, 0x02, 0x11, 0x02]), false));
        assert!(!m.is_keyframe(&rtp(20, &[0x80, 0x80, 0x80, 0x02, 0xaa]), false));
        // No extension byte at all, keyframe.
        assert!(m.is_keyframe(&rtp(30, &[0x10, 0x50]), false));
        // A continuation of a frame whose start was never seen is not a keyframe.
        assert!(!m.is_keyframe(&rtp(40, &[0x00, 0x50]), false));
        // Malformed packets are not keyframes.
        assert!(!m.is_keyframe(&[0x80, 97], false));
    }

    /// Every packet of `sample` (a buffer or a list), with its DELTA_UNIT flag.
    fn packets(sample: &gstreamer::Sample) -> Vec<(Vec<u8>, bool)> {
        use gstreamer as gst;
        let one = |b: &gst::BufferRef| {
            let delta = b.flags().contains(gst::BufferFlags::DELTA_UNIT);
            (b.map_readable().unwrap().to_vec(), delta)
        };
        match sample.buffer_list() {
            Some(list) => list.iter().map(one).collect(),
            None => vec![one(sample.buffer().unwrap())],
        }
    }

    #[test]
    fn rtpvp8pay_packets_are_flagged_at_exactly_the_keyframes() {
        use gstreamer as gst;
        use gstreamer_app as gst_app;

        use gst::prelude::*;
        gst::init().unwrap();
        // The encoder's own flags are the truth; the RTP side must agree frame by frame. A
        // small MTU splits frames over several packets, as a busy picture does at 1200.
        let pipeline = gst::parse::launch(
            "videotestsrc num-buffers=60 pattern=ball \
             ! video/x-raw,width=640,height=360,framerate=30/1 \
             ! vp8enc deadline=1 cpu-used=8 keyframe-max-dist=15 target-bitrate=1500000 \
             ! tee name=t t. ! queue ! appsink name=frames sync=false \
             t. ! queue ! rtpvp8pay picture-id-mode=15-bit mtu=300 ! appsink name=rtp sync=false",
        )
        .expect("vp8enc and rtpvp8pay (gst-plugins-good) are needed")
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = |name: &str| {
            pipeline
                .by_name(name)
                .unwrap()
                .downcast::<gst_app::AppSink>()
                .unwrap()
        };
        let (frames, rtp) = (sink("frames"), sink("rtp"));
        pipeline.set_state(gst::State::Playing).unwrap();
        let timeout = gst::ClockTime::from_seconds(20);
        let mut encoded = Vec::new();
        while let Some(sample) = frames.try_pull_sample(timeout) {
            let delta = sample.buffer().unwrap().flags();
            encoded.push(!delta.contains(gst::BufferFlags::DELTA_UNIT));
        }
        let mut marker = KeyframeMarker::for_codec("VP8");
        // Per RTP timestamp (one per frame), the flag of each of its packets.
        let mut sent: Vec<(u32, Vec<bool>)> = Vec::new();
        let mut payloader_flags_a_delta = false;
        while let Some(sample) = rtp.try_pull_sample(timeout) {
            for (data, delta) in packets(&sample) {
                payloader_flags_a_delta |= delta;
                let ts = u32::from_be_bytes(data[4..8].try_into().unwrap());
                let key = marker.is_keyframe(&data, delta);
                match sent.last_mut() {
                    Some((last, flags)) if *last == ts => flags.push(key),
                    _ => sent.push((ts, vec![key])),
                }
            }
        }
        pipeline.set_state(gst::State::Null).unwrap();

        assert!(!payloader_flags_a_delta, "rtpvp8pay now flags delta units");
        assert_eq!(encoded.len(), 60, "frames encoded");
        assert_eq!(sent.len(), encoded.len(), "one RTP timestamp per frame");
        let keyframes = encoded.iter().filter(|k| **k).count();
        assert!(keyframes >= 4, "{keyframes} keyframes in 60 frames");
        assert!(
            sent.iter().any(|(_, f)| f.len() > 1 && f[0]),
            "no keyframe spans several packets: the test would not see the continuation"
        );
        for (i, ((_, flags), key)) in sent.iter().zip(&encoded).enumerate() {
            assert!(
                flags.iter().all(|f| f == key),
                "frame {i} (keyframe: {key}): packets flagged {flags:?}"
            );
        }
    }

    #[test]
    fn h264_trusts_the_delta_unit_flag() {
        let mut m = KeyframeMarker::for_codec("H264");
        assert!(m.is_keyframe(&[], false));
        assert!(!m.is_keyframe(&[], true));
    }
}
