//! What the probe reads from the server's SDP answer itself, independent of webrtc-rs: the
//! video codec, and only the loopback candidates.

use std::collections::HashMap;
use std::net::IpAddr;

use super::counters::VideoCodec;

/// What the probe reads from the answer itself, independent of webrtc-rs.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct AnswerInfo {
    /// MIME type of the first payload type of an accepted video section.
    pub(crate) video_codec: Option<String>,
    /// Every H.264/VP8 payload type of the video section.
    pub(crate) video_payload_types: HashMap<u8, VideoCodec>,
}

impl AnswerInfo {
    pub(crate) fn parse(sdp: &str) -> Self {
        let mut info = AnswerInfo::default();
        let mut in_video = false;
        let mut order: Vec<u8> = Vec::new();
        let mut names: HashMap<u8, String> = HashMap::new();
        for line in sdp.lines().map(str::trim) {
            if let Some(media) = line.strip_prefix("m=") {
                let mut fields = media.split_whitespace();
                let kind = fields.next();
                let port = fields.next();
                in_video = kind == Some("video") && port != Some("0") && order.is_empty();
                if in_video {
                    // m=video PORT PROTO FMT...
                    order = fields.skip(1).filter_map(|pt| pt.parse().ok()).collect();
                }
            } else if in_video && let Some(map) = line.strip_prefix("a=rtpmap:") {
                let mut fields = map.split_whitespace();
                let (Some(pt), Some(encoding)) = (fields.next(), fields.next()) else {
                    continue;
                };
                let (Ok(pt), Some(name)) = (pt.parse::<u8>(), encoding.split('/').next()) else {
                    continue;
                };
                match name.to_ascii_uppercase().as_str() {
                    "H264" => {
                        info.video_payload_types.insert(pt, VideoCodec::H264);
                    }
                    "VP8" => {
                        info.video_payload_types.insert(pt, VideoCodec::Vp8);
                    }
                    _ => {}
                }
                names.insert(pt, name.to_owned());
            }
        }
        info.video_codec = order
            .iter()
            .find_map(|pt| names.get(pt))
            .map(|name| format!("video/{name}"));
        info
    }
}

/// The answer with every candidate that is not UDP on a loopback IP removed.
pub(crate) struct FilteredSdp {
    pub(crate) sdp: String,
    pub(crate) kept_any: bool,
    pub(crate) dropped: usize,
}

/// Drops non-loopback candidates so ICE never sends a check off the machine, whatever the
/// server advertises.
pub(crate) fn loopback_candidates_only(sdp: &str) -> FilteredSdp {
    let mut out = String::with_capacity(sdp.len());
    let mut kept_any = false;
    let mut dropped = 0;
    for line in sdp.split_inclusive('\n') {
        if let Some(candidate) = line.trim().strip_prefix("a=candidate:") {
            // foundation component transport priority address port typ type ...
            let fields: Vec<&str> = candidate.split_whitespace().collect();
            let loopback_udp = fields.len() >= 6
                && fields[2].eq_ignore_ascii_case("udp")
                && fields[4]
                    .parse::<IpAddr>()
                    .is_ok_and(crate::tools::http::is_test_network);
            if !loopback_udp {
                dropped += 1;
                continue;
            }
            kept_any = true;
        }
        out.push_str(line);
    }
    FilteredSdp {
        sdp: out,
        kept_any,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_parsing_finds_the_video_codec_and_drops_remote_candidates() {
        let sdp = "v=0\r\n\
            o=- 1 1 IN IP4 0.0.0.0\r\n\
            s=-\r\n\
            t=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=rtpmap:111 opus/48000/2\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
            a=candidate:2 1 udp 2130706431 192.168.1.10 40000 typ host\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 102 96\r\n\
            a=rtpmap:102 H264/90000\r\n\
            a=rtpmap:96 VP8/90000\r\n\
            a=candidate:3 1 tcp 2130706431 127.0.0.1 40000 typ host\r\n\
            a=candidate:4 1 udp 2130706431 abc.local 40000 typ host\r\n";
        let info = AnswerInfo::parse(sdp);
        assert_eq!(info.video_codec.as_deref(), Some("video/H264"));
        assert_eq!(info.video_payload_types.get(&102), Some(&VideoCodec::H264));
        assert_eq!(info.video_payload_types.get(&96), Some(&VideoCodec::Vp8));
        let filtered = loopback_candidates_only(sdp);
        assert!(filtered.kept_any);
        assert_eq!(filtered.dropped, 3);
        assert!(filtered.sdp.contains("127.0.0.1 40000 typ host\r\nm=video"));
        assert!(!filtered.sdp.contains("192.168"));
        assert!(!filtered.sdp.contains(".local"));
        // A rejected video section means no codec.
        let rejected = AnswerInfo::parse("m=video 0 UDP/TLS/RTP/SAVPF 102\r\n");
        assert_eq!(rejected.video_codec, None);
    }
}
