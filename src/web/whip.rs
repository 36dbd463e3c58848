//! WHIP signalling (RFC 9725) for a publisher's camera and mic: OBS, the host page, a phone.
//! POST an offer with the host key or the ingest key as a Bearer token, get an answer and a
//! session URL; DELETE it to stop. Non-trickle: the answer carries our candidate, so PATCH is
//! refused (`405`, as RFC 9725 allows); PATCH and OPTIONS are WHEP's (`whep.rs`).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::AppState;
use super::error::AppError;
use super::extract::bearer;
use crate::ingest::PublisherId;
use crate::party::Role;

/// Query of `POST /whip`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishQuery {
    /// Take over from whoever publishes now (the host page's *replace*).
    #[serde(default)]
    replace: bool,
}

/// `POST /whip`: a publisher's offer in, the answer out.
pub async fn post(
    State(state): State<AppState>,
    query: Result<Query<PublishQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    may_publish(&state, &headers)?;
    let Query(query) = query.map_err(|_| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "the only query WHIP takes here is ?replace=true",
        )
    })?;
    let offer = super::whep::sdp_offer(&headers, &body)?;
    let published = state.ingest.publish(offer, query.replace).await?;
    Ok(super::whep::created(
        &format!("/whip/{}", published.id),
        published.answer,
    ))
}

/// `DELETE /whip/{id}`: the publisher stops; the local camera and mic come back.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    may_publish(&state, &headers)?;
    let id: PublisherId = id
        .parse()
        .map_err(|_| AppError::new(StatusCode::NOT_FOUND, "no such publisher session"))?;
    state.ingest.unpublish(id).await?;
    Ok(StatusCode::OK)
}

/// The host key or the ingest key: `401` without a key, `403` with another.
fn may_publish(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let key = bearer(headers).filter(|k| !k.is_empty());
    let Some(key) = key else {
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "publishing needs the host key or the ingest key: send Authorization: Bearer <key>",
        ));
    };
    if state.ingest.is_ingest_key(key) || state.party.role(Some(key)) == Role::Host {
        return Ok(());
    }
    Err(AppError::new(
        StatusCode::FORBIDDEN,
        "that key may not publish: use the host key or the ingest key",
    ))
}
