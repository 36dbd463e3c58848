//! Chat over HTTP: `GET /chat` upgrades to a WebSocket that streams chat events (state and
//! backlog first), `POST /api/chat` posts a party message.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::error::AppError;
use crate::chat::{Chat, PostError, Published, Subscription};

/// `GET /chat`: the event stream of the party's chat, one JSON object per text frame.
pub async fn socket(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.on_upgrade(move |socket| stream(socket, state.chat))
}

async fn stream(mut socket: WebSocket, chat: Chat) {
    let Subscription { snapshot, mut live } = chat.subscribe();
    for published in snapshot {
        if send(&mut socket, &published).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            event = live.recv() => match event {
                Ok(published) => {
                    if send(&mut socket, &published).await.is_err() {
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
                    for published in snapshot {
                        if send(&mut socket, &published).await.is_err() {
                            return;
                        }
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

async fn send(socket: &mut WebSocket, published: &Published) -> Result<(), axum::Error> {
    // The hub serialised it from a `String`, so it is valid UTF-8.
    let text = Utf8Bytes::try_from(published.json.clone()).unwrap_or_default();
    socket.send(Message::Text(text)).await
}

/// Body of `POST /api/chat`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyPost {
    /// The nickname the viewer picked.
    nick: String,
    /// What they say.
    text: String,
}

/// `POST /api/chat`: a party viewer says something; 201 with the message as everyone sees
/// it, or 4xx with the reason.
pub async fn post(
    State(state): State<AppState>,
    body: Result<Json<PartyPost>, JsonRejection>,
) -> Result<Response, AppError> {
    let Json(post) = body.map_err(|e| AppError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    match state.chat.post(&post.nick, &post.text) {
        Ok(published) => Ok((
            StatusCode::CREATED,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            published.json.clone(),
        )
            .into_response()),
        Err(e) => {
            let status = match e {
                PostError::TooFast(_) => StatusCode::TOO_MANY_REQUESTS,
                PostError::TooLong(_) => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            Err(AppError::new(status, e.to_string()))
        }
    }
}
