//! `cowatch probe`: a headless viewer built on webrtc-rs, an independent WebRTC stack.
//!
//! The broadcaster speaks str0m; the probe deliberately uses a different implementation so a
//! passing probe means two stacks agree on the wire, not that one stack agrees with itself.
//!
//! One probe is one WHEP viewer: it offers recvonly Opus audio and H.264/VP8 video, POSTs the
//! offer (non-trickle, so the offer already carries its candidates), applies the answer, counts
//! what arrives for a while, then DELETEs its session. Everything it learns is a
//! [`ProbeReport`]; [`main`] prints one for people, tests and benchmarks call [`probe`] directly,
//! many at once in one process.
//!
//! The probe only ever talks to loopback: it refuses non-loopback URLs, binds its one UDP socket
//! on 127.0.0.1, disables mDNS, uses no STUN/TURN server and drops every non-loopback candidate
//! from the answer before ICE can try it. webrtc-rs 0.21 (the sans-I/O rewrite) has no
//! interface or IP filter on its `SettingEngine` any more; binding a concrete loopback address is
//! what restricts gathering instead, because a concrete address is gathered exactly as bound.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::shared::marshal::MarshalSize;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// Bound on every step that waits for the other side: TCP connect plus HTTP exchange, ICE
/// gathering, building and closing the peer connection, and ICE+DTLS after the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pace of ICE connectivity checks (see [`build_peer_connection`]).
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// How often a video stream that has not shown a keyframe yet asks for one. A browser asks as
/// soon as it cannot decode; asking again covers a lost PLI without flooding a shared encoder.
const PLI_INTERVAL: Duration = Duration::from_secs(1);
/// Largest HTTP response the probe accepts: an SDP answer is a few KiB, so anything far bigger
/// is a misdirected URL rather than an answer.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Recent sequence numbers remembered per SSRC, so duplicates and late packets within this
/// distance of the newest one are recognised instead of being counted twice.
const SEQ_WINDOW: u64 = 1024;

/// What to probe and for how long.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The WHEP endpoint, e.g. `http://127.0.0.1:8080/whep`. Only plain `http://` to a loopback
    /// host is accepted.
    pub url: String,
    /// How long to watch once the answer is applied.
    pub duration: Duration,
}

/// What one probe saw. Zeros (and `None`s) mean nothing arrived, not that measuring failed.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// HTTP status of the WHEP POST; anything but 2xx means no session was made and every
    /// media field is zero.
    pub status: u16,
    /// The server's one-line reason when the POST was refused (4xx/5xx), e.g.
    /// `party is full (100 viewers)`.
    pub reason: Option<String>,
    /// From just before the POST was sent to its whole response having been read.
    pub post_to_answer_ms: f64,
    /// Whether ICE and DTLS came up within the connect timeout; without it nothing can arrive.
    pub connected: bool,
    /// From just before the POST to the first RTP packet that starts a keyframe (H.264 IDR, or
    /// VP8 key frame): what a viewer waits before it can show a picture.
    pub time_to_first_keyframe_ms: Option<f64>,
    /// RTP packets received on the video track.
    pub video_packets: u64,
    /// RTP packets received on the audio track.
    pub audio_packets: u64,
    /// Bytes of the video RTP packets (header plus payload), duplicates included.
    pub video_bytes: u64,
    /// Packets missing from each SSRC's sequence-number run, summed over SSRCs. Reordered or
    /// retransmitted packets that arrive late fill their gap; duplicates count once.
    pub packets_lost: u64,
    /// Keyframes seen: each keyframe counts once however many packets carry it.
    pub keyframes: u64,
    /// Received rate of audio and video RTP (headers included), over the window from the first
    /// packet to the end of measurement.
    pub bitrate_kbps: f64,
    /// Negotiated video codec as a MIME type, e.g. `video/H264`; `None` if the server rejected
    /// or did not answer the video section.
    pub video_codec: Option<String>,
    /// Length of the measurement: from the answer being applied to the end of counting.
    pub seconds: f64,
}

impl ProbeReport {
    /// A report for a POST that did not make a session.
    fn refused(status: u16, reason: Option<String>, post_to_answer_ms: f64) -> Self {
        Self {
            status,
            reason,
            post_to_answer_ms,
            connected: false,
            time_to_first_keyframe_ms: None,
            video_packets: 0,
            audio_packets: 0,
            video_bytes: 0,
            packets_lost: 0,
            keyframes: 0,
            bitrate_kbps: 0.0,
            video_codec: None,
            seconds: 0.0,
        }
    }
}

/// Runs one WHEP viewer against `options.url` and reports what it received.
///
/// Returns `Ok` with a non-2xx `status` (and the server's `reason`) when the server refuses the
/// offer, so a benchmark can count refusals; returns `Err` when the server cannot be reached or
/// speaks something other than WHEP. Every wait is bounded, so this always finishes within a
/// few multiples of [`CONNECT_TIMEOUT`] plus `options.duration`.
pub async fn probe(options: &ProbeOptions) -> anyhow::Result<ProbeReport> {
    let url = HttpUrl::parse(&options.url)?;
    // Resolve before building anything so a wrong URL fails fast and nothing is sent anywhere
    // but loopback.
    let addrs = url.loopback_addrs().await?;

    let shared = Arc::new(Shared::default());
    let pc = tokio::time::timeout(CONNECT_TIMEOUT, build_peer_connection(shared.clone()))
        .await
        .context("timed out building the peer connection")??;

    let result = run_session(&pc, &shared, &url, &addrs, options.duration).await;

    // Whatever happened, stop reading and release the sockets; a close that hangs must not
    // hang the caller.
    shared.stop_tasks();
    if tokio::time::timeout(CONNECT_TIMEOUT, pc.close())
        .await
        .is_err()
    {
        tracing::warn!("probe: closing the peer connection timed out");
    }
    result
}

/// Offer, POST, answer, measure, DELETE: everything after the peer connection exists, so
/// [`probe`] can close it on every path out of here.
async fn run_session(
    pc: &impl PeerConnection,
    shared: &Arc<Shared>,
    url: &HttpUrl,
    addrs: &[SocketAddr],
    duration: Duration,
) -> anyhow::Result<ProbeReport> {
    let recvonly = || {
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        })
    };
    pc.add_transceiver_from_kind(RtpCodecKind::Audio, recvonly())
        .await
        .context("adding the audio transceiver")?;
    pc.add_transceiver_from_kind(RtpCodecKind::Video, recvonly())
        .await
        .context("adding the video transceiver")?;

    let mut gathering = shared.gathering.subscribe();
    let offer = pc.create_offer(None).await.context("creating the offer")?;
    pc.set_local_description(offer)
        .await
        .context("applying the offer")?;
    // Non-trickle WHEP: the server only ever sees the candidates that are in the POST body.
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        gathering.wait_for(|state| *state == RTCIceGatheringState::Complete),
    )
    .await
    .context("timed out gathering ICE candidates")?
    .context("the peer connection stopped while gathering")?;
    let offer = pc
        .local_description()
        .await
        .context("no local description after gathering")?;

    let posted = Instant::now();
    let _ = shared.posted.set(posted);
    let response = tokio::time::timeout(
        CONNECT_TIMEOUT,
        http_request(addrs, url, "POST", Some(("application/sdp", &offer.sdp))),
    )
    .await
    .with_context(|| format!("{url} did not answer within {CONNECT_TIMEOUT:?}"))??;
    let post_to_answer_ms = ms(posted.elapsed());

    if !(200..300).contains(&response.status) {
        return Ok(ProbeReport::refused(
            response.status,
            Some(one_line(&response.body)),
            post_to_answer_ms,
        ));
    }
    let location = response
        .header("location")
        .map(|location| url.resolve(location));

    // From here on a session exists on the server: end it whatever else happens.
    let measured = measure(pc, shared, &response.body, duration).await;

    match location {
        Some(Ok(resource)) => {
            if let Err(e) = delete_session(&resource).await {
                tracing::warn!("probe: the session at {resource} may outlive the probe: {e:#}");
            }
        }
        Some(Err(e)) => tracing::warn!("probe: not deleting the session: {e:#}"),
        None => tracing::warn!(
            "probe: the answer had no Location header, so the session is not deleted"
        ),
    }

    let (counters, window) = measured?;
    let total = counters.summary(window.end);
    Ok(ProbeReport {
        status: response.status,
        reason: None,
        post_to_answer_ms,
        connected: window.connected,
        time_to_first_keyframe_ms: counters.first_keyframe.map(|at| ms(at - posted)),
        video_packets: total.video_packets,
        audio_packets: total.audio_packets,
        video_bytes: total.video_bytes,
        packets_lost: total.packets_lost,
        keyframes: total.keyframes,
        bitrate_kbps: total.bitrate_kbps,
        video_codec: window.video_codec,
        seconds: (window.end - window.start).as_secs_f64(),
    })
}

/// `DELETE`s the WHEP session resource, so the server frees the viewer slot at once instead of
/// waiting for ICE consent to expire.
async fn delete_session(resource: &HttpUrl) -> anyhow::Result<()> {
    let addrs = resource.loopback_addrs().await?;
    let response = tokio::time::timeout(
        CONNECT_TIMEOUT,
        http_request(&addrs, resource, "DELETE", None),
    )
    .await
    .context("DELETE timed out")??;
    if !(200..300).contains(&response.status) {
        bail!(
            "DELETE answered {}: {}",
            response.status,
            one_line(&response.body)
        );
    }
    Ok(())
}

/// What [`measure`] knows besides the counters.
struct Window {
    start: Instant,
    end: Instant,
    connected: bool,
    video_codec: Option<String>,
}

/// Applies the answer and counts for `duration`, or until ICE/DTLS give up.
async fn measure(
    pc: &impl PeerConnection,
    shared: &Arc<Shared>,
    answer_sdp: &str,
    duration: Duration,
) -> anyhow::Result<(Counters, Window)> {
    let answer = AnswerInfo::parse(answer_sdp);
    let _ = shared.payload_types.set(answer.video_payload_types.clone());
    let filtered = loopback_candidates_only(answer_sdp);
    if !filtered.kept_any {
        bail!(
            "the answer offers no loopback UDP candidate ({} candidate(s) dropped); the probe \
             only connects over loopback",
            filtered.dropped
        );
    }
    let answer_desc = RTCSessionDescription::answer(filtered.sdp)
        .context("the server's answer is not valid SDP")?;
    let mut connection = shared.connection.subscribe();
    tokio::time::timeout(CONNECT_TIMEOUT, pc.set_remote_description(answer_desc))
        .await
        .context("timed out applying the answer")?
        .context("the server's answer was not accepted")?;

    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + duration);
    let connect_deadline = tokio::time::Instant::from_std(start + CONNECT_TIMEOUT);
    // Connected within the connect timeout, or give up early; then watch until the deadline,
    // leaving early only if the connection dies (nothing more can arrive).
    let connected = match tokio::time::timeout_at(
        deadline.min(connect_deadline),
        connection.wait_for(|state| {
            matches!(
                state,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        }),
    )
    .await
    {
        Ok(Ok(state)) => *state == RTCPeerConnectionState::Connected,
        _ => false,
    };
    if connected {
        let _ = tokio::time::timeout_at(
            deadline,
            connection.wait_for(|state| {
                matches!(
                    state,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await;
    }
    let end = Instant::now();
    // Freeze the counters now so packets racing with the DELETE are not counted.
    let counters = shared.counters.lock().expect("counters lock").freeze();
    Ok((
        counters,
        Window {
            start,
            end,
            connected,
            video_codec: answer.video_codec,
        },
    ))
}

/// State one probe shares between its handler callbacks, its track readers and [`probe`].
#[derive(Default)]
struct Shared {
    /// Latest ICE gathering state, so [`run_session`] can wait for `Complete`.
    gathering: watch::Sender<RTCIceGatheringState>,
    /// Latest connection state, so [`measure`] can stop early when the connection dies.
    connection: watch::Sender<RTCPeerConnectionState>,
    /// When the POST went out: the zero of `time_to_first_keyframe_ms`.
    posted: OnceLock<Instant>,
    /// Video payload type → codec, from the answer; decides how a payload is parsed.
    payload_types: OnceLock<HashMap<u8, VideoCodec>>,
    counters: Mutex<Counters>,
    /// Track reader tasks, aborted when the probe ends.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stop_tasks(&self) {
        for task in self.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

/// Feeds webrtc-rs events into [`Shared`].
struct Handler(Arc<Shared>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.0.gathering.send_replace(state);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.0.connection.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // The driver awaits this callback before it delivers more events, so the reading must
        // happen on a task of its own.
        let shared = self.0.clone();
        let task = tokio::spawn(read_track(shared, track));
        self.0.tasks.lock().expect("tasks lock").push(task);
    }
}

/// Counts every RTP packet of one remote track until the track ends or the probe stops.
async fn read_track(shared: Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let kind = match track.kind().await {
        RtpCodecKind::Video => MediaKind::Video,
        RtpCodecKind::Audio => MediaKind::Audio,
        _ => return,
    };
    let mut last_pli: Option<Instant> = None;
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let now = Instant::now();
        let codec = match kind {
            MediaKind::Video => shared
                .payload_types
                .get()
                .and_then(|types| types.get(&packet.header.payload_type).copied()),
            MediaKind::Audio => None,
        };
        let size = packet.header.marshal_size() + packet.payload.len();
        let outcome = shared.counters.lock().expect("counters lock").record(
            kind,
            codec,
            &PacketInfo {
                ssrc: packet.header.ssrc,
                sequence_number: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                payload: &packet.payload,
                size,
                at: now,
            },
        );
        match outcome {
            Recorded::Frozen => break,
            Recorded::WaitingForKeyframe
                if last_pli.is_none_or(|at| now.duration_since(at) >= PLI_INTERVAL) =>
            {
                // Like a browser that cannot decode yet: ask for a keyframe rather than wait for
                // the next scheduled one.
                last_pli = Some(now);
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: packet.header.ssrc,
                };
                if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                    tracing::debug!("probe: sending PLI: {e}");
                }
            }
            _ => {}
        }
    }
}

/// Builds the webrtc-rs peer connection: our codecs only, default interceptors, loopback only.
async fn build_peer_connection(shared: Arc<Shared>) -> anyhow::Result<impl PeerConnection> {
    let mut media = MediaEngine::default();
    // Only what the broadcaster might send, so the answer's choice is unambiguous. No RTX:
    // retransmissions, if any, then come on the media SSRC and fill gaps in its sequence
    // numbers instead of arriving as a second stream.
    let video = |payload_type: u8, mime: &str, fmtp: &str| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type,
    };
    for codec in [
        video(
            102,
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
        video(
            106,
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        ),
        video(96, MIME_TYPE_VP8, ""),
    ] {
        media.register_codec(codec, RtpCodecKind::Video)?;
    }
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    // NACK generation, receiver reports and TWCC feedback, as a browser would send them. They
    // observe RTP on its way to the track and never drop it, so counting is unaffected.
    let registry = register_default_interceptors(Registry::new(), &mut media)?;

    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        .with_network_types(vec![NetworkType::Udp4])
        // webrtc-rs paces connectivity checks every 200 ms and nominates on a later tick, which
        // alone adds ~400 ms to a loopback join; a browser checks its one pair at once. Checking
        // every 20 ms keeps the probe's own overhead out of time-to-first-keyframe, and 250
        // tries still give a slow server the full connect timeout.
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(250))
        .build();

    let pc = PeerConnectionBuilder::new()
        // No ICE servers: nothing leaves the machine.
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler(shared)))
        .with_udp_addrs(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
        .build()
        .await
        .context("building the peer connection")?;
    Ok(pc)
}

// ---------------------------------------------------------------------------------------------
// Counting

/// Audio or video: which counters a packet goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaKind {
    Audio,
    Video,
}

/// Video codecs whose keyframes the probe recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoCodec {
    H264,
    Vp8,
}

/// The parts of an RTP packet the counters need.
struct PacketInfo<'a> {
    ssrc: u32,
    sequence_number: u16,
    timestamp: u32,
    payload: &'a [u8],
    /// Header plus payload, in bytes.
    size: usize,
    at: Instant,
}

/// What [`Counters::record`] tells the track reader.
#[derive(Debug, PartialEq, Eq)]
enum Recorded {
    /// Counted.
    Counted,
    /// Counted; a delta-frame video packet arrived before any keyframe on its SSRC.
    WaitingForKeyframe,
    /// Measurement is over: nothing more is counted.
    Frozen,
}

/// Running totals of one probe.
#[derive(Debug, Default)]
struct Counters {
    frozen: bool,
    first_packet: Option<Instant>,
    first_keyframe: Option<Instant>,
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
struct Summary {
    video_packets: u64,
    audio_packets: u64,
    video_bytes: u64,
    packets_lost: u64,
    keyframes: u64,
    bitrate_kbps: f64,
}

impl Counters {
    fn record(
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
    fn freeze(&mut self) -> Counters {
        let totals = std::mem::take(self);
        self.frozen = true;
        totals
    }

    fn summary(&self, end: Instant) -> Summary {
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
/// newest packet; a bitmap of the last [`SEQ_WINDOW`] numbers tells a first arrival from a
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
}

impl Default for SequenceTracker {
    fn default() -> Self {
        Self {
            base: 0,
            highest: None,
            received: 0,
            seen: [0; (SEQ_WINDOW / 64) as usize],
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
        }
        // Otherwise: a duplicate, older than the window, or from before the first packet.
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

/// Whether an H.264 RTP payload (RFC 6184) starts a keyframe: a single IDR NAL unit (type 5),
/// a STAP-A (24) aggregating an IDR or an SPS (7, which precedes an IDR), or the first FU-A (28)
/// fragment of an IDR.
pub fn h264_starts_keyframe(payload: &[u8]) -> bool {
    h264_keyframe_part(payload) != KeyframePart::None
}

/// How an RTP packet relates to a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyframePart {
    /// Not the start of a keyframe.
    None,
    /// Parameter sets (SPS) ahead of an IDR: the keyframe starts here, but the picture itself
    /// has not arrived yet.
    ParameterSets,
    /// The start of the key picture itself (H.264 IDR, VP8 key frame).
    Picture,
}

fn h264_keyframe_part(payload: &[u8]) -> KeyframePart {
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
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else {
            return false;
        };
        at += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 bits, or 15 when its M bit is set.
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(at).is_some_and(|&header| header & 0x01 == 0)
}

// ---------------------------------------------------------------------------------------------
// SDP

/// What the probe reads from the answer itself, independent of webrtc-rs.
#[derive(Debug, Default, PartialEq)]
struct AnswerInfo {
    /// MIME type of the first payload type of an accepted video section.
    video_codec: Option<String>,
    /// Every H.264/VP8 payload type of the video section.
    video_payload_types: HashMap<u8, VideoCodec>,
}

impl AnswerInfo {
    fn parse(sdp: &str) -> Self {
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
struct FilteredSdp {
    sdp: String,
    kept_any: bool,
    dropped: usize,
}

/// Drops non-loopback candidates so ICE never sends a check off the machine, whatever the
/// server advertises.
fn loopback_candidates_only(sdp: &str) -> FilteredSdp {
    let mut out = String::with_capacity(sdp.len());
    let mut kept_any = false;
    let mut dropped = 0;
    for line in sdp.split_inclusive('\n') {
        if let Some(candidate) = line.trim().strip_prefix("a=candidate:") {
            // foundation component transport priority address port typ type ...
            let fields: Vec<&str> = candidate.split_whitespace().collect();
            let loopback_udp = fields.len() >= 6
                && fields[2].eq_ignore_ascii_case("udp")
                && fields[4].parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
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

// ---------------------------------------------------------------------------------------------
// HTTP: just enough HTTP/1.1 for WHEP's POST and DELETE on loopback.

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpUrl {
    host: String,
    port: u16,
    /// Path and query, always starting with `/`.
    path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

impl HttpUrl {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            bail!(
                "{url}: https is not supported; the probe speaks plain http to a loopback server"
            );
        }
        if !lower.starts_with("http://") {
            bail!("{url}: expected an http:// URL, e.g. http://127.0.0.1:8080/whep");
        }
        let rest = &url["http://".len()..];
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        // The fragment is never sent.
        let path = path.split('#').next().unwrap_or("");
        let path = if path.is_empty() || path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.contains('@') {
            bail!("{url}: credentials in the URL are not supported");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .with_context(|| format!("{url}: unterminated IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            bail!("{url}: no host");
        }
        let port = match port {
            Some(port) => port
                .parse()
                .with_context(|| format!("{url}: bad port {port:?}"))?,
            None => 80,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            path,
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `location` (a WHEP resource) relative to this URL, per RFC 3986's reference resolution
    /// for the forms a server sends: absolute, network-path, absolute-path or relative-path.
    fn resolve(&self, location: &str) -> anyhow::Result<Self> {
        let location = location.trim();
        let lower = location.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Self::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Self::parse(&format!("http://{rest}"));
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..=base.rfind('/').unwrap_or(0)];
            format!("{dir}{location}")
        };
        Ok(Self {
            host: self.host.clone(),
            port: self.port,
            path,
        })
    }

    /// The host's loopback addresses; an error if it has none, so nothing goes off the machine.
    async fn loopback_addrs(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot resolve {}", self.host))?
            .collect();
        let loopback: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|addr| addr.ip().is_loopback())
            .collect();
        if loopback.is_empty() {
            bail!(
                "{self}: {} is not a loopback address; the probe only connects to this machine",
                self.host
            );
        }
        Ok(loopback)
    }
}

/// An HTTP response, body read in full.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `Connection: close` and reads the whole response.
async fn http_request(
    addrs: &[SocketAddr],
    url: &HttpUrl,
    method: &str,
    body: Option<(&str, &str)>,
) -> anyhow::Result<HttpResponse> {
    let mut stream = None;
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        let e = last_error.map_or_else(|| "no address".to_owned(), |e| e.to_string());
        bail!("cannot connect to {url}: {e}");
    };
    let _ = stream.set_nodelay(true);

    let mut request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: cowatch-probe\r\nConnection: close\r\n",
        url.path,
        url.authority()
    );
    match body {
        Some((content_type, body)) => {
            request.push_str(&format!(
                "Content-Type: {content_type}\r\nAccept: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        None => request.push_str("Content-Length: 0\r\n\r\n"),
    }
    stream
        .write_all(request.as_bytes())
        .await
        .with_context(|| format!("sending {method} to {url}"))?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE_BYTES {
            bail!("{method} {url}: response larger than {MAX_RESPONSE_BYTES} bytes");
        }
        // Stop as soon as the message is complete, in case the server keeps the socket open.
        if let Some(response) = parse_response(&raw, false)? {
            return Ok(response);
        }
    }
    parse_response(&raw, true)?
        .with_context(|| format!("{method} {url}: the connection closed mid-response"))
}

/// Parses `raw` as an HTTP/1.1 response. `None` while more bytes are needed; at `eof`, a body
/// without a length runs to the end.
fn parse_response(raw: &[u8], eof: bool) -> anyhow::Result<Option<HttpResponse>> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        if eof && !raw.is_empty() {
            bail!("malformed HTTP response");
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..head_end]).context("HTTP header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("malformed HTTP status line {status_line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let status: u16 = code
        .parse()
        .with_context(|| format!("malformed HTTP status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let rest = &raw[head_end + 4..];
    let body: Vec<u8> = if header("transfer-encoding").is_some_and(|te| {
        te.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("chunked"))
    }) {
        match dechunk(rest)? {
            Some(body) => body,
            None if eof => bail!("chunked HTTP body ended early"),
            None => return Ok(None),
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length.parse().context("bad Content-Length")?;
        if rest.len() < length {
            if eof {
                bail!("HTTP body shorter than its Content-Length");
            }
            return Ok(None);
        }
        rest[..length].to_vec()
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// Decodes a chunked body; `None` until the final zero-length chunk has arrived.
fn dechunk(mut rest: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_line = std::str::from_utf8(&rest[..line_end]).context("bad chunk size")?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_hex:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The first non-empty line of a server's text, trimmed and bounded, for an error message.
fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("(no reason given)");
    line.chars().take(200).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// Command line

/// Options of `cowatch probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// The WHEP endpoint, e.g. http://127.0.0.1:8080/whep.
    pub url: String,
    /// How long to watch.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Runs the probe against the URL for the seconds given and prints its report.
///
/// Fails (after printing what it measured) when the server refuses the offer or when no
/// keyframe arrived, because a viewer in either situation never sees a picture.
pub fn main(args: ProbeArgs) -> anyhow::Result<()> {
    let ProbeArgs { url, seconds } = args;
    let url = url.as_str();
    // A URL the probe cannot use is the whole answer; no header line before it.
    HttpUrl::parse(url)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let options = ProbeOptions {
        url: url.to_owned(),
        duration: Duration::from_secs(seconds),
    };
    println!("probe {url} for {seconds} s");
    let report = runtime.block_on(probe(&options))?;
    if !(200..300).contains(&report.status) {
        bail!(
            "server answered {}: {}",
            report.status,
            report.reason.as_deref().unwrap_or("(no reason given)")
        );
    }
    print!("{}", render(&report));
    if report.time_to_first_keyframe_ms.is_none() {
        if !report.connected {
            bail!(
                "no keyframe: the WebRTC connection (ICE/DTLS) did not come up within {} s",
                CONNECT_TIMEOUT.min(options.duration).as_secs_f64()
            );
        }
        if report.video_packets == 0 {
            bail!("no video arrived within {seconds} s (no keyframe, no packets)");
        }
        bail!(
            "no keyframe arrived within {seconds} s ({} video packets, none starting a keyframe)",
            report.video_packets
        );
    }
    Ok(())
}

/// The human table [`main`] prints.
fn render(report: &ProbeReport) -> String {
    let codec = report
        .video_codec
        .as_deref()
        .map(|mime| mime.strip_prefix("video/").unwrap_or(mime))
        .unwrap_or("none");
    let keyframe = match report.time_to_first_keyframe_ms {
        Some(t) => format!("{t:.1} ms after POST"),
        None => "none".to_owned(),
    };
    format!(
        "  answer in          {:.1} ms\n  \
         first keyframe     {keyframe}\n  \
         video              {codec}, {} packets, {} bytes\n  \
         audio              {} packets\n  \
         received           {:.0} kbit/s (audio + video)\n  \
         keyframes seen     {}\n  \
         packets lost       {}\n",
        report.post_to_answer_ms,
        report.video_packets,
        report.video_bytes,
        report.audio_packets,
        report.bitrate_kbps,
        report.keyframes,
        report.packets_lost,
    )
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

    #[test]
    fn urls_parse_and_locations_resolve() {
        let url = HttpUrl::parse("http://127.0.0.1:8080/whep").unwrap();
        assert_eq!(url.host, "127.0.0.1");
        assert_eq!(url.port, 8080);
        assert_eq!(url.path, "/whep");
        assert_eq!(
            url.resolve("/whep/abc").unwrap().to_string(),
            "http://127.0.0.1:8080/whep/abc"
        );
        assert_eq!(
            url.resolve("whep/abc").unwrap().to_string(),
            "http://127.0.0.1:8080/whep/abc"
        );
        assert_eq!(
            url.resolve("http://localhost:9/x").unwrap().to_string(),
            "http://localhost:9/x"
        );
        let nested = HttpUrl::parse("http://[::1]:81/a/whep?x=1").unwrap();
        assert_eq!(nested.host, "::1");
        assert_eq!(
            nested.resolve("s/1").unwrap().to_string(),
            "http://[::1]:81/a/s/1"
        );
        assert_eq!(HttpUrl::parse("http://h").unwrap().path, "/");
        let err = HttpUrl::parse("https://127.0.0.1/whep").unwrap_err();
        assert!(err.to_string().contains("https is not supported"));
        assert!(HttpUrl::parse("127.0.0.1:8080/whep").is_err());
    }

    #[test]
    fn responses_parse_with_length_chunks_or_eof() {
        let r = parse_response(
            b"HTTP/1.1 201 Created\r\nLocation: /whep/1\r\nContent-Length: 3\r\n\r\nv=0",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("location"), Some("/whep/1"));
        assert_eq!(r.body, "v=0");
        // Incomplete until all bytes are in.
        assert!(
            parse_response(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nv", false)
                .unwrap()
                .is_none()
        );
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n\
            5\r\nparty\r\n9\r\n is full\n\r\n0\r\n\r\n";
        let r = parse_response(chunked, false).unwrap().unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(one_line(&r.body), "party is full");
        let r = parse_response(b"HTTP/1.0 400 Bad Request\r\n\r\nbad offer\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, "bad offer\n");
    }

    #[test]
    fn probe_futures_can_be_spawned() {
        // Benchmarks run many probes as tasks on a multi-threaded runtime.
        fn assert_send<T: Send>(_: &T) {}
        let options = ProbeOptions {
            url: String::new(),
            duration: Duration::ZERO,
        };
        assert_send(&probe(&options));
    }

    #[tokio::test]
    async fn non_loopback_hosts_are_refused_before_anything_is_sent() {
        let report = probe(&ProbeOptions {
            url: "http://192.0.2.1:8080/whep".to_owned(),
            duration: Duration::from_secs(1),
        })
        .await;
        let err = report.unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
    }

    #[tokio::test]
    async fn a_refusal_is_reported_with_its_reason() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/whep", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the whole offer (head, then Content-Length bytes) before answering.
            let complete = |request: &[u8]| {
                let text = String::from_utf8_lossy(request);
                let Some(head) = text.find("\r\n\r\n") else {
                    return false;
                };
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                request.len() >= head + 4 + len
            };
            while !complete(&request) {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "client hung up early");
                request.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&request).into_owned();
            let body = "party is full (100 viewers)\n";
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            text
        });
        let report = probe(&ProbeOptions {
            url,
            duration: Duration::from_secs(1),
        })
        .await
        .unwrap();
        assert_eq!(report.status, 503);
        assert_eq!(
            report.reason.as_deref(),
            Some("party is full (100 viewers)")
        );
        assert_eq!(report.video_packets, 0);
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /whep HTTP/1.1\r\n"));
        assert!(request.contains("Content-Type: application/sdp\r\n"));
        // Offer: recvonly audio and video, loopback host candidates only, our codecs.
        assert!(request.contains("m=audio"));
        assert!(request.contains("m=video"));
        assert!(request.contains("a=recvonly"));
        assert!(request.contains("H264/90000"));
        assert!(request.contains("VP8/90000"));
        assert!(request.contains("opus/48000/2"));
        assert!(request.contains("profile-level-id=42e01f"));
        assert!(request.contains("profile-level-id=42001f"));
        let candidates: Vec<&str> = request
            .lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .collect();
        assert!(
            !candidates.is_empty(),
            "offer has no candidates:\n{request}"
        );
        for candidate in candidates {
            assert!(candidate.contains(" 127.0.0.1 "), "{candidate}");
        }
    }
}
