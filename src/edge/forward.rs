//! The RTP that goes to one edge: the main H.264 rendition and the Opus, exactly as the
//! pipeline's payloaders made them (no re-encode, no rewriting), to the ports of the edge's
//! mountpoint. From the same socket, a sender report every second to the mountpoint's RTCP
//! port: Janus sends its keyframe requests (PLI/FIR) back to wherever RTCP came from, and
//! those go, merged across edges to one a second, to the broadcaster, whose gate merges them
//! with its own viewers' requests: the encoder makes at most one keyframe a second for all.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::AskKeyframe;
use super::EdgeShared;
use crate::pipeline::Pipeline;
use crate::util::lock::Locked;

/// How often the edge hears a sender report from us (and so where to send its requests).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Where one edge's mountpoint takes our streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    /// H.264 RTP.
    pub video: SocketAddr,
    /// Opus RTP.
    pub audio: SocketAddr,
    /// RTCP of the video, both ways.
    pub rtcp: Option<SocketAddr>,
}

/// Merges keyframe requests from every edge into at most one encoder keyframe per
/// [`KeyframeGate::EVERY`]. Sans-IO: the caller says when.
#[derive(Debug, Default)]
pub struct KeyframeGate {
    last: Option<Instant>,
}

impl KeyframeGate {
    /// At most one keyframe this often, as for the origin's own viewers.
    pub const EVERY: Duration = Duration::from_secs(1);

    /// Whether a request at `now` should reach the encoder.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < Self::EVERY)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Whether an RTCP compound packet holds a keyframe request: PLI (PT 206, FMT 1) or FIR
/// (PT 206, FMT 4).
pub fn asks_for_keyframe(packet: &[u8]) -> bool {
    let mut rest = packet;
    while rest.len() >= 4 {
        let (first, pt) = (rest[0], rest[1]);
        if first >> 6 != 2 {
            return false;
        }
        if pt == 206 && matches!(first & 0x1f, 1 | 4) {
            return true;
        }
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return false;
        }
        rest = &rest[len..];
    }
    false
}

/// What a sender report says about the stream so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// SSRC of the video, from its packets.
    pub ssrc: u32,
    /// RTP timestamp of the latest video packet.
    pub rtp_time: u32,
    /// Video packets sent.
    pub packets: u32,
    /// Video payload octets sent.
    pub octets: u32,
}

/// An RTCP sender report (RFC 3550 §6.4.1, no report blocks) for `sent` at wall time `wall`.
pub fn sender_report(sent: Sent, wall: SystemTime) -> [u8; 28] {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    // NTP time: seconds since 1900, and the fraction in 1/2^32 s.
    let ntp_secs = (since.as_secs() + 2_208_988_800) as u32;
    let ntp_frac = ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut report = [0u8; 28];
    report[0] = 0x80;
    report[1] = 200;
    report[2..4].copy_from_slice(&6u16.to_be_bytes());
    report[4..8].copy_from_slice(&sent.ssrc.to_be_bytes());
    report[8..12].copy_from_slice(&ntp_secs.to_be_bytes());
    report[12..16].copy_from_slice(&ntp_frac.to_be_bytes());
    report[16..20].copy_from_slice(&sent.rtp_time.to_be_bytes());
    report[20..24].copy_from_slice(&sent.packets.to_be_bytes());
    report[24..28].copy_from_slice(&sent.octets.to_be_bytes());
    report
}

/// Forwards to one edge until `stop`: to whatever `targets` says now (nothing while the edge is
/// down or has no mountpoint yet).
pub async fn run(
    edge: Arc<EdgeShared>,
    pipeline: Pipeline,
    mut targets: watch::Receiver<Option<Targets>>,
    gate: Arc<Mutex<KeyframeGate>>,
    ask_keyframe: AskKeyframe,
    stop: CancellationToken,
) {
    let socket = match UdpSocket::bind(("0.0.0.0", 0)).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!(edge = %edge.url, error = %e, "cannot open a UDP socket for an edge");
            return;
        }
    };
    let mut video = pipeline.subscribe_video();
    let mut audio = pipeline.subscribe_audio();
    let mut reports = tokio::time::interval(REPORT_EVERY);
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = Sent::default();
    let mut current = *targets.borrow_and_update();
    let mut buf = vec![0u8; 1500];
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = targets.changed() => {
                if changed.is_err() {
                    break;
                }
                current = *targets.borrow_and_update();
                if current.is_some() {
                    // A new mountpoint starts from a keyframe rather than waiting for a GOP.
                    request_keyframe(&gate, &ask_keyframe, &edge);
                }
            }
            packet = video.recv() => match packet {
                Ok(p) => {
                    let Some(to) = current else { continue };
                    if p.data.len() >= 12 {
                        sent.ssrc = u32::from_be_bytes([p.data[8], p.data[9], p.data[10], p.data[11]]);
                        sent.rtp_time = u32::from_be_bytes([p.data[4], p.data[5], p.data[6], p.data[7]]);
                    }
                    sent.packets = sent.packets.wrapping_add(1);
                    sent.octets = sent.octets.wrapping_add(p.data.len().saturating_sub(12) as u32);
                    send(&socket, &edge, &p.data, to.video);
                }
                // Fell behind: the edge's viewers lost packets and their decoders ask for a
                // keyframe through Janus, which arrives here as a PLI.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            packet = audio.recv() => match packet {
                Ok(p) => {
                    if let Some(to) = current {
                        send(&socket, &edge, &p.data, to.audio);
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            _ = reports.tick() => {
                if let Some(Targets { rtcp: Some(rtcp), .. }) = current
                    && sent.ssrc != 0
                {
                    let report = sender_report(sent, SystemTime::now());
                    let _ = socket.try_send_to(&report, rtcp);
                }
            }
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received
                    && current.and_then(|t| t.rtcp) == Some(from)
                    && asks_for_keyframe(&buf[..n])
                {
                    edge.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    request_keyframe(&gate, &ask_keyframe, &edge);
                }
            }
        }
    }
}

fn send(socket: &UdpSocket, edge: &EdgeShared, data: &[u8], to: SocketAddr) {
    match socket.try_send_to(data, to) {
        Ok(n) => {
            edge.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(_) => {
            edge.send_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn request_keyframe(gate: &Mutex<KeyframeGate>, ask: &AskKeyframe, edge: &EdgeShared) {
    if gate.locked().allow(Instant::now()) {
        edge.keyframes_forced.fetch_add(1, Ordering::Relaxed);
        ask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_merged_to_one_a_second() {
        let start = Instant::now();
        let mut gate = KeyframeGate::default();
        let at = |ms| start + Duration::from_millis(ms);
        let allowed: Vec<u64> = [0, 10, 500, 999, 1000, 1500, 2100]
            .into_iter()
            .filter(|ms| gate.allow(at(*ms)))
            .collect();
        assert_eq!(allowed, vec![0, 1000, 2100]);
    }

    #[test]
    fn pli_and_fir_are_keyframe_requests_receiver_reports_are_not() {
        // Receiver report (PT 201, no blocks) then a PLI (PT 206, FMT 1), as one compound.
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let fir = [0x84, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0];
        let remb = [0x8f, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(!asks_for_keyframe(&rr));
        assert!(asks_for_keyframe(&[rr.as_slice(), &pli].concat()));
        assert!(asks_for_keyframe(&fir));
        assert!(!asks_for_keyframe(&remb));
        assert!(!asks_for_keyframe(b"not rtcp at all"));
        // A length running past the end is not read past it.
        assert!(!asks_for_keyframe(&[0x80, 201, 0xff, 0xff, 0, 0, 0, 0]));
    }

    #[test]
    fn sender_report_carries_ssrc_times_and_counts() {
        let sent = Sent {
            ssrc: 0x0102_0304,
            rtp_time: 90_000,
            packets: 7,
            octets: 7000,
        };
        let wall = UNIX_EPOCH + Duration::from_millis(1_500);
        let sr = sender_report(sent, wall);
        assert_eq!(sr[0], 0x80);
        assert_eq!(sr[1], 200);
        assert_eq!(&sr[4..8], &[1, 2, 3, 4]);
        assert_eq!(
            u32::from_be_bytes(sr[8..12].try_into().unwrap()),
            2_208_988_801
        );
        assert_eq!(u32::from_be_bytes(sr[12..16].try_into().unwrap()), 1 << 31);
        assert_eq!(u32::from_be_bytes(sr[16..20].try_into().unwrap()), 90_000);
        assert_eq!(u32::from_be_bytes(sr[20..24].try_into().unwrap()), 7);
        assert_eq!(u32::from_be_bytes(sr[24..28].try_into().unwrap()), 7000);
    }
}
