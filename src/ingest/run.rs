//! The ingest's loop: the one task that owns the publisher's session, its socket and its
//! clock. It accepts or refuses a publish (the one place that knows who publishes), tells the
//! pipeline when a publisher's feeds start and end, and passes media on to them.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use str0m::net::Transmit;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::publisher::Publisher;
use super::{Command, IngestError};
use crate::pipeline::Pipeline;

/// Largest datagram we read.
const RECEIVE_BUFFER: usize = 2048;

/// How long the loop sleeps with no publisher and nothing to do.
const IDLE: Duration = Duration::from_secs(1);

/// Runs until `shutdown`, or until every [`super::Ingest`] handle is gone.
pub async fn run(
    socket: std::net::UdpSocket,
    mut commands: mpsc::UnboundedReceiver<Command>,
    pipeline: Pipeline,
    shutdown: CancellationToken,
) {
    let (socket, hop) = match sockets(socket).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(error = %e, "the WHIP ingest cannot use its UDP sockets; no publisher can connect");
            return;
        }
    };
    let local = match socket.local_addr() {
        Ok(local) => local,
        Err(e) => {
            tracing::error!(error = %e, "the WHIP ingest's socket has no address");
            return;
        }
    };
    let mut publisher: Option<Publisher> = None;
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let now = Instant::now();
        if let Some(p) = &mut publisher {
            if now >= p.next_timeout {
                p.handle_timeout(now);
            }
            drain(p, now, &socket, &hop);
            if p.is_gone(now) {
                let gone = publisher.take().expect("checked above");
                tracing::info!(publisher = %gone.id, "the publisher is gone; back to the local camera and mic");
                gone.close(&mut |t| send(&socket, t));
                unpublish(&pipeline).await;
                continue;
            }
        }
        let deadline = publisher
            .as_ref()
            .map_or(now + IDLE, |p| p.next_timeout.max(now));
        tokio::select! {
            () = shutdown.cancelled() => break,
            command = commands.recv() => match command {
                Some(Command::Publish(accepted, replace, reply)) => {
                    let result = publish(&mut publisher, *accepted, replace, &pipeline, &socket).await;
                    let _ = reply.send(result);
                }
                Some(Command::Unpublish(id, reply)) => {
                    let result = match publisher.take_if(|p| p.id == id) {
                        Some(p) => {
                            tracing::info!(publisher = %id, "the publisher stopped");
                            p.close(&mut |t| send(&socket, t));
                            unpublish(&pipeline).await;
                            Ok(())
                        }
                        None => Err(IngestError::NotFound),
                    };
                    let _ = reply.send(result);
                }
                Some(Command::State(reply)) => {
                    let _ = reply.send(publisher.as_ref().map(Publisher::state));
                }
                None => break,
            },
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    if let Some(p) = publisher.as_mut().filter(|p| p.accepts(Instant::now(), source, local, &buf[..n])) {
                        p.handle_datagram(Instant::now(), source, local, &buf[..n]);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "WHIP UDP receive failed"),
            },
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
    if let Some(p) = publisher.take() {
        p.close(&mut |t| send(&socket, t));
    }
    tracing::info!("ingest stopped");
}

/// The publishers' socket, and the one the media leaves by for the feeds on loopback.
async fn sockets(socket: std::net::UdpSocket) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let socket = UdpSocket::from_std(socket)?;
    let hop = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    Ok((socket, hop))
}

/// Takes a publisher on, unless someone publishes and this one does not replace them.
async fn publish(
    current: &mut Option<Publisher>,
    accepted: super::publisher::Accepted,
    replace: bool,
    pipeline: &Pipeline,
    socket: &UdpSocket,
) -> Result<(), IngestError> {
    if current.is_some() && !replace {
        return Err(IngestError::Busy);
    }
    let now = Instant::now();
    let publisher = Publisher::new(accepted, now)
        .map_err(|e| IngestError::Pipeline(format!("no loopback port for its feeds: {e}")))?;
    // The feeds listen before the answer leaves: the publisher's first packets find them.
    pipeline
        .publish(Some(publisher.publication()))
        .await
        .map_err(|e| IngestError::Pipeline(e.to_string()))?;
    if let Some(old) = current.replace(publisher) {
        tracing::info!(publisher = %old.id, "a new publisher replaces this one");
        old.close(&mut |t| send(socket, t));
    }
    Ok(())
}

/// The local camera and mic come back.
async fn unpublish(pipeline: &Pipeline) {
    if let Err(e) = pipeline.publish(None).await {
        tracing::warn!(error = %e, "cannot go back to the local camera and mic");
    }
}

fn drain(publisher: &mut Publisher, now: Instant, socket: &UdpSocket, hop: &UdpSocket) {
    publisher.poll(now, &mut |t| send(socket, t), &mut |to, data| {
        // Loopback to our own feed: a full buffer drops it, as the network would.
        let _ = hop.try_send_to(data, to);
    });
}

fn send(socket: &UdpSocket, t: Transmit) {
    if let Err(e) = socket.try_send_to(&t.contents, t.destination) {
        tracing::debug!(error = %e, "WHIP UDP send failed");
    }
}
