//! The command line: the subcommands and their options, as clap reads them.
//!
//! `demo` and `party` take [`PartyOptions`] (which are also the config file's keys); every
//! other subcommand is a tool and takes that tool's own options. The `///` comments are the
//! `--help` text.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::PartyOptions;
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
