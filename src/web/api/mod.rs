//! The JSON API under `/api/`: what the host dashboard, the mod tools, a Stream Deck or a
//! bot call. Each handler names who may call it ([`Host`](super::extract::Host),
//! [`Moderator`](super::extract::Moderator) or anyone) and its body
//! ([`AppJson`](super::extract::AppJson)), calls one module handle and returns what it
//! answers; errors become statuses once, in `web/error.rs`. The README lists every endpoint.
//!
//! - `party`: what anyone may know, sessions, party chat, viewers and moderator links;
//! - `control`: the host's controls and the quick action's "Go live";
//! - `library`: the titles, their thumbnails, playing one;
//! - `moderation`: moderator actions, the audit log, the moderation state.

mod control;
mod library;
mod moderation;
mod party;

use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;

/// Every `/api/` route.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/party", get(party::party))
        .route("/api/placement", get(party::placement))
        .route("/api/session", post(party::session))
        .route("/api/chat", post(party::chat))
        .route("/api/viewers", get(party::viewers))
        .route(
            "/api/moderators",
            get(party::moderators).post(party::add_moderator),
        )
        .route("/api/moderators/{id}", delete(party::revoke_moderator))
        .route("/api/control/play", post(control::play))
        .route("/api/control/pause", post(control::pause))
        .route("/api/control/seek", post(control::seek))
        .route("/api/control/layout", post(control::layout))
        .route("/api/control/webcam", post(control::webcam))
        .route("/api/control/mic", post(control::mic))
        .route("/api/control/audio", post(control::audio))
        .route("/api/phone-link", post(control::phone_link))
        .route(
            "/api/restream",
            get(control::restream).post(control::add_restream),
        )
        .route("/api/restream/{id}", delete(control::remove_restream))
        .route("/api/party/start", post(control::start))
        .route("/api/party/end", post(control::end))
        .route("/api/control/next", post(library::next))
        .route("/api/control/load", post(library::load))
        .route("/api/library", get(library::library))
        .route("/api/library/{id}/thumbnail", get(library::thumbnail))
        .route("/api/mod", post(moderation::moderate))
        .route("/api/mod/audit", get(moderation::audit))
        .route("/api/mod/state", get(moderation::mod_state))
}

/// The answer of a call that has nothing more to say.
fn ok() -> Json<Value> {
    Json(json!({ "ok": true }))
}
