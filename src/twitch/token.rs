//! The sign-in's sans-IO core: the record kept on disk, when it is due for a refresh, how the
//! device-code poll paces itself, and what Twitch's answers mean. No clock is read and no
//! socket touched here; callers pass `now` (wall-clock milliseconds, because the record
//! outlives the process) and the bytes Twitch sent.

use std::time::Duration;

use serde::Deserialize;

use super::AuthError;
use crate::chat::bridge::Secret;

/// Refresh no later than this before the token expires (for tokens that live long enough
/// for it to make sense: Twitch's last about four hours).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Twitch asks apps to validate their tokens once an hour while they use them.
pub const VALIDATE_EVERY: Duration = Duration::from_secs(60 * 60);

/// A signed-in Twitch account, as kept in the data directory.
#[derive(Debug, Clone)]
pub struct SignIn {
    /// The account's login (from `/oauth2/validate`): the IRC nick and Helix's moderator.
    pub login: String,
    /// The account's user id.
    pub user_id: String,
    /// The app the token was issued to; Helix wants it beside the token.
    pub client_id: String,
    /// What the token may do.
    pub scopes: Vec<String>,
    /// The access token.
    pub access_token: Secret,
    /// The refresh token; it rotates (public clients): each refresh brings a new one.
    pub refresh_token: Secret,
    /// When the access token was issued, in UNIX milliseconds.
    pub obtained_at_ms: i64,
    /// When it expires, in UNIX milliseconds.
    pub expires_at_ms: i64,
}

impl SignIn {
    /// A record from a token answer and the validate answer about it, received at `now_ms`.
    pub fn new(token: TokenAnswer, who: ValidateAnswer, now_ms: i64) -> SignIn {
        SignIn {
            login: who.login,
            user_id: who.user_id,
            client_id: who.client_id,
            scopes: token.scope,
            access_token: Secret::new(token.access_token),
            refresh_token: Secret::new(token.refresh_token),
            obtained_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(secs_ms(token.expires_in)),
        }
    }

    /// The record after a refresh at `now_ms`: the new tokens (the old refresh token is
    /// dead from now on), the same account.
    pub fn refreshed(&self, token: TokenAnswer, now_ms: i64) -> SignIn {
        SignIn {
            access_token: Secret::new(token.access_token),
            refresh_token: Secret::new(token.refresh_token),
            scopes: if token.scope.is_empty() {
                self.scopes.clone()
            } else {
                token.scope
            },
            obtained_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(secs_ms(token.expires_in)),
            ..self.clone()
        }
    }

    /// When to refresh: at 80 % of the token's life, or [`REFRESH_MARGIN`] before it
    /// expires, whichever comes first, but never in the first half of its life. The half
    /// keeps a short-lived token (the tests' few seconds) from being refreshed in a loop;
    /// the 80 % leaves a four-hour token almost an hour of retries if Twitch is unreachable.
    pub fn refresh_at_ms(&self) -> i64 {
        let life = (self.expires_at_ms - self.obtained_at_ms).max(0);
        let at_80 = self.obtained_at_ms + life * 4 / 5;
        let half = self.obtained_at_ms + life / 2;
        let margin = self.expires_at_ms - REFRESH_MARGIN.as_millis() as i64;
        at_80.min(margin.max(half))
    }

    /// Whether the token should be refreshed at `now_ms`.
    pub fn refresh_due(&self, now_ms: i64) -> bool {
        now_ms >= self.refresh_at_ms()
    }

    /// Whether the access token has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// `POST /oauth2/device`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAnswer {
    /// What the poll sends back; never shown (it is as good as a password for a while).
    pub device_code: String,
    /// Seconds the code stays valid.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
    /// What the streamer types, or finds already filled in at the verification page.
    pub user_code: String,
    /// Where to approve it.
    pub verification_uri: String,
}

/// A successful `POST /oauth2/token` (device code or refresh token grant).
#[derive(Deserialize)]
pub struct TokenAnswer {
    /// The access token.
    pub access_token: String,
    /// The next refresh token.
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Its scopes (Twitch sends a list; absent on some answers).
    #[serde(default)]
    pub scope: Vec<String>,
}

/// `GET /oauth2/validate`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ValidateAnswer {
    /// The app the token belongs to.
    pub client_id: String,
    /// The account.
    pub login: String,
    /// Its user id.
    pub user_id: String,
    /// What the token may do.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Seconds left.
    #[serde(default)]
    pub expires_in: u64,
}

/// Twitch's error body on id.twitch.tv: `{"status":400,"message":"authorization_pending"}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    /// Some answers (OAuth-style) carry `error` instead.
    #[serde(default)]
    error: String,
}

/// The message of a Twitch error body (`message`, else OAuth's `error`), when it has one.
/// Helix and id.twitch.tv write their errors the same way.
pub fn error_message(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| {
            if b.message.is_empty() {
                b.error
            } else {
                b.message
            }
        })
        .filter(|m| !m.is_empty())
}

/// What a failed id.twitch.tv call means. Twitch's messages are matched without regard to
/// case: it writes both `invalid device code` and `Invalid refresh token`.
pub fn classify(status: u16, body: &[u8]) -> AuthError {
    let message = error_message(body)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    match message.to_ascii_lowercase().as_str() {
        "authorization_pending" => AuthError::Pending,
        "slow_down" => AuthError::SlowDown,
        "expired_token" | "invalid device code" => AuthError::DeviceExpired,
        "access_denied" => AuthError::Denied,
        "invalid refresh token" | "invalid access token" | "invalid token" => AuthError::SignInLost,
        _ => AuthError::Api { status, message },
    }
}

/// Reads a successful answer of type `T`.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, AuthError> {
    serde_json::from_slice(body).map_err(|e| AuthError::Answer(e.to_string()))
}

/// The device-code poll's pacing: Twitch's `interval`, five seconds more after each
/// `slow_down` (as RFC 8628 says), and an end when the code expires.
#[derive(Debug, Clone)]
pub struct DevicePoll {
    interval: Duration,
    deadline_ms: i64,
}

/// What to do after a poll.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Poll again after this long.
    Wait(Duration),
    /// Stop: the code expired (or Twitch said something that will not change).
    Fail(AuthError),
}

impl DevicePoll {
    /// The poll of `device`, asked for at `now_ms`.
    pub fn new(device: &DeviceAnswer, now_ms: i64) -> DevicePoll {
        DevicePoll {
            // Never faster than once a second, whatever the answer says.
            interval: Duration::from_secs(device.interval.max(1)),
            deadline_ms: now_ms.saturating_add(secs_ms(device.expires_in)),
        }
    }

    /// How long to wait before the first poll.
    pub fn first(&self) -> Duration {
        self.interval
    }

    /// After a poll that did not bring the token, at `now_ms`.
    pub fn after(&mut self, error: AuthError, now_ms: i64) -> Next {
        match error {
            AuthError::Pending => {}
            AuthError::SlowDown => self.interval += Duration::from_secs(5),
            // A hiccup on the way is retried like a pending answer: the code still holds.
            AuthError::Network(_) => {}
            other => return Next::Fail(other),
        }
        if now_ms.saturating_add(self.interval.as_millis() as i64) > self.deadline_ms {
            return Next::Fail(AuthError::DeviceExpired);
        }
        Next::Wait(self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn record(obtained: i64, life_ms: i64) -> SignIn {
        SignIn {
            login: "streamer".into(),
            user_id: "1".into(),
            client_id: "cid".into(),
            scopes: vec![],
            access_token: Secret::new("a"),
            refresh_token: Secret::new("r"),
            obtained_at_ms: obtained,
            expires_at_ms: obtained + life_ms,
        }
    }

    #[test]
    fn a_four_hour_token_is_refreshed_at_80_percent() {
        let t = record(1_000, 4 * HOUR_MS);
        assert_eq!(t.refresh_at_ms(), 1_000 + 4 * HOUR_MS * 4 / 5);
        assert!(!t.refresh_due(1_000 + 3 * HOUR_MS));
        assert!(t.refresh_due(1_000 + 4 * HOUR_MS * 4 / 5));
        assert!(!t.expired(1_000 + 4 * HOUR_MS - 1));
        assert!(t.expired(1_000 + 4 * HOUR_MS));
    }

    #[test]
    fn a_ten_minute_token_is_refreshed_five_minutes_before_it_expires() {
        let t = record(0, 10 * 60_000);
        assert_eq!(t.refresh_at_ms(), 5 * 60_000);
        let t = record(0, 20 * 60_000);
        assert_eq!(t.refresh_at_ms(), 15 * 60_000);
    }

    #[test]
    fn a_token_of_seconds_is_refreshed_halfway_not_in_a_loop() {
        let t = record(10_000, 4_000);
        assert_eq!(t.refresh_at_ms(), 12_000);
        assert!(!t.refresh_due(11_999));
        // After a refresh the next one is again halfway through the new life.
        let next = t.refreshed(
            TokenAnswer {
                access_token: "a2".into(),
                refresh_token: "r2".into(),
                expires_in: 4,
                scope: vec![],
            },
            12_000,
        );
        assert_eq!(next.refresh_at_ms(), 14_000);
        assert_eq!(next.refresh_token.expose(), "r2");
        assert_eq!(next.login, "streamer");
        // An already expired record is due at once.
        assert!(record(0, 0).refresh_due(0));
    }

    #[test]
    fn twitch_answers_are_read() {
        let device: DeviceAnswer = parse(
            br#"{"device_code":"dc","expires_in":1800,"interval":5,"user_code":"ABCDEFGH","verification_uri":"https://www.twitch.tv/activate?public=true&device-code=ABCDEFGH"}"#,
        )
        .unwrap();
        assert_eq!(
            (device.user_code.as_str(), device.interval),
            ("ABCDEFGH", 5)
        );
        let token: TokenAnswer = parse(
            br#"{"access_token":"at","expires_in":14146,"refresh_token":"rt","scope":["chat:read","chat:edit"],"token_type":"bearer"}"#,
        )
        .unwrap();
        let who: ValidateAnswer = parse(
            br#"{"client_id":"cid","login":"twitchdev","scopes":["chat:read"],"user_id":"141981764","expires_in":14146}"#,
        )
        .unwrap();
        let record = SignIn::new(token, who, 1_000);
        assert_eq!(record.login, "twitchdev");
        assert_eq!(record.expires_at_ms, 1_000 + 14_146_000);
        assert_eq!(record.scopes, ["chat:read", "chat:edit"]);
        assert!(!format!("{record:?}").contains("at\""), "{record:?}");
        assert!(matches!(
            parse::<TokenAnswer>(b"{\"access_token\":1}"),
            Err(AuthError::Answer(_))
        ));
    }

    #[test]
    fn twitch_errors_are_told_apart() {
        let e = |body: &str| classify(400, body.as_bytes());
        assert_eq!(
            e(r#"{"status":400,"message":"authorization_pending"}"#),
            AuthError::Pending
        );
        assert_eq!(
            e(r#"{"status":400,"message":"slow_down"}"#),
            AuthError::SlowDown
        );
        assert_eq!(
            e(r#"{"status":400,"message":"invalid device code"}"#),
            AuthError::DeviceExpired
        );
        assert_eq!(
            e(r#"{"status":400,"message":"Invalid refresh token"}"#),
            AuthError::SignInLost
        );
        assert_eq!(
            classify(401, br#"{"status":401,"message":"invalid access token"}"#),
            AuthError::SignInLost
        );
        assert_eq!(
            classify(404, br#"{"status":404,"message":"client does not exist"}"#),
            AuthError::Api {
                status: 404,
                message: "client does not exist".into()
            }
        );
        assert_eq!(
            classify(502, b"<html>bad gateway</html>"),
            AuthError::Api {
                status: 502,
                message: "<html>bad gateway</html>".into()
            }
        );
        assert!(
            AuthError::SignInLost
                .to_string()
                .contains("run `cowatch twitch login` again")
        );
    }

    #[test]
    fn the_poll_waits_slows_down_and_gives_up_when_the_code_expires() {
        let device = DeviceAnswer {
            device_code: "dc".into(),
            expires_in: 30,
            interval: 5,
            user_code: "U".into(),
            verification_uri: "v".into(),
        };
        let mut poll = DevicePoll::new(&device, 0);
        assert_eq!(poll.first(), Duration::from_secs(5));
        assert_eq!(
            poll.after(AuthError::Pending, 5_000),
            Next::Wait(Duration::from_secs(5))
        );
        assert_eq!(
            poll.after(AuthError::SlowDown, 10_000),
            Next::Wait(Duration::from_secs(10))
        );
        assert_eq!(
            poll.after(AuthError::Pending, 25_000),
            Next::Fail(AuthError::DeviceExpired)
        );
        let mut poll = DevicePoll::new(&device, 0);
        assert_eq!(
            poll.after(AuthError::Denied, 5_000),
            Next::Fail(AuthError::Denied)
        );
        assert_eq!(
            poll.after(AuthError::DeviceExpired, 5_000),
            Next::Fail(AuthError::DeviceExpired)
        );
    }
}
