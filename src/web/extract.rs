//! What handlers take from a request, checked once: who is calling (and whether they may),
//! whether a viewer is let in, and a JSON body whose refusal is one line.
//!
//! Credentials: `Authorization: Bearer <host or moderator key>`. A call without a key that
//! needs one is `401`; a key that does not grant the role is `403`. Extractors run in the
//! order a handler lists them, so the role is checked before the body is read.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::AppError;
use crate::moderation::Actor;
use crate::party::Role;

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
    /// The caller a presented `key` makes (none: a viewer).
    pub fn identify(state: &AppState, key: Option<&str>) -> Caller {
        let role = state.party.role(key);
        let name = match role {
            Role::Host => "host".to_owned(),
            Role::Moderator => key
                .and_then(|k| state.party.moderator_name(k))
                .unwrap_or_else(|| "moderator".into()),
            Role::Viewer => "viewer".to_owned(),
        };
        Caller {
            role,
            presented: key.is_some_and(|k| !k.is_empty()),
            name,
        }
    }

    /// Refuses unless the caller is at least `needed` (host > moderator > viewer).
    pub fn require(self, needed: Role) -> Result<Caller, AppError> {
        if self.role.at_least(needed) {
            return Ok(self);
        }
        let who = match needed {
            Role::Host => "the host",
            _ => "the host and moderators",
        };
        Err(if self.presented {
            AppError::new(StatusCode::FORBIDDEN, format!("only {who} may do that"))
        } else {
            AppError::new(
                StatusCode::UNAUTHORIZED,
                format!("only {who} may do that: send Authorization: Bearer <key>"),
            )
        })
    }

    /// The caller as the audit log names them.
    pub fn actor(&self) -> Actor {
        Actor {
            role: self.role,
            name: self.name.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(Caller::identify(state, bearer(&parts.headers)))
    }
}

/// The host, or a refusal: the handler's first argument after the state says who may call.
pub struct Host;

impl FromRequestParts<AppState> for Host {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Role::Host).map(|_| Host)
    }
}

/// The host or a moderator, or a refusal.
pub struct Moderator(pub Caller);

impl FromRequestParts<AppState> for Moderator {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Role::Moderator).map(Moderator)
    }
}

/// The key of `Authorization: Bearer <key>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// How a viewer of an invite-only party shows it was invited: `?invite=CODE` on the URL
/// (a WHEP player and a WebSocket only know URLs).
#[derive(serde::Deserialize, Default)]
struct Invite {
    #[serde(default)]
    invite: Option<String>,
}

/// A caller the party lets in: any at a public party; at an invite-only one, whoever brings the
/// invite code in `?invite=` or a host or moderator key as the Bearer token.
pub struct Admitted;

impl FromRequestParts<AppState> for Admitted {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Query(Invite { invite }) = Query::<Invite>::from_request_parts(parts, state)
            .await
            .unwrap_or_default();
        let role = state.party.role(bearer(&parts.headers));
        state.party.admit(role, invite.as_deref())?;
        Ok(Admitted)
    }
}

/// The header a viewer page sends its session token in on `POST /whep` (never in the
/// URL, which access logs keep).
pub const SESSION_HEADER: &str = "x-cowatch-session";

/// A caller not banned from the whole party: whoever sends no session token (any WHEP
/// player), or one whose session used no nickname banned from the party. Otherwise `403`.
pub struct Watcher;

impl FromRequestParts<AppState> for Watcher {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Some(token) = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Ok(Watcher);
        };
        if state
            .party
            .may_watch(token, |aliases| state.moderation.may_watch(aliases))
        {
            Ok(Watcher)
        } else {
            Err(AppError::new(
                StatusCode::FORBIDDEN,
                "you are banned from this party",
            ))
        }
    }
}

/// A JSON body, or `400` with serde's one-line reason (malformed JSON, an unknown field or
/// action, a wrong type) — axum's `Json` with our error, as in axum's own
/// `customize-extractor-error` example.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(AppJson(value)),
            Err(rejection) => Err(AppError::new(
                StatusCode::BAD_REQUEST,
                rejection.body_text(),
            )),
        }
    }
}
