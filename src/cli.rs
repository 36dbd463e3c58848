//! The command line: the subcommands and their options, as clap reads them.
//!
//! `demo` and `party` take [`PartyOptions`] (which are also the config file's keys); every
//! other subcommand is a tool and takes that tool's own options. The `///` comments are the
//! `--help` text.

use std::process::ExitCode;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, DEFAULT_DATA_DIR, PartyOptions};
use crate::tools::bench::BenchArgs;
use crate::tools::ctl::CtlArgs;
use crate::tools::load::ReceiversArgs;
use crate::tools::probe::ProbeArgs;
use crate::tools::replay::ReplayArgs;

/// cowatch: a self-hosted watch party. Composites a movie with your webcam, encodes it once
/// and serves it to your viewers.
#[derive(Debug, Parser)]
#[command(name = "cowatch", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A complete party with built-in media: a generated movie and a synthetic webcam.
    Demo(PartyOptions),
    /// A watch party: your movie, your webcam, your mic.
    Party(PartyOptions),
    /// Sign in to Twitch (or out) for the chat bridge and moderator actions: the sign-in is
    /// kept in the data directory and refreshed while a party runs.
    Twitch(TwitchArgs),
    /// Watch a party headlessly and report what arrives: checks that it is reachable.
    Probe(ProbeArgs),
    /// Measurements printed as a table (see the README).
    Bench(BenchArgs),
    /// A stand-in for Twitch chat on this machine: a Twitch-protocol IRC server that
    /// replays a capture to whoever joins, for trying the chat bridge without Twitch
    /// (`cowatch demo --twitch-channel xqcow --twitch-irc-addr 127.0.0.1:6667`).
    TwitchReplay(ReplayArgs),
    /// Remote control of a running party through its API. The key comes from the
    /// COWATCH_KEY environment variable (the host key, or a moderator key for `mod` and
    /// `viewers`), never from a flag that would show in `ps` or shell history.
    Ctl(CtlArgs),
    /// Many light WHEP viewers in one process (str0m, no decode), counting what arrives; a
    /// JSON report on stdout. The load generator of the benchmarks and load tests.
    #[command(hide = true)]
    Receivers(ReceiversArgs),
}

/// `cowatch twitch …`.
#[derive(Debug, Args)]
pub struct TwitchArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TwitchCommand,
}

/// The `twitch` subcommands.
#[derive(Debug, Subcommand)]
pub enum TwitchCommand {
    /// Sign in with a code shown here and approved on twitch.tv (from any device).
    Login {
        /// Where, and for which app.
        #[command(flatten)]
        account: TwitchAccount,
        /// The scopes to ask for, separated by spaces.
        #[arg(long, default_value = crate::twitch::DEFAULT_SCOPES)]
        scopes: String,
    },
    /// Forget the stored sign-in, and revoke its token on Twitch.
    Logout {
        /// Where.
        #[command(flatten)]
        account: TwitchAccount,
    },
}

/// Where the sign-in is kept and which app asks for it; the party's own options and config
/// file name the same things.
#[derive(Debug, Args)]
pub struct TwitchAccount {
    /// The party's data directory [default: the config file's, else ./cowatch-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The party's TOML config file, for its data-dir, twitch-client-id and twitch-auth-base.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Your Twitch app's client id (register a Public app at dev.twitch.tv/console).
    #[arg(long, value_name = "ID", env = "TWITCH_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Twitch's OAuth base URL (for tests).
    #[arg(long, value_name = "URL")]
    pub twitch_auth_base: Option<String>,
}

impl TwitchCommand {
    /// The request, with the config file's values under the flags.
    pub fn resolve(self) -> Result<crate::twitch::command::Request, ConfigError> {
        use crate::twitch::command::Request;
        Ok(match self {
            TwitchCommand::Login { account, scopes } => Request::Login {
                account: account.resolve()?,
                scopes,
            },
            TwitchCommand::Logout { account } => Request::Logout {
                account: account.resolve()?,
            },
        })
    }
}

impl TwitchAccount {
    fn resolve(self) -> Result<crate::twitch::command::Account, ConfigError> {
        let file = match &self.config {
            Some(path) => PartyOptions::from_file(path)?,
            None => PartyOptions::default(),
        };
        Ok(crate::twitch::command::Account {
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            auth_base: self
                .twitch_auth_base
                .or(file.twitch_auth_base)
                .unwrap_or_else(|| crate::twitch::DEFAULT_AUTH_BASE.to_owned()),
            client_id: self.client_id.or(file.twitch_client_id),
        })
    }
}

impl Cli {
    /// The command line of this process, or the exit code when there is nothing to run:
    /// `--help` and `--version` print and succeed; a mistake prints one line and fails.
    pub fn from_args() -> Result<Self, ExitCode> {
        match Self::try_parse() {
            Ok(cli) => Ok(cli),
            Err(e) if !e.use_stderr() => {
                let _ = e.print();
                Err(ExitCode::SUCCESS)
            }
            Err(e) => {
                // clap's report is a page; the user needs its first line.
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or("error: invalid arguments");
                eprintln!("{first} (see cowatch --help)");
                Err(ExitCode::from(2))
            }
        }
    }
}
