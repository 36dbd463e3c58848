//! `cowatch bench chat`: how fast a busy Twitch chat reaches every party viewer, whether any
//! message goes missing, and what it costs the server.
//!
//! This process plays Twitch and the viewers; the server under test is a `cowatch demo`
//! child bridged to it:
//!
//! - a [`TmiServer`] (on a runtime of its own) replays a real capture of #xqcow (2019) at
//!   several multiples of its real rate to the child's Twitch bridge;
//! - N WebSocket clients ([`clients`]) read the child's `/chat` and time each message from the
//!   moment its line was handed to the test server to the moment a client read the frame
//!   carrying it;
//! - [`cpu`] reads what the server, this process and the machine spent meanwhile.
//!
//! Each run first measures an idle window (video pipeline running, clients connected, no
//! chat), then replays once per rate ([`plan`]). Message ids are rewritten per run and rate, so
//! every replay is told apart from the backlog of the ones before it.

mod clients;
mod cpu;
mod plan;

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::runtime::Runtime;

use super::server::Server;
use super::{Scratch, median, nearest_rank, verdict};
use crate::tools::replay::Capture;
use crate::tools::replay::tmi::TmiServer;
use clients::{Clients, Counts, Replay};
use cpu::{Cores, CpuReading, RSS_PERIOD, Window};
use plan::Plan;

/// What `cowatch bench chat` measures; the flags of the subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatBenchOptions {
    /// WebSocket clients reading /chat.
    #[arg(long, default_value_t = 500)]
    pub clients: usize,
    /// Replay rates, as multiples of the capture's real rate (about 10.8 messages/s).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub rates: Vec<f64>,
    /// Longest replay at one rate, in seconds of wall time (1x replays only the start of
    /// the capture, which lasts 463 s).
    #[arg(long, default_value_t = 60)]
    pub max_seconds: u64,
    /// Runs of everything; the report shows medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Raw Twitch IRC lines to replay, one a line (default: the xqcow capture in
    /// ../shared/data/twitch).
    #[arg(long, value_name = "PATH")]
    pub capture: Option<PathBuf>,
}

/// The Twitch channel the demo bridges; the capture's own `#xqcow` inside the lines does
/// not matter, the test server routes by this name.
const CHANNEL: &str = "benchchat";
/// The capture replayed by default, under `../shared/data/twitch`.
const CAPTURE_NAME: &str = "xqcow_capture_2019.txt";
/// The rate the target is about.
const TARGET_RATE: f64 = 100.0;
/// At [`TARGET_RATE`], no message lost and this p99 latency at most.
const TARGET_P99_MS: f64 = 250.0;
/// Most clients: each costs a socket on both sides.
const MAX_CLIENTS: usize = 5_000;
/// How long the demo's bridge may take to join the channel on the test server.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How often due lines are handed to the test server.
const SEND_PERIOD: Duration = Duration::from_millis(2);
/// Deliveries have stopped when none came for this long.
const QUIET: Duration = Duration::from_secs(2);
/// Longest wait for deliveries after the last line was sent, however they trickle.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// How often deliveries are counted while waiting for them to stop.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Longest idle window; shorter when `--max-seconds` is.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Runs the chat benchmark and prints its report.
pub fn chat(options: &ChatBenchOptions) -> anyhow::Result<()> {
    let ChatBenchOptions {
        clients,
        ref rates,
        max_seconds,
        runs,
        ref capture,
    } = *options;
    if clients == 0 || clients > MAX_CLIENTS {
        bail!("--clients must be from 1 to {MAX_CLIENTS}");
    }
    if max_seconds == 0 || runs == 0 {
        bail!("--max-seconds and --runs must be at least 1");
    }
    if rates.is_empty() || rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        bail!("--rates must list positive multiples of the capture's rate, e.g. 1,10,100");
    }
    let capture = Capture::load(&locate_capture(capture.as_deref())?)?;
    let max_replay = Duration::from_secs(max_seconds);
    let idle_window = IDLE_WINDOW.min(max_replay);

    let scratch = Scratch::new()?;
    let tmi_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-tmi")
        .enable_all()
        .build()
        .context("cannot start the test server's runtime")?;
    let tmi = tmi_runtime
        .block_on(TmiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .context("cannot start the Twitch test server")?;
    let mut server = Server::demo(
        &scratch.0,
        [
            OsString::from("--twitch-channel"),
            CHANNEL.into(),
            "--twitch-irc-addr".into(),
            tmi.addr().to_string().into(),
            // A store of its own: the benchmark must neither leave one behind nor see a real
            // party's bans and blocked terms, which would filter the replay.
            "--data-dir".into(),
            scratch.0.join("data").into(),
            // Every client reads from 127.0.0.1: the per-address caps would stop them at a
            // real party's share of one address.
            "--max-chat-sockets-per-address".into(),
            "0".into(),
            "--max-connections-per-address".into(),
            "0".into(),
        ],
    )?;
    if !tmi_runtime.block_on(tmi.wait_joined(CHANNEL, JOIN_TIMEOUT)) {
        bail!(
            "the demo server did not join #{CHANNEL} on the Twitch test server at {} within \
             {} s; server stderr: {}",
            tmi.addr(),
            JOIN_TIMEOUT.as_secs(),
            server.process.last_words()
        );
    }
    let chat_clients = Clients::connect(server.http, clients)?;

    println!(
        "cowatch bench chat: {} ({} lines, {} messages, {:.0} s at 1x: {:.1} lines/s, {:.1} \
         messages/s), {clients} WebSocket clients, {runs} runs",
        capture.path.display(),
        capture.lines.len(),
        capture.messages(),
        capture.span().as_secs_f64(),
        capture.lines.len() as f64 / capture.span().as_secs_f64().max(1e-3),
        capture.messages() as f64 / capture.span().as_secs_f64().max(1e-3)
    );
    println!(
        "  server: cowatch demo pid {} on http://{}, bridged to the Twitch test server at {}",
        server.process.pid(),
        server.http,
        tmi.addr()
    );
    println!(
        "  the test server and the clients run in this process on the same {}-core machine, \
         so they compete with the server for CPU",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for &rate in rates {
        println!(
            "  {}",
            Plan::new(&capture, rate, max_replay, 0).describe(max_replay)
        );
    }

    let mut results = Vec::with_capacity(runs);
    for run in 1..=runs {
        let idle = measure_idle(&server, idle_window)?;
        println!(
            "run {run}/{runs}: idle: server {:.3} cores (tokio threads {:.3}), RSS {:.0} MB over \
             {:.1} s; everything else on the machine (this process included) {:.3} cores",
            idle.cores.server,
            idle.cores.tokio,
            idle.rss_mib,
            idle.seconds,
            idle.cores.machine - idle.cores.server
        );
        let mut outcomes = Vec::with_capacity(rates.len());
        for &rate in rates {
            let plan = Plan::new(&capture, rate, max_replay, run);
            let outcome = replay(&server, &tmi, &tmi_runtime, &chat_clients, &plan)
                .with_context(|| format!("run {run}: replay at {}", rate_label(rate)))?;
            server.process.check_alive("the demo server")?;
            println!("run {run}/{runs}: {}", outcome.describe(clients, &idle));
            outcomes.push(outcome);
        }
        results.push(Run { idle, outcomes });
    }
    report(&results, rates, clients);
    // The clients go first, so the server's shutdown is not held up by open sockets.
    drop(chat_clients);
    server.process.stop("the demo server")?;
    Ok(())
}

/// Finds the capture: `--capture`, else `../shared/data/twitch/` next to the current
/// directory or next to the source tree this binary was built from.
fn locate_capture(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("the capture {} (--capture) does not exist", path.display());
        }
        return Ok(path.to_owned());
    }
    let candidates = [
        PathBuf::from("../shared/data/twitch").join(CAPTURE_NAME),
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/twitch")
            .join(CAPTURE_NAME),
    ];
    match candidates.iter().find(|p| p.is_file()) {
        Some(path) => Ok(path.clone()),
        None => bail!(
            "the Twitch capture {CAPTURE_NAME} is missing: looked for {} and {}; pass \
             --capture PATH",
            candidates[0].display(),
            candidates[1].display()
        ),
    }
}

/// `100x`, `0.5x`.
fn rate_label(rate: f64) -> String {
    format!("{rate}x")
}

/// The server with clients connected and no chat.
struct Idle {
    cores: Cores,
    rss_mib: f64,
    seconds: f64,
}

fn measure_idle(server: &Server, window: Duration) -> anyhow::Result<Idle> {
    let mut measured = Window::open(&server.process)?;
    let end = measured.start.at + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        std::thread::sleep(left.min(RSS_PERIOD));
        measured.sample();
    }
    let reading = CpuReading::take(&server.process)?;
    Ok(Idle {
        cores: Cores::between(&measured.start, &reading),
        rss_mib: measured.peak_mib(),
        seconds: reading.at.duration_since(measured.start.at).as_secs_f64(),
    })
}

/// When the lines went out.
struct Sent {
    last: Instant,
    /// Most the sender ran behind the schedule, for the report.
    behind: Duration,
}

/// Hands each line to the test server when it is due, in batches every [`SEND_PERIOD`],
/// recording each message's send time right before its batch goes.
async fn send_lines(
    tmi: &TmiServer,
    plan: &Plan,
    replay: &Replay,
    window: &mut Window<'_>,
) -> anyhow::Result<Sent> {
    let start = Instant::now();
    let mut tick = tokio::time::interval(SEND_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0;
    let mut sent = Sent {
        last: start,
        behind: Duration::ZERO,
    };
    while next < plan.lines.len() {
        tick.tick().await;
        window.sample();
        let elapsed = start.elapsed();
        let end = next + plan.due[next..].partition_point(|&due| due <= elapsed);
        if end == next {
            continue;
        }
        sent.behind = sent.behind.max(elapsed.saturating_sub(plan.due[next]));
        let at = replay.base.elapsed().as_nanos() as u64;
        for &message in plan.message_of[next..end].iter().flatten() {
            replay.sent_ns[message as usize].store(at, Ordering::Release);
        }
        if tmi.send_batch(CHANNEL, &plan.lines[next..end]).await == 0 {
            bail!("the demo server's bridge is no longer joined to #{CHANNEL}");
        }
        sent.last = Instant::now();
        next = end;
    }
    Ok(sent)
}

/// One replay at one rate.
struct Outcome {
    rate: f64,
    lines: usize,
    messages: usize,
    clients: usize,
    /// First line sent → last line sent.
    send_s: f64,
    /// First line sent → last message delivered (or the last line sent, if later).
    window_s: f64,
    behind: Duration,
    counts: Counts,
    /// Over the same window.
    cores: Cores,
    rss_mib: f64,
}

impl Outcome {
    fn expected(&self) -> u64 {
        (self.messages * self.clients) as u64
    }

    /// Messages some client never got, plus one per reset.
    fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.counts.received) + self.counts.resets
    }

    fn offered(&self) -> f64 {
        self.messages as f64 / self.send_s.max(SEND_PERIOD.as_secs_f64())
    }

    /// Distinct deliveries per second, all clients together.
    fn delivered(&self) -> f64 {
        self.counts.received as f64 / self.window_s
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.counts.latencies_us, p)
    }

    fn describe(&self, clients: usize, idle: &Idle) -> String {
        let mut line = format!(
            "{}: {} messages ({} lines) sent in {:.1} s ({:.1} msg/s); {} of {} delivered \
             ({:.1} msg/s per client, {:.0} in total); latency p50 {:.1} ms, p99 {:.1} ms, \
             max {:.1} ms; lost {}; server {:.3} cores ({:+.3} over idle; tokio threads {:.3}, \
             {:+.3} over idle), RSS {:.0} MB; this process {:.3} cores, other processes {:.3} \
             cores",
            rate_label(self.rate),
            self.messages,
            self.lines,
            self.send_s,
            self.offered(),
            self.counts.received,
            self.expected(),
            self.delivered() / clients as f64,
            self.delivered(),
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
            self.percentile_ms(100.0),
            self.lost(),
            self.cores.server,
            self.cores.server - idle.cores.server,
            self.cores.tokio,
            self.cores.tokio - idle.cores.tokio,
            self.rss_mib,
            self.cores.own,
            self.cores.others()
        );
        if self.counts.resets > 0 {
            line += &format!(
                "; {} reset(s): sockets fell behind the hub",
                self.counts.resets
            );
        }
        if self.counts.unreadable > 0 {
            line += &format!("; {} unreadable event(s)", self.counts.unreadable);
        }
        if self.behind > Duration::from_millis(50) {
            line += &format!(
                "; the sender ran up to {} ms behind schedule",
                self.behind.as_millis()
            );
        }
        line
    }
}

/// Replays `plan` to the clients and measures it.
fn replay(
    server: &Server,
    tmi: &TmiServer,
    tmi_runtime: &Runtime,
    clients: &Clients,
    plan: &Plan,
) -> anyhow::Result<Outcome> {
    let shared = Arc::new(Replay::new(plan));
    clients.begin(&shared);
    let mut window = Window::open(&server.process)?;
    let sent = tmi_runtime.block_on(send_lines(tmi, plan, &shared, &mut window))?;

    // Until every message has arrived everywhere, or deliveries stopped. The window ends
    // at the last delivery, so the quiet wait after it does not dilute the server's cores.
    let expected = (shared.messages() * clients.len()) as u64;
    let mut count = clients.delivered();
    let mut last_change = CpuReading::take(&server.process)?;
    while count < expected && last_change.at.elapsed() < QUIET && sent.last.elapsed() < DRAIN_LIMIT
    {
        std::thread::sleep(DRAIN_POLL);
        window.sample();
        let now = clients.delivered();
        if now != count {
            count = now;
            last_change = CpuReading::take(&server.process)?;
        }
    }
    let start = window.start.at;
    Ok(Outcome {
        rate: plan.rate,
        lines: plan.lines.len(),
        messages: shared.messages(),
        clients: clients.len(),
        send_s: sent.last.duration_since(start).as_secs_f64(),
        window_s: last_change.at.duration_since(start).as_secs_f64(),
        behind: sent.behind,
        counts: clients.finish()?,
        cores: Cores::between(&window.start, &last_change),
        rss_mib: window.peak_mib(),
    })
}

/// The `p`th percentile of sorted µs, by nearest rank, in ms.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    nearest_rank(sorted_us.len(), p).map_or(f64::NAN, |i| f64::from(sorted_us[i]) / 1000.0)
}

/// One run: its idle window and one replay per rate.
struct Run {
    idle: Idle,
    outcomes: Vec<Outcome>,
}

/// Prints the medians over runs and the target check.
fn report(runs: &[Run], rates: &[f64], clients: usize) {
    println!();
    println!(
        "{:<7}{:<7}{:<9}{:<14}{:<24}{:<17}{:<9}{:<9}{:<8}{:<14}{:<11}{:<13}rss_mb",
        "rate",
        "lines",
        "messages",
        "offered_msg/s",
        "delivered_msg/s/client",
        "delivered_msg/s",
        "p50_ms",
        "p99_ms",
        "lost",
        "server_cores",
        "over_idle",
        "tokio_cores"
    );
    let idle_cores = median(runs.iter().map(|r| r.idle.cores.server).collect());
    let idle_tokio = median(runs.iter().map(|r| r.idle.cores.tokio).collect());
    let idle_rss = median(runs.iter().map(|r| r.idle.rss_mib).collect());
    println!(
        "{:<7}{:<7}{:<9}{:<14}{:<24}{:<17}{:<9}{:<9}{:<8}{idle_cores:<14.3}{:<11}\
         {idle_tokio:<13.3}{idle_rss:.0}",
        "idle", "-", "-", "-", "-", "-", "-", "-", "-", "-"
    );
    let mut target = None;
    for (i, &rate) in rates.iter().enumerate() {
        let of = |f: &dyn Fn(&Run, &Outcome) -> f64| {
            median(runs.iter().map(|r| f(r, &r.outcomes[i])).collect())
        };
        let lines = of(&|_, o| o.lines as f64);
        let messages = of(&|_, o| o.messages as f64);
        let offered = of(&|_, o| o.offered());
        let total = of(&|_, o| o.delivered());
        let p50 = of(&|_, o| o.percentile_ms(50.0));
        let p99 = of(&|_, o| o.percentile_ms(99.0));
        let cores = of(&|_, o| o.cores.server);
        let over_idle = of(&|r, o| o.cores.server - r.idle.cores.server);
        let tokio = of(&|_, o| o.cores.tokio);
        let rss = of(&|_, o| o.rss_mib);
        // Loss is a yes/no promise, so the worst run counts, not the median one.
        let lost = runs.iter().map(|r| r.outcomes[i].lost()).max().unwrap_or(0);
        println!(
            "{:<7}{lines:<7.0}{messages:<9.0}{offered:<14.1}{:<24.1}{total:<17.0}{p50:<9.1}\
             {p99:<9.1}{lost:<8}{cores:<14.3}{over_idle:<11.3}{tokio:<13.3}{rss:.0}",
            rate_label(rate),
            total / clients as f64
        );
        if rate == TARGET_RATE {
            target = Some((lost, p99));
        }
    }
    println!(
        "  medians over {} run(s); lost is the worst run's: messages some client never got, \
         plus one per reset (a socket that fell behind and was sent the backlog again)",
        runs.len()
    );
    println!(
        "  latency: line handed to the Twitch test server → frame read by a client (IRC hop, \
         bridge, hub, WebSocket and the client's own scheduling all count)"
    );
    println!(
        "  delivered_msg/s: distinct messages received over all {clients} clients, first line \
         sent → last message received; server_cores: the demo's CPU-seconds per wall second \
         over that same window (video pipeline included); over_idle: minus the same run's idle \
         window; tokio_cores: the part of server_cores spent on the server's tokio threads \
         (Twitch bridge, chat hub, WebSockets; not the video pipeline); rss_mb: peak resident \
         memory in the window"
    );
    let beside: Vec<String> = rates
        .iter()
        .enumerate()
        .map(|(i, &rate)| {
            let of = |f: &dyn Fn(&Outcome) -> f64| {
                median(runs.iter().map(|r| f(&r.outcomes[i])).collect())
            };
            format!(
                "{} this process {:.2}, other programs {:.2}",
                rate_label(rate),
                of(&|o| o.cores.own),
                of(&|o| o.cores.others())
            )
        })
        .collect();
    println!(
        "  cores used beside the server (medians): idle: everything else {:.2}; {}",
        median(
            runs.iter()
                .map(|r| r.idle.cores.machine - r.idle.cores.server)
                .collect()
        ),
        beside.join("; ")
    );
    match target {
        Some((lost, p99)) => println!(
            "target at {}: 0 lost, p99 ≤ {TARGET_P99_MS:.0} ms: {}  (lost {lost}, p99 {p99:.1} ms)",
            rate_label(TARGET_RATE),
            verdict(lost == 0 && p99 <= TARGET_P99_MS)
        ),
        None => println!(
            "target at {}: 0 lost, p99 ≤ {TARGET_P99_MS:.0} ms: NOT MEASURED (--rates has no {TARGET_RATE})",
            rate_label(TARGET_RATE)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_observed_values() {
        let us: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&us, 50.0), 50.0);
        assert_eq!(percentile_ms(&us, 99.0), 99.0);
        assert_eq!(percentile_ms(&us, 100.0), 100.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }
}
