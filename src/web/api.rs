//! The JSON API under `/api/`: what the host dashboard, the mod tools, a Stream Deck or a
//! bot call. Each handler extracts, asks [`Party`](crate::party::Party) who the caller is,
//! calls one module handle and maps the result; the README lists every endpoint.
//!
//! Credentials: `Authorization: Bearer <host or moderator key>`. A call without a key that
//! needs one is `401`; a key that does not grant the role is `403`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::AppError;
use crate::moderation::{Action, Actor};
use crate::party::Role;
use crate::pipeline::layout::Layout;
use crate::pipeline::source::MovieSource;
use crate::pipeline::{GoLivePlan, PipelineError};

/// Who is calling, from the `Authorization` header.
pub struct Caller {
    /// What they may do.
    pub role: Role,
    /// Whether they presented any key at all (no key: 401, wrong key: 403).
    pub presented: bool,
    /// Name for the audit log.
    pub name: String,
}

impl Caller {
    /// Refuses unless the caller is at least `needed` (host > moderator > viewer).
    fn require(&self, needed: Role) -> Result<(), AppError> {
        if self.role.at_least(needed) {
            return Ok(());
        }
        let who = match needed {
            Role::Host => "the host",
            _ => "the host and moderators",
        };
        if self.presented {
            Err(AppError::new(
                StatusCode::FORBIDDEN,
                format!("only {who} may do that"),
            ))
        } else {
            Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                format!("only {who} may do that: send Authorization: Bearer <key>"),
            ))
        }
    }

    fn actor(&self) -> Actor {
        Actor {
            role: self.role,
            name: self.name.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let key = bearer(&parts.headers);
        let role = state.party.role(key);
        let name = match role {
            Role::Host => "host".to_owned(),
            Role::Moderator => key
                .and_then(|k| state.party.moderator_name(k))
                .unwrap_or_else(|| "moderator".into()),
            Role::Viewer => "viewer".to_owned(),
        };
        Ok(Caller {
            role,
            presented: key.is_some_and(|k| !k.is_empty()),
            name,
        })
    }
}

/// The key of `Authorization: Bearer <key>`.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// A JSON body, or 400 with serde's one-line reason (malformed JSON, an unknown field or
/// action, a wrong type).
fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, AppError> {
    body.map(|Json(b)| b)
        .map_err(|e| AppError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

fn ok() -> Response {
    Json(json!({ "ok": true })).into_response()
}

// ── party state ──────────────────────────────────────────────────────────────────────────

/// `GET /api/party`: what anyone in the party may know.
pub async fn party(State(state): State<AppState>) -> Response {
    let health = state.pipeline.health();
    Json(json!({
        "live": state.party.is_live(),
        "movie": health.movie,
        "layout": health.layout,
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
    }))
    .into_response()
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
    request: Result<Json<SessionRequest>, JsonRejection>,
) -> Result<Response, AppError> {
    let request = body(request)?;
    if caller.role == Role::Viewer && !state.party.admits(request.invite.as_deref()) {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "this party needs an invite: ask the host for the link",
        ));
    }
    let session = state.party.session(request.token.as_deref())?;
    Ok(Json(json!({
        "token": session.token,
        "nick": session.nick,
        "role": caller.role,
        "moderator_name": (caller.role == Role::Moderator).then_some(caller.name),
    }))
    .into_response())
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
    request: Result<Json<PartyPost>, JsonRejection>,
) -> Result<Response, AppError> {
    let post = body(request)?;
    let published = state
        .party
        .post_chat(&state.chat, &post.session, &post.nick, &post.text)?;
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        published.json.clone(),
    )
        .into_response())
}

// ── host controls ────────────────────────────────────────────────────────────────────────

/// `POST /api/control/play`.
pub async fn play(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    state.pipeline.play().await?;
    Ok(ok())
}

/// `POST /api/control/pause`.
pub async fn pause(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    state.pipeline.pause().await?;
    Ok(ok())
}

/// Body of `POST /api/control/seek`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seek {
    /// Where to, in seconds from the start.
    position_s: f64,
}

/// `POST /api/control/seek`.
pub async fn seek(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<Seek>, JsonRejection>,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let Seek { position_s } = body(request)?;
    state.pipeline.seek_seconds(position_s).await?;
    Ok(ok())
}

/// Body of `POST /api/control/load`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// A title id from `GET /api/library`.
    title: String,
}

/// `POST /api/control/load`: plays a title from the library.
pub async fn load(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<Load>, JsonRejection>,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let Load { title } = body(request)?;
    load_title(&state, &title).await?;
    Ok(ok())
}

async fn load_title(state: &AppState, id: &str) -> Result<(), AppError> {
    let source = movie_of(state, id)?;
    state.pipeline.load(source).await?;
    state.party.set_current_title(Some(id.to_owned()));
    Ok(())
}

/// The movie of library title `id`.
fn movie_of(state: &AppState, id: &str) -> Result<MovieSource, AppError> {
    let library = state.library.as_ref().ok_or_else(no_library)?;
    let path = library.path_of(id).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            format!("no title {id:?} in the library"),
        )
    })?;
    Ok(MovieSource::parse(&path.to_string_lossy())?)
}

fn no_library() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "no media library: start cowatch with --library DIR",
    )
}

/// `POST /api/control/next`: the next title of the library.
pub async fn next(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let library = state.library.as_ref().ok_or_else(no_library)?;
    let current = state.party.current_title().unwrap_or_default();
    let next = library
        .next_after(&current)
        .or_else(|| library.titles().into_iter().find(|t| t.error.is_none()))
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "the library has no playable title"))?;
    load_title(&state, &next.id).await?;
    Ok(Json(json!({ "ok": true, "title": next })).into_response())
}

/// Body of `POST /api/control/layout`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutChoice {
    /// `side-panel`, `inset`, or a layout file's path.
    layout: String,
}

/// `POST /api/control/layout`.
pub async fn layout(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<LayoutChoice>, JsonRejection>,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let LayoutChoice { layout } = body(request)?;
    let layout =
        Layout::load(&layout).map_err(|e| AppError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    state.pipeline.set_layout(layout).await?;
    Ok(ok())
}

/// Body of the on/off toggles.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    /// On (true) or off.
    on: bool,
}

/// `POST /api/control/webcam`.
pub async fn webcam(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<Toggle>, JsonRejection>,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let Toggle { on } = body(request)?;
    state.pipeline.set_webcam(on).await?;
    Ok(ok())
}

/// `POST /api/control/mic`.
pub async fn mic(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<Toggle>, JsonRejection>,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let Toggle { on } = body(request)?;
    state.pipeline.set_mic_muted(!on).await?;
    Ok(ok())
}

/// Body of `POST /api/control/audio`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audio {
    /// Movie volume, 0.0 to 1.5.
    #[serde(default)]
    volume: Option<f64>,
    /// Ducking depth in dB, 0 to 60.
    #[serde(default)]
    duck_db: Option<f64>,
}

/// `POST /api/control/audio`: movie volume and ducking.
pub async fn audio(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<Audio>, JsonRejection>,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let Audio { volume, duck_db } = body(request)?;
    state.pipeline.set_audio(volume, duck_db).await?;
    Ok(ok())
}

/// Body of `POST /api/party/start`, the quick action's "Go live".
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GoLive {
    /// A title id; the current movie when absent.
    #[serde(default)]
    title: Option<String>,
    /// Webcam on or off.
    #[serde(default)]
    webcam: Option<bool>,
    /// Mic on or off.
    #[serde(default)]
    mic: Option<bool>,
    /// Layout name.
    #[serde(default)]
    layout: Option<String>,
}

/// `POST /api/party/start`: loads the chosen title, sets webcam, mic and layout, plays.
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<GoLive>, JsonRejection>,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let go = body(request)?;
    let plan = GoLivePlan {
        movie: go
            .title
            .as_deref()
            .map(|id| movie_of(&state, id))
            .transpose()?,
        layout: go
            .layout
            .as_deref()
            .map(Layout::load)
            .transpose()
            .map_err(PipelineError::from)?,
        webcam: go.webcam,
        mic: go.mic,
    };
    state.pipeline.go_live(plan).await?;
    if let Some(id) = go.title {
        state.party.set_current_title(Some(id));
    }
    state.party.set_live(true);
    Ok(ok())
}

/// `POST /api/party/end`: pauses, and forgets the party chat (it is not kept after a
/// party unless chat logging is on).
pub async fn end(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    state.pipeline.pause().await?;
    state.party.set_live(false);
    state.chat.end_party();
    Ok(ok())
}

// ── library, viewers, moderators ─────────────────────────────────────────────────────────

/// `GET /api/library`: the titles, with duration and thumbnail state.
pub async fn library(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let library = state.library.as_ref().ok_or_else(no_library)?;
    Ok(Json(json!({
        "titles": library.titles(),
        "current": state.party.current_title(),
    }))
    .into_response())
}

/// Query of the thumbnail, so an `<img>` can carry the key.
#[derive(Deserialize)]
pub struct KeyQuery {
    /// The host key, for `<img src>` which cannot send headers.
    #[serde(default)]
    key: Option<String>,
}

/// `GET /api/library/{id}/thumbnail`: a 320x180 PNG.
pub async fn thumbnail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<KeyQuery>,
) -> Result<Response, AppError> {
    let caller = match query.key.as_deref() {
        Some(key) => Caller {
            role: state.party.role(Some(key)),
            presented: true,
            name: String::new(),
        },
        None => caller,
    };
    caller.require(Role::Host)?;
    let library = state.library.clone().ok_or_else(no_library)?;
    let png = tokio::task::spawn_blocking(move || library.thumbnail_png(&id))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "no thumbnail (yet)"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=60"),
        ],
        png,
    )
        .into_response())
}

/// `GET /api/viewers`: how many watch, and the party nicknames.
pub async fn viewers(State(state): State<AppState>, caller: Caller) -> Result<Response, AppError> {
    caller.require(Role::Moderator)?;
    let stats = state.broadcaster.stats();
    let nicknames: Vec<_> = state
        .party
        .nicknames()
        .into_iter()
        .map(|(nick, since)| json!({ "nick": nick, "in_party_s": since.as_secs() }))
        .collect();
    Ok(Json(json!({
        "watching": stats.connected,
        "sessions": state.party.session_count(),
        "nicknames": nicknames,
    }))
    .into_response())
}

/// `GET /api/moderators`.
pub async fn moderators(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let links = state.party.moderators()?;
    Ok(Json(json!({ "moderators": links })).into_response())
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
    caller: Caller,
    headers: HeaderMap,
    request: Result<Json<NewModerator>, JsonRejection>,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    let NewModerator { label } = body(request)?;
    let label = label.trim();
    if label.is_empty() || label.chars().count() > 50 {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "label must be 1 to 50 characters",
        ));
    }
    let (link, key) = state.party.add_moderator(label)?;
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
    )
        .into_response())
}

/// `DELETE /api/moderators/{id}`: the link stops working at once.
pub async fn revoke_moderator(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    caller.require(Role::Host)?;
    if state.party.revoke_moderator(&id)? {
        Ok(ok())
    } else {
        Err(AppError::new(
            StatusCode::NOT_FOUND,
            format!("no live moderator link {id:?}"),
        ))
    }
}

// ── moderation ───────────────────────────────────────────────────────────────────────────

/// `POST /api/mod`: one moderator action (`{"action":"ban",…}`); the answer says whether
/// Twitch took it too.
pub async fn moderate(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<Action>, JsonRejection>,
) -> Result<Response, AppError> {
    caller.require(Role::Moderator)?;
    let action = body(request)?;
    let outcome = state.moderation.apply(&caller.actor(), action).await?;
    let twitch = match &outcome.twitch {
        None => json!(null),
        Some(Ok(())) => json!({ "ok": true }),
        Some(Err(message)) => json!({ "ok": false, "error": message }),
    };
    Ok(Json(json!({ "applied": outcome.applied, "twitch": twitch })).into_response())
}

/// Query of `GET /api/mod/audit`.
#[derive(Deserialize)]
pub struct AuditQuery {
    /// How many entries, newest first (default 100, at most 1000).
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /api/mod/audit`: who did what, newest first.
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Response, AppError> {
    caller.require(Role::Moderator)?;
    let limit = query.limit.unwrap_or(100).min(1000);
    let entries = state.moderation.audit(limit)?;
    Ok(Json(json!({ "audit": entries })).into_response())
}

/// `GET /api/mod/state`: bans, blocked terms and the party-chat rule.
pub async fn mod_state(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, AppError> {
    caller.require(Role::Moderator)?;
    let bans = state.moderation.bans()?;
    let terms = state.moderation.blocked_terms()?;
    Ok(Json(json!({
        "bans": bans,
        "blocked_terms": terms,
        "party_chat": state.moderation.party_chat(),
        "room": state.chat.modes(),
        "forwards_to_twitch": state.moderation.forwards_to_twitch(),
    }))
    .into_response())
}
