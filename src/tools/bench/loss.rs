//! The loss table of `cowatch bench broadcast`: what random packet loss on the way to the
//! viewers costs them, and what the server does about it.
//!
//! A `cowatch demo` runs in a network namespace at 198.18.0.1; headless Chromium on cowatch's
//! own viewer page and a webrtc-rs probe (no RTX: the server answers its NACKs with plain
//! resends) watch from another at 198.18.0.2, joined by a veth pair ([`netns`]); nothing leaves
//! the pair. An iptables rule drops a random share of the UDP arriving at the viewers' side,
//! one level after another on the same party. Over each level's window:
//!
//! - Chromium's frames decoded per second (`getStats` `framesDecoded`);
//! - the page's freezes over 200 ms (`window.cowatch.freezes`), per minute;
//! - keyframe requests per minute of the Chromium viewer, as the server counted them (PLI/FIR
//!   and the page's own requests; the probe never asks for one);
//! - the server's NACKs received and packets resent, per minute;
//! - the share the rule really dropped, and what the probe still missed after the resends.
//!
//! Namespaces need root; [`check`] says so before anything runs.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::server::Server;
use super::{median, verdict};
use crate::tools::cdp::Browser;
use crate::tools::netns::{Link, SERVER_IP, Side};
use crate::tools::probe::{ProbeOptions, ProbeReport, probe};

/// The loss levels of the table, as probabilities of dropping a UDP packet.
pub(super) const LEVELS: [f64; 3] = [0.0, 0.01, 0.03];
/// 1 % loss: frames per second Chromium should still decode, with no freeze over 200 ms.
const TARGET_FPS_1: f64 = 29.0;
/// 3 % loss: frames per second Chromium should still decode.
const TARGET_FPS_3: f64 = 27.0;
/// 3 % loss: keyframe requests per minute per viewer, at most; each one costs every viewer a
/// keyframe's worth of bitrate.
const TARGET_KEYFRAMES_PER_MIN_3: f64 = 6.0;
/// The party's ports inside its namespace (a new namespace: they are free).
const HTTP_PORT: u16 = 8080;
const WEBRTC_PORT: u16 = 8443;
/// How long the page may take to play.
const LIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the probe may take to become a connected viewer.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The probe watches this much longer than the window, so its session is still on the server
/// when the window's per-viewer counters are read.
const PROBE_EXTRA: Duration = Duration::from_secs(3);

/// Runs before the page's scripts: remembers the page's peer connections for getStats.
const HOOK: &str = r#"(() => {
  const add = RTCPeerConnection.prototype.addTransceiver;
  window.cowatchBench = { pcs: [] };
  RTCPeerConnection.prototype.addTransceiver = function (kind, init) {
    if (!window.cowatchBench.pcs.includes(this)) window.cowatchBench.pcs.push(this);
    return add.call(this, kind, init);
  };
})()"#;

/// The page's account and the browser's inbound video statistics, read in one evaluation.
const PAGE: &str = r#"(async () => {
  const c = window.cowatch || {};
  const page = { state: c.state, freezes: c.freezes || 0, reconnects: c.reconnects || 0 };
  const pcs = (window.cowatchBench && window.cowatchBench.pcs) || [];
  const pc = pcs[pcs.length - 1];
  let video = null;
  if (pc) (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'video') video = {
      framesDecoded: s.framesDecoded || 0, nackCount: s.nackCount || 0,
      pliCount: s.pliCount || 0,
      retransmittedPacketsReceived: s.retransmittedPacketsReceived || 0,
    };
  });
  return { page, video, at: performance.now() };
})()"#;

/// Fails with a clear message when the loss table cannot run here.
pub(super) fn check() -> anyhow::Result<()> {
    // SAFETY: geteuid(2) only reads this process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the loss table needs root: it builds network namespaces (ip netns) to drop packets \
             without touching the machine's own network; run as root, or pass --loss-seconds 0 \
             to leave it out"
        );
    }
    let ip = Command::new("ip").args(["netns", "list"]).output();
    if !ip.as_ref().is_ok_and(|o| o.status.success()) {
        bail!(
            "the loss table needs `ip netns` (apt-get install iproute2 iptables); `ip netns \
             list` failed: {}",
            match ip {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                Err(e) => e.to_string(),
            }
        );
    }
    Ok(())
}

/// One level of one run.
pub(super) struct Level {
    /// Drop probability asked of the rule.
    p: f64,
    /// Share of the UDP arriving at the viewers the rule really dropped.
    dropped: f64,
    /// Chromium's frames decoded per second over the window.
    fps: f64,
    /// Page freezes over 200 ms during the window.
    freezes: u64,
    /// Page reconnects during the window.
    reconnects: u64,
    /// Keyframe requests the server counted for the Chromium viewer.
    keyframe_requests: u64,
    /// Server-wide NACKs received and packets resent.
    nacks: u64,
    resent: u64,
    /// Retransmissions Chromium counted.
    chromium_rtx: u64,
    /// The probe's report: what it still missed after the resends.
    probe: ProbeReport,
    /// The window's length, s.
    seconds: f64,
}

impl Level {
    fn per_minute(&self, count: u64) -> f64 {
        count as f64 * 60.0 / self.seconds
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{:.0} % loss ({:.2} % dropped): Chromium {:.1} fps, {} freezes, {} reconnects, {} \
             keyframe requests, {} retransmissions; server {} NACKs, {} resent; probe {} video \
             packets, {} lost after repair, {} keyframes; over {:.1} s",
            self.p * 100.0,
            self.dropped * 100.0,
            self.fps,
            self.freezes,
            self.reconnects,
            self.keyframe_requests,
            self.chromium_rtx,
            self.nacks,
            self.resent,
            self.probe.video_packets,
            self.probe.packets_lost,
            self.probe.keyframes,
            self.seconds
        )
    }
}

/// A party in its namespace with Chromium watching from the other side.
struct Party {
    // Field order is drop order: the browser and the server go before their namespaces.
    browser: Browser,
    server: Server,
    link: Link,
    http: SocketAddr,
}

impl Party {
    fn start(dir: &Path) -> anyhow::Result<Party> {
        let link = Link::create()
            .context("cannot create the network namespaces (needs root, iproute2, iptables)")?;
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
            .arg("--data-dir")
            .arg(dir.join("loss-data"))
            .env("RUST_LOG", "warn");
        let server = Server::start(&mut command, &dir.join("loss-server.stderr"))
            .context("the demo server in its namespace")?;
        let mut browser = link
            .run(Side::Viewer, Browser::launch)?
            .context("cannot start chromium inside the viewer namespace")?;
        browser.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": HOOK }),
        )?;
        browser.navigate(&format!("http://{http}/"))?;
        let mut party = Party {
            browser,
            server,
            link,
            http,
        };
        let deadline = Instant::now() + LIVE_TIMEOUT;
        loop {
            let page = party.browser.eval(PAGE)?;
            if page["page"]["state"] == "live" && number(&page, "/video/framesDecoded") > 30.0 {
                return Ok(party);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the viewer page did not play within {} s: {page}; server: {}",
                    LIVE_TIMEOUT.as_secs(),
                    party.server.process.last_words()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// GETs `path` from inside the viewer namespace and returns the body.
    fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut stream = self.link.connect(Side::Viewer, self.http)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http)?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .with_context(|| format!("reading {path}"))?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.split_whitespace().nth(1) == Some("200") => {
                Ok(body.to_owned())
            }
            _ => bail!("GET {path}: {response}"),
        }
    }

    /// Every viewer session `/healthz` lists.
    fn sessions(&self) -> anyhow::Result<Vec<Value>> {
        let health: Value =
            serde_json::from_str(&self.get("/healthz")?).context("/healthz is not JSON")?;
        health
            .pointer("/sessions/viewers")
            .and_then(Value::as_array)
            .cloned()
            .with_context(|| format!("/healthz lists no sessions: {health}"))
    }

    /// `cowatch_nacks_received_total` and `cowatch_packets_resent_total`.
    fn repairs(&self) -> anyhow::Result<(u64, u64)> {
        let text = self.get("/metrics")?;
        let read = |name: &str| {
            let prefix = format!("cowatch_{name} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .with_context(|| format!("/metrics has no cowatch_{name}"))
        };
        Ok((read("nacks_received_total")?, read("packets_resent_total")?))
    }

    /// A probe watching from inside the viewer namespace, on a thread of its own.
    fn start_probe(
        &self,
        duration: Duration,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<ProbeReport>>> {
        let options = ProbeOptions {
            url: format!("http://{}/whep", self.http),
            duration,
            codec: None,
        };
        // A thread spawned by the namespace's thread lives in the namespace too.
        self.link.run(Side::Viewer, move || {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start an async runtime")?
                    .block_on(probe(&options))
            })
        })
    }

    /// One level: sets the drop rule, adds a probe, measures for `window`.
    fn level(&mut self, p: f64, window: Duration) -> anyhow::Result<Level> {
        self.link.set_loss(Side::Viewer, p)?;
        let sessions = self.sessions()?;
        let [chromium] = sessions.as_slice() else {
            bail!("chromium should be the only viewer now: {sessions:?}");
        };
        let chromium_id = chromium["id"].clone();
        let probe = self.start_probe(window + PROBE_EXTRA)?;
        let deadline = Instant::now() + PROBE_CONNECT_TIMEOUT;
        while !self
            .sessions()?
            .iter()
            .any(|s| s["id"] != chromium_id && s["connected"] == true)
        {
            if Instant::now() >= deadline {
                bail!(
                    "the probe did not connect within {} s",
                    PROBE_CONNECT_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let of_chromium = |sessions: &[Value]| {
            sessions
                .iter()
                .find(|s| s["id"] == chromium_id)
                .and_then(|s| s["keyframe_requests"].as_u64())
                .context("chromium's session is gone: the page reconnected")
        };
        let keyframes_before = of_chromium(&self.sessions()?)?;
        let (nacks_before, resent_before) = self.repairs()?;
        let before = self.browser.eval(PAGE)?;
        std::thread::sleep(window);
        let after = self.browser.eval(PAGE)?;
        let (nacks_after, resent_after) = self.repairs()?;
        let keyframes_after = of_chromium(&self.sessions()?)?;
        let counters = self.link.counters(Side::Viewer)?;
        let probe = probe
            .join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
            .context("the probe")?;

        let delta = |pointer: &str| number(&after, pointer) - number(&before, pointer);
        let seconds = delta("/at") / 1000.0;
        Ok(Level {
            p,
            dropped: counters.udp_dropped as f64 / counters.udp_in.max(1) as f64,
            fps: delta("/video/framesDecoded") / seconds,
            freezes: delta("/page/freezes") as u64,
            reconnects: delta("/page/reconnects") as u64,
            keyframe_requests: keyframes_after.saturating_sub(keyframes_before),
            nacks: nacks_after.saturating_sub(nacks_before),
            resent: resent_after.saturating_sub(resent_before),
            chromium_rtx: delta("/video/retransmittedPacketsReceived") as u64,
            probe,
            seconds,
        })
    }
}

/// A number from a JSON reading, 0 when absent.
fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// One run of the table: a fresh party and Chromium, every level in [`LEVELS`] in turn.
pub(super) fn measure(dir: &Path, window: Duration) -> anyhow::Result<Vec<Level>> {
    let mut party = Party::start(dir)?;
    let mut levels = Vec::with_capacity(LEVELS.len());
    for p in LEVELS {
        let level = party
            .level(p, window)
            .with_context(|| format!("at {:.0} % loss", p * 100.0))?;
        println!("  loss {}", level.describe());
        levels.push(level);
    }
    party
        .server
        .process
        .stop("the demo server in its namespace")?;
    Ok(levels)
}

/// Prints the medians over runs and the target checks.
pub(super) fn report(runs: &[Vec<Level>], window: Duration) {
    println!(
        "loss table: Chromium on the viewer page and a webrtc-rs probe, random UDP loss towards \
         the viewers on a veth pair, {} s per level, medians over {} runs",
        window.as_secs(),
        runs.len()
    );
    println!(
        "{:<6}{:<9}{:<7}{:<13}{:<15}{:<11}{:<13}{:<12}target",
        "loss",
        "dropped",
        "fps",
        "freezes/min",
        "keyframes/min",
        "nacks/min",
        "resends/min",
        "probe_lost"
    );
    for (i, &p) in LEVELS.iter().enumerate() {
        let levels: Vec<&Level> = runs.iter().filter_map(|r| r.get(i)).collect();
        let of = |f: &dyn Fn(&Level) -> f64| median(levels.iter().map(|l| f(l)).collect());
        let fps = of(&|l| l.fps);
        let freezes = of(&|l| l.per_minute(l.freezes));
        let keyframes = of(&|l| l.per_minute(l.keyframe_requests));
        // A freeze or a reconnect is a yes/no promise: the worst run counts for the verdict.
        let worst_freezes = levels.iter().map(|l| l.freezes).max().unwrap_or(0);
        let reconnects: u64 = levels.iter().map(|l| l.reconnects).sum();
        let target = if p == 0.01 {
            format!(
                "≥ {TARGET_FPS_1:.0} fps, no freeze > 200 ms: {}",
                verdict(fps >= TARGET_FPS_1 && worst_freezes == 0 && reconnects == 0)
            )
        } else if p == 0.03 {
            format!(
                "≥ {TARGET_FPS_3:.0} fps, ≤ {TARGET_KEYFRAMES_PER_MIN_3:.0} keyframe requests/min/viewer: {}",
                verdict(
                    fps >= TARGET_FPS_3
                        && keyframes <= TARGET_KEYFRAMES_PER_MIN_3
                        && reconnects == 0
                )
            )
        } else {
            "-".to_owned()
        };
        println!(
            "{:<6}{:<9}{:<7.1}{:<13.1}{:<15.1}{:<11.0}{:<13.0}{:<12}{target}",
            format!("{:.0} %", p * 100.0),
            format!("{:.2} %", of(&|l| l.dropped * 100.0)),
            fps,
            freezes,
            keyframes,
            of(&|l| l.per_minute(l.nacks)),
            of(&|l| l.per_minute(l.resent)),
            format!(
                "{:.0} of {:.0}",
                of(&|l| l.probe.packets_lost as f64),
                of(&|l| l.probe.video_packets as f64)
            ),
        );
    }
    println!(
        "  fps: Chromium's framesDecoded over the window; freezes: the page's gaps over 200 ms; \
         keyframes/min: requests the server counted for the Chromium viewer (PLI/FIR and the \
         page's own); nacks and resends: the server's, both viewers; probe_lost: video packets \
         the probe still missed after the resends, of those it received; a freeze or reconnect \
         in any run fails the 1 % target"
    );
}
