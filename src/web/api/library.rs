//! The host's media library: the titles, their thumbnails, and playing one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ok;
use crate::library::Library;
use crate::pipeline::source::MovieSource;
use crate::web::AppState;
use crate::web::error::AppError;
use crate::web::extract::{AppJson, Host};

/// The library, or 404 when cowatch runs without one.
fn library_of(state: &AppState) -> Result<&Library, AppError> {
    state.library.as_ref().ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "no media library: start cowatch with --library DIR",
        )
    })
}

/// The movie of library title `id`.
pub(super) fn movie_of(state: &AppState, id: &str) -> Result<MovieSource, AppError> {
    let path = library_of(state)?.path_of(id).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            format!("no title {id:?} in the library"),
        )
    })?;
    Ok(MovieSource::parse(&path.to_string_lossy())?)
}

/// Plays library title `id` and remembers it as the current one.
async fn play_title(state: &AppState, id: &str) -> Result<(), AppError> {
    state.pipeline.load(movie_of(state, id)?).await?;
    state.party.set_current_title(Some(id.to_owned()));
    Ok(())
}

/// `GET /api/library`: the titles, with duration and thumbnail state.
pub async fn library(State(state): State<AppState>, _: Host) -> Result<Json<Value>, AppError> {
    Ok(Json(json!({
        "titles": library_of(&state)?.titles(),
        "current": state.party.current_title(),
    })))
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
    _: Host,
    AppJson(load): AppJson<Load>,
) -> Result<Json<Value>, AppError> {
    play_title(&state, &load.title).await?;
    Ok(ok())
}

/// `POST /api/control/next`: the next title of the library.
pub async fn next(State(state): State<AppState>, _: Host) -> Result<Json<Value>, AppError> {
    let next = library_of(&state)?
        .next_playable(state.party.current_title().as_deref())
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "the library has no playable title"))?;
    play_title(&state, &next.id).await?;
    Ok(Json(json!({ "ok": true, "title": next })))
}

/// `GET /api/library/{id}/thumbnail`: a 320x180 PNG.
/// The key comes in the `Authorization` header only, never in the URL (the page fetches it
/// into a blob URL).
pub async fn thumbnail(
    State(state): State<AppState>,
    _: Host,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let library = library_of(&state)?.clone();
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
    ))
}
