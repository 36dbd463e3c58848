//! The socket loop: the one thread that owns the fan-out's time and I/O.
//!
//! It reads the clock, the UDP socket, the pipeline's RTP and the commands of [`Broadcaster`],
//! feeds each to the [`Engine`] with `now`, then executes what the engine asks for: datagrams
//! sent in batches (`send.rs`; a full buffer drops the datagram, as UDP would, and is counted),
//! keyframes asked of the pipeline, and a sleep until the engine's next deadline. This is the
//! loop of str0m's own examples, for many sessions.
//!
//! It stops when the command channel closes (every [`Broadcaster`] handle is gone), when the
//! pipeline's streams end, or when the shutdown token is cancelled.
//!
//! It runs on a thread of its own ([`spawn`]), not as a task beside the HTTP handlers. Under
//! load every branch of its `select!` is ready at once, so as a task it gave its worker back
//! only when tokio's cooperative budget ran out: about 128 inputs, each a video packet written
//! to every viewer. On a server with one core (one worker), `/healthz` and the pages waited
//! behind it for hundreds of milliseconds (the soaks' p99: 335 ms to 1 s). On its own thread
//! the kernel shares the core between the two.
//!
//! [`Broadcaster`]: super::Broadcaster

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Output};
use super::send::{Batch, Sent};
use super::stream::{Rendition, RenditionId};
use super::{Command, Sessions, Stats};
use crate::pipeline::Pipeline;
use crate::pipeline::output::RtpPacket;

/// Socket buffers large enough for a keyframe burst to many viewers.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// Datagrams taken from the socket in one go: a bound, so media keeps flowing when viewers
/// send without pause.
const DRAIN_AT_MOST: usize = 256;

/// Largest datagram we read: more than any path MTU, so nothing real is truncated.
const RECEIVE_BUFFER: usize = 2048;

/// Binds the fan-out socket with large buffers. It joins the loop's own runtime in [`spawn`].
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
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
    Ok(socket.into())
}

/// What the loop needs besides the engine.
pub struct Io {
    /// The fan-out socket, from [`bind`].
    pub socket: std::net::UdpSocket,
    /// Source of RTP, and where keyframes are asked for.
    pub pipeline: Pipeline,
    /// Where sends are counted.
    pub stats: Arc<Stats>,
    /// Joins and leaves from the web side.
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
}

/// Starts the loop on a thread named `cowatch-fanout` with a runtime of its own. The future
/// resolves when the loop has stopped, and panics with the loop's panic if it had one, so
/// whoever awaits it (the shutdown's task list) says so.
pub fn spawn(engine: Engine, io: Io) -> std::io::Result<impl Future<Output = ()> + Send> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cowatch-fanout".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(run(engine, io))
            }));
            // The receiver is gone only if nobody waits for the loop any more.
            let _ = done.send(outcome);
        })?;
    Ok(async move {
        match ended.await {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("the fan-out thread ended without a word"),
        }
    })
}

/// Runs `engine` over `io` until a stop condition (see the module note).
async fn run(mut engine: Engine, io: Io) {
    let Io {
        socket,
        pipeline,
        stats,
        mut commands,
        shutdown,
    } = io;
    let socket = match UdpSocket::from_std(socket) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!(error = %e, "the fan-out cannot use its UDP socket; no viewer gets media");
            return;
        }
    };
    let mut videos = subscribe(&pipeline);
    let mut audio = pipeline.subscribe_audio();
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    let mut deadline = Instant::now();
    let mut batch = Batch::default();
    loop {
        let now = Instant::now();
        // Inputs arrive back to back under load and can keep the sleep below from ever
        // winning the select: timers are checked after every input instead.
        if now >= deadline {
            engine.handle_timeout(now);
        }
        deadline = execute(&mut engine, &socket, &pipeline, &stats, &mut batch);
        tokio::select! {
            () = shutdown.cancelled() => break,
            command = commands.recv() => match command {
                Some(Command::Join(accepted, ticket)) => {
                    engine.join(Instant::now(), *accepted, ticket);
                }
                Some(Command::Leave(id, reply)) => {
                    let _ = reply.send(engine.leave(Instant::now(), id));
                }
                Some(Command::Keyframe(id, reply)) => {
                    let _ = reply.send(engine.page_keyframe_request(Instant::now(), id));
                }
                Some(Command::MainKeyframe) => engine.main_keyframe_request(Instant::now()),
                Some(Command::Quality(id, quality, reply)) => {
                    let _ = reply.send(engine.set_quality(Instant::now(), id, quality));
                }
                Some(Command::Sessions(reply)) => {
                    let _ = reply.send(Sessions {
                        renditions: engine.renditions(),
                        viewers: engine.viewer_stats(Instant::now()),
                    });
                }
                None => break,
            },
            (rendition, packet) = recv_any(&mut videos) => match packet {
                Ok(p) => engine.handle_video(Instant::now(), rendition, &p.data, p.keyframe, p.at),
                // We fell behind: viewers lost packets and need a fresh keyframe.
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(packets = n, "the fan-out fell behind the encoder: video lost for every viewer");
                    engine.handle_video_lost(Instant::now(), rendition, n);
                }
                Err(RecvError::Closed) => break,
            },
            packet = audio.recv() => match packet {
                Ok(p) => engine.handle_audio(Instant::now(), &p.data),
                // Audio needs no keyframe: a gap is all the loss there is.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    let now = Instant::now();
                    engine.handle_datagram(now, source, &buf[..n]);
                    drain_socket(&mut engine, &socket, &mut buf, now);
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            },
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
    engine.close();
    tracing::info!("broadcaster stopped");
}

/// Hands the engine what else the socket holds, up to [`DRAIN_AT_MOST`] datagrams.
///
/// What viewers send is small and urgent: ICE and DTLS of viewers connecting, their NACKs,
/// keyframe requests and TWCC feedback. Taken one per turn of the loop, beside the fan-out of
/// every video packet, it queued up: on two busy cores the socket held 2.6 MB unread (about a
/// second of it) and connects took over a second at the 90th percentile.
fn drain_socket(engine: &mut Engine, socket: &UdpSocket, buf: &mut [u8], now: Instant) {
    for _ in 0..DRAIN_AT_MOST {
        match socket.try_recv_from(buf) {
            Ok((n, source)) => engine.handle_datagram(now, source, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                return;
            }
        }
    }
}

/// Does what the engine asks until it has nothing left; returns its next deadline.
fn execute(
    engine: &mut Engine,
    socket: &UdpSocket,
    pipeline: &Pipeline,
    stats: &Stats,
    batch: &mut Batch,
) -> Instant {
    loop {
        match engine.poll_output() {
            Output::Transmit(t) => {
                if batch.push(t) {
                    count(stats, batch.flush(socket));
                }
            }
            Output::RequestKeyframe(rendition) => pipeline.request_keyframe_of(rendition),
            Output::SetActive(rendition, active) => {
                if let Err(e) = pipeline.set_rendition_active(rendition, active) {
                    tracing::warn!(?rendition, active, error = %e, "cannot switch a rendition");
                }
            }
            Output::Timeout(deadline) => {
                if !batch.is_empty() {
                    count(stats, batch.flush(socket));
                }
                return deadline;
            }
        }
    }
}

fn count(stats: &Stats, sent: Sent) {
    stats
        .packets_sent
        .fetch_add(sent.packets, Ordering::Relaxed);
    stats.bytes_sent.fetch_add(sent.bytes, Ordering::Relaxed);
    if sent.dropped > 0 {
        stats.send_drops.fetch_add(sent.dropped, Ordering::Relaxed);
    }
}

/// What the pipeline sends, the main rendition first.
pub fn renditions(pipeline: &Pipeline) -> Vec<Rendition> {
    pipeline
        .renditions()
        .into_iter()
        .map(|r| Rendition {
            id: r.id,
            codec: r.codec.encoding_name,
            on_demand: r.on_demand,
            name: r.name,
            height: r.height,
            bitrate_kbps: r.bitrate_kbps,
        })
        .collect()
}

/// A receiver of every rendition's packets.
fn subscribe(pipeline: &Pipeline) -> Vec<(RenditionId, broadcast::Receiver<RtpPacket>)> {
    pipeline
        .renditions()
        .into_iter()
        .filter_map(|r| Some((r.id, pipeline.subscribe_rendition(r.id)?)))
        .collect()
}

/// The next packet of any rendition. Cancel-safe, as `broadcast::Receiver::recv` is: a
/// packet is never taken and then dropped by the `select!`.
async fn recv_any(
    receivers: &mut [(RenditionId, broadcast::Receiver<RtpPacket>)],
) -> (RenditionId, Result<RtpPacket, RecvError>) {
    if let [(id, only)] = receivers {
        // The usual case (nobody needs another codec): no allocation per packet.
        return (*id, only.recv().await);
    }
    if receivers.is_empty() {
        return std::future::pending().await;
    }
    let receiving = receivers
        .iter_mut()
        .map(|(id, rx)| Box::pin(async move { (*id, rx.recv().await) }));
    futures_util::future::select_all(receiving).await.0
}
