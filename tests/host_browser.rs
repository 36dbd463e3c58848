//! The host dashboard (`/host`) in a real browser: headless Chromium opens the page of a party
//! served in-process over a media library of real files, and every control must reach the
//! running pipeline, as `/healthz` reports it.
//!
//! The library holds two solid-colour movies and a file that is not a movie. The blue one is
//! named `<b>blue<i>.mkv`: file names are text, and the page must show them as such.
//!
//! Needs /usr/bin/chromium (Debian's `chromium` package); fails, never skips, without it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{HOST_KEY, MOVIE_BLUE, MOVIE_RED, WEBCAM_GREEN};
use cowatch::broadcast::Broadcaster;
use cowatch::library::Library;
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::source::WebcamSource;
use cowatch::tools::cdp::Browser;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// The blue movie's file: markup in a file name must stay literal on the page.
const BLUE_FILE: &str = "<b>blue<i>.mkv";
/// Its title as the library lists it (the file stem).
const BLUE_NAME: &str = "<b>blue<i>";
const RED_FILE: &str = "red.mkv";
/// Length of both movies.
const MOVIE_SECONDS: u32 = 4;

/// How long a control may take to show in `/healthz` (a load opens a file first).
const CONTROL_BUDGET: Duration = Duration::from_secs(10);

/// A party served in-process on a runtime of its own, so the test thread is free to drive the
/// browser (whose calls block).
struct Party {
    addr: SocketAddr,
    http: reqwest::Client,
    // Dropped in this order: the server's handles first, the runtime last.
    _broadcaster: Broadcaster,
    _pipeline: Pipeline,
    rt: Runtime,
}

impl Party {
    /// Makes the library, starts the pipeline on the red movie (looping, so a 4 s movie
    /// never ends under the test) with a webcam and no mic, and serves the app.
    fn start() -> Party {
        let root = common::scratch("host-browser");
        let movies = root.join("movies");
        std::fs::create_dir_all(&movies).unwrap();
        common::make_movie(&movies.join(RED_FILE), MOVIE_RED, MOVIE_SECONDS);
        common::make_movie(&movies.join(BLUE_FILE), MOVIE_BLUE, MOVIE_SECONDS);
        std::fs::write(movies.join("broken.mkv"), "not a movie").unwrap();
        let library = Library::open(&movies, &root.join("thumbnails")).expect("library opens");
        assert!(
            library.wait_probed(Duration::from_secs(60)),
            "library not probed within 60 s: {:?}",
            library.titles()
        );

        let mut settings = common::settings(
            &movies.join(RED_FILE),
            WebcamSource::Description(common::solid_webcam(WEBCAM_GREEN)),
            "inset",
        );
        settings.loop_movie = true;
        settings.bitrate_kbps = 800;
        let pipeline = Pipeline::start(settings).expect("the pipeline starts");

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (addr, broadcaster) = rt.block_on(async {
            let broadcaster = common::broadcaster(&pipeline, 4).await;
            let mut state = common::state(&pipeline, &broadcaster, &common::scratch_data(), None);
            state.library = Some(library);
            let addr = common::serve_app(cowatch::web::app(state)).await;
            (addr, broadcaster)
        });
        Party {
            addr,
            http: reqwest::Client::new(),
            _broadcaster: broadcaster,
            _pipeline: pipeline,
            rt,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request, with `key` as the bearer; returns the status and the JSON answer
    /// (`Null` when the answer is not JSON).
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let mut request = self.http.request(method, self.url(path));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    /// A GET that must succeed.
    fn get(&self, path: &str, key: Option<&str>) -> Value {
        let (status, body) = self.request(reqwest::Method::GET, path, key, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn health(&self) -> Value {
        self.get("/healthz", None)
    }
}

/// The browser on the host page, with what a failure message needs.
struct Page<'a> {
    browser: Browser,
    party: &'a Party,
}

/// The dashboard's state in one evaluation, for failure messages.
const PAGE_STATE: &str = r#"(() => ({
  href: location.href,
  state: document.body.dataset.state,
  live: document.body.dataset.live,
  toast: document.getElementById('toast').hidden ? null : document.getElementById('toast').textContent,
  gate: document.getElementById('gate').hidden ? null : document.getElementById('gate').textContent.trim(),
  library: [...document.querySelectorAll('#library .title')].map((c) => c.textContent),
  playing: document.getElementById('movie-title').textContent,
  action: document.getElementById('playpause').dataset.action,
  errors: window.__errors || null,
}))()"#;

impl<'a> Page<'a> {
    fn open(party: &'a Party) -> Page<'a> {
        let mut browser = Browser::launch().expect("chromium starts");
        browser
            .emulate_device(1280, 900, 1.0, false)
            .expect("desktop emulation");
        // In every document from the start: script errors are collected, and the page's
        // confirmations (end party, revoke) are answered yes.
        browser
            .call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": "window.__errors = []; \
                    addEventListener('error', (e) => window.__errors.push(String(e.message))); \
                    window.confirm = () => true;" }),
            )
            .expect("CDP Page.addScriptToEvaluateOnNewDocument");
        // The clipboard, as for a page the host is looking at.
        browser
            .call(
                "Emulation.setFocusEmulationEnabled",
                json!({ "enabled": true }),
            )
            .expect("CDP Emulation.setFocusEmulationEnabled");
        browser
            .call_browser(
                "Browser.grantPermissions",
                json!({ "origin": party.url(""),
                        "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"] }),
            )
            .expect("CDP Browser.grantPermissions");
        Page { browser, party }
    }

    /// Loads `path` of the party, after a blank page so that a change of fragment alone is
    /// a real load too.
    fn goto(&mut self, path: &str) {
        self.browser
            .navigate("about:blank")
            .expect("about:blank loads");
        let url = self.party.url(path);
        if let Err(e) = self.browser.navigate(&url) {
            self.fail(&format!("{url} does not load: {e:#}"));
        }
    }

    fn eval(&mut self, js: &str) -> Value {
        match self.browser.eval(js) {
            Ok(value) => value,
            Err(e) => self.fail(&format!("{e:#}")),
        }
    }

    fn check(&mut self, js: &str) -> bool {
        self.eval(js) == Value::Bool(true)
    }

    /// The page's state, the server's health, the page log and a screenshot.
    fn diagnose(&mut self) -> String {
        let state = self
            .browser
            .eval(PAGE_STATE)
            .unwrap_or_else(|e| Value::String(format!("(cannot read: {e:#})")));
        let shot = match self
            .browser
            .screenshot(Path::new(env!("CARGO_TARGET_TMPDIR")), "host")
        {
            Ok(path) => path.display().to_string(),
            Err(e) => format!("(none: {e:#})"),
        };
        format!(
            "page: {state:#}\nhealthz: {}\nscreenshot: {shot}\npage log:\n  {}",
            self.party.health(),
            self.browser.log().join("\n  ")
        )
    }

    fn fail(&mut self, what: &str) -> ! {
        let diagnosis = self.diagnose();
        panic!("{what}\n{diagnosis}");
    }

    /// Polls `condition` (a JavaScript boolean expression) until it holds, or fails.
    fn wait(&mut self, what: &str, condition: &str) {
        let deadline = Instant::now() + CONTROL_BUDGET;
        while !self.check(condition) {
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{what}: not true within {CONTROL_BUDGET:?} (`{condition}`)"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `/healthz` until `check` holds, or fails with `what`.
    fn wait_health(&mut self, what: &str, check: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + CONTROL_BUDGET;
        while !check(&self.party.health()) {
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{what}: /healthz did not show it within {CONTROL_BUDGET:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the library card given as a JavaScript expression.
    fn click_card(&mut self, card: &str) {
        self.eval(&format!("{card}.click(), true"));
    }

    fn click(&mut self, id: &str) {
        self.eval(&format!("document.getElementById('{id}').click(), true"));
    }

    /// Sets a form control's value and fires `input` and `change`, as letting go of it does.
    fn set(&mut self, id: &str, value: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.getElementById('{id}'); e.value = {value}; \
             e.dispatchEvent(new Event('input', {{ bubbles: true }})); \
             e.dispatchEvent(new Event('change', {{ bubbles: true }})); return true; }})()",
            value = json!(value)
        ));
    }

    /// The library card of the title called `name`, as a JavaScript expression.
    fn card(name: &str) -> String {
        format!(
            "[...document.querySelectorAll('#library .title')].find((c) => c.querySelector('.name').textContent === {})",
            json!(name)
        )
    }

    fn assert_no_errors(&mut self) {
        let errors = self.eval("window.__errors");
        if errors.as_array().is_none_or(|e| !e.is_empty()) {
            self.fail(&format!("the page threw: {errors}"));
        }
    }
}

fn movie_title(health: &Value) -> &str {
    health["movie"]["title"].as_str().unwrap_or("")
}

fn movie_state(health: &Value) -> &str {
    health["movie"]["state"].as_str().unwrap_or("")
}

#[test]
fn host_dashboard_drives_the_running_party() {
    let party = Party::start();
    let mut page = Page::open(&party);
    page.goto(&format!("/host#key={HOST_KEY}"));
    page.wait(
        "the dashboard opens",
        "document.body.dataset.state === 'ready'",
    );

    // The key left the address bar (it stays in this tab's storage).
    let href = page.eval("location.href");
    assert!(
        !href.as_str().unwrap().contains(HOST_KEY) && !href.as_str().unwrap().contains('#'),
        "the key is still in the address bar: {href}"
    );

    // The library: both movies with their length and a thumbnail that loaded; the broken
    // file greyed out with its reason, and not selectable.
    let blue = Page::card(BLUE_NAME);
    let red = Page::card("red");
    let broken = Page::card("broken");
    let length = hms(MOVIE_SECONDS);
    for card in [&blue, &red] {
        page.wait(
            "a movie shows its length and thumbnail",
            &format!(
                "(() => {{ const c = {card}; const img = c && c.querySelector('.thumb img'); \
                 return !!img && img.complete && img.naturalWidth > 0 \
                   && c.querySelector('.meta').textContent === '{length}'; }})()"
            ),
        );
    }
    page.wait(
        "the broken file is greyed out with a reason",
        &format!(
            "(() => {{ const c = {broken}; return !!c && c.disabled && c.classList.contains('error') \
             && c.querySelector('.meta').textContent.length > 0 && !c.querySelector('img'); }})()"
        ),
    );
    assert!(
        page.check(
            "!document.querySelector('#library b, #library i') && \
             !document.querySelector('#library').innerHTML.includes('<b>')"
        ),
        "the file name {BLUE_FILE:?} was read as markup"
    );

    // The party starts live; the mic is not configured, so its switch is off and disabled.
    page.wait(
        "the live panel shows",
        "document.body.dataset.live === 'true' && !document.getElementById('live-panel').hidden",
    );
    assert!(
        page.check("document.getElementById('live-mic').disabled"),
        "the mic switch is usable without a mic"
    );

    // End the party (confirm answered yes), then go live with the blue title.
    page.click("end-party");
    page.wait(
        "ending shows the go-live controls",
        "document.body.dataset.live === 'false' && !document.getElementById('setup').hidden",
    );
    let state = party.get("/api/party", None);
    assert_eq!(state["live"], false, "{state}");
    page.click_card(&broken);
    page.click_card(&blue);
    assert!(
        page.check(&format!(
            "{blue}.getAttribute('aria-pressed') === 'true' && \
             {broken}.getAttribute('aria-pressed') === 'false'"
        )),
        "selecting: blue must be chosen, the broken file never"
    );
    page.click("go-live");
    page.wait_health("Go live plays the blue title", |h| {
        movie_title(h) == BLUE_FILE && movie_state(h) == "playing"
    });
    let state = party.get("/api/party", None);
    assert_eq!(state["live"], true, "{state}");
    page.wait(
        "the page shows the blue title playing",
        &format!(
            "document.getElementById('movie-title').textContent === {} && \
             document.getElementById('playpause').dataset.action === 'pause' && \
             !{blue}.querySelector('.now').hidden",
            json!(BLUE_FILE)
        ),
    );

    // Pause, seek while paused (the position then stays put), play.
    page.click("playpause");
    page.wait_health("pause", |h| movie_state(h) == "paused");
    page.wait(
        "the button offers play",
        "document.getElementById('playpause').dataset.action === 'play'",
    );
    let before = party.health()["movie"]["position_s"]
        .as_f64()
        .unwrap_or(0.0);
    let target = if before < 2.0 { 3.0 } else { 1.0 };
    page.wait(
        "the timeline knows the length",
        "!document.getElementById('timeline').disabled && \
         Number(document.getElementById('timeline').max) > 3.5",
    );
    page.set("timeline", &target.to_string());
    page.wait_health("seek", |h| {
        h["movie"]["position_s"]
            .as_f64()
            .is_some_and(|p| (p - target).abs() < 0.3)
    });
    page.click("playpause");
    page.wait_health("play", |h| movie_state(h) == "playing");

    // Next title: the broken file is skipped.
    page.click("next");
    page.wait_health("next title", |h| movie_title(h) == RED_FILE);
    page.wait(
        "the library marks the red title as playing",
        &format!("!{red}.querySelector('.now').hidden && {blue}.querySelector('.now').hidden"),
    );

    // Layout, webcam, volume and ducking, each on the running pipeline.
    page.set("live-layout", "side-panel");
    page.wait_health("layout switch", |h| h["layout"] == "side-panel");
    page.wait(
        "the webcam switch is on",
        "document.getElementById('live-webcam').checked && !document.getElementById('live-webcam').disabled",
    );
    page.click("live-webcam");
    page.wait_health("webcam off", |h| h["webcam"] == "off");
    page.set("volume", "50");
    page.wait_health("volume", |h| {
        h["movie_volume"]
            .as_f64()
            .is_some_and(|v| (v - 0.5).abs() < 0.01)
    });
    page.set("duck", "30");
    page.wait_health("ducking", |h| {
        h["duck_db"]
            .as_f64()
            .is_some_and(|v| (v - 30.0).abs() < 0.01)
    });
    // The movie kept playing through all of it: nothing restarted the stream.
    assert_eq!(movie_title(&party.health()), RED_FILE);

    // An error from the API shows with the server's own words.
    page.eval(
        "(() => { const s = document.getElementById('live-layout'); s.add(new Option('nope', 'nope')); \
         s.value = 'nope'; s.dispatchEvent(new Event('change')); return true; })()",
    );
    page.wait(
        "the server's refusal shows in a toast",
        "!document.getElementById('toast').hidden && \
         document.getElementById('toast').textContent.includes('unknown layout `nope`')",
    );

    // A viewer who chats shows in the viewer list (polled every 3 s).
    let (status, session) =
        party.request(reqwest::Method::POST, "/api/session", None, Some(json!({})));
    assert_eq!(status, 200, "{session}");
    let (status, posted) = party.request(
        reqwest::Method::POST,
        "/api/chat",
        None,
        Some(json!({ "session": session["token"], "nick": "alice_42", "text": "hi" })),
    );
    assert_eq!(status, 201, "{posted}");
    page.wait(
        "the viewer list shows the nickname",
        "[...document.querySelectorAll('#viewer-list .nick')].some((n) => n.textContent === 'alice_42')",
    );

    // A video stream shows with its quality: a WebRTC offer that never connects, capped at
    // 720p as the viewer page's menu does.
    let location = party.rt.block_on(async {
        let offer =
            std::fs::read_to_string("../shared/data/sdp/chrome120_offer_sendrecv_audio_video.sdp")
                .expect("shared/ sits beside the checkout");
        let response = party
            .http
            .post(party.url("/whep"))
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201, "the WHEP offer");
        response.headers()["location"].to_str().unwrap().to_owned()
    });
    let (status, body) = party.request(
        reqwest::Method::POST,
        &format!("{location}/quality"),
        None,
        Some(json!({ "quality": "720p" })),
    );
    assert_eq!(status, 204, "{body}");
    let id = location.trim_start_matches("/whep/");
    page.wait(
        "the viewers card lists the stream, capped and connecting",
        &format!(
            "(() => {{ const row = document.querySelector('#stream-list li[data-id={id}]');              return document.getElementById('stream-summary').textContent === '1 stream' && !!row                && row.querySelector('.rendition').textContent === '720p H264 · picked 720p'                && row.querySelector('.link').textContent === 'connecting…'                && !row.classList.contains('struggling'); }})()",
            id = json!(id)
        ),
    );

    // Share: the plain viewer link (the party is public).
    let link = page.eval("document.getElementById('share-link').value");
    assert_eq!(link, json!(party.url("/")));
    assert!(page.check("document.getElementById('invite-note').hidden"));
    page.click("share-copy");
    page.wait(
        "Copy puts the viewer link on the clipboard",
        &format!(
            "navigator.clipboard.readText().then((t) => t === {}, () => false)",
            json!(party.url("/"))
        ),
    );

    // Restream: a target added from the card is listed with its key hidden and its state
    // (nothing listens on port 9 here, so it keeps retrying, and says why), and goes away.
    page.wait(
        "the restream card says it is not restreaming",
        "document.getElementById('restream-list').textContent === 'Not restreaming.'",
    );
    page.eval(
        "document.getElementById('restream-url').value = 'rtmp://127.0.0.1:9/live/sekrit-key-42', \
         document.getElementById('restream-form').requestSubmit(), true",
    );
    page.wait(
        "the target is listed without its key, retrying with the reason",
        "(() => { const row = [...document.querySelectorAll('#restream-list li')] \
             .find((li) => li.querySelector('.nick')); \
           return !!row && document.getElementById('restream-url').value === '' \
             && row.querySelector('.nick').textContent === 'rtmp://127.0.0.1:9/live/••••' \
             && row.dataset.state === 'retrying' \
             && row.querySelector('.since').textContent.startsWith('retrying ('); })()",
    );
    assert!(
        !page.check("document.body.innerHTML.includes('sekrit-key-42')"),
        "the stream key is in the page"
    );
    let targets = party.health()["restream"].clone();
    assert_eq!(
        targets[0]["url"], "rtmp://127.0.0.1:9/live/••••",
        "{targets}"
    );
    page.eval("document.querySelector('#restream-list li button').click(), true");
    page.wait(
        "Remove takes the target away",
        "document.getElementById('restream-list').textContent === 'Not restreaming.'",
    );
    assert_eq!(party.health()["restream"], json!([]));

    // A moderator link: shown once, listed, working, and revocable.
    let label = "Mallory <b>mod</b>";
    page.eval(&format!(
        "document.getElementById('mod-label').value = {}, \
         document.getElementById('mod-form').requestSubmit(), true",
        json!(label)
    ));
    page.wait(
        "the new moderator link shows",
        "!document.getElementById('mod-reveal').hidden && \
         document.getElementById('mod-link').value.includes('#mod=')",
    );
    let mod_link = page.eval("document.getElementById('mod-link').value");
    let mod_key = mod_link
        .as_str()
        .unwrap()
        .split("#mod=")
        .nth(1)
        .unwrap()
        .to_owned();
    let listed = party.get("/api/moderators", Some(HOST_KEY));
    let moderator = listed["moderators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["label"] == label)
        .unwrap_or_else(|| panic!("/api/moderators does not list {label:?}: {listed}"))
        .clone();
    let (status, _) = party.request(reqwest::Method::GET, "/api/viewers", Some(&mod_key), None);
    assert_eq!(status, 200, "the moderator link's key does not work");
    page.wait(
        "the moderator list shows the label as text",
        &format!(
            "[...document.querySelectorAll('#mod-list .label')].some((l) => l.textContent === {}) && \
             !document.querySelector('#mod-list b')",
            json!(label)
        ),
    );
    page.eval(&format!(
        "document.querySelector('#mod-list li[data-id={}] button').click(), true",
        json!(moderator["id"])
    ));
    page.wait(
        "revoking greys the link out",
        &format!(
            "!!document.querySelector('#mod-list li.revoked[data-id={}]')",
            json!(moderator["id"])
        ),
    );
    assert!(
        page.check("document.getElementById('mod-reveal').hidden"),
        "the revoked link is still on show"
    );
    let (status, _) = party.request(reqwest::Method::GET, "/api/viewers", Some(&mod_key), None);
    assert_eq!(status, 403, "a revoked moderator link still works");
    page.assert_no_errors();

    // The key kept in this tab opens the dashboard again without the fragment.
    page.goto("/host");
    page.wait(
        "the stored key opens the dashboard",
        "document.body.dataset.state === 'ready'",
    );

    // A wrong key shows what to open instead, and is forgotten.
    let needs_link = "document.body.dataset.state === 'needs-key' && \
                      document.getElementById('dash').hidden && \
                      document.getElementById('gate-text').textContent === \
                      'This page needs the host link printed when cowatch started.'";
    page.goto("/host#key=not-the-host-key");
    page.wait("a wrong key shows the host-link message", needs_link);
    page.goto("/host");
    page.wait("without any key, the host-link message shows", needs_link);
    page.assert_no_errors();

    // The keys travel in headers only: no request line the page made (thumbnails included)
    // carries one, where a reverse proxy's access log would keep it.
    let requests = page.browser.requests();
    assert!(
        requests.iter().any(|r| r.contains("/thumbnail")),
        "no thumbnail request recorded: {requests:?}"
    );
    let leaks: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains(HOST_KEY) || r.contains(&mod_key))
        .collect();
    assert!(leaks.is_empty(), "a key in a request line: {leaks:?}");
}

/// Seconds as the page shows them, h:mm:ss.
fn hms(seconds: u32) -> String {
    format!(
        "{}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}
