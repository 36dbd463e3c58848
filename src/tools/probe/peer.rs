//! The probe's webrtc-rs peer connection: recvonly, our codecs only, loopback only, with
//! handlers that feed what happens (gathering, connection state, RTP on each track) into the
//! state [`probe`](super::probe) reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::NackGeneratorBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    Slot, configure_rtcp_reports, configure_simulcast_extension_headers,
    configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::shared::marshal::MarshalSize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, Registry,
    SettingEngineBuilder,
};

use anyhow::Context;

use super::counters::{Counters, MediaKind, PacketInfo, Recorded, VideoCodec};
use super::frames::VideoWatch;

/// Pace of ICE connectivity checks (see [`build_peer_connection`]).
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// How many times a missing packet is asked for before it is given up, as libwebrtc does
/// (`kMaxNackRetries`).
const MAX_NACKS_PER_PACKET: u16 = 10;
/// How often a video stream that has not shown a keyframe yet asks for one. A browser asks as
/// soon as it cannot decode; asking again covers a lost PLI without flooding a shared encoder.
const PLI_INTERVAL: Duration = Duration::from_secs(1);

/// State one probe shares between its handler callbacks, its track readers and
/// [`probe`](super::probe).
#[derive(Default)]
pub(super) struct Shared {
    /// Latest ICE gathering state, so the session can wait for `Complete`.
    pub(super) gathering: watch::Sender<RTCIceGatheringState>,
    /// Latest connection state, so the session can stop early when the connection dies.
    pub(super) connection: watch::Sender<RTCPeerConnectionState>,
    /// When the POST went out: the zero of `time_to_first_keyframe_ms`.
    pub(super) posted: OnceLock<Instant>,
    /// Video payload type → codec, from the answer; decides how a payload is parsed.
    pub(super) payload_types: OnceLock<HashMap<u8, VideoCodec>>,
    pub(super) counters: Mutex<Counters>,
    /// The pictures the video's packets make, readable while the probe runs.
    pub(super) video: VideoWatch,
    /// Track reader tasks, aborted when the probe ends.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// State for a probe whose pictures go to `video`.
    pub(super) fn new(video: VideoWatch) -> Self {
        Self {
            video,
            ..Self::default()
        }
    }

    pub(super) fn stop_tasks(&self) {
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
        let info = PacketInfo {
            ssrc: packet.header.ssrc,
            sequence_number: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            payload: &packet.payload,
            size: packet.header.marshal_size() + packet.payload.len(),
            marker: packet.header.marker,
            at: now,
        };
        let outcome = shared
            .counters
            .lock()
            .expect("counters lock")
            .record(kind, codec, &info);
        if kind == MediaKind::Video {
            shared.video.record(codec, &info);
        }
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
pub(super) async fn build_peer_connection(
    shared: Arc<Shared>,
    local: std::net::IpAddr,
    codec: Option<VideoCodec>,
) -> anyhow::Result<impl PeerConnection> {
    let mut media = MediaEngine::default();
    // Only what the broadcaster might send, so the answer's choice is unambiguous. No RTX:
    // retransmissions, if any, then come on the media SSRC and fill gaps in its sequence
    // numbers instead of arriving as a second stream.
    // NACKs and PLIs, as every browser asks: without RTX the broadcaster answers a NACK by
    // sending the packet again as it was.
    let feedback = || {
        ["nack", "nack pli"]
            .map(|fb| {
                let (typ, parameter) = fb.split_once(' ').unwrap_or((fb, ""));
                RTCPFeedback {
                    typ: typ.to_owned(),
                    parameter: parameter.to_owned(),
                }
            })
            .to_vec()
    };
    let video = |payload_type: u8, mime: &str, fmtp: &str| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: feedback(),
        },
        payload_type,
    };
    let wanted = |mime: &str| match codec {
        None => true,
        Some(VideoCodec::H264) => mime == MIME_TYPE_H264,
        Some(VideoCodec::Vp8) => mime == MIME_TYPE_VP8,
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
    ]
    .into_iter()
    .filter(|c| wanted(&c.rtp_codec.mime_type))
    {
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
    // observe RTP on its way to the track and never drop it, so counting is unaffected. The
    // defaults of `register_default_interceptors`, but for the NACKs: webrtc-rs asks again for
    // every missing packet of its last 512 every 100 ms, without end; a browser (libwebrtc)
    // gives a packet up after 10 tries. On a congested link the endless kind asks for more
    // than the link carries, and the probe would measure its own flood.
    let registry = Registry::new().with(
        Slot::NackGenerator,
        NackGeneratorBuilder::new()
            .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
            .build(),
    );
    configure_simulcast_extension_headers(&mut media)?;
    let registry = configure_twcc_receiver_only(registry, &mut media)?;
    let registry = configure_rtcp_reports(registry);

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
        .with_udp_addrs(vec![SocketAddr::from((local, 0))])
        .build()
        .await
        .context("building the peer connection")?;
    Ok(pc)
}
