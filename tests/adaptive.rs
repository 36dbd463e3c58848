//! Adaptive quality on a weak link: viewers whose link drops to 1 Mbit/s move to the 360p
//! rendition within seconds and keep playing, come back to 720p once the link recovers, and
//! the 360p encoder runs only while someone receives it.
//!
//! The party runs in a network namespace at 198.18.0.1: the demo's moving movie and a solid
//! green webcam. Headless Chromium on cowatch's own page watches from another namespace, a
//! webrtc-rs probe from a third, each over a veth pair of its own (`tools::netns`), so each
//! has its own link, as two viewers at home do. A tc token bucket on the server's end of each
//! pair caps what reaches that viewer (this kernel has tbf; it has no netem): 1 Mbit/s each,
//! not 1 Mbit/s shared, which could not carry two 360p streams. What each viewer shows is read on
//! its side: Chromium's presented frames (`requestVideoFrameCallback`: the size and time of
//! each), the probe's whole, decodable frames and the sizes their keyframes announce. The
//! server's account (`/healthz`: each viewer's rendition, TWCC estimate and switches, each
//! rendition running or not) is read from inside the server's namespace, so polling it adds
//! nothing to the capped link.
//!
//! Every wait is a poll with a deadline that keeps measuring past its target, so a miss says by
//! how much. A failure prints the server's view over time (estimates, renditions, switches),
//! both viewers' timelines, the viewer sides' UDP counters and the token buckets' statistics.
//!
//! Needs root, iproute2, iptables, tc and /usr/bin/chromium; fails, never skips, without them.

mod common;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::WEBCAM_GREEN;
use common::netns_party::NsParty;
use cowatch::pipeline::layout::{Layout, Rect};
use cowatch::tools::cdp::Browser;
use cowatch::tools::framelog::{
    FRAME_LOG, Moment, READ_PAGE, epoch_ms, first_at_height, longest_freeze,
};
use cowatch::tools::netns::Side;
use cowatch::tools::probe::{ProbeHandle, ProbeOptions, ProbeReport, VideoTimeline, probe_with};
use serde_json::{Value, json};

/// The weak link: what reaches each viewer, in kbit/s.
const CAP_KBIT: u32 = 1000;
/// Both viewers show 360p this soon after the link drops.
const STEP_DOWN_TARGET: Duration = Duration::from_secs(5);
/// ... and 720p this soon after it recovers.
const STEP_UP_TARGET: Duration = Duration::from_secs(20);
/// No gap between frames longer than this once a viewer shows 360p.
const FREEZE_TARGET_MS: f64 = 1000.0;
/// How long the viewers are watched at 360p on the capped link.
const AT_LOW_WINDOW: Duration = Duration::from_secs(6);
/// `--rendition-linger`: how long an unused rendition keeps encoding.
const LINGER: Duration = Duration::from_secs(2);
/// How much longer than the linger the 360p encoder may take to report itself stopped.
const STOP_SLACK: Duration = Duration::from_secs(5);
/// Waits keep measuring this long past their target, so a miss is measured too.
const OVERTIME: Duration = Duration::from_secs(15);
/// How often the viewers and the server are read.
const POLL: Duration = Duration::from_millis(250);
/// The renditions, as labels and picture sizes.
const HIGH: Rung = Rung {
    label: "720p",
    width: 1280,
    height: 720,
};
const LOW: Rung = Rung {
    label: "360p",
    width: 640,
    height: 360,
};

#[derive(Debug, Clone, Copy)]
struct Rung {
    label: &'static str,
    width: u32,
    height: u32,
}

/// The page's size log in seconds after `zero` (epoch ms), for messages.
fn page_sizes(page: &Value, zero: f64) -> String {
    let sizes: Vec<String> = page["sizes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{}x{} at {:+.1} s",
                s[1],
                s[2],
                (s[0].as_f64().unwrap_or(0.0) - zero) / 1000.0
            )
        })
        .collect();
    sizes.join(", ")
}

/// One rendition as `/healthz` tells it: the pipeline's branch and the fan-out's view.
#[derive(Debug, PartialEq)]
struct Branch {
    /// The pipeline's state of the H.264 rendition of that name (`running`, `idle`), `None`
    /// when the pipeline lists no such rendition.
    pipeline: Option<String>,
    /// The fan-out says its encoder runs.
    active: Option<bool>,
    /// Viewers the fan-out sends it to.
    viewers: Option<u64>,
}

impl Branch {
    fn of(health: &Value, label: &str) -> Self {
        let h264 = |r: &&Value| r["name"] == label && r["codec"] == "H264";
        let pipeline = health["renditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(h264);
        let fanout = health["sessions"]["renditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(h264);
        Self {
            pipeline: pipeline
                .and_then(|r| r["state"].as_str())
                .map(str::to_owned),
            active: fanout.and_then(|r| r["active"].as_bool()),
            viewers: fanout.and_then(|r| r["viewers"].as_u64()),
        }
    }

    fn running(&self) -> bool {
        self.pipeline.as_deref() == Some("running") && self.active == Some(true)
    }

    fn stopped(&self) -> bool {
        self.pipeline.is_some()
            && self.pipeline.as_deref() != Some("running")
            && self.active == Some(false)
    }
}

/// Where each viewer watches from: Chromium on the first viewer side, the probe on the second.
const CHROMIUM_SIDE: Side = Side::Viewer;
const PROBE_SIDE: Side = Side::SecondViewer;

/// The party, its two viewers, and everything seen so far.
struct Watch {
    // Field order is drop order: the browser before the party and its namespaces.
    browser: Browser,
    party: NsParty,
    probe: ProbeHandle,
    probe_thread: Option<JoinHandle<anyhow::Result<ProbeReport>>>,
    chromium_id: String,
    probe_id: String,
    /// The server's view over time, one line a reading (at most one a second unless something
    /// changed), seconds after `start`.
    trace: Vec<String>,
    last_traced: Option<(f64, String)>,
    /// The token buckets' packets passed and dropped at the last trace line, per viewer side.
    link_counts: std::collections::HashMap<Side, (u64, u64)>,
    start: Moment,
    /// Steps taken, for the summary and failure messages.
    steps: Vec<String>,
}

/// One reading of everything.
struct Reading {
    health: Value,
    page: Value,
    probe: VideoTimeline,
}

impl Watch {
    fn health(&self) -> Value {
        let body = self.party.peek("/healthz");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| json!({ "unreadable": format!("{e}: {body}") }))
    }

    fn session<'a>(health: &'a Value, id: &str) -> Option<&'a Value> {
        health["sessions"]["viewers"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == id)
    }

    fn page(&mut self) -> Value {
        self.browser
            .eval(READ_PAGE)
            .unwrap_or_else(|e| json!({ "unreadable": format!("{e:#}") }))
    }

    /// Reads the server, the page and the probe, and adds a line to the trace.
    fn read(&mut self) -> Reading {
        let reading = Reading {
            health: self.health(),
            page: self.page(),
            probe: self.probe.video.timeline(),
        };
        self.trace(&reading);
        reading
    }

    fn trace(&mut self, r: &Reading) {
        let at = self.start.at.elapsed().as_secs_f64();
        let shown = |size: Option<(u64, u64)>| size.map_or("-".into(), |(w, h)| format!("{w}x{h}"));
        let page_size = r.page["videoHeight"]
            .as_u64()
            .map(|h| (r.page["videoWidth"].as_u64().unwrap_or(0), h));
        let probe_size = r
            .probe
            .size()
            .map(|s| (u64::from(s.width), u64::from(s.height)));
        let low = Branch::of(&r.health, LOW.label);
        let branch = format!(
            "360p branch {}, fan-out active {} for {} viewer(s)",
            low.pipeline.as_deref().unwrap_or("absent"),
            low.active.map_or("?".into(), |a| a.to_string()),
            low.viewers.map_or("?".into(), |v| v.to_string()),
        );
        let rendition = |id: &str| {
            Self::session(&r.health, id).map_or("gone".to_owned(), |s| {
                s["rendition"].as_str().unwrap_or("?").to_owned()
            })
        };
        // A line a second, and one whenever a rendition, a picture size or the branch changes.
        let coarse = format!(
            "{} {} {} {} {branch}",
            rendition(&self.chromium_id),
            shown(page_size),
            rendition(&self.probe_id),
            shown(probe_size)
        );
        if self
            .last_traced
            .as_ref()
            .is_some_and(|(t, c)| at - t < 1.0 && *c == coarse)
        {
            return;
        }
        self.last_traced = Some((at, coarse));
        let mut lines = vec![format!("{at:6.1} s  {branch}")];
        for (who, id, side, size) in [
            (
                "chromium",
                self.chromium_id.clone(),
                CHROMIUM_SIDE,
                page_size,
            ),
            ("probe", self.probe_id.clone(), PROBE_SIDE, probe_size),
        ] {
            let server = match Self::session(&r.health, &id) {
                Some(s) => format!(
                    "server: {} est {} kbit/s, {} switches, loss {:.2}, rtt {} ms; sent {} \
                     video pkts, resent {}, {} NACKs, {} keyframe requests",
                    s["rendition"].as_str().unwrap_or("?"),
                    s["estimate_kbps"],
                    s["switches"],
                    s["loss"].as_f64().unwrap_or(f64::NAN),
                    s["rtt_ms"]
                        .as_f64()
                        .map_or("-".into(), |ms| format!("{ms:.0}")),
                    s["video_packets"],
                    s["packets_resent"],
                    s["nacks_received"],
                    s["keyframe_requests"],
                ),
                None => "server: no session".to_owned(),
            };
            let link = self.link_delta(side);
            lines.push(format!(
                "          {who:<8} shows {}; {server}; link {link}",
                shown(size)
            ));
        }
        self.trace.push(lines.join("\n  "));
    }

    /// Packets the token bucket towards `side` passed and dropped since the last call.
    fn link_delta(&mut self, side: Side) -> String {
        let stats = self.party.link.qdisc_stats(side).unwrap_or_default();
        // "Sent 1401609 bytes 2044 pkt (dropped 893, ..."
        let number_after = |word: &str| {
            let words: Vec<&str> = stats.split_whitespace().collect();
            words
                .iter()
                .position(|w| *w == word)
                .and_then(|i| words.get(i + 1))
                .and_then(|w| w.trim_end_matches(',').parse::<u64>().ok())
        };
        let passed = stats
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[1] == "pkt")
            .and_then(|w| w[0].parse::<u64>().ok());
        let (Some(passed), Some(dropped)) = (passed, number_after("(dropped")) else {
            return "(no statistics)".to_owned();
        };
        let last = self.link_counts.insert(side, (passed, dropped));
        // The counts start over when a cap is set or lifted (a new qdisc).
        let (p0, d0) = last
            .filter(|&(p, d)| p <= passed && d <= dropped)
            .unwrap_or((0, 0));
        format!("+{} pkts passed, +{} dropped", passed - p0, dropped - d0)
    }

    /// Polls until both viewers show `rung` and the server says both receive it, measuring up
    /// to `target` plus [`OVERTIME`] after `since`. Returns when each viewer first showed it, in
    /// seconds after `since`.
    fn wait_for(&mut self, rung: Rung, since: Moment, target: Duration) -> Arrival {
        let probe_since = self.probe.video.ms_at(since.at).unwrap_or(0.0);
        loop {
            let r = self.read();
            let chromium = first_at_height(&r.page, rung.height, since.epoch_ms)
                .map(|t| (t - since.epoch_ms) / 1000.0);
            let probe = r
                .probe
                .first_at_height(rung.height, probe_since)
                .map(|t| (t - probe_since) / 1000.0);
            let server = [&self.chromium_id, &self.probe_id].iter().all(|id| {
                Self::session(&r.health, id).is_some_and(|s| s["rendition"] == rung.label)
            });
            let arrival = Arrival {
                chromium,
                probe,
                server,
            };
            if arrival.complete() || since.at.elapsed() > target + OVERTIME {
                return arrival;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Polls until `done` holds for `/healthz`, at most `limit` after `since`; returns how long
    /// it took, or `None`.
    fn wait_health(
        &mut self,
        since: Instant,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Option<f64> {
        loop {
            let r = self.read();
            if done(&r.health) {
                return Some(since.elapsed().as_secs_f64());
            }
            if since.elapsed() > limit {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Reads everything every [`POLL`] for `window`, so the trace covers it.
    fn watch_for(&mut self, window: Duration) -> Reading {
        let end = Instant::now() + window;
        loop {
            let r = self.read();
            if Instant::now() >= end {
                return r;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Caps (or with `None` uncaps) both viewers' links.
    fn set_rate(&self, kbit: Option<u32>) {
        for side in [CHROMIUM_SIDE, PROBE_SIDE] {
            self.party.link.set_rate(side, kbit).unwrap();
        }
    }

    /// What the token buckets towards the viewers passed and dropped so far, one line each.
    fn buckets(&self) -> String {
        [("chromium", CHROMIUM_SIDE), ("probe", PROBE_SIDE)]
            .map(|(who, side)| match self.party.link.qdisc_stats(side) {
                Ok(stats) => format!(
                    "{who}: {}",
                    stats.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
                Err(e) => format!("{who}: (cannot read: {e:#})"),
            })
            .join("\n  ")
    }

    /// Everything a failure needs to say whose it is.
    fn diagnose(&mut self) -> String {
        let page = self.page();
        let probe = self.probe.video.timeline();
        let link = &self.party.link;
        let run = |side: Side, program: &str, args: &[&str]| {
            link.command(side, program)
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|e| format!("(cannot run {program}: {e})"))
        };
        let udp = [("chromium", CHROMIUM_SIDE), ("probe", PROBE_SIDE)]
            .map(|(who, side)| {
                let snmp = run(side, "cat", &["/proc/net/snmp"]);
                let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
                format!("{who}:\n    {}", lines.join("\n    "))
            })
            .join("\n  ");
        let qdisc = self.buckets();
        let output = self.party.output();
        let lines: Vec<&str> = output.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n  ");
        let log = self.browser.log();
        let log_tail = log[log.len().saturating_sub(30)..].join("\n  ");
        format!(
            "steps:\n  {}\nserver's view over time (s after the probe joined):\n  {}\n\
             chromium page: sizes [{}]; {}\nprobe: {}\nviewer sides' /proc/net/snmp:\n  {udp}\n\
             tc -s qdisc (server side, towards each viewer):\n  {qdisc}\n/healthz now: {}\n\
             page log:\n  {log_tail}\nserver output (last lines):\n  {tail}",
            self.steps.join("\n  "),
            self.trace.join("\n  "),
            page_sizes(&page, self.start.epoch_ms),
            json!({
                "frames": page["frames"], "gaps_over_100ms": page["gaps"].as_array().map(Vec::len),
                "state": page["state"], "reconnects": page["reconnects"],
                "player_freezes": page["freezes"], "player_longest_freeze_ms": page["longestFreezeMs"],
                "video": [page["videoWidth"], page["videoHeight"]], "error": page["error"],
            }),
            probe.describe(),
            self.health(),
        )
    }

    fn fail(&mut self, what: &str) -> ! {
        let diagnosis = self.diagnose();
        panic!("{what}\n\n{diagnosis}");
    }
}

/// When each viewer reached a rendition, in seconds after the link changed.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    chromium: Option<f64>,
    probe: Option<f64>,
    /// `/healthz` says both sessions receive it.
    server: bool,
}

impl Arrival {
    fn complete(&self) -> bool {
        self.chromium.is_some() && self.probe.is_some() && self.server
    }

    /// The later of the two viewers.
    fn slowest(&self) -> Option<f64> {
        Some(self.chromium?.max(self.probe?))
    }

    fn describe(&self) -> String {
        let s = |t: Option<f64>| t.map_or("never".into(), |t| format!("{t:.1} s"));
        format!(
            "chromium {}, probe {}, /healthz says both: {}",
            s(self.chromium),
            s(self.probe),
            self.server
        )
    }
}

/// The mean colour of the `size`x`size` block around each point of the page's current frame,
/// when it is `rung`'s size; `Null` otherwise.
fn sample_js(rung: Rung, points: &[(&str, (i32, i32))], size: i32) -> String {
    let points: Vec<String> = points
        .iter()
        .map(|(name, (x, y))| format!("{name}: mean({x}, {y})"))
        .collect();
    format!(
        r#"(() => {{
  const v = document.getElementById('video');
  if (v.videoWidth !== {w} || v.videoHeight !== {h}) return null;
  const c = document.createElement('canvas');
  c.width = {w}; c.height = {h};
  const ctx = c.getContext('2d', {{ willReadFrequently: true }});
  ctx.drawImage(v, 0, 0, {w}, {h});
  const mean = (x, y) => {{
    const d = ctx.getImageData(x - {half}, y - {half}, {size}, {size}).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) {{ sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }}
    return sum.map((s) => Math.round(s / (d.length / 4)));
  }};
  return {{ {points} }};
}})()"#,
        w = rung.width,
        h = rung.height,
        half = size / 2,
        points = points.join(", ")
    )
}

fn close(actual: &Value, expected: [u8; 3], tolerance: i64) -> bool {
    actual.as_array().is_some_and(|a| {
        a.len() == 3
            && a.iter().zip(expected).all(|(a, e)| {
                a.as_i64()
                    .is_some_and(|a| (a - i64::from(e)).abs() <= tolerance)
            })
    })
}

/// A colour expected (or ruled out) at a point of the picture.
struct Expect {
    name: &'static str,
    at: (i32, i32),
    colour: [u8; 3],
    /// Per channel.
    tolerance: i64,
    /// The point has that colour (or, when false, clearly another).
    near: bool,
}

impl Expect {
    fn near(name: &'static str, at: (i32, i32), colour: [u8; 3], tolerance: i64) -> Self {
        Self {
            name,
            at,
            colour,
            tolerance,
            near: true,
        }
    }

    fn far(name: &'static str, at: (i32, i32), colour: [u8; 3], tolerance: i64) -> Self {
        Self {
            near: false,
            ..Self::near(name, at, colour, tolerance)
        }
    }
}

/// A point `(dx, dy)` pixels into `rect` from its top-left corner (negative: from the
/// bottom-right), in the canvas scaled by `scale`.
fn point(rect: Rect, dx: i32, dy: i32, scale: f64) -> (i32, i32) {
    let edge = |start: i32, len: u32, d: i32| {
        let start = f64::from(start) * scale;
        let end = start + f64::from(len) * scale;
        (if d >= 0 {
            start + f64::from(d)
        } else {
            end + f64::from(d)
        })
        .round() as i32
    };
    (edge(rect.x, rect.width, dx), edge(rect.y, rect.height, dy))
}

/// The centre of `rect` in the canvas scaled by `scale`.
fn centre(rect: Rect, scale: f64) -> (i32, i32) {
    let c =
        |start: i32, len: u32| ((f64::from(start) + f64::from(len) / 2.0) * scale).round() as i32;
    (c(rect.x, rect.width), c(rect.y, rect.height))
}

/// Problems with the frame Chromium shows at 360p: the webcam's green fills the webcam box
/// where the side-panel layout puts it, scaled to 640x360 (its centre and both inner corners),
/// and stops at the box's scaled edges: the movie beside it is not green, the chat panel under
/// it has the panel's colour. A cropped picture would move the box, or out of the frame.
fn pixel_problems(browser: &mut Browser) -> (Vec<String>, Value) {
    let layout = Layout::builtin("side-panel").expect("the side-panel layout is built in");
    let scale = f64::from(LOW.height) / f64::from(layout.height);
    let cam = layout.webcam_inner();
    let chat = layout.chat.expect("the side-panel layout has a chat area");
    let bg = layout.chat_background;
    let bg = [bg.r, bg.g, bg.b];
    let green = WEBCAM_GREEN;
    let (left, bottom) = (point(cam, 0, 0, scale).0, point(cam, -1, -1, scale).1);
    let (middle_x, middle_y) = centre(cam, scale);
    let expected = [
        Expect::near("webcam", (middle_x, middle_y), green, 16),
        Expect::near("webcam_top_left", point(cam, 8, 8, scale), green, 20),
        Expect::near("webcam_bottom_right", point(cam, -8, -8, scale), green, 20),
        Expect::far("left_of_webcam", (left - 10, middle_y), green, 20),
        Expect::near("under_webcam", (middle_x, bottom + 10), bg, 16),
        Expect::near("chat", centre(chat, scale), bg, 16),
    ];
    let points: Vec<(&str, (i32, i32))> = expected.iter().map(|e| (e.name, e.at)).collect();
    let sample = browser
        .eval(&sample_js(LOW, &points, 6))
        .unwrap_or_else(|e| json!(format!("(cannot sample: {e:#})")));
    let mut problems = Vec::new();
    if !sample.is_object() {
        problems.push(format!(
            "pixels: no 640x360 frame to sample in Chromium ({sample})"
        ));
        return (problems, sample);
    }
    for e in expected {
        if close(&sample[e.name], e.colour, e.tolerance) != e.near {
            problems.push(format!(
                "pixels at 360p: {} at {:?} is {}, wanted {}{:?} ± {}",
                e.name,
                e.at,
                sample[e.name],
                if e.near { "" } else { "anything but " },
                e.colour,
                e.tolerance
            ));
        }
    }
    (problems, sample)
}

/// A probe watching from the viewer namespace on a thread of its own, until it is told to
/// leave.
fn start_probe(party: &NsParty, handle: &ProbeHandle) -> JoinHandle<anyhow::Result<ProbeReport>> {
    let options = ProbeOptions {
        url: format!("{}whep", party.url()),
        duration: Duration::from_secs(600),
        codec: None,
    };
    let handle = handle.clone();
    party
        .link
        .run(PROBE_SIDE, move || {
            // A thread spawned by the namespace's thread lives in the namespace too.
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| runtime.block_on(probe_with(&options, &handle)))
            })
        })
        .expect("cannot start the probe inside its viewer namespace")
}

#[test]
fn viewers_on_a_weak_link_step_down_to_360p_keep_playing_and_step_back_up() {
    let webcam = common::solid_webcam(WEBCAM_GREEN);
    let linger = LINGER.as_secs().to_string();
    // The demo's own movie (scrolling colour bars and a clock) makes a real bitrate: a still
    // picture encodes to a few kbit/s and would never fill the link.
    let mut party = NsParty::start(&["--webcam", &webcam, "--rendition-linger", &linger]);

    party
        .link
        .add_second_viewer()
        .expect("cannot give the probe a link of its own");

    // Chromium on the viewer page, playing.
    let mut browser = party
        .link
        .run(CHROMIUM_SIDE, Browser::launch)
        .unwrap()
        .expect("cannot start chromium inside the viewer namespace");
    browser
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": FRAME_LOG }),
        )
        .unwrap();
    browser.navigate(&party.url()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = browser.eval(READ_PAGE).unwrap();
        if page["state"] == "live" && page["frames"].as_u64().unwrap_or(0) > 30 {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "the viewer page did not play within 30 s: {page}\npage log:\n  {}\nserver:\n{}",
                browser.log().join("\n  "),
                party.output()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let health: Value = serde_json::from_str(&party.peek("/healthz")).unwrap();
    let viewers = health["sessions"]["viewers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(viewers.len(), 1, "only chromium watches yet: {viewers:?}");
    let chromium_id = viewers[0]["id"].as_str().unwrap().to_owned();

    // The probe beside it, showing frames.
    let probe = ProbeHandle::default();
    let probe_thread = start_probe(&party, &probe);
    let mut watch = Watch {
        browser,
        party,
        probe,
        probe_thread: Some(probe_thread),
        chromium_id,
        probe_id: String::new(),
        trace: Vec::new(),
        last_traced: None,
        link_counts: std::collections::HashMap::new(),
        start: Moment::now(),
        steps: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = watch.health();
        let probe_id = health["sessions"]["viewers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["connected"] == true && s["id"] != watch.chromium_id.as_str())
            .find_map(|s| s["id"].as_str());
        if let Some(id) = probe_id
            && watch.probe.video.timeline().frames > 30
        {
            watch.probe_id = id.to_owned();
            break;
        }
        if Instant::now() >= deadline {
            watch.fail("the probe did not join and show frames within 15 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    watch.start = Moment::now();

    // Before: both at 720p, the 360p encoder idle.
    let r = watch.read();
    let low = Branch::of(&r.health, LOW.label);
    if low.pipeline.is_none() || low.active.is_none() {
        watch.fail(&format!(
            "the party has no H.264 360p rendition: /healthz renditions {} and sessions.renditions \
             {} list none named 360p (the ladder, pipelines/ladder.toml)",
            r.health["renditions"], r.health["sessions"]["renditions"]
        ));
    }
    let mut problems = Vec::new();
    if low.running() {
        problems.push(format!(
            "before any viewer needed it, the 360p branch runs: {low:?}"
        ));
    }
    let on_high = |r: &Reading, watch: &Watch| {
        r.page["videoHeight"] == HIGH.height
            && r.probe.size().is_some_and(|s| s.height == HIGH.height)
            && [&watch.chromium_id, &watch.probe_id].iter().all(|id| {
                Watch::session(&r.health, id).is_some_and(|s| s["rendition"] == HIGH.label)
            })
    };
    if !on_high(&r, &watch) {
        watch.fail("on the open link the viewers should both be at 720p");
    }

    // Step down: the link drops to 1 Mbit/s.
    watch.set_rate(Some(CAP_KBIT));
    let cap = Moment::now();
    watch.steps.push(format!(
        "{:.1} s: link capped to {CAP_KBIT} kbit/s",
        (cap.epoch_ms - watch.start.epoch_ms) / 1000.0
    ));
    let down = watch.wait_for(LOW, cap, STEP_DOWN_TARGET);
    watch.steps.push(format!("step down: {}", down.describe()));
    if !down.complete() {
        watch.fail(&format!(
            "the viewers did not both reach 360p within {} s of the cap: {}",
            (STEP_DOWN_TARGET + OVERTIME).as_secs(),
            down.describe()
        ));
    }
    if down.slowest().unwrap() > STEP_DOWN_TARGET.as_secs_f64() {
        problems.push(format!(
            "step down took {}, target {} s",
            down.describe(),
            STEP_DOWN_TARGET.as_secs()
        ));
    }

    // At 360p on the capped link: playing, no freeze over 1 s after each one's switch, the
    // branch running for both, the picture scaled.
    let r = watch.watch_for(AT_LOW_WINDOW);
    let now = epoch_ms();
    let page_switch = cap.epoch_ms + down.chromium.unwrap() * 1000.0;
    let page_freeze = longest_freeze(&r.page, page_switch, now);
    let probe_since = watch.probe.video.ms_at(cap.at).unwrap_or(0.0);
    let probe_switch = probe_since + down.probe.unwrap() * 1000.0;
    let probe_freeze = r.probe.longest_freeze(probe_switch, r.probe.now_ms);
    watch.steps.push(format!(
        "at 360p for {} s: longest freeze after the switch chromium {page_freeze:.0} ms, probe \
         {probe_freeze:.0} ms",
        AT_LOW_WINDOW.as_secs()
    ));
    for (who, freeze) in [("chromium", page_freeze), ("probe", probe_freeze)] {
        if freeze > FREEZE_TARGET_MS {
            problems.push(format!(
                "{who}: a freeze of {freeze:.0} ms after its switch to 360p (at most \
                 {FREEZE_TARGET_MS:.0} ms)"
            ));
        }
    }
    if r.page["videoHeight"] != LOW.height || r.probe.size().is_none_or(|s| s.height != LOW.height)
    {
        problems.push(format!(
            "on the capped link the viewers left 360p: chromium shows {}x{}, probe {:?}",
            r.page["videoWidth"],
            r.page["videoHeight"],
            r.probe.size()
        ));
    }
    if r.probe.size().is_some_and(|s| s.width != LOW.width) {
        problems.push(format!(
            "the probe's 360p is {:?}, not 640x360",
            r.probe.size()
        ));
    }
    if r.page["videoWidth"] != LOW.width && r.page["videoHeight"] == LOW.height {
        problems.push(format!(
            "chromium's 360p is {} wide, not 640",
            r.page["videoWidth"]
        ));
    }
    let low = Branch::of(&r.health, LOW.label);
    if !low.running() || low.viewers != Some(2) {
        problems.push(format!(
            "with both viewers at 360p the 360p branch should run for 2: {low:?}"
        ));
    }
    watch
        .steps
        .push(format!("token buckets:\n  {}", watch.buckets()));
    let (pixels, sample) = pixel_problems(&mut watch.browser);
    watch
        .steps
        .push(format!("chromium's frame at 360p: {sample}"));
    problems.extend(pixels);

    // Step up: the link recovers.
    watch.set_rate(None);
    let uncap = Moment::now();
    watch.steps.push(format!(
        "{:.1} s: cap lifted",
        (uncap.epoch_ms - watch.start.epoch_ms) / 1000.0
    ));
    let up = watch.wait_for(HIGH, uncap, STEP_UP_TARGET);
    watch.steps.push(format!("step up: {}", up.describe()));
    if !up.complete() || up.slowest().unwrap() > STEP_UP_TARGET.as_secs_f64() {
        problems.push(format!(
            "step up: {}, target {} s",
            up.describe(),
            STEP_UP_TARGET.as_secs()
        ));
    }

    // Nobody on 360p any more: its encoder stops after the linger.
    if up.complete() {
        let left = Instant::now();
        let stopped = watch.wait_health(left, LINGER + STOP_SLACK, |h| {
            Branch::of(h, LOW.label).stopped()
        });
        watch.steps.push(format!(
            "360p branch stopped {} after both were back at 720p",
            stopped.map_or("never".into(), |s| format!("{s:.1} s"))
        ));
        if stopped.is_none() {
            problems.push(format!(
                "the 360p branch still runs {} s after its last viewer moved up (linger {} s)",
                (LINGER + STOP_SLACK).as_secs(),
                LINGER.as_secs()
            ));
        }
    }

    // Down again, then the viewers leave the party one by one: the branch runs while one is
    // left on it and stops after the last one has gone.
    watch.set_rate(Some(CAP_KBIT));
    let recap = Moment::now();
    let again = watch.wait_for(LOW, recap, STEP_DOWN_TARGET);
    watch
        .steps
        .push(format!("second step down: {}", again.describe()));
    if !again.complete() {
        problems.push(format!(
            "after a step up, capping the link again did not bring both to 360p: {}",
            again.describe()
        ));
    } else {
        if again.slowest().unwrap() > STEP_DOWN_TARGET.as_secs_f64() {
            problems.push(format!(
                "second step down took {}, target {} s",
                again.describe(),
                STEP_DOWN_TARGET.as_secs()
            ));
        }
        let started = Branch::of(&watch.health(), LOW.label);
        if !started.running() {
            problems.push(format!(
                "back at 360p, the 360p branch does not run: {started:?}"
            ));
        }
        watch.probe.leave();
        let report = watch
            .probe_thread
            .take()
            .unwrap()
            .join()
            .expect("the probe thread panicked");
        watch.steps.push(format!("the probe left: {report:?}"));
        let probe_id = watch.probe_id.clone();
        let gone = watch.wait_health(Instant::now(), Duration::from_secs(5), |h| {
            Watch::session(h, &probe_id).is_none()
        });
        let still = Branch::of(&watch.health(), LOW.label);
        if gone.is_none() || !still.running() || still.viewers != Some(1) {
            problems.push(format!(
                "after the probe left ({}), chromium alone should keep the 360p branch running: \
                 {still:?}",
                gone.map_or("its session stayed".into(), |s| format!("gone in {s:.1} s"))
            ));
        }
        watch.browser.navigate("about:blank").unwrap();
        let left = Instant::now();
        let chromium_id = watch.chromium_id.clone();
        let gone = watch.wait_health(left, Duration::from_secs(10), |h| {
            Watch::session(h, &chromium_id).is_none()
        });
        let stopped = watch.wait_health(left, LINGER + STOP_SLACK + Duration::from_secs(10), |h| {
            Branch::of(h, LOW.label).stopped()
        });
        watch.steps.push(format!(
            "chromium left: session gone after {}, 360p branch stopped after {}",
            gone.map_or("never".into(), |s| format!("{s:.1} s")),
            stopped.map_or("never".into(), |s| format!("{s:.1} s"))
        ));
        match (gone, stopped) {
            (Some(gone), Some(stopped))
                if stopped <= gone + (LINGER + STOP_SLACK).as_secs_f64() => {}
            _ => problems.push(format!(
                "the 360p branch should stop within {} s of its last viewer leaving",
                (LINGER + STOP_SLACK).as_secs()
            )),
        }
    }
    watch
        .steps
        .push(format!("token buckets:\n  {}", watch.buckets()));
    watch.set_rate(None);

    if !problems.is_empty() {
        watch.fail(&problems.join("\n"));
    }
    println!(
        "{}\nserver's view over time:\n  {}",
        watch.steps.join("\n"),
        watch.trace.join("\n  ")
    );
}
