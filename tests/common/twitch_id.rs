//! The tests' id.twitch.tv: the OAuth endpoints of a public client on 127.0.0.1.
//!
//! It serves `/oauth2/device`, `/oauth2/token` (the device-code grant and the refresh-token
//! grant), `/oauth2/validate` and `/oauth2/revoke` as Twitch documents them
//! (<https://dev.twitch.tv/docs/authentication/getting-tokens-oauth/#device-code-grant-flow>,
//! `…/refresh-tokens/`, `…/validate-tokens/`, `…/revoke-tokens/`): form-encoded bodies, the
//! JSON answers, and the `{"status":400,"message":"…"}` errors. Refresh tokens rotate as they
//! do for public clients: each refresh issues a new one and the old one stops working. Access
//! tokens expire after `expires_in`; [`TestTwitchId::access_valid`] is what the Helix
//! stand-in asks, so Helix accepts exactly the tokens this server would validate.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::task::JoinHandle;

/// The app and the account the server knows, and how long what it issues lives.
#[derive(Debug, Clone)]
pub struct TestIdConfig {
    /// The public app's client id.
    pub client_id: String,
    /// The account that approves codes: login and user id.
    pub user: (String, String),
    /// Seconds between polls the device answer asks for.
    pub interval: u64,
    /// Seconds a device code lives.
    pub device_expires_in: u64,
    /// Seconds an access token from the device-code grant lives.
    pub expires_in: u64,
    /// Seconds an access token from a refresh lives.
    pub refresh_expires_in: u64,
}

impl Default for TestIdConfig {
    fn default() -> Self {
        TestIdConfig {
            client_id: "test-client-id".into(),
            user: ("party_mod".into(), "2002".into()),
            interval: 1,
            device_expires_in: 1800,
            expires_in: 14_400,
            refresh_expires_in: 14_400,
        }
    }
}

/// One request as received: path, form fields, `Authorization`.
#[derive(Debug, Clone)]
pub struct IdRequest {
    /// `POST`, `GET`.
    pub method: String,
    /// `/oauth2/token`…
    pub path: String,
    /// The query string, to check that no token travels in a URL.
    pub query: Option<String>,
    /// The form fields.
    pub form: BTreeMap<String, String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

/// A running server; dropping the last handle stops it.
#[derive(Clone)]
pub struct TestTwitchId {
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
    config: TestIdConfig,
    state: Mutex<IdState>,
}

struct Device {
    user_code: String,
    scopes: Vec<String>,
    expires: Instant,
    approved: bool,
    polls: usize,
}

struct Access {
    expires: Instant,
    revoked: bool,
    scopes: Vec<String>,
}

#[derive(Default)]
struct IdState {
    requests: Vec<IdRequest>,
    devices: HashMap<String, Device>,
    access: HashMap<String, Access>,
    /// Refresh tokens that still work, with their scopes.
    refresh: HashMap<String, Vec<String>>,
    /// Every access token issued, oldest first.
    issued: Vec<String>,
    /// Every refresh token issued, oldest first.
    issued_refresh: Vec<String>,
    refresh_grants: usize,
    refused_refreshes: usize,
    /// While set, every refresh is refused (the user disconnected the app).
    reject_refresh: bool,
    next: u64,
}

impl IdState {
    fn token(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{kind}{:04}x{}", self.next, std::process::id())
    }
}

impl TestTwitchId {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub async fn start(config: TestIdConfig) -> io::Result<TestTwitchId> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(IdState::default()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(TestTwitchId {
            shared,
            addr,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }

    /// The base URL for `--twitch-auth-base` (`http://127.0.0.1:<port>/oauth2`).
    pub fn base(&self) -> String {
        format!("http://{}/oauth2", self.addr)
    }

    /// What the server was started with.
    pub fn config(&self) -> &TestIdConfig {
        &self.shared.config
    }

    fn state(&self) -> MutexGuard<'_, IdState> {
        self.shared.state()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<IdRequest> {
        self.state().requests.clone()
    }

    /// The user codes handed out and not yet approved, with how often each was polled.
    pub fn waiting_codes(&self) -> Vec<(String, usize)> {
        self.state()
            .devices
            .values()
            .filter(|d| !d.approved)
            .map(|d| (d.user_code.clone(), d.polls))
            .collect()
    }

    /// The streamer approves `user_code` on twitch.tv/activate.
    pub fn approve(&self, user_code: &str) -> bool {
        let mut state = self.state();
        match state
            .devices
            .values_mut()
            .find(|d| d.user_code == user_code)
        {
            Some(device) => {
                device.approved = true;
                true
            }
            None => false,
        }
    }

    /// Refresh-token grants answered with new tokens.
    pub fn refresh_grants(&self) -> usize {
        self.state().refresh_grants
    }

    /// Refresh-token grants refused.
    pub fn refused_refreshes(&self) -> usize {
        self.state().refused_refreshes
    }

    /// Makes every refresh fail as a revoked refresh token does.
    pub fn reject_refresh(&self, reject: bool) {
        self.state().reject_refresh = reject;
    }

    /// Every access token issued, oldest first.
    pub fn issued(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    /// Every refresh token issued, oldest first.
    pub fn issued_refresh(&self) -> Vec<String> {
        self.state().issued_refresh.clone()
    }

    /// The one refresh token that works now, if any.
    pub fn live_refresh_token(&self) -> Option<String> {
        let state = self.state();
        state
            .issued_refresh
            .iter()
            .rev()
            .find(|t| state.refresh.contains_key(*t))
            .cloned()
    }

    /// Whether `token` is an access token this server would validate now.
    pub fn access_valid(&self, token: &str) -> bool {
        self.shared.access_valid(token)
    }

    /// Whether `token` was revoked through `/oauth2/revoke`.
    pub fn revoked(&self, token: &str) -> bool {
        self.state().access.get(token).is_some_and(|a| a.revoked)
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, IdState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn access_valid(&self, token: &str) -> bool {
        self.state()
            .access
            .get(token)
            .is_some_and(|a| !a.revoked && a.expires > Instant::now())
    }
}

/// Twitch's id.twitch.tv error body.
fn error(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        axum::Json(json!({ "status": status, "message": message })),
    )
        .into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form_fields(&body);
    let request = IdRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        form: form.clone(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let config = &shared.config;
    let mut state = shared.state();
    state.requests.push(request.clone());
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let field = |name: &str| form.get(name).map(String::as_str);
    // Both endpoints take a form from our app, as Twitch checks.
    let from_app = || -> Option<Response> {
        if !is_form {
            return Some(error(400, "invalid content type"));
        }
        match field("client_id") {
            None => Some(error(400, "missing client_id")),
            Some(id) if id != config.client_id => Some(error(400, "invalid client")),
            Some(_) => None,
        }
    };
    match (method.as_str(), uri.path()) {
        ("POST", "/oauth2/device") => {
            if let Some(refused) = from_app() {
                return refused;
            }
            let Some(scopes) = field("scopes") else {
                return error(400, "missing scopes");
            };
            let scopes: Vec<String> = scopes.split_whitespace().map(str::to_owned).collect();
            let device_code = state.token("device");
            let user_code = format!("CODE{:04}", state.next);
            state.devices.insert(
                device_code.clone(),
                Device {
                    user_code: user_code.clone(),
                    scopes,
                    expires: Instant::now() + Duration::from_secs(config.device_expires_in),
                    approved: false,
                    polls: 0,
                },
            );
            axum::Json(json!({
                "device_code": device_code,
                "expires_in": config.device_expires_in,
                "interval": config.interval,
                "user_code": user_code,
                "verification_uri": format!("https://www.twitch.tv/activate?public=true&device-code={user_code}"),
            }))
            .into_response()
        }
        ("POST", "/oauth2/token") => {
            if let Some(refused) = from_app() {
                return refused;
            }
            match field("grant_type") {
                Some("urn:ietf:params:oauth:grant-type:device_code") => {
                    if field("scopes").is_none() {
                        return error(400, "missing scopes");
                    }
                    let Some(code) = field("device_code") else {
                        return error(400, "missing device_code");
                    };
                    let Some(device) = state.devices.get_mut(code) else {
                        return error(400, "invalid device code");
                    };
                    device.polls += 1;
                    if device.expires <= Instant::now() {
                        return error(400, "invalid device code");
                    }
                    if !device.approved {
                        return error(400, "authorization_pending");
                    }
                    // A device code gives its tokens once.
                    let device = state.devices.remove(code).expect("found above");
                    issue(&mut state, device.scopes, config.expires_in)
                }
                Some("refresh_token") => {
                    let Some(old) = field("refresh_token") else {
                        return error(400, "missing refresh_token");
                    };
                    if state.reject_refresh {
                        state.refused_refreshes += 1;
                        return error(400, "Invalid refresh token");
                    }
                    // Rotation: the old refresh token is spent by this use.
                    let Some(scopes) = state.refresh.remove(old) else {
                        state.refused_refreshes += 1;
                        return error(400, "Invalid refresh token");
                    };
                    state.refresh_grants += 1;
                    issue(&mut state, scopes, config.refresh_expires_in)
                }
                _ => error(400, "unsupported grant type"),
            }
        }
        ("GET", "/oauth2/validate") => {
            let token = request.authorization.as_deref().and_then(|a| {
                a.strip_prefix("OAuth ")
                    .or_else(|| a.strip_prefix("Bearer "))
            });
            let Some(token) = token else {
                return error(401, "missing authorization token");
            };
            let now = Instant::now();
            match state.access.get(token) {
                Some(a) if !a.revoked && a.expires > now => axum::Json(json!({
                    "client_id": config.client_id,
                    "login": config.user.0,
                    "scopes": a.scopes,
                    "user_id": config.user.1,
                    "expires_in": (a.expires - now).as_secs(),
                }))
                .into_response(),
                _ => error(401, "invalid access token"),
            }
        }
        ("POST", "/oauth2/revoke") => {
            if !is_form {
                return error(400, "invalid content type");
            }
            match field("client_id") {
                Some(id) if id == config.client_id => {}
                _ => return error(404, "client does not exist"),
            }
            let Some(token) = field("token") else {
                return error(400, "missing token");
            };
            match state.access.get_mut(token) {
                Some(a) => {
                    a.revoked = true;
                    StatusCode::OK.into_response()
                }
                None => error(400, "Invalid token"),
            }
        }
        _ => error(404, "Not Found"),
    }
}

fn issue(state: &mut IdState, scopes: Vec<String>, expires_in: u64) -> Response {
    let access = state.token("access");
    let refresh = state.token("refresh");
    state.access.insert(
        access.clone(),
        Access {
            expires: Instant::now() + Duration::from_secs(expires_in),
            revoked: false,
            scopes: scopes.clone(),
        },
    );
    state.refresh.insert(refresh.clone(), scopes.clone());
    state.issued.push(access.clone());
    state.issued_refresh.push(refresh.clone());
    axum::Json(json!({
        "access_token": access,
        "expires_in": expires_in,
        "refresh_token": refresh,
        "scope": scopes,
        "token_type": "bearer",
    }))
    .into_response()
}

/// A form body's fields (a repeated name keeps its last value), decoded as
/// `application/x-www-form-urlencoded` by the `url` crate (through reqwest's `Url`).
fn form_fields(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    match reqwest::Url::parse(&format!("http://form.invalid/?{text}")) {
        Ok(url) => url.query_pairs().into_owned().collect(),
        Err(_) => BTreeMap::new(),
    }
}
