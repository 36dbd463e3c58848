//! One chat on the viewer's screen (issue 16): on a desktop-wide page of a side-panel party,
//! the page's live chat is laid exactly over the composite's burned-in chat area, under the
//! webcam, and the video gets the whole width; a layout without a chat area, the viewer's
//! *Chat beside the video* and phones keep the column; *Hide chat* shows the composite as it
//! is. Headless Chromium on a party served in-process.
//!
//! The screenshot of the desktop page is saved (its path printed) by
//! `cargo test --test chat_overlay -- --nocapture`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{HOST_KEY, MOVIE_RED, WEBCAM_GREEN};
use cowatch::broadcast::Broadcaster;
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::layout::Layout;
use cowatch::pipeline::source::WebcamSource;
use cowatch::tools::cdp::Browser;
use serde_json::Value;
use tokio::runtime::Runtime;

/// The party, served on a runtime of its own so the test thread can drive the browser.
struct Party {
    addr: SocketAddr,
    _broadcaster: Broadcaster,
    _pipeline: Pipeline,
    _rt: Runtime,
}

impl Party {
    fn start() -> Party {
        let dir = common::scratch("chat-overlay");
        let movie = dir.join("red.mkv");
        common::make_movie(&movie, MOVIE_RED, 4);
        let mut settings = common::settings(
            &movie,
            WebcamSource::Description(common::solid_webcam(WEBCAM_GREEN)),
            "side-panel",
        );
        settings.loop_movie = true;
        let pipeline = Pipeline::start(settings).expect("the pipeline starts");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (addr, broadcaster) = rt.block_on(async {
            let broadcaster = common::broadcaster(&pipeline, 4).await;
            let state = common::state(&pipeline, &broadcaster, &common::scratch_data(), None);
            (
                common::serve_app(cowatch::web::app(state)).await,
                broadcaster,
            )
        });
        Party {
            addr,
            _broadcaster: broadcaster,
            _pipeline: pipeline,
            _rt: rt,
        }
    }

    fn switch_layout(&self, name: &str) {
        let body = format!(r#"{{"layout":"{name}"}}"#);
        let (status, _, answer) = common::raw_http(
            self.addr,
            "POST",
            "/api/control/layout",
            Some(HOST_KEY),
            &body,
        );
        assert_eq!(status, 200, "layout switch to {name}: {answer}");
    }
}

/// The boxes that matter, in CSS pixels, and how many chat lists a viewer sees.
const BOXES: &str = r#"(() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return { left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height,
             shown: getComputedStyle(el).display !== 'none' && r.width > 0 }; };
  const v = document.getElementById('video');
  return { video: box(v), chat: box(document.getElementById('chat')),
           show: box(document.getElementById('chat-show')),
           lists: [...document.querySelectorAll('[role=log]')].filter((l) => l.getClientRects().length > 0).length,
           over: document.querySelector('.layout').classList.contains('chat-over'),
           playing: v.videoWidth > 0 && v.currentTime > 0,
           canvas: { width: v.videoWidth, height: v.videoHeight },
           page: { width: innerWidth, height: innerHeight } };
})()"#;

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

struct Page {
    browser: Browser,
    url: String,
}

impl Page {
    fn open(party: &Party, width: u32, height: u32) -> Page {
        let mut browser = Browser::launch().expect("chromium starts");
        browser
            .emulate_device(width, height, 1.0, false)
            .expect("desktop emulation");
        let mut page = Page {
            browser,
            url: format!("http://{}/", party.addr),
        };
        page.reload();
        page
    }

    fn reload(&mut self) {
        self.browser.navigate("about:blank").unwrap();
        self.browser.navigate(&self.url).unwrap();
        self.wait("the video plays", Duration::from_secs(15), |b| {
            b["playing"] == true
        });
    }

    fn boxes(&mut self) -> Value {
        self.browser.eval(BOXES).unwrap()
    }

    fn click(&mut self, id: &str) {
        self.browser
            .eval(&format!("document.getElementById('{id}').click(), true"))
            .unwrap();
    }

    /// Polls the boxes until `check` holds; how long it took.
    fn wait(&mut self, what: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Duration {
        let started = Instant::now();
        loop {
            let boxes = self.boxes();
            if check(&boxes) {
                return started.elapsed();
            }
            if started.elapsed() > timeout {
                let shot = self
                    .browser
                    .screenshot(Path::new(env!("CARGO_TARGET_TMPDIR")), "chat-overlay")
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                panic!("{what}: not within {timeout:?}: {boxes:#}\nscreenshot: {shot}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Where the side-panel's chat area is on the page: the video's box, letterboxed.
fn expected_chat(b: &Value) -> [f64; 4] {
    let layout = Layout::builtin("side-panel").unwrap();
    let chat = layout.chat.unwrap();
    let (cw, ch) = (f64::from(layout.width), f64::from(layout.height));
    let v = &b["video"];
    let scale = (n(&v["width"]) / cw).min(n(&v["height"]) / ch);
    let left = n(&v["left"]) + (n(&v["width"]) - cw * scale) / 2.0;
    let top = n(&v["top"]) + (n(&v["height"]) - ch * scale) / 2.0;
    [
        left + f64::from(chat.x) * scale,
        top + f64::from(chat.y) * scale,
        f64::from(chat.width) * scale,
        f64::from(chat.height) * scale,
    ]
}

fn over_the_chat_area(b: &Value) -> Result<(), String> {
    let [left, top, width, height] = expected_chat(b);
    let c = &b["chat"];
    let got = [n(&c["left"]), n(&c["top"]), n(&c["width"]), n(&c["height"])];
    let v = &b["video"];
    let inside = got[0] >= n(&v["left"]) - 0.5
        && got[1] >= n(&v["top"]) - 0.5
        && got[0] + got[2] <= n(&v["right"]) + 0.5
        && got[1] + got[3] <= n(&v["bottom"]) + 0.5;
    let close = got
        .iter()
        .zip([left, top, width, height])
        .all(|(g, e)| (g - e).abs() <= 2.0);
    if inside && close && b["over"] == true {
        Ok(())
    } else {
        Err(format!(
            "chat box {got:?}, the chat area on the page is {:?} (inside the video: {inside})",
            [left, top, width, height]
        ))
    }
}

fn beside(b: &Value) -> bool {
    b["over"] == false
        && b["chat"]["shown"] == true
        && n(&b["chat"]["left"]) >= n(&b["video"]["right"]) - 1.0
}

#[test]
fn the_live_chat_lies_over_the_composites_chat_area_and_the_viewer_may_move_or_hide_it() {
    let party = Party::start();
    let mut page = Page::open(&party, 1366, 768);

    // Over the chat area, within 2 px, inside the picture; the video has the width; one
    // chat list.
    page.wait(
        "the chat goes over the video",
        Duration::from_secs(10),
        |b| over_the_chat_area(b).is_ok(),
    );
    let b = page.boxes();
    over_the_chat_area(&b).unwrap();
    assert!(
        n(&b["video"]["width"]) >= 0.9 * n(&b["page"]["width"]),
        "the video is not the page's width: {b}"
    );
    assert_eq!(b["lists"], 1, "exactly one chat list is visible: {b}");
    let shot = page
        .browser
        .screenshot(Path::new(env!("CARGO_TARGET_TMPDIR")), "viewer-1366x768")
        .unwrap();
    println!("desktop viewer page: {}", shot.display());

    // A live switch to a layout without a chat area puts the column back beside the video;
    // switching back lays it over again.
    party.switch_layout("inset");
    let took = page.wait(
        "inset: the chat beside the video",
        Duration::from_secs(2),
        beside,
    );
    println!("inset: chat beside the video {took:?} after the switch");
    party.switch_layout("side-panel");
    let took = page.wait(
        "side-panel again: the chat over the video",
        Duration::from_secs(2),
        |b| over_the_chat_area(b).is_ok(),
    );
    println!("side-panel: chat over the video {took:?} after the switch");

    // "Chat beside the video", kept across a reload; and back.
    page.click("chat-place");
    page.wait("Chat beside the video", Duration::from_secs(2), beside);
    page.reload();
    page.wait("beside, after a reload", Duration::from_secs(5), beside);
    page.click("chat-place");
    page.wait("Chat over the video", Duration::from_secs(2), |b| {
        over_the_chat_area(b).is_ok()
    });

    // "Hide chat": the composite as it is, kept across a reload; "Chat" brings it back.
    let hidden =
        |b: &Value| b["chat"]["shown"] == false && b["show"]["shown"] == true && b["lists"] == 0;
    page.click("chat-hide");
    page.wait("Hide chat", Duration::from_secs(2), hidden);
    page.reload();
    page.wait("hidden, after a reload", Duration::from_secs(5), hidden);
    page.click("chat-show");
    page.wait(
        "the chat comes back over the video",
        Duration::from_secs(2),
        |b| over_the_chat_area(b).is_ok(),
    );

    // A phone held upright keeps the chat under the video.
    page.browser
        .emulate_device(390, 844, 3.0, true)
        .expect("phone emulation");
    page.reload();
    page.wait(
        "phone: the chat under the video",
        Duration::from_secs(5),
        |b| {
            b["over"] == false
                && b["chat"]["shown"] == true
                && n(&b["chat"]["top"]) >= n(&b["video"]["bottom"]) - 1.0
        },
    );
}
