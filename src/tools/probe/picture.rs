//! The size of the picture a keyframe announces, read from the bitstream without decoding it:
//! the H.264 sequence parameter set (ITU-T H.264 § 7.3.2.1.1, cropping included) and the VP8
//! key frame header (RFC 6386 § 9.1). The probe reads it to see which rendition it receives.

use super::keyframe::vp8_payload;

/// A picture's size in pixels, as displayed (H.264 cropping applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PictureSize {
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Display for PictureSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

const NAL_SEI: u8 = 6;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;

/// The size an H.264 RTP payload (RFC 6184) announces: an SPS sent as a single NAL unit or
/// inside a STAP-A. `None` for every other packet, and for an SPS that does not parse.
pub fn h264_payload_size(payload: &[u8]) -> Option<PictureSize> {
    let nal_type = payload.first()? & 0x1f;
    match nal_type {
        NAL_SPS => h264_sps_size(payload),
        STAP_A => stap_a_units(payload)
            .find(|unit| unit.first().is_some_and(|b| b & 0x1f == NAL_SPS))
            .and_then(h264_sps_size),
        _ => None,
    }
}

/// Whether an H.264 RTP payload carries no picture: only parameter sets, SEI or access unit
/// delimiters, alone or aggregated. Such a packet belongs to the keyframe that follows it.
pub fn h264_carries_no_picture(payload: &[u8]) -> bool {
    let no_picture = |t: u8| matches!(t, NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD);
    let Some(&first) = payload.first() else {
        return true;
    };
    match first & 0x1f {
        STAP_A => {
            stap_a_units(payload).all(|unit| unit.first().is_some_and(|b| no_picture(b & 0x1f)))
        }
        t => no_picture(t),
    }
}

/// The NAL units of a STAP-A payload (`[size u16][NAL]...` after its one-byte header); stops at
/// the first unit that does not fit.
fn stap_a_units(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = payload.get(1..).unwrap_or_default();
    std::iter::from_fn(move || {
        let size = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
        let unit = rest.get(2..2 + size).filter(|u| !u.is_empty())?;
        rest = &rest[2 + size..];
        Some(unit)
    })
}

/// The displayed size an H.264 SPS NAL unit (its one-byte header included) describes.
pub fn h264_sps_size(nal: &[u8]) -> Option<PictureSize> {
    if nal.first()? & 0x1f != NAL_SPS {
        return None;
    }
    let rbsp = unescape(&nal[1..]);
    let mut r = Bits::new(&rbsp);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags, level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    // The profiles whose SPS carries chroma format, bit depths and scaling matrices.
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.flag()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.flag()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_map_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.flag()?; // mb_adaptive_frame_field_flag
    }
    r.flag()?; // direct_8x8_inference_flag
    let frames = if frame_mbs_only { 1 } else { 2 };
    let mut width = width_mbs.checked_mul(16)?;
    let mut height = height_map_units.checked_mul(16 * frames)?;
    if r.flag()? {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        // Cropping counts in chroma samples (§ 7.4.2.1.1): two luma columns in 4:2:0.
        let (unit_x, unit_y) = if separate_colour_plane || chroma_format_idc == 0 {
            (1, frames)
        } else {
            let sub_width = if chroma_format_idc == 3 { 1 } else { 2 };
            let sub_height = if chroma_format_idc == 1 { 2 } else { 1 };
            (sub_width, sub_height * frames)
        };
        let crop_x = left.checked_add(right)?.checked_mul(unit_x)?;
        let crop_y = top.checked_add(bottom)?.checked_mul(unit_y)?;
        width = width.checked_sub(crop_x).filter(|&w| w > 0)?;
        height = height.checked_sub(crop_y).filter(|&h| h > 0)?;
    }
    Some(PictureSize { width, height })
}

/// Reads past one scaling list (§ 7.3.2.1.1.1): only its length matters here.
fn skip_scaling_list(r: &mut Bits<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The RBSP of a NAL unit: its bytes with the emulation prevention bytes (the 3 of every
/// `00 00 03`) taken out.
fn unescape(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut zeros = 0;
    for &byte in escaped {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// A big-endian bit reader with the exp-Golomb codes of H.264 (§ 9.1).
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.at / 8)?;
        let bit = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Some(u32::from(bit))
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |value, _| Some(value << 1 | self.bit()?))
    }

    /// ue(v). Longer than 31 bits does not occur in a valid SPS.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        ((1u64 << zeros) - 1 + u64::from(rest)).try_into().ok()
    }

    /// se(v).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// The size a VP8 RTP payload (RFC 7741 descriptor, then the VP8 frame) announces: only the
/// first packet of a key frame carries it (RFC 6386 § 9.1: frame tag, start code 9d 01 2a,
/// then 14-bit width and height, each with a 2-bit upscaling hint that does not change the
/// coded size).
pub fn vp8_payload_size(payload: &[u8]) -> Option<PictureSize> {
    vp8_frame_size(vp8_payload(payload)?)
}

/// The size in the header of a VP8 key frame (the frame's own bytes, no RTP descriptor).
pub fn vp8_frame_size(frame: &[u8]) -> Option<PictureSize> {
    let header = frame.get(..10)?;
    if header[0] & 0x01 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([header[6], header[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([header[8], header[9]]) & 0x3fff);
    (width > 0 && height > 0).then_some(PictureSize { width, height })
}

#[cfg(test)]
mod tests {
    use gstreamer as gst;
    use gstreamer_app as gst_app;

    use gst::prelude::*;

    use super::*;

    /// Encodes one frame of `width`x`height` with `encoder` (a gst-launch fragment ending in
    /// caps) and returns the encoded buffer's bytes.
    fn encode_one(width: u32, height: u32, encoder: &str) -> Vec<u8> {
        gst::init().unwrap();
        let description = format!(
            "videotestsrc num-buffers=1 ! video/x-raw,format=I420,width={width},height={height},\
             framerate=30/1 ! {encoder} ! appsink name=sink sync=false"
        );
        let pipeline = gst::parse::launch(&description)
            .unwrap_or_else(|e| panic!("{description}: {e}"))
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(30))
            .unwrap_or_else(|| panic!("{description} produced no frame"));
        pipeline.set_state(gst::State::Null).unwrap();
        sample.buffer().unwrap().map_readable().unwrap().to_vec()
    }

    /// The NAL units of an Annex B byte stream.
    fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
        let mut starts = Vec::new();
        let mut i = 0;
        while i + 3 <= stream.len() {
            if stream[i..i + 3] == [0, 0, 1] {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        starts
            .iter()
            .enumerate()
            .map(|(n, &start)| {
                let end = starts.get(n + 1).map_or(stream.len(), |&next| next - 3);
                // A four-byte start code leaves its first zero at the end of the unit before.
                let mut unit = &stream[start..end];
                while unit.last() == Some(&0) {
                    unit = &unit[..unit.len() - 1];
                }
                unit
            })
            .collect()
    }

    fn x264_sps(width: u32, height: u32, profile: &str) -> Vec<u8> {
        let stream = encode_one(
            width,
            height,
            &format!(
                "x264enc tune=zerolatency speed-preset=ultrafast ! \
                 video/x-h264,profile={profile},stream-format=byte-stream"
            ),
        );
        nal_units(&stream)
            .into_iter()
            .find(|unit| unit[0] & 0x1f == NAL_SPS)
            .unwrap_or_else(|| panic!("x264enc wrote no SPS for {width}x{height} {profile}"))
            .to_vec()
    }

    #[test]
    fn x264_sps_gives_the_encoded_size() {
        // 720 is 45 macroblocks; 360 and 1080 are not whole macroblocks, so their SPS crops the
        // bottom; 854 crops the right. The high profile adds chroma format and bit depths.
        for (width, height) in [(1280, 720), (640, 360), (854, 480), (1920, 1080)] {
            for profile in ["constrained-baseline", "high"] {
                let sps = x264_sps(width, height, profile);
                assert_eq!(
                    h264_sps_size(&sps),
                    Some(PictureSize { width, height }),
                    "{profile} SPS {sps:02x?}"
                );
                // As the payloader sends it: a single NAL unit, or in a STAP-A with the PPS.
                assert_eq!(h264_payload_size(&sps), Some(PictureSize { width, height }));
                let mut stap = vec![0x78];
                for unit in [&sps[..], &[0x68, 0xce, 0x38, 0x80]] {
                    stap.extend_from_slice(&(unit.len() as u16).to_be_bytes());
                    stap.extend_from_slice(unit);
                }
                assert_eq!(
                    h264_payload_size(&stap),
                    Some(PictureSize { width, height })
                );
                assert!(h264_carries_no_picture(&stap));
            }
        }
    }

    #[test]
    fn a_known_sps_and_escaped_bytes() {
        // Baseline 1280x720, written out by hand: id 0, frame_num 4 bits, POC type 2, one
        // reference, 80 by 45 macroblocks, frames only, no cropping, VUI follows.
        let sps = [
            0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35,
        ];
        assert_eq!(
            h264_sps_size(&sps),
            Some(PictureSize {
                width: 1280,
                height: 720
            })
        );
        // Three zero bytes never occur in an RBSP: the escaped 00 00 03 00 reads 00 00 00.
        assert_eq!(
            unescape(&[1, 0, 0, 3, 0, 2, 0, 0, 3]),
            [1, 0, 0, 0, 2, 0, 0]
        );
    }

    #[test]
    fn what_is_not_an_sps_has_no_size() {
        assert_eq!(h264_sps_size(&[]), None);
        assert_eq!(h264_sps_size(&[0x68, 0xce]), None);
        // Truncated SPS: the reader runs out of bits instead of panicking.
        let sps = x264_sps(640, 360, "high");
        for len in 1..sps.len() - 1 {
            let _ = h264_sps_size(&sps[..len]);
        }
        assert_eq!(h264_sps_size(&sps[..4]), None);
        // Slices and FU-A fragments announce nothing; a slice carries a picture.
        assert_eq!(h264_payload_size(&[0x65, 0x88]), None);
        assert_eq!(h264_payload_size(&[0x7c, 0x85, 0x88]), None);
        assert!(!h264_carries_no_picture(&[0x65, 0x88]));
        assert!(!h264_carries_no_picture(&[0x7c, 0x85, 0x88]));
        assert!(h264_carries_no_picture(&[0x67, 0x42]));
        assert!(h264_carries_no_picture(&[0x06, 0x05]));
    }

    #[test]
    fn vp8_key_frames_give_their_size() {
        for (width, height) in [(1280, 720), (640, 360)] {
            let frame = encode_one(width, height, "vp8enc deadline=1 ! video/x-vp8");
            assert_eq!(
                vp8_frame_size(&frame),
                Some(PictureSize { width, height }),
                "{:02x?}",
                &frame[..10]
            );
            // Behind the shortest descriptor (S=1, PID=0), and behind a 15-bit picture ID.
            let mut rtp = vec![0x10];
            rtp.extend_from_slice(&frame[..20]);
            assert_eq!(vp8_payload_size(&rtp), Some(PictureSize { width, height }));
            let mut rtp = vec![0x90, 0x80, 0x81, 0x23];
            rtp.extend_from_slice(&frame[..20]);
            assert_eq!(vp8_payload_size(&rtp), Some(PictureSize { width, height }));
            // Not the start of the frame: no header there.
            rtp[0] = 0x80;
            assert_eq!(vp8_payload_size(&rtp), None);
        }
        // An inter frame's tag (bit 0 set) has no size.
        assert_eq!(
            vp8_frame_size(&[0x01, 0, 0, 0x9d, 0x01, 0x2a, 0, 5, 0xd0, 2]),
            None
        );
    }
}
