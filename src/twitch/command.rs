//! `cowatch twitch login` and `cowatch twitch logout`, once the command line is resolved
//! (`cli.rs`): what the streamer sees, and the order of the calls.

use std::io::Write;
use std::path::PathBuf;

use super::client::AuthClient;
use super::file::TokenFile;
use super::token::{DevicePoll, Next, SignIn};
use super::{AuthError, SignInConfig};
use crate::chat::bridge::Secret;
use crate::chat::login::LiveToken;
use crate::util::clock::unix_ms;

/// Where the sign-in lives and which app asks for it.
#[derive(Debug, Clone)]
pub struct Account {
    /// The party's data directory.
    pub data_dir: PathBuf,
    /// id.twitch.tv's OAuth base URL.
    pub auth_base: String,
    /// The app's client id (needed to sign in; signing out uses the stored one).
    pub client_id: Option<String>,
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Request {
    /// Sign in with these space-separated scopes.
    Login {
        /// Where and for which app.
        account: Account,
        /// The scopes to ask for.
        scopes: String,
    },
    /// Forget (and revoke) the stored sign-in.
    Logout {
        /// Where.
        account: Account,
    },
}

/// Runs `request` to the end; errors are one line for the streamer.
pub fn main(request: Request) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout();
    match request {
        Request::Login { account, scopes } => runtime.block_on(login(&account, &scopes, &mut out)),
        Request::Logout { account } => runtime.block_on(logout(&account, &mut out)),
    }
}

/// The Device Code Grant: shows the code, polls until it is approved, keeps the sign-in.
pub async fn login(account: &Account, scopes: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let client_id = account
        .client_id
        .as_deref()
        .filter(|c| !c.trim().is_empty());
    let client_id = client_id.ok_or_else(|| {
        anyhow::anyhow!(
            "signing in needs your Twitch app's client id: --client-id or TWITCH_CLIENT_ID \
             (register one at https://dev.twitch.tv/console, client type Public)"
        )
    })?;
    let client = AuthClient::new(&account.auth_base, client_id.trim())?;
    let file = TokenFile::in_dir(&account.data_dir);
    let scopes = scopes.split_whitespace().collect::<Vec<_>>().join(" ");
    let device = client.device(&scopes).await?;
    writeln!(
        out,
        "To sign in to Twitch, open {}",
        device.verification_uri
    )?;
    writeln!(out, "and enter the code {}", device.user_code)?;
    if let Some(qr) = qr_text(&device.verification_uri) {
        writeln!(out, "or scan this with your phone:\n{qr}")?;
    }
    writeln!(out, "Waiting for the code to be approved…")?;
    out.flush()?;
    let mut poll = DevicePoll::new(&device, unix_ms());
    let mut wait = poll.first();
    let token = loop {
        tokio::time::sleep(wait).await;
        match client.poll(&device.device_code, &scopes).await {
            Ok(token) => break token,
            Err(e) => match poll.after(e, unix_ms()) {
                Next::Wait(next) => wait = next,
                Next::Fail(e) => return Err(e.into()),
            },
        }
    };
    let who = client
        .validate(&Secret::new(token.access_token.clone()))
        .await?;
    let record = SignIn::new(token, who, unix_ms());
    file.save(&record)?;
    writeln!(
        out,
        "Signed in to Twitch as {}; the sign-in is kept in {} (readable by you only)",
        record.login,
        file.path().display()
    )?;
    Ok(())
}

/// Revokes the stored token on Twitch (as far as Twitch can be reached) and forgets it.
pub async fn logout(account: &Account, out: &mut impl Write) -> anyhow::Result<()> {
    let file = TokenFile::in_dir(&account.data_dir);
    let Some(record) = file.load()? else {
        writeln!(
            out,
            "Not signed in to Twitch (no {})",
            file.path().display()
        )?;
        return Ok(());
    };
    // The token belongs to the app it was issued to, whatever is configured now.
    let client = AuthClient::new(&account.auth_base, &record.client_id)?;
    match client.revoke(&record.access_token).await {
        Ok(()) => {}
        // Already dead on Twitch's side: nothing to revoke.
        Err(AuthError::SignInLost) => {}
        Err(e) => writeln!(
            out,
            "Could not revoke the token on Twitch ({e}); removing it here anyway. It stops \
             working when it expires, or disconnect the app at https://www.twitch.tv/settings/connections"
        )?,
    }
    file.remove()?;
    writeln!(
        out,
        "Signed out {} from Twitch; removed {}",
        record.login,
        file.path().display()
    )?;
    Ok(())
}

/// The stored sign-in of `data_dir` for a party, with the cell its token is published in;
/// `None` when nobody signed in.
pub fn stored(
    data_dir: &std::path::Path,
    auth_base: &str,
) -> Result<Option<(SignInConfig, LiveToken)>, AuthError> {
    let file = TokenFile::in_dir(data_dir);
    let Some(record) = file.load()? else {
        return Ok(None);
    };
    let client = AuthClient::new(auth_base, &record.client_id)?;
    let (cell, token) = LiveToken::cell(record.access_token.clone());
    let config = SignInConfig {
        client,
        file,
        record,
        cell: std::sync::Arc::new(cell),
    };
    Ok(Some((config, token)))
}

/// `text` as a QR code drawn with half-block characters (two modules a character row);
/// `None` if it does not fit in a QR code. Terminals are mostly light text on dark, so the
/// printed blocks are the code's light modules and the background its dark ones: a phone
/// then sees dark on light, as it expects.
pub fn qr_text(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_text_for_a_terminal() {
        let qr =
            qr_text("https://www.twitch.tv/activate?public=true&device-code=ABCDEFGH").unwrap();
        assert!(qr.lines().count() > 10, "{qr}");
        assert!(qr.contains('█') || qr.contains('▀') || qr.contains('▄'));
    }
}
