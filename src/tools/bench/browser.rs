//! The viewer page's first picture, timed where a viewer sees it: headless Chromium opens
//! cowatch's own page, and the page itself (`assets/player.js`, `window.cowatch.timing`) says
//! how long each step took from `new RTCPeerConnection` to the first frame composited
//! (`requestVideoFrameCallback`). `bench broadcast` prints it as the row "Browser first frame";
//! the browser tests assert on it.
//!
//! A party in progress has a chat, and the chat runs on the same main thread as the player:
//! [`BusyChat`] plays Twitch for the demo server (a real capture of a busy channel, its backlog
//! first), so the page starts the way it does for a real viewer.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::{median, nearest_rank, verdict};
use crate::tools::cdp::Browser;
use crate::tools::replay::Capture;
use crate::tools::replay::tmi::TmiServer;

/// The target: median time from `new RTCPeerConnection` to the first frame shown.
pub const TARGET_PAGE_FIRST_FRAME_MS: f64 = 300.0;
/// How long one join may take to show its first frame before it counts as showing none.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames a join must show to count as playing, not just flashing one picture.
const PLAYING_FRAMES: u64 = 5;
/// How long a join may take to go from its first frame to [`PLAYING_FRAMES`].
const PLAYING_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the page's timing is read while a join is under way.
const POLL: Duration = Duration::from_millis(50);
/// Longest random gap between joins: the server replays a fresh cached GOP or forces a
/// keyframe depending on its age, and gaps over this range meet both.
const MAX_JOIN_GAP_MS: u64 = 1500;

/// The channel the demo bridges to the stand-in.
const CHANNEL: &str = "benchpage";
/// The capture replayed by default, under `../shared/data/twitch`.
const CAPTURE_NAME: &str = "xqcow_capture_2019.txt";
/// Lines sent at once before the replay proper, so a new viewer gets a full backlog.
const BACKLOG_LINES: usize = 200;
/// How long the demo's bridge may take to join the stand-in.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// One join of the viewer page, as the page timed it: milliseconds since its
/// `new RTCPeerConnection`, `None` for a step it never reached.
#[derive(Debug, Clone)]
pub struct PageJoin {
    /// From the page's navigation to its `new RTCPeerConnection` (not part of the above).
    pub page_load: Option<f64>,
    /// The offer made and set: the POST leaves.
    pub post: Option<f64>,
    pub answer: Option<f64>,
    /// ICE and DTLS done (`connectionState` connected).
    pub connected: Option<f64>,
    /// The first video RTP packet (the remote track unmutes).
    pub first_packet: Option<f64>,
    /// The first frame composited (`requestVideoFrameCallback`).
    pub first_frame: Option<f64>,
    /// When the last packet of that first frame arrived (its `receiveTime`).
    pub first_frame_received: Option<f64>,
    /// Frames the page had shown when the join was read.
    pub frames: u64,
    /// Keyframes and frames decoded, by the receiver's stats when the first frame was shown.
    pub keyframes_decoded: Option<f64>,
    pub frames_decoded: Option<f64>,
    /// Keyframe requests (PLI) and retransmission requests (NACK) sent until then.
    pub plis: Option<f64>,
    pub nacks: Option<f64>,
    /// The page's whole `window.cowatch.timing`, for a report.
    pub raw: Value,
}

impl PageJoin {
    fn from_timing(raw: Value, frames: u64) -> Self {
        let at = |path: &str| raw.pointer(path).and_then(Value::as_f64);
        Self {
            page_load: at("/at"),
            post: at("/post"),
            answer: at("/answer"),
            connected: at("/connected"),
            first_packet: at("/firstPacket"),
            first_frame: at("/firstFrame"),
            first_frame_received: at("/frame/receive"),
            frames,
            keyframes_decoded: at("/stats/keyFramesDecoded"),
            frames_decoded: at("/stats/framesDecoded"),
            plis: at("/stats/pliCount"),
            nacks: at("/stats/nackCount"),
            raw,
        }
    }

    /// A join that never got this far: what the page had when it was given up on.
    fn failed(raw: Value, frames: u64) -> Self {
        Self::from_timing(raw, frames)
    }

    /// Whether it showed its first frame and kept playing.
    pub fn played(&self) -> bool {
        self.first_frame.is_some() && self.frames >= PLAYING_FRAMES
    }
}

/// The joins of one measurement.
#[derive(Debug, Clone, Default)]
pub struct PageJoins {
    /// The first join of the freshly started browser, not counted: it also waits for the
    /// browser's own start-up (its GPU and media processes), which a viewer's browser has
    /// behind it.
    pub warmup: Option<PageJoin>,
    pub joins: Vec<PageJoin>,
    /// Joins that did not get as far as a page (navigation or browser failures).
    pub failures: Vec<String>,
    /// The machine's load averages when the joins began and ended: what else ran meanwhile.
    pub load: (String, String),
}

/// Steps of the breakdown: name, and the two marks it lies between.
type Step = (&'static str, fn(&PageJoin) -> Option<f64>);

/// What each part of the wait took, one join at a time.
const STEPS: [Step; 5] = [
    ("offer", |j| j.post),
    ("POST→answer", |j| Some(j.answer? - j.post?)),
    ("ICE+DTLS", |j| Some(j.connected? - j.answer?)),
    ("→first packet", |j| Some(j.first_packet? - j.connected?)),
    ("→first frame", |j| Some(j.first_frame? - j.first_packet?)),
];

impl PageJoins {
    /// First-frame times with a join that showed none ranked as infinitely late.
    fn first_frames(&self) -> Vec<f64> {
        let mut all: Vec<f64> = self
            .joins
            .iter()
            .map(|j| j.first_frame.unwrap_or(f64::INFINITY))
            .collect();
        all.extend(self.failures.iter().map(|_| f64::INFINITY));
        all
    }

    /// Median first frame, in ms since `new RTCPeerConnection`.
    pub fn median(&self) -> f64 {
        percentile(self.first_frames(), 50.0)
    }

    pub fn p95(&self) -> f64 {
        percentile(self.first_frames(), 95.0)
    }

    /// Joins that showed no frame, or stopped after one.
    pub fn not_playing(&self) -> usize {
        self.joins.iter().filter(|j| !j.played()).count() + self.failures.len()
    }

    /// Median of each step of the breakdown, over the joins that reached it.
    pub fn breakdown(&self) -> Vec<(&'static str, f64)> {
        STEPS
            .iter()
            .map(|(name, step)| (*name, median(self.joins.iter().filter_map(step).collect())))
            .collect()
    }

    /// Median of a receiver counter (keyframes decoded and the like) at the first frame.
    fn counter(&self, read: fn(&PageJoin) -> Option<f64>) -> f64 {
        median(self.joins.iter().filter_map(read).collect())
    }

    /// One line: the figures and the breakdown.
    pub fn describe(&self) -> String {
        let steps: Vec<String> = self
            .breakdown()
            .iter()
            .map(|(name, ms)| format!("{name} {}", ms_text(*ms)))
            .collect();
        let mut line = format!(
            "page first frame median {}, p95 {} over {} joins ({}); at the first frame the \
             receiver had decoded {} frame(s), {} keyframe(s), sent {} PLI, {} NACK (medians)",
            ms_text(self.median()),
            ms_text(self.p95()),
            self.joins.len() + self.failures.len(),
            steps.join(", "),
            self.counter(|j| j.frames_decoded),
            self.counter(|j| j.keyframes_decoded),
            self.counter(|j| j.plis),
            self.counter(|j| j.nacks),
        );
        if self.not_playing() > 0 {
            line += &format!("; {} join(s) did not play", self.not_playing());
        }
        if let Some(warmup) = &self.warmup {
            line += &format!(
                "; the warm-up join of the fresh browser, not counted: {}",
                warmup.first_frame.map_or("no frame".into(), ms_text)
            );
        }
        if let Some(first) = self.failures.first() {
            line += &format!("; e.g. {first}");
        }
        line += &format!(
            "; load average {} before, {} after",
            self.load.0, self.load.1
        );
        line
    }
}

/// The row "Browser first frame" of `bench broadcast`: medians over runs.
pub(super) fn report(runs: &[&PageJoins], chat_lines_per_second: f64) {
    let of = |f: &dyn Fn(&PageJoins) -> f64| median(runs.iter().map(|r| f(r)).collect());
    let first_frame = of(&|r| r.median());
    let joins = runs.first().map_or(0, |r| r.joins.len() + r.failures.len());
    println!(
        "Browser first frame (Chromium on cowatch's page, {joins} joins/run, new RTCPeerConnection \
         to the first frame shown): median {}, p95 {}  (target median ≤ \
         {TARGET_PAGE_FIRST_FRAME_MS:.0} ms: {}, {:.2}× the target)",
        ms_text(first_frame),
        ms_text(of(&|r| r.p95())),
        verdict(first_frame <= TARGET_PAGE_FIRST_FRAME_MS),
        first_frame / TARGET_PAGE_FIRST_FRAME_MS
    );
    let steps: Vec<String> = STEPS
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!("{name} {}", ms_text(of(&|r| r.breakdown()[i].1))))
        .collect();
    let page_load = of(&|r| median(r.joins.iter().filter_map(|j| j.page_load).collect()));
    println!(
        "  medians over runs: {}; before it, page load to new RTCPeerConnection {}; a busy \
         chat streamed meanwhile ({chat_lines_per_second:.1} lines/s after a \
         {BACKLOG_LINES}-line backlog)",
        steps.join(", "),
        ms_text(page_load)
    );
    let not_playing: usize = runs.iter().map(|r| r.not_playing()).sum();
    if not_playing > 0 {
        println!("  {not_playing} join(s) in all did not play (ranked as slowest)");
    }
}

/// Opens `page_url` in Chromium `joins` times (after one warm-up join), a fresh page and peer
/// connection each (the page before is left, which hangs up), at random gaps, and reads each
/// join's timing.
pub fn page_joins(page_url: &str, joins: usize) -> anyhow::Result<PageJoins> {
    let load_before = load_average();
    let mut browser = Browser::launch()?;
    let mut result = PageJoins {
        warmup: Some(one_join(&mut browser, page_url).context("the warm-up join")?),
        ..PageJoins::default()
    };
    for _ in 0..joins {
        // Leaving the page hangs up (its `pagehide` DELETEs the session).
        browser.navigate("about:blank")?;
        let gap = getrandom::u64().context("no randomness")? % (MAX_JOIN_GAP_MS + 1);
        std::thread::sleep(Duration::from_millis(gap));
        match one_join(&mut browser, page_url) {
            Ok(join) => result.joins.push(join),
            Err(e) => result.failures.push(format!("{e:#}")),
        }
    }
    result.load = (load_before, load_average());
    Ok(result)
}

/// The page's timing of its current connection attempt and the frames shown.
const READ_TIMING: &str = "window.cowatch ? { timing: window.cowatch.timing, \
                           frames: window.cowatch.frames } : null";

fn one_join(browser: &mut Browser, page_url: &str) -> anyhow::Result<PageJoin> {
    browser.navigate(page_url)?;
    let start = Instant::now();
    let mut first_frame_at = None;
    loop {
        let read = browser.eval(READ_TIMING)?;
        let timing = read["timing"].clone();
        let frames = read["frames"].as_u64().unwrap_or(0);
        // The stats are read just after the first frame: wait for them too.
        let shown = timing.get("stats").is_some();
        if shown && first_frame_at.is_none() {
            first_frame_at = Some(Instant::now());
        }
        match first_frame_at {
            Some(_) if frames >= PLAYING_FRAMES => {
                return Ok(PageJoin::from_timing(timing, frames));
            }
            Some(at) if at.elapsed() >= PLAYING_TIMEOUT => {
                return Ok(PageJoin::failed(timing, frames));
            }
            None if start.elapsed() >= FIRST_FRAME_TIMEOUT => {
                return Ok(PageJoin::failed(timing, frames));
            }
            _ => std::thread::sleep(POLL),
        }
    }
}

/// A Twitch stand-in for the demo server: a capture of a busy channel, its first
/// 200 lines at once (the backlog a viewer of a party in progress is sent), then the
/// rest at the capture's own pace times `rate`, from the moment [`BusyChat::replay`] is
/// called until the guard it returns is dropped.
pub struct BusyChat {
    /// Its own runtime, so the stand-in runs whatever the caller does meanwhile.
    runtime: tokio::runtime::Runtime,
    server: TmiServer,
    capture: Arc<Capture>,
    rate: f64,
    sent: Arc<AtomicU64>,
}

impl BusyChat {
    /// Starts the stand-in on a free loopback port with the capture at `capture` (default:
    /// `../shared/data/twitch/xqcow_capture_2019.txt`).
    pub fn start(capture: Option<&Path>, rate: f64) -> anyhow::Result<Self> {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("the chat replay rate must be a positive number, not {rate}");
        }
        let capture = Capture::load(&locate_capture(capture)?)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("busy-chat")
            .enable_all()
            .build()
            .context("cannot start the chat stand-in's runtime")?;
        let server = runtime
            .block_on(TmiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
            .context("cannot start the Twitch stand-in")?;
        Ok(Self {
            runtime,
            server,
            capture: Arc::new(capture),
            rate,
            sent: Arc::new(AtomicU64::new(0)),
        })
    }

    /// What `cowatch demo` needs to bridge this stand-in.
    pub fn demo_args(&self) -> [OsString; 4] {
        [
            "--twitch-channel".into(),
            CHANNEL.into(),
            "--twitch-irc-addr".into(),
            self.server.addr().to_string().into(),
        ]
    }

    /// Lines replayed per second (the capture's own rate times the replay's).
    pub fn lines_per_second(&self) -> f64 {
        self.capture.lines.len() as f64 / self.capture.span().as_secs_f64().max(1e-3) * self.rate
    }

    /// Lines handed to the demo so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits for the demo to join, sends the backlog and replays the rest until the guard
    /// is dropped.
    pub fn replay(&self) -> anyhow::Result<Replaying> {
        if !self
            .runtime
            .block_on(self.server.wait_joined(CHANNEL, JOIN_TIMEOUT))
        {
            bail!(
                "the demo server did not join #{CHANNEL} on the Twitch stand-in at {} within {} s",
                self.server.addr(),
                JOIN_TIMEOUT.as_secs()
            );
        }
        let lines = &self.capture.lines;
        let backlog: Vec<String> = lines
            .iter()
            .take(BACKLOG_LINES)
            .map(|l| l.text.clone())
            .collect();
        self.runtime
            .block_on(self.server.send_batch(CHANNEL, &backlog));
        self.sent.fetch_add(backlog.len() as u64, Ordering::Relaxed);
        let capture = Arc::clone(&self.capture);
        let sent = Arc::clone(&self.sent);
        let server = self.server.clone();
        let rate = self.rate;
        let task = self.runtime.spawn(async move {
            let lines = &capture.lines[BACKLOG_LINES.min(capture.lines.len())..];
            let origin = lines.first().map_or(0, |l| l.at_ms);
            let start = tokio::time::Instant::now();
            for line in lines {
                let at = Duration::from_secs_f64((line.at_ms - origin) as f64 / 1000.0 / rate);
                tokio::time::sleep_until(start + at).await;
                server.send(CHANNEL, &line.text).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Replaying { task })
    }
}

/// The replay under way; dropping it stops the replay.
pub struct Replaying {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replaying {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Finds the capture: `given`, else `../shared/data/twitch/` next to the current directory or
/// next to the source tree this binary was built from.
fn locate_capture(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("the capture {} does not exist", path.display());
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
            "the Twitch capture {CAPTURE_NAME} is missing: looked for {} and {}",
            candidates[0].display(),
            candidates[1].display()
        ),
    }
}

/// The machine's load averages (1, 5, 15 min), for saying what shared it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Milliseconds for people; infinity stands for "no frame".
pub fn ms_text(value: f64) -> String {
    if value.is_infinite() {
        "none (no frame)".into()
    } else if value.is_nan() {
        "-".into()
    } else {
        format!("{value:.0} ms")
    }
}

/// The `p`th percentile by nearest rank: a value that was actually observed.
fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    nearest_rank(values.len(), p).map_or(f64::NAN, |i| values[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(first_frame: Option<f64>, frames: u64) -> PageJoin {
        PageJoin::from_timing(
            serde_json::json!({
                "at": 120.0, "post": 40.0, "answer": 60.0, "connected": 110.0,
                "firstPacket": 135.0, "firstFrame": first_frame,
            }),
            frames,
        )
    }

    #[test]
    fn a_join_without_a_frame_ranks_as_slowest() {
        let joins = PageJoins {
            joins: vec![join(Some(150.0), 30), join(None, 0), join(Some(170.0), 30)],
            ..PageJoins::default()
        };
        assert_eq!(joins.median(), 170.0);
        assert!(joins.p95().is_infinite());
        assert_eq!(joins.not_playing(), 1);
        assert_eq!(ms_text(joins.p95()), "none (no frame)");
    }

    #[test]
    fn breakdown_steps_lie_between_the_page_marks() {
        let joins = PageJoins {
            joins: vec![join(Some(150.0), 30)],
            ..PageJoins::default()
        };
        let steps: Vec<f64> = joins.breakdown().iter().map(|(_, ms)| *ms).collect();
        assert_eq!(steps, vec![40.0, 20.0, 50.0, 25.0, 15.0]);
    }
}
