//! The fan-out loop: one task, one socket, every viewer's `Rtc`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::Input;
use str0m::net::{Protocol, Receive};
use tokio::net::UdpSocket;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::offer::ViewerId;
use super::rtp::{self, Packet, SeqUnwrapper};
use super::viewer::{Polled, Viewer};
use super::{Command, Stats, VIEWER_TIMEOUT, stun};
use crate::pipeline::Pipeline;

/// At most one forced keyframe per this interval, however many viewers ask.
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// A cached keyframe younger than this is replayed to a new viewer instead of forcing one:
/// the replay is short, and the encoder is spared a keyframe.
const GOP_REPLAY_AGE: Duration = Duration::from_millis(500);

/// Media waits this long after DTLS completes on our side, while the viewer installs its
/// SRTP keys (webrtc-rs drops what comes earlier; so may browsers).
const MEDIA_GRACE: Duration = Duration::from_millis(25);

/// A forced keyframe normally leaves the encoder within a frame or two; past this we stop
/// waiting for it.
const KEYFRAME_IN_FLIGHT: Duration = Duration::from_millis(300);

/// A replayed GOP goes out at most this many packets per [`REPLAY_TICK`]: a whole GOP at once
/// overflows a receiver's socket buffer (seen as loss at webrtc-rs), while this pace still
/// delivers a 2 s GOP in well under 100 ms.
const REPLAY_BURST: usize = 24;
const REPLAY_TICK: Duration = Duration::from_millis(4);

/// Cap of the cached GOP, in packets (2 s of 720p at a high bitrate).
const GOP_CAP: usize = 4096;

/// Socket buffers large enough for a keyframe burst to many viewers.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Binds the fan-out socket with large buffers.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// State of the fan-out loop.
pub struct Engine {
    socket: Arc<UdpSocket>,
    /// The address in our candidate: str0m needs it as the destination of what we receive.
    local: SocketAddr,
    pipeline: Pipeline,
    stats: Arc<Stats>,
    viewers: HashMap<ViewerId, Viewer>,
    by_ufrag: HashMap<String, ViewerId>,
    by_addr: HashMap<SocketAddr, ViewerId>,
    video_seq: SeqUnwrapper,
    audio_seq: SeqUnwrapper,
    /// Packets since the latest keyframe started, for viewers who join now.
    gop: Vec<Packet>,
    gop_started: Option<Instant>,
    last_was_key: bool,
    last_forced: Option<Instant>,
    keyframe_pending: bool,
    /// Reused buffer for events from polling.
    polled: Vec<Polled>,
}

impl Engine {
    /// A loop over `socket` advertising `local`, fanning out `pipeline`.
    pub fn new(
        socket: UdpSocket,
        local: SocketAddr,
        pipeline: Pipeline,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            socket: Arc::new(socket),
            local,
            pipeline,
            stats,
            viewers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            video_seq: SeqUnwrapper::default(),
            audio_seq: SeqUnwrapper::default(),
            gop: Vec::new(),
            gop_started: None,
            last_was_key: false,
            last_forced: None,
            keyframe_pending: false,
            polled: Vec::new(),
        }
    }

    /// Runs until the command channel closes.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut video = self.pipeline.subscribe_video();
        let mut audio = self.pipeline.subscribe_audio();
        let socket = self.socket.clone();
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = self.deadline();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Join(accepted)) => self.add(Viewer::new(*accepted)),
                    Some(Command::Leave(id, reply)) => {
                        let _ = reply.send(self.remove(id));
                    }
                    None => break,
                },
                packet = video.recv() => match packet {
                    Ok(p) => self.on_video(&p.data, p.keyframe),
                    // We fell behind: viewers lost packets and need a fresh keyframe.
                    Err(RecvError::Lagged(_)) => self.request_keyframe(),
                    Err(RecvError::Closed) => break,
                },
                packet = audio.recv() => match packet {
                    Ok(p) => self.on_audio(&p.data),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => self.on_datagram(&buf[..n], source),
                    Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
                },
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
            self.on_timeouts(Instant::now());
        }
        for (_, mut viewer) in self.viewers.drain() {
            viewer.rtc.disconnect();
        }
        tracing::info!("broadcaster stopped");
    }

    fn deadline(&self) -> Instant {
        let soon = if self.viewers.values().any(|v| v.has_backlog()) {
            Instant::now() + REPLAY_TICK
        } else {
            Instant::now() + Duration::from_millis(100)
        };
        self.viewers
            .values()
            .map(|v| v.next_timeout)
            .min()
            .map_or(soon, |t| t.min(soon))
    }

    fn add(&mut self, viewer: Viewer) {
        tracing::info!(viewer = %viewer.id, "viewer joined");
        self.by_ufrag.insert(viewer.ufrag.clone(), viewer.id);
        let id = viewer.id;
        self.viewers.insert(id, viewer);
        self.poll(id);
    }

    fn remove(&mut self, id: ViewerId) -> bool {
        let Some(mut viewer) = self.viewers.remove(&id) else {
            return false;
        };
        viewer.rtc.disconnect();
        self.by_ufrag.remove(&viewer.ufrag);
        self.by_addr.retain(|_, v| *v != id);
        self.stats.viewers.fetch_sub(1, Ordering::AcqRel);
        if viewer.connected {
            self.stats.connected.fetch_sub(1, Ordering::AcqRel);
        }
        tracing::info!(viewer = %id, "viewer left");
        true
    }

    fn on_video(&mut self, data: &[u8], keyframe: bool) {
        let Some(packet) = rtp::parse(data, keyframe, &mut self.video_seq) else {
            return;
        };
        let gop_start = packet.keyframe && !self.last_was_key;
        self.last_was_key = packet.keyframe;
        if gop_start {
            tracing::debug!(previous_len = self.gop.len(), "keyframe: new GOP");
            self.gop.clear();
            self.gop_started = Some(packet.at);
        }
        if self.gop.len() < GOP_CAP {
            self.gop.push(packet.clone());
        }
        let ids: Vec<ViewerId> = self.viewers.keys().copied().collect();
        for id in ids {
            let Some(viewer) = self.viewers.get_mut(&id) else {
                continue;
            };
            if !viewer.connected {
                continue;
            }
            if !viewer.video_started && gop_start {
                viewer.video_started = true;
            }
            if viewer.video_started {
                viewer.send_video(&packet);
                self.poll(id);
            }
        }
    }

    fn on_audio(&mut self, data: &[u8]) {
        let Some(packet) = rtp::parse(data, false, &mut self.audio_seq) else {
            return;
        };
        let ids: Vec<ViewerId> = self.viewers.keys().copied().collect();
        for id in ids {
            let Some(viewer) = self.viewers.get_mut(&id) else {
                continue;
            };
            if viewer.connected {
                viewer.send_audio(&packet);
                self.poll(id);
            }
        }
    }

    fn on_datagram(&mut self, data: &[u8], source: SocketAddr) {
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
        let now = Instant::now();
        viewer.last_heard = now;
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, data) else {
            return;
        };
        let input = Input::Receive(now, receive);
        if viewer.rtc.accepts(&input) {
            if let Err(e) = viewer.rtc.handle_input(input) {
                tracing::debug!(viewer = %id, error = %e, "bad input from viewer");
            }
            self.poll(id);
        }
    }

    fn on_timeouts(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let ids: Vec<ViewerId> = self.viewers.keys().copied().collect();
        for id in ids {
            let Some(viewer) = self.viewers.get_mut(&id) else {
                continue;
            };
            let silent = now.saturating_duration_since(viewer.last_heard) > VIEWER_TIMEOUT;
            if !viewer.rtc.is_alive() || silent {
                expired.push(id);
                continue;
            }
            let replayed = viewer.drain_backlog(REPLAY_BURST);
            if replayed || viewer.next_timeout <= now {
                let _ = viewer.rtc.handle_input(Input::Timeout(now));
                self.poll(id);
            }
        }
        for id in expired {
            tracing::info!(viewer = %id, "viewer timed out");
            self.remove(id);
        }
        if self.keyframe_pending
            && self
                .last_forced
                .is_none_or(|t| now.duration_since(t) >= KEYFRAME_INTERVAL)
        {
            self.force_keyframe(now);
        }
    }

    /// Polls one viewer: sends its datagrams, reacts to its events.
    fn poll(&mut self, id: ViewerId) {
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        let socket = &self.socket;
        let stats = &self.stats;
        let mut send =
            |destination: SocketAddr, data: &[u8]| match socket.try_send_to(data, destination) {
                Ok(n) => {
                    stats.packets_sent.fetch_add(1, Ordering::Relaxed);
                    stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.send_drops.fetch_add(1, Ordering::Relaxed);
                }
            };
        let mut polled = std::mem::take(&mut self.polled);
        viewer.poll(&mut send, &mut polled);
        for event in polled.drain(..) {
            match event {
                Polled::Connected => self.on_connected(id),
                Polled::KeyframeRequest => self.request_keyframe(),
                Polled::Disconnected => {
                    self.remove(id);
                }
            }
        }
        self.polled = polled;
    }

    /// A viewer is ready for media. It starts at the next keyframe when one is on its way or
    /// can be forced now (the merge window is open); otherwise from the cached latest keyframe,
    /// replayed paced, rather than waiting up to a second for the window to reopen.
    fn on_connected(&mut self, id: ViewerId) {
        self.stats.connected.fetch_add(1, Ordering::AcqRel);
        let now = Instant::now();
        if let Some(viewer) = self.viewers.get_mut(&id) {
            viewer.hold(now + MEDIA_GRACE);
        }
        let in_flight = self.last_forced.is_some_and(|forced| {
            now.duration_since(forced) < KEYFRAME_IN_FLIGHT
                && self.gop_started.is_none_or(|gop| gop < forced)
        });
        let can_force = self
            .last_forced
            .is_none_or(|t| now.duration_since(t) >= KEYFRAME_INTERVAL);
        let cached = self.gop.first().is_some_and(|p| p.keyframe);
        let young = self
            .gop_started
            .is_some_and(|t| now.duration_since(t) < GOP_REPLAY_AGE);
        let replay = !in_flight && cached && (young || !can_force);
        tracing::debug!(viewer = %id, in_flight, can_force, replay, "viewer connected");
        if in_flight {
            return; // Starts with the keyframe already asked for.
        }
        if !replay {
            self.request_keyframe();
            return;
        }
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        viewer.video_started = true;
        viewer.queue_backlog(&self.gop);
        viewer.drain_backlog(REPLAY_BURST);
        self.poll(id);
    }

    fn request_keyframe(&mut self) {
        self.stats
            .keyframes_requested
            .fetch_add(1, Ordering::Relaxed);
        self.keyframe_pending = true;
        let now = Instant::now();
        if self
            .last_forced
            .is_none_or(|t| now.duration_since(t) >= KEYFRAME_INTERVAL)
        {
            self.force_keyframe(now);
        }
    }

    fn force_keyframe(&mut self, now: Instant) {
        tracing::debug!("forcing a keyframe");
        self.keyframe_pending = false;
        self.last_forced = Some(now);
        self.stats.keyframes_forced.fetch_add(1, Ordering::Relaxed);
        self.pipeline.request_keyframe();
    }
}
