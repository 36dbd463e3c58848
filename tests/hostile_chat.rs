//! A hostile viewer against the party chat, over real HTTP on 127.0.0.1: a ban or a limit
//! holds on the session whatever nickname it takes, text cannot hide or impersonate, a flood
//! of session requests does not lock newcomers out, and a ban from the whole party closes
//! the video door too (issue 13).

mod common;

use common::twitch::twitch_message;
use cowatch::chat::{ChatEvent, Origin};
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::source::WebcamSource;
use serde_json::{Value, json};

/// A served party and a client.
struct Rig {
    _pipeline: Pipeline,
    state: cowatch::web::AppState,
    base: String,
    http: reqwest::Client,
}

/// An answer: status and body.
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

impl Rig {
    async fn start() -> Rig {
        let pipeline =
            Pipeline::start(common::demo_settings(WebcamSource::None, "inset", 400)).unwrap();
        let broadcaster = common::broadcaster(&pipeline, 10).await;
        let state = common::state(&pipeline, &broadcaster, &common::scratch_data(), None);
        let addr = common::serve_app(cowatch::web::app(state.clone())).await;
        Rig {
            _pipeline: pipeline,
            state,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> Reply {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        Reply {
            status: response.status().as_u16(),
            body: response.text().await.unwrap(),
        }
    }

    /// A new session's token (as the host's page when `key` is the host key).
    async fn session(&self, key: Option<&str>) -> String {
        let reply = self.post("/api/session", key, json!({})).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    async fn say(&self, session: &str, nick: &str, text: &str) -> Reply {
        self.post(
            "/api/chat",
            None,
            json!({ "session": session, "nick": nick, "text": text }),
        )
        .await
    }

    /// A moderator action by the host; must be applied.
    async fn moderate(&self, action: Value) {
        let reply = self.post("/api/mod", Some(common::HOST_KEY), action).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    /// Party messages in the backlog, as (nickname, text).
    fn party_lines(&self) -> Vec<(String, String)> {
        self.state
            .chat
            .backlog()
            .into_iter()
            .filter_map(|e| match e {
                ChatEvent::Message(m) if m.origin == Origin::Party => {
                    Some((m.sender.display_name, m.text))
                }
                _ => None,
            })
            .collect()
    }
}

fn party_target(login: &str) -> Value {
    json!({ "origin": "party", "login": login })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_and_the_limits_hold_on_the_session_under_every_nickname() {
    let rig = Rig::start().await;
    let evil = rig.session(None).await;
    assert_eq!(rig.say(&evil, "evilguy", "hello").await.status, 201);
    rig.moderate(json!({ "action": "ban", "target": party_target("evilguy") }))
        .await;
    let dodge = rig.say(&evil, "evilguy2", "I am back").await;
    assert_eq!(dodge.status, 403, "{}", dodge.body);
    assert!(
        dodge.body.contains("banned") && dodge.body.contains("evilguy"),
        "{}",
        dodge.body
    );
    // Another session taking the banned name is refused for the name itself.
    let other = rig.session(None).await;
    let reply = rig.say(&other, "EvilGuy", "hi").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, "you are banned from the party chat\n");
    // A timeout holds the same way.
    let rude = rig.session(None).await;
    assert_eq!(rig.say(&rude, "rude_one", "hi").await.status, 201);
    rig.moderate(
        json!({ "action": "timeout", "target": party_target("rude_one"), "seconds": 600 }),
    )
    .await;
    let dodge = rig.say(&rude, "polite_one", "hi again").await;
    assert_eq!(dodge.status, 403, "{}", dodge.body);
    assert!(dodge.body.contains("timed out"), "{}", dodge.body);
    assert!(
        rig.party_lines()
            .iter()
            .all(|(nick, _)| nick != "evilguy2" && nick != "polite_one")
    );

    // Slow mode: 40 nicknames from one session get one line through.
    rig.moderate(json!({ "action": "slow", "seconds": 30 }))
        .await;
    let slow = rig.session(None).await;
    let mut through = 0;
    for i in 0..40 {
        if rig.say(&slow, &format!("slowpoke{i}"), "spam").await.status == 201 {
            through += 1;
        }
    }
    assert_eq!(through, 1, "slow mode counts per session");
    rig.moderate(json!({ "action": "slow", "seconds": 0 }))
        .await;

    // The flood allowance: 40 lines over the nicknames a session may take get the burst.
    let flood = rig.session(None).await;
    let mut statuses = Vec::new();
    for i in 0..40 {
        let nick = format!("flood{}", i % 3);
        statuses.push(rig.say(&flood, &nick, "spam").await.status);
    }
    let through = statuses.iter().filter(|&&s| s == 201).count();
    assert_eq!(through, 5, "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // And it cannot take forty nicknames anyway.
    let many = rig.session(None).await;
    let mut refused = None;
    for i in 0..40 {
        let reply = rig.say(&many, &format!("name{i}"), "hi").await;
        if reply.status != 201 {
            refused = Some((i, reply));
            break;
        }
    }
    let (i, reply) = refused.expect("a session cannot take forty nicknames at once");
    assert_eq!(i, 3);
    assert_eq!(reply.status, 429);
    assert!(
        reply.body.contains("changed nickname too often"),
        "{}",
        reply.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_and_look_alike_nicknames_are_refused() {
    let rig = Rig::start().await;
    rig.state.party.reserve_nick("streamer_login");
    let s = rig.session(None).await;
    for nick in [
        "host",
        "moderator",
        "admin",
        "mod",
        "system",
        "cowatch",
        "h\u{043E}st",
        "ａｄｍｉｎ",
        "streamer_login",
        "Streamer_L0gin",
    ] {
        let reply = rig.say(&s, nick, "hi").await;
        assert_eq!(reply.status, 409, "{nick}: {}", reply.body);
        assert!(reply.body.contains("is reserved"), "{nick}: {}", reply.body);
    }
    assert_eq!(rig.say(&s, "alice", "hi").await.status, 201);
    // Someone else's name in other letters is theirs too.
    let other = rig.session(None).await;
    let reply = rig.say(&other, "\u{0430}lice", "hi").await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(rig.party_lines().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_term_variants_are_refused_and_hidden() {
    let rig = Rig::start().await;
    rig.moderate(json!({ "action": "add_blocked_term", "term": "badword" }))
        .await;
    let variants = [
        "badword",
        "bad\u{200B}word",
        "b\u{0430}dword",
        "ｂａｄｗｏｒｄ",
        "b a d w o r d",
        "you BAD-WORD you",
    ];
    for (i, text) in variants.iter().enumerate() {
        let s = rig.session(None).await;
        let reply = rig.say(&s, &format!("viewer{i}"), text).await;
        assert_eq!(reply.status, 403, "{text:?}: {}", reply.body);
        assert!(reply.body.contains("blocked term"), "{}", reply.body);
        assert!(
            !rig.state
                .chat
                .receive_twitch(twitch_message(&format!("t{i}"), "someone", "1", text)),
            "Twitch line {text:?} shown"
        );
    }
    let s = rig.session(None).await;
    assert_eq!(rig.say(&s, "innocent", "a good word").await.status, 201);
    assert!(
        rig.state
            .chat
            .receive_twitch(twitch_message("ok", "someone", "1", "a good word"))
    );
    assert_eq!(rig.party_lines().len(), 1);
    // A term with nothing to match would hide everything: refused.
    let reply = rig
        .post(
            "/api/mod",
            Some(common::HOST_KEY),
            json!({ "action": "add_blocked_term", "term": "\u{200B}..." }),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_and_control_text_is_refused_or_stripped() {
    let rig = Rig::start().await;
    let s = rig.session(None).await;
    for (text, reason) in [
        ("\u{200B}\u{200B}\u{200B}", "message is empty"),
        ("\u{2060}\u{FEFF}\u{3164}", "message is empty"),
        ("\u{202E}\u{202E}", "message is empty"),
        ("\u{0}\u{0}", "control character (U+0000)"),
        ("hi \u{1B}[2J", "control character (U+001B)"),
        ("ding\u{7}", "control character (U+0007)"),
    ] {
        let reply = rig.say(&s, "tester", text).await;
        assert_eq!(reply.status, 400, "{text:?}: {}", reply.body);
        assert!(reply.body.contains(reason), "{text:?}: {}", reply.body);
    }
    assert!(rig.party_lines().is_empty());
    // An RTL override cannot flip what others read: it is stripped, the rest stays.
    let reply = rig.say(&s, "tester", "good \u{202E}txet").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["text"], "good txet");
    assert_eq!(
        rig.party_lines(),
        [("tester".to_owned(), "good txet".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_still_works_for_a_newcomer_after_ten_thousand_session_requests() {
    let rig = Rig::start().await;
    let regular = rig.session(None).await;
    assert_eq!(rig.say(&regular, "regular", "before").await.status, 201);
    for _ in 0..10_000 {
        let reply = rig.post("/api/session", None, json!({})).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let newcomer = rig.session(None).await;
    let reply = rig.say(&newcomer, "newcomer", "can I talk?").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let reply = rig.say(&regular, "regular", "after").await;
    assert_eq!(
        reply.status, 201,
        "the regular kept their session: {}",
        reply.body
    );
    assert_eq!(rig.party_lines().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_line_carries_the_host_badge_and_a_viewers_none() {
    let rig = Rig::start().await;
    let host = rig.session(Some(common::HOST_KEY)).await;
    let reply = rig.say(&host, "streamer", "welcome").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(
        reply.json()["badges"],
        json!([{ "name": "host", "version": "1" }])
    );
    let (link, key) = rig.state.party.add_moderator("alice").unwrap();
    let _ = link;
    let moderator = rig.session(Some(key.expose())).await;
    let reply = rig.say(&moderator, "alice_mod", "behave").await;
    assert_eq!(
        reply.json()["badges"],
        json!([{ "name": "moderator", "version": "1" }])
    );
    let viewer = rig.session(None).await;
    let reply = rig.say(&viewer, "viewer", "hi").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["badges"], json!([]));
    // A viewer's body cannot ask for one.
    let reply = rig
        .post(
            "/api/chat",
            None,
            json!({ "session": viewer, "nick": "viewer", "text": "hi", "badges": [{"name": "host"}] }),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_chat_with_an_unknown_field_is_refused() {
    let rig = Rig::start().await;
    let s = rig.session(None).await;
    assert_eq!(rig.say(&s, "alice", "keep me").await.status, 201);
    let reply = rig
        .post(
            "/api/mod",
            Some(common::HOST_KEY),
            json!({ "action": "clear_chat", "target": party_target("alice") }),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("unknown field"), "{}", reply.body);
    assert_eq!(rig.party_lines().len(), 1, "nothing was cleared");
    rig.moderate(json!({ "action": "clear_chat" })).await;
    assert!(rig.party_lines().is_empty());
}

fn offer() -> String {
    // `../shared` sits beside the checkout, in CI as here.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/sdp/chrome120_offer_sendrecv_audio_video.sdp"
    );
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_banned_from_the_party_cannot_start_watching() {
    let rig = Rig::start().await;
    let whep = |session: Option<String>| {
        let mut request = rig
            .http
            .post(format!("{}/whep", rig.base))
            .header("Content-Type", "application/sdp")
            .body(offer());
        if let Some(s) = session {
            request = request.header("X-Cowatch-Session", s);
        }
        request.send()
    };
    let chat_only = rig.session(None).await;
    assert_eq!(rig.say(&chat_only, "chatter", "hi").await.status, 201);
    let troll = rig.session(None).await;
    assert_eq!(rig.say(&troll, "troll", "hi").await.status, 201);
    rig.moderate(json!({ "action": "ban", "target": party_target("chatter") }))
        .await;
    rig.moderate(json!({ "action": "ban", "target": party_target("troll"), "whole_party": true }))
        .await;
    let refused = whep(Some(troll.clone())).await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.text().await.unwrap(),
        "you are banned from this party\n"
    );
    // A chat ban alone leaves the video alone.
    let watching = whep(Some(chat_only)).await.unwrap();
    assert_eq!(watching.status(), 201, "{:?}", watching.text().await);
    // A ban from the party is not one from Twitch's side.
    let reply = rig
        .post(
            "/api/mod",
            Some(common::HOST_KEY),
            json!({ "action": "ban", "target": { "origin": "twitch", "login": "x1" }, "whole_party": true }),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    // Lifting the ban opens the door again.
    rig.moderate(json!({ "action": "unban", "target": party_target("troll") }))
        .await;
    let back = whep(Some(troll)).await.unwrap();
    assert_eq!(back.status(), 201, "{:?}", back.text().await);
}
