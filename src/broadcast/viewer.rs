//! One viewer's session: its `Rtc`, where it is in our streams, and the pace of its backlog.
//!
//! Like the engine, a viewer takes `now` from the caller and never reads the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::net::Transmit;
use str0m::rtp::rtcp::{Nack, Rtcp};
use str0m::rtp::{RawPacket, RtpWrite};
use str0m::{Event, IceConnectionState, Input, Output, Reason, Rtc};

use super::adapt::Adapt;

use super::offer::{Accepted, Track, ViewerId};
use super::rtp::Packet;
use super::seats::Ticket;
use super::stream::RenditionId;
use super::{CONNECT_TIMEOUT, VIEWER_TIMEOUT, ViewerStats};

/// Media waits this long after DTLS completes on our side, while the viewer installs its
/// SRTP keys (webrtc-rs drops what comes earlier; so may browsers).
pub const MEDIA_GRACE: Duration = Duration::from_millis(25);

/// A replayed GOP goes out at most this many packets per [`REPLAY_TICK`]: a whole GOP at once
/// overflows a receiver's socket buffer (seen as loss at webrtc-rs), while this pace still
/// delivers a 2 s GOP in well under 100 ms.
pub const REPLAY_BURST: usize = 24;
/// See [`REPLAY_BURST`].
pub const REPLAY_TICK: Duration = Duration::from_millis(4);

/// A connected viewer silent this long gets no media until it is heard again. Every live
/// WebRTC receiver sends something at least every second or so (RTCP receiver reports; TWCC
/// feedback every 50-100 ms; consent checks), so this much silence means a closed tab or a
/// dead link: sending on until [`VIEWER_TIMEOUT`] cost as much as a watching viewer (in a
/// churn of 5 silent leavers a second, 75 such sessions beside 100 watching, and the fan-out
/// saturated).
pub const MEDIA_SILENCE: Duration = Duration::from_secs(3);

/// Packets kept for a viewer without RTX, to resend on its NACK: about 4 s of 720p video.
pub const RESEND_HISTORY: usize = 1024;

/// A pacer timeout this close is due now (str0m asks for one a microsecond after each packet).
const PACER_NOW: Duration = Duration::from_micros(10);
/// Packets released per poll at most: a bound on the loop, well above a keyframe's burst.
const MAX_PACED: usize = 512;
/// The spacing of the delay controller's wakes: it updates every 25 ms anyway, and while
/// video flows every packet sent wakes it too. At 5 ms these wakes were half of all the
/// `Rtc` timeouts of a party (perf, issue 12).
pub const BWE_TICK: Duration = Duration::from_millis(25);
/// The finer spacing while str0m probes the link: its probe clusters are paced in
/// milliseconds, and a wake 25 ms late would spread a probe too thin to measure anything.
pub const BWE_TICK_PROBING: Duration = Duration::from_millis(5);
/// How long str0m's probes may run after a restart of its estimator (its initial probes are
/// two clusters in the first second or so).
const PROBING_FOR: Duration = Duration::from_secs(3);

/// A timestamp step between renditions beyond this (one second at 90 kHz) means they are not
/// on one timestamp line.
const TIMESTAMP_JUMP: i32 = 90_000;

/// What polling a viewer produced for the engine.
pub enum Polled {
    /// ICE and DTLS are done: media may flow.
    Connected,
    /// The viewer asked for a keyframe (PLI/FIR).
    KeyframeRequest,
    /// str0m counted more NACKs received and packets resent (deltas since the last report).
    Repairs {
        /// NACK messages received.
        nacks: u64,
        /// Packets sent again (RTX).
        resent: u64,
    },
    /// str0m has a new estimate of what the viewer's link carries, in bit/s.
    Estimate(u64),
    /// TWCC feedback says this fraction of the last second's packets was lost.
    Loss(f32),
    /// The session is over.
    Disconnected,
}

/// A video packet sent to a viewer without RTX, kept to send again.
struct Sent {
    /// The sequence number the viewer saw.
    seq: u64,
    packet: Packet,
    /// Times sent again, and when last.
    resends: u8,
    last_resend: Option<Instant>,
}

/// A packet is sent again at most this many times: a viewer that keeps asking is past help
/// from resends, and every resend competes with the live stream for its link (seen: a
/// webrtc-rs viewer asking every 100 ms without end drew 800 resends a second into a
/// 1 Mbit/s link carrying 100 packets a second of video).
const MAX_RESENDS: u8 = 2;
/// And not again sooner than this after the last time: the first resend may still be on its
/// way.
const RESEND_SPACING: Duration = Duration::from_millis(100);

/// A viewer and its place in our streams.
pub struct Viewer {
    /// Session id.
    pub id: ViewerId,
    /// The sans-IO session.
    pub rtc: Rtc,
    /// Our ICE ufrag in the session.
    pub ufrag: String,
    /// Where our video goes.
    video: Track,
    /// The rendition it receives.
    pub rendition: RenditionId,
    /// The rendition it moves to at that rendition's next keyframe.
    pub pending: Option<RenditionId>,
    /// That move is down: its link is drowning, so nothing more of the old rendition is
    /// sent while it waits (the link drains, and the new keyframe gets through whole).
    pub pending_down: bool,
    /// Which rendition it should receive, from its link and its menu choice.
    pub adapt: Adapt,
    /// What its BWE was last told to probe for.
    desired_bps: u64,
    /// Added to the pipeline's RTP timestamps: zero while the renditions' timestamps run on
    /// one line, which they do (one offset for every payloader).
    ts_offset: u32,
    /// The last video timestamp and sequence number it was sent, and when.
    last_video: Option<(u32, u64, Instant)>,
    /// Its codec.
    pub codec: String,
    /// When media could first flow.
    pub connected_at: Option<Instant>,
    /// What it cost and asked for, for `/metrics`.
    counts: Counts,
    /// For a viewer without RTX: the video packets it was sent lately, with the sequence
    /// numbers it saw, oldest first.
    history: Option<VecDeque<Sent>>,
    /// Where our audio goes, if asked for.
    audio: Option<Track>,
    /// Media may flow.
    pub connected: bool,
    /// Video is being sent (it starts at a keyframe).
    pub video_started: bool,
    /// When its first video packet (a keyframe) was or will be sent.
    pub video_since: Option<Instant>,
    /// Maps our extended sequence numbers to the viewer's, per stream, from the first packet
    /// sent: each viewer's sequence starts without a gap.
    video_seq: Option<(u64, u64)>,
    audio_seq: Option<(u64, u64)>,
    /// The last audio sequence number it was sent.
    last_audio_seq: Option<u64>,
    /// Silent for [`MEDIA_SILENCE`]: no media until it is heard again.
    paused: bool,
    /// Back from a pause: the next packet of each kind carries on the viewer's sequence where
    /// it stopped, so the packets it was not sent are no gap to NACK.
    rejoin_video: bool,
    rejoin_audio: bool,
    /// Video waiting to be sent: a replayed GOP, and live packets behind it so order holds.
    backlog: VecDeque<Packet>,
    /// No media before this: the viewer may still be installing its SRTP keys when our DTLS
    /// side says connected, and would drop (and never count) what arrives first.
    hold_until: Option<Instant>,
    /// The backlog's next burst may not leave before this.
    next_burst: Instant,
    /// When str0m next wants a timeout.
    pub next_timeout: Instant,
    /// Until when str0m may be probing the link: its wakes are then spaced finer.
    probing_until: Instant,
    /// The earliest wake of this viewer the engine's timer queue holds, if any.
    pub scheduled: Option<Instant>,
    /// Last datagram from the viewer (or the join), to drop the silent.
    pub last_heard: Instant,
    /// When it joined: a viewer not connected [`CONNECT_TIMEOUT`] later is dropped, whatever
    /// it sends (STUN checks alone keep no pending place).
    joined_at: Instant,
    /// Its pending place, then its seat; given back when the viewer is dropped.
    pub ticket: Ticket,
}

impl Viewer {
    /// Wraps an accepted offer, handed over at `now`.
    pub fn new(accepted: Accepted, adapt: Adapt, ticket: Ticket, now: Instant) -> Self {
        Self {
            id: accepted.id,
            rtc: accepted.rtc,
            ufrag: accepted.ufrag,
            video: accepted.video,
            rendition: accepted.rendition,
            pending: None,
            pending_down: false,
            adapt,
            desired_bps: 0,
            ts_offset: 0,
            last_video: None,
            codec: accepted.codec,
            connected_at: None,
            counts: Counts::default(),
            history: accepted
                .plain_resend
                .then(|| VecDeque::with_capacity(RESEND_HISTORY)),
            audio: accepted.audio,
            connected: false,
            video_started: false,
            video_since: None,
            video_seq: None,
            audio_seq: None,
            last_audio_seq: None,
            paused: false,
            rejoin_video: false,
            rejoin_audio: false,
            backlog: VecDeque::new(),
            hold_until: None,
            next_burst: now,
            next_timeout: now,
            // str0m probes a new session's link at once.
            probing_until: now + PROBING_FOR,
            scheduled: None,
            last_heard: now,
            joined_at: now,
            ticket,
        }
    }

    /// Writes a video packet (once video has started), behind any backlog.
    pub fn send_video(&mut self, packet: &Packet, now: Instant) {
        if !self.backlog.is_empty() || self.holding(now) {
            self.backlog.push_back(packet.clone());
            return;
        }
        self.write_video(packet);
    }

    /// Queues packets (a cached GOP) to go out paced by [`Viewer::drain_backlog`].
    pub fn queue_backlog(&mut self, packets: &[Packet]) {
        self.backlog.extend(packets.iter().cloned());
    }

    /// Holds media back until `until`.
    pub fn hold(&mut self, until: Instant) {
        self.hold_until = Some(until);
    }

    fn holding(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| now < t)
    }

    /// Writes the backlog's next burst, if one is due at `now`; true if any packet was written.
    pub fn drain_backlog(&mut self, now: Instant) -> bool {
        if self.backlog.is_empty() || now < self.burst_due() {
            return false;
        }
        for _ in 0..REPLAY_BURST {
            let Some(packet) = self.backlog.pop_front() else {
                break;
            };
            self.write_video(&packet);
        }
        self.next_burst = now + REPLAY_TICK;
        true
    }

    /// When the backlog may next be drained: paced, and not before the grace after connecting.
    fn burst_due(&self) -> Instant {
        self.hold_until
            .map_or(self.next_burst, |t| t.max(self.next_burst))
    }

    /// When this viewer next needs the engine: an `Rtc` timeout, a burst of its backlog, or
    /// its drop for silence.
    pub fn deadline(&self) -> Instant {
        let mut at = self.next_timeout.min(self.expires());
        if !self.backlog.is_empty() {
            at = at.min(self.burst_due());
        }
        if let Some(adapt) = self.adapt.deadline() {
            at = at.min(adapt);
        }
        at
    }

    /// Whether the viewer has been silent too long at `now`, or did not connect in time.
    pub fn is_silent(&self, now: Instant) -> bool {
        now >= self.expires()
    }

    /// When it is dropped unless heard from (connected) or connected (pending) before.
    fn expires(&self) -> Instant {
        if self.connected {
            self.last_heard + VIEWER_TIMEOUT
        } else {
            (self.joined_at + CONNECT_TIMEOUT).min(self.last_heard + VIEWER_TIMEOUT)
        }
    }

    /// Closes the session as a peer should (RTCP BYE, DTLS close_notify), the datagrams that
    /// says so to `transmit`. The `Rtc` is of no further use.
    pub fn close(&mut self, transmit: &mut impl FnMut(Transmit)) {
        if self.rtc.close().is_err() {
            return;
        }
        // Bounded: a closing `Rtc` has a handful of datagrams to send, then says Timeout.
        for _ in 0..64 {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => transmit(t),
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => return,
            }
        }
    }

    fn write_video(&mut self, packet: &Packet) {
        self.counts.video_written += 1;
        if std::mem::take(&mut self.rejoin_video)
            && let Some((_, last_seq, _)) = self.last_video
        {
            self.video_seq = Some((packet.seq, last_seq + 1));
        }
        let track = self.video;
        let seq = Self::map(&mut self.video_seq, packet.seq);
        let timestamp = packet.timestamp.wrapping_add(self.ts_offset);
        self.last_video = Some((timestamp, seq, packet.at));
        Self::write_at(&mut self.rtc, track, seq, timestamp, packet);
        if let Some(history) = &mut self.history {
            if history.len() == RESEND_HISTORY {
                history.pop_front();
            }
            history.push_back(Sent {
                seq,
                packet: packet.clone(),
                resends: 0,
                last_resend: None,
            });
        }
    }

    /// Sends again, unchanged, the video packets a viewer without RTX reports lost.
    fn resend(&mut self, nack: &Nack, now: Instant) {
        let Some(history) = &mut self.history else {
            return;
        };
        if nack.ssrc != self.video.ssrc {
            return;
        }
        let lost = nack.reports.iter().flat_map(|entry| {
            let bits = (0..16u16).filter(move |bit| entry.blp & (1 << bit) != 0);
            std::iter::once(entry.pid).chain(bits.map(move |bit| entry.pid.wrapping_add(bit + 1)))
        });
        let mut again = Vec::new();
        for seq16 in lost {
            // Newest first: the 16-bit number names the latest packet that carries it.
            let Some(sent) = history.iter_mut().rev().find(|s| s.seq as u16 == seq16) else {
                continue;
            };
            let spaced = sent
                .last_resend
                .is_none_or(|t| now.saturating_duration_since(t) >= RESEND_SPACING);
            if sent.resends < MAX_RESENDS && spaced {
                sent.resends += 1;
                sent.last_resend = Some(now);
                again.push((sent.seq, sent.packet.clone()));
            }
        }
        for (seq, packet) in again {
            let timestamp = packet.timestamp.wrapping_add(self.ts_offset);
            Self::write_at(&mut self.rtc, self.video, seq, timestamp, &packet);
        }
    }

    /// Writes an audio packet (dropped while holding: audio needs no keyframe to start).
    pub fn send_audio(&mut self, packet: &Packet, now: Instant) {
        let Some(track) = self.audio else { return };
        if self.holding(now) {
            return;
        }
        if std::mem::take(&mut self.rejoin_audio)
            && let Some(last) = self.last_audio_seq
        {
            self.audio_seq = Some((packet.seq, last + 1));
        }
        let seq = Self::map(&mut self.audio_seq, packet.seq);
        self.last_audio_seq = Some(seq);
        Self::write_at(&mut self.rtc, track, seq, packet.timestamp, packet);
    }

    /// Whether media to it is withheld at `now`: it went silent for [`MEDIA_SILENCE`] (it is
    /// paused then, and its video restarts at a keyframe once it is heard again).
    pub fn is_withheld(&mut self, now: Instant) -> bool {
        if !self.paused && now.saturating_duration_since(self.last_heard) >= MEDIA_SILENCE {
            tracing::debug!(viewer = %self.id, "viewer silent: media paused until it is heard");
            self.paused = true;
            self.counts.pauses += 1;
            self.video_started = false;
            self.video_since = None;
            self.backlog.clear();
        }
        self.paused
    }

    /// Times its media was paused for silence.
    pub fn pauses(&self) -> u64 {
        self.counts.pauses
    }

    /// It was heard at `now`; true if that ends a pause (its video needs a new start).
    pub fn heard(&mut self, now: Instant) -> bool {
        self.last_heard = now;
        if !self.paused {
            return false;
        }
        self.paused = false;
        self.rejoin_video = true;
        self.rejoin_audio = true;
        true
    }

    /// Moves the viewer onto another rendition, whose keyframe `first` is the next packet it
    /// is sent. The browser must see one stream: the same SSRC (str0m's, per session), the
    /// sequence numbers running on from the last one sent, and timestamps always moving
    /// forward. The renditions share one timestamp line, so `first` normally keeps its own;
    /// when the new encoder is a frame ahead of or behind the old one, its timestamp is
    /// nudged just past the last one sent (a browser drops a frame older than one it has,
    /// and glues packets of equal H.264 timestamps into one frame).
    pub fn switch_to(&mut self, rendition: RenditionId, first: &Packet) {
        self.rendition = rendition;
        self.pending = None;
        self.pending_down = false;
        self.counts.switches += 1;
        // Whatever was queued of the old rendition is no use at the new one's keyframe.
        self.backlog.clear();
        let Some((last_ts, last_seq, last_at)) = self.last_video else {
            self.video_seq = None;
            return;
        };
        self.video_seq = Some((first.seq, last_seq + 1));
        let ahead = first.timestamp.wrapping_sub(last_ts) as i32;
        self.ts_offset = if ahead > 0 && ahead < TIMESTAMP_JUMP {
            0
        } else if ahead.unsigned_abs() < TIMESTAMP_JUMP as u32 {
            last_ts.wrapping_add(1).wrapping_sub(first.timestamp)
        } else {
            // Not on one line after all (another payloader's offset): carry on by the clock.
            let elapsed = first.at.saturating_duration_since(last_at);
            let ticks = (elapsed.as_secs_f64() * 90_000.0).max(1.0) as u32;
            last_ts.wrapping_add(ticks).wrapping_sub(first.timestamp)
        };
    }

    /// Probes its link: str0m's estimator restarts from `bps`, with its initial probes (see
    /// `adapt.rs` for why nothing else probes a viewer sending less than it could).
    pub fn probe_link(&mut self, now: Instant, bps: u64) {
        self.rtc.bwe().reset(Bitrate::bps(bps));
        self.probing_until = now + PROBING_FOR;
    }

    /// Tells its BWE what to probe for, when that changed.
    pub fn update_desired_bitrate(&mut self) {
        let desired = self.adapt.desired_bps();
        if self.adapt.has_choice() && desired != self.desired_bps {
            self.desired_bps = desired;
            self.rtc.bwe().set_desired_bitrate(Bitrate::bps(desired));
        }
    }

    fn map(state: &mut Option<(u64, u64)>, seq: u64) -> u64 {
        // Start at the packet's own 16-bit value with no rollover, as str0m expects.
        let (ours, theirs) = *state.get_or_insert((seq, seq & 0xffff));
        theirs + seq.saturating_sub(ours)
    }

    fn write_at(rtc: &mut Rtc, track: Track, seq: u64, timestamp: u32, packet: &Packet) {
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx(&track.ssrc) else {
            return;
        };
        stream.write_rtp(
            RtpWrite::new(
                track.pt,
                seq.into(),
                timestamp,
                packet.at,
                packet.payload.clone(),
            )
            .marker(packet.marker)
            .nackable(true),
        );
    }

    /// Counts a keyframe its page asked for (its picture froze), beside its PLIs and FIRs.
    pub fn count_page_keyframe_request(&mut self) {
        self.counts.keyframe_requests += 1;
    }

    /// Marks its video as starting at `at` (a keyframe goes out then).
    pub fn start_video(&mut self, at: Instant) {
        self.video_started = true;
        self.video_since = Some(at);
    }

    /// Whether a keyframe request (PLI/FIR) from this viewer at `now` is the one browsers send
    /// as video starts, and needs no keyframe: its video starts at one, or has not started yet.
    pub fn asks_at_start(&self, now: Instant) -> bool {
        self.video_since
            .is_none_or(|t| now < t + super::keyframes::START_REQUEST_GRACE)
    }

    /// Whether a keyframe this viewer asks for is urgent at `now`: it has only just started.
    pub fn is_starting(&self, now: Instant) -> bool {
        self.connected_at
            .is_none_or(|t| now.saturating_duration_since(t) < super::keyframes::URGENT_AFTER_START)
    }

    /// What `/metrics` and `/healthz` show of this viewer at `now`.
    pub fn stats(&self, now: Instant) -> ViewerStats {
        let c = &self.counts;
        ViewerStats {
            id: self.id.to_string(),
            codec: self.codec.clone(),
            connected: self.connected,
            connected_s: self
                .connected_at
                .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            video_packets: c.video_written,
            nacks_received: c.nacks,
            packets_resent: c.resent,
            keyframe_requests: c.keyframe_requests,
            loss: c.loss,
            rtt_ms: c.rtt.map(|d| d.as_secs_f64() * 1000.0),
            rendition: self.adapt.current().name.clone(),
            quality: self.adapt.quality().to_string(),
            estimate_kbps: self.adapt.estimate().map(|bps| bps / 1000),
            switches: c.switches,
            pauses: c.pauses,
        }
    }

    /// Drains str0m's output up to the next timeout: datagrams go to `transmit` as str0m made
    /// them (no copy), events into `out`.
    ///
    /// With bandwidth estimation on, str0m paces video: a packet written now leaves only after
    /// a timeout its pacer asks for a microsecond later. That timeout is handled here, at
    /// once, so a packet costs no extra wake of the socket loop. And str0m's delay controller
    /// asks to be woken every round trip while no TWCC report is fresh: on loopback that is
    /// every 0.1 ms, so its wakes are spaced by [`BWE_TICK`].
    pub fn poll(
        &mut self,
        now: Instant,
        transmit: &mut impl FnMut(Transmit),
        out: &mut Vec<Polled>,
    ) {
        let mut paced = 0;
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    let reason = self.rtc.last_timeout_reason();
                    if matches!(reason, Reason::Pacer(_))
                        && t <= now + PACER_NOW
                        && paced < MAX_PACED
                    {
                        paced += 1;
                        let _ = self.rtc.handle_input(Input::Timeout(now));
                        continue;
                    }
                    self.next_timeout = if matches!(reason, Reason::BweDelayControl) {
                        let tick = if now < self.probing_until {
                            BWE_TICK_PROBING
                        } else {
                            BWE_TICK
                        };
                        t.max(now + tick)
                    } else {
                        t
                    };
                    return;
                }
                Ok(Output::Transmit(t)) => transmit(t),
                Ok(Output::Event(event)) => match event {
                    Event::Connected => {
                        self.connected = true;
                        self.probing_until = now + PROBING_FOR;
                        out.push(Polled::Connected);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        out.push(Polled::Disconnected);
                    }
                    Event::KeyframeRequest(_) => {
                        self.counts.keyframe_requests += 1;
                        out.push(Polled::KeyframeRequest);
                    }
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                        out.push(Polled::Estimate(estimate.as_u64()));
                    }
                    Event::PeerStats(stats) => {
                        if let Some(loss) = stats.egress_loss_fraction.filter(|l| l.is_finite()) {
                            out.push(Polled::Loss(loss));
                        }
                    }
                    Event::RawPacket(raw) => {
                        if let RawPacket::RtcpRx(Rtcp::Nack(nack)) = &*raw {
                            self.resend(nack, now);
                        }
                    }
                    Event::MediaEgressStats(stats) if stats.mid == self.video.mid => {
                        if let Some(repairs) = self.counts.egress(stats.nacks, stats.packets) {
                            out.push(repairs);
                        }
                        self.counts.loss = stats.loss.or(self.counts.loss);
                        self.counts.rtt = stats.rtt.or(self.counts.rtt);
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(viewer = %self.id, error = %e, "viewer session failed");
                    self.rtc.disconnect();
                    out.push(Polled::Disconnected);
                    return;
                }
            }
        }
    }
}

/// A viewer's counters.
#[derive(Debug, Default)]
struct Counts {
    /// Video packets we wrote (first sends).
    video_written: u64,
    /// PLIs and FIRs it sent.
    keyframe_requests: u64,
    /// NACK messages it sent, as str0m last reported.
    nacks: u64,
    /// Video packets str0m sent beyond those we wrote: its RTX resends.
    resent: u64,
    /// Fraction lost, from its latest receiver reports.
    loss: Option<f32>,
    /// Round trip time, from its latest receiver report.
    rtt: Option<Duration>,
    /// Moves between renditions.
    switches: u64,
    /// Times its media was paused for silence.
    pauses: u64,
}

impl Counts {
    /// str0m's cumulative egress counts of the video stream: the repairs since the last call.
    ///
    /// str0m counts resends inside its packet total but does not report them apart; every
    /// packet we write goes out at once (no pacer in RTP mode), so what it sent beyond what we
    /// wrote is what it resent.
    fn egress(&mut self, nacks: u64, packets: u64) -> Option<Polled> {
        let resent = packets.saturating_sub(self.video_written).max(self.resent);
        let delta = (
            nacks.saturating_sub(self.nacks),
            resent.saturating_sub(self.resent),
        );
        self.nacks = self.nacks.max(nacks);
        self.resent = resent;
        (delta != (0, 0)).then_some(Polled::Repairs {
            nacks: delta.0,
            resent: delta.1,
        })
    }
}
