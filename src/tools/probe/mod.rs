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

mod counters;
mod frames;
mod keyframe;
mod peer;
mod picture;
mod report;
mod sdp;
mod whep;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::{
    PeerConnection, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use counters::Counters;
pub use counters::SequenceTracker;
pub use counters::VideoCodec;
pub use frames::{GIVE_UP_AFTER, Gap, SizeChange, VideoTimeline, VideoWatch};
pub use keyframe::{h264_starts_keyframe, vp8_starts_keyframe};
use peer::{Shared, build_peer_connection};
pub use picture::{PictureSize, h264_sps_size, vp8_frame_size};
pub use report::{ProbeArgs, main};
pub(crate) use sdp::{AnswerInfo, loopback_candidates_only};
pub(crate) use whep::{Answer, Whep, one_line};

/// Bound on every step that waits for the other side: TCP connect plus HTTP exchange, ICE
/// gathering, building and closing the peer connection, and ICE+DTLS after the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to probe and for how long.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The WHEP endpoint, e.g. `http://127.0.0.1:8080/whep`. Only plain `http://` to a loopback
    /// host is accepted.
    pub url: String,
    /// How long to watch once the answer is applied.
    pub duration: Duration,
    /// Offer only this video codec (`None`: H.264 and VP8, as a browser would).
    pub codec: Option<VideoCodec>,
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
    /// The sizes of the pictures shown, each from when its first keyframe was whole (ms
    /// after the answer): a switch between renditions shows as a new size.
    pub sizes: Vec<SizeChange>,
    /// Video frames that arrived whole and decodable (see [`VideoTimeline`]).
    pub frames_shown: u64,
    /// The longest time without a new frame after the first one, the end of the measurement
    /// included; `None` when no frame was shown.
    pub longest_freeze_ms: Option<f64>,
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
            sizes: Vec::new(),
            frames_shown: 0,
            longest_freeze_ms: None,
        }
    }
}

/// The address of ours that packets to `server` leave from: 127.0.0.1 for a server on
/// loopback, our end of the veth inside a test's network namespace. Asks the kernel's routing
/// table (a UDP `connect` sends nothing).
fn local_ip_towards(server: std::net::IpAddr) -> anyhow::Result<std::net::IpAddr> {
    if server.is_loopback() {
        return Ok(server);
    }
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).context("binding a UDP socket")?;
    socket
        .connect((server, 9))
        .with_context(|| format!("no route to {server}"))?;
    let local = socket.local_addr()?.ip();
    if !crate::tools::http::is_test_network(local) {
        bail!("{server} is reached from {local}, outside the test network");
    }
    Ok(local)
}

/// Runs one WHEP viewer against `options.url` and reports what it received.
///
/// Returns `Ok` with a non-2xx `status` (and the server's `reason`) when the server refuses the
/// offer, so a benchmark can count refusals; returns `Err` when the server cannot be reached or
/// speaks something other than WHEP. Every wait is bounded, so this always finishes within a
/// few multiples of `CONNECT_TIMEOUT` plus `options.duration`.
pub async fn probe(options: &ProbeOptions) -> anyhow::Result<ProbeReport> {
    probe_with(options, &ProbeHandle::default()).await
}

/// A running probe seen from outside, for a test that must act while it watches: what its
/// pictures did so far, and a way to make it leave before its time is up.
#[derive(Debug, Clone, Default)]
pub struct ProbeHandle {
    /// Its pictures, live.
    pub video: VideoWatch,
    leave: CancellationToken,
}

impl ProbeHandle {
    /// Ends the probe's watch now: it closes and DELETEs its session, as a viewer closing
    /// the page would, and [`probe_with`] returns its report.
    pub fn leave(&self) {
        self.leave.cancel();
    }
}

/// [`probe`], with `handle` to follow its pictures while it runs (a test waits for a switch of
/// rendition as it happens) and to make it leave early.
pub async fn probe_with(
    options: &ProbeOptions,
    handle: &ProbeHandle,
) -> anyhow::Result<ProbeReport> {
    let video = handle.video.clone();
    // Resolve before building anything so a wrong URL fails fast and nothing is sent anywhere
    // but loopback.
    let whep = Whep::open(&options.url).await?;

    let local = local_ip_towards(whep.server_ip().await?)?;
    let shared = Arc::new(Shared::new(video));
    let pc = tokio::time::timeout(
        CONNECT_TIMEOUT,
        build_peer_connection(shared.clone(), local, options.codec),
    )
    .await
    .context("timed out building the peer connection")??;

    let result = run_session(&pc, &shared, &whep, options.duration, &handle.leave).await;

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
    whep: &Whep,
    duration: Duration,
    leave: &CancellationToken,
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
    let answer = whep.offer(&offer.sdp).await?;
    let post_to_answer_ms = ms(posted.elapsed());
    shared.video.answered(Instant::now());

    if !(200..300).contains(&answer.status) {
        return Ok(ProbeReport::refused(
            answer.status,
            Some(one_line(&answer.body)),
            post_to_answer_ms,
        ));
    }

    // From here on a session exists on the server: end it whatever else happens.
    let measured = measure(pc, shared, &answer.body, duration, leave).await;

    match answer.resource {
        Some(Ok(resource)) => {
            if let Err(e) = whep.delete(&resource).await {
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
    let pictures = shared.video.timeline();
    Ok(ProbeReport {
        status: answer.status,
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
        longest_freeze_ms: pictures
            .first_frame_ms
            .map(|first| pictures.longest_freeze(first, pictures.now_ms)),
        frames_shown: pictures.frames,
        sizes: pictures.sizes,
    })
}

/// What [`measure`] knows besides the counters.
struct Window {
    start: Instant,
    end: Instant,
    connected: bool,
    video_codec: Option<String>,
}

/// Applies the answer and counts for `duration`, or until ICE/DTLS give up or `leave` is
/// cancelled.
async fn measure(
    pc: &impl PeerConnection,
    shared: &Arc<Shared>,
    answer_sdp: &str,
    duration: Duration,
    leave: &CancellationToken,
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
    // leaving early only if the connection dies (nothing more can arrive) or we are told to.
    let watch = async {
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
        connected
    };
    let connected = tokio::select! {
        connected = watch => connected,
        () = leave.cancelled() => *shared.connection.borrow() == RTCPeerConnectionState::Connected,
    };
    let end = Instant::now();
    // Freeze the counters now so packets racing with the DELETE are not counted.
    let counters = shared.counters.lock().expect("counters lock").freeze();
    shared.video.stop(end);
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn probe_futures_can_be_spawned() {
        // Benchmarks run many probes as tasks on a multi-threaded runtime.
        fn assert_send<T: Send>(_: &T) {}
        let options = ProbeOptions {
            url: String::new(),
            duration: Duration::ZERO,
            codec: None,
        };
        assert_send(&probe(&options));
    }

    #[tokio::test]
    async fn non_loopback_hosts_are_refused_before_anything_is_sent() {
        let report = probe(&ProbeOptions {
            url: "http://192.0.2.1:8080/whep".to_owned(),
            duration: Duration::from_secs(1),
            codec: None,
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
            codec: None,
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
