//! The Twitch chat bridge end to end: real Twitch lines go from a Twitch-protocol server on
//! 127.0.0.1 through the real `twitch-irc` client and the bridge into the chat hub, and out
//! of the party's WebSocket.
//!
//! Data: ../shared/data/twitch (real lines with expected values, and a 5,000-line capture
//! of #xqcow).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::twitch::TestServer;
use cowatch::chat::bridge::{Bridge, BridgeConfig, Secret};
use cowatch::chat::{Chat, ChatConfig, Connection};
use cowatch::shutdown::Shutdown;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::broadcast::Receiver;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/twitch")
        .join(name)
}

/// A unique channel per test: the tests share one server.
fn channel(name: &str) -> String {
    format!("{name}_{}", std::process::id())
}

/// A hub bridged to `channel` on the shared test server, once the bridge has joined.
async fn bridged(channel: &str, config: ChatConfig) -> (TestServer, Chat, Bridge) {
    bridge_hub(channel, Chat::new(config)).await
}

/// [`bridged`] for a hub made elsewhere (a party's, with its gate).
async fn bridge_hub(channel: &str, chat: Chat) -> (TestServer, Chat, Bridge) {
    let server = TestServer::shared();
    let bridge = Bridge::start(
        BridgeConfig {
            channel: channel.to_owned(),
            credentials: None,
            irc_addr: Some(server.addr()),
        },
        chat.clone(),
        &Shutdown::new(),
    );
    assert!(
        server.wait_joined(channel, Duration::from_secs(10)).await,
        "the bridge did not join #{channel} on the test server"
    );
    // Past the join's own lines (USERSTATE, ROOMSTATE): a sentinel has come through.
    let mut live = chat.subscribe().live;
    server
        .send(channel, &privmsg(channel, "ready", "sentinel", "s"))
        .await;
    while let Some(event) = next(&mut live, Duration::from_secs(5)).await {
        if event["id"] == "ready" {
            return (server, chat, bridge);
        }
    }
    panic!("the bridge joined #{channel} but delivered nothing");
}

/// The next event as JSON, within `timeout`.
async fn next(
    live: &mut Receiver<std::sync::Arc<cowatch::chat::Published>>,
    timeout: Duration,
) -> Option<Value> {
    match tokio::time::timeout(timeout, live.recv()).await {
        Ok(Ok(p)) => Some(serde_json::from_slice(&p.json).unwrap()),
        _ => None,
    }
}

/// A tagged PRIVMSG as Twitch sends it.
fn privmsg(channel: &str, id: &str, login: &str, text: &str) -> String {
    format!(
        "@badge-info=;badges=;color=#1E90FF;display-name={login};emotes=;first-msg=0;flags=;id={id};mod=0;room-id=1;subscriber=0;tmi-sent-ts={};turbo=0;user-id=7;user-type= :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{text}",
        cowatch::util::clock::unix_ms()
    )
}

/// Where an expected value of `twitch_irc_expected.jsonl` lives in our event JSON.
fn pointer(command: &str, key: &str) -> Option<&'static str> {
    Some(match (command, key) {
        (_, "sender_login") if command == "CLEARMSG" => "/target_login",
        (_, "sender_login") => "/sender/login",
        (_, "display_name") => "/sender/display_name",
        (_, "user_id") => "/sender/id",
        (_, "color") => "/color",
        (_, "emotes") => "/emotes",
        (_, "bits") => "/bits",
        (_, "msg_id") => "/msg_id",
        (_, "channel") if command != "NOTICE" => "/channel",
        ("PRIVMSG" | "USERNOTICE", "message_id") => "/id",
        ("PRIVMSG" | "USERNOTICE", "message_text") => "/text",
        ("PRIVMSG", "is_action") => "/is_action",
        ("PRIVMSG", "first_msg") => "/first_msg",
        ("PRIVMSG" | "USERNOTICE" | "CLEARCHAT", "server_timestamp_ms") => "/timestamp_ms",
        ("USERNOTICE", "system_message") => "/system_message",
        ("USERNOTICE", "cumulative_months") => "/event/cumulative_months",
        ("USERNOTICE", "streak_months") => "/event/streak_months",
        ("USERNOTICE", "sub_plan") => "/event/sub_plan",
        ("USERNOTICE", "sub_plan_name") => "/event/sub_plan_name",
        ("USERNOTICE", "viewer_count") => "/event/viewer_count",
        ("USERNOTICE", "profile_image_url") => "/event/profile_image_url",
        ("USERNOTICE", "mass_gift_count") => "/event/mass_gift_count",
        ("USERNOTICE", "sender_total_gifts") => "/event/sender_total_gifts",
        ("USERNOTICE", "threshold") => "/event/threshold",
        ("USERNOTICE", "ritual_name") => "/event/ritual_name",
        ("USERNOTICE", "announcement_color") => "/event/color",
        ("USERNOTICE", "gifter_login") => "/event/gifter_login",
        ("USERNOTICE", "gifter_name") => "/event/gifter_name",
        ("USERNOTICE", "is_sender_anonymous") => "/event/is_sender_anonymous",
        ("USERNOTICE", "num_gifted_months") => "/event/num_gifted_months",
        ("USERNOTICE", "event") => "/event/kind",
        ("CLEARCHAT", "action") => "/action",
        ("CLEARCHAT", "target_login") => "/target_login",
        ("CLEARCHAT", "target_user_id") => "/target_user_id",
        ("CLEARCHAT", "ban_duration_s") => "/duration_s",
        ("CLEARMSG", "target_msg_id") => "/message_id",
        ("ROOMSTATE", "emote_only") => "/emote_only",
        ("ROOMSTATE", "followers_only_minutes") => "/followers_only_minutes",
        ("ROOMSTATE", "r9k") => "/r9k",
        ("ROOMSTATE", "slow_s") => "/slow_s",
        ("ROOMSTATE", "subs_only") => "/subs_only",
        ("NOTICE", "message_text") => "/text",
        _ => return None,
    })
}

/// The expected value in our vocabulary: twitch-irc's variant names become our kinds, and
/// emotes are compared on the fields the file gives.
fn normalise(key: &str, expected: &Value, actual: &Value) -> (Value, Value) {
    match key {
        "event" => {
            let kind = match expected.as_str().unwrap_or_default() {
                "SubOrResub" => "sub",
                "SubGift" => "sub_gift",
                "SubMysteryGift" | "AnonSubMysteryGift" => "sub_mystery_gift",
                "GiftPaidUpgrade" | "AnonGiftPaidUpgrade" => "gift_paid_upgrade",
                "Raid" => "raid",
                "Ritual" => "ritual",
                "BitsBadgeTier" => "bits_badge_tier",
                "Announcement" => "announcement",
                _ => "other",
            };
            (Value::from(kind), actual.clone())
        }
        "emotes" => {
            let pick = |list: &Value, keys: &[&str]| -> Value {
                let mut items: Vec<Value> = list
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| {
                        keys.iter()
                            .filter_map(|k| e.get(*k).map(|v| (k.to_string(), v.clone())))
                            .collect::<serde_json::Map<_, _>>()
                            .into()
                    })
                    .collect();
                items.sort_by_key(|e: &Value| e["start"].as_u64());
                Value::from(items)
            };
            // Ids and code-point ranges, as the issue asks. The file's codes are twitch-irc's
            // reading, which for a `/me` USERNOTICE (line 106) is shifted by the ACTION
            // wrapper (" Kapp"); the event carries the right code ("Kappa").
            let keys = ["id", "start", "end_exclusive"];
            (pick(expected, &keys), pick(actual, &keys))
        }
        // Both say "no colour" but the file spells it null and Twitch sends "".
        _ => (expected.clone(), actual.clone()),
    }
}

/// Each real Twitch line with expectations goes through the server, the client and the
/// bridge; the event that comes out carries the expected values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_twitch_lines_carry_their_expected_values() {
    let channel = channel("expected");
    let (server, chat, _bridge) = bridged(&channel, ChatConfig::default()).await;
    let lines: Vec<String> = std::fs::read_to_string(data("twitch_irc_real.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<Value> = std::fs::read_to_string(data("twitch_irc_expected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut live = chat.subscribe().live;
    let shown = [
        "PRIVMSG",
        "USERNOTICE",
        "CLEARCHAT",
        "CLEARMSG",
        "ROOMSTATE",
        "NOTICE",
    ];
    // Lines Twitch would never send to a client that asked for tags (or that our model
    // does not show, with the reason); everything else must become an event.
    let skipped: HashMap<usize, &str> = HashMap::from([
        (11, "NOTICE * is about our login, not the channel: logged"),
        (25, "PRIVMSG without tags (no tags capability)"),
        (27, "PRIVMSG without tags (no tags capability)"),
    ]);
    let mut compared = 0;
    let mut failures = Vec::new();
    for entry in &expected {
        let command = entry["command"].as_str().unwrap();
        if !shown.contains(&command) {
            continue;
        }
        let index = entry["line_index"].as_u64().unwrap() as usize;
        server.send(&channel, &lines[index]).await;
        // A sentinel after each line: whatever arrives before it came from that line.
        let sentinel = format!("sentinel-{index}");
        server
            .send(&channel, &privmsg(&channel, &sentinel, "sentinel", "s"))
            .await;
        let mut events = Vec::new();
        loop {
            let event = next(&mut live, Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("line {index}: nothing came through in 5 s"));
            if event["id"] == sentinel.as_str() {
                break;
            }
            events.push(event);
        }
        if let Some(reason) = skipped.get(&index) {
            assert!(events.is_empty(), "line {index} ({reason}) gave {events:?}");
            continue;
        }
        let [event] = events.as_slice() else {
            failures.push(format!("line {index} {command}: {} events", events.len()));
            continue;
        };
        for (key, want) in entry["expected"].as_object().unwrap() {
            let Some(at) = pointer(command, key) else {
                continue;
            };
            // A ROOMSTATE may carry only the mode that changed (null in the file); the event
            // carries the merged state, so only the modes the line gives are compared.
            if command == "ROOMSTATE" && want.is_null() {
                continue;
            }
            let mut got = event.pointer(at).cloned().unwrap_or(Value::Null);
            // twitch-irc leaves a `/me` USERNOTICE's "\x01ACTION …\x01" wrapper in its text
            // (line 106); the event drops it, as it does for every PRIVMSG.
            if command == "USERNOTICE"
                && key == "message_text"
                && want.as_str().is_some_and(|w| w.starts_with("\u{1}ACTION "))
            {
                got = Value::from(format!(
                    "\u{1}ACTION {}\u{1}",
                    got.as_str().unwrap_or_default()
                ));
            }
            let (want, got) = normalise(key, want, &got);
            compared += 1;
            if want != got {
                failures.push(format!(
                    "line {index} {command} {key}: want {want}, got {got}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Guard against a mapping that silently compares nothing.
    assert!(compared > 300, "only {compared} values compared");
    eprintln!("compared {compared} expected values");
}

/// Minimal reading of a raw capture line: (command, tags, prefix login, trailing text).
fn parse_raw(line: &str) -> (String, HashMap<String, String>, String, String) {
    let (tags, rest) = match line.strip_prefix('@') {
        Some(t) => t.split_once(' ').unwrap(),
        None => ("", line),
    };
    let tags = tags
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let (prefix, rest) = rest.split_once(' ').unwrap();
    let login = prefix.split('!').next().unwrap_or_default().to_owned();
    let (head, trailing) = rest.split_once(" :").unwrap_or((rest, ""));
    let command = head.split(' ').next().unwrap().to_owned();
    (command, tags, login, trailing.to_owned())
}

/// The whole xqcow capture at full speed: every PRIVMSG reaches a WebSocket client in
/// order, and the CLEARCHATs take the cleared users' earlier messages out of the backlog a
/// late joiner gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xqcow_capture_reaches_websocket_in_order_and_clearchat_prunes_backlog() {
    let channel = channel("xqcow");
    let pipeline = cowatch::pipeline::Pipeline::start(common::demo_settings(
        cowatch::pipeline::source::WebcamSource::None,
        "side-panel",
        1500,
    ))
    .unwrap();
    let broadcaster = common::broadcaster(&pipeline, 10).await;
    let state = common::state_with_chat(
        &pipeline,
        &broadcaster,
        ChatConfig {
            backlog: 10_000,
            relay_party: false,
        },
        &common::scratch_data(),
        None,
    );
    let (server, _, _bridge) = bridge_hub(&channel, state.chat.clone()).await;
    let addr = common::serve_app(cowatch::web::app(state)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .expect("WebSocket /chat");

    let lines: Vec<String> = std::fs::read_to_string(data("xqcow_capture_2019.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 5000);
    // What the capture says should happen.
    let mut privmsg_ids = Vec::new();
    let mut kept: Vec<(String, String)> = Vec::new(); // (id, login) still in the backlog
    let mut clears = 0;
    let mut pruned = 0;
    for line in &lines {
        let (command, tags, login, trailing) = parse_raw(line);
        match command.as_str() {
            "PRIVMSG" => {
                privmsg_ids.push(tags["id"].clone());
                kept.push((tags["id"].clone(), login));
            }
            "USERNOTICE" => kept.push((tags["id"].clone(), tags["login"].clone())),
            "CLEARCHAT" => {
                clears += 1;
                let before = kept.len();
                if trailing.is_empty() {
                    kept.clear();
                } else {
                    kept.retain(|(_, l)| *l != trailing);
                }
                pruned += before - kept.len();
            }
            _ => {}
        }
    }
    assert_eq!((privmsg_ids.len(), clears), (4933, 58));
    assert!(pruned > 0, "the capture's CLEARCHATs must clear something");

    let started = Instant::now();
    for chunk in lines.chunks(500) {
        server.send_batch(&channel, chunk).await;
    }
    let mut seen = Vec::new();
    while seen.len() < privmsg_ids.len() {
        let frame = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {} messages reached the WebSocket",
                    seen.len(),
                    privmsg_ids.len()
                )
            })
            .expect("socket open")
            .expect("frame");
        let tokio_tungstenite::tungstenite::Message::Text(text) = frame else {
            continue;
        };
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            // "ready" is the sentinel `bridged` sent before the capture.
            if event["type"] == "message" && event["id"] != "ready" {
                seen.push(event["id"].as_str().unwrap().to_owned());
            }
            assert_ne!(event["type"], "reset", "the client fell behind");
        }
    }
    eprintln!(
        "{} messages over the WebSocket in {:?}",
        seen.len(),
        started.elapsed()
    );
    assert!(
        seen == privmsg_ids,
        "messages arrived out of order or changed"
    );

    // The last CLEARCHAT may still be in flight behind the last PRIVMSG.
    let want: Vec<String> = kept.into_iter().map(|(id, _)| id).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (mut late, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
            .await
            .unwrap();
        let mut backlog = Vec::new();
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_millis(300), late.next()).await
        {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                for line in text.lines() {
                    let event: Value = serde_json::from_str(line).unwrap();
                    if let Some(id) = event["id"].as_str() {
                        backlog.push(id.to_owned());
                    }
                }
            }
        }
        backlog.retain(|id| id != "ready");
        if backlog == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "late joiner's backlog: {} entries, want {} (cleared users' messages must be gone)",
            backlog.len(),
            want.len()
        );
    }
    pipeline.shutdown().await;
}

/// The link states a subscriber saw, in order, until `until` or the timeout.
async fn states_until(
    live: &mut Receiver<std::sync::Arc<cowatch::chat::Published>>,
    until: &str,
    timeout: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut states = Vec::new();
    while let Some(event) = next(live, deadline.saturating_duration_since(Instant::now())).await {
        if event["type"] == "connection" {
            let state = event["state"].as_str().unwrap().to_owned();
            states.push(state.clone());
            if state == until {
                break;
            }
        }
    }
    states
}

/// RECONNECT then a dropped socket, and a silent drop: each time the page is told
/// "reconnecting", the bridge comes back, rejoins and keeps delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_reconnects_rejoins_and_keeps_delivering() {
    let channel = channel("reconnect");
    let (server, chat, _bridge) = bridged(&channel, ChatConfig::default()).await;
    let mut live = chat.subscribe().live;
    // Until the client has finished joining, give it a moment to say so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while chat.connection() != Connection::Connected {
        assert!(Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (round, how) in ["RECONNECT", "silent drop"].iter().enumerate() {
        let joins = server.joins(&channel);
        if round == 0 {
            server.reconnect(&channel).await;
        } else {
            server.drop_connections(&channel).await;
        }
        let states = states_until(&mut live, "connected", Duration::from_secs(15)).await;
        assert_eq!(
            states,
            ["reconnecting", "connected"],
            "after {how} the page must see reconnecting, then connected"
        );
        assert!(server.joins(&channel) > joins, "no rejoin after {how}");
        let id = format!("after-{round}");
        server
            .send(&channel, &privmsg(&channel, &id, "viewer", "still here"))
            .await;
        let mut delivered = false;
        while let Some(event) = next(&mut live, Duration::from_secs(3)).await {
            if event["id"] == id.as_str() {
                delivered = true;
                break;
            }
        }
        assert!(delivered, "no delivery after {how}");
    }
}

/// A party message is relayed to Twitch as "[party] nick: text" through the streamer's
/// account, at most `limit` per 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_messages_are_relayed_within_twitchs_rate_limit() {
    let channel = channel("relay");
    let server = TestServer::shared();
    let chat = Chat::new(ChatConfig {
        relay_party: true,
        ..ChatConfig::default()
    });
    let _bridge = Bridge::start(
        BridgeConfig {
            channel: channel.clone(),
            credentials: Some(("streamer".into(), Secret::new("oauth:testtoken").into())),
            irc_addr: Some(server.addr()),
        },
        chat.clone(),
        &Shutdown::new(),
    );
    assert!(server.wait_joined(&channel, Duration::from_secs(10)).await);
    // 25 party viewers say one thing each: more than a normal account may send in 30 s.
    for i in 0..25 {
        chat.post(&format!("viewer{i}"), &format!("hello {i}"))
            .unwrap();
    }
    let posted = Instant::now();
    let all_sent = server
        .wait_received(&channel, 20, Duration::from_secs(5))
        .await;
    for r in server.received_at(&channel) {
        eprintln!("{:?} {}", r.at.saturating_duration_since(posted), r.text);
    }
    assert!(all_sent, "fewer than 20 relayed within 5 s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = server.received(&channel);
    assert_eq!(received.len(), 20, "a normal account may send 20 per 30 s");
    assert_eq!(
        received[0],
        ("streamer".to_owned(), "[party] viewer0: hello 0".to_owned())
    );
    let texts: HashSet<String> = received.into_iter().map(|(_, t)| t).collect();
    assert_eq!(texts.len(), 20);
}
