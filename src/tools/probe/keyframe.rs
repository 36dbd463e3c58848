//! Which RTP packets start a keyframe, for H.264 (RFC 6184) and VP8 (RFC 7741): what the
//! probe waits for before a viewer could show a picture, and asks for when it is missing.

/// Whether an H.264 RTP payload (RFC 6184) starts a keyframe: a single IDR NAL unit (type 5),
/// a STAP-A (24) aggregating an IDR or an SPS (7, which precedes an IDR), or the first FU-A (28)
/// fragment of an IDR.
pub fn h264_starts_keyframe(payload: &[u8]) -> bool {
    h264_keyframe_part(payload) != KeyframePart::None
}

/// How an RTP packet relates to a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyframePart {
    /// Not the start of a keyframe.
    None,
    /// Parameter sets (SPS) ahead of an IDR: the keyframe starts here, but the picture itself
    /// has not arrived yet.
    ParameterSets,
    /// The start of the key picture itself (H.264 IDR, VP8 key frame).
    Picture,
}

pub(super) fn h264_keyframe_part(payload: &[u8]) -> KeyframePart {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let Some(&indicator) = payload.first() else {
        return KeyframePart::None;
    };
    match indicator & 0x1f {
        IDR => KeyframePart::Picture,
        STAP_A => {
            // [size u16][NAL]... after the one-byte STAP-A header.
            let mut part = KeyframePart::None;
            let mut rest = &payload[1..];
            while rest.len() >= 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                rest = &rest[2..];
                if size == 0 || size > rest.len() {
                    break;
                }
                match rest[0] & 0x1f {
                    IDR => return KeyframePart::Picture,
                    SPS => part = KeyframePart::ParameterSets,
                    _ => {}
                }
                rest = &rest[size..];
            }
            part
        }
        FU_A if payload
            .get(1)
            .is_some_and(|&header| header & 0x80 != 0 && header & 0x1f == IDR) =>
        {
            KeyframePart::Picture
        }
        _ => KeyframePart::None,
    }
}

/// Whether a VP8 RTP payload (RFC 7741) starts a key frame: the first packet of partition 0
/// (S = 1, PID = 0) whose VP8 payload header has P = 0.
pub fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    vp8_payload(payload)
        .and_then(|frame| frame.first())
        .is_some_and(|&header| header & 0x01 == 0)
}

/// The VP8 frame's own bytes in the first packet of its partition 0 (S = 1, PID = 0), after
/// the RTP payload descriptor; `None` in every other packet.
pub(super) fn vp8_payload(payload: &[u8]) -> Option<&[u8]> {
    let &first = payload.first()?;
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return None;
    }
    let mut at = 1;
    if extended {
        let &x = payload.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 bits, or 15 when its M bit is set.
            let &pid = payload.get(at)?;
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(at..).filter(|frame| !frame.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_single_nal_idr_starts_a_keyframe() {
        assert!(h264_starts_keyframe(&[0x65, 0x88, 0x84]));
        // Non-IDR slice, SPS alone, SEI: not a keyframe start.
        assert!(!h264_starts_keyframe(&[0x41, 0x9a]));
        assert!(!h264_starts_keyframe(&[0x67, 0x42]));
        assert!(!h264_starts_keyframe(&[0x06, 0x05]));
        assert!(!h264_starts_keyframe(&[]));
    }

    #[test]
    fn h264_stap_a_with_sps_or_idr_starts_a_keyframe() {
        // STAP-A: SPS (2 bytes) + PPS (2 bytes).
        let sps_pps = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        assert!(h264_starts_keyframe(&sps_pps));
        // STAP-A: SEI + IDR.
        let sei_idr = [0x78, 0, 2, 0x06, 0x05, 0, 3, 0x65, 0x88, 0x84];
        assert!(h264_starts_keyframe(&sei_idr));
        // STAP-A of two non-IDR slices.
        let slices = [0x78, 0, 2, 0x41, 0x9a, 0, 2, 0x41, 0x9b];
        assert!(!h264_starts_keyframe(&slices));
        // A truncated aggregate is not read past its end.
        assert!(!h264_starts_keyframe(&[0x78, 0, 9, 0x41]));
    }

    #[test]
    fn h264_fu_a_start_of_idr_starts_a_keyframe() {
        // FU indicator (NRI 3, type 28), FU header S=1 type 5.
        assert!(h264_starts_keyframe(&[0x7c, 0x85, 0x88]));
        // Middle and end fragments of the same IDR.
        assert!(!h264_starts_keyframe(&[0x7c, 0x05, 0x88]));
        assert!(!h264_starts_keyframe(&[0x7c, 0x45, 0x88]));
        // Start of a non-IDR slice.
        assert!(!h264_starts_keyframe(&[0x5c, 0x81, 0x9a]));
        assert!(!h264_starts_keyframe(&[0x7c]));
    }

    #[test]
    fn vp8_keyframe_bit_is_read_after_the_descriptor() {
        // S=1 PID=0, no extension, payload header P=0: key frame.
        assert!(vp8_starts_keyframe(&[0x10, 0x50, 0x2a]));
        // P=1: inter frame.
        assert!(!vp8_starts_keyframe(&[0x10, 0x51, 0x2a]));
        // Not the start of partition 0.
        assert!(!vp8_starts_keyframe(&[0x00, 0x50]));
        assert!(!vp8_starts_keyframe(&[0x11, 0x50]));
        // X with I (15-bit picture ID), L and T/K: four extra bytes before the header.
        assert!(vp8_starts_keyframe(&[
            0x90, 0xf0, 0x81, 0x23, 0x07, 0x40, 0x50
        ]));
        assert!(!vp8_starts_keyframe(&[
            0x90, 0xf0, 0x81, 0x23, 0x07, 0x40, 0x51
        ]));
        // X with a 7-bit picture ID only.
        assert!(vp8_starts_keyframe(&[0x90, 0x80, 0x12, 0x50]));
        // The picture ID byte's low bit must not be mistaken for P.
        assert!(!vp8_starts_keyframe(&[0x90, 0x80, 0x12, 0x51]));
        // Truncated.
        assert!(!vp8_starts_keyframe(&[0x90, 0x80]));
        assert!(!vp8_starts_keyframe(&[0x10]));
    }
}
