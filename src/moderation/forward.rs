//! Step 3 of an action: telling Twitch through Helix, and remembering what Twitch will echo
//! back over IRC, so the echo is not taken for a Twitch moderator's own action.

use std::sync::{Mutex, MutexGuard};

use super::helix::{ChatSettingsPatch, Helix, HelixError};
use crate::chat::RoomModes;
use crate::util::clock::unix_ms;
use crate::util::lock::Locked;

/// How long a forwarded action waits for Twitch to echo it over IRC (CLEARCHAT/CLEARMSG).
const ECHO_WINDOW_MS: i64 = 30_000;

/// What applying an action in the party learnt that Twitch must be told.
#[derive(Debug)]
pub(super) enum Forward {
    /// Nothing goes to Twitch.
    None,
    /// Delete this message.
    Delete(String),
    /// Ban (`duration_s` = `None`) or time out.
    Ban {
        login: String,
        user_id: Option<String>,
        duration_s: Option<u32>,
        reason: Option<String>,
    },
    /// Lift a ban or timeout.
    Unban {
        login: String,
        user_id: Option<String>,
    },
    /// Clear the whole chat.
    ClearChat,
    /// Change the room modes named in the patch, which brings them to these.
    Settings(ChatSettingsPatch, RoomModes),
}

/// An action of ours Twitch will echo over IRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Echo {
    /// A CLEARCHAT for this login (`None`: the whole chat).
    Clear(Option<String>),
    /// A CLEARMSG for this message.
    Delete(String),
    /// A ROOMSTATE bringing the room to these modes.
    Modes(RoomModes),
}

/// Echoes still expected, each until its deadline in ms. A std `Mutex`: sections are short
/// and none awaits.
#[derive(Debug, Default)]
pub(super) struct Echoes(Mutex<Vec<(Echo, i64)>>);

impl Echoes {
    fn lock(&self) -> MutexGuard<'_, Vec<(Echo, i64)>> {
        // A panic mid-section loses at most one expected echo; a poisoned lock is used as is.
        self.0.locked()
    }

    /// Expects `echo` from now on, for [`ECHO_WINDOW_MS`].
    fn expect(&self, echo: Echo) -> Echo {
        let now = unix_ms();
        let mut echoes = self.lock();
        echoes.retain(|(_, until)| *until > now);
        echoes.push((echo.clone(), now + ECHO_WINDOW_MS));
        echo
    }

    /// Stops expecting `echo` (the call failed, so Twitch will not send it).
    fn forget(&self, echo: &Echo) {
        let mut echoes = self.lock();
        if let Some(i) = echoes.iter().position(|(e, _)| e == echo) {
            echoes.remove(i);
        }
    }

    /// Whether `echo` was expected (and is no longer).
    pub(super) fn consume(&self, echo: &Echo, now: i64) -> bool {
        let mut echoes = self.lock();
        echoes.retain(|(_, until)| *until > now);
        match echoes.iter().position(|(e, _)| e == echo) {
            Some(i) => {
                echoes.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Tells Twitch. The IRC echo is expected before the call, since Twitch may send it before
/// its HTTP answer arrives, and forgotten if the call fails.
pub(super) async fn forward(
    helix: &Helix,
    echoes: &Echoes,
    forward: Forward,
) -> Result<(), HelixError> {
    let (echo, result) = match forward {
        Forward::None => return Ok(()),
        Forward::Delete(id) => {
            let echo = echoes.expect(Echo::Delete(id.clone()));
            (echo, helix.delete_message(Some(&id)).await)
        }
        Forward::ClearChat => {
            let echo = echoes.expect(Echo::Clear(None));
            (echo, helix.delete_message(None).await)
        }
        Forward::Ban {
            login,
            user_id,
            duration_s,
            reason,
        } => {
            let user_id = user_id_of(helix, &login, user_id).await?;
            let echo = echoes.expect(Echo::Clear(Some(login)));
            (
                echo,
                helix.ban(&user_id, duration_s, reason.as_deref()).await,
            )
        }
        Forward::Unban { login, user_id } => {
            // Twitch sends nothing over IRC for an unban.
            let user_id = user_id_of(helix, &login, user_id).await?;
            return helix.unban(&user_id).await;
        }
        Forward::Settings(patch, modes) => {
            let echo = echoes.expect(Echo::Modes(modes));
            (echo, helix.update_chat_settings(&patch).await.map(drop))
        }
    };
    if result.is_err() {
        echoes.forget(&echo);
    }
    result
}

/// The user's Twitch id: the one known, or Helix's answer for `login`.
async fn user_id_of(
    helix: &Helix,
    login: &str,
    known: Option<String>,
) -> Result<String, HelixError> {
    match known {
        Some(id) => Ok(id),
        None => helix.user_id(login).await,
    }
}
