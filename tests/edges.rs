//! Janus edges carry the viewers the origin cannot: two Debian `janus` processes, each with a
//! config directory and ports of its own, and `cowatch demo --max-viewers 1 --edge A --edge B`,
//! all in the server side of a namespace pair (Janus offers no loopback ICE candidates, see
//! `common/janus.rs`); three Chromium viewers on the viewer side. The first viewer lands on
//! the origin, the next two on the edges, one each, as the page and `/healthz` both say, and
//! all three show the composite's pixels. Then one edge is killed: its viewer plays again,
//! from the other edge, with fresh frames, within 10 s.
//!
//! Needs /usr/bin/janus and /usr/bin/chromium, root, iproute2 and iptables (`.ci/deps`); the
//! test fails, never skips, without them.

mod common;

use std::time::{Duration, Instant};

use common::janus::Edge;
use common::netns_party::NsParty;
use cowatch::tools::cdp::Browser;
use cowatch::tools::netns::{Link, Side};
use serde_json::Value;

/// The streaming plugin's admin key on both edges.
const SECRET: &str = "edge-test-admin-key";

/// The picture the page shows now: the mean colour of the webcam's box (side-panel layout,
/// x 960..1280, y 0..180) and of the movie's, and how many frames the page counted.
const SAMPLE: &str = r#"(() => {
  const v = document.getElementById('video');
  // Any rendition (the origin may move its viewer to 360p): scaled to 720p, the boxes stay put.
  if (!v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = 1280; c.height = 720;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(v, 0, 0, 1280, 720);
  const mean = (x, y) => {
    const d = ctx.getImageData(x - 8, y - 8, 16, 16).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
    return sum.map((s) => Math.round(s / 256));
  };
  return { webcam: mean(1120, 90), frames: window.cowatch.frames };
})()"#;

struct Viewer {
    name: &'static str,
    browser: Browser,
}

impl Viewer {
    fn open(link: &Link, name: &'static str, url: &str) -> Viewer {
        let mut browser = link
            .run(Side::Viewer, Browser::launch)
            .unwrap()
            .expect("cannot start chromium inside the viewer namespace");
        browser.navigate(url).unwrap();
        Viewer { name, browser }
    }

    fn eval(&mut self, js: &str) -> Value {
        self.browser
            .eval(js)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }

    /// "origin", or the URL of the edge it plays from (`window.cowatch.where`).
    fn place(&mut self) -> String {
        self.eval("window.cowatch.where")
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    fn diagnose(&mut self) -> String {
        let state = self
            .browser
            .eval("JSON.stringify({cowatch: window.cowatch, badge: document.getElementById('state').textContent})")
            .unwrap_or_else(|e| Value::String(format!("(cannot read: {e:#})")));
        format!(
            "{}: {state}\n  page log:\n    {}",
            self.name,
            self.browser.log().join("\n    ")
        )
    }
}

struct World {
    party: NsParty,
    edges: Vec<Edge>,
}

impl World {
    fn health(&self) -> Value {
        let text = self.party.peek("/healthz");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn diagnose(&self, viewers: &mut [&mut Viewer]) -> String {
        let mut text = String::new();
        for v in viewers {
            text.push_str(&v.diagnose());
            text.push('\n');
        }
        text.push_str(&format!("healthz: {}\n", self.health()));
        for (i, e) in self.edges.iter().enumerate() {
            text.push_str(&format!("edge {i} ({}) log tail:\n{}\n", e.url, e.log()));
        }
        text.push_str(&format!("server output:\n{}", self.party.output()));
        text
    }
}

/// Polls `check` until it returns `Some`, or fails with `what` and the world's diagnosis.
fn wait_for<T>(
    world: &World,
    viewers: &mut [&mut Viewer],
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&World, &mut [&mut Viewer]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check(world, viewers) {
            return value;
        }
        if Instant::now() >= deadline {
            let diagnosis = world.diagnose(viewers);
            panic!("{what}: not within {timeout:?}\n{diagnosis}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether the viewer is live and its picture shows the webcam's green; its frame count.
fn shows_the_composite(viewer: &mut Viewer) -> Option<u64> {
    let sample = viewer.eval(SAMPLE);
    let webcam: Vec<u8> = sample["webcam"]
        .as_array()?
        .iter()
        .filter_map(|c| c.as_u64().and_then(|c| u8::try_from(c).ok()))
        .collect();
    let live = viewer.eval("window.cowatch.state") == "live";
    (live
        && webcam.len() == 3
        && common::close([webcam[0], webcam[1], webcam[2]], common::WEBCAM_GREEN))
    .then(|| sample["frames"].as_u64())
    .flatten()
}

/// Asserts that viewer `i` shows the composite with frames that go on: a frame count higher
/// than now within a few seconds (generous: the machine runs three browsers, two Janus and
/// the party, and may share its two cores with more).
fn keeps_playing(world: &World, viewers: &mut [&mut Viewer], i: usize) {
    let before = shows_the_composite(viewers[i]).unwrap_or(0);
    let name = viewers[i].name;
    wait_for(
        world,
        viewers,
        Duration::from_secs(5),
        &format!("{name} keeps playing the composite (past frame {before})"),
        |_, v| shows_the_composite(v[i]).filter(|now| *now > before),
    );
}

/// Viewers of each edge by Janus, in `/healthz`'s order, once all are up.
fn edge_viewers(health: &Value) -> Option<Vec<u64>> {
    health["edges"]
        .as_array()?
        .iter()
        .map(|e| {
            (e["state"] == "up")
                .then(|| e["viewers"].as_u64())
                .flatten()
        })
        .collect()
}

#[test]
fn viewers_past_the_origin_go_to_janus_edges_and_move_when_one_dies() {
    let link = Link::create().expect("cannot create the test's network namespaces");
    let scratch = common::scratch("edges");
    let edges = vec![
        Edge::start(
            &link,
            Side::Server,
            0,
            8088,
            SECRET,
            &scratch.join("edge-a"),
        ),
        Edge::start(
            &link,
            Side::Server,
            1,
            8089,
            SECRET,
            &scratch.join("edge-b"),
        ),
    ];
    let webcam = common::solid_webcam(common::WEBCAM_GREEN);
    let party = NsParty::start_on(
        link,
        &[
            "--webcam",
            &webcam,
            "--max-viewers",
            "1",
            "--edge",
            &edges[0].url,
            "--edge",
            &edges[1].url,
            "--edge-secret",
            SECRET,
        ],
    );
    let mut world = World { party, edges };
    let url = world.party.url();

    // Both edges carry our mountpoint before anyone comes.
    wait_for(
        &world,
        &mut [],
        Duration::from_secs(15),
        "both edges up in /healthz",
        |w, _| edge_viewers(&w.health()),
    );

    // One at a time, so the origin's one seat is surely taken by the first.
    let mut first = Viewer::open(&world.party.link, "viewer 1", &url);
    wait_for(
        &world,
        &mut [&mut first],
        Duration::from_secs(30),
        "viewer 1 plays the composite from the origin",
        |_, v| {
            (v[0].place() == "origin")
                .then(|| shows_the_composite(v[0]))
                .flatten()
        },
    );
    let mut second = Viewer::open(&world.party.link, "viewer 2", &url);
    let mut third = Viewer::open(&world.party.link, "viewer 3", &url);
    let mut all = [&mut first, &mut second, &mut third];
    wait_for(
        &world,
        &mut all,
        Duration::from_secs(40),
        "viewers 2 and 3 play the composite from the two edges",
        |_, v| {
            let (a, b) = (v[1].place(), v[2].place());
            (a.starts_with("http") && b.starts_with("http") && a != b).then_some(())?;
            shows_the_composite(v[1])?;
            shows_the_composite(v[2])?;
            Some(())
        },
    );
    // The server agrees: one WHEP viewer of its own, one viewer on each edge by Janus's count.
    wait_for(
        &world,
        &mut all,
        Duration::from_secs(10),
        "/healthz: 1 viewer on the origin, 1 on each edge",
        |w, _| {
            let health = w.health();
            let on_edges = edge_viewers(&health)?;
            (health["viewers"]["viewers"] == 1 && on_edges == [1, 1]).then_some(())
        },
    );
    // The edges' keyframe requests reach us over RTCP (Janus asks as a viewer starts).
    wait_for(
        &world,
        &mut all,
        Duration::from_secs(10),
        "/healthz: keyframe requests from the edges",
        |w, _| {
            let health = w.health();
            let asked: u64 = health["edges"]
                .as_array()?
                .iter()
                .filter_map(|e| e["keyframe_requests"].as_u64())
                .sum();
            (asked > 0).then_some(())
        },
    );
    // Every page keeps playing.
    for i in 0..all.len() {
        keeps_playing(&world, &mut all, i);
    }

    // Kill the edge viewer 2 watches.
    let killed_url = all[1].place();
    let killed = world
        .edges
        .iter()
        .position(|e| e.url == killed_url)
        .expect("viewer 2's edge is one of ours");
    let reconnects = all[1].eval("window.cowatch.reconnects").as_u64().unwrap();
    world.edges[killed].kill();
    let killed_at = Instant::now();
    wait_for(
        &world,
        &mut all,
        Duration::from_secs(10),
        "viewer 2 plays again from another edge after its edge died",
        |_, v| {
            let moved = v[1].eval("window.cowatch.reconnects").as_u64()? > reconnects
                && v[1].place() != killed_url
                && v[1].place().starts_with("http");
            moved.then(|| shows_the_composite(v[1])).flatten()
        },
    );
    let took = killed_at.elapsed();
    // Fresh frames, not a picture left over: the count goes on.
    keeps_playing(&world, &mut all, 1);
    println!("viewer 2 played again {took:?} after its edge was killed");
    // The origin saw the edge die.
    wait_for(
        &world,
        &mut all,
        Duration::from_secs(6),
        "/healthz shows the killed edge down",
        |w, _| (w.health()["edges"][killed]["state"] == "down").then_some(()),
    );
    // The other two viewers never stopped.
    for i in [0, 2] {
        keeps_playing(&world, &mut all, i);
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
