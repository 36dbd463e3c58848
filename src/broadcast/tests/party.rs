//! A party in memory: one [`Engine`], a fake pipeline feeding it RTP, and viewers that are
//! real str0m `Rtc`s (the browser's side), all on a virtual clock.
//!
//! Datagrams go between the engine and the viewers at once, in memory; ICE and DTLS complete
//! for real. Time moves only when a test says so, and then from deadline to deadline, as the
//! socket loop would sleep: whatever the engine does on its own (paced replays, reaping, a
//! pending keyframe) happens only because its `Timeout` asked for the wake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc, RtcConfig};

use crate::broadcast::engine::{Engine, Output};
use crate::broadcast::offer::{self, ViewerId};
use crate::broadcast::seats::{SeatLimits, Seats};
use crate::broadcast::stream::{Rendition, RenditionId};
use crate::broadcast::{RENDITION_LINGER, Stats};

/// The on-demand VP8 rendition of the party.
pub const VP8: RenditionId = RenditionId(1);
/// The on-demand 360p H.264 rendition of a party with a ladder.
pub const LOW: RenditionId = RenditionId(2);

/// The address the engine advertises.
pub const SERVER: ([u8; 4], u16) = ([10, 0, 0, 1], 8189);

/// First byte of a test video payload: an H.264 IDR slice or a non-IDR slice, as x264 sends.
const IDR: u8 = 0x65;
const NON_IDR: u8 = 0x41;
/// First byte of a test audio payload.
const OPUS: u8 = 0xfc;

/// One media packet as a viewer received it.
#[derive(Debug, Clone, Copy)]
pub struct Got {
    /// Virtual time of arrival.
    pub at: Instant,
    /// The viewer's extended sequence number.
    pub seq: u64,
    /// Which of the pipeline's packets it is (counting from 0 per stream).
    pub index: u32,
    /// Part of a keyframe.
    pub keyframe: bool,
    /// Its RTP timestamp at the viewer.
    pub timestamp: u32,
}

/// A bottleneck between the engine and a viewer, as `tc qdisc … tbf` makes one: datagrams
/// leave at `rate`, queue behind each other, and are dropped when the queue would hold them
/// longer than `queue`.
#[derive(Debug)]
pub struct Link {
    /// Bits per second.
    pub rate_bps: u64,
    /// The longest wait in the queue.
    pub queue: Duration,
    /// When the link is free again.
    free_at: Option<Instant>,
    /// Datagrams on their way, with their arrival time, in order.
    in_flight: std::collections::VecDeque<(Instant, Transmit)>,
    /// Datagrams dropped at the queue.
    pub dropped: u64,
}

impl Link {
    /// A link carrying `rate_bps` with a queue of `queue`.
    pub fn new(rate_bps: u64, queue: Duration) -> Self {
        Self {
            rate_bps,
            queue,
            free_at: None,
            in_flight: std::collections::VecDeque::new(),
            dropped: 0,
        }
    }

    /// Queues `t` sent at `now`, or drops it.
    fn send(&mut self, now: Instant, t: Transmit) {
        let start = self.free_at.map_or(now, |f| f.max(now));
        if start - now > self.queue {
            self.dropped += 1;
            return;
        }
        let bits = (t.contents.len() as u64 + 28) * 8;
        let done = start + Duration::from_nanos(bits * 1_000_000_000 / self.rate_bps);
        self.free_at = Some(done);
        self.in_flight.push_back((done, t));
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.front().map(|(at, _)| *at)
    }
}

/// A viewer: the browser's side of a session.
pub struct Client {
    /// Its session at the engine.
    pub id: ViewerId,
    rtc: Rtc,
    addr: SocketAddr,
    /// Its datagrams reach the engine, and the engine's reach it (false: it vanished).
    pub online: bool,
    /// This many of the next video packets sent to it are lost on the way.
    pub lose_video: usize,
    /// A bottleneck on the way to it, if any.
    pub link: Option<Link>,
    /// The engine's SDP answer.
    answer: String,
    /// When the engine saw it connect (ICE and DTLS done).
    pub connected_at: Option<Instant>,
    /// When a datagram of it last reached the engine.
    pub last_sent: Option<Instant>,
    /// Video and audio received, in order of arrival.
    pub video: Vec<Got>,
    pub audio: Vec<Got>,
    /// The SSRC of our video at this viewer, once a packet came.
    video_ssrc: Option<Ssrc>,
    timeout: Instant,
    /// When the engine closed its session (DTLS close_notify reached it).
    pub closed_at: Option<Instant>,
}

impl Client {
    /// Asks for a keyframe (PLI), as a browser does after loss.
    pub fn request_keyframe(&mut self) {
        let ssrc = self.video_ssrc.expect("no video yet");
        self.rtc
            .direct_api()
            .stream_rx(&ssrc)
            .expect("video stream")
            .request_keyframe(KeyframeRequestKind::Pli);
    }

    /// Indices of the video packets received, in order.
    pub fn video_indices(&self) -> Vec<u32> {
        self.video.iter().map(|g| g.index).collect()
    }

    /// Asserts the video came as one run of consecutive sequence numbers, starting at a
    /// keyframe.
    pub fn assert_clean_video(&self) {
        let first = self.video.first().expect("no video received");
        assert!(
            first.keyframe,
            "first video packet is not a keyframe: {first:?}"
        );
        for pair in self.video.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1, "gap in sequence: {pair:?}");
        }
    }

    /// Whether the engine's answer gave this viewer an RTX stream.
    pub fn answer_has_rtx(&self) -> bool {
        self.answer.contains("a=ssrc-group:FID")
    }

    /// Asserts every video packet from the first (a keyframe) on arrived exactly once, some
    /// of them late (repaired).
    pub fn assert_clean_video_after_repair(&self) {
        let first = self.video.first().expect("no video received");
        assert!(first.keyframe, "first video packet is not a keyframe");
        let mut seqs: Vec<u64> = self.video.iter().map(|g| g.seq).collect();
        seqs.sort_unstable();
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "missing or twice: {seqs:?}");
        }
    }

    fn receive(&mut self, now: Instant, t: &Transmit) {
        let receive = Receive::new(Protocol::Udp, t.source, t.destination, &t.contents)
            .expect("engine sent a datagram the client cannot parse");
        self.rtc
            .handle_input(Input::Receive(now, receive))
            .expect("client rejects the engine's datagram");
    }

    /// Drains the client's output: datagrams into `out`, media into its lists.
    fn poll(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        loop {
            match self.rtc.poll_output().expect("client session failed") {
                RtcOutput::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                RtcOutput::Transmit(t) => out.push(t),
                RtcOutput::Event(Event::RtpPacket(p)) => {
                    let payload = &p.payload;
                    let index = u32::from_be_bytes(payload[1..5].try_into().unwrap());
                    let got = Got {
                        at: now,
                        seq: *p.seq_no,
                        index,
                        keyframe: payload[0] == IDR,
                        timestamp: p.header.timestamp,
                    };
                    if payload[0] == OPUS {
                        self.audio.push(got);
                    } else {
                        self.video_ssrc = Some(p.header.ssrc);
                        self.video.push(got);
                    }
                }
                RtcOutput::Event(Event::Closed) => self.closed_at = Some(now),
                RtcOutput::Event(_) => {}
            }
        }
    }
}

/// The engine, its viewers and a virtual clock.
pub struct Party {
    /// The virtual clock.
    pub now: Instant,
    pub engine: Engine,
    pub stats: Arc<Stats>,
    /// The seats, as `Broadcaster` holds them: each join reserves its place here first.
    pub seats: Arc<Seats>,
    pub clients: Vec<Client>,
    /// When the engine asked the main encoder for a keyframe.
    pub keyframes_asked: Vec<Instant>,
    /// When the engine asked the VP8 encoder for a keyframe.
    pub vp8_keyframes_asked: Vec<Instant>,
    /// When the engine started (true) or stopped the VP8 encoder.
    pub vp8_switches: Vec<(Instant, bool)>,
    /// When the engine asked the 360p encoder for a keyframe.
    pub low_keyframes_asked: Vec<Instant>,
    /// When the engine started (true) or stopped the 360p encoder.
    pub low_switches: Vec<(Instant, bool)>,
    /// What the pipeline sends.
    renditions: Vec<Rendition>,
    /// Frames [`Party::play`] fed, and the keyframe requests it served.
    played_frames: u64,
    main_keys_served: usize,
    low_keys_served: usize,
    /// The engine's latest deadline.
    deadline: Instant,
    /// Wakes in a row that found the clock where it was.
    stalls: u32,
    video_index: u32,
    /// Sequence numbers of each rendition (by id): each payloader counts its own.
    video_seq: [u16; 3],
    audio_index: u32,
    /// How long before the engine takes a video packet the pipeline made it (the fan-out's
    /// lag behind the encoder).
    pub video_lag: Duration,
}

impl Party {
    pub fn new() -> Self {
        Self::with(renditions())
    }

    /// A party with `limits` on its seats (else room for every test's viewers).
    pub fn with_seats(limits: SeatLimits) -> Self {
        let mut party = Self::new();
        party.seats = Seats::new(limits);
        party
    }

    /// A party whose H.264 has a 360p rendition ([`LOW`]) besides the main 720p one.
    pub fn with_ladder() -> Self {
        let mut all = renditions();
        all.push(Rendition {
            id: LOW,
            codec: "H264".into(),
            on_demand: true,
            name: "360p".into(),
            height: 360,
            bitrate_kbps: 600,
        });
        Self::with(all)
    }

    fn with(renditions: Vec<Rendition>) -> Self {
        offer::init_crypto();
        let now = Instant::now();
        let stats = Arc::new(Stats::default());
        let engine = Engine::new(
            now,
            SERVER.into(),
            stats.clone(),
            renditions.clone(),
            RENDITION_LINGER,
        );
        let mut party = Self {
            now,
            engine,
            stats,
            seats: Seats::new(SeatLimits {
                max_viewers: 1000,
                max_pending: 1000,
                max_pending_per_address: 1000,
            }),
            clients: Vec::new(),
            keyframes_asked: Vec::new(),
            vp8_keyframes_asked: Vec::new(),
            vp8_switches: Vec::new(),
            low_keyframes_asked: Vec::new(),
            low_switches: Vec::new(),
            renditions,
            played_frames: 0,
            main_keys_served: 0,
            low_keys_served: 0,
            deadline: now,
            stalls: 0,
            video_index: 0,
            video_seq: [0; 3],
            audio_index: 0,
            video_lag: Duration::ZERO,
        };
        party.pump();
        party
    }

    /// A viewer offers to receive video and audio, and joins; returns its index.
    pub fn join(&mut self) -> usize {
        self.join_as(true, false)
    }

    /// A viewer joins and is never heard of again (its side never answers); returns its index.
    pub fn join_offline(&mut self) -> usize {
        self.join_as(false, false)
    }

    fn join_as(&mut self, online: bool, vp8_only: bool) -> usize {
        self.join_with(online, |b| {
            if vp8_only {
                b.clear_codecs().enable_opus(true, false).enable_vp8(true)
            } else {
                b
            }
        })
    }

    fn join_with(&mut self, online: bool, codecs: impl FnOnce(RtcConfig) -> RtcConfig) -> usize {
        let n = self.clients.len();
        let addr = SocketAddr::from(([10, 0, 1, n as u8 + 1], 50_000));
        let mut rtc = codecs(Rtc::builder().set_rtp_mode(true)).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let accepted = offer::accept(
            &offer.to_sdp_string(),
            SERVER.into(),
            &self.renditions,
            self.now,
        )
        .expect("the engine refuses a str0m offer");
        let accepted_answer = accepted.answer.clone();
        let answer = SdpAnswer::from_sdp_string(&accepted.answer).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        // As `Broadcaster::join` does: a pending place first, then the engine sees the viewer.
        let ticket = self
            .seats
            .reserve(addr.ip())
            .expect("a test joins only where there is room");
        self.stats.viewers.fetch_add(1, Ordering::AcqRel);
        let id = accepted.id;
        self.engine.join(self.now, accepted, ticket);
        self.clients.push(Client {
            id,
            rtc,
            addr,
            online,
            lose_video: 0,
            link: None,
            answer: accepted_answer,
            connected_at: None,
            last_sent: None,
            video: Vec::new(),
            audio: Vec::new(),
            video_ssrc: None,
            timeout: self.now,
            closed_at: None,
        });
        self.pump();
        n
    }

    /// Joins a viewer and runs the clock until the engine sees it connected; returns its index.
    pub fn connect(&mut self) -> usize {
        let n = self.join();
        self.until_connected(n)
    }

    /// Joins a viewer whose browser has no H.264, and runs the clock until it is connected.
    pub fn connect_vp8(&mut self) -> usize {
        let n = self.join_as(true, true);
        self.until_connected(n)
    }

    fn until_connected(&mut self, n: usize) -> usize {
        let give_up = self.now + Duration::from_secs(5);
        while self.clients[n].connected_at.is_none() {
            assert!(self.now < give_up, "viewer {n} never connected");
            self.step(give_up);
        }
        n
    }

    /// Runs the clock for `d`.
    pub fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// Runs the clock to `until`, waking at every deadline on the way.
    pub fn advance_to(&mut self, until: Instant) {
        while self.now < until {
            self.step(until);
        }
    }

    /// One wake: to the earliest deadline (the engine's or a client's), at most `until`.
    fn step(&mut self, until: Instant) {
        let next = self
            .clients
            .iter()
            .filter(|c| c.online)
            .flat_map(|c| {
                std::iter::once(c.timeout).chain(c.link.as_ref().and_then(Link::next_arrival))
            })
            .fold(self.deadline, Instant::min)
            .clamp(self.now, until);
        if next == self.now {
            self.stalls += 1;
            if self.stalls > 95 {
                eprintln!(
                    "stall: now={:?} deadline={:?} clients={:?}",
                    self.now,
                    self.deadline,
                    self.clients.iter().map(|c| c.timeout).collect::<Vec<_>>()
                );
            }
            assert!(
                self.stalls < 100,
                "deadlines do not advance: the loop would spin"
            );
        } else {
            self.stalls = 0;
        }
        self.now = next;
        let now = self.now;
        if now >= self.deadline {
            self.engine.handle_timeout(now);
        }
        let mut outbox = Vec::new();
        for client in self.clients.iter_mut().filter(|c| c.online) {
            while let Some(link) = &mut client.link
                && link.next_arrival().is_some_and(|at| at <= now)
            {
                let (_, t) = link.in_flight.pop_front().unwrap();
                client.receive(now, &t);
                client.poll(now, &mut outbox);
            }
            if now >= client.timeout {
                client.rtc.handle_input(Input::Timeout(now)).unwrap();
            }
        }
        for t in outbox {
            self.engine.handle_datagram(now, t.source, &t.contents);
        }
        self.pump();
    }

    /// Moves datagrams both ways until nobody has anything to send.
    fn pump(&mut self) {
        let mut outbox = Vec::new();
        for _ in 0..10_000 {
            let mut moved = false;
            loop {
                match self.engine.poll_output() {
                    Output::Transmit(t) => {
                        moved = true;
                        let to = self.clients.iter_mut().find(|c| c.addr == t.destination);
                        if let Some(client) = to.filter(|c| c.online) {
                            if client.lose_video > 0 && is_video_rtp(&t.contents) {
                                client.lose_video -= 1;
                                continue;
                            }
                            if let Some(link) = &mut client.link {
                                link.send(self.now, t);
                                continue;
                            }
                            // In RTP mode str0m keeps one received packet until the next
                            // poll: poll after every datagram, as a socket loop would.
                            client.receive(self.now, &t);
                            client.poll(self.now, &mut outbox);
                        }
                    }
                    Output::RequestKeyframe(RenditionId::MAIN) => {
                        self.keyframes_asked.push(self.now)
                    }
                    Output::RequestKeyframe(LOW) => self.low_keyframes_asked.push(self.now),
                    Output::RequestKeyframe(_) => self.vp8_keyframes_asked.push(self.now),
                    Output::SetActive(LOW, on) => self.low_switches.push((self.now, on)),
                    Output::SetActive(id, on) => {
                        assert_eq!(id, VP8, "the main rendition is never switched");
                        self.vp8_switches.push((self.now, on));
                    }
                    Output::Timeout(t) => {
                        self.deadline = t;
                        break;
                    }
                }
            }
            for client in self.clients.iter_mut().filter(|c| c.online) {
                client.poll(self.now, &mut outbox);
            }
            for t in outbox.drain(..) {
                moved = true;
                if let Some(client) = self.clients.iter_mut().find(|c| c.addr == t.source) {
                    client.last_sent = Some(self.now);
                }
                self.engine.handle_datagram(self.now, t.source, &t.contents);
            }
            self.note_connections();
            if !moved {
                return;
            }
        }
        panic!("datagrams never stopped flowing");
    }

    /// Marks viewers the engine has newly counted as connected. The engine counts one at a
    /// time here: each step connects at most one viewer in these tests.
    fn note_connections(&mut self) {
        let connected = self.stats.connected.load(Ordering::Acquire);
        let noted = self
            .clients
            .iter()
            .filter(|c| c.connected_at.is_some() && self.engine.has_viewer(c.id))
            .count();
        if connected > noted
            && let Some(client) = self
                .clients
                .iter_mut()
                .find(|c| c.connected_at.is_none() && c.online)
        {
            client.connected_at = Some(self.now);
        }
    }

    /// The pipeline sends one video frame of `packets` packets; returns their indices.
    pub fn frame(&mut self, keyframe: bool, packets: usize) -> std::ops::Range<u32> {
        self.frame_of(RenditionId::MAIN, keyframe, packets)
    }

    /// One video frame of `rendition`.
    pub fn frame_of(
        &mut self,
        rendition: RenditionId,
        keyframe: bool,
        packets: usize,
    ) -> std::ops::Range<u32> {
        let timestamp = self.video_index.wrapping_mul(3000);
        self.frame_at(rendition, keyframe, packets, timestamp)
    }

    /// One video frame of `rendition` with RTP `timestamp` (the renditions of one composite
    /// frame share it).
    pub fn frame_at(
        &mut self,
        rendition: RenditionId,
        keyframe: bool,
        packets: usize,
        timestamp: u32,
    ) -> std::ops::Range<u32> {
        self.frame_sized(rendition, keyframe, packets, timestamp, 100)
    }

    /// One video frame of `rendition` in `packets` packets of `bytes` of payload each.
    pub fn frame_sized(
        &mut self,
        rendition: RenditionId,
        keyframe: bool,
        packets: usize,
        timestamp: u32,
        bytes: usize,
    ) -> std::ops::Range<u32> {
        let first = self.video_index;
        for i in 0..packets {
            let index = self.video_index;
            self.video_index += 1;
            let marker = i + 1 == packets;
            let tag = if keyframe { IDR } else { NON_IDR };
            let seq = &mut self.video_seq[usize::from(rendition.0)];
            *seq = seq.wrapping_add(1);
            let data = rtp(96, marker, *seq, timestamp, tag, index, bytes);
            self.engine.handle_video(
                self.now,
                rendition,
                &data,
                keyframe,
                self.now - self.video_lag,
            );
        }
        self.pump();
        first..self.video_index
    }

    /// The pipeline sends one audio packet; returns its index.
    pub fn audio(&mut self) -> u32 {
        let index = self.audio_index;
        self.audio_index += 1;
        let data = rtp(111, false, index as u16, index * 960, OPUS, index, 100);
        self.engine.handle_audio(self.now, &data);
        self.pump();
        index
    }

    /// Runs the party for `d` as the pipeline would: 30 frames a second of the main rendition
    /// (2.5 Mbit/s) and, while it runs, of the 360p one (0.6 Mbit/s), a keyframe every 2 s
    /// and whenever the engine asks; 20 ms audio packets.
    pub fn play(&mut self, d: Duration) {
        const FRAME: Duration = Duration::from_nanos(33_333_333);
        const AUDIO: Duration = Duration::from_millis(20);
        let end = self.now + d;
        let mut next_frame = self.now;
        let mut next_audio = self.now;
        while self.now < end {
            if self.now >= next_frame {
                let n = self.played_frames;
                self.played_frames += 1;
                let timestamp = (n as u32).wrapping_mul(3000);
                let periodic = n.is_multiple_of(60);
                let main_key = periodic || self.keyframes_asked.len() > self.main_keys_served;
                self.main_keys_served = self.keyframes_asked.len();
                let (packets, bytes) = if main_key { (30, 1150) } else { (9, 1150) };
                self.frame_sized(RenditionId::MAIN, main_key, packets, timestamp, bytes);
                if self.low_switches.last().is_some_and(|(_, on)| *on) {
                    let low_key = periodic || self.low_keyframes_asked.len() > self.low_keys_served;
                    self.low_keys_served = self.low_keyframes_asked.len();
                    let packets = if low_key { 8 } else { 2 };
                    self.frame_sized(LOW, low_key, packets, timestamp, 1200);
                }
                next_frame += FRAME;
            }
            if self.now >= next_audio {
                self.audio();
                next_audio += AUDIO;
            }
            self.advance_to(next_frame.min(next_audio).min(end));
        }
    }

    /// What the engine says of viewer `n`.
    pub fn viewer(&self, n: usize) -> crate::broadcast::ViewerStats {
        let id = self.clients[n].id.to_string();
        self.engine
            .viewer_stats(self.now)
            .into_iter()
            .find(|v| v.id == id)
            .expect("no such viewer")
    }

    /// Viewer `n` picks `quality` in its menu.
    pub fn set_quality(&mut self, n: usize, quality: crate::broadcast::Quality) {
        let id = self.clients[n].id;
        assert!(self.engine.set_quality(self.now, id, quality));
        self.pump();
    }

    /// Video packets were lost between the pipeline and the engine.
    pub fn video_lost(&mut self) {
        self.engine
            .handle_video_lost(self.now, RenditionId::MAIN, 1);
        self.pump();
    }

    /// Whether the engine still holds viewer `n`'s session.
    pub fn holds(&self, n: usize) -> bool {
        self.engine.has_viewer(self.clients[n].id)
    }

    /// Keyframes the engine asked of the encoder so far.
    pub fn forced(&self) -> u64 {
        self.stats.keyframes_forced.load(Ordering::Relaxed)
    }

    /// Keyframe requests the engine received so far.
    pub fn requested(&self) -> u64 {
        self.stats.keyframes_requested.load(Ordering::Relaxed)
    }
}

/// Whether a datagram is (S)RTP of video: RTP's header stays in clear under SRTP. Audio is
/// payload type 111; RTCP's packet types fall in 72..=76 once the marker bit is masked off.
fn is_video_rtp(datagram: &[u8]) -> bool {
    datagram.len() > 12 && datagram[0] >> 6 == 2 && !matches!(datagram[1] & 0x7f, 72..=76 | 111)
}

/// An H.264 party with an on-demand VP8 rendition.
fn renditions() -> Vec<Rendition> {
    vec![
        Rendition {
            id: RenditionId::MAIN,
            codec: "H264".into(),
            on_demand: false,
            name: "720p".into(),
            height: 720,
            bitrate_kbps: 2500,
        },
        Rendition {
            id: VP8,
            codec: "VP8".into(),
            on_demand: true,
            name: "720p".into(),
            height: 720,
            bitrate_kbps: 2500,
        },
    ]
}

/// An RTP packet as the pipeline's payloader makes it; the payload names its `index`.
fn rtp(
    pt: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    tag: u8,
    index: u32,
    bytes: usize,
) -> Vec<u8> {
    let mut data = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    data.extend_from_slice(&seq.to_be_bytes());
    data.extend_from_slice(&timestamp.to_be_bytes());
    data.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    data.push(tag);
    data.extend_from_slice(&index.to_be_bytes());
    data.resize(data.len() + bytes, 0xab);
    data
}
