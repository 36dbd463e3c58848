//! Moderation end to end in headless Chromium: a party served in-process, its chat bridged
//! from the Twitch-protocol test server and its moderation forwarded to the local Helix
//! stand-in; one browser on the viewer page, one on the same page opened from a moderator
//! link. The moderator works the page as a person would (hover a line, click its buttons),
//! and the test checks what the viewer sees, what the server refuses afterwards and what
//! reached "Twitch".
//!
//! Needs /usr/bin/chromium (Debian's `chromium` package); fails, never skips, without it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::helix::{Recorded, TestHelix, TestHelixConfig};
use common::twitch::TestServer;
use cowatch::broadcast::Broadcaster;
use cowatch::chat::Chat;
use cowatch::chat::bridge::{Bridge, BridgeConfig};
use cowatch::moderation::helix::{Helix, HelixConfig, Token};
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::source::WebcamSource;
use cowatch::shutdown::Shutdown;
use cowatch::tools::cdp::Browser;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// How long an action may take to show on another viewer's page.
const ACTION_BUDGET: Duration = Duration::from_secs(1);
/// How long the test polls for something the page should do: more than [`ACTION_BUDGET`],
/// because a loaded machine can hold up the DevTools round trips that look at the page.
const POLL_LIMIT: Duration = Duration::from_secs(5);

/// One party at a time, as in the other browser tests: two browsers and a demo pipeline are
/// enough for a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Twitch user the moderator acts on.
const SPAMMER: (&str, &str) = ("spammer", "4242");

/// A party with a Twitch bridge and Helix forwarding, on a runtime of its own so the test
/// thread is free to drive the browsers (whose calls block).
struct Party {
    addr: SocketAddr,
    chat: Chat,
    channel: String,
    helix: TestHelix,
    http: reqwest::Client,
    // Dropped in this order: the bridge and the server's handles first, the runtime last.
    _bridge: Bridge,
    _broadcaster: Broadcaster,
    _pipeline: Pipeline,
    rt: Runtime,
}

/// An HTTP answer: status and body.
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Party {
    fn start() -> Party {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let channel = format!("modparty{}", std::process::id());
        let pipeline = Pipeline::start(common::demo_settings(WebcamSource::None, "inset", 1000))
            .expect("the demo pipeline starts");
        let (addr, chat, broadcaster, bridge, helix) = rt.block_on(async {
            let helix = TestHelix::start(TestHelixConfig {
                broadcaster: (channel.clone(), "1001".into()),
                users: vec![(SPAMMER.0.into(), SPAMMER.1.into())],
                ..TestHelixConfig::default()
            })
            .await
            .expect("the Helix stand-in starts");
            let client = Helix::new(HelixConfig {
                base: helix.base(),
                client_id: helix.config().client_id.clone(),
                token: Token::new(helix.config().token.clone()),
                broadcaster_login: channel.clone(),
            })
            .expect("a Helix client");
            let broadcaster = common::broadcaster(&pipeline, 4).await;
            let state = common::state(
                &pipeline,
                &broadcaster,
                &common::scratch_data(),
                Some(client),
            );
            let chat = state.chat.clone();
            let server = TestServer::shared();
            let bridge = Bridge::start(
                BridgeConfig {
                    channel: channel.clone(),
                    credentials: None,
                    irc_addr: Some(server.addr()),
                },
                chat.clone(),
                &Shutdown::new(),
            );
            assert!(
                server.wait_joined(&channel, Duration::from_secs(10)).await,
                "the bridge did not join #{channel} on the test server within 10 s"
            );
            let addr = common::serve_app(cowatch::web::app(state)).await;
            (addr, chat, broadcaster, bridge, helix)
        });
        Party {
            addr,
            chat,
            channel,
            helix,
            http: reqwest::Client::new(),
            _bridge: bridge,
            _broadcaster: broadcaster,
            _pipeline: pipeline,
            rt,
        }
    }

    fn url(&self, rest: &str) -> String {
        format!("http://{}/{rest}", self.addr)
    }

    /// POSTs JSON to the party, with `key` as the bearer when given.
    fn post(&self, path: &str, key: Option<&str>, body: Value) -> Reply {
        self.rt.block_on(async {
            let mut request = self.http.post(self.url(path)).json(&body);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.expect("the party answers");
            Reply {
                status: response.status().as_u16(),
                body: response.text().await.expect("a body"),
            }
        })
    }

    /// Sends a Twitch PRIVMSG from [`SPAMMER`] and waits until the hub has it.
    fn twitch_says(&self, id: &str, text: &str) {
        let line = format!(
            "@badge-info=;badges=;color=#1E90FF;display-name=Spammer;emotes=;first-msg=0;flags=;\
             id={id};mod=0;room-id=1001;subscriber=0;tmi-sent-ts={ts};turbo=0;user-id={uid};\
             user-type= :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{text}",
            ts = cowatch::util::clock::unix_ms(),
            uid = SPAMMER.1,
            login = SPAMMER.0,
            channel = self.channel,
        );
        let got = self
            .rt
            .block_on(TestServer::shared().send(&self.channel, &line));
        assert_eq!(got, 1, "the bridge is not joined to #{}", self.channel);
        let deadline = Instant::now() + POLL_LIMIT;
        while !self
            .chat
            .backlog()
            .iter()
            .any(|e| e.message_id() == Some(id))
        {
            assert!(
                Instant::now() < deadline,
                "the hub did not get Twitch message {id}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the Helix stand-in until a moderation request matches `matches`.
    fn helix_request(&self, what: &str, matches: impl Fn(&Recorded) -> bool) -> Recorded {
        let deadline = Instant::now() + POLL_LIMIT;
        loop {
            let requests = self.helix.moderation_requests();
            if let Some(found) = requests.iter().find(|r| matches(r)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "Helix did not receive {what}; it received: {requests:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A party viewer chatting over HTTP, as the page would.
struct PartyViewer {
    session: String,
    nick: String,
}

impl PartyViewer {
    fn join(party: &Party, nick: &str) -> PartyViewer {
        let reply = party.post("api/session", None, json!({}));
        assert_eq!(reply.status, 200, "session: {}", reply.body);
        PartyViewer {
            session: reply.json()["token"].as_str().unwrap().to_owned(),
            nick: nick.to_owned(),
        }
    }

    fn say(&self, party: &Party, text: &str) -> Reply {
        party.post(
            "api/chat",
            None,
            json!({ "session": self.session, "nick": self.nick, "text": text }),
        )
    }
}

/// Notes, in the page, when each line is deleted (its content replaced), so the delay is
/// measured in the page rather than through DevTools round trips; and collects script errors.
const PAGE_PROBES: &str = r#"(() => {
  window.__errors = [];
  addEventListener('error', (e) => window.__errors.push(String(e.message)));
  const warn = console.warn.bind(console);
  console.warn = (...args) => { window.__errors.push(args.map(String).join(' ')); warn(...args); };
  window.__deletedAt = {};
  const messages = document.getElementById('messages');
  new MutationObserver((changes) => {
    const now = Date.now();
    for (const c of changes) {
      const t = c.target;
      if (t.parentNode === messages && t.classList.contains('deleted')) window.__deletedAt[t.dataset.id] ??= now;
    }
  }).observe(messages, { subtree: true, attributes: true, attributeFilter: ['class'] });
  return true;
})()"#;

/// The page's chat and moderation state in one evaluation, for failure messages.
const PAGE_STATE: &str = r#"(() => ({
  href: location.href,
  status: window.cowatch && window.cowatch.chat,
  toast: document.getElementById('mod-toast').textContent,
  error: document.getElementById('chat-error').textContent,
  errors: window.__errors || null,
  lines: [...document.getElementById('messages').children].slice(-8).map((l) => l.outerHTML),
}))()"#;

struct Page {
    name: &'static str,
    browser: Browser,
}

impl Page {
    fn open(name: &'static str, url: &str) -> Page {
        let mut browser = common::desktop_viewer();
        browser.navigate(url).expect("the viewer page loads");
        let mut page = Page { name, browser };
        page.eval(PAGE_PROBES);
        page
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

    fn fail(&mut self, what: &str) -> ! {
        let state = self
            .browser
            .eval(PAGE_STATE)
            .unwrap_or_else(|e| Value::String(format!("(cannot read: {e:#})")));
        let shot = match self
            .browser
            .screenshot(Path::new(env!("CARGO_TARGET_TMPDIR")), self.name)
        {
            Ok(path) => path.display().to_string(),
            Err(e) => format!("(none: {e:#})"),
        };
        panic!(
            "{} page: {what}\nstate: {state:#}\nscreenshot: {shot}\npage log:\n  {}",
            self.name,
            self.browser.log().join("\n  ")
        );
    }

    /// Polls `condition` (a JavaScript boolean expression) until it holds, or fails.
    fn wait(&mut self, what: &str, condition: &str) {
        let since = Instant::now();
        while !self.check(condition) {
            if since.elapsed() >= POLL_LIMIT {
                self.fail(&format!(
                    "{what}: not true within {POLL_LIMIT:?} (`{condition}`)"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn mouse(&mut self, kind: &str, x: f64, y: f64) {
        let mut event = json!({ "type": kind, "x": x, "y": y });
        if kind != "mouseMoved" {
            event["button"] = json!("left");
            event["clickCount"] = json!(1);
        }
        self.browser
            .call("Input.dispatchMouseEvent", event)
            .expect("CDP Input.dispatchMouseEvent");
    }

    /// The centre of the element `selector` finds, in viewport pixels, after scrolling it
    /// into view; `None` when there is no such element or it takes no room.
    fn centre(&mut self, selector: &str) -> Option<(f64, f64)> {
        let at = self.eval(&format!(
            "(() => {{ const e = {selector}; if (!e) return null; e.scrollIntoView({{ block: 'nearest' }}); \
             const r = e.getBoundingClientRect(); \
             return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"
        ));
        Some((at[0].as_f64()?, at[1].as_f64()?))
    }

    /// Clicks the element `selector` finds, as a mouse does: what is under the pointer at
    /// its centre gets the click, so a button still hidden would not.
    fn click(&mut self, selector: &str) {
        let Some((x, y)) = self.centre(selector) else {
            self.fail(&format!("nothing to click at `{selector}`"));
        };
        self.mouse("mouseMoved", x, y);
        self.mouse("mousePressed", x, y);
        self.mouse("mouseReleased", x, y);
    }

    /// Points at message line `id`, then clicks its moderator button of class `tool`.
    fn click_tool(&mut self, id: &str, tool: &str) {
        let Some((x, y)) = self.centre(&line(id)) else {
            self.fail(&format!("no line {id} to moderate"));
        };
        // Away first, so the hover is a fresh one: the buttons must not show until then.
        self.mouse("mouseMoved", 1.0, 1.0);
        let hidden = self.eval(&format!(
            "getComputedStyle({}.querySelector(':scope > .mod-tools')).opacity",
            line(id)
        ));
        if hidden != "0" {
            self.fail(&format!(
                "line {id}'s tools show without a hover (opacity {hidden})"
            ));
        }
        self.mouse("mouseMoved", x - 60.0, y);
        let button = format!(
            "{}.querySelector(':scope > .mod-tools > .{tool}')",
            line(id)
        );
        self.wait(
            &format!("the {tool} button shows on hover"),
            &format!(
                "(() => {{ const b = {button}; return !!b && getComputedStyle(b.parentNode).opacity === '1'; }})()"
            ),
        );
        self.click(&button);
    }

    /// Waits for the newest toast to contain `text`; returns it.
    fn toast_with(&mut self, text: &str) -> String {
        let needle = serde_json::to_string(text).unwrap();
        self.wait(
            &format!("a toast saying {needle}"),
            &format!(
                "(() => {{ const t = window.cowatch.chat.mod.toasts; \
                 return t.length > 0 && t[t.length - 1].text.includes({needle}); }})()"
            ),
        );
        self.eval("window.cowatch.chat.mod.toasts.at(-1).text")
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn assert_no_errors(&mut self) {
        let errors = self.eval("window.__errors");
        if errors.as_array().is_none_or(|e| !e.is_empty()) {
            self.fail(&format!("the page reported errors: {errors}"));
        }
    }
}

/// The JavaScript expression for the chat line of message `id`.
fn line(id: &str) -> String {
    format!("document.querySelector('#messages > [data-id=\"{id}\"]')")
}

/// A Twitch message id: a UUID, unique in this process.
fn message_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The mod deletes a Twitch message, bans a party nickname and times out a Twitch user from
/// their lines; the viewer's page follows within a second, the banned nickname is refused,
/// Helix receives exactly the Twitch side of it, a Twitch refusal reaches the moderator, the
/// viewer never sees a moderator's button, and the key leaves the address bar.
#[test]
fn a_moderator_deletes_bans_and_times_out_from_the_page() {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let party = Party::start();

    // A moderator link, minted by the host.
    let minted = party.post(
        "api/moderators",
        Some(common::HOST_KEY),
        json!({ "label": "alice" }),
    );
    assert_eq!(minted.status, 201, "minting a mod link: {}", minted.body);
    let key = minted.json()["key"].as_str().unwrap().to_owned();

    let mut viewer = Page::open("viewer", &party.url(""));
    let mut moderator = Page::open("mod", &party.url(&format!("#mod={key}")));
    moderator.wait(
        "the mod page knows it moderates",
        "window.cowatch.chat.mod && window.cowatch.chat.mod.on === true \
         && !document.getElementById('mod-badge').hidden",
    );
    let href = moderator.eval("location.href");
    assert!(
        !href.as_str().unwrap().contains(&key),
        "the key is still in the mod page's address: {href}"
    );
    for page in [&mut viewer, &mut moderator] {
        page.wait(
            "the chat socket is open",
            "window.cowatch.chat.socket === 'open'",
        );
    }

    // A Twitch line and a party troll's line.
    let twitch_id = message_id();
    party.twitch_says(&twitch_id, "buy followers at example.com");
    let troll = PartyViewer::join(&party, "troll");
    let posted = troll.say(&party, "hello from the troll");
    assert_eq!(
        posted.status, 201,
        "the troll's first post: {}",
        posted.body
    );
    let troll_id = posted.json()["id"].as_str().unwrap().to_owned();
    for page in [&mut viewer, &mut moderator] {
        for id in [&twitch_id, &troll_id] {
            page.wait(&format!("line {id} shows"), &format!("!!{}", line(id)));
        }
    }

    // 1. Delete the Twitch message: gone for the viewer within a second, and on Twitch.
    let clicked_ms = cowatch::util::clock::unix_ms();
    moderator.click_tool(&twitch_id, "mod-delete");
    viewer.wait(
        "the deleted message leaves the viewer's page",
        &format!(
            "{l}.classList.contains('deleted') && {l}.textContent.includes('message deleted') \
             && !{l}.textContent.includes('buy followers')",
            l = line(&twitch_id)
        ),
    );
    let deleted_ms = viewer
        .eval(&format!("window.__deletedAt['{twitch_id}'] ?? null"))
        .as_i64()
        .expect("the page noted the delete");
    let took = Duration::from_millis(u64::try_from(deleted_ms - clicked_ms).unwrap_or(0));
    assert!(
        took <= ACTION_BUDGET,
        "the delete reached the viewer {took:?} after the click, more than {ACTION_BUDGET:?}"
    );
    let delete = party.helix_request("the message delete", |r| {
        r.method == "DELETE" && r.path == "/moderation/chat"
    });
    assert_eq!(
        delete.query.get("message_id").map(String::as_str),
        Some(twitch_id.as_str())
    );
    assert_eq!(
        delete.query.get("broadcaster_id").map(String::as_str),
        Some("1001")
    );
    assert_eq!(
        delete.query.get("moderator_id").map(String::as_str),
        Some(party.helix.config().moderator.1.as_str())
    );
    moderator.toast_with("Message deleted");

    // 2. Ban the party troll from their line: their line goes, their next post is refused,
    // and Twitch hears nothing of a party nickname.
    let before = party.helix.moderation_requests().len();
    moderator.click_tool(&troll_id, "mod-ban");
    viewer.wait(
        "the troll's line leaves the viewer's page",
        &format!(
            "(() => {{ const l = {}; return !l || (l.classList.contains('deleted') \
             && !l.textContent.includes('hello from the troll')); }})()",
            line(&troll_id)
        ),
    );
    moderator.toast_with("troll banned");
    let refused = troll.say(&party, "you cannot stop me");
    assert_eq!(
        refused.status, 403,
        "the banned troll's post: {}",
        refused.body
    );
    assert!(
        refused.body.contains("banned"),
        "the refusal does not say why: {}",
        refused.body
    );
    let after = party.helix.moderation_requests();
    assert_eq!(
        after.len(),
        before,
        "a party ban reached Twitch: {:#?}",
        &after[before..]
    );
    // The panel lists the ban, with its unban button.
    moderator.click("document.getElementById('mod-toggle')");
    moderator.wait(
        "the panel lists the troll's ban",
        "!document.getElementById('mod-panel').hidden && !!document.querySelector(\
         '#mod-bans li[data-login=\"troll\"][data-origin=\"party\"] .mod-unban')",
    );
    moderator.click("document.getElementById('mod-toggle')");

    // 3. Time the Twitch user out for ten minutes from a new line, through the menu.
    let second_id = message_id();
    party.twitch_says(&second_id, "still selling followers");
    moderator.wait("the second line shows", &format!("!!{}", line(&second_id)));
    moderator.click_tool(&second_id, "mod-timeout");
    moderator.wait(
        "the timeout menu opens",
        "!document.getElementById('mod-menu').hidden",
    );
    moderator.click("document.querySelector('#mod-menu button[data-seconds=\"600\"]')");
    let timeout = party.helix_request("the timeout", |r| {
        r.method == "POST" && r.path == "/moderation/bans"
    });
    assert_eq!(timeout.body.as_ref().unwrap()["data"]["user_id"], SPAMMER.1);
    assert_eq!(timeout.body.as_ref().unwrap()["data"]["duration"], 600);
    moderator.toast_with("timed out for 10m");
    viewer.wait(
        "the timed-out user's line leaves the viewer's page",
        &format!("{}.classList.contains('deleted')", line(&second_id)),
    );

    // 4. Twitch refuses the next call: the moderator reads why.
    let refusal = "The broadcaster has reached the maximum number of slow mode changes.";
    party.helix.fail_next(400, refusal);
    moderator.click("document.getElementById('mod-toggle')");
    moderator.eval(
        "(() => { const s = document.getElementById('mod-slow'); s.value = '30'; \
         s.dispatchEvent(new Event('change', { bubbles: true })); return true; })()",
    );
    let shown = moderator.toast_with("Twitch refused:");
    assert!(
        shown.contains(refusal),
        "the mod page does not show Twitch's reason: {shown:?}"
    );
    assert!(
        moderator.check(
            "getComputedStyle(document.getElementById('mod-toast')).display !== 'none' \
             && document.getElementById('mod-toast').classList.contains('error')"
        ),
        "the refusal is not on screen as an error"
    );

    // 5. The viewer saw none of the tools; the mod page never got its key back in view.
    assert!(
        viewer.check(
            "document.querySelectorAll('.mod-tools').length === 0 \
             && document.getElementById('mod-badge').hidden \
             && document.getElementById('mod-toggle').hidden \
             && document.getElementById('mod-panel').hidden \
             && window.cowatch.chat.mod.on === false"
        ),
        "the viewer page shows moderator tools"
    );
    let href = moderator.eval("location.href");
    assert!(
        !href.as_str().unwrap().contains(&key),
        "the key came back into the mod page's address: {href}"
    );
    for page in [&mut viewer, &mut moderator] {
        page.assert_no_errors();
    }
    // The key travels in headers only: no request line the pages made carries it, where a
    // reverse proxy's access log would keep it.
    for page in [&mut viewer, &mut moderator] {
        let requests = page.browser.requests();
        assert!(
            requests.iter().any(|r| r.contains("/api/")),
            "{} page: no API request recorded: {requests:?}",
            page.name
        );
        let leaks: Vec<&String> = requests.iter().filter(|r| r.contains(&key)).collect();
        assert!(
            leaks.is_empty(),
            "{} page: the mod key in {leaks:?}",
            page.name
        );
    }
    eprintln!(
        "delete shown to the viewer {took:?} after the click; whole test {:?}",
        started.elapsed()
    );
}
