//! The pipeline's RTP packets, parsed once and shared by every viewer.

use std::sync::Arc;
use std::time::Instant;

/// One packet of the pipeline, parsed: what every viewer's sender needs to re-send it.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Extended (never wrapping) sequence number.
    pub seq: u64,
    /// RTP timestamp, passed through unchanged.
    pub timestamp: u32,
    /// Marker bit: last packet of a video frame.
    pub marker: bool,
    /// Payload without the RTP header, shared by all viewers.
    pub payload: Arc<[u8]>,
    /// Part of a keyframe (or its parameter sets).
    pub keyframe: bool,
    /// When it left the pipeline: the wallclock for sender reports.
    pub at: Instant,
}

/// Turns 16-bit sequence numbers into a monotonic 64-bit count.
#[derive(Debug, Default)]
pub struct SeqUnwrapper {
    last: Option<u64>,
}

impl SeqUnwrapper {
    /// Extends `seq` relative to the previous one (handles wrap-around and small reordering).
    pub fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.last {
            None => u64::from(seq),
            Some(last) => {
                let delta = seq.wrapping_sub(last as u16) as i16;
                (last as i64 + i64::from(delta)).max(0) as u64
            }
        };
        if self.last.is_none_or(|l| ext > l) {
            self.last = Some(ext);
        }
        ext
    }
}

/// Parses an RTP packet that left the pipeline at `now`; `None` for anything malformed.
pub fn parse(
    data: &[u8],
    keyframe: bool,
    unwrap: &mut SeqUnwrapper,
    now: Instant,
) -> Option<Packet> {
    if data.len() < 12 || data[0] >> 6 != 2 {
        return None;
    }
    let padding = data[0] & 0x20 != 0;
    let extension = data[0] & 0x10 != 0;
    let csrc = usize::from(data[0] & 0x0f);
    let marker = data[1] & 0x80 != 0;
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let timestamp = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    let mut start = 12 + csrc * 4;
    if extension {
        let words = data.get(start + 2..start + 4)?;
        start += 4 + usize::from(u16::from_be_bytes([words[0], words[1]])) * 4;
    }
    let mut end = data.len();
    if padding {
        end = end.checked_sub(usize::from(*data.last()?))?;
    }
    let payload = data.get(start..end)?;
    Some(Packet {
        seq: unwrap.extend(seq),
        timestamp,
        marker,
        payload: Arc::from(payload),
        keyframe,
        at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_extend_across_wraps() {
        let mut u = SeqUnwrapper::default();
        assert_eq!(u.extend(65534), 65534);
        assert_eq!(u.extend(65535), 65535);
        assert_eq!(u.extend(0), 65536);
        assert_eq!(u.extend(65535), 65535, "a late packet keeps its place");
        assert_eq!(u.extend(1), 65537);
    }

    #[test]
    fn parses_header_and_payload() {
        let mut pkt = vec![0x80, 0x80 | 96, 0x12, 0x34, 0, 0, 0x10, 0, 1, 2, 3, 4];
        pkt.extend_from_slice(&[0x65, 0xaa, 0xbb]);
        let p = parse(&pkt, true, &mut SeqUnwrapper::default(), Instant::now()).unwrap();
        assert!(p.marker);
        assert_eq!(p.seq, 0x1234);
        assert_eq!(p.timestamp, 0x1000);
        assert_eq!(&*p.payload, &[0x65, 0xaa, 0xbb]);
        assert!(
            parse(
                &pkt[..8],
                false,
                &mut SeqUnwrapper::default(),
                Instant::now()
            )
            .is_none()
        );
        let mut bad = pkt.clone();
        bad[0] = 0x40;
        assert!(parse(&bad, false, &mut SeqUnwrapper::default(), Instant::now()).is_none());
    }
}
