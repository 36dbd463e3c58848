//! The chat column of the viewer page in a real browser: headless Chromium opens the page of
//! a party served in-process whose chat is bridged, through the real `twitch-irc` client,
//! from the Twitch-protocol test server. Twitch's lines must show as Twitch shows them,
//! chat text must stay text, deleted messages must go, a lost link to Twitch must be said,
//! party viewers must be able to chat, and the column must fold away.
//!
//! Twitch's CDN is blocked in the browser (there is no internet here anyway): every badge and
//! emote image fails, so what the page must show is their text fallbacks.
//!
//! Needs /usr/bin/chromium (Debian's `chromium` package); fails, never skips, without it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::twitch::TestServer;
use cowatch::broadcast::Broadcaster;
use cowatch::chat::bridge::{Bridge, BridgeConfig};
use cowatch::chat::{Chat, ChatEvent, Origin};
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::source::WebcamSource;
use cowatch::shutdown::Shutdown;
use cowatch::tools::cdp::Browser;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// How long a Twitch line may take from the test server to the page, measured in the page.
const LINE_BUDGET: Duration = Duration::from_secs(1);
/// How long the test polls for something the page should do within [`LINE_BUDGET`]: more,
/// because a loaded machine can hold up the DevTools round trips that look at the page.
const POLL_LIMIT: Duration = Duration::from_secs(5);

/// One party at a time: two demo pipelines and two browsers on a two-core machine slow the
/// page for reasons that are not the chat's.
static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A test that failed holding the lock leaves nothing behind that the next one needs.
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A party served in-process on a runtime of its own, so the test thread is free to drive the
/// browser (whose calls block).
struct Party {
    addr: SocketAddr,
    chat: Chat,
    /// The Twitch channel the bridge joined, if any.
    channel: Option<String>,
    // Dropped in this order: the bridge and the server's handles first, the runtime last.
    _bridge: Option<Bridge>,
    _broadcaster: Broadcaster,
    _pipeline: Pipeline,
    rt: Runtime,
}

impl Party {
    /// Starts the demo pipeline, the fan-out and the web app; with `twitch`, bridges that
    /// channel of the shared test server into the chat and waits for the join.
    fn start(twitch: Option<&str>) -> Party {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let pipeline = Pipeline::start(common::demo_settings(WebcamSource::None, "inset", 1000))
            .expect("the demo pipeline starts");
        let (addr, chat, broadcaster, bridge) = rt.block_on(async {
            let broadcaster = common::broadcaster(&pipeline, 4).await;
            let state = common::state(&pipeline, &broadcaster, &common::scratch_data(), None);
            let chat = state.chat.clone();
            let mut bridge = None;
            if let Some(channel) = twitch {
                let server = TestServer::shared();
                bridge = Some(Bridge::start(
                    BridgeConfig {
                        channel: channel.to_owned(),
                        credentials: None,
                        irc_addr: Some(server.addr()),
                    },
                    chat.clone(),
                    &Shutdown::new(),
                ));
                assert!(
                    server.wait_joined(channel, Duration::from_secs(10)).await,
                    "the bridge did not join #{channel} on the test server within 10 s"
                );
            }
            let addr = common::serve_app(cowatch::web::app(state)).await;
            (addr, chat, broadcaster, bridge)
        });
        Party {
            addr,
            chat,
            channel: twitch.map(str::to_owned),
            _bridge: bridge,
            _broadcaster: broadcaster,
            _pipeline: pipeline,
            rt,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn channel(&self) -> &str {
        self.channel
            .as_deref()
            .expect("this party has a Twitch channel")
    }

    /// Sends raw lines to the bridge's channel, as Twitch would; returns when they are sent.
    fn twitch(&self, lines: &[String]) {
        let server = TestServer::shared();
        for line in lines {
            let got = self.rt.block_on(server.send(self.channel(), line));
            assert_eq!(got, 1, "the bridge is not joined to #{}", self.channel());
        }
    }

    /// Like [`Party::twitch`], then waits until the hub has taken in every line: a sentinel
    /// message sent after them has reached it (one connection keeps the order).
    fn twitch_and_settle(&self, lines: &[String]) {
        let sentinel = message_id();
        let mut all = lines.to_vec();
        all.push(privmsg(self.channel(), &sentinel, "", "sentinel"));
        self.twitch(&all);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self
            .chat
            .backlog()
            .iter()
            .any(|e| e.message_id() == Some(sentinel.as_str()))
        {
            assert!(
                Instant::now() < deadline,
                "the hub did not get {} lines within 5 s",
                all.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The party messages the hub holds, as (display name, text).
    fn party_messages(&self) -> Vec<(String, String)> {
        self.chat
            .backlog()
            .into_iter()
            .filter_map(|event| match event {
                ChatEvent::Message(m) if m.origin == Origin::Party => {
                    Some((m.sender.display_name, m.text))
                }
                _ => None,
            })
            .collect()
    }
}

/// The browser on the party's page, with what a failure message needs.
struct Page {
    browser: Browser,
}

/// Collects script errors and the chat's own complaints (which the page log may push out),
/// and notes the wall-clock time each line appears and is deleted, so latencies are measured
/// in the page rather than through DevTools round trips.
const PAGE_PROBES: &str = r#"(() => {
  window.__errors = [];
  addEventListener('error', (e) => window.__errors.push(String(e.message)));
  const warn = console.warn.bind(console);
  console.warn = (...args) => { window.__errors.push(args.map(String).join(' ')); warn(...args); };
  window.__shownAt = {};
  window.__deletedAt = {};
  const messages = document.getElementById('messages');
  new MutationObserver((changes) => {
    const now = Date.now();
    for (const c of changes) {
      for (const n of c.addedNodes) {
        if (n.parentNode === messages && n.dataset && n.dataset.id) window.__shownAt[n.dataset.id] ??= now;
      }
      const t = c.target;
      if (t.parentNode === messages && t.classList.contains('deleted')) window.__deletedAt[t.dataset.id] ??= now;
    }
  }).observe(messages, { childList: true, subtree: true, attributes: true, attributeFilter: ['class'] });
  return true;
})()"#;

/// Whether the chat shows its newest line.
const AT_BOTTOM: &str = "(() => { const m = document.getElementById('messages'); \
                         return m.scrollHeight - m.scrollTop - m.clientHeight < 2; })()";

/// The chat column's state in one evaluation, for failure messages.
const CHAT_STATE: &str = r#"(() => {
  const chat = document.getElementById('chat');
  return {
    status: window.cowatch && window.cowatch.chat,
    link: chat.dataset.linkState, socket: chat.dataset.socket,
    banner: document.getElementById('chat-banner').textContent,
    error: document.getElementById('chat-error').textContent,
    errors: window.__errors || null,
    lines: [...document.getElementById('messages').children].slice(-8).map((l) => l.outerHTML),
  };
})()"#;

impl Page {
    fn open(party: &Party) -> Page {
        let mut browser = common::desktop_viewer();
        browser
            .navigate(&party.url())
            .expect("the viewer page loads");
        let mut page = Page { browser };
        page.eval(PAGE_PROBES);
        page
    }

    fn eval(&mut self, js: &str) -> Value {
        match self.browser.eval(js) {
            Ok(value) => value,
            Err(e) => {
                let diagnosis = self.diagnose();
                panic!("{e:#}\n{diagnosis}");
            }
        }
    }

    fn check(&mut self, js: &str) -> bool {
        self.eval(js) == Value::Bool(true)
    }

    /// The chat's state, the page log and a screenshot: what explains a failure.
    fn diagnose(&mut self) -> String {
        let state = self
            .browser
            .eval(CHAT_STATE)
            .unwrap_or_else(|e| Value::String(format!("(cannot read: {e:#})")));
        let shot = match self
            .browser
            .screenshot(Path::new(env!("CARGO_TARGET_TMPDIR")), "chat")
        {
            Ok(path) => path.display().to_string(),
            Err(e) => format!("(none: {e:#})"),
        };
        format!(
            "chat column: {state:#}\nscreenshot: {shot}\npage log:\n  {}",
            self.browser.log().join("\n  ")
        )
    }

    /// Fails the test with `what` and the page's state.
    fn fail(&mut self, what: &str) -> ! {
        let diagnosis = self.diagnose();
        panic!("{what}\n{diagnosis}");
    }

    /// Polls `condition` (a JavaScript boolean expression) every 50 ms until it holds;
    /// returns how long that took from `since`, or fails with `what` once `timeout` has
    /// passed since then.
    fn wait(&mut self, since: Instant, timeout: Duration, what: &str, condition: &str) -> Duration {
        loop {
            if self.check(condition) {
                return since.elapsed();
            }
            if since.elapsed() >= timeout {
                self.fail(&format!(
                    "{what}: not true within {timeout:?} (`{condition}`)"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Focuses the field with id `field`, types `text` and presses Enter, as a person at a
    /// keyboard does (a script setting the value would skip the keyboard path).
    fn type_and_enter(&mut self, field: &str, text: &str) {
        self.eval(&format!("document.getElementById('{field}').focus(), true"));
        self.browser
            .call("Input.insertText", json!({ "text": text }))
            .expect("CDP Input.insertText");
        for kind in ["keyDown", "keyUp"] {
            self.browser
                .call(
                    "Input.dispatchKeyEvent",
                    json!({ "type": kind, "key": "Enter", "code": "Enter",
                            "windowsVirtualKeyCode": 13, "text": "\r" }),
                )
                .expect("CDP Input.dispatchKeyEvent");
        }
    }

    /// How long after `sent_ms` (wall clock, ms) the page noted `what` for line `id` in
    /// `probe` (`__shownAt` or `__deletedAt`); fails beyond [`LINE_BUDGET`].
    fn latency(&mut self, probe: &str, id: &str, sent_ms: i64, what: &str) -> Duration {
        let at = self.eval(&format!("window.{probe}['{id}'] ?? null"));
        let Some(at) = at.as_i64() else {
            self.fail(&format!("{what}: the page noted no time for {id}"));
        };
        let took = Duration::from_millis(u64::try_from(at - sent_ms).unwrap_or(0));
        if took > LINE_BUDGET {
            self.fail(&format!(
                "{what}: {took:?} after it was sent, more than {LINE_BUDGET:?}"
            ));
        }
        took
    }

    /// Fails when the page threw or the chat refused to show an event.
    fn assert_no_errors(&mut self) {
        let errors = self.eval("window.__errors");
        if errors.as_array().is_none_or(|e| !e.is_empty()) {
            self.fail(&format!("the page reported errors: {errors}"));
        }
    }
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

/// A PRIVMSG from the moderator "Tester", tagged as Twitch tags it.
fn privmsg(channel: &str, id: &str, emotes: &str, text: &str) -> String {
    format!(
        "@badge-info=;badges=moderator/1;color=#0000FF;display-name=Tester;emotes={emotes};\
         first-msg=0;flags=;id={id};mod=1;room-id=1;subscriber=0;tmi-sent-ts={ts};turbo=0;\
         user-id=42;user-type=mod :tester!tester@tester.tmi.twitch.tv PRIVMSG #{channel} :{text}",
        ts = cowatch::util::clock::unix_ms()
    )
}

/// The JavaScript expression for the chat line of message `id` (ids here are our own UUIDs).
fn line(id: &str) -> String {
    format!("document.querySelector('#messages > [data-id=\"{id}\"]')")
}

/// The real Twitch lines of the shared test data, one per entry.
fn real_lines() -> Vec<String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/twitch/twitch_irc_real.txt");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (shared/ must sit beside the checkout)",
                path.display()
            )
        })
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The IRC command of a raw line (after the tags and the prefix).
fn command(line: &str) -> &str {
    let rest = match line.strip_prefix('@') {
        Some(tagged) => tagged.split_once(' ').map_or("", |(_, rest)| rest),
        None => line,
    };
    let rest = match rest.strip_prefix(':') {
        Some(prefixed) => prefixed.split_once(' ').map_or("", |(_, rest)| rest),
        None => rest,
    };
    rest.split(' ').next().unwrap_or("")
}

/// Twitch chat through the real bridge: a line shows within a second with its name colour,
/// badge and emote fallbacks (1); markup stays text (2); CLEARMSG takes a message's text off
/// the page (3); real notices become cards, ROOMSTATE becomes chips, a timeout spares party
/// lines (4); the view follows new lines unless the reader scrolled up (5); a RECONNECT with
/// refused rejoins shows "chat reconnecting…" until the link is back (6); CLEARCHAT empties
/// the chat (7).
#[test]
fn twitch_chat_renders_safely_loses_deleted_lines_and_survives_a_reconnect() {
    let _serial = one_at_a_time();
    let channel = format!("chat_browser_{}", std::process::id());
    let party = Party::start(Some(&channel));
    let server = TestServer::shared();
    let mut page = Page::open(&party);
    page.wait(
        Instant::now(),
        Duration::from_secs(5),
        "the page shows the Twitch link as connected, with no banner",
        "document.getElementById('chat').dataset.linkState === 'connected' \
         && document.getElementById('chat-banner').hidden",
    );

    // 1. A real PRIVMSG with a moderator badge and an emote, neither of whose images can load.
    let hello = message_id();
    let (sent, sent_ms) = (Instant::now(), cowatch::util::clock::unix_ms());
    party.twitch(&[privmsg(&channel, &hello, "25:6-10", "hello Kappa there")]);
    page.wait(
        sent,
        POLL_LIMIT,
        "1. a Twitch message appears with its name and the emote's text fallback",
        &format!(
            "(() => {{ const l = {line}; if (!l) return false;
               const name = l.querySelector('.name'), text = l.querySelector('.text');
               const kappa = [...(text?.querySelectorAll('.emote-code') ?? [])]
                 .find((e) => e.textContent === 'Kappa');
               return name?.textContent === 'Tester' && text?.textContent === 'hello Kappa there'
                 && !!kappa && kappa.getBoundingClientRect().width > 0; }})()",
            line = line(&hello)
        ),
    );
    let took = page.latency(
        "__shownAt",
        &hello,
        sent_ms,
        "1. the Twitch message appeared",
    );
    println!("1. Twitch message on the page {took:?} after the test server sent it");
    let hub_colour = party
        .chat
        .backlog()
        .iter()
        .find_map(|e| match e {
            ChatEvent::Message(m) if m.id == hello => Some(m.display_color.clone()),
            _ => None,
        })
        .expect("the hub holds message 1");
    let rgb = u32::from_str_radix(&hub_colour[1..], 16).expect("display_color is #RRGGBB");
    let want_colour = format!("rgb({}, {}, {})", rgb >> 16, (rgb >> 8) & 0xff, rgb & 0xff);
    // The CDN is unreachable: the badge is its text pill, and no broken image shows anywhere.
    let look = page.eval(&format!(
        "(() => {{ const l = {line};
           return {{ colour: getComputedStyle(l.querySelector('.name')).color,
                     badge: l.querySelector('.badges').textContent,
                     broken: [...document.querySelectorAll('#messages img')]
                       .filter((i) => !(i.complete && i.naturalWidth > 0)).length,
                     height: l.getBoundingClientRect().height }}; }})()",
        line = line(&hello)
    ));
    if look["colour"] != want_colour.as_str()
        || look["badge"] != "MOD"
        || look["broken"] != 0
        || look["height"].as_f64().is_none_or(|h| h > 60.0)
    {
        page.fail(&format!(
            "1. the line should have the name in {want_colour}, a MOD pill, no broken image and \
             one row's height: {look}"
        ));
    }

    // 2. Markup in a message is text: no element, no script.
    page.eval(
        "window.__alerted = null; window.alert = (m) => { window.__alerted = String(m); }; true",
    );
    let evil = message_id();
    let plain = message_id();
    let markup = "<img src=x onerror=alert(1)>";
    let sent = Instant::now();
    party.twitch(&[
        privmsg(&channel, &evil, "", markup),
        privmsg(&channel, &plain, "", "plain words here"),
    ]);
    page.wait(
        sent,
        POLL_LIMIT,
        "2. the message with markup and its plain twin appear",
        &format!("!!{} && !!{}", line(&evil), line(&plain)),
    );
    // Time for an injected image to fail to load and run its handler.
    std::thread::sleep(Duration::from_millis(300));
    let seen = page.eval(&format!(
        "(() => {{ const e = {evil}, p = {plain};
           return {{ text: e.querySelector('.text').textContent,
                     textElements: e.querySelector('.text').childElementCount,
                     elements: e.querySelectorAll('*').length,
                     twinElements: p.querySelectorAll('*').length,
                     injected: document.querySelectorAll('img[src=\"x\"], [onerror]').length,
                     alerted: window.__alerted }}; }})()",
        evil = line(&evil),
        plain = line(&plain)
    ));
    if seen["text"] != markup
        || seen["textElements"] != 0
        || seen["elements"] != seen["twinElements"]
        || seen["injected"] != 0
        || !seen["alerted"].is_null()
    {
        page.fail(&format!(
            "2. markup in a message must stay literal text and create nothing: {seen}"
        ));
    }

    // 3. A moderator deletes message 1 (CLEARMSG).
    let (sent, sent_ms) = (Instant::now(), cowatch::util::clock::unix_ms());
    party.twitch(&[format!(
        "@login=tester;room-id=1;target-msg-id={hello};tmi-sent-ts={} :tmi.twitch.tv CLEARMSG \
         #{channel} :hello Kappa there",
        cowatch::util::clock::unix_ms()
    )]);
    page.wait(
        sent,
        POLL_LIMIT,
        "3. the deleted message's text leaves the page and its line says \"message deleted\"",
        &format!(
            "(() => {{ const l = {line};
               return !!l && l.classList.contains('deleted') && !l.querySelector('.text')
                 && l.textContent.includes('message deleted')
                 && !document.getElementById('chat').textContent.includes('hello Kappa there'); }})()",
            line = line(&hello)
        ),
    );
    let took = page.latency("__deletedAt", &hello, sent_ms, "3. the message was deleted");
    println!("3. deleted message gone from the page {took:?} after the CLEARMSG");

    // 4. Real Twitch notices (subs, gifts, raids, announcements…) and messages, replayed as
    //    captured, become cards and lines; a ROOMSTATE shows as chips; a timeout takes the
    //    user's Twitch lines but not a party viewer's of the same name.
    let replay: Vec<String> = real_lines()
        .into_iter()
        .filter(|l| matches!(command(l), "PRIVMSG" | "USERNOTICE"))
        .collect();
    let spam = message_id();
    let mut lines = replay.clone();
    lines.push(format!(
        "@badge-info=;badges=;color=;display-name=Spammer;emotes=;flags=;id={spam};mod=0;\
         room-id=1;subscriber=0;tmi-sent-ts={};turbo=0;user-id=43;user-type= \
         :spammer!spammer@spammer.tmi.twitch.tv PRIVMSG #{channel} :buy followers",
        cowatch::util::clock::unix_ms()
    ));
    lines.push(format!(
        "@emote-only=0;followers-only=10;r9k=1;room-id=1;slow=30;subs-only=1 \
         :tmi.twitch.tv ROOMSTATE #{channel}"
    ));
    party
        .chat
        .post("spammer", "party side")
        .expect("a party message from the nickname spammer");
    lines.push(format!(
        "@ban-duration=600;room-id=1;target-user-id=43;tmi-sent-ts={} :tmi.twitch.tv CLEARCHAT \
         #{channel} :spammer",
        cowatch::util::clock::unix_ms()
    ));
    party.twitch_and_settle(&lines);
    let ids: Vec<String> = party
        .chat
        .backlog()
        .iter()
        .filter_map(|e| e.message_id().map(str::to_owned))
        .collect();
    let notices = replay.iter().filter(|l| command(l) == "USERNOTICE").count();
    let card_count = party
        .chat
        .backlog()
        .iter()
        .filter(|e| matches!(e, ChatEvent::Notice(_)))
        .count();
    assert!(
        card_count * 2 > notices,
        "the hub made notices of only {card_count} of {notices} real USERNOTICE lines"
    );
    page.wait(
        Instant::now(),
        POLL_LIMIT,
        "4. every message and notice the hub holds is on the page, the room modes are chips and \
         the timed-out user's Twitch line is deleted but not the party line",
        &format!(
            "(() => {{ const ids = {ids}; const on = new Set([...document.getElementById('messages').children]
                 .map((l) => l.dataset.id));
               const chips = [...document.querySelectorAll('#chat-modes .mode-chip')].map((c) => c.textContent).join('|');
               const spam = {spam};
               const partySide = [...document.querySelectorAll('#messages > .msg.party')]
                 .find((l) => l.dataset.login === 'spammer');
               return ids.every((id) => on.has(id))
                 && chips === 'slow 30s|followers-only 10m|subs-only|unique chat'
                 && !!spam && spam.classList.contains('deleted')
                 && !!partySide && !partySide.classList.contains('deleted')
                 && partySide.querySelector('.text')?.textContent === 'party side'; }})()",
            ids = serde_json::to_string(&ids).unwrap(),
            spam = line(&spam),
        ),
    );
    let cards = page.eval(
        "(() => { const count = (s) => document.querySelectorAll('#messages > ' + s).length;
           const ann = document.querySelector('#messages > .notice-announcement.notice-ann-blue');
           return { notices: count('.notice'), subs: count('.notice-sub'), gifts: count('.notice-sub_gift'),
             raids: count('.notice-raid'), bits: count('.notice-bits_badge_tier'),
             blueAnnouncement: ann && ann.textContent,
             raidColour: (() => { const r = document.querySelector('#messages > .notice-raid');
               return r && getComputedStyle(r).boxShadow; })() }; })()",
    );
    if cards["notices"] != card_count
        || ["subs", "gifts", "raids", "bits"]
            .iter()
            .any(|k| cards[k].as_u64().is_none_or(|n| n == 0))
        || cards["blueAnnouncement"]
            .as_str()
            .is_none_or(|t| !t.contains("blue announcement"))
        || cards["raidColour"]
            .as_str()
            .is_none_or(|s| !s.contains("rgb(255, 138, 46)"))
    {
        page.fail(&format!(
            "4. the {card_count} notices should be cards by kind (raids orange): {cards}"
        ));
    }
    println!("4. {} real lines replayed: {cards}", replay.len());

    // 5. The view follows the newest line, until the reader scrolls up: then it stays put and
    //    a button offers the new lines, and takes the reader down to them.
    page.wait(
        Instant::now(),
        POLL_LIMIT,
        "5. after a burst of lines the view follows to the newest one",
        AT_BOTTOM,
    );
    let top = page.eval(
        "(() => { const m = document.getElementById('messages'); m.scrollTop = 40;
           m.dispatchEvent(new Event('scroll')); return m.scrollTop; })()",
    );
    let later = message_id();
    let sent = Instant::now();
    party.twitch(&[privmsg(&channel, &later, "", "while you were reading")]);
    page.wait(
        sent,
        POLL_LIMIT,
        "5. a line arriving while the reader is scrolled up leaves the view where it is and \
         shows the \"more messages below\" button",
        &format!(
            "!!{line} && document.getElementById('messages').scrollTop === {top} \
             && !document.getElementById('chat-more').hidden",
            line = line(&later)
        ),
    );
    page.eval("document.getElementById('chat-more').click(), true");
    page.wait(
        Instant::now(),
        POLL_LIMIT,
        "5. the button takes the reader to the newest line and goes away",
        &format!("{AT_BOTTOM} && document.getElementById('chat-more').hidden"),
    );
    // 6. Twitch asks the bridge to reconnect and refuses the rejoin for a while.
    let attempts = server.join_attempts(&channel);
    server.set_refuse_joins(&channel, true);
    let asked = Instant::now();
    party.rt.block_on(server.reconnect(&channel));
    let took = page.wait(
        asked,
        Duration::from_secs(5),
        "6. the page says \"chat reconnecting…\" once Twitch has dropped the link",
        "(() => { const b = document.getElementById('chat-banner');
           return document.getElementById('chat').dataset.linkState === 'reconnecting'
             && !b.hidden && b.getBoundingClientRect().height > 0
             && b.textContent === 'chat reconnecting…'; })()",
    );
    println!("6. banner up {took:?} after RECONNECT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.join_attempts(&channel) == attempts {
        if Instant::now() >= deadline {
            page.fail("6. the bridge did not try to rejoin within 10 s of RECONNECT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !page.check("document.getElementById('chat').dataset.linkState === 'reconnecting'") {
        page.fail("6. the page stopped saying reconnecting while Twitch refuses the rejoin");
    }
    server.set_refuse_joins(&channel, false);
    let allowed = Instant::now();
    let took = page.wait(
        allowed,
        Duration::from_secs(10),
        "6. the page shows the link connected again, without a banner",
        "document.getElementById('chat').dataset.linkState === 'connected' \
         && document.getElementById('chat-banner').hidden",
    );
    println!(
        "6. connected again {took:?} after joins were allowed ({} refused)",
        server.join_attempts(&channel) - attempts - 1
    );
    let back = message_id();
    let (sent, sent_ms) = (Instant::now(), cowatch::util::clock::unix_ms());
    party.twitch(&[privmsg(&channel, &back, "", "back again")]);
    page.wait(
        sent,
        POLL_LIMIT,
        "6. a message sent after the rejoin appears",
        &format!(
            "!!{} && {0}.textContent.includes('back again')",
            line(&back)
        ),
    );
    let took = page.latency(
        "__shownAt",
        &back,
        sent_ms,
        "6. the message after the rejoin",
    );
    println!("6. message after the rejoin on the page {took:?} after it was sent");

    // 7. A moderator clears the whole chat.
    party.twitch(&[format!(
        "@room-id=1;tmi-sent-ts={} :tmi.twitch.tv CLEARCHAT #{channel}",
        cowatch::util::clock::unix_ms()
    )]);
    page.wait(
        Instant::now(),
        POLL_LIMIT,
        "7. a cleared chat shows only \"Chat was cleared by a moderator\"",
        "(() => { const m = document.getElementById('messages');
           return m.children.length === 1 && m.textContent === 'Chat was cleared by a moderator'; })()",
    );
    page.assert_no_errors();
}

/// Boxes of the video and the chat column, in CSS pixels.
const BOXES: &str = r#"(() => {
  const box = (el) => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return { top: r.top, left: r.left, width: r.width, height: r.height, bottom: r.bottom,
             display: s.display }; };
  return { video: box(document.getElementById('video')), chat: box(document.getElementById('chat')),
           input: box(document.querySelector('.chat-input')), show: box(document.getElementById('chat-show')),
           viewport: { width: innerWidth, height: innerHeight } };
})()"#;

fn n(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

/// Party chat without Twitch: no nickname, no post (8); a typed nickname and message sent with
/// Enter appear marked as party, as text (9); the server's refusal shows inline (10); the
/// nickname survives a reload and is not open to another session (11); the column folds away and back (12); on a phone it sits
/// under the video (13).
#[test]
fn party_viewers_chat_under_a_nickname_and_fold_the_column_away() {
    let _serial = one_at_a_time();
    // Party chat only: no Twitch channel configured.
    let party = Party::start(None);
    let mut page = Page::open(&party);
    page.wait(
        Instant::now(),
        Duration::from_secs(5),
        "the chat stream is open, the Twitch link is off and no banner shows",
        "(() => { const c = document.getElementById('chat');
           return c.dataset.socket === 'open' && c.dataset.linkState === 'off'
             && document.getElementById('chat-banner').hidden
             && !document.getElementById('nick-form').hidden
             && document.getElementById('say-form').hidden; })()",
    );

    // 8. No nickname: the page says why and posts nothing.
    page.eval(
        "document.getElementById('nick-input').value = ''; \
         document.querySelector('#nick-form button[type=submit]').click(); true",
    );
    page.wait(
        Instant::now(),
        POLL_LIMIT,
        "8. an empty nickname shows the nickname rule and keeps the nickname step",
        "(() => { const e = document.getElementById('chat-error');
           return !e.hidden && e.textContent.includes('nickname must be 2 to 25 letters')
             && document.getElementById('say-form').hidden; })()",
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        party.party_messages(),
        Vec::<(String, String)>::new(),
        "8. nothing may be posted without a nickname"
    );

    // 9. A nickname, then a message with markup, typed and sent with Enter.
    page.type_and_enter("nick-input", "Popcorn_Fan");
    page.wait(
        Instant::now(),
        POLL_LIMIT,
        "9. the picked nickname leads to the message box",
        "!document.getElementById('say-form').hidden \
         && document.getElementById('nick-shown').textContent === 'Popcorn_Fan' \
         && document.getElementById('chat-error').hidden",
    );
    let said = "<b>hi</b> from the party";
    let sent = Instant::now();
    page.type_and_enter("say-input", said);
    let took = page.wait(
        sent,
        POLL_LIMIT,
        "9. the party message appears as literal text, marked as party",
        "(() => { const l = [...document.querySelectorAll('#messages > .msg.party')].pop();
           if (!l) return false;
           const text = l.querySelector('.text');
           return l.querySelector('.tag.party')?.textContent === 'party'
             && l.querySelector('.name')?.textContent === 'Popcorn_Fan'
             && text?.textContent === '<b>hi</b> from the party' && text.childElementCount === 0
             && !document.querySelector('#messages b'); })()",
    );
    println!("9. party message on the page {took:?} after Enter");
    page.wait(
        sent,
        Duration::from_secs(5),
        "9. once sent, the message box is empty and ready for the next message",
        "document.getElementById('say-input').value === '' \
         && !document.getElementById('say-send').disabled",
    );
    assert_eq!(
        party.party_messages(),
        vec![("Popcorn_Fan".to_owned(), said.to_owned())],
        "9. the hub holds exactly the party message typed"
    );

    // 10. The server refuses an overlong message (the field's maxlength only stops typing):
    //    its reason shows under the box, the text stays for editing, nothing is posted.
    page.eval(
        "document.getElementById('say-input').value = 'a'.repeat(501); \
         document.getElementById('say-send').click(); true",
    );
    page.wait(
        Instant::now(),
        POLL_LIMIT,
        "10. the server's reason for refusing a message shows inline",
        "(() => { const e = document.getElementById('chat-error');
           return !e.hidden && e.textContent === 'message is 501 characters; the limit is 500'
             && document.getElementById('say-input').value.length === 501; })()",
    );
    assert_eq!(
        party.party_messages().len(),
        1,
        "10. a refused message must not be posted"
    );

    // 11. The nickname is remembered: a reload goes straight to the message box, and the
    //     party message is in the backlog the page gets.
    page.browser
        .navigate(&party.url())
        .expect("the viewer page reloads");
    page.eval(PAGE_PROBES);
    page.wait(
        Instant::now(),
        POLL_LIMIT,
        "11. after a reload the nickname is remembered and the backlog shows the party message",
        "!document.getElementById('say-form').hidden \
         && document.getElementById('nick-shown').textContent === 'Popcorn_Fan' \
         && [...document.querySelectorAll('#messages > .msg.party .text')] \
              .some((t) => t.textContent === '<b>hi</b> from the party')",
    );
    // Another page (a new session) cannot speak as Popcorn_Fan while this one holds the
    // name: the server's refusal shows and the nickname step comes back.
    page.eval("localStorage.removeItem('cowatch.session'), true");
    page.browser
        .navigate(&party.url())
        .expect("the viewer page reloads");
    page.eval(PAGE_PROBES);
    page.type_and_enter("say-input", "it is me, really");
    page.wait(
        Instant::now(),
        POLL_LIMIT,
        "11. a nickname held by another session is refused inline and the nickname step returns",
        "(() => { const e = document.getElementById('chat-error');
           return !e.hidden && e.textContent.includes('taken')
             && !document.getElementById('nick-form').hidden; })()",
    );
    assert_eq!(
        party.party_messages().len(),
        1,
        "11. nothing may be posted under a nickname another session holds"
    );

    // 12. Folding the column away gives the video the room; the button brings it back.
    let before = page.eval(BOXES);
    if before["chat"]["display"] == "none" || n(&before["chat"]["width"]) < 300.0 {
        page.fail(&format!(
            "12. the chat column is not beside the video: {before}"
        ));
    }
    page.eval("document.getElementById('chat-hide').click(), true");
    let folded = page.eval(BOXES);
    if !(folded["chat"]["display"] == "none" || n(&folded["chat"]["width"]) == 0.0)
        || n(&folded["video"]["width"]) < n(&before["video"]["width"]) + 300.0
        || folded["show"]["display"] == "none"
    {
        page.fail(&format!(
            "12. hiding the chat must hide the column, widen the video and offer a button to \
             bring it back: before {before}, after {folded}"
        ));
    }
    page.eval("document.getElementById('chat-show').click(), true");
    let back = page.eval(BOXES);
    if back["chat"]["display"] == "none"
        || (n(&back["chat"]["width"]) - n(&before["chat"]["width"])).abs() > 1.0
        || (n(&back["video"]["width"]) - n(&before["video"]["width"])).abs() > 1.0
        || back["show"]["display"] != "none"
    {
        page.fail(&format!(
            "12. the chat must come back as it was: before {before}, after {back}"
        ));
    }

    // 13. On a phone held upright the chat sits under the video, its input on screen.
    page.browser
        .emulate_device(390, 844, 3.0, true)
        .expect("phone emulation");
    let phone = page.eval(BOXES);
    if phone["chat"]["display"] == "none"
        || n(&phone["chat"]["top"]) < n(&phone["video"]["bottom"]) - 1.0
        || n(&phone["input"]["bottom"]) > n(&phone["viewport"]["height"]) + 1.0
        || n(&phone["input"]["height"]) < 30.0
    {
        page.fail(&format!(
            "13. on a phone the chat must be under the video with its input on screen: {phone}"
        ));
    }
    page.assert_no_errors();
}
