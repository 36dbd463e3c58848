//! Chat over HTTP: `GET /chat` upgrades to a WebSocket that streams chat events (state and
//! backlog first). Party messages come in through `POST /api/chat` (see `api`).
//!
//! Each text frame carries one or more events as JSON objects separated by `\n`: when chat
//! runs faster than a socket drains, the events waiting are sent together, which keeps the
//! cost per event low for both ends at a busy channel's peak.

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::extract::Admitted;
use super::limit::Peer;
use crate::chat::{Chat, Published, Subscription};
use crate::shutdown::Shutdown;

/// `GET /chat`: the event stream of the party's chat, one JSON object per text frame.
pub async fn socket(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    _: Admitted,
    peer: Peer,
) -> Response {
    let seat = match state.limits.chat_seat(peer) {
        Ok(seat) => seat,
        Err(reason) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONNECTION, "close")],
                reason,
            )
                .into_response();
        }
    };
    // The page sends nothing but pings; tungstenite clears its whole read buffer (128 KiB
    // by default) on every read attempt, and this loop reads on every event it sends.
    ws.read_buffer_size(4096)
        // Checked on each frame's header and on the sum of a message's fragments, before
        // they are buffered: one socket cannot make the server hold more than this.
        .max_frame_size(MAX_INCOMING)
        .max_message_size(MAX_INCOMING)
        // One frame (at most about MAX_FRAME) waits here at a time; past this a send fails.
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            stream(socket, state.chat, state.shutdown).await;
            drop(seat);
        })
}

/// Most bytes a client message may have, fragments included: the page sends only pings.
const MAX_INCOMING: usize = 4 * 1024;

/// Most bytes of events put in one frame.
const MAX_FRAME: usize = 64 * 1024;

/// Most bytes waiting in a socket's write buffer, over what the kernel holds.
const MAX_WRITE_BUFFER: usize = 4 * MAX_FRAME;

/// How long one frame may wait for a client to read: a client that stopped reading is cut
/// then, its backlog never more than the kernel's send buffer and one frame. Others are not
/// held up meanwhile: each socket has its own task, and the hub never waits for one.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

async fn stream(mut socket: WebSocket, chat: Chat, shutdown: Shutdown) {
    let Subscription { snapshot, mut live } = chat.subscribe();
    if send(&mut socket, &snapshot).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // "Going away": the page shows reconnecting… and comes back with the server.
                let close = CloseFrame { code: close_code::AWAY, reason: "cowatch is stopping".into() };
                let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(close)))).await;
                return;
            }
            event = live.recv() => match event {
                Ok(first) => {
                    let mut batch = vec![first];
                    let mut bytes = batch[0].json.len();
                    while bytes < MAX_FRAME {
                        match live.try_recv() {
                            Ok(next) => {
                                bytes += next.json.len() + 1;
                                batch.push(next);
                            }
                            // A lag shows up on the next `recv`.
                            Err(_) => break,
                        }
                    }
                    if send(&mut socket, &batch).await.is_err() {
                        return;
                    }
                }
                // Too slow to keep up: start over from the current state rather than show a
                // chat with holes (deletions the page never saw would stay visible).
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "chat socket fell behind; resending the backlog");
                    let reset = Utf8Bytes::from_static(r#"{"type":"reset"}"#);
                    if socket.send(Message::Text(reset)).await.is_err() {
                        return;
                    }
                    let Subscription { snapshot, live: fresh } = chat.subscribe();
                    live = fresh;
                    if send(&mut socket, &snapshot).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // The page only listens; posting goes through `POST /api/chat`, which can
                // answer with a status and a reason.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sends events as frames of at most about [`MAX_FRAME`] bytes; fails when the client does not
/// take one within [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, events: &[Arc<Published>]) -> Result<(), axum::Error> {
    for chunk in frames(events) {
        tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(chunk)))
            .await
            .map_err(|_| {
                tracing::debug!("chat socket cut: the client stopped reading");
                axum::Error::new("the client stopped reading")
            })??;
    }
    Ok(())
}

/// Joins events with `\n` into frames of at most about [`MAX_FRAME`] bytes.
fn frames(events: &[Arc<Published>]) -> Vec<Utf8Bytes> {
    let mut frames = Vec::new();
    let mut text = String::new();
    for published in events {
        if !text.is_empty() && text.len() + published.json.len() > MAX_FRAME {
            frames.push(Utf8Bytes::from(std::mem::take(&mut text)));
        }
        if !text.is_empty() {
            text.push('\n');
        }
        // The hub serialised it from a `String`, so it is valid UTF-8.
        text.push_str(std::str::from_utf8(&published.json).unwrap_or_default());
    }
    if !text.is_empty() {
        frames.push(Utf8Bytes::from(text));
    }
    frames
}
