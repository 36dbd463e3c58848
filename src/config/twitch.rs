//! The Twitch links of a party (the IRC bridge, Helix) and the token they use: from the
//! TWITCH_OAUTH_TOKEN environment variable when it is set (fixed, as it always was), or else
//! the sign-in `cowatch twitch login` left in the data directory (refreshed while the party
//! runs, by `crate::twitch::Session`).

use std::net::ToSocketAddrs;
use std::path::Path;

use super::{ConfigError, PartyOptions};
use crate::chat::bridge::{BridgeConfig, Secret};
use crate::chat::login::LiveToken;
use crate::moderation::helix::{self, HelixConfig, Token};
use crate::twitch::{self as auth, SignInConfig};

/// What a party links to Twitch with.
pub struct Links {
    /// The chat, when a channel is given.
    pub bridge: Option<BridgeConfig>,
    /// Helix forwarding, when there is a client id and a token.
    pub helix: Option<HelixConfig>,
    /// The stored sign-in, when it is what the links use.
    pub sign_in: Option<SignInConfig>,
}

/// Resolves the links from the options, the environment and the data directory.
pub fn links(options: &PartyOptions, data_dir: &Path) -> Result<Links, ConfigError> {
    let env_token = std::env::var("TWITCH_OAUTH_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let client_id = options
        .twitch_client_id
        .clone()
        .or_else(|| std::env::var("TWITCH_CLIENT_ID").ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    // The stored sign-in only matters for a channel, and never over the environment's token.
    let stored = match (&env_token, &options.twitch_channel) {
        (None, Some(_)) => {
            let base = options
                .twitch_auth_base
                .as_deref()
                .unwrap_or(auth::DEFAULT_AUTH_BASE);
            auth::command::stored(data_dir, base).map_err(|e| ConfigError(e.to_string()))?
        }
        _ => None,
    };
    let bridge = bridge(
        options,
        env_token.as_deref(),
        stored.as_ref().map(|(c, t)| (c.record.login.as_str(), t)),
    )?;
    let base = || {
        options
            .twitch_api_base
            .clone()
            .unwrap_or_else(|| helix::DEFAULT_BASE.to_owned())
    };
    let helix = match (&bridge, &stored, client_id) {
        (Some(bridge), Some((sign_in, token)), client_id) => {
            // Twitch checks that the Client-Id is the app the token was issued to.
            if let Some(other) = client_id.filter(|c| *c != sign_in.record.client_id) {
                return Err(ConfigError(format!(
                    "TWITCH_CLIENT_ID {other} is not the app the stored Twitch sign-in belongs \
                     to; leave it out, or run `cowatch twitch login` with it"
                )));
            }
            Some(HelixConfig {
                base: base(),
                client_id: sign_in.record.client_id.clone(),
                token: Token::live(token.clone()),
                broadcaster_login: bridge.channel.clone(),
            })
        }
        (Some(bridge), None, Some(client_id)) => {
            let token = env_token.ok_or_else(|| {
                ConfigError(
                    "TWITCH_CLIENT_ID is set but TWITCH_OAUTH_TOKEN is not (and nobody signed \
                     in with `cowatch twitch login`): Helix needs a token"
                        .into(),
                )
            })?;
            Some(HelixConfig {
                base: base(),
                client_id,
                token: Token::new(token),
                broadcaster_login: bridge.channel.clone(),
            })
        }
        _ => None,
    };
    Ok(Links {
        bridge,
        helix,
        sign_in: stored.map(|(config, _)| config),
    })
}

/// The Twitch link from the options and the token: `env_token` from TWITCH_OAUTH_TOKEN, or
/// else the stored sign-in's login and token.
fn bridge(
    options: &PartyOptions,
    env_token: Option<&str>,
    stored: Option<(&str, &LiveToken)>,
) -> Result<Option<BridgeConfig>, ConfigError> {
    let Some(channel) = &options.twitch_channel else {
        if options.twitch_login.is_some() || options.twitch_irc_addr.is_some() {
            return Err(ConfigError(
                "--twitch-login and --twitch-irc-addr need --twitch-channel".into(),
            ));
        }
        return Ok(None);
    };
    let channel = channel.trim_start_matches('#').to_ascii_lowercase();
    // Twitch logins: 1 to 25 ASCII letters, digits and underscores.
    let valid = |name: &str| {
        (1..=25).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if !valid(&channel) {
        return Err(ConfigError(format!(
            "--twitch-channel {channel:?} is not a Twitch login (letters, digits, underscores; at most 25)"
        )));
    }
    let credentials = match (&options.twitch_login, env_token, stored) {
        (Some(login), token, stored) => {
            let login = login.to_ascii_lowercase();
            if !valid(&login) {
                return Err(ConfigError(format!(
                    "--twitch-login {login:?} is not a Twitch login"
                )));
            }
            match (token, stored) {
                (Some(token), _) => Some((login, LiveToken::fixed(Secret::new(token)))),
                (None, Some((signed_in, token))) if signed_in == login => {
                    Some((login, token.clone()))
                }
                (None, Some((signed_in, _))) => {
                    return Err(ConfigError(format!(
                        "--twitch-login {login} is not the signed-in Twitch account ({signed_in}); \
                         leave it out, or run `cowatch twitch login` as {login}"
                    )));
                }
                (None, None) => {
                    return Err(ConfigError(
                        "--twitch-login needs the TWITCH_OAUTH_TOKEN environment variable, or \
                         a sign-in: `cowatch twitch login`"
                            .into(),
                    ));
                }
            }
        }
        // Signed in: the account sends without naming it again.
        (None, None, Some((login, token))) => Some((login.to_owned(), token.clone())),
        (None, _, _) => None,
    };
    let irc_addr = match &options.twitch_irc_addr {
        Some(text) => Some(
            text.to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "--twitch-irc-addr {text:?} is not a reachable HOST:PORT"
                    ))
                })?,
        ),
        None => None,
    };
    Ok(Some(BridgeConfig {
        channel,
        credentials,
        irc_addr,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(login: Option<&str>) -> PartyOptions {
        PartyOptions {
            twitch_channel: Some("#Party_Host".into()),
            twitch_login: login.map(str::to_owned),
            ..PartyOptions::default()
        }
    }

    #[test]
    fn a_stored_sign_in_names_the_account_and_the_environment_wins() {
        let token = LiveToken::fixed(Secret::new("stored"));
        let stored = Some(("streamer", &token));
        let signed_in = bridge(&options(None), None, stored).unwrap().unwrap();
        let (login, live) = signed_in.credentials.unwrap();
        assert_eq!(login, "streamer");
        assert_eq!(live.current().unwrap().expose(), "stored");
        assert_eq!(signed_in.channel, "party_host");
        let env = bridge(&options(Some("Streamer")), Some("env"), stored)
            .unwrap()
            .unwrap();
        assert_eq!(
            env.credentials.unwrap().1.current().unwrap().expose(),
            "env"
        );
        // With a token in the environment but no login, the chat is read anonymously.
        let anonymous = bridge(&options(None), Some("env"), None).unwrap().unwrap();
        assert!(anonymous.credentials.is_none());
    }

    #[test]
    fn a_login_that_is_not_the_signed_in_one_is_refused_clearly() {
        let token = LiveToken::fixed(Secret::new("stored"));
        let err = bridge(&options(Some("someone")), None, Some(("streamer", &token)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not the signed-in Twitch account (streamer)"),
            "{err}"
        );
        let err = bridge(&options(Some("someone")), None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cowatch twitch login"), "{err}");
        assert!(!err.contains("stored"));
    }
}
