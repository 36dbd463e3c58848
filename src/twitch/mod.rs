//! Signing in to Twitch: `cowatch twitch login` (the Device Code Grant of a public client),
//! the sign-in kept in the data directory, and its refresh while a party runs.
//!
//! ```text
//! twitch login ─ client.rs: POST /device ─► user code + QR (command.rs)
//!                client.rs: POST /token (device code), every `interval` ─► tokens
//!                client.rs: GET /validate ─► login, user id ─► file.rs (0600)
//! party start ── config.rs: file.rs ─► SignIn + TokenCell/LiveToken (chat/login.rs)
//!                                        ├─► IRC bridge: each new connection's login
//!                                        └─► Helix: each request's bearer token
//!                session.rs (task `twitch-sign-in`): refresh when token.rs says it is due,
//!                save the rotated refresh token, set the cell; hourly /validate
//! ```
//!
//! - `token.rs`: the sans-IO core (the record, when to refresh, the poll's pacing, what
//!   Twitch's answers and errors mean);
//! - `client.rs`: the five id.twitch.tv calls;
//! - `file.rs`: the file in the data directory;
//! - `session.rs`: the refresher of a running party;
//! - `command.rs`: `cowatch twitch login` and `logout`.
//!
//! Tokens are never logged or printed: only the user code is shown.

pub mod client;
pub mod command;
pub mod file;
pub mod session;
pub mod token;

use std::sync::Arc;

pub use client::{AuthClient, DEFAULT_AUTH_BASE};
pub use file::TokenFile;
pub use session::{Session, Status};
pub use token::SignIn;

use crate::chat::login::{SIGN_IN_LOST, TokenCell};

/// The scopes asked for by default: reading and sending chat, and the moderator actions
/// Helix forwards (see `moderation/helix.rs`).
pub const DEFAULT_SCOPES: &str = "chat:read chat:edit moderator:manage:banned_users \
     moderator:manage:chat_messages moderator:manage:chat_settings";

/// Why signing in, refreshing or signing out failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The code has not been approved yet (the poll goes on).
    #[error("waiting for the code to be approved")]
    Pending,
    /// Twitch asks to poll less often.
    #[error("Twitch asks to slow down")]
    SlowDown,
    /// The device code expired before it was approved.
    #[error("the code expired before it was approved; run `cowatch twitch login` again")]
    DeviceExpired,
    /// The streamer declined on Twitch.
    #[error("the sign-in was declined on Twitch")]
    Denied,
    /// The refresh token (or the token) was refused: revoked or expired.
    #[error("{SIGN_IN_LOST}")]
    SignInLost,
    /// Any other answer of Twitch; `message` is Twitch's.
    #[error("Twitch {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Twitch's message.
        message: String,
    },
    /// Twitch could not be reached.
    #[error("cannot reach Twitch: {0}")]
    Network(String),
    /// Twitch's answer was not what it documents.
    #[error("Twitch's answer cannot be read: {0}")]
    Answer(String),
    /// The sign-in file could not be read or written.
    #[error("Twitch sign-in file {0}")]
    File(String),
}

/// A stored sign-in a party takes over: what [`Session::start`] needs.
#[derive(Debug, Clone)]
pub struct SignInConfig {
    /// id.twitch.tv, for the app the token was issued to.
    pub client: AuthClient,
    /// Where the sign-in is kept.
    pub file: TokenFile,
    /// The sign-in as stored.
    pub record: SignIn,
    /// Where the current access token is published for the bridge and Helix.
    pub cell: Arc<TokenCell>,
}
