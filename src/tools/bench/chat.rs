//! `cowatch bench chat`: how fast a busy Twitch chat reaches every party viewer, whether any
//! message goes missing, and what it costs the server.
//!
//! This process plays Twitch and the viewers; the server under test is a `cowatch demo`
//! child bridged to it:
//!
//! - a [`TmiServer`] (on a runtime of its own) replays a real capture of #xqcow (2019) at
//!   several multiples of its real rate to the child's Twitch bridge;
//! - N WebSocket clients read the child's `/chat` and time each message from the moment its
//!   line was handed to the test server to the moment a client read the frame carrying it.
//!
//! Each run first measures an idle window (video pipeline running, clients connected, no
//! chat), then replays once per rate. Message ids are rewritten per run and rate, so every
//! replay is told apart from the backlog of the ones before it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{Contender, STOP_TIMEOUT, Scratch, get_json, median, tail, wait_until_live};
use crate::tools::replay::Capture;
use crate::tools::replay::tmi::TmiServer;

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
/// How long the demo may take to encode its first frame once live.
const VIDEO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long every client may take to connect and receive its snapshot.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often due lines are handed to the test server.
const SEND_PERIOD: Duration = Duration::from_millis(2);
/// Deliveries have stopped when none came for this long.
const QUIET: Duration = Duration::from_secs(2);
/// Longest wait for deliveries after the last line was sent, however they trickle.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// How often deliveries are counted while waiting for them to stop.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How often the server's resident memory is read during a window.
const RSS_PERIOD: Duration = Duration::from_millis(50);
/// Bytes a client reads at once; a frame of the hub's (at most about 64 KiB) takes a few.
const CLIENT_READ_BUFFER: usize = 16 * 1024;
/// Name prefix of the server's tokio threads, where the bridge, the hub and every
/// WebSocket run; the video pipeline runs on GStreamer's threads.
const TOKIO_THREADS: &str = "tokio-";
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
    let mut server = Server::start(&scratch.0, tmi.addr())?;
    if !tmi_runtime.block_on(tmi.wait_joined(CHANNEL, JOIN_TIMEOUT)) {
        bail!(
            "the demo server did not join #{CHANNEL} on the Twitch test server at {} within \
             {} s; server stderr: {}",
            tmi.addr(),
            JOIN_TIMEOUT.as_secs(),
            tail(&server.stderr_path)
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
            server.check_alive()?;
            println!("run {run}/{runs}: {}", outcome.describe(clients, &idle));
            outcomes.push(outcome);
        }
        results.push(Run { idle, outcomes });
    }
    report(&results, rates, clients);
    // The clients go first, so the server's shutdown is not held up by open sockets.
    drop(chat_clients);
    server.stop()
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

/// `line` with `suffix` appended to its `id` tag, and that new id.
fn with_id_suffix(line: &str, suffix: &str) -> (String, Option<String>) {
    let Some((tags, rest)) = line.strip_prefix('@').and_then(|l| l.split_once(' ')) else {
        return (line.to_owned(), None);
    };
    let mut out = String::with_capacity(line.len() + suffix.len() + 1);
    let mut id = None;
    out.push('@');
    for (i, kv) in tags.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(kv);
        if let Some(value) = kv.strip_prefix("id=") {
            out.push_str(suffix);
            id = Some(format!("{value}{suffix}"));
        }
    }
    out.push(' ');
    out.push_str(rest);
    (out, id)
}

/// `100x`, `0.5x`.
fn rate_label(rate: f64) -> String {
    format!("{rate}x")
}

/// What one replay sends, and when.
struct Plan {
    rate: f64,
    /// The lines, ids rewritten.
    lines: Vec<String>,
    /// When each line is due, after the start of the replay.
    due: Vec<Duration>,
    /// For each line, the index of its message among `ids` when it is a tracked PRIVMSG.
    message_of: Vec<Option<u32>>,
    /// The PRIVMSG ids, as rewritten.
    ids: Vec<String>,
    /// Lines in the whole capture, to say what part was replayed.
    capture_lines: usize,
}

impl Plan {
    /// The lines due within `max` at `rate`, their ids made unique to this rate and run.
    fn new(capture: &Capture, rate: f64, max: Duration, run: usize) -> Self {
        let suffix = format!("-r{rate}-{run}");
        let mut plan = Self {
            rate,
            lines: Vec::new(),
            due: Vec::new(),
            message_of: Vec::new(),
            ids: Vec::new(),
            capture_lines: capture.lines.len(),
        };
        for line in &capture.lines {
            let due = Duration::from_secs_f64(line.at_ms as f64 / 1000.0 / rate);
            // `at_ms` never decreases, so nothing later is due sooner.
            if due > max {
                break;
            }
            let (text, id) = with_id_suffix(&line.text, &suffix);
            let message = match id {
                Some(id) if line.privmsg => {
                    plan.ids.push(id);
                    Some(plan.ids.len() as u32 - 1)
                }
                _ => None,
            };
            plan.lines.push(text);
            plan.due.push(due);
            plan.message_of.push(message);
        }
        plan
    }

    /// Time from the first line to the last, as scheduled.
    fn span(&self) -> Duration {
        self.due.last().copied().unwrap_or_default()
    }

    fn describe(&self, max: Duration) -> String {
        let part = if self.lines.len() == self.capture_lines {
            "the whole capture".to_owned()
        } else {
            format!(
                "its first {:.0} s (--max-seconds {})",
                self.span().as_secs_f64() * self.rate,
                max.as_secs()
            )
        };
        format!(
            "{}: replays {part}: {} lines, {} messages, in {:.1} s",
            rate_label(self.rate),
            self.lines.len(),
            self.ids.len(),
            self.span().as_secs_f64()
        )
    }
}

/// The `cowatch demo` under test, as a child process that is killed if the benchmark fails.
struct Server {
    process: Contender,
    /// Web address: `/chat` and `/healthz`.
    http: SocketAddr,
    /// Where its stderr goes, for error messages.
    stderr_path: PathBuf,
}

impl Server {
    /// Starts the demo on free loopback ports, bridged to `irc`, and waits until it
    /// produces video.
    fn start(dir: &Path, irc: SocketAddr) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot locate the cowatch executable")?;
        let stderr_path = dir.join("server.stderr");
        let mut process = Contender::spawn(
            Command::new(exe)
                .arg("demo")
                .args(["--listen", "127.0.0.1:0", "--webrtc-port", "0"])
                .args(["--twitch-channel", CHANNEL])
                .args(["--twitch-irc-addr", &irc.to_string()])
                // A store of its own: the benchmark must neither leave one behind nor see a
                // real party's bans and blocked terms, which would filter the replay.
                .arg("--data-dir")
                .arg(dir.join("data"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped()),
            &stderr_path,
        )?;
        let stdout = process.stdout()?;
        let http = wait_until_live(stdout, &stderr_path).context("the demo server")?;
        let server = Self {
            process,
            http,
            stderr_path,
        };
        // The idle window is about a party in progress: video is being made.
        let deadline = Instant::now() + VIDEO_TIMEOUT;
        loop {
            let health = get_json(server.http, "/healthz").map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the demo server's /healthz ({e:#}); server stderr: {}",
                    tail(&server.stderr_path)
                )
            })?;
            if health
                .pointer("/output/video_frames")
                .and_then(Value::as_u64)
                .is_some_and(|n| n > 0)
            {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the demo server encoded no video within {} s: {health}",
                    VIDEO_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An error quoting the server's last words if it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.process.try_reap()? {
            None => Ok(()),
            Some(usage) => bail!(
                "the demo server exited with {} during the benchmark: {}",
                usage.status,
                tail(&self.stderr_path)
            ),
        }
    }

    /// Stops the server the way a user would, and checks that it stopped cleanly.
    fn stop(mut self) -> anyhow::Result<()> {
        self.process.signal(libc::SIGTERM)?;
        let usage = self
            .process
            .wait(STOP_TIMEOUT)
            .context("the demo server did not stop after SIGTERM")?;
        if !usage.success {
            bail!(
                "the demo server exited with {} after SIGTERM: {}",
                usage.status,
                tail(&self.stderr_path)
            );
        }
        Ok(())
    }
}

/// The CPU counters a window compares, read at one moment.
#[derive(Clone, Copy)]
struct CpuReading {
    at: Instant,
    /// The server's CPU seconds, all threads.
    server: f64,
    /// Of which its tokio threads.
    tokio: f64,
    /// This process's (the test server's and the clients').
    own: f64,
    /// Busy seconds of every CPU of the machine, whoever used them.
    machine: f64,
}

impl CpuReading {
    fn take(server: &Contender) -> anyhow::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            server: server.cpu_seconds()?,
            tokio: server.threads_cpu_seconds(TOKIO_THREADS)?,
            own: own_cpu_seconds(),
            machine: machine_busy_seconds(),
        })
    }
}

/// Cores used between two readings: CPU-seconds per wall second.
#[derive(Clone, Copy)]
struct Cores {
    server: f64,
    tokio: f64,
    own: f64,
    machine: f64,
}

impl Cores {
    fn between(start: &CpuReading, end: &CpuReading) -> Self {
        let wall = end.at.duration_since(start.at).as_secs_f64();
        Self {
            server: (end.server - start.server) / wall,
            tokio: (end.tokio - start.tokio) / wall,
            own: (end.own - start.own) / wall,
            machine: (end.machine - start.machine) / wall,
        }
    }

    /// What neither the server nor this process used: other programs on the machine.
    fn others(&self) -> f64 {
        self.machine - self.server - self.own
    }
}

/// A measurement window over the server: CPU readings at its start, and the peak of its
/// resident memory while it lasts.
struct Window<'a> {
    process: &'a Contender,
    start: CpuReading,
    peak_kib: u64,
    sampled: Instant,
}

impl<'a> Window<'a> {
    fn open(process: &'a Contender) -> anyhow::Result<Self> {
        let start = CpuReading::take(process)?;
        Ok(Self {
            process,
            start,
            peak_kib: process.rss_kib().unwrap_or(0),
            sampled: start.at,
        })
    }

    /// Reads the resident memory if it is time to.
    fn sample(&mut self) {
        if self.sampled.elapsed() >= RSS_PERIOD {
            self.sampled = Instant::now();
            self.peak_kib = self.peak_kib.max(self.process.rss_kib().unwrap_or(0));
        }
    }

    fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// User + system CPU seconds of this whole process (every thread) so far.
fn own_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live local of the right type.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Seconds all CPUs together have been busy since boot (everything but idle and iowait in
/// `/proc/stat`); NaN where it cannot be read.
fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(ticks) = stat.lines().next().and_then(parse_machine_busy_ticks) else {
        return f64::NAN;
    };
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        return f64::NAN;
    }
    ticks as f64 / per_second as f64
}

/// Busy ticks of the `cpu` line of `/proc/stat`: user, nice, system, irq, softirq and steal
/// (fields 1–3 and 6–8); guest time is already counted in user.
fn parse_machine_busy_ticks(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 8 {
        return None;
    }
    Some(values[0] + values[1] + values[2] + values[5] + values[6] + values[7])
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

/// What the clients check a replay's messages against.
struct Replay {
    /// Message id → index into `sent_ns`.
    index: HashMap<String, u32>,
    /// When each message was handed to the test server, in ns after `base`; `u64::MAX`
    /// until then. Atomics, so the sender records and clients read without a lock.
    sent_ns: Vec<AtomicU64>,
    /// The clock's zero for `sent_ns`.
    base: Instant,
}

impl Replay {
    fn new(plan: &Plan) -> Self {
        Self {
            index: plan
                .ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i as u32))
                .collect(),
            sent_ns: plan.ids.iter().map(|_| AtomicU64::new(u64::MAX)).collect(),
            base: Instant::now(),
        }
    }

    fn messages(&self) -> usize {
        self.sent_ns.len()
    }
}

/// One event of a `/chat` frame: only what the count needs, borrowed from the frame.
#[derive(Deserialize)]
struct Ev<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: Option<&'a str>,
}

/// The type of one event, and its id when it is a message. 500 clients share the server's
/// machine, so this must cost far less than the server's work per event: the hub writes
/// every event as `{"seq":N,"type":"…",…}` and a message's `"id"` right after its type, so
/// that prefix is read in place; whatever does not have it (or has escapes in it) goes
/// through serde, which must otherwise scan the whole event to skip the fields not needed.
fn kind_and_id(line: &str) -> Option<(&str, Option<&str>)> {
    if let Some(found) = read_prefix(line) {
        return Some(found);
    }
    serde_json::from_str::<Ev>(line)
        .ok()
        .map(|event| (event.kind, event.id))
}

/// The fast path of [`kind_and_id`]; `None` leaves the event to serde.
fn read_prefix(line: &str) -> Option<(&str, Option<&str>)> {
    let rest = line.strip_prefix("{\"seq\":")?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let (kind, rest) = rest.strip_prefix(",\"type\":\"")?.split_once('"')?;
    if kind.contains('\\') {
        return None;
    }
    if kind != "message" {
        return Some((kind, None));
    }
    let (id, _) = rest.strip_prefix(",\"id\":\"")?.split_once('"')?;
    if id.contains('\\') {
        return None;
    }
    Some((kind, Some(id)))
}

/// What one client counted during the current replay.
#[derive(Default)]
struct Tally {
    replay: Option<Arc<Replay>>,
    /// Bit per message of the replay: already received, so a resent backlog is not
    /// counted twice.
    seen: Vec<u64>,
    /// Distinct messages of the replay received.
    received: u64,
    /// Send → receive of each, in µs.
    latencies_us: Vec<u32>,
    /// `reset` events: the socket fell behind and was sent the backlog again.
    resets: u64,
    /// Events that did not parse.
    unreadable: u64,
    /// Frames since connecting; the first carries the snapshot's start.
    frames: u64,
    /// Why the socket ended, once it has.
    ended: Option<String>,
}

impl Tally {
    /// Counts the events of one frame read at `now`; returns the new messages of the replay.
    fn frame(&mut self, text: &str, now: Instant) -> u64 {
        self.frames += 1;
        let mut new = 0;
        for line in text.split('\n') {
            if line.is_empty() {
                continue;
            }
            let Some((kind, id)) = kind_and_id(line) else {
                self.unreadable += 1;
                continue;
            };
            match kind {
                "reset" => self.resets += 1,
                "message" => {
                    let Some(replay) = &self.replay else {
                        continue;
                    };
                    // Backlog of earlier replays and snapshots: not ours.
                    let Some(&i) = id.and_then(|id| replay.index.get(id)) else {
                        continue;
                    };
                    let (word, bit) = (i as usize / 64, 1u64 << (i % 64));
                    if self.seen[word] & bit != 0 {
                        continue;
                    }
                    self.seen[word] |= bit;
                    self.received += 1;
                    new += 1;
                    let sent = replay.sent_ns[i as usize].load(Ordering::Acquire);
                    if sent != u64::MAX {
                        let at = now.duration_since(replay.base).as_nanos() as u64;
                        let us = at.saturating_sub(sent) / 1000;
                        self.latencies_us.push(us.min(u64::from(u32::MAX)) as u32);
                    }
                }
                _ => {}
            }
        }
        new
    }
}

/// One client's tally, shared between its task and the benchmark. A std mutex: it is held
/// for one frame's bookkeeping, never across an await, and the benchmark takes it only
/// between replays.
type Slot = Mutex<Tally>;

fn lock(slot: &Slot) -> MutexGuard<'_, Tally> {
    // A panicking client leaves nothing worse than a partial count.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// The WebSocket clients, on a runtime of their own; dropping this closes them all.
struct Clients {
    slots: Vec<Arc<Slot>>,
    /// Distinct replay messages received so far, over all clients, so the benchmark can
    /// see deliveries stop without taking every client's lock.
    delivered: Arc<AtomicU64>,
    /// Kept for its tasks; dropped last.
    _runtime: Runtime,
}

impl Clients {
    /// Connects `n` clients to `ws://{http}/chat` and waits until each has its snapshot.
    fn connect(http: SocketAddr, n: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("bench-chat-client")
            .enable_all()
            .build()
            .context("cannot start the clients' runtime")?;
        let url = format!("ws://{http}/chat");
        let delivered = Arc::new(AtomicU64::new(0));
        let slots: Vec<Arc<Slot>> = (0..n).map(|_| Arc::default()).collect();
        for slot in &slots {
            runtime.spawn(client(url.clone(), slot.clone(), delivered.clone()));
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let mut ready = 0;
            for slot in &slots {
                let tally = lock(slot);
                if let Some(why) = &tally.ended {
                    bail!("a chat client could not read {url}: {why}");
                }
                ready += usize::from(tally.frames > 0);
            }
            if ready == n {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "only {ready} of {n} chat clients had their snapshot from {url} within {} s",
                    CONNECT_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            slots,
            delivered,
            _runtime: runtime,
        })
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Points every client at `replay`, with empty counts.
    fn begin(&self, replay: &Arc<Replay>) {
        let words = replay.messages().div_ceil(64);
        for slot in &self.slots {
            let mut tally = lock(slot);
            tally.replay = Some(replay.clone());
            tally.seen = vec![0; words];
            tally.received = 0;
            tally.latencies_us = Vec::with_capacity(replay.messages());
            tally.resets = 0;
            tally.unreadable = 0;
        }
        self.delivered.store(0, Ordering::Relaxed);
    }

    /// Takes every client's counts of the replay, merged; an error if a client has gone.
    fn finish(&self) -> anyhow::Result<Counts> {
        let mut counts = Counts::default();
        for slot in &self.slots {
            let mut tally = lock(slot);
            if let Some(why) = &tally.ended {
                bail!("a chat client lost its socket: {why}");
            }
            tally.replay = None;
            counts.received += tally.received;
            counts.resets += tally.resets;
            counts.unreadable += tally.unreadable;
            counts
                .latencies_us
                .append(&mut std::mem::take(&mut tally.latencies_us));
        }
        counts.latencies_us.sort_unstable();
        Ok(counts)
    }
}

/// A replay's deliveries over all clients.
#[derive(Default)]
struct Counts {
    received: u64,
    resets: u64,
    unreadable: u64,
    /// Sorted.
    latencies_us: Vec<u32>,
}

/// One client: reads frames until the socket ends, and says why it ended.
async fn client(url: String, slot: Arc<Slot>, delivered: Arc<AtomicU64>) {
    let why = match read_chat(&url, &slot, &delivered).await {
        Ok(()) => "the server closed it".to_owned(),
        Err(e) => format!("{e:#}"),
    };
    lock(&slot).ended = Some(why);
}

async fn read_chat(url: &str, slot: &Slot, delivered: &AtomicU64) -> anyhow::Result<()> {
    // tungstenite zeroes `read_buffer_size` bytes before every read (128 KiB by default):
    // with 500 sockets that memset alone would cost a good part of a core.
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .context("cannot connect")?;
    while let Some(frame) = socket.next().await {
        match frame.context("read failed")? {
            Message::Text(text) => {
                let now = Instant::now();
                let new = lock(slot).frame(text.as_str(), now);
                if new > 0 {
                    delivered.fetch_add(new, Ordering::Relaxed);
                }
            }
            Message::Close(_) => return Ok(()),
            _ => {}
        }
    }
    Ok(())
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
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
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

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::replay::{command, tag};

    const PRIVMSG: &str = "@badge-info=;id=abc;room-id=1;tmi-sent-ts=1000;user-id=7 \
                           :u!u@u.tmi.twitch.tv PRIVMSG #xqcow :hi id=x";

    #[test]
    fn only_the_id_tag_is_rewritten() {
        let (line, id) = with_id_suffix(PRIVMSG, "-r100-1");
        assert_eq!(id.as_deref(), Some("abc-r100-1"));
        assert!(line.contains(";id=abc-r100-1;room-id=1;"), "{line}");
        assert!(line.contains("user-id=7 "), "{line}");
        assert!(line.ends_with(":hi id=x"), "{line}");
        let clear = "@room-id=1;target-user-id=5;tmi-sent-ts=2 :tmi.twitch.tv CLEARCHAT #x :u";
        assert_eq!(with_id_suffix(clear, "-s"), (clear.to_owned(), None));
    }

    #[test]
    fn tags_and_commands_are_found() {
        assert_eq!(tag(PRIVMSG, "tmi-sent-ts"), Some("1000"));
        assert_eq!(tag(PRIVMSG, "id"), Some("abc"));
        assert_eq!(tag(PRIVMSG, "sent-ts"), None);
        assert_eq!(command(PRIVMSG), "PRIVMSG");
        assert_eq!(command(":tmi.twitch.tv CLEARCHAT #x"), "CLEARCHAT");
        assert_eq!(command("PING :tmi.twitch.tv"), "PING");
    }

    #[test]
    fn schedule_follows_arrival_order_and_stops_at_the_limit() {
        let path = std::env::temp_dir().join(format!("cowatch-chat-{}.txt", std::process::id()));
        let line = |ts: u64, id: &str| format!("@id={id};tmi-sent-ts={ts} :u!u@u PRIVMSG #c :m");
        let text = [
            line(10_000, "a"),
            line(9_000, "b"), // earlier stamp, later arrival
            "@room-id=1 :tmi.twitch.tv ROOMSTATE #c".to_owned(),
            line(12_000, "c"),
            line(40_000, "d"),
        ]
        .join("\n");
        std::fs::write(&path, text).unwrap();
        let capture = Capture::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let at: Vec<u64> = capture.lines.iter().map(|l| l.at_ms).collect();
        assert_eq!(at, [0, 0, 0, 2_000, 30_000]);
        assert_eq!(capture.messages(), 4);

        let plan = Plan::new(&capture, 10.0, Duration::from_secs(1), 2);
        assert_eq!(plan.lines.len(), 4, "the line due at 3 s is past the limit");
        assert_eq!(plan.ids, ["a-r10-2", "b-r10-2", "c-r10-2"]);
        assert_eq!(plan.message_of, [Some(0), Some(1), None, Some(2)]);
        assert_eq!(plan.due[3], Duration::from_millis(200));
    }

    #[test]
    fn tally_counts_each_message_once_and_ignores_others() {
        let plan = Plan {
            rate: 1.0,
            lines: vec![],
            due: vec![],
            message_of: vec![],
            ids: vec!["a-r1-1".into(), "b-r1-1".into()],
            capture_lines: 0,
        };
        let replay = Arc::new(Replay::new(&plan));
        replay.sent_ns[0].store(0, Ordering::Relaxed);
        let mut tally = Tally {
            replay: Some(replay.clone()),
            seen: vec![0],
            ..Tally::default()
        };
        let frame = concat!(
            r#"{"seq":1,"type":"connection","state":"connected"}"#,
            "\n",
            r#"{"seq":2,"type":"message","id":"a-r1-1","sender":{"id":"7"},"text":"x"}"#,
            "\n",
            r#"{"seq":3,"type":"message","id":"old","text":"y"}"#,
            "\n",
            r#"{"seq":4,"type":"message","id":"a-r1-1"}"#,
            "\n",
            r#"{"type":"reset"}"#,
        );
        let new = tally.frame(frame, replay.base + Duration::from_millis(5));
        assert_eq!(new, 1);
        assert_eq!(tally.received, 1);
        assert_eq!(tally.resets, 1);
        assert_eq!(tally.latencies_us, [5_000]);
        assert_eq!(tally.unreadable, 0);
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let line = "cpu  100 2 30 600 6 0 4 5 0 0";
        assert_eq!(parse_machine_busy_ticks(line), Some(141));
        assert_eq!(parse_machine_busy_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_machine_busy_ticks("cpu 1 2"), None);
    }

    #[test]
    fn fast_prefix_agrees_with_serde() {
        let chat = crate::chat::Chat::new(crate::chat::ChatConfig::default());
        let message = chat.post("viewer", "hello \"there\" \\o/").unwrap();
        let snapshot = chat.subscribe().snapshot;
        let mut events: Vec<String> = snapshot
            .iter()
            .chain([&message])
            .map(|p| String::from_utf8(p.json.to_vec()).unwrap())
            .collect();
        events.push(r#"{"type":"reset"}"#.into());
        events.push(r#"{"seq":9,"type":"message","id":"a\"b","text":"x"}"#.into());
        events.push(r#"{"seq":9,"type":"message","text":"x","id":"late"}"#.into());
        for event in &events {
            let slow = serde_json::from_str::<Ev>(event)
                .map(|e| (e.kind, e.id))
                .ok();
            assert_eq!(kind_and_id(event), slow, "{event}");
        }
        // The hub's own message takes the fast path.
        let json = std::str::from_utf8(&message.json).unwrap();
        let fast = read_prefix(json).expect("the fast path reads the hub's messages");
        assert_eq!(fast, ("message", Some(message.event.message_id().unwrap())));
        assert_eq!(kind_and_id(r#"{"seq":1,"type":"#), None);
    }

    #[test]
    fn percentiles_are_observed_values() {
        let us: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&us, 50.0), 50.0);
        assert_eq!(percentile_ms(&us, 99.0), 99.0);
        assert_eq!(percentile_ms(&us, 100.0), 100.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }
}
