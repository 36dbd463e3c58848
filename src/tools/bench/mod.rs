//! Benchmarks printed as tables, behind `cowatch bench`.
//!
//! - `bench pipeline` ([`pipeline()`]): CPU cost of composite + encode against ffmpeg.
//! - `bench broadcast` ([`broadcast()`]): time to first frame (for a WebRTC probe, and on the
//!   viewer page in Chromium with a busy chat, [`page_joins`]), glass-to-glass latency in a
//!   real browser, the CPU cost of fanning out to many viewers, and what random packet loss
//!   costs a viewer (`loss.rs`, in network namespaces); with `--adaptive`, what adaptive quality
//!   does on a link that drops to 1 Mbit/s and what the 360p rendition costs (`adaptive.rs`).
//! - `bench soak` ([`soak()`]): 200 steady viewers, 10 joins and 10 leaves a second for
//!   minutes and a flood of 1,000 offers, in network namespaces: leaks, memory, keyframes
//!   forced, `/healthz` response times.
//! - `bench chat` ([`chat()`]): a real Twitch capture replayed through the bridge to many
//!   WebSocket clients: messages/s, delivery latency, loss, and the server's CPU and memory.
//!
//! Whatever is measured runs as a child process (`process`), so its CPU time comes from the
//! kernel and not from the program's own account of itself; every child is killed when a
//! benchmark ends, however it ends. A cowatch under test is a `server`.

mod adaptive;
mod broadcast;
mod browser;
mod chat;
mod fanout;
mod hostile;
mod loss;
mod pipeline;
mod process;
mod server;
mod soak;

use std::path::PathBuf;

use anyhow::Context;

pub use broadcast::{BroadcastOptions, broadcast};
pub use browser::{
    BusyChat, PageJoin, PageJoins, Replaying, TARGET_PAGE_FIRST_FRAME_MS, page_joins,
};
pub use chat::{ChatBenchOptions, chat};
pub use pipeline::{PipelineOptions, pipeline};
pub use soak::{SoakOptions, soak};

/// Options of `cowatch bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// CPU cost of composite + encode against ffmpeg doing the same work.
    Pipeline(PipelineOptions),
    /// Time to first frame, glass-to-glass latency in Chromium, and fan-out CPU per viewer.
    Broadcast(BroadcastOptions),
    /// A real Twitch capture replayed through the bridge to many WebSocket clients:
    /// messages/s, delivery latency, loss, and the server's CPU and memory.
    Chat(ChatBenchOptions),
    /// Churn and an offer flood for minutes, in network namespaces (root): joins, leaves,
    /// leaked sessions, memory, keyframes forced per second, /healthz response times.
    Soak(SoakOptions),
}

/// Runs the benchmark chosen and prints its report.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        BenchCommand::Pipeline(options) => pipeline(&options),
        BenchCommand::Broadcast(options) => broadcast(&options),
        BenchCommand::Chat(options) => chat(&options),
        BenchCommand::Soak(options) => soak(&options),
    }
}

/// Median of `values` (mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A scratch directory, removed when the benchmark ends however it ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("cowatch-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create scratch directory {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The index of the `p`th percentile of `len` sorted values, by nearest rank: a value that was
/// actually observed. `None` when there are none.
fn nearest_rank(len: usize, p: f64) -> Option<usize> {
    let rank = (p / 100.0 * len as f64).ceil() as usize;
    (len > 0).then(|| rank.clamp(1, len) - 1)
}

/// `PASS` or `FAIL`, for a target check.
fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
