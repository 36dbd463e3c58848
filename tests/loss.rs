//! Random packet loss between a party and its viewers: the viewers keep playing because the
//! server answers their NACKs with resends.
//!
//! The party runs in a network namespace at 198.18.0.1, a Chromium on cowatch's own page and a
//! webrtc-rs probe in another at 198.18.0.2 (`tools::netns`); an iptables rule drops a random
//! share of the UDP arriving at the viewers' side, 1 % and then 3 %. At each level the test
//! shows that the rule really dropped about that share, that Chromium kept decoding at a
//! watchable rate without freezing into a reconnect, and that the loss was repaired: the
//! server resent packets (its `/metrics`), Chromium received retransmissions (its `getStats`),
//! and the probe, which has no RTX and gets plain resends, filled most of its gaps.
//!
//! Needs root, iproute2, iptables and /usr/bin/chromium; the test fails, never skips, without
//! them.

mod common;

use std::time::{Duration, Instant};

use common::netns_party::NsParty;
use cowatch::tools::cdp::Browser;
use cowatch::tools::netns::{Counters, Side};
use cowatch::tools::probe::{ProbeOptions, ProbeReport, probe};
use serde_json::{Value, json};

/// The loss levels, as probabilities of dropping a UDP packet arriving at the viewers.
const LEVELS: [f64; 2] = [0.01, 0.03];
/// How long Chromium's decoding is measured at each level.
const WINDOW: Duration = Duration::from_secs(10);
/// The probe watches a little longer than the window, so its session is still on the server
/// when the window's per-viewer counters are read.
const PROBE_EXTRA: Duration = Duration::from_secs(3);
/// Frames per second Chromium must decode at every level: the stream is 30, and a viewer
/// notices a drop below 25.
const MIN_FPS: f64 = 25.0;

/// Runs before the page's scripts: remembers the page's peer connections for getStats.
const HOOK: &str = r#"(() => {
  const add = RTCPeerConnection.prototype.addTransceiver;
  window.cowatchTest = { pcs: [] };
  RTCPeerConnection.prototype.addTransceiver = function (kind, init) {
    if (!window.cowatchTest.pcs.includes(this)) window.cowatchTest.pcs.push(this);
    return add.call(this, kind, init);
  };
})()"#;

/// The page's own account (state, freezes, keyframe requests, reconnects) and the browser's
/// inbound video statistics of its newest peer connection, read in one evaluation.
const PAGE: &str = r#"(async () => {
  const c = window.cowatch || {};
  const page = { state: c.state, frames: c.frames, freezes: c.freezes,
    longestFreezeMs: c.longestFreezeMs, keyframeRequests: c.keyframeRequests,
    reconnects: c.reconnects };
  const pcs = (window.cowatchTest && window.cowatchTest.pcs) || [];
  const pc = pcs[pcs.length - 1];
  if (!pc) return { page, video: null, at: performance.now() };
  const stats = await pc.getStats();
  let video = null;
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'video') video = {
      framesDecoded: s.framesDecoded || 0, framesPerSecond: s.framesPerSecond || 0,
      packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0,
      nackCount: s.nackCount || 0, pliCount: s.pliCount || 0, firCount: s.firCount || 0,
      retransmittedPacketsReceived: s.retransmittedPacketsReceived || 0,
      freezeCount: s.freezeCount || 0,
    };
  });
  return { page, video, at: performance.now() };
})()"#;

/// A number from a JSON reading, 0 when absent.
fn n(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// A server-wide counter from `/metrics` (`cowatch_NAME VALUE`).
fn metric(metrics: &str, name: &str) -> Option<u64> {
    let prefix = format!("cowatch_{name} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The server's counters this test compares before and after a window.
#[derive(Debug, Clone, Copy, Default)]
struct ServerCounts {
    nacks: u64,
    resent: u64,
    keyframes_requested: u64,
    keyframes_forced: u64,
}

fn server_counts(party: &NsParty) -> ServerCounts {
    let text = party.get("/metrics");
    let read = |name| {
        metric(&text, name).unwrap_or_else(|| panic!("/metrics has no cowatch_{name}:\n{text}"))
    };
    ServerCounts {
        nacks: read("nacks_received_total"),
        resent: read("packets_resent_total"),
        keyframes_requested: read("keyframes_requested_total"),
        keyframes_forced: read("keyframes_forced_total"),
    }
}

/// Every viewer session `/healthz` lists.
fn sessions(party: &NsParty) -> Vec<Value> {
    let body = party.get("/healthz");
    let health: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/healthz is not JSON ({e}): {body}"));
    health
        .pointer("/sessions/viewers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| panic!("/healthz lists no sessions: {health}"))
}

fn session<'a>(sessions: &'a [Value], id: &str) -> Option<&'a Value> {
    sessions.iter().find(|s| s["id"] == id)
}

/// What one loss level showed.
struct Level {
    p: f64,
    counters: Counters,
    window_s: f64,
    before: Value,
    after: Value,
    server: (ServerCounts, ServerCounts),
    chromium: (Value, Value),
    probe_session: Value,
    probe: ProbeReport,
}

impl Level {
    fn delta(&self, pointer: &str) -> f64 {
        n(&self.after, pointer) - n(&self.before, pointer)
    }

    fn fps(&self) -> f64 {
        self.delta("/video/framesDecoded") / self.window_s
    }

    fn chromium_delta(&self, field: &str) -> f64 {
        n(&self.chromium.1, &format!("/{field}")) - n(&self.chromium.0, &format!("/{field}"))
    }

    fn summary(&self) -> String {
        let (s0, s1) = self.server;
        let c = self.counters;
        format!(
            "{:.0} % loss: dropped {} of {} UDP packets arriving at the viewers ({:.2} %)\n  \
             chromium over {:.1} s: {:.1} frames/s decoded, {} freezes > 200 ms (page), \
             longest {} ms, {} keyframe requests (page), {} reconnects, state {}; getStats: \
             {} NACKs, {} PLIs, {} retransmissions received, {} packets lost; server for it: \
             {} NACKs, {} resent, {} keyframe requests\n  \
             probe: {} video packets, {} lost after repair, {} keyframes, {:.0} kbit/s, \
             connected {}; server for it: {} NACKs, {} resent, {} keyframe requests\n  \
             server in all: {} NACKs, {} resent, {} keyframe requests, {} keyframes forced",
            self.p * 100.0,
            c.udp_dropped,
            c.udp_in,
            100.0 * c.udp_dropped as f64 / c.udp_in.max(1) as f64,
            self.window_s,
            self.fps(),
            self.delta("/page/freezes"),
            n(&self.after, "/page/longestFreezeMs"),
            self.delta("/page/keyframeRequests"),
            self.delta("/page/reconnects"),
            self.after["page"]["state"],
            self.delta("/video/nackCount"),
            self.delta("/video/pliCount"),
            self.delta("/video/retransmittedPacketsReceived"),
            self.delta("/video/packetsLost"),
            self.chromium_delta("nacks_received"),
            self.chromium_delta("packets_resent"),
            self.chromium_delta("keyframe_requests"),
            self.probe.video_packets,
            self.probe.packets_lost,
            self.probe.keyframes,
            self.probe.bitrate_kbps,
            self.probe.connected,
            self.probe_session["nacks_received"],
            self.probe_session["packets_resent"],
            self.probe_session["keyframe_requests"],
            s1.nacks - s0.nacks,
            s1.resent - s0.resent,
            s1.keyframes_requested - s0.keyframes_requested,
            s1.keyframes_forced - s0.keyframes_forced,
        )
    }

    /// Everything wrong with this level, one line each.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let pct = self.p * 100.0;
        let c = self.counters;
        let share = c.udp_dropped as f64 / c.udp_in.max(1) as f64;
        // Thousands of packets: a fair drop rule lands well inside half to one and a half times
        // the share asked for.
        if c.udp_in < 2000 || !(0.5 * self.p..=1.5 * self.p).contains(&share) {
            problems.push(format!(
                "{pct:.0} %: the drop rule dropped {} of {} packets, not about {pct:.0} %",
                c.udp_dropped, c.udp_in
            ));
        }
        if self.window_s < 8.0 || self.fps() < MIN_FPS {
            problems.push(format!(
                "{pct:.0} %: chromium decoded {:.1} frames/s over {:.1} s, wanted ≥ {MIN_FPS} \
                 over ≥ 8 s",
                self.fps(),
                self.window_s
            ));
        }
        if self.after["page"]["state"] != "live" || self.delta("/page/reconnects") > 0.0 {
            problems.push(format!(
                "{pct:.0} %: the page is {} after {} reconnect(s); it should stay live",
                self.after["page"]["state"],
                self.delta("/page/reconnects")
            ));
        }
        let (s0, s1) = self.server;
        if s1.resent <= s0.resent {
            problems.push(format!(
                "{pct:.0} %: the server resent nothing (cowatch_packets_resent_total stayed at \
                 {}; NACKs received {} → {})",
                s1.resent, s0.nacks, s1.nacks
            ));
        }
        if self.delta("/video/retransmittedPacketsReceived") <= 0.0 {
            problems.push(format!(
                "{pct:.0} %: chromium received no retransmission (it sent {} NACKs; the server \
                 counted {} NACKs and {} resends for it)",
                self.delta("/video/nackCount"),
                self.chromium_delta("nacks_received"),
                self.chromium_delta("packets_resent")
            ));
        }
        // Loss is repaired by resends, not keyframes: at most one forced in the window (the
        // target is 6 a minute). A forced keyframe that brings the next PLI (as SPS/PPS sent as
        // a frame of their own once did) shows up here as one a second.
        let forced = s1.keyframes_forced - s0.keyframes_forced;
        let allowed = (self.window_s / 10.0).ceil() as u64;
        if forced > allowed {
            problems.push(format!(
                "{pct:.0} %: {forced} keyframes forced in {:.0} s (at most {allowed}); the viewers \
                 asked for {} (chromium's PLIs: {})",
                self.window_s,
                s1.keyframes_requested - s0.keyframes_requested,
                self.delta("/video/pliCount")
            ));
        }
        let probe_resent = self.probe_session["packets_resent"].as_u64().unwrap_or(0);
        if probe_resent == 0 {
            problems.push(format!(
                "{pct:.0} %: the server resent nothing to the probe (its session: {})",
                self.probe_session
            ));
        }
        // The probe kept receiving video all along (at least 100 packets a second of a stream of
        // a few hundred) and could decode: it saw keyframes.
        let seconds = self.probe.seconds.max(1.0);
        if !self.probe.connected
            || self.probe.keyframes == 0
            || (self.probe.video_packets as f64) < 100.0 * seconds
        {
            problems.push(format!(
                "{pct:.0} %: the probe stopped receiving: {:?}",
                self.probe
            ));
        }
        // Repaired: of the packets the rule took from the probe (about p of what it got), at
        // most half are still missing at the end; without resends all of them would be.
        let dropped_for_probe = self.p * self.probe.video_packets as f64;
        if self.probe.packets_lost as f64 > 0.5 * dropped_for_probe {
            problems.push(format!(
                "{pct:.0} %: the probe still misses {} packets of about {dropped_for_probe:.0} \
                 dropped: its loss was not repaired",
                self.probe.packets_lost
            ));
        }
        problems
    }
}

fn read_page(browser: &mut Browser, party: &NsParty) -> Value {
    browser.eval(PAGE).unwrap_or_else(|e| {
        panic!(
            "cannot read the viewer page: {e:#}\npage log:\n  {}\nserver:\n{}",
            browser.log().join("\n  "),
            party.output()
        )
    })
}

/// Runs one loss level: sets the drop rule, starts a probe beside Chromium, measures.
fn level(party: &NsParty, browser: &mut Browser, chromium_id: &str, p: f64) -> Level {
    let link = &party.link;
    link.set_loss(Side::Viewer, p).unwrap();
    let known: Vec<String> = sessions(party)
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    // The probe runs on a thread started inside the viewer namespace, so its sockets are there.
    let options = ProbeOptions {
        url: format!("{}whep", party.url()),
        duration: WINDOW + PROBE_EXTRA,
        codec: None,
    };
    let probe_thread = link
        .run(Side::Viewer, move || {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| runtime.block_on(probe(&options)))
            })
        })
        .unwrap();

    // The window starts once the probe is a viewer too.
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe_id = loop {
        let now = sessions(party);
        if let Some(id) = now
            .iter()
            .filter(|s| s["connected"] == true)
            .filter_map(|s| s["id"].as_str())
            .find(|id| !known.iter().any(|k| k == id))
        {
            break id.to_owned();
        }
        if Instant::now() >= deadline {
            panic!(
                "{:.0} %: the probe did not connect within 10 s; sessions: {now:?}\nserver:\n{}",
                p * 100.0,
                party.output()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    let server_before = server_counts(party);
    let chromium_before = session(&sessions(party), chromium_id).cloned();
    let before = read_page(browser, party);
    std::thread::sleep(WINDOW);
    let after = read_page(browser, party);
    let now = sessions(party);
    let server_after = server_counts(party);
    let counters = link.counters(Side::Viewer).unwrap();
    let window_s = (n(&after, "/at") - n(&before, "/at")) / 1000.0;

    let chromium = match (chromium_before, session(&now, chromium_id).cloned()) {
        (Some(b), Some(a)) => (b, a),
        (b, a) => panic!(
            "{:.0} %: chromium's session {chromium_id} is gone (before {b:?}, after {a:?}): it \
             reconnected; page {after}",
            p * 100.0
        ),
    };
    let probe_session = session(&now, &probe_id).cloned().unwrap_or_else(|| {
        panic!(
            "{:.0} %: the probe's session {probe_id} ended before the window did; sessions \
             {now:?}",
            p * 100.0
        )
    });
    let probe = probe_thread
        .join()
        .expect("the probe thread panicked")
        .unwrap_or_else(|e| panic!("{:.0} %: the probe failed: {e:#}", p * 100.0));
    Level {
        p,
        counters,
        window_s,
        before,
        after,
        server: (server_before, server_after),
        chromium,
        probe_session,
        probe,
    }
}

#[test]
fn viewers_keep_playing_through_random_loss() {
    let party = NsParty::start(&[]);
    let mut browser = party
        .link
        .run(Side::Viewer, Browser::launch)
        .unwrap()
        .expect("cannot start chromium inside the viewer namespace");
    browser
        .call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": HOOK }),
        )
        .unwrap();
    browser.navigate(&party.url()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = read_page(&mut browser, &party);
        if page["page"]["state"] == "live" && n(&page, "/video/framesDecoded") > 30.0 {
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
    let viewers = sessions(&party);
    assert_eq!(viewers.len(), 1, "only chromium watches yet: {viewers:?}");
    let chromium_id = viewers[0]["id"].as_str().unwrap().to_owned();

    let mut problems = Vec::new();
    let mut summaries = Vec::new();
    for p in LEVELS {
        let level = level(&party, &mut browser, &chromium_id, p);
        let summary = level.summary();
        println!("{summary}");
        summaries.push(summary);
        problems.extend(level.problems());
    }
    party.link.set_loss(Side::Viewer, 0.0).unwrap();
    if !problems.is_empty() {
        panic!(
            "{}\n\n{}\npage log:\n  {}\n/healthz: {}\nserver:\n{}",
            problems.join("\n"),
            summaries.join("\n"),
            browser.log().join("\n  "),
            party.get("/healthz"),
            party.output()
        );
    }
}
