//! One viewer's session: its `Rtc` and where it is in our streams.

use std::time::Instant;

use str0m::rtp::RtpWrite;
use str0m::{Event, IceConnectionState, Output, Rtc};

use super::offer::{Accepted, Track, ViewerId};
use super::rtp::Packet;

/// What polling a viewer produced for the engine.
pub enum Polled {
    /// ICE and DTLS are done: media may flow.
    Connected,
    /// The viewer asked for a keyframe (PLI/FIR).
    KeyframeRequest,
    /// The session is over.
    Disconnected,
}

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
    /// Where our audio goes, if asked for.
    audio: Option<Track>,
    /// Media may flow.
    pub connected: bool,
    /// Video is being sent (it starts at a keyframe).
    pub video_started: bool,
    /// Maps our extended sequence numbers to the viewer's, per stream, from the first packet
    /// sent: each viewer's sequence starts without a gap.
    video_seq: Option<(u64, u64)>,
    audio_seq: Option<(u64, u64)>,
    /// Video waiting to be sent: a replayed GOP, and live packets behind it so order holds.
    backlog: std::collections::VecDeque<Packet>,
    /// No media before this: the viewer may still be installing its SRTP keys when our DTLS
    /// side says connected, and would drop (and never count) what arrives first.
    hold_until: Option<Instant>,
    /// When str0m next wants a timeout.
    pub next_timeout: Instant,
    /// Last datagram from the viewer (or the join), to drop the silent and the never-connected.
    pub last_heard: Instant,
}

impl Viewer {
    /// Wraps an accepted offer.
    pub fn new(accepted: Accepted) -> Self {
        let now = Instant::now();
        Self {
            id: accepted.id,
            rtc: accepted.rtc,
            ufrag: accepted.ufrag,
            video: accepted.video,
            audio: accepted.audio,
            connected: false,
            video_started: false,
            video_seq: None,
            audio_seq: None,
            backlog: std::collections::VecDeque::new(),
            hold_until: None,
            next_timeout: now,
            last_heard: now,
        }
    }

    /// Writes a video packet (once video has started), behind any backlog.
    pub fn send_video(&mut self, packet: &Packet) {
        if !self.backlog.is_empty() || self.holding(Instant::now()) {
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

    /// Whether paced packets are waiting.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Writes up to `max` backlog packets; true if any were written.
    pub fn drain_backlog(&mut self, max: usize) -> bool {
        if self.holding(Instant::now()) {
            return false;
        }
        let n = max.min(self.backlog.len());
        for _ in 0..n {
            if let Some(packet) = self.backlog.pop_front() {
                self.write_video(&packet);
            }
        }
        n > 0
    }

    fn write_video(&mut self, packet: &Packet) {
        let track = self.video;
        let seq = Self::map(&mut self.video_seq, packet.seq);
        Self::write(&mut self.rtc, track, seq, packet);
    }

    /// Writes an audio packet (dropped while holding: audio needs no keyframe to start).
    pub fn send_audio(&mut self, packet: &Packet) {
        let Some(track) = self.audio else { return };
        if self.holding(Instant::now()) {
            return;
        }
        let seq = Self::map(&mut self.audio_seq, packet.seq);
        Self::write(&mut self.rtc, track, seq, packet);
    }

    fn map(state: &mut Option<(u64, u64)>, seq: u64) -> u64 {
        // Start at the packet's own 16-bit value with no rollover, as str0m expects.
        let (ours, theirs) = *state.get_or_insert((seq, seq & 0xffff));
        theirs + seq.saturating_sub(ours)
    }

    fn write(rtc: &mut Rtc, track: Track, seq: u64, packet: &Packet) {
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx(&track.ssrc) else {
            return;
        };
        stream.write_rtp(
            RtpWrite::new(
                track.pt,
                seq.into(),
                packet.timestamp,
                packet.at,
                packet.payload.clone(),
            )
            .marker(packet.marker)
            .nackable(true),
        );
    }

    /// Drains str0m's output up to the next timeout: datagrams go to `send` at once (no copy),
    /// events into `out`.
    pub fn poll(
        &mut self,
        send: &mut impl FnMut(std::net::SocketAddr, &[u8]),
        out: &mut Vec<Polled>,
    ) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => send(t.destination, &t.contents),
                Ok(Output::Event(event)) => match event {
                    Event::Connected => {
                        self.connected = true;
                        out.push(Polled::Connected);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        out.push(Polled::Disconnected);
                    }
                    Event::KeyframeRequest(_) => out.push(Polled::KeyframeRequest),
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
