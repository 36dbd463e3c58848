//! Moderator actions, the audit log and the moderation state, for the mod tools.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::moderation::Action;
use crate::web::AppState;
use crate::web::error::AppError;
use crate::web::extract::{AppJson, Moderator};

/// `POST /api/mod`: one moderator action (`{"action":"ban",…}`); the answer says whether
/// Twitch took it too.
pub async fn moderate(
    State(state): State<AppState>,
    Moderator(caller): Moderator,
    AppJson(action): AppJson<Action>,
) -> Result<Json<Value>, AppError> {
    let outcome = state.moderation.apply(&caller.actor(), action).await?;
    let twitch = match &outcome.twitch {
        None => json!(null),
        Some(Ok(())) => json!({ "ok": true }),
        Some(Err(message)) => json!({ "ok": false, "error": message }),
    };
    Ok(Json(
        json!({ "applied": outcome.applied, "twitch": twitch }),
    ))
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
    _: Moderator,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, AppError> {
    let limit = query.limit.unwrap_or(100).min(1000);
    Ok(Json(json!({ "audit": state.moderation.audit(limit)? })))
}

/// `GET /api/mod/state`: bans, blocked terms and the party-chat rule.
pub async fn mod_state(
    State(state): State<AppState>,
    _: Moderator,
) -> Result<Json<Value>, AppError> {
    Ok(Json(json!({
        "bans": state.moderation.bans()?,
        "blocked_terms": state.moderation.blocked_terms()?,
        "party_chat": state.moderation.party_chat(),
        "room": state.chat.modes(),
        "forwards_to_twitch": state.moderation.forwards_to_twitch(),
    })))
}
