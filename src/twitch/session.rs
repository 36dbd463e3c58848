//! A party's stored sign-in while it runs: the `twitch-sign-in` task refreshes the token
//! before it expires, keeps each rotated refresh token on disk at once, validates the token
//! hourly as Twitch asks, and hands every new access token to the IRC bridge and Helix
//! through the [`TokenCell`].
//!
//! When Twitch refuses the refresh token (revoked: the app was disconnected on twitch.tv, or
//! the password changed; or simply expired), the party does not stop: the streamer is told
//! once in the log (and on the host page), the cell is emptied, and from then on the chat is
//! read anonymously. The IRC connection that is up stays up (Twitch does not drop a logged-in
//! connection when its token dies); a reconnect logs in as `justinfan…`, because a dead token
//! would be refused forever and the chat would go dark. Sending to Twitch and Helix actions
//! stop until `cowatch twitch login` is run again and the party restarted.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::client::AuthClient;
use super::file::TokenFile;
use super::token::{SignIn, VALIDATE_EVERY};
use super::{AuthError, SignInConfig};
use crate::chat::login::{SIGN_IN_LOST, TokenCell};
use crate::shutdown::Shutdown;
use crate::util::clock::unix_ms;

/// First wait after a refresh or validation that failed for a passing reason; doubled each
/// time up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest wait between attempts.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How long a step in flight when the party stops may still take (under `main`'s 5 s grace).
const FINISH_ON_STOP: Duration = Duration::from_secs(3);

/// What the host page shows of the sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The signed-in account.
    pub login: String,
    /// False once Twitch refused the refresh token.
    pub signed_in: bool,
    /// What to do about it, when not signed in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A running sign-in. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    status: watch::Receiver<Status>,
}

/// What the task does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Refresh the token now.
    Refresh,
    /// Validate it now.
    Validate,
    /// Nothing until this many milliseconds have passed.
    Sleep(i64),
}

/// The next step at `now_ms`, for a token last validated at `validated_ms` (sans-IO, so
/// the timing is tested on a virtual clock).
pub fn next_step(record: &SignIn, validated_ms: i64, now_ms: i64) -> Step {
    let validate_at = validated_ms.saturating_add(VALIDATE_EVERY.as_millis() as i64);
    if record.refresh_due(now_ms) {
        Step::Refresh
    } else if now_ms >= validate_at {
        Step::Validate
    } else {
        Step::Sleep(record.refresh_at_ms().min(validate_at) - now_ms)
    }
}

impl Session {
    /// Takes over the stored sign-in. A token already due (the party starts hours after the
    /// last one) is refreshed before this returns, so the first IRC login uses a good one.
    pub async fn start(config: SignInConfig, shutdown: &Shutdown) -> Session {
        let (status_tx, status) = watch::channel(Status {
            login: config.record.login.clone(),
            signed_in: true,
            problem: None,
        });
        let mut task = Task {
            client: config.client,
            file: config.file,
            record: config.record,
            cell: config.cell,
            status: status_tx,
            // Validated when the party starts, as Twitch asks.
            validated_ms: i64::MIN,
            failures: 0,
            lost: false,
        };
        let stop = shutdown.token();
        if task.record.refresh_due(unix_ms()) {
            task.step().await;
        }
        shutdown.spawn("twitch-sign-in", async move {
            loop {
                let step = task.step();
                tokio::pin!(step);
                let next = tokio::select! {
                    next = &mut step => next,
                    () = stop.cancelled() => {
                        // A refresh in flight may already have spent the old refresh token
                        // on Twitch's side; only its answer has the new one, so it gets a
                        // moment to land in the file (within the party's stop grace).
                        let _ = tokio::time::timeout(FINISH_ON_STOP, step).await;
                        return;
                    }
                };
                // `None`: signed out by Twitch; nothing left but to wait for the party's end.
                let Some(wait) = next else { break };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            stop.cancelled().await;
        });
        Session { status }
    }

    /// The sign-in as the host page shows it.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }
}

struct Task {
    client: AuthClient,
    file: TokenFile,
    record: SignIn,
    cell: std::sync::Arc<TokenCell>,
    status: watch::Sender<Status>,
    validated_ms: i64,
    failures: u32,
    /// Twitch refused the refresh token: nothing more to try.
    lost: bool,
}

impl Task {
    /// Does what is due; returns how long to wait before the next step, or `None` once the
    /// sign-in is lost for good.
    async fn step(&mut self) -> Option<Duration> {
        if self.lost {
            return None;
        }
        let now = unix_ms();
        let result = match next_step(&self.record, self.validated_ms, now) {
            Step::Sleep(ms) => return Some(Duration::from_millis(ms.max(1) as u64)),
            Step::Refresh => self.refresh(now).await,
            Step::Validate => match self.client.validate(&self.record.access_token).await {
                Ok(_) => {
                    self.validated_ms = now;
                    Ok(())
                }
                // A dead access token (revoked on Twitch) may still have a live refresh
                // token: refresh at once.
                Err(AuthError::SignInLost) => self.refresh(now).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => {
                self.failures = 0;
                Some(Duration::ZERO)
            }
            Err(AuthError::SignInLost) => {
                tracing::warn!(login = self.record.login, "{SIGN_IN_LOST}");
                self.lost = true;
                self.cell.clear();
                self.status.send_replace(Status {
                    login: self.record.login.clone(),
                    signed_in: false,
                    problem: Some(SIGN_IN_LOST.to_owned()),
                });
                None
            }
            Err(e) => {
                let wait = retry_wait(self.failures);
                self.failures = self.failures.saturating_add(1);
                tracing::warn!("Twitch sign-in: {e}; trying again in {} s", wait.as_secs());
                Some(wait)
            }
        }
    }

    async fn refresh(&mut self, now: i64) -> Result<(), AuthError> {
        let answer = self.client.refresh(&self.record.refresh_token).await?;
        let next = self.record.refreshed(answer, now);
        // The old refresh token is spent: the new one goes to disk before anything else.
        if let Err(e) = self.file.save(&next) {
            tracing::error!(
                "cannot keep the refreshed Twitch sign-in ({e}); the party goes on, but the \
                 next start will need `cowatch twitch login`"
            );
        }
        self.record = next;
        self.cell.set(self.record.access_token.clone());
        self.validated_ms = now;
        tracing::info!(
            login = self.record.login,
            expires_in_s = (self.record.expires_at_ms - now) / 1000,
            "Twitch token refreshed"
        );
        Ok(())
    }
}

fn retry_wait(failures: u32) -> Duration {
    (FIRST_RETRY * 2u32.saturating_pow(failures.min(8))).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::bridge::Secret;

    #[test]
    fn the_task_sleeps_refreshes_and_validates_on_time() {
        let record = SignIn {
            login: "s".into(),
            user_id: "1".into(),
            client_id: "c".into(),
            scopes: vec![],
            access_token: Secret::new("a"),
            refresh_token: Secret::new("r"),
            obtained_at_ms: 0,
            expires_at_ms: 4 * 3_600_000,
        };
        // Never validated: at once.
        assert_eq!(next_step(&record, i64::MIN, 0), Step::Validate);
        // Validated now: the next is an hour away, before the refresh.
        assert_eq!(next_step(&record, 0, 0), Step::Sleep(3_600_000));
        let refresh_at = record.refresh_at_ms();
        assert_eq!(
            next_step(&record, refresh_at - 1_000, refresh_at - 1_000),
            Step::Sleep(1_000)
        );
        assert_eq!(next_step(&record, refresh_at, refresh_at), Step::Refresh);
        assert_eq!(retry_wait(0), FIRST_RETRY);
        assert_eq!(retry_wait(30), MAX_RETRY);
    }
}
