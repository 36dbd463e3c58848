//! A small Twitch Helix client for the moderator actions, and nothing else.
//!
//! Endpoints (<https://dev.twitch.tv/docs/api/reference>), all with `broadcaster_id` and
//! `moderator_id` in the query, the moderator being the user the token belongs to:
//!
//! | action            | request                                                    | success |
//! |-------------------|------------------------------------------------------------|---------|
//! | ban / timeout     | `POST /moderation/bans` body `{"data":{user_id,duration?,reason}}` | 200 |
//! | unban             | `DELETE /moderation/bans?…&user_id=`                       | 204     |
//! | delete / clear    | `DELETE /moderation/chat?…[&message_id=]`                  | 204     |
//! | room modes        | `PATCH /chat/settings` body with the changed fields only   | 200     |
//! | ids               | `GET /users?login=` (broadcaster), `GET /users` (the token's user) | 200 |
//!
//! Every request carries `Authorization: Bearer <token>` and `Client-Id`, plus
//! `Content-Type: application/json` when it has a body. Twitch's errors
//! (`{"error":"Bad Request","status":400,"message":"…"}`) come back as
//! [`HelixError::Api`] with Twitch's own message, so the moderator reads what Twitch said.
//!
//! The token needs the scopes `moderator:manage:banned_users`,
//! `moderator:manage:chat_messages` and `moderator:manage:chat_settings`.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::chat::bridge::Secret;
use crate::chat::login::LiveToken;

/// Twitch's Helix endpoint.
pub const DEFAULT_BASE: &str = "https://api.twitch.tv/helix";
/// How long one Helix call may take before the moderator is told it timed out.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest timeout Twitch accepts: two weeks, in seconds.
pub const MAX_TIMEOUT_S: u32 = 1_209_600;
/// Longest ban reason Twitch accepts, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Slow-mode waits Twitch accepts, in seconds.
pub const SLOW_MODE_RANGE: std::ops::RangeInclusive<u32> = 3..=120;
/// Follower-only durations Twitch accepts, in minutes (three months at most).
pub const FOLLOWER_MINUTES_MAX: u32 = 129_600;

/// An OAuth token: usable, never printed. The same kind of token as the IRC bridge's
/// [`Secret`], which does the reading and the hiding; this name is Helix's own. A token of
/// `cowatch twitch login` is refreshed while the party runs, so it is read for each request.
#[derive(Clone)]
pub struct Token(LiveToken);

impl Token {
    /// Wraps a token; a leading `oauth:` (as IRC tokens are often written) is dropped.
    pub fn new(token: impl Into<String>) -> Token {
        Token(LiveToken::fixed(Secret::new(token)))
    }

    /// The token of the moment, read again for each request (a refreshed sign-in).
    pub fn live(token: LiveToken) -> Token {
        Token(token)
    }

    /// The token now; `None` once the sign-in has expired or been revoked.
    fn current(&self) -> Option<Secret> {
        self.0.current()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Where and as whom to call Helix.
#[derive(Debug, Clone)]
pub struct HelixConfig {
    /// Base URL without a trailing slash ([`DEFAULT_BASE`]; tests use a local server).
    pub base: String,
    /// The app's client id; Twitch checks it belongs to the token.
    pub client_id: String,
    /// A user token of the broadcaster or one of their moderators.
    pub token: Token,
    /// The channel, as a login.
    pub broadcaster_login: String,
}

/// Why a Helix call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HelixError {
    /// Twitch answered with an error; `message` is Twitch's.
    #[error("Twitch {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Twitch's message, or the status's reason when it sent none.
        message: String,
    },
    /// No answer within [`TIMEOUT`].
    #[error("Twitch did not answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    /// Could not reach Twitch, or its answer could not be read.
    #[error("cannot reach Twitch: {0}")]
    Network(String),
    /// The channel (or a user) does not exist on Twitch.
    #[error("no Twitch user {0:?}")]
    UnknownUser(String),
    /// Refused here, before asking Twitch (e.g. a timeout of more than two weeks).
    #[error("{0}")]
    Invalid(String),
}

/// The room modes to change; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChatSettingsPatch {
    /// Emote-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emote_mode: Option<bool>,
    /// Followers-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follower_mode: Option<bool>,
    /// Minimum follow age in minutes, 0..=129600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follower_mode_duration: Option<u32>,
    /// Slow mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_mode: Option<bool>,
    /// Seconds between messages, 3..=120.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_mode_wait_time: Option<u32>,
    /// Subscribers-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber_mode: Option<bool>,
    /// Unique-chat (r9k).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_chat_mode: Option<bool>,
}

/// The ids every moderation call needs.
#[derive(Debug, Clone)]
struct Ids {
    broadcaster: String,
    moderator: String,
}

/// A Helix client. Cheap to clone; clones share the connection pool and the ids.
#[derive(Debug, Clone)]
pub struct Helix {
    config: std::sync::Arc<HelixConfig>,
    http: reqwest::Client,
    /// Resolved on first use; a failed resolution is retried by the next call.
    ids: std::sync::Arc<OnceCell<Ids>>,
}

#[derive(Deserialize)]
struct Data<T> {
    data: Vec<T>,
}

#[derive(Deserialize)]
struct HelixUser {
    id: String,
}

impl Helix {
    /// A client; nothing is sent until the first call.
    pub fn new(mut config: HelixConfig) -> Result<Helix, HelixError> {
        while config.base.ends_with('/') {
            config.base.pop();
        }
        config.broadcaster_login = config
            .broadcaster_login
            .trim_start_matches('#')
            .to_lowercase();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("cowatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HelixError::Network(e.to_string()))?;
        Ok(Helix {
            config: std::sync::Arc::new(config),
            http,
            ids: std::sync::Arc::new(OnceCell::new()),
        })
    }

    /// The channel's login.
    pub fn broadcaster_login(&self) -> &str {
        &self.config.broadcaster_login
    }

    /// Bans `user_id` (`duration_s` = `None`) or times them out for `duration_s` seconds.
    /// Twitch caps timeouts at two weeks and reasons at 500 characters; both are checked
    /// here first. The reason is always sent (empty when none), which every version of the
    /// endpoint accepts.
    pub async fn ban(
        &self,
        user_id: &str,
        duration_s: Option<u32>,
        reason: Option<&str>,
    ) -> Result<(), HelixError> {
        if let Some(d) = duration_s
            && !(1..=MAX_TIMEOUT_S).contains(&d)
        {
            return Err(HelixError::Invalid(format!(
                "a timeout lasts 1 to {MAX_TIMEOUT_S} seconds (got {d})"
            )));
        }
        let reason = reason.unwrap_or("");
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(HelixError::Invalid(format!(
                "a ban reason has at most {MAX_REASON_CHARS} characters"
            )));
        }
        #[derive(Serialize)]
        struct Body<'a> {
            user_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            duration: Option<u32>,
            reason: &'a str,
        }
        let body = serde_json::json!({ "data": Body { user_id, duration: duration_s, reason } });
        let ids = self.ids().await?;
        self.call(
            Method::POST,
            "/moderation/bans",
            &[
                ("broadcaster_id", ids.broadcaster.as_str()),
                ("moderator_id", ids.moderator.as_str()),
            ],
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// Lifts a ban or timeout.
    pub async fn unban(&self, user_id: &str) -> Result<(), HelixError> {
        let ids = self.ids().await?;
        self.call(
            Method::DELETE,
            "/moderation/bans",
            &[
                ("broadcaster_id", ids.broadcaster.as_str()),
                ("moderator_id", ids.moderator.as_str()),
                ("user_id", user_id),
            ],
            None,
        )
        .await
        .map(drop)
    }

    /// Deletes one message (sent less than 6 hours ago, not by the broadcaster or a
    /// moderator, as Twitch requires), or every message when `message_id` is `None`.
    pub async fn delete_message(&self, message_id: Option<&str>) -> Result<(), HelixError> {
        let ids = self.ids().await?;
        let mut query = vec![
            ("broadcaster_id", ids.broadcaster.as_str()),
            ("moderator_id", ids.moderator.as_str()),
        ];
        if let Some(id) = message_id {
            query.push(("message_id", id));
        }
        self.call(Method::DELETE, "/moderation/chat", &query, None)
            .await
            .map(drop)
    }

    /// Changes the room modes named in `patch`; returns Twitch's resulting settings.
    pub async fn update_chat_settings(
        &self,
        patch: &ChatSettingsPatch,
    ) -> Result<Value, HelixError> {
        if let Some(s) = patch.slow_mode_wait_time
            && !SLOW_MODE_RANGE.contains(&s)
        {
            return Err(HelixError::Invalid(format!(
                "Twitch's slow mode waits {} to {} seconds (got {s})",
                SLOW_MODE_RANGE.start(),
                SLOW_MODE_RANGE.end()
            )));
        }
        if let Some(m) = patch.follower_mode_duration
            && m > FOLLOWER_MINUTES_MAX
        {
            return Err(HelixError::Invalid(format!(
                "Twitch's followers-only mode asks at most {FOLLOWER_MINUTES_MAX} minutes (got {m})"
            )));
        }
        let body = serde_json::to_value(patch).map_err(|e| HelixError::Invalid(e.to_string()))?;
        let ids = self.ids().await?;
        let answer = self
            .call(
                Method::PATCH,
                "/chat/settings",
                &[
                    ("broadcaster_id", ids.broadcaster.as_str()),
                    ("moderator_id", ids.moderator.as_str()),
                ],
                Some(&body),
            )
            .await?;
        Ok(answer
            .and_then(|v| v.get("data").and_then(|d| d.get(0)).cloned())
            .unwrap_or(Value::Null))
    }

    /// The Twitch user id of `login`.
    pub async fn user_id(&self, login: &str) -> Result<String, HelixError> {
        let login = login.to_lowercase();
        let answer = self
            .call(Method::GET, "/users", &[("login", login.as_str())], None)
            .await?;
        first_id(answer).ok_or(HelixError::UnknownUser(login))
    }

    async fn ids(&self) -> Result<&Ids, HelixError> {
        self.ids
            .get_or_try_init(|| async {
                let broadcaster = self.user_id(&self.config.broadcaster_login).await?;
                let me = self.call(Method::GET, "/users", &[], None).await?;
                let moderator = first_id(me)
                    .ok_or_else(|| HelixError::UnknownUser("(the token's user)".into()))?;
                tracing::info!(broadcaster, moderator, "Helix ids resolved");
                Ok(Ids {
                    broadcaster,
                    moderator,
                })
            })
            .await
    }

    /// One request; `Ok(None)` for 204 No Content, else the JSON answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, HelixError> {
        let url = format!("{}{path}", self.config.base);
        let token = self.config.token.current().ok_or_else(|| HelixError::Api {
            status: 401,
            message: crate::chat::login::SIGN_IN_LOST.to_owned(),
        })?;
        let mut request = self
            .http
            .request(method.clone(), &url)
            .query(query)
            .bearer_auth(token.expose())
            .header("Client-Id", &self.config.client_id);
        if let Some(body) = body {
            // `.json` sets `Content-Type: application/json`.
            request = request.json(body);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        tracing::debug!(%method, path, status = status.as_u16(), "Helix call");
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| HelixError::Network(format!("unreadable answer: {e}")));
        }
        let message = crate::twitch::token::error_message(&bytes).unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("unexpected answer")
                .to_owned()
        });
        Err(HelixError::Api {
            status: status.as_u16(),
            message,
        })
    }
}

fn first_id(answer: Option<Value>) -> Option<String> {
    let data: Data<HelixUser> = serde_json::from_value(answer?).ok()?;
    data.data.into_iter().next().map(|u| u.id)
}

fn transport(e: reqwest::Error) -> HelixError {
    if e.is_timeout() {
        HelixError::Timeout
    } else {
        // Without the URL: it carries nothing secret, but the error text stays short.
        HelixError::Network(e.without_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_not_printed() {
        let t = Token::new("oauth:abc");
        assert_eq!(format!("{t:?}"), "Token(…)");
        assert_eq!(t.current().unwrap().expose(), "abc");
        let config = HelixConfig {
            base: DEFAULT_BASE.into(),
            client_id: "cid".into(),
            token: t,
            broadcaster_login: "x".into(),
        };
        assert!(!format!("{config:?}").contains("abc"));
    }

    #[test]
    fn settings_patch_sends_only_the_changed_fields() {
        let patch = ChatSettingsPatch {
            slow_mode: Some(true),
            slow_mode_wait_time: Some(30),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"slow_mode":true,"slow_mode_wait_time":30}"#
        );
    }
}
