//! WHEP signalling (RFC 9725): POST an offer, get an answer and a session URL; DELETE it to
//! leave. Non-trickle: the answer carries our candidate, so PATCH is refused. Beyond WHEP, a
//! player whose picture froze POSTs `{session URL}/keyframe`, and the page's quality menu POSTs
//! `{session URL}/quality`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::AppError;
use super::extract::{Admitted, AppJson, Watcher};
use super::limit::Peer;
use crate::broadcast::{Quality, ViewerId};

/// `POST /whep`: a viewer's offer in, the answer out. The caller's address counts its offers
/// still connecting (`broadcast::SeatLimits`).
pub async fn post(
    State(state): State<AppState>,
    _: Admitted,
    _: Watcher,
    Peer(from): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let offer = sdp_offer(&headers, &body)?;
    let joined = state.broadcaster.join(offer, from)?;
    Ok(created(&format!("/whep/{}", joined.id), joined.answer))
}

/// The SDP offer in a WHEP or WHIP POST: `application/sdp`, UTF-8.
pub(super) fn sdp_offer<'a>(headers: &HeaderMap, body: &'a Bytes) -> Result<&'a str, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/sdp",
        ));
    }
    std::str::from_utf8(body)
        .map_err(|_| AppError::new(StatusCode::BAD_REQUEST, "malformed SDP offer: not UTF-8"))
}

/// `201 Created`: the answer, and the session's URL (`location`, our own hex id) to DELETE.
pub(super) fn created(location: &str, answer: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            ),
            (
                header::LOCATION,
                HeaderValue::from_str(location).expect("hex id is a valid header"),
            ),
        ],
        answer,
    )
        .into_response()
}

/// `DELETE /whep/{id}`: the viewer leaves.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    state.broadcaster.leave(session(&id)?).await?;
    Ok(StatusCode::OK)
}

/// `POST /whep/{id}/keyframe`: the viewer's picture froze; a keyframe lets it start again.
/// Merged with every other viewer's requests, so a page cannot make the encoder spend more.
pub async fn keyframe(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    state.broadcaster.request_keyframe(session(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /whep/{id}/quality`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityRequest {
    /// `auto`, or a rendition's label such as `360p`.
    quality: String,
}

/// `POST /whep/{id}/quality`: the viewer picked in the page's menu. A cap takes effect at the
/// next keyframe of the rendition it lands on, on the same session (no renegotiation).
pub async fn quality(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(request): AppJson<QualityRequest>,
) -> Result<StatusCode, AppError> {
    let id = session(&id)?;
    let quality: Quality = request.quality.parse()?;
    state.broadcaster.set_quality(id, quality).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /whep/{id}` and `/whip/{id}`: trickle ICE is not needed (our candidate is in the
/// answer).
pub async fn patch() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported: send a complete offer",
    )
}

/// `OPTIONS /whep` and `/whip` (and CORS preflights): what a WHEP player or a WHIP publisher
/// may send.
pub async fn options() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [
            ("accept-post", "application/sdp"),
            ("allow", "OPTIONS, POST, DELETE, PATCH"),
            (
                "access-control-allow-methods",
                "OPTIONS, POST, DELETE, PATCH",
            ),
            (
                "access-control-allow-headers",
                "Content-Type, Authorization, If-Match",
            ),
            ("access-control-max-age", "86400"),
        ],
    )
}

/// The session named in a WHEP resource URL; an id that is not one is no session (404), as an
/// unknown one is.
fn session(id: &str) -> Result<ViewerId, AppError> {
    id.parse()
        .map_err(|_| AppError::new(StatusCode::NOT_FOUND, "no such viewer session"))
}
