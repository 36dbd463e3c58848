//! The id.twitch.tv calls of a public client (no client secret): device code, token (device
//! code and refresh grants), validate, revoke. Each is one request; what the answers mean is
//! `token.rs`'s business. Tokens go in form bodies or the `Authorization` header, never in a
//! URL, and no error text carries them.

use std::time::Duration;

use reqwest::StatusCode;

use super::AuthError;
use super::token::{self, DeviceAnswer, TokenAnswer, ValidateAnswer};
use crate::chat::bridge::Secret;

/// Twitch's OAuth endpoint.
pub const DEFAULT_AUTH_BASE: &str = "https://id.twitch.tv/oauth2";
/// How long one call may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// The device-code grant's type.
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A client of id.twitch.tv for one app. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuthClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
}

impl AuthClient {
    /// A client of `base` (e.g. [`DEFAULT_AUTH_BASE`]) for the app `client_id`.
    pub fn new(base: &str, client_id: &str) -> Result<AuthClient, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("cowatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AuthError::Network(e.to_string()))?;
        Ok(AuthClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
        })
    }

    /// The app's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// `POST /device`: a code for the streamer to approve.
    pub async fn device(&self, scopes: &str) -> Result<DeviceAnswer, AuthError> {
        let form = [("client_id", self.client_id.as_str()), ("scopes", scopes)];
        let body = self
            .send(self.http.post(self.url("/device")).form(&form))
            .await?;
        token::parse(&body)
    }

    /// `POST /token` with the device code: the tokens once approved, else
    /// [`AuthError::Pending`] and the like.
    pub async fn poll(&self, device_code: &str, scopes: &str) -> Result<TokenAnswer, AuthError> {
        let form = [
            ("client_id", self.client_id.as_str()),
            ("scopes", scopes),
            ("device_code", device_code),
            ("grant_type", DEVICE_GRANT),
        ];
        let body = self
            .send(self.http.post(self.url("/token")).form(&form))
            .await?;
        token::parse(&body)
    }

    /// `POST /token` with the refresh token: new tokens, the old refresh token spent.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenAnswer, AuthError> {
        let form = [
            ("client_id", self.client_id.as_str()),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let body = self
            .send(self.http.post(self.url("/token")).form(&form))
            .await?;
        token::parse(&body)
    }

    /// `GET /validate`: whose token it is, and whether it still works.
    pub async fn validate(&self, access_token: &Secret) -> Result<ValidateAnswer, AuthError> {
        let request = self.http.get(self.url("/validate")).header(
            reqwest::header::AUTHORIZATION,
            format!("OAuth {}", access_token.expose()),
        );
        token::parse(&self.send(request).await?)
    }

    /// `POST /revoke`: the token stops working on Twitch.
    pub async fn revoke(&self, access_token: &Secret) -> Result<(), AuthError> {
        let form = [
            ("client_id", self.client_id.as_str()),
            ("token", access_token.expose()),
        ];
        self.send(self.http.post(self.url("/revoke")).form(&form))
            .await
            .map(drop)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends, and returns the body of a 2xx answer or what the error means.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<bytes::Bytes, AuthError> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            Ok(body)
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Err(AuthError::SlowDown)
        } else {
            Err(token::classify(status.as_u16(), &body))
        }
    }
}

fn transport(e: reqwest::Error) -> AuthError {
    if e.is_timeout() {
        AuthError::Network(format!("no answer within {} s", TIMEOUT.as_secs()))
    } else {
        // The URL carries nothing secret, but the text stays short without it.
        AuthError::Network(e.without_url().to_string())
    }
}
