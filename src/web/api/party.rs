//! What anyone in the party may know, viewers' sessions and party chat, and the host's
//! moderator links.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ok;
use crate::party::Role;
use crate::web::AppState;
use crate::web::error::AppError;
use crate::web::extract::{Admitted, AppJson, Caller, Host, Moderator};

/// `GET /api/party`: what anyone in the party may know.
pub async fn party(State(state): State<AppState>) -> Json<Value> {
    let health = state.pipeline.health();
    Json(json!({
        "live": state.party.is_live(),
        "movie": health.movie,
        "layout": health.layout,
        // Where the composite's chat area is: the page lays its live chat over it.
        "geometry": health.geometry,
        "webcam": health.webcam,
        "mic": health.mic,
        "movie_volume": health.movie_volume,
        "duck_db": health.duck_db,
        "viewers": state.broadcaster.stats().connected,
        "max_viewers": state.broadcaster.max_viewers(),
        "invite_only": state.party.invite_only(),
        "chat": state.chat.connection(),
        "room": state.chat.modes(),
        "party_chat": state.moderation.party_chat(),
        "nick_rule": crate::chat::nick_rule(),
        // What the page's quality menu offers besides Auto, highest first.
        "qualities": state.broadcaster.qualities(),
    }))
}

/// Query of `GET /api/placement`.
#[derive(Deserialize, Default)]
pub struct PlacementQuery {
    /// The edge URL the page could not play from just now.
    #[serde(default)]
    failed: Option<String>,
}

/// `GET /api/placement`: where a new viewer watches, the origin or an edge (see `edge/`).
/// Admitted as WHEP is: an edge plays the same party.
pub async fn placement(
    State(state): State<AppState>,
    _: Admitted,
    Query(query): Query<PlacementQuery>,
) -> Json<crate::edge::Placement> {
    let stats = state.broadcaster.stats();
    let origin = crate::edge::OriginLoad {
        viewers: stats.viewers,
        max: state.broadcaster.max_viewers(),
        saturated: stats.saturated,
    };
    Json(
        state
            .edges
            .place(origin, query.failed.as_deref(), std::time::Instant::now()),
    )
}

/// Body of `POST /api/session`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// A token the page got before, to keep its time in the party across reloads.
    #[serde(default)]
    token: Option<String>,
    /// The invite code of an invite-only party.
    #[serde(default)]
    invite: Option<String>,
}

/// `POST /api/session`: a viewer's page says hello; gets a session token and learns its
/// role (from the `Authorization` key, if any).
pub async fn session(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(request): AppJson<SessionRequest>,
) -> Result<Json<Value>, AppError> {
    let session = state.party.open_session(
        caller.role,
        request.invite.as_deref(),
        request.token.as_deref(),
    )?;
    Ok(Json(json!({
        "token": session.token,
        "nick": session.nick,
        "role": caller.role,
        "moderator_name": (caller.role == Role::Moderator).then_some(caller.name),
    })))
}

/// Body of `POST /api/chat`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyPost {
    /// The session token from `POST /api/session`.
    session: String,
    /// The nickname to speak as (claimed for the session on first use).
    nick: String,
    /// What to say.
    text: String,
}

/// `POST /api/chat`: a party viewer says something; 201 with the message as everyone sees
/// it, or 4xx with the reason (bad nickname, too long, banned, slow mode…).
pub async fn chat(
    State(state): State<AppState>,
    AppJson(post): AppJson<PartyPost>,
) -> Result<impl IntoResponse, AppError> {
    let published = state
        .party
        .post_chat(&state.chat, &post.session, &post.nick, &post.text)?;
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        published.json.clone(),
    ))
}

/// `GET /api/viewers`: how many watch, the party nicknames, and each video stream's quality
/// and link, so the streamer sees who struggles.
pub async fn viewers(State(state): State<AppState>, Moderator(caller): Moderator) -> Json<Value> {
    let nicknames: Vec<Value> = state
        .party
        .nicknames()
        .into_iter()
        .map(|(nick, since)| json!({ "nick": nick, "in_party_s": since.as_secs() }))
        .collect();
    // A stopped fan-out has no streams; the rest of the answer still holds.
    let streams: Vec<Value> = state
        .broadcaster
        .sessions()
        .await
        .map(|s| s.viewers)
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            json!({
                "id": v.id,
                "codec": v.codec,
                "connected": v.connected,
                "rendition": v.rendition,
                "quality": v.quality,
                "estimate_kbps": v.estimate_kbps,
                "loss": v.loss,
                "rtt_ms": v.rtt_ms,
                "switches": v.switches,
            })
        })
        .collect();
    Json(json!({
        "watching": state.broadcaster.stats().connected,
        "sessions": state.party.session_count(),
        "nicknames": nicknames,
        "streams": streams,
        // Each Janus edge: its URL (no secret), state, viewers by Janus, our mountpoint.
        "edges": state.edges.report(),
        // The stored Twitch sign-in (login, whether it still works): the host's own
        // business, so moderators do not get it.
        "twitch": state
            .twitch
            .as_ref()
            .filter(|_| caller.role == Role::Host)
            .map(crate::twitch::Session::status),
    }))
}

/// `GET /api/moderators`.
pub async fn moderators(State(state): State<AppState>, _: Host) -> Result<Json<Value>, AppError> {
    Ok(Json(json!({ "moderators": state.party.moderators()? })))
}

/// Body of `POST /api/moderators`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewModerator {
    /// Who it is for, shown in the audit log.
    label: String,
}

/// `POST /api/moderators`: mints a moderator link; its key is in the answer once.
pub async fn add_moderator(
    State(state): State<AppState>,
    _: Host,
    headers: HeaderMap,
    AppJson(request): AppJson<NewModerator>,
) -> Result<impl IntoResponse, AppError> {
    let (link, key) = state.party.add_moderator(&request.label)?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": link.id,
            "label": link.label,
            "key": key.expose(),
            "link": format!("http://{host}/#mod={}", key.expose()),
        })),
    ))
}

/// `DELETE /api/moderators/{id}`: the link stops working at once.
pub async fn revoke_moderator(
    State(state): State<AppState>,
    _: Host,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    state.party.revoke_moderator(&id)?;
    Ok(ok())
}
