//! Where a viewer's video starts, and when the encoder is asked for a keyframe.
//!
//! Video can only be decoded from a keyframe, and keyframes are expensive (several times a
//! delta frame's size, for every viewer at once). Two small pieces of state decide:
//!
//! - [`KeyframeGate`] merges every keyframe request (viewers' PLI/FIR, joins that need one,
//!   packets we lost) into at most one forced keyframe per [`KEYFRAME_INTERVAL`]. A request
//!   inside the window is kept pending and forced when the window reopens.
//! - [`Gop`] keeps the packets since the latest keyframe, to replay to a viewer who joins now.
//!
//! [`start`] combines them into how a newly connected viewer starts: with a keyframe already on
//! its way, with the cached GOP, or with a keyframe forced for it.
//!
//! Everything here takes `now` from the caller and never reads the clock.

use std::time::{Duration, Instant};

use super::rtp::Packet;

/// At most one forced keyframe per this interval, however many viewers ask.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// A viewer that has just started may not wait the whole [`KEYFRAME_INTERVAL`] for a
/// keyframe it asks for (its first one was lost, or arrived undecodable): its requests are
/// merged over this shorter window.
pub const URGENT_INTERVAL: Duration = Duration::from_millis(200);

/// A keyframe request this soon after a viewer's video started is not answered: Chromium asks
/// for one as its video starts, whatever it got, and every viewer would pay for each join's
/// keyframe. A viewer whose first keyframe really did not decode asks again after this.
pub const START_REQUEST_GRACE: Duration = Duration::from_millis(300);

/// How long after connecting a viewer's keyframe requests count as urgent.
pub const URGENT_AFTER_START: Duration = Duration::from_secs(3);

/// A cached keyframe younger than this is replayed to a new viewer instead of forcing one:
/// the replay is short, and the encoder is spared a keyframe.
pub const GOP_REPLAY_AGE: Duration = Duration::from_millis(500);

/// A forced keyframe normally leaves the encoder within a frame or two; past this we stop
/// waiting for it.
pub const KEYFRAME_IN_FLIGHT: Duration = Duration::from_millis(300);

/// Cap of the cached GOP, in packets (2 s of 720p at a high bitrate).
pub const GOP_CAP: usize = 4096;

/// The merge window of forced keyframes.
#[derive(Debug, Default)]
pub struct KeyframeGate {
    /// When the encoder was last asked for a keyframe.
    last_forced: Option<Instant>,
    /// A request arrived while the window was closed: the window it waits for.
    pending: Option<Duration>,
}

impl KeyframeGate {
    /// Whether a keyframe may be forced at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        self.open_for(now, KEYFRAME_INTERVAL)
    }

    fn open_for(&self, now: Instant, window: Duration) -> bool {
        self.last_forced
            .is_none_or(|t| now.saturating_duration_since(t) >= window)
    }

    /// Someone needs a keyframe: true if one should be forced now, else it is kept pending.
    /// An `urgent` request (a viewer that has just started) waits at most
    /// [`URGENT_INTERVAL`] after the previous keyframe instead of [`KEYFRAME_INTERVAL`].
    pub fn request(&mut self, now: Instant, urgent: bool) -> bool {
        let window = if urgent {
            URGENT_INTERVAL
        } else {
            KEYFRAME_INTERVAL
        };
        self.pending = Some(self.pending.map_or(window, |w| w.min(window)));
        self.poll(now)
    }

    /// True if a pending request should be forced now (its window has reopened).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.pending {
            Some(window) if self.open_for(now, window) => {
                self.pending = None;
                self.last_forced = Some(now);
                true
            }
            _ => false,
        }
    }

    /// When a pending request will be forced, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        // Pending implies a keyframe was forced: the first request always finds the window open.
        Some(self.last_forced? + self.pending?)
    }

    /// Whether a forced keyframe is still on its way at `now`: asked for recently, and no
    /// GOP has started since (`gop_started`), so the next keyframe out of the encoder is it.
    pub fn in_flight(&self, now: Instant, gop_started: Option<Instant>) -> bool {
        self.last_forced.is_some_and(|forced| {
            now.saturating_duration_since(forced) < KEYFRAME_IN_FLIGHT
                && gop_started.is_none_or(|gop| gop < forced)
        })
    }
}

/// The group of pictures since the latest keyframe.
#[derive(Debug, Default)]
pub struct Gop {
    /// Its packets, from the keyframe on (up to [`GOP_CAP`]).
    packets: Vec<Packet>,
    /// When its keyframe arrived.
    started: Option<Instant>,
    /// The previous packet was part of a keyframe: a keyframe spans several packets, and only
    /// its first one starts a GOP.
    last_was_key: bool,
}

impl Gop {
    /// Adds the next video packet; true if it starts a new GOP.
    pub fn push(&mut self, packet: &Packet) -> bool {
        let starts = packet.keyframe && !self.last_was_key;
        self.last_was_key = packet.keyframe;
        if starts {
            tracing::debug!(previous_len = self.packets.len(), "keyframe: new GOP");
            self.packets.clear();
            self.started = Some(packet.at);
        }
        if self.packets.len() < GOP_CAP {
            self.packets.push(packet.clone());
        }
        starts
    }

    /// The cached packets, keyframe first (empty before the first keyframe).
    pub fn packets(&self) -> &[Packet] {
        if self.is_cached() { &self.packets } else { &[] }
    }

    /// Whether a GOP is cached, starting at a keyframe.
    pub fn is_cached(&self) -> bool {
        self.packets.first().is_some_and(|p| p.keyframe)
    }

    /// When the cached GOP's keyframe arrived.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Whether the cached GOP is young enough to replay in preference to forcing a keyframe.
    pub fn is_young(&self, now: Instant) -> bool {
        self.started
            .is_some_and(|t| now.saturating_duration_since(t) < GOP_REPLAY_AGE)
    }
}

/// How a viewer whose media may flow starts its video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A forced keyframe is on its way: start with it.
    InFlight,
    /// Replay the cached GOP, paced, then go on live.
    Replay,
    /// Start at the next keyframe, and ask the gate for one.
    Force,
}

/// How a viewer connecting at `now` starts. It starts at the next keyframe when one is on its
/// way or can be forced now (the window is open); otherwise from the cached GOP rather than
/// waiting up to [`KEYFRAME_INTERVAL`] for the window to reopen. A young GOP is replayed
/// even when a keyframe could be forced.
pub fn start(now: Instant, gate: &KeyframeGate, gop: &Gop) -> Start {
    if gate.in_flight(now, gop.started()) {
        return Start::InFlight;
    }
    if gop.is_cached() && (gop.is_young(now) || !gate.is_open(now)) {
        Start::Replay
    } else {
        Start::Force
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn packet(seq: u64, keyframe: bool, at: Instant) -> Packet {
        Packet {
            seq,
            timestamp: 0,
            marker: false,
            payload: Arc::from(&[0u8][..]),
            keyframe,
            at,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn requests_in_a_window_force_one_keyframe_and_the_rest_waits_for_the_next() {
        let t0 = Instant::now();
        let mut gate = KeyframeGate::default();
        assert_eq!(gate.deadline(), None);
        assert!(gate.request(t0, false), "the first request forces at once");
        assert_eq!(gate.deadline(), None, "nothing pending");
        for i in 1..10 {
            assert!(!gate.request(t0 + ms(i * 50), false), "merged");
        }
        assert_eq!(gate.deadline(), Some(t0 + KEYFRAME_INTERVAL));
        assert!(!gate.poll(t0 + KEYFRAME_INTERVAL - ms(1)));
        assert!(
            gate.poll(t0 + KEYFRAME_INTERVAL),
            "pending one forced on reopening"
        );
        assert!(!gate.poll(t0 + KEYFRAME_INTERVAL * 3), "and only once");
        assert_eq!(gate.deadline(), None);
    }

    #[test]
    fn an_urgent_request_waits_only_the_short_window() {
        let t0 = Instant::now();
        let mut gate = KeyframeGate::default();
        assert!(gate.request(t0, false));
        assert!(
            !gate.request(t0 + ms(50), false),
            "an ordinary one is merged"
        );
        assert_eq!(gate.deadline(), Some(t0 + KEYFRAME_INTERVAL));
        assert!(
            !gate.request(t0 + ms(60), true),
            "too soon even for a new viewer"
        );
        assert_eq!(
            gate.deadline(),
            Some(t0 + URGENT_INTERVAL),
            "brought forward"
        );
        assert!(
            gate.poll(t0 + URGENT_INTERVAL),
            "forced when the short window ends"
        );
        assert_eq!(
            gate.deadline(),
            None,
            "the ordinary one is served by it too"
        );
        assert!(
            gate.request(t0 + URGENT_INTERVAL * 2, true),
            "open again for the urgent"
        );
    }

    #[test]
    fn a_keyframe_is_in_flight_until_a_gop_starts_or_it_is_late() {
        let t0 = Instant::now();
        let mut gate = KeyframeGate::default();
        assert!(!gate.in_flight(t0, None), "nothing asked");
        assert!(gate.request(t0, false));
        assert!(gate.in_flight(t0 + ms(10), None));
        assert!(
            gate.in_flight(t0 + ms(10), Some(t0 - ms(5))),
            "an older GOP"
        );
        assert!(
            !gate.in_flight(t0 + ms(50), Some(t0 + ms(40))),
            "it arrived"
        );
        assert!(
            !gate.in_flight(t0 + KEYFRAME_IN_FLIGHT, None),
            "given up on"
        );
    }

    #[test]
    fn a_gop_starts_at_the_first_packet_of_a_keyframe() {
        let t0 = Instant::now();
        let mut gop = Gop::default();
        assert!(!gop.push(&packet(1, false, t0)), "no keyframe yet");
        assert!(!gop.is_cached());
        assert!(gop.packets().is_empty());
        assert!(gop.push(&packet(2, true, t0 + ms(1))));
        assert!(!gop.push(&packet(3, true, t0 + ms(1))), "same keyframe");
        assert!(!gop.push(&packet(4, false, t0 + ms(2))));
        let seqs: Vec<u64> = gop.packets().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(gop.started(), Some(t0 + ms(1)));
        assert!(gop.is_young(t0 + ms(1) + GOP_REPLAY_AGE - ms(1)));
        assert!(!gop.is_young(t0 + ms(1) + GOP_REPLAY_AGE));
        assert!(gop.push(&packet(5, true, t0 + ms(900))), "next keyframe");
        assert_eq!(gop.packets().len(), 1);
    }

    #[test]
    fn the_gop_cache_is_capped() {
        let t0 = Instant::now();
        let mut gop = Gop::default();
        gop.push(&packet(0, true, t0));
        for seq in 1..(GOP_CAP as u64 + 100) {
            gop.push(&packet(seq, false, t0));
        }
        assert_eq!(gop.packets().len(), GOP_CAP);
        assert_eq!(gop.packets().last().unwrap().seq, GOP_CAP as u64 - 1);
    }

    #[test]
    fn how_a_viewer_starts() {
        let t0 = Instant::now();
        let mut gate = KeyframeGate::default();
        let mut gop = Gop::default();
        assert_eq!(start(t0, &gate, &gop), Start::Force, "nothing cached");

        gop.push(&packet(1, true, t0));
        assert_eq!(start(t0 + ms(100), &gate, &gop), Start::Replay, "young GOP");
        assert_eq!(
            start(t0 + GOP_REPLAY_AGE, &gate, &gop),
            Start::Force,
            "old GOP, open window"
        );

        let forced = t0 + GOP_REPLAY_AGE;
        assert!(gate.request(forced, false));
        assert_eq!(start(forced + ms(10), &gate, &gop), Start::InFlight);
        gop.push(&packet(2, false, forced + ms(20)));
        assert_eq!(
            start(forced + ms(20), &gate, &gop),
            Start::InFlight,
            "a delta is not the keyframe asked for"
        );
        assert_eq!(
            start(forced + KEYFRAME_IN_FLIGHT, &gate, &gop),
            Start::Replay,
            "late keyframe, closed window: old GOP rather than waiting"
        );
        gop.push(&packet(3, true, forced + ms(40)));
        assert_eq!(
            start(forced + ms(50), &gate, &gop),
            Start::Replay,
            "the forced keyframe arrived: replay it"
        );
    }
}
