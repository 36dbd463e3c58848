//! One light viewer, sans-IO: a str0m `Rtc` in RTP mode that offers to receive video and audio,
//! takes the answer, and counts what arrives. It never reads a clock or a socket; the driver
//! (`run.rs`) hands it datagrams and `now`, and sends what it returns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::tools::probe::{
    AnswerInfo, SequenceTracker, VideoCodec, h264_starts_keyframe, loopback_candidates_only,
    vp8_starts_keyframe,
};

/// A viewer whose offer is made but not answered yet.
pub(super) struct Offer {
    rtc: Rtc,
    pending: SdpPendingOffer,
    local: SocketAddr,
    /// The offer's SDP, for the WHEP POST.
    pub(super) sdp: String,
}

impl Offer {
    /// An `Rtc` receiving on `local` (its only candidate), offering recvonly video then audio,
    /// as a browser does.
    pub(super) fn new(local: SocketAddr, now: Instant) -> anyhow::Result<Self> {
        let mut rtc = Rtc::builder()
            // Packets are handed over as they arrive, without depacketizing or a jitter
            // buffer: counting needs nothing more, and it keeps a viewer cheap.
            .set_rtp_mode(true)
            .build(now);
        let candidate = Candidate::host(local, "udp")
            .with_context(|| format!("{local} cannot be an ICE candidate"))?;
        rtc.add_local_candidate(candidate);
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change
            .apply()
            .context("str0m made no offer for recvonly video and audio")?;
        Ok(Self {
            rtc,
            pending,
            local,
            sdp: offer.to_sdp_string(),
        })
    }

    /// Applies the server's answer. `posted` is when the offer was sent: the viewer's waits are
    /// counted from there, as a viewer's are.
    pub(super) fn accept(mut self, answer: &str, posted: Instant) -> anyhow::Result<Viewer> {
        let filtered = loopback_candidates_only(answer);
        if !filtered.kept_any {
            bail!(
                "the answer has no candidate on this machine's test networks ({} dropped)",
                filtered.dropped
            );
        }
        let info = AnswerInfo::parse(&filtered.sdp);
        let parsed = SdpAnswer::from_sdp_string(&filtered.sdp)
            .map_err(|e| anyhow::anyhow!("the answer is not SDP str0m reads: {e}"))?;
        self.rtc
            .sdp_api()
            .accept_answer(self.pending, parsed)
            .map_err(|e| anyhow::anyhow!("the answer does not fit the offer: {e}"))?;
        Ok(Viewer {
            rtc: self.rtc,
            local: self.local,
            video_pts: info.video_payload_types,
            posted,
            counts: Counts::default(),
            timeout: posted,
        })
    }
}

/// What a viewer has seen so far.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// When ICE and DTLS came up, from the POST.
    pub(super) connected_after: Option<Duration>,
    /// When the first packet of a keyframe arrived, from the POST.
    pub(super) first_keyframe_after: Option<Duration>,
    /// RTP packets and their payload bytes (SRTP authenticated and decrypted by str0m).
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) video_packets: u64,
    pub(super) audio_packets: u64,
    /// Packets starting a keyframe (parameter sets or IDR start).
    pub(super) keyframe_starts: u64,
    /// Per SSRC: gaps and repeats of the extended sequence numbers.
    pub(super) sequences: HashMap<u32, SequenceTracker>,
}

impl Counts {
    /// Packets never received, summed over SSRCs.
    pub(super) fn lost(&self) -> u64 {
        self.sequences.values().map(SequenceTracker::lost).sum()
    }

    pub(super) fn duplicates(&self) -> u64 {
        self.sequences
            .values()
            .map(SequenceTracker::duplicates)
            .sum()
    }
}

/// A viewer with a session: the driver feeds it, it counts.
pub(super) struct Viewer {
    rtc: Rtc,
    local: SocketAddr,
    video_pts: HashMap<u8, VideoCodec>,
    posted: Instant,
    counts: Counts,
    /// When str0m wants [`Viewer::tick`] next.
    timeout: Instant,
}

impl Viewer {
    pub(super) fn counts(&self) -> &Counts {
        &self.counts
    }

    /// When the driver must call [`Viewer::tick`] at the latest.
    pub(super) fn timeout(&self) -> Instant {
        self.timeout
    }

    /// Whether the session is still up (str0m gave up on it otherwise, e.g. ICE timed out).
    pub(super) fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    /// One datagram from `from`. A datagram str0m cannot classify (not STUN, DTLS or RTP) is
    /// ignored, as a browser ignores stray traffic.
    pub(super) fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        send: impl FnMut(SocketAddr, &[u8]),
    ) -> anyhow::Result<()> {
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.local, datagram) else {
            return Ok(());
        };
        self.rtc
            .handle_input(Input::Receive(now, receive))
            .map_err(|e| anyhow::anyhow!("the session failed on a datagram: {e}"))?;
        self.poll(now, send)
    }

    /// Time passed: str0m's timers (ICE checks, DTLS resends, RTCP) run.
    pub(super) fn tick(
        &mut self,
        now: Instant,
        send: impl FnMut(SocketAddr, &[u8]),
    ) -> anyhow::Result<()> {
        self.rtc
            .handle_input(Input::Timeout(now))
            .map_err(|e| anyhow::anyhow!("the session failed on a timer: {e}"))?;
        self.poll(now, send)
    }

    /// Hands every datagram str0m wants sent to `send` and counts the media it delivered.
    pub(super) fn poll(
        &mut self,
        now: Instant,
        mut send: impl FnMut(SocketAddr, &[u8]),
    ) -> anyhow::Result<()> {
        loop {
            let output = self
                .rtc
                .poll_output()
                .map_err(|e| anyhow::anyhow!("the session failed: {e}"))?;
            match output {
                Output::Timeout(at) => {
                    self.timeout = at;
                    return Ok(());
                }
                Output::Transmit(t) => send(t.destination, &t.contents),
                Output::Event(Event::Connected) => {
                    self.counts
                        .connected_after
                        .get_or_insert(now.saturating_duration_since(self.posted));
                }
                Output::Event(Event::RtpPacket(packet)) => {
                    self.count(&packet);
                }
                Output::Event(_) => {}
            }
        }
    }

    fn count(&mut self, packet: &str0m::rtp::RtpPacket) {
        let counts = &mut self.counts;
        counts.packets += 1;
        counts.bytes += packet.payload.len() as u64;
        counts
            .sequences
            .entry(*packet.header.ssrc)
            .or_default()
            .push(*packet.seq_no as u16);
        let pt = *packet.header.payload_type;
        match self.video_pts.get(&pt) {
            Some(codec) => {
                counts.video_packets += 1;
                let starts = match codec {
                    VideoCodec::H264 => h264_starts_keyframe(&packet.payload),
                    VideoCodec::Vp8 => vp8_starts_keyframe(&packet.payload),
                };
                if starts {
                    counts.keyframe_starts += 1;
                    counts
                        .first_keyframe_after
                        .get_or_insert(packet.timestamp.saturating_duration_since(self.posted));
                }
            }
            None => counts.audio_packets += 1,
        }
    }

    /// Says goodbye on the wire (DTLS close) where str0m does; the driver sends what follows.
    pub(super) fn close(&mut self) {
        self.rtc.disconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::change::SdpOffer;
    use str0m::format::Codec;
    use str0m::rtp::RtpWrite;

    const VIEWER: ([u8; 4], u16) = ([127, 0, 0, 1], 40_001);
    const SERVER: ([u8; 4], u16) = ([127, 0, 0, 1], 40_002);

    /// A str0m sender standing in for the party, and the viewer, on a virtual clock.
    struct Pair {
        now: Instant,
        server: Rtc,
        viewer: Viewer,
        video: Option<str0m::media::Mid>,
    }

    impl Pair {
        fn new() -> Self {
            str0m::crypto::from_feature_flags().install_process_default();
            let now = Instant::now();
            let offer = Offer::new(VIEWER.into(), now).unwrap();
            assert!(offer.sdp.contains("m=video") && offer.sdp.contains("m=audio"));
            assert!(offer.sdp.contains("a=recvonly"), "{}", offer.sdp);
            let mut server = Rtc::builder().set_rtp_mode(true).build(now);
            server.add_local_candidate(Candidate::host(SERVER.into(), "udp").unwrap());
            let parsed = SdpOffer::from_sdp_string(&offer.sdp).unwrap();
            let answer = server
                .sdp_api()
                .accept_offer(parsed)
                .unwrap()
                .to_sdp_string();
            // An answer that only points off this machine is refused before ICE tries it.
            let away = answer.replace("127.0.0.1", "192.0.2.7");
            let refused = Offer::new(VIEWER.into(), now).unwrap().accept(&away, now);
            assert!(refused.is_err());
            let viewer = offer.accept(&answer, now).unwrap();
            Pair {
                now,
                server,
                viewer,
                video: None,
            }
        }

        /// Runs both sides for `ms` of virtual time, 1 ms a step.
        fn run(&mut self, ms: u64) {
            for _ in 0..ms {
                self.now += Duration::from_millis(1);
                let now = self.now;
                let mut to_server = Vec::new();
                self.viewer
                    .tick(now, |_, data| to_server.push(data.to_vec()))
                    .unwrap();
                self.server.handle_input(Input::Timeout(now)).unwrap();
                loop {
                    let mut to_server_more = Vec::new();
                    match self.server.poll_output().unwrap() {
                        Output::Timeout(_) => {}
                        Output::Transmit(t) => {
                            self.viewer
                                .receive(now, SERVER.into(), &t.contents, |_, d| {
                                    to_server_more.push(d.to_vec())
                                })
                                .unwrap();
                            to_server.extend(to_server_more);
                            continue;
                        }
                        Output::Event(Event::MediaAdded(m)) => {
                            if m.kind == MediaKind::Video {
                                self.video = Some(m.mid);
                            }
                            continue;
                        }
                        Output::Event(_) => continue,
                    }
                    if to_server.is_empty() {
                        break;
                    }
                    for data in to_server.drain(..) {
                        let receive =
                            Receive::new(Protocol::Udp, VIEWER.into(), SERVER.into(), &data)
                                .unwrap();
                        self.server
                            .handle_input(Input::Receive(now, receive))
                            .unwrap();
                    }
                }
            }
        }

        /// Sends video packets with these sequence numbers, the first an H.264 IDR.
        fn send_video(&mut self, seqs: &[u64]) {
            let mid = self.video.expect("the server saw the video m-line");
            let pt = self
                .server
                .codec_config()
                .find(|p| p.spec().codec == Codec::H264)
                .unwrap()
                .pt();
            let mut api = self.server.direct_api();
            let ssrc = match api.stream_tx_by_mid(mid, None) {
                Some(stream) => stream.ssrc(),
                None => {
                    let ssrc = api.new_ssrc();
                    api.declare_stream_tx(ssrc, None, mid, None);
                    ssrc
                }
            };
            for (i, &seq) in seqs.iter().enumerate() {
                // NAL type 5 (IDR) first, then type 1 (non-IDR slices).
                let payload: Vec<u8> = vec![if i == 0 { 0x65 } else { 0x41 }, 0, 0, 0];
                let stream = api.stream_tx(&ssrc).unwrap();
                stream.write_rtp(
                    RtpWrite::new(pt, seq.into(), seq as u32 * 3000, self.now, payload)
                        .marker(true),
                );
            }
        }
    }

    #[test]
    fn a_viewer_connects_and_counts_gaps_and_the_first_keyframe() {
        let mut pair = Pair::new();
        pair.run(3000);
        let connected = pair.viewer.counts().connected_after;
        assert!(connected.is_some(), "ICE and DTLS did not come up");
        assert!(pair.viewer.is_alive());

        pair.send_video(&[100, 101, 102, 104, 105, 108]);
        pair.run(200);
        let counts = pair.viewer.counts();
        assert_eq!(counts.video_packets, 6, "{counts:?}");
        assert_eq!(counts.packets, 6);
        assert_eq!(counts.lost(), 3, "103, 106 and 107 never came");
        assert_eq!(counts.keyframe_starts, 1);
        assert!(counts.first_keyframe_after.unwrap() >= connected.unwrap());
    }
}
