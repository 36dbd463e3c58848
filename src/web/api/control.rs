//! The host's controls of the pipeline, and the quick action's "Go live" and "End party".

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::Value;

use super::library::movie_of;
use super::ok;
use crate::pipeline::GoLivePlan;
use crate::web::AppState;
use crate::web::error::AppError;
use crate::web::extract::{AppJson, Host};

/// `POST /api/control/play`.
pub async fn play(State(state): State<AppState>, _: Host) -> Result<Json<Value>, AppError> {
    state.pipeline.play().await?;
    Ok(ok())
}

/// `POST /api/control/pause`.
pub async fn pause(State(state): State<AppState>, _: Host) -> Result<Json<Value>, AppError> {
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
    _: Host,
    AppJson(seek): AppJson<Seek>,
) -> Result<Json<Value>, AppError> {
    state.pipeline.seek_seconds(seek.position_s).await?;
    Ok(ok())
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
    _: Host,
    AppJson(choice): AppJson<LayoutChoice>,
) -> Result<Json<Value>, AppError> {
    let layout = state.pipeline.find_layout(&choice.layout).await?;
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
    _: Host,
    AppJson(toggle): AppJson<Toggle>,
) -> Result<Json<Value>, AppError> {
    state.pipeline.set_webcam(toggle.on).await?;
    Ok(ok())
}

/// `POST /api/control/mic`.
pub async fn mic(
    State(state): State<AppState>,
    _: Host,
    AppJson(toggle): AppJson<Toggle>,
) -> Result<Json<Value>, AppError> {
    state.pipeline.set_mic_muted(!toggle.on).await?;
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
    _: Host,
    AppJson(audio): AppJson<Audio>,
) -> Result<Json<Value>, AppError> {
    state
        .pipeline
        .set_audio(audio.volume, audio.duck_db)
        .await?;
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

/// `POST /api/party/start`: loads the chosen title, sets webcam, mic and layout, plays
/// ([`Pipeline::go_live`](crate::pipeline::Pipeline::go_live) checks it all first).
pub async fn start(
    State(state): State<AppState>,
    _: Host,
    AppJson(go): AppJson<GoLive>,
) -> Result<Json<Value>, AppError> {
    let layout = match go.layout.as_deref() {
        Some(spec) => Some(state.pipeline.find_layout(spec).await?),
        None => None,
    };
    let plan = GoLivePlan {
        movie: go
            .title
            .as_deref()
            .map(|id| movie_of(&state, id))
            .transpose()?,
        layout,
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
pub async fn end(State(state): State<AppState>, _: Host) -> Result<Json<Value>, AppError> {
    state.pipeline.pause().await?;
    state.party.set_live(false);
    state.chat.end_party();
    Ok(ok())
}

/// Body of `POST /api/phone-link`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneLinkRequest {
    /// Where the phone reaches this server: the host page's own origin, as the host opened
    /// it (`http://192.168.1.20:8080`).
    origin: String,
}

/// `POST /api/phone-link`: the phone-camera link as a QR code (PNG) for the host to scan. The
/// link is `{origin}/phone#key={ingest key}`: the key rides in the fragment, which the phone
/// never sends, and this answer is the only place it is drawn.
pub async fn phone_link(
    State(state): State<AppState>,
    _: Host,
    AppJson(request): AppJson<PhoneLinkRequest>,
) -> Result<impl IntoResponse, AppError> {
    let origin = crate::web::qr::origin(&request.origin)
        .map_err(|why| AppError::new(StatusCode::BAD_REQUEST, why))?;
    let key = state
        .ingest
        .key()
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "this party takes no ingest key"))?;
    let link = format!("{origin}/phone#key={}", key.expose());
    let png = crate::web::qr::png(&link)
        .map_err(|why| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, why))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    ))
}

/// `GET /api/restream`: every RTMP target, its key hidden.
pub async fn restream(
    State(state): State<AppState>,
    _: Host,
) -> Json<Vec<crate::restream::TargetReport>> {
    Json(state.restream.report())
}

/// Body of `POST /api/restream`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestreamRequest {
    /// `rtmp://host/app/KEY`, `rtmps://…` or `twitch`.
    url: String,
}

/// `POST /api/restream`: starts sending the composite to one more RTMP server.
pub async fn add_restream(
    State(state): State<AppState>,
    _: Host,
    AppJson(request): AppJson<RestreamRequest>,
) -> Result<impl IntoResponse, AppError> {
    let report = state.restream.add(&request.url)?;
    Ok((StatusCode::CREATED, Json(report)))
}

/// `DELETE /api/restream/{id}`: stops sending to that server.
pub async fn remove_restream(
    State(state): State<AppState>,
    _: Host,
    axum::extract::Path(id): axum::extract::Path<u32>,
) -> Result<StatusCode, AppError> {
    state.restream.remove(id)?;
    Ok(StatusCode::NO_CONTENT)
}
