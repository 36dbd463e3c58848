//! One publisher: its offer accepted (receive only), its str0m session, and what it sends
//! passed on as plain RTP to the pipeline's feeds.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{RtpPacket, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use super::{IngestError, PUBLISHER_TIMEOUT, PublisherState};
use crate::pipeline::source::Publication;

/// Offers are a few kB; a larger one is not a publisher's.
const MAX_OFFER_BYTES: usize = 32 * 1024;

/// Payload types on the loopback hop: the feeds' caps name these, whatever the publisher used.
const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;

/// Keyframes asked of the publisher after its first video packet: the feed's decoder starts
/// at one, and the first may arrive before the feed listens.
const KEYFRAME_ASKS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(1000),
    Duration::from_millis(3000),
];

/// A publisher session's id, in its WHIP resource URL (`/whip/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublisherId(u64);

impl fmt::Display for PublisherId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for PublisherId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(PublisherId)
    }
}

/// The video codecs a publisher may send, as the feed decodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoCodec {
    H264,
    Vp8,
}

impl VideoCodec {
    fn name(self) -> &'static str {
        match self {
            Self::H264 => "H264",
            Self::Vp8 => "VP8",
        }
    }

    fn depayloader(self) -> &'static str {
        match self {
            Self::H264 => "rtph264depay",
            Self::Vp8 => "rtpvp8depay",
        }
    }
}

/// An offer accepted, before the loop takes it on.
pub struct Accepted {
    /// Its id.
    pub id: PublisherId,
    /// Our answer.
    pub answer: String,
    rtc: Rtc,
    video: VideoCodec,
    audio: bool,
    mids: Vec<Mid>,
}

/// Answers a publisher's `offer`, receiving its video (VP8 if offered, else H.264 of any
/// profile without B-frames, as OBS sends) and its Opus audio.
pub fn accept(offer: &str, advertise: SocketAddr, now: Instant) -> Result<Accepted, IngestError> {
    if offer.len() > MAX_OFFER_BYTES {
        return Err(IngestError::BadOffer(format!(
            "offer larger than {} kB",
            MAX_OFFER_BYTES / 1024
        )));
    }
    if !offer.trim_start().starts_with("v=0") {
        return Err(IngestError::BadOffer("it does not start with v=0".into()));
    }
    let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| {
        IngestError::BadOffer(strip_prefix(crate::broadcast::offer_refusal(
            offer,
            &e.to_string(),
        )))
    })?;
    let video = video_codec(offer).ok_or_else(|| {
        IngestError::Unsupported(
            "the offer sends no video the party can show: send VP8 or H.264 (packetization-mode=1)"
                .into(),
        )
    })?;
    let config = RtcConfig::new()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false);
    let config = match video {
        VideoCodec::Vp8 => config.enable_vp8(true),
        VideoCodec::H264 => config.enable_h264(true),
    };
    let mut rtc = config.build(now);
    let candidate = Candidate::host(advertise, "udp")
        .map_err(|e| IngestError::Unsupported(format!("bad advertised address: {e}")))?;
    rtc.add_local_candidate(candidate);
    let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| {
        IngestError::BadOffer(strip_prefix(crate::broadcast::offer_refusal(
            offer,
            &e.to_string(),
        )))
    })?;
    let answer = answer.to_sdp_string();
    let receiving = |kind: MediaKind| {
        answer_media(&answer)
            .into_iter()
            .any(|(k, recv)| k == kind && recv)
    };
    if !receiving(MediaKind::Video) {
        return Err(IngestError::Unsupported(
            "the offer sends no video: a publisher's camera is what the party shows".into(),
        ));
    }
    let audio = receiving(MediaKind::Audio);
    let mids = answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()))
        .collect();
    Ok(Accepted {
        mids,
        id: PublisherId(crate::util::id::random_u64()),
        answer,
        rtc,
        video,
        audio,
    })
}

/// The broadcaster's refusal texts start with its own prefix; ours adds one.
fn strip_prefix(text: String) -> String {
    text.strip_prefix("malformed SDP offer: ")
        .map(str::to_owned)
        .unwrap_or(text)
}

/// VP8 when the offer sends it (every browser encodes it), else H.264 in packetization mode 1.
fn video_codec(offer: &str) -> Option<VideoCodec> {
    let rtpmap = |name: &str| {
        offer.lines().any(|l| {
            l.starts_with("a=rtpmap:") && l.to_ascii_uppercase().contains(&format!(" {name}/90000"))
        })
    };
    if rtpmap("VP8") {
        Some(VideoCodec::Vp8)
    } else if rtpmap("H264") {
        Some(VideoCodec::H264)
    } else {
        None
    }
}

/// Each audio and video m-line of our answer: its kind, and whether we receive on it.
fn answer_media(answer: &str) -> Vec<(MediaKind, bool)> {
    let mut out: Vec<(Option<MediaKind>, bool)> = Vec::new();
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            // Port 0: refused.
            let kind = match m.split(' ').take(2).collect::<Vec<_>>()[..] {
                [_, "0"] => None,
                ["video", _] => Some(MediaKind::Video),
                ["audio", _] => Some(MediaKind::Audio),
                _ => None,
            };
            out.push((kind, false));
        } else if matches!(line.trim(), "a=recvonly" | "a=sendrecv")
            && let Some(last) = out.last_mut()
        {
            last.1 = true;
        }
    }
    out.into_iter()
        .filter_map(|(kind, recv)| kind.map(|k| (k, recv)))
        .collect()
}

/// A publisher the loop holds: its session, where its media goes, and what it did.
pub struct Publisher {
    /// Its id.
    pub id: PublisherId,
    rtc: Rtc,
    video: VideoCodec,
    audio: bool,
    /// The feeds' loopback ports.
    video_to: SocketAddr,
    audio_to: SocketAddr,
    connected: bool,
    last_heard: Instant,
    first_video: Option<Instant>,
    /// The SSRC its video arrives on, where keyframe requests go.
    video_ssrc: Option<Ssrc>,
    /// Its m-lines, and the SSRCs seen so far (see [`Publisher::learn_ssrc`]).
    mids: Vec<Mid>,
    known_ssrcs: Vec<u32>,
    keyframes_asked: usize,
    packets: u64,
    /// When str0m wants [`Publisher::handle_timeout`].
    pub next_timeout: Instant,
}

impl Publisher {
    /// Takes on `accepted`, with feeds to listen on loopback ports free now.
    pub fn new(accepted: Accepted, now: Instant) -> std::io::Result<Self> {
        Ok(Self {
            id: accepted.id,
            rtc: accepted.rtc,
            video: accepted.video,
            audio: accepted.audio,
            video_to: free_loopback_port()?,
            audio_to: free_loopback_port()?,
            connected: false,
            last_heard: now,
            first_video: None,
            video_ssrc: None,
            mids: accepted.mids,
            known_ssrcs: Vec::new(),
            keyframes_asked: 0,
            packets: 0,
            next_timeout: now,
        })
    }

    /// The feeds the pipeline opens for this publisher: `udpsrc` on loopback, a jitter
    /// buffer (the hop is lossless, the publisher's link is not), depayloader and decoder.
    pub fn publication(&self) -> Publication {
        let listen = |to: SocketAddr, caps: &str| {
            format!(
                "udpsrc address={} port={} caps=\"{caps}\" ! rtpjitterbuffer latency=150",
                to.ip(),
                to.port()
            )
        };
        let video = format!(
            "{} ! {} ! decodebin",
            listen(
                self.video_to,
                &format!(
                    "application/x-rtp,media=video,clock-rate=90000,encoding-name={},payload={VIDEO_PT}",
                    self.video.name()
                )
            ),
            self.video.depayloader()
        );
        let audio = self.audio.then(|| {
            format!(
                "{} ! rtpopusdepay ! opusdec",
                listen(
                    self.audio_to,
                    &format!(
                        "application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload={AUDIO_PT}"
                    )
                )
            )
        });
        Publication { video, audio }
    }

    /// Whether `source` to `destination` carrying `data` is this publisher's.
    pub fn accepts(
        &self,
        now: Instant,
        source: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) -> bool {
        Receive::new(Protocol::Udp, source, local, data)
            .is_ok_and(|r| self.rtc.accepts(&Input::Receive(now, r)))
    }

    /// A datagram from the publisher.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, local, data) else {
            return;
        };
        if let Some((pt, ssrc)) = rtp_pt_and_ssrc(data) {
            self.learn_ssrc(pt, ssrc);
        }
        self.last_heard = now;
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!(publisher = %self.id, error = %e, "a publisher's datagram was refused");
        }
    }

    /// Time has passed: str0m's timers, and the keyframes still to ask for.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(at) = self.next_keyframe_ask()
            && now >= at
        {
            self.keyframes_asked += 1;
            self.ask_keyframe();
        }
        let _ = self.rtc.handle_input(Input::Timeout(now));
    }

    /// Whether it has been silent too long, or its session ended.
    pub fn is_gone(&self, now: Instant) -> bool {
        !self.rtc.is_alive() || now >= self.last_heard + PUBLISHER_TIMEOUT
    }

    /// Drains str0m: datagrams to `transmit`, media to `forward` (destination, plain RTP).
    pub fn poll(
        &mut self,
        now: Instant,
        transmit: &mut impl FnMut(Transmit),
        forward: &mut impl FnMut(SocketAddr, &[u8]),
    ) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = self.next_keyframe_ask().map_or(t, |k| k.min(t));
                    return;
                }
                Ok(Output::Transmit(t)) => transmit(t),
                Ok(Output::Event(Event::Connected)) => {
                    self.connected = true;
                    tracing::info!(publisher = %self.id, codec = self.video.name(), "a publisher is connected");
                }
                Ok(Output::Event(Event::RtpPacket(packet))) => {
                    self.pass_on(now, &packet, forward);
                }
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    tracing::warn!(publisher = %self.id, error = %e, "a publisher's session failed");
                    self.rtc.disconnect();
                    self.next_timeout = now + Duration::from_secs(1);
                    return;
                }
            }
        }
    }

    fn pass_on(
        &mut self,
        now: Instant,
        packet: &RtpPacket,
        forward: &mut impl FnMut(SocketAddr, &[u8]),
    ) {
        let codec = self
            .rtc
            .codec_config()
            .find(|p| p.pt() == packet.header.payload_type)
            .map(|p| p.spec().codec);
        let (to, pt) = match codec {
            Some(Codec::Opus) => (self.audio_to, AUDIO_PT),
            Some(Codec::H264 | Codec::Vp8) => {
                if self.first_video.is_none() {
                    self.first_video = Some(now);
                    self.video_ssrc = Some(packet.header.ssrc);
                    self.next_timeout = now;
                }
                (self.video_to, VIDEO_PT)
            }
            _ => return,
        };
        self.packets += 1;
        let mut datagram = Vec::with_capacity(12 + packet.payload.len());
        datagram.push(0x80);
        datagram.push(pt | if packet.header.marker { 0x80 } else { 0 });
        datagram.extend_from_slice(&packet.header.sequence_number.to_be_bytes());
        datagram.extend_from_slice(&packet.header.timestamp.to_be_bytes());
        datagram.extend_from_slice(&(*packet.header.ssrc).to_be_bytes());
        datagram.extend_from_slice(&packet.payload);
        forward(to, &datagram);
    }

    /// Tells str0m which m-line a new SSRC belongs to, by its payload type. A publisher that
    /// names its SSRCs in the SDP (`a=ssrc`) or sends the MID header extension needs none of
    /// this; GStreamer's `webrtcbin` and some encoders do neither, and str0m would drop every
    /// packet as of no known stream.
    fn learn_ssrc(&mut self, pt: u8, ssrc: u32) {
        if self.known_ssrcs.contains(&ssrc) {
            return;
        }
        self.known_ssrcs.push(ssrc);
        let pt = str0m::media::Pt::from(pt);
        let Some(mid) = self.mids.iter().copied().find(|mid| {
            self.rtc
                .media(*mid)
                .is_some_and(|m| m.remote_pts().contains(&pt))
        }) else {
            return;
        };
        let mut api = self.rtc.direct_api();
        if api.stream_rx(&ssrc.into()).is_none() && api.stream_rx_by_mid(mid, None).is_none() {
            api.expect_stream_rx(ssrc.into(), None, mid, None);
        }
    }

    fn next_keyframe_ask(&self) -> Option<Instant> {
        let first = self.first_video?;
        KEYFRAME_ASKS
            .get(self.keyframes_asked)
            .map(|after| first + *after)
    }

    fn ask_keyframe(&mut self) {
        let Some(ssrc) = self.video_ssrc else {
            return;
        };
        if let Some(stream) = self.rtc.direct_api().stream_rx(&ssrc) {
            stream.request_keyframe(KeyframeRequestKind::Pli);
        }
    }

    /// Ends the session as a peer should (DTLS close_notify) and drops it.
    pub fn close(mut self, transmit: &mut impl FnMut(Transmit)) {
        self.rtc.disconnect();
        for _ in 0..16 {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => transmit(t),
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => return,
            }
        }
    }

    /// What `/healthz` shows.
    pub fn state(&self) -> PublisherState {
        PublisherState {
            id: self.id.to_string(),
            video: self.video.name().into(),
            audio: self.audio,
            connected: self.connected,
            packets: self.packets,
        }
    }
}

/// The payload type and SSRC of an RTP packet (SRTP leaves the header in the clear); `None`
/// for STUN, DTLS and RTCP.
fn rtp_pt_and_ssrc(data: &[u8]) -> Option<(u8, u32)> {
    if data.len() < 12 || !(128..=191).contains(&data[0]) {
        return None;
    }
    let pt = data[1] & 0x7f;
    // RTCP packet types 192–223 share the byte (RFC 5761).
    if (64..=95).contains(&pt) {
        return None;
    }
    Some((pt, u32::from_be_bytes(data[8..12].try_into().ok()?)))
}

/// A loopback UDP port free now, for a feed's `udpsrc` to bind a moment later.
fn free_loopback_port() -> std::io::Result<SocketAddr> {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBS_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=ssrc:1111 cname:obs\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=rtcp-mux\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f\r\n\
a=ssrc:2222 cname:obs\r\n";

    fn advertise() -> SocketAddr {
        "127.0.0.1:8190".parse().unwrap()
    }

    #[test]
    fn an_obs_offer_without_candidates_is_answered_with_ours_receiving_h264_main_and_opus() {
        crate::broadcast::init_crypto();
        let accepted = accept(OBS_LIKE, advertise(), Instant::now()).unwrap();
        assert_eq!(accepted.video, VideoCodec::H264);
        assert!(accepted.audio);
        let answer = &accepted.answer;
        assert!(answer.contains("a=candidate:"), "{answer}");
        assert!(answer.contains("127.0.0.1 8190"), "{answer}");
        assert!(answer.contains("a=recvonly"), "{answer}");
        assert!(answer.contains("H264/90000"), "{answer}");
        assert!(answer.contains("profile-level-id=4d001f"), "{answer}");
    }

    #[test]
    fn its_feeds_decode_what_it_sends_from_loopback() {
        crate::broadcast::init_crypto();
        let accepted = accept(OBS_LIKE, advertise(), Instant::now()).unwrap();
        let publisher = Publisher::new(accepted, Instant::now()).unwrap();
        let p = publisher.publication();
        assert!(
            p.video.starts_with("udpsrc address=127.0.0.1 port="),
            "{}",
            p.video
        );
        assert!(
            p.video.contains("encoding-name=H264,payload=96"),
            "{}",
            p.video
        );
        assert!(p.video.contains("rtph264depay ! decodebin"), "{}", p.video);
        let audio = p.audio.unwrap();
        assert!(audio.contains("encoding-name=OPUS,payload=111"), "{audio}");
        assert!(audio.ends_with("rtpopusdepay ! opusdec"), "{audio}");
    }

    #[test]
    fn an_offer_without_video_or_with_an_unknown_codec_is_refused_in_words() {
        crate::broadcast::init_crypto();
        let audio_only = OBS_LIKE
            .split("m=video")
            .next()
            .unwrap()
            .replace(" 0 1", " 0");
        let e = accept(&audio_only, advertise(), Instant::now())
            .err()
            .unwrap();
        assert!(e.to_string().contains("no video"), "{e}");
        let av1 = OBS_LIKE.replace("H264/90000", "AV1/90000");
        let e = accept(&av1, advertise(), Instant::now()).err().unwrap();
        assert!(e.to_string().contains("VP8 or H.264"), "{e}");
        let e = accept("hello", advertise(), Instant::now()).err().unwrap();
        assert_eq!(
            e.to_string(),
            "malformed SDP offer: it does not start with v=0"
        );
    }
}
