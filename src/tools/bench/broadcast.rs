//! `cowatch bench broadcast`: what a viewer of a party waits for, and what each viewer costs
//! the streamer.
//!
//! One `cowatch demo --timecode` server runs as a child process for the whole benchmark, on
//! loopback only. Each run measures, in this order, so that no measurement shares the machine
//! with another's viewers:
//!
//! 1. time to first keyframe: sequential joins of the webrtc-rs probe (an independent WebRTC
//!    stack), at random gaps so some land on the cached keyframe and some need a forced one;
//! 2. the viewer page's first frame: headless Chromium joins cowatch's own page one join at a
//!    time while a busy Twitch chat streams into it ([`browser`](super::browser));
//! 3. glass-to-glass latency: headless Chromium plays the viewer page with `?timecode`, which
//!    reads the clock strip the pipeline stamps into every frame;
//!
//! Then, with that server stopped, the fan-out table ([`fanout`](super::fanout)) runs its own
//! party in network namespaces, the server pinned to one core and light receivers in a
//! separate process on the other (root), and the loss table ([`loss`](super::loss)) another
//! (root; `--loss-seconds 0` leaves it out).
//!
//! `--adaptive` runs the adaptive-quality table ([`adaptive`](super::adaptive)) instead of all
//! of the above: viewers on links capped to 1 Mbit/s, in network namespaces (root).

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::adaptive;
use super::browser::{self, BusyChat, PageJoins};
use super::fanout;
use super::loss;
use super::server::Server;
use super::{Scratch, median, nearest_rank, verdict};
use crate::tools::cdp::{Browser, CHROMIUM};
use crate::tools::probe::{ProbeOptions, ProbeReport, probe};

/// What `cowatch bench broadcast` measures; the flags of the subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct BroadcastOptions {
    /// Sequential viewer joins per run for the time to first frame.
    #[arg(long, default_value_t = 20)]
    pub joins: usize,
    /// Joins of the viewer page in Chromium per run, for the browser's first frame.
    #[arg(long, default_value_t = 10)]
    pub page_joins: usize,
    /// Concurrent viewer counts to measure the fan-out cost at, rising; the table stops at the
    /// first count that saturates the server's core or makes the server drop.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,200,300,500,700,1000"
    )]
    pub viewers: Vec<usize>,
    /// Seconds of each latency and fan-out measurement window.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Runs of everything; the report shows medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds of each level of the loss table (0 leaves the table out: it needs root).
    #[arg(long, default_value_t = 20)]
    pub loss_seconds: u64,
    /// Instead of the tables above, the adaptive-quality table: Chromium and a probe on links
    /// of their own capped to 1 Mbit/s, then uncapped: time to step down to 360p and back up,
    /// the freeze around the switch, and the CPU of each rendition (--runs runs, CPU windows of
    /// --seconds). Needs root: it builds network namespaces and caps their links with tc.
    #[arg(long)]
    pub adaptive: bool,
    /// Only the fan-out table (server pinned to one core, receivers on the other; root).
    #[arg(long)]
    pub fanout_only: bool,
}

/// The loopback server's viewer cap: joins come one at a time, so this is never reached.
const MAX_VIEWERS: usize = 200;
/// The largest fan-out count accepted.
const MAX_FANOUT_VIEWERS: usize = 5000;
/// How long one join probe watches: long enough for a forced keyframe to arrive.
const JOIN_WATCH: Duration = Duration::from_secs(1);
/// Longest random gap between joins. The server reuses a cached keyframe only while it is
/// fresh, so gaps spread over this range mix both kinds of join.
const MAX_JOIN_GAP_MS: u64 = 1500;
/// Median time to first keyframe the joins should meet on loopback.
const TARGET_FIRST_KEYFRAME_MS: f64 = 300.0;
/// The chat replay's speed, times the capture's own (a busy channel, ~11 lines/s).
const CHAT_RATE: f64 = 1.0;
/// Median glass-to-glass latency Chromium should see.
const TARGET_GLASS_TO_GLASS_MS: f64 = 200.0;
/// How long the viewer page may take to show its first frame.
const PAGE_LIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Latency samples of the first frames are dropped: the browser's jitter buffer is still
/// settling, and the target is about a party in progress.
const PAGE_SETTLE: Duration = Duration::from_secs(1);
/// How long the sessions of finished probes may take to disappear from the server.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the broadcast benchmark and prints its report.
pub fn broadcast(options: &BroadcastOptions) -> anyhow::Result<()> {
    let BroadcastOptions {
        joins,
        page_joins,
        ref viewers,
        seconds,
        runs,
        loss_seconds,
        adaptive,
        fanout_only,
    } = *options;
    if adaptive {
        if seconds == 0 || runs == 0 {
            bail!("--seconds and --runs must both be at least 1");
        }
        if !Path::new(CHROMIUM).exists() {
            bail!("chromium is not installed at {CHROMIUM} (apt-get install chromium)");
        }
        adaptive::check()?;
        let scratch = Scratch::new()?;
        // The whole chain in one message: `main` prints only the outermost one.
        return adaptive::measure(&scratch.0, runs, Duration::from_secs(seconds))
            .map_err(|e| anyhow::anyhow!("the adaptive table: {e:#}"));
    }
    if joins == 0 || page_joins == 0 || seconds == 0 || runs == 0 {
        bail!("--joins, --page-joins, --seconds and --runs must all be at least 1");
    }
    if viewers.is_empty() || viewers.iter().any(|&n| n == 0 || n > MAX_FANOUT_VIEWERS) {
        bail!("--viewers must list counts from 1 to {MAX_FANOUT_VIEWERS}, e.g. 100,200,500");
    }
    if viewers.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--viewers must rise, e.g. 100,200,500: the table stops where the server does");
    }
    fanout::check()?;
    if fanout_only {
        let scratch = Scratch::new()?;
        return fanout_table(&scratch.0, viewers, runs, Duration::from_secs(seconds));
    }
    // Before minutes of joins, not after: the latency part cannot run without a browser.
    if !Path::new(CHROMIUM).exists() {
        bail!(
            "chromium is not installed at {CHROMIUM} (apt-get install chromium); the \
             glass-to-glass measurement needs it"
        );
    }
    if loss_seconds > 0 {
        loss::check()?;
    }
    let window = Duration::from_secs(seconds);
    let scratch = Scratch::new()?;
    // A party in progress has a chat: it streams only while the page's first frame is measured.
    let chat = BusyChat::start(None, CHAT_RATE)?;
    let mut args: Vec<OsString> = vec![
        "--max-viewers".into(),
        MAX_VIEWERS.to_string().into(),
        // The clock strip the viewer page reads the latency from.
        "--timecode".into(),
        // A store of its own: the benchmark leaves none behind.
        "--data-dir".into(),
        scratch.0.join("data").into(),
        // Every join comes from 127.0.0.1, one after another for minutes: the joins are what
        // is measured, not the per-address rate limits a real party has.
        "--whep-per-minute".into(),
        "0".into(),
        "--session-per-minute".into(),
        "0".into(),
    ];
    args.extend(chat.demo_args());
    let mut server = Server::demo(&scratch.0, args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    println!(
        "cowatch bench broadcast: demo party 1280x720@30 H.264 {} kbit/s, server pid {}, {runs} runs",
        crate::pipeline::DEFAULT_BITRATE_KBPS,
        server.process.pid()
    );
    println!(
        "  server on http://{}; probes and Chromium run on this same {}-core machine, so \
         they compete with the server for CPU",
        server.http,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut results = Vec::with_capacity(runs);
    for run in 1..=runs {
        let first_frames = runtime
            .block_on(join_one_by_one(&server, joins))
            .with_context(|| format!("run {run}: time to first keyframe"))?;
        println!("run {run}/{runs}: {}", first_frames.describe());
        let page = runtime
            .block_on(server.drained())
            .and_then(|()| page_first_frames(&server, &chat, page_joins))
            .with_context(|| format!("run {run}: the viewer page's first frame"))?;
        println!("run {run}/{runs}: {}", page.describe());
        let latency = glass_to_glass(&server, window)
            .with_context(|| format!("run {run}: glass-to-glass latency"))?;
        println!("run {run}/{runs}: {}", latency.describe());
        results.push(Run {
            first_frames,
            page,
            latency,
        });
    }
    report(&results, joins, chat.lines_per_second());
    println!(
        "  shared the machine: the demo server (pid {}), Chromium, and this process (the \
         probes, the chat stand-in); load average at the end {}",
        server.process.pid(),
        browser::load_average()
    );
    server.process.stop("the demo server")?;
    // After the loopback server has gone: the fan-out's and the loss table's own parties must
    // not share the machine with it.
    fanout_table(&scratch.0, viewers, runs, window)?;
    if loss_seconds > 0 {
        let window = Duration::from_secs(loss_seconds);
        let mut loss_runs = Vec::with_capacity(runs);
        for run in 1..=runs {
            println!("run {run}/{runs}: loss table");
            // The whole chain in one message: `main` prints only the outermost one.
            let levels = loss::measure(&scratch.0, window)
                .map_err(|e| anyhow::anyhow!("run {run}: the loss table: {e:#}"))?;
            loss_runs.push(levels);
        }
        loss::report(&loss_runs, window);
        println!(
            "  shared the machine: the demo server in its namespace, Chromium, and this process \
             (the probe); load average at the end {}",
            browser::load_average()
        );
    }
    Ok(())
}

/// The fan-out table, `runs` times, and its report.
fn fanout_table(
    dir: &Path,
    viewers: &[usize],
    runs: usize,
    window: Duration,
) -> anyhow::Result<()> {
    let mut fanout_runs = Vec::with_capacity(runs);
    for run in 1..=runs {
        println!("run {run}/{runs}: fan-out table");
        // The whole chain in one message: `main` prints only the outermost one.
        let rows = fanout::measure(dir, viewers, window)
            .map_err(|e| anyhow::anyhow!("run {run}: the fan-out table: {e:#}"))?;
        fanout_runs.push(rows);
    }
    fanout::report(&fanout_runs, window);
    println!(
        "  shared the machine: whatever else ran on these {} CPUs (the table's server and \
         receivers had one each, but not alone: see cpu0_busy); load average at the end {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        browser::load_average()
    );
    Ok(())
}

/// What this benchmark asks of the demo server.
impl Server {
    fn whep_url(&self) -> String {
        format!("http://{}/whep", self.http)
    }

    /// Waits until no viewer session is left, so a measurement starts from an empty party.
    async fn drained(&self) -> anyhow::Result<()> {
        let left = |health: &Value| health.pointer("/viewers/viewers").and_then(Value::as_u64);
        self.poll_health(
            DRAIN_TIMEOUT,
            |health| left(health) == Some(0),
            |health| match left(health) {
                Some(left) => anyhow::anyhow!(
                    "{left} viewer session(s) still open {} s after their probes ended",
                    DRAIN_TIMEOUT.as_secs()
                ),
                None => anyhow::anyhow!("/healthz has no viewers.viewers: {health}"),
            },
        )
        .await
    }
}

/// One run's measurements.
struct Run {
    first_frames: FirstFrames,
    page: PageJoins,
    latency: Latency,
}

/// Time to first keyframe of one run's joins.
struct FirstFrames {
    /// Per join, WHEP POST to first keyframe; `None` when none arrived while it watched.
    keyframe_ms: Vec<Option<f64>>,
    /// Per join that got an answer, POST to answer.
    answer_ms: Vec<f64>,
    /// Why joins failed outright (refused, unreachable), one line each.
    failures: Vec<String>,
}

impl FirstFrames {
    /// Median with a missing keyframe ranked as infinitely late: a viewer who saw nothing
    /// waited longer than anyone who saw something.
    fn median(&self) -> f64 {
        percentile(&ranked(&self.keyframe_ms), 50.0)
    }

    fn p95(&self) -> f64 {
        percentile(&ranked(&self.keyframe_ms), 95.0)
    }

    fn missing(&self) -> usize {
        self.keyframe_ms.iter().filter(|ms| ms.is_none()).count()
    }

    fn describe(&self) -> String {
        let mut line = format!(
            "first keyframe median {}, p95 {} over {} joins; POST→answer median {:.0} ms",
            ms(self.median()),
            ms(self.p95()),
            self.keyframe_ms.len(),
            median(self.answer_ms.clone())
        );
        if self.missing() > 0 {
            line += &format!(
                "; {} join(s) saw no keyframe within {} ms",
                self.missing(),
                JOIN_WATCH.as_millis()
            );
        }
        if let Some(first) = self.failures.first() {
            line += &format!("; {} failed, e.g. {first}", self.failures.len());
        }
        line
    }
}

/// Joins `joins` probes one after another and records how long each waited for a keyframe.
async fn join_one_by_one(server: &Server, joins: usize) -> anyhow::Result<FirstFrames> {
    server.drained().await?;
    let mut result = FirstFrames {
        keyframe_ms: Vec::with_capacity(joins),
        answer_ms: Vec::with_capacity(joins),
        failures: Vec::new(),
    };
    for i in 0..joins {
        if i > 0 {
            let gap = getrandom::u64().context("no randomness")? % (MAX_JOIN_GAP_MS + 1);
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        let options = ProbeOptions {
            url: server.whep_url(),
            duration: JOIN_WATCH,
            codec: None,
        };
        match probe(&options).await {
            Ok(report) if (200..300).contains(&report.status) => {
                result.answer_ms.push(report.post_to_answer_ms);
                result.keyframe_ms.push(report.time_to_first_keyframe_ms);
            }
            Ok(report) => {
                result.keyframe_ms.push(None);
                result.failures.push(refusal(&report));
            }
            Err(e) => {
                result.keyframe_ms.push(None);
                result.failures.push(format!("{e:#}"));
            }
        }
    }
    Ok(result)
}

fn refusal(report: &ProbeReport) -> String {
    format!(
        "HTTP {} {}",
        report.status,
        report.reason.as_deref().unwrap_or("")
    )
}

/// The viewer page's first frame, `joins` times, with the chat streaming meanwhile.
fn page_first_frames(server: &Server, chat: &BusyChat, joins: usize) -> anyhow::Result<PageJoins> {
    let _replaying = chat.replay()?;
    browser::page_joins(&format!("http://{}/", server.http), joins)
}

/// Glass-to-glass latency Chromium measured in one run.
struct Latency {
    /// Display time minus the stamped capture time, one per frame, in ms.
    samples: Vec<f64>,
    /// Frames the page showed meanwhile, to tell "no video" from "no readable clock strip".
    frames: u64,
}

impl Latency {
    fn median(&self) -> f64 {
        percentile(&self.samples, 50.0)
    }

    fn p95(&self) -> f64 {
        percentile(&self.samples, 95.0)
    }

    fn describe(&self) -> String {
        if self.samples.is_empty() {
            format!(
                "glass-to-glass: NO latency samples ({} frames shown): the page could not read \
                 the clock strip",
                self.frames
            )
        } else {
            format!(
                "glass-to-glass median {}, p95 {} over {} frames",
                ms(self.median()),
                ms(self.p95()),
                self.samples.len()
            )
        }
    }
}

/// Plays the viewer page in headless Chromium and collects its latency samples for `window`.
fn glass_to_glass(server: &Server, window: Duration) -> anyhow::Result<Latency> {
    let mut browser = Browser::launch()?;
    let url = format!("http://{}/?timecode", server.http);
    browser.navigate(&url)?;
    let deadline = Instant::now() + PAGE_LIVE_TIMEOUT;
    while browser.eval("window.cowatch && window.cowatch.state")? != "live" {
        if Instant::now() >= deadline {
            bail!(
                "the viewer page did not go live within {} s; page log:\n  {}",
                PAGE_LIVE_TIMEOUT.as_secs(),
                browser.log().join("\n  ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(PAGE_SETTLE);
    // `splice(0)` takes the samples and empties the array in one step, so none is counted
    // twice; taking them every second also keeps the page's own cap (2000) out of reach.
    const TAKE: &str = "(window.cowatch.latencies || []).splice(0)";
    browser.eval(TAKE)?;
    let frames_before = browser.eval("window.cowatch.frames")?.as_u64().unwrap_or(0);
    let end = Instant::now() + window;
    let mut samples = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        std::thread::sleep(left.min(Duration::from_secs(1)));
        let taken = browser.eval(TAKE)?;
        samples.extend(
            taken
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64),
        );
    }
    let frames = browser
        .eval("window.cowatch.frames")?
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(frames_before);
    // Close the browser now: it must not be a viewer (or a CPU load) during the fan-out.
    drop(browser);
    Ok(Latency { samples, frames })
}

/// Prints the medians over runs and the target checks.
fn report(runs: &[Run], joins: usize, chat_lines_per_second: f64) {
    let of = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
    println!();
    let kf_median = of(&|r| r.first_frames.median());
    let kf_p95 = of(&|r| r.first_frames.p95());
    let answer = of(&|r| median(r.first_frames.answer_ms.clone()));
    let missing: usize = runs.iter().map(|r| r.first_frames.missing()).sum();
    println!(
        "time to first keyframe ({joins} joins/run): median {}, p95 {}  (target median ≤ {TARGET_FIRST_KEYFRAME_MS:.0} ms: {})",
        ms(kf_median),
        ms(kf_p95),
        verdict(kf_median <= TARGET_FIRST_KEYFRAME_MS)
    );
    println!(
        "  medians over runs; POST→answer median {answer:.0} ms; the probe report does not \
         separate ICE+DTLS from the wait for the keyframe, so no ICE+DTLS share is shown{}",
        if missing > 0 {
            format!("; {missing} join(s) in all saw no keyframe (ranked as slowest)")
        } else {
            String::new()
        }
    );

    let pages: Vec<&PageJoins> = runs.iter().map(|r| &r.page).collect();
    browser::report(&pages, chat_lines_per_second);

    let sampled: Vec<&Latency> = runs
        .iter()
        .map(|r| &r.latency)
        .filter(|l| !l.samples.is_empty())
        .collect();
    if sampled.len() < runs.len() {
        let frames: u64 = runs.iter().map(|r| r.latency.frames).sum();
        println!(
            "glass-to-glass in Chromium: NO MEASUREMENT in {} of {} runs: window.cowatch.latencies \
             stayed empty ({frames} frames shown in all); the page could not read the clock \
             strip  (target ≤ {TARGET_GLASS_TO_GLASS_MS:.0} ms: FAIL)",
            runs.len() - sampled.len(),
            runs.len()
        );
    }
    if !sampled.is_empty() {
        let g2g_median = median(sampled.iter().map(|l| l.median()).collect());
        let g2g_p95 = median(sampled.iter().map(|l| l.p95()).collect());
        let frames: usize = sampled.iter().map(|l| l.samples.len()).sum();
        println!(
            "glass-to-glass in Chromium: median {}, p95 {} over {frames} frames  (target ≤ {TARGET_GLASS_TO_GLASS_MS:.0} ms: {})",
            ms(g2g_median),
            ms(g2g_p95),
            verdict(g2g_median <= TARGET_GLASS_TO_GLASS_MS && sampled.len() == runs.len())
        );
    }
}

/// Milliseconds for people; infinity stands for "never arrived".
fn ms(value: f64) -> String {
    if value.is_infinite() {
        "none (no keyframe)".into()
    } else if value.is_nan() {
        "-".into()
    } else {
        format!("{value:.0} ms")
    }
}

/// Times with a missing one ranked last.
fn ranked(values: &[Option<f64>]) -> Vec<f64> {
    values.iter().map(|v| v.unwrap_or(f64::INFINITY)).collect()
}

/// The `p`th percentile by nearest rank: a value that was actually observed.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    nearest_rank(sorted.len(), p).map_or(f64::NAN, |i| sorted[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_an_observed_value() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 10.0);
        assert_eq!(percentile(&values, 95.0), 19.0);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn missing_keyframes_rank_as_slowest() {
        let joins = FirstFrames {
            keyframe_ms: vec![Some(100.0), None, Some(200.0)],
            answer_ms: vec![],
            failures: vec![],
        };
        assert_eq!(joins.median(), 200.0);
        assert!(joins.p95().is_infinite());
        assert_eq!(ms(joins.p95()), "none (no keyframe)");
    }
}
