//! The fan-out, sans-IO: every viewer's `Rtc`, the routing of datagrams to them, and where
//! each viewer's video starts.
//!
//! The engine never reads the clock, never touches a socket and never calls the pipeline.
//! Every input carries `now`; what the engine wants done comes out of [`Engine::poll_output`]
//! as data, as str0m's own `Rtc` does:
//!
//! ```text
//!  inputs (each with now)                       outputs (poll_output until Timeout)
//!  join(Accepted) / leave(id)           ┌────────┐
//!  handle_datagram(source, bytes) ───▶  │ Engine │ ───▶ Transmit(destination, bytes)
//!  handle_video(rendition, rtp)         └────────┘      RequestKeyframe(rendition)
//!  handle_audio(rtp), handle_video_lost                 SetActive(rendition, on/off)
//!  request_keyframe(id), handle_timeout                 Timeout(when to call handle_timeout)
//! ```
//!
//! Each rendition of the video (H.264, and VP8 for browsers without it) is a [`Stream`] with
//! its own GOP cache and keyframe gate; a viewer receives one of them, chosen at its offer.
//!
//! The socket loop (`run.rs`) owns time and I/O and executes the outputs; tests drive the same
//! engine on a virtual clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::Input;
use str0m::net::{Protocol, Receive, Transmit};

use super::adapt::{Adapt, Step};
use super::keyframes::{self, Start};
use super::load::Load;
use super::offer::{Accepted, ViewerId};
use super::quality::Quality;
use super::rtp::{self, SeqUnwrapper};
use super::seats::Ticket;
use super::stream::{Rendition, RenditionId, Stream};
use super::viewer::{MEDIA_GRACE, Polled, Viewer};
use super::{RenditionState, Stats, ViewerStats, stun};

/// The latest deadline we give: `Output::Timeout` always names an instant, even with nothing
/// scheduled (no viewers), and a wake a second costs nothing.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// How often every viewer is visited whatever its timer says: a net under any path that moves
/// a viewer's deadline earlier without rescheduling it, so such a miss costs at most this.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What the engine wants done, in the order it wants it.
#[derive(Debug)]
pub enum Output {
    /// Send this datagram (str0m's buffer, handed over without a copy).
    Transmit(Transmit),
    /// Ask this rendition's encoder for a keyframe now (already merged per its gate).
    RequestKeyframe(RenditionId),
    /// Start (true) or stop this on-demand rendition's encoder.
    SetActive(RenditionId, bool),
    /// Nothing more to do until this time, or until the next input.
    Timeout(Instant),
}

/// State of the fan-out: one per party.
pub struct Engine {
    /// The address in our candidate: str0m needs it as the destination of what we receive.
    local: SocketAddr,
    /// Counters for `/metrics`, shared with the web side.
    stats: Arc<Stats>,
    viewers: HashMap<ViewerId, Viewer>,
    /// STUN requests name our ufrag: how a datagram from a new address finds its viewer.
    by_ufrag: HashMap<String, ViewerId>,
    /// Every later datagram is routed by its source address.
    by_addr: HashMap<SocketAddr, ViewerId>,
    /// The renditions of the video, the main one first.
    streams: Vec<Stream>,
    /// How long an on-demand rendition runs on after its last viewer left.
    linger: Duration,
    audio_seq: SeqUnwrapper,
    /// Datagrams waiting for [`Engine::poll_output`].
    transmits: VecDeque<Transmit>,
    /// Requests to the pipeline waiting for [`Engine::poll_output`], before any datagram.
    controls: VecDeque<Output>,
    /// The latest `now` we were given: the base of [`IDLE_WAKE`].
    last_now: Instant,
    /// Reused buffers: events from polling a viewer, and the ids of viewers being visited.
    polled: Vec<Polled>,
    ids: Vec<ViewerId>,
    /// When each viewer next needs a visit, earliest first. Entries go stale when a deadline
    /// moves later (a visit then finds nothing due and reschedules); one is pushed whenever a
    /// deadline moves earlier than the viewer's earliest entry. A wake thus costs the viewers
    /// due, not every viewer: with hundreds watching, visiting all at every wake (and
    /// recomputing the earliest deadline after every packet) grew as viewers squared.
    timers: BinaryHeap<Reverse<(Instant, ViewerId)>>,
    /// When every viewer is next visited regardless ([`SWEEP_EVERY`]).
    next_sweep: Instant,
    /// Whether the fan-out keeps up with the encoder.
    load: Load,
}

impl Engine {
    /// An engine started at `now`, whose viewers send to `local` (the advertised address),
    /// counting in `stats`, sending `renditions` (the main one first; on-demand ones run
    /// until `linger` after their last viewer).
    pub fn new(
        now: Instant,
        local: SocketAddr,
        stats: Arc<Stats>,
        renditions: Vec<Rendition>,
        linger: Duration,
    ) -> Self {
        Self {
            local,
            stats,
            viewers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            streams: renditions.into_iter().map(Stream::new).collect(),
            linger,
            audio_seq: SeqUnwrapper::default(),
            transmits: VecDeque::new(),
            controls: VecDeque::new(),
            last_now: now,
            polled: Vec::new(),
            ids: Vec::new(),
            timers: BinaryHeap::new(),
            next_sweep: now + SWEEP_EVERY,
            load: Load::new(now),
        }
    }

    /// The next thing to do. Call until it returns [`Output::Timeout`], after every input.
    pub fn poll_output(&mut self) -> Output {
        if let Some(control) = self.controls.pop_front() {
            return control;
        }
        if let Some(transmit) = self.transmits.pop_front() {
            return Output::Transmit(transmit);
        }
        Output::Timeout(self.deadline())
    }

    /// When [`Engine::handle_timeout`] is next due.
    fn deadline(&self) -> Instant {
        let linger = self.linger;
        self.timers
            .peek()
            .map(|Reverse((at, _))| *at)
            .into_iter()
            .chain(self.streams.iter().filter_map(|s| s.gate.deadline()))
            .chain(self.streams.iter().filter_map(|s| s.deadline(linger)))
            .fold(self.next_sweep.min(self.last_now + IDLE_WAKE), Instant::min)
    }

    /// Makes sure viewer `id` is visited by its deadline, after something may have moved it.
    fn schedule(&mut self, id: ViewerId) {
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        let at = viewer.deadline();
        if viewer.scheduled.is_none_or(|earliest| at < earliest) {
            viewer.scheduled = Some(at);
            self.timers.push(Reverse((at, id)));
        }
    }

    /// The viewers due at `now`, each once, into `due`; all of them when a sweep is due.
    fn take_due(&mut self, now: Instant, due: &mut Vec<ViewerId>) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(viewer) = self.viewers.get_mut(&id) {
                if viewer.scheduled == Some(at) {
                    viewer.scheduled = None;
                }
                due.push(id);
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            due.clear();
            due.extend(self.viewers.keys().copied());
            // Stale entries of viewers gone pile up otherwise; live ones are pushed again
            // by the visit.
            self.timers.clear();
            for viewer in self.viewers.values_mut() {
                viewer.scheduled = None;
            }
        }
        due.sort_unstable();
        due.dedup();
    }

    /// A viewer whose offer was accepted joins at `now`, holding `ticket`'s pending place.
    ///
    /// Its keyframe is asked for now, not when ICE and DTLS are done: the encoder's delay
    /// then overlaps the handshake, and the viewer connects to a young GOP (or one in flight).
    pub fn join(&mut self, now: Instant, accepted: Accepted, ticket: Ticket) {
        self.tick(now);
        let adapt = Adapt::new(self.ladder(&accepted.codec), accepted.rendition);
        let mut viewer = Viewer::new(accepted, adapt, ticket, now);
        viewer.update_desired_bitrate();
        tracing::info!(viewer = %viewer.id, codec = %viewer.codec, "viewer joined");
        self.by_ufrag.insert(viewer.ufrag.clone(), viewer.id);
        let id = viewer.id;
        let rendition = viewer.rendition;
        self.viewers.insert(id, viewer);
        if let Some(s) = self.stream_index(rendition) {
            let stream = &mut self.streams[s];
            if stream.add_viewer() {
                tracing::info!(rendition = ?rendition, codec = %stream.rendition.codec, "starting an on-demand rendition");
                self.controls.push_back(Output::SetActive(rendition, true));
                self.request_keyframe(now, s, false);
            } else if keyframes::start(now, &stream.gate, &stream.gop) == Start::Force {
                self.request_keyframe(now, s, false);
            }
        }
        self.poll(id, now);
    }

    /// The renditions a viewer decoding `codec` can be moved between.
    fn ladder(&self, codec: &str) -> Vec<Step> {
        self.streams
            .iter()
            .map(|s| &s.rendition)
            .filter(|r| r.codec == codec)
            .map(|r| Step::new(r.id, &r.name, r.height, r.bitrate_kbps))
            .collect()
    }

    /// Viewer `id` picked `quality` in its menu; false if there is no such viewer.
    pub fn set_quality(&mut self, now: Instant, id: ViewerId, quality: Quality) -> bool {
        self.tick(now);
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return false;
        };
        tracing::info!(viewer = %id, %quality, "viewer picked a quality");
        let target = viewer.adapt.set_quality(now, quality);
        viewer.update_desired_bitrate();
        if let Some(target) = target {
            // The viewer's own choice: its link is fine, its picture runs until the switch.
            self.begin_switch(now, id, target, false);
        }
        self.poll(id, now);
        true
    }

    /// Asks viewer `id`'s controller whether it should move, and starts the move.
    fn adapt(&mut self, now: Instant, id: ViewerId) {
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        if let Some(bps) = viewer.adapt.poll_probe(now) {
            tracing::debug!(viewer = %id, kbps = bps / 1000, "probing a viewer's link for headroom");
            viewer.probe_link(now, bps);
        }
        if let Some(target) = viewer.adapt.poll(now) {
            // Why it moved, for whoever reads the log after a viewer says the picture went soft.
            tracing::info!(
                viewer = %id,
                estimate_kbps = viewer.adapt.estimate().map(|bps| bps / 1000),
                "the link estimate moves a viewer",
            );
            viewer.update_desired_bitrate();
            self.begin_switch(now, id, target, true);
        }
        self.schedule(id);
    }

    /// Starts moving viewer `id` to `target`: the target's encoder runs and is asked for a
    /// keyframe, and the viewer moves over at that keyframe (see [`Engine::handle_video`]).
    /// Until then it keeps receiving what it had, so the picture never stops for a switch;
    /// except when `drain` and the move is down: its link is drowning in what it had, and
    /// the new keyframe gets through whole only once that stops.
    fn begin_switch(&mut self, now: Instant, id: ViewerId, target: RenditionId, drain: bool) {
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        let previous = viewer.pending.take();
        let from = viewer.rendition;
        let started = viewer.video_started;
        let down = self
            .streams
            .iter()
            .find(|s| s.rendition.id == target)
            .zip(self.streams.iter().find(|s| s.rendition.id == from))
            .is_some_and(|(t, f)| t.rendition.bitrate_kbps < f.rendition.bitrate_kbps);
        tracing::info!(viewer = %id, from = ?from, to = ?target, "switching rendition");
        if target == from {
            // Back to where it is before the move happened: nothing to wait for.
            if let Some(p) = previous.and_then(|p| self.stream_index(p)) {
                self.streams[p].remove_viewer(now);
            }
            if let Some(viewer) = self.viewers.get_mut(&id) {
                viewer.pending_down = false;
            }
            return;
        }
        if previous != Some(target) {
            if let Some(p) = previous.and_then(|p| self.stream_index(p)) {
                self.streams[p].remove_viewer(now);
            }
            let Some(s) = self.stream_index(target) else {
                return;
            };
            if self.streams[s].add_viewer() {
                tracing::info!(rendition = ?target, "starting an on-demand rendition");
                self.controls.push_back(Output::SetActive(target, true));
            }
        }
        let Some(s) = self.stream_index(target) else {
            return;
        };
        if let Some(viewer) = self.viewers.get_mut(&id) {
            if started {
                viewer.pending = Some(target);
                viewer.pending_down = down && drain;
            } else {
                // No picture yet: it simply starts on the target.
                viewer.rendition = target;
                if let Some(f) = self.stream_index(from) {
                    self.streams[f].remove_viewer(now);
                }
            }
        }
        // A viewer stepping down is struggling: its keyframe is as urgent as a starting one.
        self.request_keyframe(now, s, down);
    }

    /// The position of `rendition` in `streams`.
    fn stream_index(&self, rendition: RenditionId) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.rendition.id == rendition)
    }

    /// Viewer `id`'s page asks for a keyframe (it saw the picture freeze); false if there is
    /// no such viewer.
    pub fn page_keyframe_request(&mut self, now: Instant, id: ViewerId) -> bool {
        match self.viewers.get_mut(&id) {
            Some(viewer) => viewer.count_page_keyframe_request(),
            None => return false,
        }
        self.request_keyframe_for(now, id)
    }

    /// Someone fed the main rendition outside this engine (a Janus edge) needs a keyframe:
    /// merged through the main stream's gate with every viewer's requests.
    pub fn main_keyframe_request(&mut self, now: Instant) {
        self.tick(now);
        if !self.streams.is_empty() {
            self.request_keyframe(now, 0, false);
        }
    }

    /// Viewer `id` needs a keyframe; false if there is no such viewer.
    fn request_keyframe_for(&mut self, now: Instant, id: ViewerId) -> bool {
        self.tick(now);
        let Some(viewer) = self.viewers.get(&id) else {
            return false;
        };
        let urgent = viewer.is_starting(now);
        // A viewer moving elsewhere needs its keyframe there.
        if let Some(s) = self.stream_index(viewer.pending.unwrap_or(viewer.rendition)) {
            self.request_keyframe(now, s, urgent);
        }
        true
    }

    /// What every viewer costs and asks for, at `now`.
    pub fn viewer_stats(&self, now: Instant) -> Vec<ViewerStats> {
        let mut all: Vec<ViewerStats> = self.viewers.values().map(|v| v.stats(now)).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Ends a viewer's session; false if there is no such viewer.
    pub fn leave(&mut self, now: Instant, id: ViewerId) -> bool {
        self.tick(now);
        self.remove(id)
    }

    /// Ends every session (the party is over).
    pub fn close(&mut self) {
        for (_, mut viewer) in self.viewers.drain() {
            viewer.rtc.disconnect();
        }
        self.by_ufrag.clear();
        self.by_addr.clear();
    }

    /// A datagram from `source` arrived on our socket at `now`.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.tick(now);
        let id = match stun::local_ufrag(data) {
            Some(ufrag) => {
                let Some(id) = self.by_ufrag.get(ufrag).copied() else {
                    return;
                };
                // Browsers hide their address behind mDNS: the first STUN request tells us
                // where they really are (a peer-reflexive candidate).
                self.by_addr.insert(source, id);
                id
            }
            None => match self.by_addr.get(&source) {
                Some(id) => *id,
                None => return,
            },
        };
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        if viewer.heard(now) {
            tracing::info!(viewer = %id, "viewer heard again: media resumes at a keyframe");
            self.start_video(id, now, true);
        }
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, data) else {
            return;
        };
        let input = Input::Receive(now, receive);
        if viewer.rtc.accepts(&input) {
            if let Err(e) = viewer.rtc.handle_input(input) {
                tracing::debug!(viewer = %id, error = %e, "bad input from viewer");
            }
            self.poll(id, now);
        }
    }

    /// A video RTP packet of `rendition`, which the pipeline made at `made`, is taken at `now`;
    /// `keyframe` if it is part of one.
    pub fn handle_video(
        &mut self,
        now: Instant,
        rendition: RenditionId,
        data: &[u8],
        keyframe: bool,
        made: Instant,
    ) {
        self.tick(now);
        self.measure_load(now, made);
        let Some(s) = self.stream_index(rendition) else {
            return;
        };
        let stream = &mut self.streams[s];
        let Some(packet) = rtp::parse(data, keyframe, &mut stream.seq, now) else {
            return;
        };
        let gop_start = stream.gop.push(&packet);
        let mut left = Vec::new();
        self.fan_out(now, |viewer| {
            if gop_start && viewer.pending == Some(rendition) {
                left.push(viewer.rendition);
                viewer.switch_to(rendition, &packet);
            }
            if viewer.rendition != rendition || (viewer.pending.is_some() && viewer.pending_down) {
                return false;
            }
            // A viewer's video starts at a keyframe: the first GOP after it connected, unless
            // a cached one was queued for it already.
            if !viewer.video_started && gop_start {
                viewer.start_video(now);
            }
            if viewer.video_started {
                viewer.send_video(&packet, now);
            }
            viewer.video_started
        });
        for from in left {
            if let Some(s) = self.stream_index(from) {
                self.streams[s].remove_viewer(now);
            }
        }
    }

    /// Notes how late the fan-out takes a packet made at `made`, and turns new viewers away
    /// while it cannot keep up.
    fn measure_load(&mut self, now: Instant, made: Instant) {
        if self.load.on_video(now, made) {
            let saturated = self.load.is_saturated();
            let lag_ms = self.load.worst_lag().as_millis();
            if saturated {
                tracing::warn!(
                    lag_ms,
                    viewers = self.viewers.len(),
                    "the fan-out cannot keep up with the encoder: new viewers are turned away until it does"
                );
            } else {
                tracing::info!(
                    lag_ms,
                    viewers = self.viewers.len(),
                    "the fan-out keeps up again: new viewers are welcome"
                );
            }
            self.stats.saturated.store(saturated, Ordering::Relaxed);
        }
        let lag = self.load.worst_lag().as_millis() as u64;
        self.stats.fanout_lag_ms.store(lag, Ordering::Relaxed);
    }

    /// Video packets of `rendition` were lost on their way to us (we fell behind the
    /// pipeline): its viewers need a fresh keyframe.
    pub fn handle_video_lost(&mut self, now: Instant, rendition: RenditionId, packets: u64) {
        self.tick(now);
        self.stats
            .video_lagged
            .fetch_add(packets, Ordering::Relaxed);
        if let Some(s) = self.stream_index(rendition) {
            self.request_keyframe(now, s, false);
        }
    }

    /// An audio RTP packet left the pipeline at `now`.
    pub fn handle_audio(&mut self, now: Instant, data: &[u8]) {
        self.tick(now);
        let Some(packet) = rtp::parse(data, false, &mut self.audio_seq, now) else {
            return;
        };
        self.fan_out(now, |viewer| {
            viewer.send_audio(&packet, now);
            true
        });
    }

    /// Offers a packet to every connected viewer through `write`, and polls those it wrote
    /// to. The id list is a reused buffer: a packet costs no allocation, however many watch.
    fn fan_out(&mut self, now: Instant, mut write: impl FnMut(&mut Viewer) -> bool) {
        let mut ids = std::mem::take(&mut self.ids);
        ids.extend(self.viewers.keys().copied());
        for &id in &ids {
            let wrote = self.viewers.get_mut(&id).is_some_and(|viewer| {
                if !viewer.connected {
                    return false;
                }
                let pauses = viewer.pauses();
                if viewer.is_withheld(now) {
                    if viewer.pauses() != pauses {
                        self.stats.media_pauses.fetch_add(1, Ordering::Relaxed);
                    }
                    return false;
                }
                write(viewer)
            });
            if wrote {
                self.poll(id, now);
            }
        }
        ids.clear();
        self.ids = ids;
    }

    /// Time has passed: str0m's timers, paced replays, silent viewers, a pending keyframe.
    /// Harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        let mut expired = Vec::new();
        let mut ids = std::mem::take(&mut self.ids);
        self.take_due(now, &mut ids);
        for &id in &ids {
            let Some(viewer) = self.viewers.get_mut(&id) else {
                continue;
            };
            if !viewer.rtc.is_alive() || viewer.is_silent(now) {
                expired.push(id);
                continue;
            }
            let replayed = viewer.drain_backlog(now);
            let adapt_due = viewer.adapt.deadline().is_some_and(|t| t <= now);

            if replayed || viewer.next_timeout <= now {
                let _ = viewer.rtc.handle_input(Input::Timeout(now));
                self.poll(id, now);
            }
            if adapt_due {
                self.adapt(now, id);
            }
            self.schedule(id);
        }
        ids.clear();
        self.ids = ids;
        for id in expired {
            tracing::info!(viewer = %id, "viewer timed out");
            self.remove(id);
        }
        for s in 0..self.streams.len() {
            if self.streams[s].gate.poll(now) {
                self.force_keyframe(s);
            }
            let linger = self.linger;
            let stream = &mut self.streams[s];
            if stream.poll_stop(now, linger) {
                tracing::info!(rendition = ?stream.rendition.id, codec = %stream.rendition.codec, "stopping an on-demand rendition: nobody receives it");
                self.controls
                    .push_back(Output::SetActive(stream.rendition.id, false));
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        self.last_now = now;
    }

    fn remove(&mut self, id: ViewerId) -> bool {
        let Some(mut viewer) = self.viewers.remove(&id) else {
            return false;
        };
        viewer.rtc.disconnect();
        self.by_ufrag.remove(&viewer.ufrag);
        self.by_addr.retain(|_, v| *v != id);
        for r in std::iter::once(viewer.rendition).chain(viewer.pending) {
            if let Some(s) = self.stream_index(r) {
                self.streams[s].remove_viewer(self.last_now);
            }
        }
        self.stats.viewers.fetch_sub(1, Ordering::AcqRel);
        if viewer.ticket.is_seated() {
            self.stats.connected.fetch_sub(1, Ordering::AcqRel);
        }
        tracing::info!(viewer = %id, "viewer left");
        // Dropping the viewer gives its seat (or pending place) back.
        true
    }

    /// Polls one viewer: queues its datagrams, reacts to its events.
    fn poll(&mut self, id: ViewerId, now: Instant) {
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        let transmits = &mut self.transmits;
        let mut polled = std::mem::take(&mut self.polled);
        viewer.poll(now, &mut |t| transmits.push_back(t), &mut polled);
        for event in polled.drain(..) {
            match event {
                Polled::Connected => self.on_connected(id, now),
                Polled::KeyframeRequest => {
                    let at_start = self.viewers.get(&id).is_some_and(|v| v.asks_at_start(now));
                    if at_start {
                        tracing::debug!(viewer = %id, "keyframe request as its video starts: not forced");
                    } else {
                        self.request_keyframe_for(now, id);
                    }
                }
                Polled::Repairs { nacks, resent } => {
                    self.stats
                        .nacks_received
                        .fetch_add(nacks, Ordering::Relaxed);
                    self.stats
                        .packets_resent
                        .fetch_add(resent, Ordering::Relaxed);
                }
                Polled::Estimate(bps) => {
                    if let Some(viewer) = self.viewers.get_mut(&id) {
                        viewer.adapt.on_estimate(now, bps);
                    }
                    self.adapt(now, id);
                }
                Polled::Loss(fraction) => {
                    if let Some(viewer) = self.viewers.get_mut(&id) {
                        viewer.adapt.on_loss(now, fraction);
                    }
                    self.adapt(now, id);
                }
                Polled::Disconnected => {
                    self.remove(id);
                }
            }
        }
        self.polled = polled;
        self.schedule(id);
    }

    /// A viewer is ready for media: it takes a seat (see [`keyframes::start`] for where its
    /// video starts), or, when every seat was taken while it connected, it is closed.
    fn on_connected(&mut self, id: ViewerId, now: Instant) {
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        if !viewer.ticket.take_seat() {
            tracing::info!(viewer = %id, "viewer connected after the last seat was taken: closed");
            self.stats
                .refused_at_connect
                .fetch_add(1, Ordering::Relaxed);
            // Told with RTCP BYE and DTLS close_notify, not left to find out by silence.
            let transmits = &mut self.transmits;
            viewer.close(&mut |t| transmits.push_back(t));
            self.remove(id);
            return;
        }
        self.stats.connected.fetch_add(1, Ordering::AcqRel);
        viewer.connected_at = Some(now);
        viewer.hold(now + MEDIA_GRACE);
        self.start_video(id, now, false);
    }

    /// Starts viewer `id`'s video, after it connected or was heard again after a pause
    /// (`resumed`): see [`keyframes::start`] for where. A resumed viewer never gets the
    /// cached GOP: it may begin before the pause, older than frames the viewer has shown.
    fn start_video(&mut self, id: ViewerId, now: Instant, resumed: bool) {
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        let Some(s) = self
            .streams
            .iter()
            .position(|s| s.rendition.id == viewer.rendition)
        else {
            return;
        };
        let stream = &self.streams[s];
        let start = match keyframes::start(now, &stream.gate, &stream.gop) {
            Start::Replay if resumed => Start::Force,
            start => start,
        };
        tracing::debug!(viewer = %id, ?start, "viewer's video starts");
        match start {
            Start::InFlight => {}
            Start::Force => self.request_keyframe(now, s, true),
            Start::Replay => {
                viewer.start_video(now + MEDIA_GRACE);
                // Held for the grace: the first burst leaves from a later `handle_timeout`.
                viewer.queue_backlog(stream.gop.packets());
            }
        }
    }

    fn request_keyframe(&mut self, now: Instant, stream: usize, urgent: bool) {
        self.stats
            .keyframes_requested
            .fetch_add(1, Ordering::Relaxed);
        if self.streams[stream].gate.request(now, urgent) {
            self.force_keyframe(stream);
        }
    }

    fn force_keyframe(&mut self, stream: usize) {
        let id = self.streams[stream].rendition.id;
        tracing::debug!(rendition = ?id, "forcing a keyframe");
        self.stats.keyframes_forced.fetch_add(1, Ordering::Relaxed);
        self.controls.push_back(Output::RequestKeyframe(id));
    }

    /// Each rendition: its codec, whether it runs, and its viewers.
    pub fn renditions(&self) -> Vec<RenditionState> {
        self.streams
            .iter()
            .map(|s| RenditionState {
                id: s.rendition.id,
                codec: s.rendition.codec.clone(),
                name: s.rendition.name.clone(),
                on_demand: s.rendition.on_demand,
                active: s.is_active(),
                viewers: s.viewers(),
            })
            .collect()
    }

    /// Whether `id` holds a session (for tests).
    #[cfg(test)]
    pub fn has_viewer(&self, id: ViewerId) -> bool {
        self.viewers.contains_key(&id)
    }
}
