//! The tests' Twitch Helix API: a stand-in on 127.0.0.1.
//!
//! It serves the endpoints the moderation module calls, under `/helix`, and holds them to
//! what Twitch documents (<https://dev.twitch.tv/docs/api/reference>): the
//! `Authorization: Bearer <token>` and `Client-Id` headers, the required query parameters,
//! JSON bodies of the documented shape and ranges, and Twitch's answers (status codes and
//! `{"error":…,"status":…,"message":…}` bodies). It keeps the little state that makes its
//! answers realistic (who is banned, the chat settings) and records every request so a
//! test can check exactly what was sent.
//!
//! Error messages follow Twitch's wording where Twitch documents or is known to send one;
//! the rest are in the same style.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

/// Who the server knows.
#[derive(Debug, Clone)]
pub struct TestHelixConfig {
    /// The client id requests must carry.
    pub client_id: String,
    /// The token requests must carry.
    pub token: String,
    /// The channel: login and id.
    pub broadcaster: (String, String),
    /// The token's user (the moderator): login and id.
    pub moderator: (String, String),
    /// Other users `GET /users?login=` finds: login and id.
    pub users: Vec<(String, String)>,
}

impl Default for TestHelixConfig {
    fn default() -> Self {
        TestHelixConfig {
            client_id: "test-client-id".into(),
            token: "test-token".into(),
            broadcaster: ("party_host".into(), "1001".into()),
            moderator: ("party_mod".into(), "2002".into()),
            users: Vec::new(),
        }
    }
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `POST`…
    pub method: String,
    /// The path after `/helix`, e.g. `/moderation/bans`.
    pub path: String,
    /// Query parameters (a repeated name keeps its last value).
    pub query: BTreeMap<String, String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Client-Id` header.
    pub client_id: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body as JSON; `None` when empty, a JSON string when not JSON.
    pub body: Option<Value>,
}

/// A running server; dropping the last handle stops it.
#[derive(Clone)]
pub struct TestHelix {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Shared {
    config: TestHelixConfig,
    state: Mutex<HelixState>,
}

/// Decides whether a bearer token is good (the id.twitch.tv stand-in's current tokens).
pub type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct HelixState {
    requests: Vec<Recorded>,
    /// When set, the tokens it accepts instead of the configured one.
    token_check: Option<TokenCheck>,
    fail_next: Option<(u16, String)>,
    /// Banned user ids: `None` banned for good, `Some(s)` timed out for `s` seconds.
    bans: HashMap<String, Option<u64>>,
    settings: Settings,
    users: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
struct Settings {
    emote_mode: bool,
    follower_mode: bool,
    follower_mode_duration: Option<u64>,
    slow_mode: bool,
    slow_mode_wait_time: Option<u64>,
    subscriber_mode: bool,
    unique_chat_mode: bool,
    non_moderator_chat_delay: bool,
    non_moderator_chat_delay_duration: Option<u64>,
}

impl TestHelix {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub async fn start(config: TestHelixConfig) -> io::Result<TestHelix> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let users = config.users.clone();
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(HelixState {
                users,
                ..HelixState::default()
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("test Helix server stopped: {e}");
            }
        });
        Ok(TestHelix {
            shared,
            addr,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// The base URL to configure the client with (`http://127.0.0.1:<port>/helix`).
    pub fn base(&self) -> String {
        format!("http://{}/helix", self.addr)
    }

    /// What the server was started with.
    pub fn config(&self) -> &TestHelixConfig {
        &self.shared.config
    }

    fn state(&self) -> MutexGuard<'_, HelixState> {
        self.shared.state()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// Every request so far, forgetting them.
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.state().requests)
    }

    /// Requests other than the `GET /users` look-ups, oldest first.
    pub fn moderation_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path != "/users")
            .collect()
    }

    /// The next moderation request (any but `GET /users`) that passes authentication
    /// fails with `status` and Twitch's error body carrying `message`.
    pub fn fail_next(&self, status: u16, message: &str) {
        self.state().fail_next = Some((status, message.to_owned()));
    }

    /// Accepts the bearer tokens `check` accepts instead of the configured one: the tokens
    /// the id.twitch.tv stand-in issued and that have not expired, as on Twitch.
    pub fn set_token_check(&self, check: TokenCheck) {
        self.state().token_check = Some(check);
    }

    /// Makes `GET /users?login=` find another user.
    pub fn add_user(&self, login: &str, id: &str) {
        self.state().users.push((login.to_owned(), id.to_owned()));
    }

    /// Whether `user_id` is banned or timed out; `Some(None)` for a ban, `Some(Some(s))`
    /// for a timeout of `s` seconds.
    pub fn ban_of(&self, user_id: &str) -> Option<Option<u64>> {
        self.state().bans.get(user_id).copied()
    }

    /// The chat settings now, as `GET /chat/settings` would give them.
    pub fn settings(&self) -> Value {
        settings_json(&self.shared.config, &self.state().settings)
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, HelixState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Twitch's error body.
fn error(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({
        "error": code.canonical_reason().unwrap_or("Error"),
        "status": status,
        "message": message,
    });
    (code, axum::Json(body)).into_response()
}

fn bad_request(message: &str) -> Response {
    error(400, message)
}

fn missing(name: &str) -> Response {
    bad_request(&format!("Missing required parameter \"{name}\""))
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: BTreeMap<String, String> = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(pairs)| pairs.into_iter().collect())
        .unwrap_or_default();
    let logins: Vec<String> = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(pairs)| {
            pairs
                .into_iter()
                .filter(|(k, _)| k == "login")
                .map(|(_, v)| v)
                .collect()
        })
        .unwrap_or_default();
    let body_json = if body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
        )
    };
    let path = uri
        .path()
        .strip_prefix("/helix")
        .unwrap_or(uri.path())
        .to_owned();
    let recorded = Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        authorization: header_str(&headers, header::AUTHORIZATION),
        client_id: header_str(&headers, "client-id"),
        content_type: header_str(&headers, header::CONTENT_TYPE),
        body: body_json.clone(),
    };
    let config = &shared.config;
    let mut state = shared.state();
    state.requests.push(recorded.clone());

    // Authentication, as Twitch checks it: the token first, then that the client id is
    // the one the token was issued to.
    let good = |token: &str| match &state.token_check {
        Some(check) => check(token),
        None => token == config.token,
    };
    match recorded.authorization.as_deref() {
        None => return error(401, "OAuth token is missing"),
        Some(auth) if !auth.strip_prefix("Bearer ").is_some_and(good) => {
            return error(401, "Invalid OAuth token");
        }
        Some(_) => {}
    }
    if recorded.client_id.as_deref() != Some(config.client_id.as_str()) {
        return error(401, "Client ID and OAuth token do not match");
    }

    if path != "/users"
        && let Some((status, message)) = state.fail_next.take()
    {
        return error(status, &message);
    }

    match (method.as_str(), path.as_str()) {
        ("GET", "/users") => users(config, &state, &query, &logins),
        ("POST", "/moderation/bans") => {
            if let Some(refusal) = moderator_query(config, &query) {
                return refusal;
            }
            if let Some(refusal) = json_body(&recorded) {
                return refusal;
            }
            ban(config, &mut state, body_json.as_ref())
        }
        ("DELETE", "/moderation/bans") => {
            if let Some(refusal) = moderator_query(config, &query) {
                return refusal;
            }
            let Some(user_id) = query.get("user_id") else {
                return missing("user_id");
            };
            if state.bans.remove(user_id).is_none() {
                return bad_request("The user specified in the user_id field is not banned.");
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("DELETE", "/moderation/chat") => {
            if let Some(refusal) = moderator_query(config, &query) {
                return refusal;
            }
            if query.get("message_id").is_some_and(String::is_empty) {
                return bad_request("The message_id query parameter is not valid.");
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("PATCH", "/chat/settings") => {
            if let Some(refusal) = moderator_query(config, &query) {
                return refusal;
            }
            if let Some(refusal) = json_body(&recorded) {
                return refusal;
            }
            patch_settings(config, &mut state, body_json.as_ref())
        }
        _ => error(404, "Not Found"),
    }
}

fn users(
    config: &TestHelixConfig,
    state: &HelixState,
    query: &BTreeMap<String, String>,
    logins: &[String],
) -> Response {
    let user = |login: &str, id: &str| {
        json!({
            "id": id,
            "login": login,
            "display_name": login,
            "type": "",
            "broadcaster_type": "",
            "description": "",
            "profile_image_url": "",
            "offline_image_url": "",
            "view_count": 0,
            "created_at": "2016-12-14T20:32:28Z",
        })
    };
    let everyone = || {
        [&config.broadcaster, &config.moderator]
            .into_iter()
            .chain(state.users.iter())
    };
    if logins.is_empty() && !query.contains_key("id") {
        // No parameter: the user the token belongs to.
        let (login, id) = &config.moderator;
        return axum::Json(json!({ "data": [user(login, id)] })).into_response();
    }
    let mut data = Vec::new();
    for login in logins {
        if let Some((l, id)) = everyone().find(|(l, _)| l.eq_ignore_ascii_case(login)) {
            data.push(user(l, id));
        }
    }
    if let Some(wanted) = query.get("id")
        && let Some((l, id)) = everyone().find(|(_, id)| id == wanted)
    {
        data.push(user(l, id));
    }
    axum::Json(json!({ "data": data })).into_response()
}

/// `broadcaster_id` and `moderator_id` are present, name the channel, and the moderator is
/// the token's user; otherwise Twitch's refusal.
fn moderator_query(config: &TestHelixConfig, query: &BTreeMap<String, String>) -> Option<Response> {
    let Some(broadcaster) = query.get("broadcaster_id") else {
        return Some(missing("broadcaster_id"));
    };
    let Some(moderator) = query.get("moderator_id") else {
        return Some(missing("moderator_id"));
    };
    if *broadcaster != config.broadcaster.1 {
        return Some(bad_request("The ID in broadcaster_id is not valid."));
    }
    if *moderator != config.moderator.1 {
        return Some(error(
            403,
            "The ID in moderator_id must match the user ID found in the request's OAuth token.",
        ));
    }
    None
}

/// A body must be declared as JSON and be a JSON object; otherwise the refusal.
fn json_body(recorded: &Recorded) -> Option<Response> {
    let declared = recorded.content_type.as_deref().is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim() == "application/json")
    });
    if !declared {
        return Some(bad_request(
            "The Content-Type header must be application/json.",
        ));
    }
    match &recorded.body {
        Some(Value::Object(_)) => None,
        _ => Some(bad_request("The request body is not valid JSON.")),
    }
}

fn ban(config: &TestHelixConfig, state: &mut HelixState, body: Option<&Value>) -> Response {
    let Some(data) = body.and_then(|b| b.get("data")) else {
        return missing("data");
    };
    let Some(data) = data.as_object() else {
        return bad_request("The data field must be an object.");
    };
    let Some(user_id) = data.get("user_id") else {
        return missing("user_id");
    };
    let Some(user_id) = user_id.as_str().filter(|s| !s.is_empty()) else {
        return bad_request("The user_id field is not valid.");
    };
    let duration = match data.get("duration") {
        None | Some(Value::Null) => None,
        Some(d) => match d.as_u64() {
            Some(d) if (1..=1_209_600).contains(&d) => Some(d),
            _ => return bad_request("The value in the duration field is not valid."),
        },
    };
    match data.get("reason") {
        None | Some(Value::Null) => {}
        Some(Value::String(r)) if r.chars().count() <= 500 => {}
        Some(Value::String(_)) => {
            return bad_request("The text in the reason field is too long.");
        }
        Some(_) => return bad_request("The reason field is not valid."),
    }
    if user_id == config.broadcaster.1 || user_id == config.moderator.1 {
        return bad_request("The user specified in the user_id field may not be banned.");
    }
    // A timed-out user may be banned; a banned one cannot be moved into a timeout.
    if let Some(None) = state.bans.get(user_id) {
        return bad_request("The user specified in the user_id field is already banned.");
    }
    state.bans.insert(user_id.to_owned(), duration);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = json!({
        "data": [{
            "broadcaster_id": config.broadcaster.1,
            "moderator_id": config.moderator.1,
            "user_id": user_id,
            "created_at": rfc3339(now),
            "end_time": duration.map(|d| rfc3339(now + d)),
        }]
    });
    axum::Json(body).into_response()
}

fn patch_settings(
    config: &TestHelixConfig,
    state: &mut HelixState,
    body: Option<&Value>,
) -> Response {
    let Some(fields) = body.and_then(Value::as_object) else {
        return bad_request("The request body is not valid JSON.");
    };
    if fields.is_empty() {
        return bad_request("The request body must contain at least one setting to update.");
    }
    let mut next = state.settings.clone();
    for (name, value) in fields {
        let flag = || value.as_bool();
        let number = || value.as_u64();
        let invalid = || bad_request(&format!("The value in the {name} field is not valid."));
        match name.as_str() {
            "emote_mode" => match flag() {
                Some(v) => next.emote_mode = v,
                None => return invalid(),
            },
            "follower_mode" => match flag() {
                Some(v) => next.follower_mode = v,
                None => return invalid(),
            },
            "follower_mode_duration" => match number() {
                Some(v) if v <= 129_600 => next.follower_mode_duration = Some(v),
                _ => return invalid(),
            },
            "slow_mode" => match flag() {
                Some(v) => next.slow_mode = v,
                None => return invalid(),
            },
            "slow_mode_wait_time" => match number() {
                Some(v) if (3..=120).contains(&v) => next.slow_mode_wait_time = Some(v),
                _ => return invalid(),
            },
            "subscriber_mode" => match flag() {
                Some(v) => next.subscriber_mode = v,
                None => return invalid(),
            },
            "unique_chat_mode" => match flag() {
                Some(v) => next.unique_chat_mode = v,
                None => return invalid(),
            },
            "non_moderator_chat_delay" => match flag() {
                Some(v) => next.non_moderator_chat_delay = v,
                None => return invalid(),
            },
            "non_moderator_chat_delay_duration" => match number() {
                Some(v @ (2 | 4 | 6)) => next.non_moderator_chat_delay_duration = Some(v),
                _ => return invalid(),
            },
            // Twitch ignores what it does not know; a test server that did the same would
            // hide a misspelt field, so it refuses instead.
            _ => return bad_request(&format!("Unknown field \"{name}\".")),
        }
    }
    // The durations only mean something while their mode is on; Twitch reports them as
    // null otherwise, and applies its defaults when a mode is turned on without one.
    if next.follower_mode {
        next.follower_mode_duration.get_or_insert(0);
    } else {
        next.follower_mode_duration = None;
    }
    if next.slow_mode {
        next.slow_mode_wait_time.get_or_insert(30);
    } else {
        next.slow_mode_wait_time = None;
    }
    if !next.non_moderator_chat_delay {
        next.non_moderator_chat_delay_duration = None;
    }
    state.settings = next;
    axum::Json(json!({ "data": [settings_json(config, &state.settings)] })).into_response()
}

fn settings_json(config: &TestHelixConfig, s: &Settings) -> Value {
    let mut m = Map::new();
    m.insert("broadcaster_id".into(), json!(config.broadcaster.1));
    m.insert("moderator_id".into(), json!(config.moderator.1));
    m.insert("emote_mode".into(), json!(s.emote_mode));
    m.insert("follower_mode".into(), json!(s.follower_mode));
    m.insert(
        "follower_mode_duration".into(),
        json!(s.follower_mode_duration),
    );
    m.insert("slow_mode".into(), json!(s.slow_mode));
    m.insert("slow_mode_wait_time".into(), json!(s.slow_mode_wait_time));
    m.insert("subscriber_mode".into(), json!(s.subscriber_mode));
    m.insert("unique_chat_mode".into(), json!(s.unique_chat_mode));
    m.insert(
        "non_moderator_chat_delay".into(),
        json!(s.non_moderator_chat_delay),
    );
    m.insert(
        "non_moderator_chat_delay_duration".into(),
        json!(s.non_moderator_chat_delay_duration),
    );
    Value::Object(m)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}
