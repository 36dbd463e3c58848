//! `cowatch twitch-replay`: Twitch chat without Twitch, on a developer's machine.
//!
//! - [`capture`]: captures of raw Twitch IRC lines, with when each was sent;
//! - [`tmi`]: a Twitch-protocol (TMI) server that lets the real `twitch-irc` client log in,
//!   join and read, and sends it whatever lines it is given.
//!
//! The subcommand serves a capture to whoever joins the channel, at its own pace or faster.
//! `cowatch bench chat` uses the same two parts to replay a capture to a party.

pub mod capture;
pub mod tmi;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

pub use capture::{Capture, CaptureLine, command, tag};
use tmi::TmiServer;

/// Options of `cowatch twitch-replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Where the Twitch-protocol server listens (plain TCP).
    #[arg(long, default_value = "127.0.0.1:6667")]
    pub listen: SocketAddr,
    /// Raw Twitch IRC lines, one per line (e.g. ../shared/data/twitch/xqcow_capture_2019.txt).
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// Channel the party joins (lines are sent to whoever joins it).
    #[arg(long, default_value = "xqcow")]
    pub channel: String,
    /// Speed: 1 replays at the capture's pace (by `tmi-sent-ts`), 10 ten times faster.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Start over at the end.
    #[arg(long = "loop")]
    pub loop_replay: bool,
}

/// `cowatch twitch-replay`: serves the capture to whoever joins the channel, at `rate`.
pub fn main(options: ReplayArgs) -> anyhow::Result<()> {
    if !(options.rate > 0.0 && options.rate <= 10_000.0) {
        bail!(
            "--rate {} is out of range: use more than 0, up to 10000",
            options.rate
        );
    }
    let capture = Capture::load(&options.file)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let server = TmiServer::start(options.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", options.listen))?;
        let channel = options.channel.trim_start_matches('#').to_lowercase();
        println!(
            "Twitch stand-in on {}: {} lines ({} messages, {:.0} s at 1x) for #{channel} at {}x",
            server.addr(),
            capture.lines.len(),
            capture.messages(),
            capture.span().as_secs_f64(),
            options.rate
        );
        println!(
            "  try: cowatch demo --twitch-channel {channel} --twitch-irc-addr {}",
            server.addr()
        );
        loop {
            println!("waiting for a party to join #{channel}…");
            while !server
                .wait_joined(&channel, Duration::from_secs(3600))
                .await
            {}
            println!("joined; replaying");
            let start = tokio::time::Instant::now();
            for line in &capture.lines {
                let at = Duration::from_secs_f64(line.at_ms as f64 / 1000.0 / options.rate);
                tokio::time::sleep_until(start + at).await;
                if server.send(&channel, &line.text).await == 0 {
                    println!("the party left");
                    break;
                }
            }
            if !options.loop_replay {
                println!("replay finished");
                tokio::signal::ctrl_c().await.ok();
                return Ok(());
            }
        }
    })
}
