//! The viewer page in a real browser: headless Chromium joins a running `cowatch demo` over
//! WebRTC, must show its first frame soon even with a busy chat, must play the 1280x720
//! stream, must ride out a short stall and come back by itself when the server restarts
//! (one connection at a time), and must lay out sensibly on a phone.
//!
//! Needs /usr/bin/chromium (Debian's `chromium` package); the tests fail, never skip, without it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cowatch::tools::bench::{BusyChat, page_joins};
use cowatch::tools::cdp::Browser;
use serde_json::Value;

/// A `cowatch demo` process on fixed ports, so it can be restarted where viewers expect it.
struct Server {
    child: Child,
    http: u16,
    /// Its store, removed with it.
    data: PathBuf,
    /// Everything the server printed, for failure messages.
    output: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the demo and waits until it announces the viewer page (it is live by then).
    fn start(http: u16, udp: u16) -> Server {
        Server::start_with(http, udp, &[])
    }

    /// [`Server::start`] with `extra` arguments for the demo.
    fn start_with(http: u16, udp: u16, extra: &[OsString]) -> Server {
        // A store of its own per server, so tests running at once never share one.
        let data = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("browser-data-{}-{http}", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_cowatch"))
            .args(["demo", "--listen", &format!("127.0.0.1:{http}")])
            .args(["--webrtc-port", &udp.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the cowatch binary");
        let output = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        // Both pipes are drained for the server's whole life: a full pipe would stall it.
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.contains("viewer page:") {
                        let _ = ready_tx.send(());
                    }
                    append(&output, &line);
                }
            });
        }
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = String::new();
                while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    append(&output, line.trim_end());
                    line.clear();
                }
                // Whatever is left without a newline.
                let _ = reader.read_to_string(&mut line);
            });
        }
        let mut server = Server {
            child,
            http,
            data,
            output,
        };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let status = server.child.try_wait().ok().flatten();
            panic!(
                "cowatch demo did not print its viewer page within 30 s (exit status: {status:?}); it said:\n{}",
                server.output()
            );
        }
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.http)
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Stops the server the way a service manager would (SIGTERM) and waits for it to exit,
    /// falling back to SIGKILL so a hung shutdown cannot hang the test too.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "cowatch did not exit within 10 s of SIGTERM; it said:\n{}",
            self.output()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn append(output: &Mutex<String>, line: &str) {
    let mut output = output.lock().unwrap();
    output.push_str(line);
    output.push('\n');
}

/// A TCP and a UDP port that were free a moment ago. The kernel hands out ephemeral ports in
/// sequence, so another test grabbing the same one before the server binds is unlikely.
fn free_ports() -> (u16, u16) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    )
}

/// Records every text the page's status badge shows, with the page's clock in seconds, in
/// `window.badgeHistory`. Only reads the page; it changes nothing the page relies on.
const BADGE_HISTORY: &str = r#"(() => {
  const badge = document.getElementById('state');
  window.badgeHistory = [[+(performance.now() / 1000).toFixed(1), badge.textContent]];
  new MutationObserver(() => {
    window.badgeHistory.push([+(performance.now() / 1000).toFixed(1), badge.textContent]);
  }).observe(badge, { childList: true, characterData: true, subtree: true });
  return true;
})()"#;

/// The page's view of playback, gathered in one evaluation so the values agree with each other.
const PLAYBACK: &str = r#"(() => {
  const v = document.getElementById('video');
  const badge = document.getElementById('state');
  return {
    cowatch: window.cowatch,
    videoWidth: v.videoWidth, videoHeight: v.videoHeight,
    readyState: v.readyState, networkState: v.networkState,
    paused: v.paused, currentTime: v.currentTime,
    tracks: v.srcObject ? v.srcObject.getTracks().map(t => t.kind + ':' + t.readyState) : null,
    badge: badge && badge.textContent,
    badgeHistory: window.badgeHistory || null,
    now: +(performance.now() / 1000).toFixed(1),
  };
})()"#;

/// Everything that helps explain a failure: the page's playback state, what the page and the
/// server logged, and a screenshot saved for later.
fn diagnose(browser: &mut Browser, server: &Server) -> String {
    // A diagnosis must not panic itself: a broken browser is part of what it reports.
    let playback = browser
        .eval(PLAYBACK)
        .unwrap_or_else(|e| Value::String(format!("(cannot read: {e:#})")));
    let shot = match browser.screenshot(Path::new(env!("CARGO_TARGET_TMPDIR")), "failure") {
        Ok(path) => path.display().to_string(),
        Err(e) => format!("(none: {e:#})"),
    };
    println!("screenshot of the failing page: {shot}");
    format!(
        "page: {playback}\nscreenshot: {shot}\npage log:\n  {}\nserver output:\n{}",
        browser.log().join("\n  "),
        server.output()
    )
}

/// Polls `condition` (a JavaScript boolean expression) until it holds, or fails the test with
/// a diagnosis once `timeout` has passed.
fn wait_until(
    browser: &mut Browser,
    server: &Server,
    timeout: Duration,
    what: &str,
    condition: &str,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if browser.eval(condition).unwrap() == Value::Bool(true) {
            return;
        }
        if Instant::now() >= deadline {
            let diagnosis = diagnose(browser, server);
            panic!("{what}: not true within {timeout:?} (`{condition}`)\n{diagnosis}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn frames(browser: &mut Browser) -> u64 {
    browser
        .eval("window.cowatch.frames")
        .unwrap()
        .as_u64()
        .expect("window.cowatch.frames is a count")
}

/// Asserts that at least `min` frames are presented within `window`; returns how many were.
fn assert_frames_advance(
    browser: &mut Browser,
    server: &Server,
    window: Duration,
    min: u64,
) -> u64 {
    let before = frames(browser);
    std::thread::sleep(window);
    let advanced = frames(browser) - before;
    if advanced < min {
        let diagnosis = diagnose(browser, server);
        panic!(
            "only {advanced} frames presented in {window:?}, wanted at least {min}\n{diagnosis}"
        );
    }
    advanced
}

const LIVE_AT_1280: &str = "document.getElementById('video').videoWidth === 1280 \
                            && window.cowatch.state === 'live'";

/// The page's own counters (see `assets/player.js`).
#[derive(Debug, Clone, Copy)]
struct Counters {
    attempts: u64,
    connects: u64,
    reconnects: u64,
    freezes: u64,
    keyframe_requests: u64,
}

fn counters(browser: &mut Browser) -> Counters {
    let c = browser.eval("window.cowatch").unwrap();
    let count = |name: &str| {
        c[name]
            .as_u64()
            .unwrap_or_else(|| panic!("window.cowatch.{name} is not a count: {c}"))
    };
    Counters {
        attempts: count("attempts"),
        connects: count("connects"),
        reconnects: count("reconnects"),
        freezes: count("freezes"),
        keyframe_requests: count("keyframeRequests"),
    }
}

/// Viewer sessions the server holds, by its `/healthz` (asked from the page itself).
fn server_sessions(browser: &mut Browser) -> u64 {
    browser
        .eval("fetch('/healthz').then(r => r.json()).then(h => h.viewers.viewers)")
        .unwrap()
        .as_u64()
        .expect("/healthz has viewers.viewers")
}

/// Texts the badge showed after `since` (page seconds).
fn badge_since(browser: &mut Browser, since: f64) -> Vec<String> {
    let history = browser.eval("window.badgeHistory").unwrap();
    history
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry[0].as_f64().is_some_and(|t| t >= since))
        .map(|entry| entry[1].as_str().unwrap_or("").to_string())
        .collect()
}

/// Suspends the server (SIGSTOP) for `pause`, then lets it go on (SIGCONT): frames stop
/// arriving as on a link that drops everything for a moment, and nothing is lost for good.
fn freeze_server(server: &Server, pause: Duration) {
    let pid = server.child.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    std::thread::sleep(pause);
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
}

#[test]
fn viewer_page_plays_rides_out_a_stall_and_recovers_from_a_server_restart() {
    let (http, udp) = free_ports();
    let mut server = Server::start(http, udp);
    let mut browser = Browser::launch().unwrap();
    browser.navigate(&server.url()).unwrap();
    // The badge tells why the page reconnects ("reconnecting… (stalled)"); keep its history
    // with timestamps so a failure shows what the page went through.
    browser.eval(BADGE_HISTORY).unwrap();

    wait_until(
        &mut browser,
        &server,
        Duration::from_secs(10),
        "the page plays the 1280x720 stream live",
        LIVE_AT_1280,
    );
    // 45 frames in 3 s is 15 fps: well under the stream's rate, well over a stuttering one.
    let first = assert_frames_advance(&mut browser, &server, Duration::from_secs(3), 45);

    // A stall shorter than the page's patience: frames stop for 1.8 s. The page asks for a
    // keyframe, keeps its connection, and never says "reconnecting…".
    let before = counters(&mut browser);
    let paused_at = browser
        .eval("performance.now() / 1000")
        .unwrap()
        .as_f64()
        .unwrap();
    freeze_server(&server, Duration::from_millis(1800));
    let resumed = assert_frames_advance(&mut browser, &server, Duration::from_secs(2), 30);
    let after = counters(&mut browser);
    let badge = badge_since(&mut browser, paused_at);
    let sessions = server_sessions(&mut browser);
    let stall_report = format!(
        "before the stall {before:?}, after it {after:?}; badge since: {badge:?}; server \
         sessions {sessions}"
    );
    if after.attempts != before.attempts
        || after.reconnects != before.reconnects
        || after.freezes <= before.freezes
        || after.keyframe_requests <= before.keyframe_requests
        || badge.iter().any(|text| text.starts_with("reconnecting"))
        || sessions != 1
    {
        let diagnosis = diagnose(&mut browser, &server);
        panic!(
            "a 1.8 s stall must be met with a keyframe request, one freeze and no reconnect: \
             {stall_report}\n{diagnosis}"
        );
    }

    // A restart on the same ports, as after an upgrade or a crash: viewers keep the page open
    // and must not have to reload it.
    let before = after;
    let killed = Instant::now();
    server.stop();
    drop(server);
    let server = Server::start(http, udp);
    let restarted = Instant::now();
    // The state still reads "live" until the page notices the old connection is gone, so
    // insist on a new connection, not just the badge.
    wait_until(
        &mut browser,
        &server,
        Duration::from_secs(10),
        "the page reconnects by itself after the server restarted",
        &format!(
            "window.cowatch.connects > {} && {LIVE_AT_1280}",
            before.connects
        ),
    );
    let back = restarted.elapsed();
    let second = assert_frames_advance(&mut browser, &server, Duration::from_secs(2), 30);
    // One connection at a time: a single new one got through, after a few attempts at most,
    // and the new server holds this page's session only.
    let after = counters(&mut browser);
    let sessions = server_sessions(&mut browser);
    let restart_report =
        format!("before the restart {before:?}, after it {after:?}; server sessions {sessions}");
    if after.connects != before.connects + 1
        || after.reconnects < before.reconnects + 1
        || after.attempts > before.attempts + 3
        || sessions != 1
    {
        let diagnosis = diagnose(&mut browser, &server);
        panic!(
            "reconnecting after a restart must make one connection, not a pile: \
             {restart_report}\n{diagnosis}"
        );
    }
    println!(
        "{first} frames in 3 s at first; after a 1.8 s stall {resumed} in 2 s ({stall_report}); \
         {second} in 2 s after the restart ({restart_report}); the server took {:.1?} to stop \
         and start again, the page was live again {back:.1?} after that; badge: {}",
        restarted - killed,
        browser.eval("JSON.stringify(window.badgeHistory)").unwrap(),
    );
    println!("page log:\n  {}", browser.log().join("\n  "));
}

/// A new viewer of a party in progress, with a busy chat: ten joins of the viewer page, each a
/// fresh page and peer connection. Each must show frames and keep playing, and half of them
/// must show their first frame within 1 s of `new RTCPeerConnection` (the target is 300 ms on
/// an idle machine; this allows for a loaded test machine). Prints where the time went.
#[test]
fn viewer_page_shows_its_first_frame_soon_with_a_busy_chat() {
    const JOINS: usize = 10;
    const LIMIT_MS: f64 = 1000.0;
    // A real capture of a busy Twitch channel at its own pace, its backlog sent first.
    let chat = BusyChat::start(None, 1.0).unwrap();
    let (http, udp) = free_ports();
    let server = Server::start_with(http, udp, &chat.demo_args());
    let replaying = chat.replay().unwrap_or_else(|e| {
        panic!("{e:#}; server output:\n{}", server.output());
    });
    let joins = page_joins(&server.url(), JOINS).unwrap();
    drop(replaying);
    for (i, join) in joins.joins.iter().enumerate() {
        println!(
            "join {}: {} frames; timing {}",
            i + 1,
            join.frames,
            join.raw
        );
    }
    println!(
        "{}; chat stand-in sent {} lines ({:.1}/s after its backlog)",
        joins.describe(),
        chat.sent(),
        chat.lines_per_second()
    );
    assert!(
        joins.not_playing() == 0,
        "{} of {JOINS} joins did not keep playing: {}\nserver output:\n{}",
        joins.not_playing(),
        joins.describe(),
        server.output()
    );
    assert!(
        joins.median() <= LIMIT_MS,
        "median first frame {:.0} ms, over {LIMIT_MS} ms: {}",
        joins.median(),
        joins.describe()
    );
}

/// Bounding boxes of the parts of the page that matter on a small screen, in CSS pixels.
const BOXES: &str = r#"(() => {
  const box = (el) => {
    if (!el) return null;
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    return { top: r.top, left: r.left, width: r.width, height: r.height, bottom: r.bottom,
             right: r.right, display: style.display, visibility: style.visibility };
  };
  return {
    viewport: { width: innerWidth, height: innerHeight },
    video: box(document.getElementById('video')),
    chat: box(document.querySelector('aside.chat')),
    unmute: box(document.getElementById('unmute')),
  };
})()"#;

fn f(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

#[test]
fn viewer_page_is_usable_on_a_phone() {
    let (http, udp) = free_ports();
    let server = Server::start(http, udp);
    let mut browser = Browser::launch().unwrap();

    // Portrait phone (an iPhone 12-class screen): the video on top, the chat below it.
    browser.emulate_device(390, 844, 3.0, true).unwrap();
    browser.navigate(&server.url()).unwrap();
    let boxes = browser.eval(BOXES).unwrap();
    let fail = |browser: &mut Browser, what: &str, boxes: &Value| -> ! {
        let diagnosis = diagnose(browser, &server);
        panic!("{what}\nboxes: {boxes}\n{diagnosis}");
    };
    let (video, chat, unmute) = (&boxes["video"], &boxes["chat"], &boxes["unmute"]);
    if f(&boxes["viewport"]["width"]) != 390.0 {
        fail(
            &mut browser,
            "the phone viewport is not 390 px wide",
            &boxes,
        );
    }
    if f(&video["top"]).abs() > 1.0 || (f(&video["width"]) - 390.0).abs() > 1.0 {
        fail(
            &mut browser,
            "portrait: the video is not at the top at full width",
            &boxes,
        );
    }
    if f(&video["height"]) < 100.0 {
        fail(
            &mut browser,
            "portrait: the video is too short to watch",
            &boxes,
        );
    }
    if chat["display"] == "none" || f(&chat["top"]) < f(&video["bottom"]) - 1.0 {
        fail(
            &mut browser,
            "portrait: the chat is not below the video",
            &boxes,
        );
    }
    if !visible(unmute, &boxes["viewport"]) {
        fail(
            &mut browser,
            "portrait: the unmute button is not visible",
            &boxes,
        );
    }

    // The same phone turned sideways: the video gets the whole width.
    browser.emulate_device(844, 390, 3.0, true).unwrap();
    let boxes = browser.eval(BOXES).unwrap();
    let (video, unmute) = (&boxes["video"], &boxes["unmute"]);
    if f(&boxes["viewport"]["width"]) != 844.0 {
        fail(
            &mut browser,
            "the landscape viewport is not 844 px wide",
            &boxes,
        );
    }
    if f(&video["left"]).abs() > 1.0 || (f(&video["width"]) - 844.0).abs() > 1.0 {
        fail(
            &mut browser,
            "landscape: the video does not take the full width",
            &boxes,
        );
    }
    if !visible(unmute, &boxes["viewport"]) {
        fail(
            &mut browser,
            "landscape: the unmute button is not visible",
            &boxes,
        );
    }
}

/// Whether an element has a box of its own that lies within the viewport.
fn visible(element: &Value, viewport: &Value) -> bool {
    element["display"] != "none"
        && element["visibility"] != "hidden"
        && f(&element["width"]) > 0.0
        && f(&element["height"]) > 0.0
        && f(&element["top"]) >= 0.0
        && f(&element["left"]) >= 0.0
        && f(&element["bottom"]) <= f(&viewport["height"])
        && f(&element["right"]) <= f(&viewport["width"])
}
