//! `cowatch bench broadcast --adaptive`: what adaptive quality does for a viewer whose link
//! drops to 1 Mbit/s, and what the lighter rendition costs the streamer.
//!
//! A `cowatch demo` runs in a network namespace at 198.18.0.1; headless Chromium on cowatch's
//! own viewer page watches from a second namespace and a webrtc-rs probe from a third, each
//! over a veth pair of its own ([`netns`]), so each viewer has its own link. Nothing leaves the
//! pairs. One run:
//!
//! 1. both viewers play 720p; the server's CPU is read for a window (the 360p branch idle);
//! 2. a tc token bucket caps each link at 1 Mbit/s: **time to step down** is from the cap to
//!    the first 360p frame each viewer shows (Chromium: `requestVideoFrameCallback`'s frame
//!    size; the probe: the SPS of the first whole keyframe); the **freeze** is the longest
//!    gap between shown frames from the cap to 5 s after that viewer's switch;
//! 3. with both at 360p, the server's CPU is read again: the **cost of each rendition** is the
//!    CPU time of its threads (`/proc/PID/task/*/stat`: GStreamer names a queue's streaming
//!    thread after the queue, and x264's own threads inherit that name), the 720p encode being
//!    `video-encode-queue` and `video-pay-queue`, the 360p branch `h264-360p-queue` (its
//!    scaler, encoder and payloader run there); the whole process's change is shown beside;
//! 4. the caps are lifted: **time to step up** is from then to the first 720p frame shown.
//!
//! Namespaces need root; [`check`] says so before anything runs.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::server::Server;
use super::{median, verdict};
use crate::tools::cdp::Browser;
use crate::tools::framelog::{
    FRAME_LOG, Moment, READ_PAGE, epoch_ms, first_at_height, longest_freeze,
};
use crate::tools::netns::{Link, SERVER_IP, Side};
use crate::tools::probe::{ProbeHandle, ProbeOptions, ProbeReport, probe_with};

/// The weak link, per viewer.
const CAP_KBIT: u32 = 1000;
/// Targets of the issue.
const TARGET_DOWN_S: f64 = 5.0;
const TARGET_FREEZE_MS: f64 = 500.0;
const TARGET_UP_S: f64 = 20.0;
const TARGET_BRANCH_SHARE: f64 = 0.25;
/// How long a step may take before the run records it as never.
const DOWN_LIMIT: Duration = Duration::from_secs(25);
const UP_LIMIT: Duration = Duration::from_secs(40);
/// The freeze is looked for from the cap until this long after the switch.
const AFTER_SWITCH: Duration = Duration::from_secs(5);
/// The party's ports inside its namespace (a new namespace: they are free).
const HTTP_PORT: u16 = 8080;
const WEBRTC_PORT: u16 = 8443;
/// How long the page and the probe may take to play.
const LIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the viewers and the server are read.
const POLL: Duration = Duration::from_millis(250);
/// Threads of the always-on 720p encode and of the 360p branch (see the module note).
const MAIN_THREADS: [&str; 2] = ["video-encode-qu", "video-pay-queue"];
const LOW_THREADS: &str = "h264-360p-queue";

/// Fails with a clear message when the table cannot run here.
pub(super) fn check() -> anyhow::Result<()> {
    // SAFETY: geteuid(2) only reads this process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "--adaptive needs root: it builds network namespaces (ip netns) and caps their links \
             with tc, without touching the machine's own network; run it as root"
        );
    }
    let tc = std::process::Command::new("tc").arg("-V").output();
    if !tc.is_ok_and(|o| o.status.success()) {
        bail!("--adaptive needs tc (apt-get install iproute2)");
    }
    Ok(())
}

/// One viewer's step: seconds from the link change to its first frame at the new size, and
/// its longest freeze around the switch (ms); `None` when it did not get there.
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    seconds: Option<f64>,
    freeze_ms: Option<f64>,
}

/// Cores used over a window: the process, the 720p encode, the 360p branch.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    process: f64,
    main: f64,
    low: f64,
}

/// One run.
struct Trial {
    /// Chromium's and the probe's step down, and when the server decided (s after the cap).
    down: [Step; 2],
    server_down_s: Option<f64>,
    /// `None` for a viewer that never stepped down: it had nothing to step up from.
    up: [Option<Step>; 2],
    /// With everyone on 720p, and with everyone on 360p.
    cpu_high: Cpu,
    cpu_low: Option<Cpu>,
}

/// A party in its namespace with Chromium and a probe watching, each over its own link.
struct Party {
    // Field order is drop order: the viewers and the server before their namespaces.
    browser: Browser,
    probe: ProbeHandle,
    probe_thread: Option<JoinHandle<anyhow::Result<ProbeReport>>>,
    server: Server,
    link: Link,
    http: SocketAddr,
}

impl Party {
    fn start(dir: &Path) -> anyhow::Result<Party> {
        let mut link = Link::create()
            .context("cannot create the network namespaces (needs root, iproute2, iptables)")?;
        link.add_second_viewer()?;
        let exe = std::env::current_exe().context("cannot locate the cowatch executable")?;
        let exe = exe
            .to_str()
            .context("the cowatch executable's path is not UTF-8")?;
        let http = SocketAddr::from((SERVER_IP, HTTP_PORT));
        let mut command = link.command(Side::Server, exe);
        command
            .arg("demo")
            .args(["--listen", &http.to_string()])
            .args(["--webrtc-port", &WEBRTC_PORT.to_string()])
            .args(["--public-ip", &SERVER_IP.to_string()])
            .args(["--rendition-linger", "2"])
            .arg("--data-dir")
            .arg(dir.join("adaptive-data"))
            .env("RUST_LOG", "warn");
        let server = Server::start(&mut command, &dir.join("adaptive-server.stderr"))
            .context("the demo server in its namespace")?;
        let mut browser = link
            .run(Side::Viewer, Browser::launch)?
            .context("cannot start chromium inside the viewer namespace")?;
        browser.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": FRAME_LOG }),
        )?;
        browser.navigate(&format!("http://{http}/"))?;
        let probe = ProbeHandle::default();
        let options = ProbeOptions {
            url: format!("http://{http}/whep"),
            duration: Duration::from_secs(3600),
            codec: None,
        };
        let handle = probe.clone();
        // A thread spawned by the namespace's thread lives in the namespace too.
        let probe_thread = link.run(Side::SecondViewer, move || {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start an async runtime")?
                    .block_on(probe_with(&options, &handle))
            })
        })?;
        let mut party = Party {
            browser,
            probe,
            probe_thread: Some(probe_thread),
            server,
            link,
            http,
        };
        let deadline = Instant::now() + LIVE_TIMEOUT;
        loop {
            let page = party.browser.eval(READ_PAGE)?;
            let playing = page["state"] == "live"
                && page["frames"].as_u64().unwrap_or(0) > 30
                && party.probe.video.timeline().frames > 30;
            if playing {
                return Ok(party);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the viewers did not play within {} s: page {page}, probe {}; server: {}",
                    LIVE_TIMEOUT.as_secs(),
                    party.probe.video.timeline().describe(),
                    party.server.process.last_words()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `/healthz`, read from inside the server's namespace: the request never crosses the
    /// capped links.
    fn health(&self) -> anyhow::Result<Value> {
        let mut stream = self.link.connect(Side::Server, self.http)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /healthz HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.http
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (_, body) = response
            .split_once("\r\n\r\n")
            .with_context(|| format!("GET /healthz: {response}"))?;
        serde_json::from_str(body).context("/healthz is not JSON")
    }

    fn set_rate(&self, kbit: Option<u32>) -> anyhow::Result<()> {
        for side in [Side::Viewer, Side::SecondViewer] {
            self.link.set_rate(side, kbit)?;
        }
        Ok(())
    }

    /// Polls until both viewers show frames `height` lines tall, at most `limit` after `since`
    /// (the link change); returns each one's step and when the server moved both.
    fn wait_for(
        &mut self,
        height: u32,
        label: &str,
        since: Moment,
        limit: Duration,
    ) -> anyhow::Result<([Step; 2], Option<f64>)> {
        let probe_since = self.probe.video.ms_at(since.at).unwrap_or(0.0);
        let mut server_s = None;
        loop {
            let page = self.browser.eval(READ_PAGE)?;
            let timeline = self.probe.video.timeline();
            let health = self.health()?;
            let viewers = health["sessions"]["viewers"].as_array().cloned();
            let moved =
                viewers.is_some_and(|v| v.len() == 2 && v.iter().all(|s| s["rendition"] == label));
            if moved && server_s.is_none() {
                server_s = Some(since.at.elapsed().as_secs_f64());
            }
            let page_at = first_at_height(&page, height, since.epoch_ms);
            let probe_at = timeline.first_at_height(height, probe_since);
            let done = page_at.is_some() && probe_at.is_some();
            let settled = |switch_s: Option<f64>| {
                switch_s.is_none_or(|s| since.at.elapsed().as_secs_f64() >= s + 5.0)
            };
            let page_s = page_at.map(|t| (t - since.epoch_ms) / 1000.0);
            let probe_s = probe_at.map(|t| (t - probe_since) / 1000.0);
            // Done once both switched and the freeze window after the later one has passed,
            // or at the limit.
            if (done && settled(page_s) && settled(probe_s)) || since.at.elapsed() > limit {
                let now = epoch_ms();
                let page_freeze = page_s.map(|s| {
                    let end = (since.epoch_ms + (s + AFTER_SWITCH.as_secs_f64()) * 1000.0).min(now);
                    longest_freeze(&page, since.epoch_ms, end)
                });
                let probe_freeze = probe_s.map(|s| {
                    let end = (probe_since + (s + AFTER_SWITCH.as_secs_f64()) * 1000.0)
                        .min(timeline.now_ms);
                    timeline.longest_freeze(probe_since, end)
                });
                return Ok((
                    [
                        Step {
                            seconds: page_s,
                            freeze_ms: page_freeze,
                        },
                        Step {
                            seconds: probe_s,
                            freeze_ms: probe_freeze,
                        },
                    ],
                    server_s,
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The server's cores over `window`: the whole process and the rendition threads.
    fn cpu(&self, window: Duration) -> anyhow::Result<Cpu> {
        let process = &self.server.process;
        let sample = || -> anyhow::Result<[f64; 3]> {
            let mut main = 0.0;
            for prefix in MAIN_THREADS {
                main += process.threads_cpu_seconds(prefix)?;
            }
            Ok([
                process.cpu_seconds()?,
                main,
                process.threads_cpu_seconds(LOW_THREADS)?,
            ])
        };
        let (start, before) = (Instant::now(), sample()?);
        std::thread::sleep(window);
        let after = sample()?;
        let wall = start.elapsed().as_secs_f64();
        let [process, main, low] = [0, 1, 2].map(|i| (after[i] - before[i]) / wall);
        Ok(Cpu { process, main, low })
    }

    /// One run on this party: the viewers play 720p on open links.
    fn trial(&mut self, window: Duration) -> anyhow::Result<Trial> {
        let cpu_high = self.cpu(window)?;
        self.set_rate(Some(CAP_KBIT))?;
        let (down, server_down_s) =
            self.wait_for(360, "360p", Moment::now(), DOWN_LIMIT + AFTER_SWITCH)?;
        let health = self.health()?;
        let low_running = health["renditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == "360p" && r["codec"] == "H264" && r["state"] == "running");
        let cpu_low = if low_running {
            Some(self.cpu(window)?)
        } else {
            None
        };
        self.set_rate(None)?;
        let (up, _) = self.wait_for(720, "720p", Moment::now(), UP_LIMIT)?;
        let up = [0, 1].map(|v| down[v].seconds.map(|_| up[v]));
        Ok(Trial {
            down,
            server_down_s,
            up,
            cpu_high,
            cpu_low,
        })
    }
}

impl Party {
    /// The probe leaves (its DELETE reaches the server), then the server stops.
    fn finish(mut self) -> anyhow::Result<()> {
        self.probe.leave();
        if let Some(thread) = self.probe_thread.take() {
            let _ = thread.join();
        }
        self.server
            .process
            .stop("the demo server in its namespace")
            .map(drop)
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        self.probe.leave();
        if let Some(thread) = self.probe_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `runs` trials, each on a fresh party, and prints the table.
pub(super) fn measure(dir: &Path, runs: usize, window: Duration) -> anyhow::Result<()> {
    let load_before = super::browser::load_average();
    println!(
        "cowatch bench broadcast --adaptive: demo party 1280x720@30 H.264 {} kbit/s, ladder 720p \
         + 360p; Chromium and a webrtc-rs probe on links of their own (veth pairs), capped to \
         {CAP_KBIT} kbit/s each by tc tbf; {runs} runs; CPU windows of {} s",
        crate::pipeline::DEFAULT_BITRATE_KBPS,
        window.as_secs()
    );
    let mut trials = Vec::with_capacity(runs);
    for run in 1..=runs {
        let mut party = Party::start(dir).with_context(|| format!("run {run}: the party"))?;
        let trial = party
            .trial(window)
            .with_context(|| format!("run {run}: the trial"))?;
        println!("run {run}/{runs}: {}", describe(&trial));
        party.finish()?;
        trials.push(trial);
    }
    report(&trials);
    println!(
        "  shared the machine: the demo server in its namespace, Chromium, and this process \
         (the probe); load average {load_before} before, {} after",
        super::browser::load_average()
    );
    Ok(())
}

fn seconds(value: Option<f64>) -> String {
    value.map_or("never".into(), |s| format!("{s:.1} s"))
}

fn millis(value: Option<f64>) -> String {
    value.map_or("-".into(), |ms| format!("{ms:.0} ms"))
}

fn describe(t: &Trial) -> String {
    let cpu = |c: &Cpu| {
        format!(
            "process {:.2}, 720p encode {:.2}, 360p branch {:.2}",
            c.process, c.main, c.low
        )
    };
    format!(
        "step down chromium {} (freeze {}), probe {} (freeze {}), server decided {}; step up \
         chromium {}, probe {}; cores at 720p: {}; at 360p: {}",
        seconds(t.down[0].seconds),
        millis(t.down[0].freeze_ms),
        seconds(t.down[1].seconds),
        millis(t.down[1].freeze_ms),
        seconds(t.server_down_s),
        t.up[0].map_or("-".into(), |s| seconds(s.seconds)),
        t.up[1].map_or("-".into(), |s| seconds(s.seconds)),
        cpu(&t.cpu_high),
        t.cpu_low
            .as_ref()
            .map_or("the 360p branch did not run".into(), cpu),
    )
}

/// Median and worst of values where `None` (never happened) ranks worst.
fn median_worst(values: &[Option<f64>]) -> (f64, f64) {
    let ranked: Vec<f64> = values.iter().map(|v| v.unwrap_or(f64::INFINITY)).collect();
    let worst = ranked.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(ranked), worst)
}

fn shown(value: f64, unit: &str) -> String {
    if value.is_infinite() {
        "never".into()
    } else if value.is_nan() {
        "-".into()
    } else if unit == "ms" {
        format!("{value:.0} ms")
    } else {
        format!("{value:.1} s")
    }
}

/// Prints the medians over runs and the target checks.
fn report(trials: &[Trial]) {
    println!();
    println!(
        "adaptive quality, medians over {} runs (worst in brackets)",
        trials.len()
    );
    println!(
        "{:<38}{:<24}{:<24}target",
        "", "chromium", "probe (webrtc-rs)"
    );
    // `of` gives `None` where the row does not apply (no step up without a step down).
    type Of<'a> = &'a dyn Fn(&Trial, usize) -> Option<Option<f64>>;
    let row = |name: &str, of: Of<'_>, unit: &str, target: f64| {
        let mut cells = Vec::new();
        let mut pass = true;
        for viewer in 0..2 {
            let values: Vec<Option<f64>> = trials.iter().filter_map(|t| of(t, viewer)).collect();
            if values.is_empty() {
                pass = false;
                cells.push("- (no run)".to_owned());
                continue;
            }
            let (median, worst) = median_worst(&values);
            pass &= worst <= target;
            let skipped = trials.len() - values.len();
            let note = if skipped > 0 {
                format!(" in {} of {} runs", values.len(), trials.len())
            } else {
                String::new()
            };
            cells.push(format!(
                "{} ({}){note}",
                shown(median, unit),
                shown(worst, unit)
            ));
        }
        let target = if unit == "ms" {
            format!("≤ {target:.0} ms")
        } else {
            format!("≤ {target:.0} s")
        };
        println!(
            "{name:<38}{:<24}{:<24}{target}: {}",
            cells[0],
            cells[1],
            verdict(pass)
        );
    };
    row(
        "step down (cap → first 360p frame)",
        &|t, v| Some(t.down[v].seconds),
        "s",
        TARGET_DOWN_S,
    );
    row(
        "freeze (cap → switch + 5 s)",
        &|t, v| Some(t.down[v].freeze_ms),
        "ms",
        TARGET_FREEZE_MS,
    );
    row(
        "step up (uncap → first 720p frame)",
        &|t, v| t.up[v].map(|s| s.seconds),
        "s",
        TARGET_UP_S,
    );
    let (server_median, server_worst) =
        median_worst(&trials.iter().map(|t| t.server_down_s).collect::<Vec<_>>());
    println!(
        "  the server had moved both to 360p (/healthz) after {} (worst {}): the rest of the step \
         down is the wait for a 360p keyframe to arrive whole",
        shown(server_median, "s"),
        shown(server_worst, "s")
    );

    let high: Vec<&Cpu> = trials.iter().map(|t| &t.cpu_high).collect();
    let low: Vec<&Cpu> = trials.iter().filter_map(|t| t.cpu_low.as_ref()).collect();
    let of = |cpus: &[&Cpu], f: &dyn Fn(&Cpu) -> f64| median(cpus.iter().map(|c| f(c)).collect());
    println!(
        "{:<38}{:<14}{:<16}{:<16}",
        "CPU (cores)", "process", "720p encode", "360p branch"
    );
    println!(
        "{:<38}{:<14.3}{:<16.3}{:<16.3}",
        "everyone on 720p",
        of(&high, &|c| c.process),
        of(&high, &|c| c.main),
        of(&high, &|c| c.low)
    );
    if low.is_empty() {
        println!(
            "{:<38}the 360p branch never ran: 360p branch ≤ {:.0} % of the 720p encode: FAIL",
            "both viewers on 360p",
            TARGET_BRANCH_SHARE * 100.0
        );
    } else {
        let share = of(&low, &|c| c.low / c.main);
        println!(
            "{:<38}{:<14.3}{:<16.3}{:<16.3}360p branch = {:.0} % of the 720p encode (≤ {:.0} %: {})",
            "both viewers on 360p",
            of(&low, &|c| c.process),
            of(&low, &|c| c.main),
            of(&low, &|c| c.low),
            share * 100.0,
            TARGET_BRANCH_SHARE * 100.0,
            verdict(share <= TARGET_BRANCH_SHARE && low.len() == trials.len())
        );
    }
    println!(
        "  CPU from /proc/PID/task/*/stat of the server over each window: the 720p encode is the \
         threads named after video-encode-queue and video-pay-queue, the 360p branch those \
         named after h264-360p-queue (scaler, x264 and its threads, payloader); the process \
         column also holds the composite, audio and the fan-out to two viewers"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_that_never_switched_ranks_worst() {
        let (median, worst) = median_worst(&[Some(2.0), None, Some(3.0)]);
        assert_eq!(median, 3.0);
        assert!(worst.is_infinite());
        assert_eq!(shown(worst, "s"), "never");
    }

    #[test]
    fn page_freezes_count_the_end() {
        let page = json!({ "gaps": [[1000.0, 300.0]], "last": 2000.0 });
        assert_eq!(longest_freeze(&page, 0.0, 2100.0), 300.0);
        assert_eq!(longest_freeze(&page, 0.0, 3000.0), 1000.0);
        assert_eq!(longest_freeze(&page, 1200.0, 2100.0), 100.0);
        let sizes = json!({ "sizes": [[0.0, 1280, 720], [5000.0, 640, 360]] });
        assert_eq!(first_at_height(&sizes, 360, 1000.0), Some(5000.0));
        assert_eq!(first_at_height(&sizes, 720, 1000.0), Some(1000.0));
        assert_eq!(first_at_height(&sizes, 720, 6000.0), None);
    }
}
