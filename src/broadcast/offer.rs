//! Turning a viewer's SDP offer into a ready `Rtc` and an answer, or a one-line refusal.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Rtc, RtcConfig};

use super::BroadcastError;
use super::stream::{Rendition, RenditionId};

/// Largest offer we read: real browser offers are a few kB.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

/// Identifies a viewer's session; appears in the WHEP resource URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewerId(pub u64);

impl fmt::Display for ViewerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for ViewerId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(Self)
    }
}

/// Where one of our streams goes in a viewer's session.
#[derive(Debug, Clone, Copy)]
pub struct Track {
    /// Its m-line.
    pub mid: Mid,
    /// The payload type the viewer negotiated for our codec.
    pub pt: Pt,
    /// Our sending SSRC in this session.
    pub ssrc: Ssrc,
}

/// An accepted offer, ready to hand to the engine.
pub struct Accepted {
    /// Session id.
    pub id: ViewerId,
    /// The answer SDP.
    pub answer: String,
    /// The session.
    pub rtc: Rtc,
    /// Our ICE ufrag in this session: STUN requests name it.
    pub ufrag: String,
    /// Video track.
    pub video: Track,
    /// The rendition the viewer receives: the first of ours its offer can decode.
    pub rendition: RenditionId,
    /// That rendition's codec (`H264`, `VP8`).
    pub codec: String,
    /// The viewer has no RTX: a packet it reports lost is sent again as it was, from our
    /// own history of what it was sent.
    pub plain_resend: bool,
    /// Audio track, when the viewer asked for audio.
    pub audio: Option<Track>,
}

/// Installs str0m's crypto provider once per process.
pub fn init_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// How often str0m reports a viewer's sending statistics (NACKs, packets, loss).
const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Accepts `offer` for a party sending Opus and `renditions` of its video, in order of
/// preference (the main one first); the viewer gets the first one its offer can decode. The
/// session starts its clock at `now`.
pub fn accept(
    offer: &str,
    advertise: SocketAddr,
    renditions: &[Rendition],
    now: Instant,
) -> Result<Accepted, BroadcastError> {
    if offer.len() > MAX_OFFER_BYTES {
        return Err(BroadcastError::BadOffer(format!(
            "offer larger than {} kB",
            MAX_OFFER_BYTES / 1024
        )));
    }
    if !offer.trim_start().starts_with("v=0") {
        return Err(BroadcastError::BadOffer(
            "it does not start with v=0".into(),
        ));
    }
    let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| unreadable(offer, &e.to_string()))?;
    if !offer.lines().any(|l| l.starts_with("m=video")) {
        return Err(BroadcastError::Unsupported(
            "the offer has no video m-line: a party viewer must receive video".into(),
        ));
    }
    // Without RTX str0m ignores NACKs: we resend from our own history, and need to see them.
    let plain_resend = !offers_video_rtx(offer);
    let mut config = RtcConfig::new()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .set_stats_interval(Some(STATS_INTERVAL))
        .enable_bwe(bwe_start(renditions))
        .enable_raw_packets(plain_resend)
        .clear_codecs()
        .enable_opus(true, false);
    let mut codecs: Vec<&str> = Vec::new();
    // A ladder has several renditions of one codec: str0m must hear of each codec once (it
    // panics on a payload type added twice).
    for r in renditions {
        if !codecs.contains(&r.codec.as_str()) {
            codecs.push(&r.codec);
        }
    }
    for codec in codecs {
        match codec {
            "VP8" => config = config.enable_vp8(true),
            _ => {
                // Our x264 stream is constrained baseline: offer only what can decode it.
                let codecs = config.codec_config();
                codecs.add_h264(108.into(), Some(109.into()), true, 0x42e01f);
                codecs.add_h264(127.into(), Some(121.into()), true, 0x42001f);
            }
        }
    }
    let mut rtc = config.build(now);
    let candidate = Candidate::host(advertise, "udp")
        .map_err(|e| BroadcastError::Unsupported(format!("bad advertised address: {e}")))?;
    rtc.add_local_candidate(candidate);
    let answer = rtc
        .sdp_api()
        .accept_offer(parsed)
        .map_err(|e| BroadcastError::BadOffer(for_users(&e.to_string())))?;

    let answer = answer.to_sdp_string();
    let media = media_lines(&answer);
    let receives_video = media.iter().any(|m| {
        m.kind == MediaKind::Video
            && rtc
                .media(m.mid)
                .is_some_and(|media| media.direction().is_sending())
    });
    if !receives_video {
        return Err(BroadcastError::Unsupported(
            "the offer does not receive video (its video is send-only or inactive)".into(),
        ));
    }
    let (video, rendition) = renditions
        .iter()
        .find_map(|r| {
            media
                .iter()
                .filter(|m| m.kind == MediaKind::Video)
                .find_map(|m| track(&mut rtc, m, &r.codec))
                .map(|track| (track, r))
        })
        .ok_or_else(|| {
            let sent: Vec<&str> = renditions
                .iter()
                .map(|r| match r.codec.as_str() {
                    "H264" => "H264 (constrained baseline, packetization-mode=1)",
                    other => other,
                })
                .collect();
            BroadcastError::Unsupported(format!(
                "no video codec in common: this party sends {}",
                sent.join(" or ")
            ))
        })?;
    let audio = media
        .iter()
        .filter(|m| m.kind == MediaKind::Audio)
        .find_map(|m| track(&mut rtc, m, "OPUS"));
    let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
    Ok(Accepted {
        id: next_id(),
        answer,
        rtc,
        ufrag,
        video,
        rendition: rendition.id,
        codec: rendition.codec.clone(),
        plain_resend,
        audio,
    })
}

/// The first estimate of a viewer's link, when there is a ladder to choose from (else no
/// estimation at all: it would cost str0m's pacer and buy nothing).
///
/// It starts above the top rendition's bitrate: str0m paces at twice the first estimate, then
/// at 1.1 times the estimate, and a start below the stream would queue the first keyframe
/// behind the pacer. TWCC feedback corrects it within a second either way.
fn bwe_start(renditions: &[Rendition]) -> Option<Bitrate> {
    let has_ladder = renditions.iter().enumerate().any(|(i, a)| {
        renditions[..i]
            .iter()
            .any(|b| b.codec == a.codec && b.height != a.height)
    });
    let top = renditions.iter().map(|r| r.bitrate_kbps).max()?;
    has_ladder.then(|| Bitrate::kbps(u64::from(top) * 2))
}

/// Whether a video m-line of `sdp` offers RTX.
fn offers_video_rtx(sdp: &str) -> bool {
    let mut video = false;
    sdp.lines().any(|line| {
        if line.starts_with("m=") {
            video = line.starts_with("m=video");
        }
        video && line.starts_with("a=rtpmap:") && line.contains(" rtx/")
    })
}

/// One m-line of our answer.
struct MLine {
    mid: Mid,
    kind: MediaKind,
    /// Payload types we answered with, in preference order.
    pts: Vec<Pt>,
}

/// The m-lines of an SDP, in order.
fn media_lines(sdp: &str) -> Vec<MLine> {
    let mut current: Option<(MediaKind, Vec<Pt>)> = None;
    let mut out = Vec::new();
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split(' ');
            let kind = match fields.next() {
                Some("video") => Some(MediaKind::Video),
                Some("audio") => Some(MediaKind::Audio),
                _ => None,
            };
            let pts = fields
                .skip(2)
                .filter_map(|f| f.parse::<u8>().ok())
                .map(Pt::from)
                .collect();
            current = kind.map(|k| (k, pts));
        } else if let (Some(mid), Some((kind, pts))) = (line.strip_prefix("a=mid:"), &current) {
            out.push(MLine {
                mid: Mid::from(mid.trim()),
                kind: *kind,
                pts: pts.clone(),
            });
        }
    }
    out
}

/// The payload type we answered for `codec` on `line`, and our SSRC there.
fn track(rtc: &mut Rtc, line: &MLine, codec: &str) -> Option<Track> {
    let wanted = match codec {
        "H264" => Codec::H264,
        "VP8" => Codec::Vp8,
        _ => Codec::Opus,
    };
    if !rtc.media(line.mid)?.direction().is_sending() {
        return None;
    }
    let pt = line.pts.iter().copied().find(|pt| {
        rtc.codec_config()
            .find(|p| p.pt() == *pt)
            .is_some_and(|p| p.spec().codec == wanted)
    })?;
    let mut api = rtc.direct_api();
    let ssrc = match api.stream_tx_by_mid(line.mid, None) {
        Some(stream) => stream.ssrc(),
        None => {
            let ssrc = api.new_ssrc();
            api.declare_stream_tx(ssrc, None, line.mid, None);
            ssrc
        }
    };
    // With bandwidth estimation on, str0m paces video at 1.1 times its estimate. Our video's
    // rate is the encoder's, not the estimate's: pacing it would queue what the link cannot
    // take behind the estimate (seen: 720p held up to str0m's 2 s queue limit, then drained
    // in a burst after the step down, which the bottleneck dropped, which lowered the
    // estimate further). We answer the estimate by switching renditions instead; a GOP
    // replay is paced by us (`viewer.rs`).
    if let Some(stream) = api.stream_tx(&ssrc) {
        stream.set_unpaced(true);
    }
    Some(Track {
        mid: line.mid,
        pt,
        ssrc,
    })
}

fn next_id() -> ViewerId {
    // Random, so one viewer cannot end another's session by guessing its URL.
    ViewerId(crate::util::id::random_u64())
}

/// Why str0m's parser refused `offer`, for the viewer: where it could not read on (the parser
/// backtracks to the start of the part it failed: an m= line for a bad line in its section).
/// str0m's
/// own text is its parser's (combine's) error: it names the spot as a memory address
/// (`PointerOffset(0x7f…)`), which tells a user nothing and an attacker where our heap is.
/// That address points into `offer` itself, so it becomes a line number here.
pub(super) fn unreadable(offer: &str, error: &str) -> BroadcastError {
    // str0m's `SdpError` is not public: its variants are told apart by their text.
    if !error.starts_with("SDP parse:") {
        return BroadcastError::BadOffer(for_users(error));
    }
    let line = pointer_in(error)
        .and_then(|at| at.checked_sub(offer.as_ptr() as usize))
        .filter(|&offset| offset <= offer.len())
        .map(|offset| {
            let before = &offer.as_bytes()[..offset];
            let number = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            (number, &offer.as_bytes()[start..])
        });
    BroadcastError::BadOffer(match line {
        Some((number, rest)) => match rest {
            // Name the line's type when it has one (`a=`), never echo the viewer's text.
            [kind, b'=', ..] if kind.is_ascii_lowercase() => {
                format!(
                    "something at or after line {number} (an {}= line) cannot be read",
                    *kind as char
                )
            }
            _ => format!("something at or after line {number} cannot be read"),
        },
        None => "it cannot be read as SDP".into(),
    })
}

/// The address in combine's `PointerOffset(0x…)`, if the text has one.
fn pointer_in(text: &str) -> Option<usize> {
    let hex = text.split("PointerOffset(0x").nth(1)?;
    let end = hex.find(|c: char| !c.is_ascii_hexdigit())?;
    usize::from_str_radix(&hex[..end], 16).ok()
}

/// One line of a str0m error, fit for a viewer: its own words when they are plain
/// (`missing a=fingerprint`), else a general reason. Never an address, a `Debug` dump or more
/// than a short line.
fn for_users(text: &str) -> String {
    const GENERAL: &str = "the offer cannot be used";
    let line = text.lines().next().unwrap_or_default();
    let line = ["remote sdp: ", "SDP inconsistent: ", "SDP parse: "]
        .iter()
        .fold(line, |l, prefix| l.strip_prefix(prefix).unwrap_or(l))
        .trim();
    let dump = ["0x", "{", "}", "PointerOffset", "Some(", "\"", "::"]
        .iter()
        .any(|mark| line.contains(mark));
    if line.is_empty() || dump || line.len() > 120 {
        GENERAL.into()
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(name: &str) -> String {
        std::fs::read_to_string(format!("../shared/data/sdp/{name}")).unwrap()
    }

    /// The renditions of an H.264 party with an on-demand VP8 one.
    fn h264_and_vp8() -> Vec<Rendition> {
        vec![
            Rendition {
                id: RenditionId::MAIN,
                codec: "H264".into(),
                on_demand: false,
                name: "720p".into(),
                height: 720,
                bitrate_kbps: 2500,
            },
            Rendition {
                id: RenditionId(1),
                codec: "VP8".into(),
                on_demand: true,
                name: "720p".into(),
                height: 720,
                bitrate_kbps: 2500,
            },
        ]
    }

    /// `sdp` without the payload types of `codec` (as a Firefox without OpenH264 offers).
    fn without(sdp: &str, codec: &str) -> String {
        let pts: Vec<String> = sdp
            .lines()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter(|l| l.contains(&format!(" {codec}/")))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect();
        let named = |l: &str| {
            pts.iter().any(|pt| {
                ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                    .iter()
                    .any(|p| l.starts_with(&format!("{p}{pt} ")))
            })
        };
        sdp.lines()
            .filter(|l| !named(l))
            .map(|l| match l.strip_prefix("m=video ") {
                Some(rest) => {
                    let kept: Vec<&str> = rest
                        .split(' ')
                        .enumerate()
                        .filter(|(i, f)| *i < 2 || !pts.iter().any(|pt| pt == f))
                        .map(|(_, f)| f)
                        .collect();
                    format!("m=video {}", kept.join(" "))
                }
                None => l.to_string(),
            })
            .map(|l| l + "\r\n")
            .collect()
    }

    #[test]
    fn chrome_offer_gets_h264_and_opus() {
        init_crypto();
        let mut accepted = accept(
            &offer("chrome120_offer_sendrecv_audio_video.sdp"),
            "127.0.0.1:5000".parse().unwrap(),
            &h264_and_vp8(),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(*accepted.video.pt, 106);
        assert_eq!(accepted.rendition, RenditionId::MAIN);
        assert_eq!(accepted.codec, "H264");
        assert_eq!(*accepted.audio.unwrap().pt, 111);
        assert!(accepted.answer.contains("a=candidate:"));
        assert!(accepted.answer.contains("127.0.0.1 5000 typ host"));
        // Lost packets are resent on an RTX stream the browser was told of.
        let rtx = accepted
            .rtc
            .direct_api()
            .stream_tx(&accepted.video.ssrc)
            .unwrap()
            .rtx()
            .expect("an RTX stream for video");
        assert!(accepted.answer.contains(&format!(
            "a=ssrc-group:FID {} {}",
            *accepted.video.ssrc, *rtx
        )));
    }

    #[test]
    fn an_offer_without_h264_gets_the_vp8_rendition_with_rtx() {
        init_crypto();
        let sdp = without(&offer("firefox121_offer_sendrecv_audio_video.sdp"), "H264");
        assert!(!sdp.contains("H264"), "{sdp}");
        let mut accepted = accept(
            &sdp,
            "127.0.0.1:5000".parse().unwrap(),
            &h264_and_vp8(),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(accepted.rendition, RenditionId(1));
        assert_eq!(accepted.codec, "VP8");
        assert_eq!(*accepted.video.pt, 120, "Firefox's VP8 payload type");
        assert!(accepted.answer.contains("a=rtpmap:120 VP8/90000"));
        assert!(accepted.answer.contains("a=fmtp:124 apt=120"), "RTX");
        let mut api = accepted.rtc.direct_api();
        let stream = api.stream_tx_by_mid(accepted.video.mid, None).unwrap();
        assert!(stream.rtx().is_some());
        // The same offer with H.264 gets the main rendition.
        let both = accept(
            &offer("firefox121_offer_sendrecv_audio_video.sdp"),
            "127.0.0.1:5000".parse().unwrap(),
            &h264_and_vp8(),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(both.rendition, RenditionId::MAIN);
    }

    #[test]
    fn an_offer_with_no_codec_of_ours_is_refused_naming_what_we_send() {
        init_crypto();
        let sdp = without(
            &without(&offer("firefox121_offer_sendrecv_audio_video.sdp"), "H264"),
            "VP8",
        );
        let err = accept(
            &sdp,
            "127.0.0.1:5000".parse().unwrap(),
            &h264_and_vp8(),
            Instant::now(),
        )
        .err()
        .expect("refused");
        assert_eq!(
            err.to_string(),
            "no video codec in common: this party sends \
             H264 (constrained baseline, packetization-mode=1) or VP8"
        );
    }

    /// What `accept` says of `sdp`, which it must refuse.
    fn refusal(sdp: &str) -> String {
        accept(
            sdp,
            "127.0.0.1:5000".parse().unwrap(),
            &h264_and_vp8(),
            Instant::now(),
        )
        .err()
        .unwrap_or_else(|| panic!("refused: {sdp}"))
        .to_string()
    }

    #[test]
    fn an_unreadable_line_is_named_by_its_number_never_by_an_address() {
        init_crypto();
        let good = offer("chrome120_offer_sendrecv_audio_video.sdp");
        let lines: Vec<&str> = good.lines().collect();
        // A line that is no SDP at all, at line 4.
        let mut broken = lines.clone();
        broken.insert(3, "this is not sdp {0x41}");
        let text = refusal(&(broken.join("\r\n") + "\r\n"));
        assert_eq!(
            text,
            "malformed SDP offer: something at or after line 4 cannot be read"
        );

        // An attribute line without its `=`, in the audio section: the section is named.
        let m = lines.iter().position(|l| l.starts_with("m=audio")).unwrap();
        let mut broken = lines.clone();
        broken.insert(m + 1, "a");
        let text = refusal(&(broken.join("\r\n") + "\r\n"));
        assert_eq!(
            text,
            format!(
                "malformed SDP offer: something at or after line {} (an m= line) cannot be read",
                m + 1
            )
        );

        for sdp in [
            "v=0\r\n".to_owned(),
            "v=0\r\no=- 0x7f 2 IN IP4 {}\r\n".to_owned(),
            good[..400].to_owned(),
            good.replace("a=fingerprint", "a=fingerpint"),
            good.replace("a=rtpmap:96", "a=rtpmap:{0x96}"),
            good.replace("m=video 9 UDP/TLS/RTP/SAVPF", "m=video"),
            good.replace('\n', "\n\u{0}"),
        ] {
            let text = refusal(&sdp);
            for leak in ["0x", "PointerOffset", "{", "}", "Some("] {
                assert!(!text.contains(leak), "{leak:?} in {text:?}");
            }
            assert_eq!(text.lines().count(), 1, "{text:?}");
        }
    }
}
