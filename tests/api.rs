//! The JSON API as its callers meet it, over real HTTP on 127.0.0.1: who may call what, what
//! the host's controls do to the picture a viewer decodes, what survives a restart, and how bad
//! input is refused (a 4xx with one line of reason, and nothing changed).

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use cowatch::chat::{Chat, ChatEvent};
use cowatch::library::Library;
use cowatch::pipeline::layout::{Layout, Rect};
use cowatch::pipeline::source::{MicSource, WebcamSource};
use cowatch::pipeline::{Pipeline, Settings};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ── a server and a client ────────────────────────────────────────────────────────────────

/// One answer, as a client sees it.
struct Reply {
    status: u16,
    content_type: String,
    bytes: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// The web app on a free loopback port, stoppable (a restart must really stop the first
/// server), with a client that checks the shape of every refusal.
struct Server {
    base: String,
    http: reqwest::Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    /// Every refusal's body, to check at the end that none carries a secret.
    refusals: Mutex<Vec<String>>,
}

impl Server {
    async fn start(state: cowatch::web::AppState) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let app = cowatch::web::app(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            stop,
            task,
            refusals: Mutex::default(),
        }
    }

    /// Stops serving and waits until the app (and everything it holds) is gone.
    async fn stop(self) {
        drop(self.http);
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops within 10 s")
            .unwrap();
    }

    /// `method path` with `Authorization: Bearer key` when given, and `body` as
    /// `application/json` when given.
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let reply = Reply {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            bytes: response.bytes().await.unwrap().to_vec(),
        };
        if reply.status >= 400 {
            // Every refusal is one plain-text line that says why.
            let text = reply.text();
            assert!(
                reply.content_type.starts_with("text/plain"),
                "{method} {path}: refusal of type {:?}: {text:?}",
                reply.content_type
            );
            assert!(
                text.ends_with('\n')
                    && text.trim_end().lines().count() == 1
                    && text.trim().len() > 5,
                "{method} {path}: refusal is not one line of reason: {text:?}"
            );
            self.refusals.lock().unwrap().push(text);
        }
        reply
    }

    async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        self.call(Method::GET, path, key, None).await
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, key, Some(&body.to_string()))
            .await
    }

    /// A GET that must succeed, as JSON.
    async fn read(&self, path: &str, key: Option<&str>) -> Value {
        let r = self.get(path, key).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// A POST that must get `status`; returns the reply.
    async fn expect(&self, path: &str, key: Option<&str>, body: Value, status: u16) -> Reply {
        let r = self.post(path, key, body.clone()).await;
        assert_eq!(r.status, status, "POST {path} {body}: {}", r.text());
        r
    }

    /// A moderator link minted by the host: (id, key).
    async fn mint_moderator(&self, label: &str) -> (String, String) {
        let r = self
            .expect(
                "/api/moderators",
                Some(HOST_KEY),
                json!({ "label": label }),
                201,
            )
            .await
            .json();
        (
            r["id"].as_str().unwrap().to_owned(),
            r["key"].as_str().unwrap().to_owned(),
        )
    }

    /// A viewer's page saying hello: its session token.
    async fn session(&self) -> String {
        let r = self
            .expect("/api/session", None, json!({}), 200)
            .await
            .json();
        assert_eq!(r["role"], "viewer", "{r}");
        r["token"].as_str().unwrap().to_owned()
    }

    /// A party viewer's message.
    async fn say(&self, session: &str, nick: &str, text: &str) -> Reply {
        self.post(
            "/api/chat",
            None,
            json!({ "session": session, "nick": nick, "text": text }),
        )
        .await
    }

    /// A moderator action that must apply.
    async fn moderate(&self, key: &str, action: Value) {
        let r = self.expect("/api/mod", Some(key), action, 200).await.json();
        assert_eq!(r["applied"], true, "{r}");
    }

    /// `/healthz`.
    async fn health(&self) -> Value {
        self.read("/healthz", None).await
    }

    /// Checks that no secret appears in any refusal seen so far, nor in what anyone (or the
    /// host and moderators) can read.
    async fn assert_keeps_secrets(&self, secrets: &[&str]) {
        let mut pages = vec![
            (
                "GET /api/party".to_owned(),
                self.get("/api/party", None).await.text(),
            ),
            (
                "GET /healthz".to_owned(),
                self.get("/healthz", None).await.text(),
            ),
            (
                "GET /metrics".to_owned(),
                self.get("/metrics", None).await.text(),
            ),
        ];
        for path in [
            "/api/moderators",
            "/api/mod/audit",
            "/api/mod/state",
            "/api/viewers",
        ] {
            pages.push((
                format!("GET {path}"),
                self.get(path, Some(HOST_KEY)).await.text(),
            ));
        }
        for refusal in self.refusals.lock().unwrap().iter() {
            pages.push(("a refusal".to_owned(), refusal.clone()));
        }
        for (what, text) in &pages {
            for secret in secrets {
                assert!(!text.contains(secret), "{what} shows a secret: {text:?}");
            }
        }
    }
}

/// A party: the pipeline, its chat, and the web app over them.
struct Party {
    server: Server,
    pipeline: Pipeline,
    chat: Chat,
}

impl Party {
    /// Starts `settings` with `library` and the store in `data_dir` (host key [`HOST_KEY`]).
    async fn start(settings: Settings, library: Option<Library>, data_dir: &Path) -> Party {
        let pipeline = Pipeline::start(settings)
            .unwrap_or_else(|e| panic!("the pipeline does not start: {e}"));
        let broadcaster = broadcaster(&pipeline, 10).await;
        let mut state = state(&pipeline, &broadcaster, data_dir, None);
        let chat = state.chat.clone();
        state.library = library;
        Party {
            server: Server::start(state).await,
            pipeline,
            chat,
        }
    }

    /// Stops the server, then the pipeline.
    async fn stop(self) {
        self.server.stop().await;
        self.pipeline.shutdown().await;
    }
}

/// The demo party: a scrolling picture with a running clock, no webcam, no mic.
fn demo() -> Settings {
    demo_settings(WebcamSource::None, "side-panel", 800)
}

/// A library of movies made on the spot in `root/movies`, probed: ids by file name.
fn library(root: &Path, movies: &[(&str, [u8; 3], u32)]) -> (Library, Vec<String>) {
    let dir = root.join("movies");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, colour, seconds) in movies {
        make_movie(&dir.join(name), *colour, *seconds);
    }
    let library = Library::open(&dir, &root.join("cache")).unwrap();
    assert!(
        library.wait_probed(Duration::from_secs(60)),
        "library not probed in time: {:?}",
        library.titles()
    );
    let ids = movies
        .iter()
        .map(|(name, ..)| {
            library
                .titles()
                .into_iter()
                .find(|t| t.path.file_name().is_some_and(|f| f == *name))
                .unwrap_or_else(|| panic!("{name} is not in the library"))
                .id
        })
        .collect();
    (library, ids)
}

/// `key` with its last character changed: the same length, the wrong key.
fn wrong_key(key: &str) -> String {
    let mut wrong = key[..key.len() - 1].to_owned();
    wrong.push(if key.ends_with('A') { 'B' } else { 'A' });
    wrong
}

/// The party messages viewers would see now: (login, text), oldest first.
fn said(chat: &Chat) -> Vec<(String, String)> {
    chat.backlog()
        .into_iter()
        .filter_map(|e| match e {
            ChatEvent::Message(m) => Some((m.sender.login, m.text)),
            _ => None,
        })
        .collect()
}

/// The share of the movie area that visibly changed between two pictures: a channel moved by
/// more than the encoder's own noise (it keeps refining a still picture for a while).
fn changed(a: &image::RgbImage, b: &image::RgbImage, rect: Rect) -> f64 {
    let (mut hit, mut n) = (0u32, 0u32);
    for y in (rect.y..rect.y + rect.height as i32).step_by(2) {
        for x in (rect.x..rect.x + rect.width as i32).step_by(2) {
            let (p, q) = (
                a.get_pixel(x as u32, y as u32),
                b.get_pixel(x as u32, y as u32),
            );
            if (0..3).any(|c| p[c].abs_diff(q[c]) > 40) {
                hit += 1;
            }
            n += 1;
        }
    }
    f64::from(hit) / f64::from(n)
}

/// How much of the movie area changes over half a second of the stream (the demo scrolls:
/// about a fifth of it).
fn motion(viewer: &Viewer, movie: Rect) -> f64 {
    let a = viewer.fresh_frame();
    std::thread::sleep(Duration::from_millis(500));
    changed(&a, &viewer.fresh_frame(), movie)
}

/// Above this share of the movie area changing in half a second, the picture moves (the
/// demo's scrolling changes about a fifth of it); below [`STILL`], it stands still.
const MOVING: f64 = 0.05;
/// See [`MOVING`].
const STILL: f64 = 0.01;

/// Waits until the viewer sees the movie area moving (or standing still); fails after 5 s.
fn wait_motion(viewer: &Viewer, movie: Rect, moving: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = motion(viewer, movie);
        if (moving && m > MOVING) || (!moving && m < STILL) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: after 5 s, {m:.4} of the movie area still changes in half a second \
             (expected {} {})",
            if moving { "more than" } else { "less than" },
            if moving { MOVING } else { STILL }
        );
    }
}

/// Polls `/healthz` until the movie position is within 0.5 s of `target`; fails after
/// `within`.
async fn wait_position(api: &Server, target: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let h = api.health().await;
        let position = h["movie"]["position_s"].as_f64();
        if position.is_some_and(|p| (p - target).abs() <= 0.5) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "movie at {position:?} s, {within:?} after seeking to {target} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ── who may call what ────────────────────────────────────────────────────────────────────

/// One endpoint with a body it accepts, and what success looks like.
struct Endpoint {
    method: Method,
    path: String,
    body: Option<String>,
    ok: u16,
}

fn endpoint(method: Method, path: impl Into<String>, body: Option<Value>, ok: u16) -> Endpoint {
    Endpoint {
        method,
        path: path.into(),
        body: body.map(|b| b.to_string()),
        ok,
    }
}

impl Endpoint {
    async fn call(&self, api: &Server, key: Option<&str>) -> Reply {
        api.call(self.method.clone(), &self.path, key, self.body.as_deref())
            .await
    }

    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What a refused call must not have changed: the party's state as the host, a moderator and
/// a viewer can read it.
async fn snapshot(api: &Server) -> Value {
    let party = api.read("/api/party", None).await;
    let health = api.health().await;
    json!({
        "live": party["live"],
        "party_chat": party["party_chat"],
        "room": party["room"],
        "title": health["movie"]["title"],
        "movie_state": health["movie"]["state"],
        // The refused seek asks for 25 s; the movie does not get that far by itself.
        "under_20_s": health["movie"]["position_s"].as_f64().is_some_and(|p| p < 20.0),
        "layout": health["layout"],
        "webcam": health["webcam"],
        "mic": health["mic"],
        "volume": health["movie_volume"],
        "duck_db": health["duck_db"],
        "current": api.read("/api/library", Some(HOST_KEY)).await["current"],
        "moderators": api.read("/api/moderators", Some(HOST_KEY)).await,
        "audit": api.read("/api/mod/audit", Some(HOST_KEY)).await,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_lets_in_exactly_its_roles() {
    let root = scratch("api-roles");
    let (library, ids) = library(
        &root,
        &[("a_red.mkv", MOVIE_RED, 30), ("b_blue.mkv", MOVIE_BLUE, 5)],
    );
    let (red, blue) = (&ids[0], &ids[1]);
    let mut settings = settings(
        &root.join("movies/a_red.mkv"),
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        "side-panel",
    );
    settings.mic = MicSource::Description("audiotestsrc is-live=true wave=silence".into());
    settings.bitrate_kbps = 500;
    let party = Party::start(settings, Some(library), &scratch_data()).await;
    let api = &party.server;

    let viewer = api.session().await;
    let (_, mod_key) = api.mint_moderator("alice").await;
    let (victim_id, victim_key) = api.mint_moderator("bob").await;
    let wrong_host = wrong_key(HOST_KEY);
    let wrong_mod = wrong_key(&mod_key);
    assert_eq!(wrong_host.len(), HOST_KEY.len());

    // Each with a body it accepts: a refusal must come from the role, not the body.
    let host_only = [
        endpoint(Method::POST, "/api/control/play", None, 200),
        endpoint(Method::POST, "/api/control/pause", None, 200),
        endpoint(
            Method::POST,
            "/api/control/seek",
            Some(json!({ "position_s": 25.0 })),
            200,
        ),
        endpoint(Method::POST, "/api/control/next", None, 200),
        endpoint(
            Method::POST,
            "/api/control/load",
            Some(json!({ "title": blue })),
            200,
        ),
        endpoint(
            Method::POST,
            "/api/control/layout",
            Some(json!({ "layout": "inset" })),
            200,
        ),
        endpoint(
            Method::POST,
            "/api/control/webcam",
            Some(json!({ "on": false })),
            200,
        ),
        endpoint(
            Method::POST,
            "/api/control/mic",
            Some(json!({ "on": false })),
            200,
        ),
        endpoint(
            Method::POST,
            "/api/control/audio",
            Some(json!({ "volume": 0.8 })),
            200,
        ),
        endpoint(
            Method::POST,
            "/api/phone-link",
            Some(json!({ "origin": "http://192.168.1.20:8080" })),
            200,
        ),
        endpoint(
            Method::POST,
            "/api/party/start",
            Some(json!({ "title": blue, "layout": "inset" })),
            200,
        ),
        endpoint(Method::POST, "/api/party/end", None, 200),
        endpoint(Method::GET, "/api/library", None, 200),
        endpoint(
            Method::GET,
            format!("/api/library/{red}/thumbnail"),
            None,
            200,
        ),
        endpoint(Method::GET, "/api/moderators", None, 200),
        endpoint(
            Method::POST,
            "/api/moderators",
            Some(json!({ "label": "carol" })),
            201,
        ),
        endpoint(
            Method::DELETE,
            format!("/api/moderators/{victim_id}"),
            None,
            200,
        ),
    ];
    let moderated = [
        endpoint(
            Method::POST,
            "/api/mod",
            Some(json!({ "action": "party_chat", "mode": "closed" })),
            200,
        ),
        endpoint(Method::GET, "/api/mod/audit", None, 200),
        endpoint(Method::GET, "/api/mod/state", None, 200),
        endpoint(Method::GET, "/api/viewers", None, 200),
    ];

    // Below the role: refused, and nothing changes.
    let before = snapshot(api).await;
    let outsiders: [(&str, Option<&str>, u16); 4] = [
        ("no key", None, 401),
        ("a viewer's session token", Some(&viewer), 403),
        (
            "a wrong key of the host key's length",
            Some(&wrong_host),
            403,
        ),
        (
            "a wrong key of a moderator key's length",
            Some(&wrong_mod),
            403,
        ),
    ];
    let host_outsiders =
        outsiders
            .iter()
            .copied()
            .chain([("a moderator key", Some(mod_key.as_str()), 403)]);
    for (who, key, status) in host_outsiders {
        for e in &host_only {
            let r = e.call(api, key).await;
            assert_eq!(r.status, status, "{} with {who}: {}", e.name(), r.text());
            if status == 401 {
                assert!(
                    r.text().contains("Authorization: Bearer"),
                    "{}: {}",
                    e.name(),
                    r.text()
                );
            }
        }
    }
    for (who, key, status) in outsiders {
        for e in &moderated {
            let r = e.call(api, key).await;
            assert_eq!(r.status, status, "{} with {who}: {}", e.name(), r.text());
        }
    }
    assert_eq!(
        snapshot(api).await,
        before,
        "refused calls changed the party"
    );
    assert_eq!(
        api.get("/api/mod/state", Some(&victim_key)).await.status,
        200,
        "a refused DELETE revoked the link"
    );

    // The moderator and the host get through the moderator endpoints.
    for key in [&mod_key, HOST_KEY] {
        for e in &moderated {
            let r = e.call(api, Some(key)).await;
            assert_eq!(
                r.status,
                e.ok,
                "{} with a moderator or host key: {}",
                e.name(),
                r.text()
            );
        }
    }
    assert_eq!(api.read("/api/party", None).await["party_chat"], "closed");

    // The host gets through every host-only endpoint, and each did its job.
    for e in &host_only {
        let r = e.call(api, Some(HOST_KEY)).await;
        assert_eq!(
            r.status,
            e.ok,
            "{} with the host key: {}",
            e.name(),
            r.text()
        );
        if e.path.ends_with("/thumbnail") {
            assert_eq!(r.content_type, "image/png");
            assert!(r.bytes.starts_with(b"\x89PNG"), "not a PNG");
        }
    }
    let health = api.health().await;
    let party_now = api.read("/api/party", None).await;
    assert_eq!(party_now["live"], false, "party/end: {party_now}");
    assert_eq!(health["movie"]["state"], "paused", "party/end: {health}");
    assert_eq!(
        health["movie"]["title"], "b_blue.mkv",
        "party/start: {health}"
    );
    assert_eq!(health["layout"], "inset", "{health}");
    assert_eq!(health["webcam"], "off", "{health}");
    assert_eq!(health["mic"], "muted", "{health}");
    assert_eq!(health["movie_volume"], 0.8, "{health}");
    let links = api.read("/api/moderators", Some(HOST_KEY)).await;
    assert!(
        links["moderators"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["label"] == "carol"),
        "{links}"
    );

    // A revoked moderator key stops working at once.
    for e in &moderated {
        let r = e.call(api, Some(&victim_key)).await;
        assert_eq!(
            r.status,
            403,
            "{} with a revoked key: {}",
            e.name(),
            r.text()
        );
    }

    // No key and no session token shows anywhere.
    api.assert_keeps_secrets(&[HOST_KEY, &mod_key, &victim_key, &viewer])
        .await;

    // A key in the thumbnail's URL is not taken: keys travel in headers only, never where an
    // access log keeps them.
    let thumbnail = format!("/api/library/{red}/thumbnail");
    let r = api.get(&format!("{thumbnail}?key={HOST_KEY}"), None).await;
    assert_eq!(r.status, 401, "thumbnail with ?key=: {}", r.text());
    let r = api.get(&thumbnail, Some(HOST_KEY)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    party.stop().await;
}

// ── controls ─────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_show_on_the_stream() {
    let root = scratch("api-controls");
    let (library, ids) = library(
        &root,
        &[
            ("a_red.mkv", MOVIE_RED, 20),
            ("b_blue.mkv", MOVIE_BLUE, 10),
            ("c_green.mkv", WEBCAM_GREEN, 10),
        ],
    );
    let party = Party::start(
        demo_settings(WebcamSource::None, "side-panel", 1500),
        Some(library),
        &scratch_data(),
    )
    .await;
    let api = &party.server;
    let movie = Layout::builtin("side-panel").unwrap().movie;
    let viewer = Viewer::watch(&party.pipeline);
    let host = Some(HOST_KEY);

    // The demo's picture moves.
    wait_motion(&viewer, movie, true, "the demo playing");

    // Paused: the picture comes to rest (the viewer sees it a moment later under load) and
    // stays still, while the stream goes on.
    api.expect("/api/control/pause", host, json!({}), 200).await;
    assert_eq!(api.health().await["movie"]["state"], "paused");
    wait_motion(&viewer, movie, false, "the movie after pause");
    let frames = viewer.frames();
    let paused = motion(&viewer, movie);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        paused < STILL,
        "the paused movie moved again: {paused:.4} of it changed"
    );
    assert!(
        viewer.frames() >= frames + 20,
        "the stream stalled while paused: {frames} → {} frames in 1 s",
        viewer.frames()
    );

    // Playing again: it moves again.
    api.expect("/api/control/play", host, json!({}), 200).await;
    assert_eq!(api.health().await["movie"]["state"], "playing");
    wait_motion(&viewer, movie, true, "the movie after play");

    // Loading a title from the library plays it.
    let titles = api.read("/api/library", host).await;
    let listed: Vec<&str> = titles["titles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "{titles}");
    let (red, blue, green) = (&ids[0], &ids[1], &ids[2]);
    api.expect("/api/control/load", host, json!({ "title": blue }), 200)
        .await;
    viewer.wait_for("blue title loaded", Duration::from_secs(5), |img| {
        expect_at(img, movie, MOVIE_BLUE, "movie")
    });
    assert_eq!(api.health().await["movie"]["title"], "b_blue.mkv");
    assert_eq!(
        api.read("/api/party", None).await["movie"]["title"],
        "b_blue.mkv"
    );
    assert_eq!(
        api.read("/api/library", host).await["current"],
        blue.as_str()
    );

    // Next: the title after the current one, not the first.
    let r = api
        .expect("/api/control/next", host, json!({}), 200)
        .await
        .json();
    assert_eq!(r["title"]["id"], green.as_str(), "{r}");
    viewer.wait_for("next title", Duration::from_secs(5), |img| {
        expect_at(img, movie, WEBCAM_GREEN, "movie")
    });
    assert_eq!(api.health().await["movie"]["title"], "c_green.mkv");

    // Seeking moves the position /healthz reports, forwards then backwards.
    api.expect("/api/control/load", host, json!({ "title": red }), 200)
        .await;
    viewer.wait_for("red title loaded", Duration::from_secs(5), |img| {
        expect_at(img, movie, MOVIE_RED, "movie")
    });
    let before = api.health().await["movie"]["position_s"].as_f64().unwrap();
    assert!(before < 8.0, "{before}");
    api.expect(
        "/api/control/seek",
        host,
        json!({ "position_s": 12.0 }),
        200,
    )
    .await;
    wait_position(api, 12.0, Duration::from_secs(2)).await;
    api.expect("/api/control/seek", host, json!({ "position_s": 3.0 }), 200)
        .await;
    wait_position(api, 3.0, Duration::from_secs(2)).await;
    let frames = viewer.frames();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        viewer.frames() >= frames + 20,
        "the stream stalled after seeking"
    );
    expect_at(
        &viewer.fresh_frame(),
        movie,
        MOVIE_RED,
        "movie after seeking",
    )
    .unwrap();

    drop(viewer);
    party.stop().await;
}

// ── restart ──────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_terms_audit_and_moderator_links_survive_a_restart() {
    let data = scratch_data();
    let party = Party::start(demo(), None, &data).await;
    let api = &party.server;
    let (link_id, mod_key) = api.mint_moderator("alice").await;
    let ban = json!({
        "action": "ban",
        "target": { "origin": "party", "login": "Troll" },
        "reason": "spamming links",
    });
    api.moderate(&mod_key, ban).await;
    api.moderate(
        &mod_key,
        json!({ "action": "add_blocked_term", "term": "Spoilers" }),
    )
    .await;
    api.moderate(
        &mod_key,
        json!({ "action": "party_chat", "mode": "closed" }),
    )
    .await;
    api.moderate(&mod_key, json!({ "action": "party_chat", "mode": "open" }))
        .await;
    let state_before = api.read("/api/mod/state", Some(&mod_key)).await;
    let audit_before = api.read("/api/mod/audit", Some(&mod_key)).await;
    let actions: Vec<&str> = audit_before["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["party_chat", "party_chat", "add_blocked_term", "ban"],
        "{audit_before}"
    );
    party.stop().await;

    // A new server, a new pipeline, a new chat: only the data directory is the same.
    let party = Party::start(demo(), None, &data).await;
    let api = &party.server;

    // The moderator link minted before still works.
    let state = api.read("/api/mod/state", Some(&mod_key)).await;
    assert_eq!(state["bans"], state_before["bans"], "{state}");
    assert_eq!(state["bans"][0]["login"], "troll", "{state}");
    assert_eq!(state["bans"][0]["reason"], "spamming links", "{state}");
    assert_eq!(
        state["blocked_terms"], state_before["blocked_terms"],
        "{state}"
    );
    assert_eq!(state["blocked_terms"][0]["term"], "Spoilers", "{state}");
    assert_eq!(state["party_chat"], "open", "{state}");
    assert_eq!(
        api.read("/api/mod/audit", Some(&mod_key)).await,
        audit_before
    );
    let links = api.read("/api/moderators", Some(HOST_KEY)).await;
    assert_eq!(links["moderators"][0]["id"], link_id.as_str(), "{links}");

    // The ban and the term still bite.
    let troll = api.session().await;
    let r = api.say(&troll, "troll", "I am back").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("banned"), "{}", r.text());
    let viewer = api.session().await;
    let r = api.say(&viewer, "watcher", "no SPOILERS please").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("blocked term"), "{}", r.text());
    assert_eq!(api.say(&viewer, "watcher", "hello").await.status, 201);
    assert_eq!(
        said(&party.chat),
        [("watcher".to_owned(), "hello".to_owned())]
    );

    party.stop().await;
}

// ── bad input ────────────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_reason_and_changes_nothing() {
    let root = scratch("api-bad-input");
    let (library, ids) = library(
        &root,
        &[("a_red.mkv", MOVIE_RED, 30), ("b_blue.mkv", MOVIE_BLUE, 3)],
    );
    let mut settings = settings(
        &root.join("movies/a_red.mkv"),
        WebcamSource::None,
        "side-panel",
    );
    settings.bitrate_kbps = 500;
    let party = Party::start(settings, Some(library), &scratch_data()).await;
    let api = &party.server;
    let host = Some(HOST_KEY);
    let (_, mod_key) = api.mint_moderator("alice").await;
    let token = api.session().await;

    // Party chat.
    let r = api.say(&token, "", "hi").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("nickname"), "{}", r.text());
    let long = "x".repeat(501);
    let r = api.say(&token, "alice", &long).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("500"), "the limit is named: {}", r.text());
    for (body, what) in [
        (
            json!({ "session": token, "nick": "alice", "text": "hi", "colour": "red" }).to_string(),
            "an unknown field",
        ),
        (r#"{"session":"#.to_owned(), "malformed JSON"),
        (
            json!({ "session": token, "nick": "alice" }).to_string(),
            "no text",
        ),
    ] {
        let r = api.call(Method::POST, "/api/chat", None, Some(&body)).await;
        assert_eq!(r.status, 400, "/api/chat with {what}: {}", r.text());
    }
    assert!(
        said(&party.chat).is_empty(),
        "a refused message reached the chat: {:?}",
        said(&party.chat)
    );
    let viewers = api.read("/api/viewers", host).await;
    assert_eq!(
        viewers["nicknames"],
        json!([]),
        "a refused message claimed a nickname"
    );
    // The limit itself is fine.
    let limit = "x".repeat(500);
    assert_eq!(api.say(&token, "alice", &limit).await.status, 201);
    assert_eq!(said(&party.chat), [("alice".to_owned(), limit)]);

    // Moderator actions.
    let state = api.read("/api/mod/state", Some(&mod_key)).await;
    let audit = api.read("/api/mod/audit", Some(&mod_key)).await;
    let r = api
        .post("/api/mod", Some(&mod_key), json!({ "action": "nuke" }))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("nuke"),
        "the unknown action is named: {}",
        r.text()
    );
    let r = api
        .call(
            Method::POST,
            "/api/mod",
            Some(&mod_key),
            Some(r#"{"action":"#),
        )
        .await;
    assert_eq!(r.status, 400, "malformed JSON: {}", r.text());
    assert_eq!(api.read("/api/mod/state", Some(&mod_key)).await, state);
    assert_eq!(api.read("/api/mod/audit", Some(&mod_key)).await, audit);
    assert_eq!(api.say(&token, "alice", "still here").await.status, 201);

    // Host controls.
    let health = api.health().await;
    let started = Instant::now();
    let position = health["movie"]["position_s"].as_f64().unwrap();
    for (body, what) in [
        (json!({ "position_s": -5.0 }), "a negative position"),
        (json!({ "position_s": 3600.0 }), "a position past the end"),
        (json!({ "position_s": 1e20 }), "a position past any end"),
        (json!({ "position_s": 1e19 }), "a position past any end"),
        (
            json!({ "position_s": "ten" }),
            "a position that is not a number",
        ),
        (
            json!({ "position_s": 1.0, "whence": "end" }),
            "an unknown field",
        ),
    ] {
        let r = api.post("/api/control/seek", host, body).await;
        assert_eq!(r.status, 400, "seek to {what}: {}", r.text());
    }
    let r = api
        .post("/api/control/seek", host, json!({ "position_s": 3600.0 }))
        .await;
    assert!(r.text().contains("past the end"), "{}", r.text());
    let r = api
        .post("/api/control/load", host, json!({ "title": "nope" }))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains("nope"),
        "the title is named: {}",
        r.text()
    );
    let r = api
        .post("/api/control/layout", host, json!({ "layout": "nope" }))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("nope"),
        "the layout is named: {}",
        r.text()
    );
    // A layout path outside the streamer's directories is refused at once, in words that do
    // not say whether it exists; a FIFO or a device would otherwise block or never end.
    let scratch = std::env::temp_dir().join(format!("cowatch-api-layouts-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let fifo = scratch.join("x.fifo.toml");
    let _ = std::fs::remove_file(&fifo);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let real = scratch.join("real.toml");
    std::fs::write(&real, include_str!("../pipelines/layouts/inset.toml")).unwrap();
    let mut texts = Vec::new();
    for spec in [
        fifo.to_str().unwrap(),
        "/dev/zero",
        real.to_str().unwrap(),
        "/nonexistent/real.toml",
    ] {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            api.post("/api/control/layout", host, json!({ "layout": spec })),
        )
        .await
        .unwrap_or_else(|_| panic!("layout {spec}: no answer (blocked on the file?)"));
        assert_eq!(r.status, 400, "layout {spec}: {}", r.text());
        texts.push(r.text().replace(spec, "PATH"));
    }
    assert_eq!(
        texts[2], texts[3],
        "an existing and a missing file outside read alike"
    );
    let _ = std::fs::remove_dir_all(&scratch);
    for (body, what) in [
        (json!({ "volume": 9.0 }), "volume 9"),
        (
            json!({ "volume": 0.5, "duck_db": 99.0 }),
            "a good volume with a bad ducking",
        ),
        (json!({}), "nothing to set"),
    ] {
        let r = api.post("/api/control/audio", host, body).await;
        assert_eq!(r.status, 400, "audio with {what}: {}", r.text());
    }
    let r = api
        .post("/api/moderators", host, json!({ "label": " " }))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = api
        .call(Method::DELETE, "/api/moderators/nope", host, None)
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    let now = api.health().await;
    let party_now = api.read("/api/party", None).await;
    assert_eq!(now["movie"]["title"], "a_red.mkv", "{now}");
    assert_eq!(now["movie"]["state"], "playing", "{now}");
    assert_eq!(now["layout"], "side-panel", "{now}");
    assert_eq!(party_now["movie_volume"], 1.0, "{party_now}");
    assert_eq!(party_now["duck_db"], health["duck_db"], "{party_now}");
    let moved = now["movie"]["position_s"].as_f64().unwrap() - position;
    assert!(
        (-0.1..started.elapsed().as_secs_f64() + 0.5).contains(&moved),
        "a refused seek moved the movie by {moved:.2} s"
    );
    let links = api.read("/api/moderators", host).await;
    assert_eq!(links["moderators"].as_array().unwrap().len(), 1, "{links}");

    // Going live checks everything before changing anything: with no webcam or mic to turn
    // on, the movie does not change either.
    for go in [
        json!({ "title": ids[1], "webcam": true }),
        json!({ "title": ids[1], "mic": true }),
    ] {
        let r = api.post("/api/party/start", host, go.clone()).await;
        assert_eq!(r.status, 400, "party/start {go}: {}", r.text());
        let title = api.health().await["movie"]["title"].clone();
        assert_eq!(title, "a_red.mkv", "party/start {go} changed the movie");
    }

    api.assert_keeps_secrets(&[HOST_KEY, &mod_key, &token])
        .await;

    // What still gets through, collected so that one run shows all of it.
    let mut problems = Vec::new();
    // A misspelt field of an action is refused, not dropped: the moderator would believe the
    // ban carries its reason.
    let ban = json!({
        "action": "ban",
        "target": { "origin": "party", "login": "alice" },
        "reson": "spam",
    });
    let r = api.post("/api/mod", Some(&mod_key), ban.clone()).await;
    if r.status != 400 || !r.text().contains("reson") {
        problems.push(format!(
            "POST /api/mod {ban} → {} {}",
            r.status,
            r.text().trim()
        ));
    }
    let ban = json!({
        "action": "ban",
        "target": { "origin": "party", "login": "bob", "nick": "bobby" },
    });
    let r = api.post("/api/mod", Some(&mod_key), ban.clone()).await;
    if r.status != 400 {
        problems.push(format!(
            "POST /api/mod {ban} → {} {}",
            r.status,
            r.text().trim()
        ));
    }
    let now = api.read("/api/mod/state", Some(&mod_key)).await;
    if now != state {
        problems.push(format!("  … and the bans are now {}", now["bans"]));
    }
    assert!(
        problems.is_empty(),
        "bad input got through:\n{}",
        problems.join("\n")
    );
    party.stop().await;
}

// ── party chat rules ─────────────────────────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_chat_refuses_banned_taken_and_closed() {
    let party = Party::start(demo(), None, &scratch_data()).await;
    let api = &party.server;
    let (_, mod_key) = api.mint_moderator("alice").await;
    let (a, b, c) = (
        api.session().await,
        api.session().await,
        api.session().await,
    );

    let r = api.say(&a, "Alice", "hello").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["text"], "hello", "{}", r.text());
    assert_eq!(api.say(&c, "troll", "first").await.status, 201);

    // A nickname belongs to one session.
    let r = api.say(&b, "alice", "I am Alice too").await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("taken"), "{}", r.text());

    // A banned nickname's next message is refused, whatever the session.
    api.moderate(
        &mod_key,
        json!({ "action": "ban", "target": { "origin": "party", "login": "troll" }, "reason": null }),
    )
    .await;
    let r = api.say(&c, "troll", "let me in").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("banned"), "{}", r.text());
    let r = api.say(&b, "TROLL", "a new session").await;
    assert!(
        r.status == 403 || r.status == 409,
        "{}: {}",
        r.status,
        r.text()
    );

    // Closed, then open again.
    api.moderate(
        &mod_key,
        json!({ "action": "party_chat", "mode": "closed" }),
    )
    .await;
    let r = api.say(&a, "Alice", "anyone?").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("closed"), "{}", r.text());
    api.moderate(&mod_key, json!({ "action": "party_chat", "mode": "open" }))
        .await;
    assert_eq!(api.say(&a, "Alice", "back").await.status, 201);

    assert_eq!(
        said(&party.chat),
        [
            ("alice".to_owned(), "hello".to_owned()),
            ("alice".to_owned(), "back".to_owned()),
        ],
        "the ban cleared the troll's message and nothing refused got through"
    );
    party.stop().await;
}
