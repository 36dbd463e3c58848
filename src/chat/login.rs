//! The token the Twitch links sign in with, as it is now.
//!
//! A token from `TWITCH_OAUTH_TOKEN` never changes; one from `cowatch twitch login` is
//! refreshed while the party runs (`crate::twitch`), and every user of it must take the
//! current one each time: the IRC bridge for each new connection ([`LiveCredentials`], the
//! `twitch-irc` [`LoginCredentials`] over the cell, so a refresh never touches the connection
//! that is up), Helix for each request. One `watch` cell holds it: readers never wait, the
//! writer never blocks, and nobody holds a lock across a network call.

use std::fmt;

use async_trait::async_trait;
use tokio::sync::watch;
use twitch_irc::login::{CredentialsPair, LoginCredentials};

/// An OAuth token: shown nowhere, not even in `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a token as read from the environment; a leading `oauth:` is accepted.
    pub fn new(token: impl Into<String>) -> Secret {
        let token = token.into();
        Secret(token.strip_prefix("oauth:").unwrap_or(&token).to_owned())
    }

    /// The token itself, for the one request that carries it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// What the streamer is told when a stored sign-in stops working: its refresh token was
/// revoked (the app disconnected on twitch.tv, the password changed) or it expired.
pub const SIGN_IN_LOST: &str =
    "Twitch sign-in expired or was revoked; run `cowatch twitch login` again";

/// The login `twitch-irc` reads anonymously with (any `justinfan` name is anonymous).
const ANONYMOUS: &str = "justinfan12345";

/// The current token, or `None` once a sign-in has expired or been revoked. Cheap to
/// clone; every clone sees the writer's latest value.
#[derive(Clone)]
pub struct LiveToken(watch::Receiver<Option<Secret>>);

/// The one writer of a [`LiveToken`]: the refresher of the stored sign-in.
#[derive(Debug)]
pub struct TokenCell(watch::Sender<Option<Secret>>);

impl LiveToken {
    /// A token that never changes (`TWITCH_OAUTH_TOKEN`).
    pub fn fixed(token: Secret) -> LiveToken {
        // The sender is dropped: the value stays readable for good and never changes.
        LiveToken(watch::channel(Some(token)).1)
    }

    /// A cell starting at `token`, and the token that follows it.
    pub fn cell(token: Secret) -> (TokenCell, LiveToken) {
        let (tx, rx) = watch::channel(Some(token));
        (TokenCell(tx), LiveToken(rx))
    }

    /// The token to use now; `None` when there is none any more.
    pub fn current(&self) -> Option<Secret> {
        self.0.borrow().clone()
    }
}

impl From<Secret> for LiveToken {
    fn from(token: Secret) -> LiveToken {
        LiveToken::fixed(token)
    }
}

impl fmt::Debug for LiveToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveToken(…)")
    }
}

impl TokenCell {
    /// Every reader uses `token` from its next request or connection on.
    pub fn set(&self, token: Secret) {
        self.0.send_replace(Some(token));
    }

    /// The sign-in is gone: readers fall back to what they can do without one.
    pub fn clear(&self) {
        self.0.send_replace(None);
    }
}

/// `twitch-irc`'s credentials for each new connection: `login` with the current token, or
/// anonymous once the token is gone (the chat is still read; sending needs a new sign-in).
#[derive(Clone)]
pub struct LiveCredentials {
    /// The account the token belongs to.
    pub login: String,
    /// Its token now.
    pub token: LiveToken,
}

impl fmt::Debug for LiveCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveCredentials")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl LoginCredentials for LiveCredentials {
    type Error = std::convert::Infallible;

    async fn get_credentials(&self) -> Result<CredentialsPair, Self::Error> {
        Ok(match self.token.current() {
            Some(token) => CredentialsPair {
                login: self.login.clone(),
                token: Some(token.expose().to_owned()),
            },
            None => CredentialsPair {
                login: ANONYMOUS.to_owned(),
                token: None,
            },
        })
    }
}

impl LiveCredentials {
    /// Reads anonymously, for good.
    pub fn anonymous() -> LiveCredentials {
        LiveCredentials {
            login: ANONYMOUS.to_owned(),
            token: LiveToken(watch::channel(None).1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_connection_gets_the_token_of_the_moment() {
        let (cell, token) = LiveToken::cell(Secret::new("first"));
        let credentials = LiveCredentials {
            login: "streamer".into(),
            token,
        };
        let pair = credentials.get_credentials().await.unwrap();
        assert_eq!(pair.token.as_deref(), Some("first"));
        cell.set(Secret::new("second"));
        let pair = credentials.get_credentials().await.unwrap();
        assert_eq!(
            (pair.login.as_str(), pair.token.as_deref()),
            ("streamer", Some("second"))
        );
        cell.clear();
        let pair = credentials.get_credentials().await.unwrap();
        assert_eq!((pair.login.as_str(), pair.token), (ANONYMOUS, None));
        assert!(!format!("{credentials:?}").contains("second"));
    }

    #[test]
    fn a_fixed_token_stays() {
        let token = LiveToken::fixed(Secret::new("oauth:abc"));
        assert_eq!(token.current().unwrap().expose(), "abc");
        assert_eq!(format!("{token:?}"), "LiveToken(…)");
    }
}
