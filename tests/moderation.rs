//! Moderation end to end: a real SQLite store in a scratch directory, the real chat hub, and
//! the real Helix client talking to a Helix stand-in on 127.0.0.1 that checks every request
//! against Twitch's documentation.
//!
//! Each action must show up in the party at once (an event on the hub, the backlog changed)
//! and reach "Twitch" as exactly the documented request; Twitch's refusals must come back
//! to the moderator and into the audit log; and everything must survive a restart.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::helix::{Recorded, TestHelix, TestHelixConfig};
use common::twitch::twitch_message;
use cowatch::chat::model::ClearKind;
use cowatch::chat::{Chat, ChatConfig, ChatEvent, Origin, RoomModes, RoomState};
use cowatch::moderation::helix::{Helix, HelixConfig, Token};
use cowatch::moderation::{
    Action, Actor, ModError, Moderation, PartyChatMode, Refusal, Role, Target,
};
use cowatch::store::Store;
use cowatch::util::clock::unix_ms;
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;

/// The broadcaster and the moderator the stand-in knows (see `TestHelixConfig::default`).
const BROADCASTER_ID: &str = "1001";
const MODERATOR_ID: &str = "2002";

/// A unique scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("cowatch-moderation-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Rig {
    /// Removed when the test ends.
    _dir: Scratch,
    chat: Chat,
    twitch: TestHelix,
    moderation: Moderation,
}

fn host() -> Actor {
    Actor {
        role: Role::Host,
        name: "the_host".into(),
    }
}

fn moderator() -> Actor {
    Actor {
        role: Role::Moderator,
        name: "mod link: alice".into(),
    }
}

async fn rig(name: &str) -> Rig {
    let dir = Scratch::new(name);
    let twitch = TestHelix::start(TestHelixConfig::default()).await.unwrap();
    let (moderation, chat) = open(&dir, &twitch);
    Rig {
        _dir: dir,
        chat,
        twitch,
        moderation,
    }
}

fn open(dir: &Scratch, twitch: &TestHelix) -> (Moderation, Chat) {
    let helix = Helix::new(HelixConfig {
        base: twitch.base(),
        client_id: twitch.config().client_id.clone(),
        token: Token::new(twitch.config().token.clone()),
        broadcaster_login: twitch.config().broadcaster.0.clone(),
    })
    .unwrap();
    Moderation::open(
        Store::open(&dir.0).unwrap(),
        Some(helix),
        ChatConfig::default(),
    )
    .unwrap()
}

fn twitch_user(login: &str) -> Target {
    Target {
        origin: Origin::Twitch,
        login: login.into(),
        user_id: None,
    }
}

fn party_nick(login: &str) -> Target {
    Target {
        origin: Origin::Party,
        login: login.into(),
        user_id: None,
    }
}

/// Everything published since the last call.
fn drain(live: &mut Receiver<std::sync::Arc<cowatch::chat::Published>>) -> Vec<ChatEvent> {
    let mut out = Vec::new();
    loop {
        match live.try_recv() {
            Ok(p) => out.push(p.event.clone()),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("live stream: {e}"),
        }
    }
}

fn ids(chat: &Chat) -> Vec<String> {
    chat.backlog()
        .iter()
        .filter_map(|e| e.message_id().map(str::to_owned))
        .collect()
}

/// Checks one request against what Twitch documents for it, headers included.
fn assert_request(
    r: &Recorded,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) {
    let query: BTreeMap<String, String> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), &r.query),
        (method, path, &query),
        "request line of {r:?}"
    );
    assert_eq!(r.authorization.as_deref(), Some("Bearer test-token"));
    assert_eq!(r.client_id.as_deref(), Some("test-client-id"));
    match &body {
        Some(_) => assert_eq!(r.content_type.as_deref(), Some("application/json")),
        None => assert_eq!(r.content_type, None, "no body, so no Content-Type"),
    }
    assert_eq!(r.body, body, "body of {method} {path}");
}

fn ids_query<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut q = vec![
        ("broadcaster_id", BROADCASTER_ID),
        ("moderator_id", MODERATOR_ID),
    ];
    q.extend_from_slice(extra);
    q
}

#[tokio::test]
async fn deleting_a_twitch_message_removes_it_at_once_and_tells_twitch() {
    let rig = rig("delete").await;
    rig.chat
        .publish(twitch_message("m-1", "onche", "3003", "first"));
    rig.chat
        .publish(twitch_message("m-2", "onche", "3003", "second"));
    let party = rig.chat.post("onche", "party side").unwrap();
    let party_id = party.event.message_id().unwrap().to_owned();
    let mut live = rig.chat.subscribe().live;

    let outcome = rig
        .moderation
        .apply(
            &moderator(),
            Action::DeleteMessage {
                message_id: "m-1".into(),
            },
        )
        .await
        .unwrap();
    assert!(outcome.applied);
    assert_eq!(outcome.twitch, Some(Ok(())));
    match drain(&mut live).as_slice() {
        [ChatEvent::Delete(d)] => {
            assert_eq!(
                (d.message_id.as_str(), d.target_login.as_str()),
                ("m-1", "onche")
            );
        }
        other => panic!("expected one Delete, got {other:?}"),
    }
    assert_eq!(ids(&rig.chat), ["m-2", party_id.as_str()]);

    // First use resolves the ids: the channel by login, then the token's own user.
    let requests = rig.twitch.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert_request(
        &requests[0],
        "GET",
        "/users",
        &[("login", "party_host")],
        None,
    );
    assert_request(&requests[1], "GET", "/users", &[], None);
    assert_request(
        &requests[2],
        "DELETE",
        "/moderation/chat",
        &ids_query(&[("message_id", "m-1")]),
        None,
    );

    // A party message is the party's alone: gone here, never sent to Twitch.
    rig.twitch.take_requests();
    let outcome = rig
        .moderation
        .apply(
            &moderator(),
            Action::DeleteMessage {
                message_id: party_id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.twitch, None);
    assert_eq!(ids(&rig.chat), ["m-2"]);
    assert!(rig.twitch.requests().is_empty());

    // An id the chat does not hold.
    let err = rig
        .moderation
        .apply(
            &moderator(),
            Action::DeleteMessage {
                message_id: "nope".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ModError::NotFound(_)), "{err:?}");

    let audit = rig.moderation.audit(10).unwrap();
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[2].action, "delete_message");
    assert_eq!(audit[2].actor_role, "moderator");
    assert_eq!(audit[2].actor_name, "mod link: alice");
    assert_eq!(audit[2].target.as_deref(), Some("twitch:onche"));
    assert_eq!(audit[2].detail.as_deref(), Some("message m-1: first"));
    assert_eq!(audit[2].result, "ok");
    assert!(audit[0].result.starts_with("error: "), "{:?}", audit[0]);
}

#[tokio::test]
async fn timeout_ban_and_unban_clear_the_user_here_and_reach_twitch() {
    let rig = rig("bans").await;
    rig.twitch.add_user("spammer", "4004");
    rig.chat
        .publish(twitch_message("m-1", "onche", "3003", "hello"));
    rig.chat.post("onche", "same name, party side").unwrap();
    let mut live = rig.chat.subscribe().live;

    // Timeout: the user id comes from the message in the backlog, no look-up needed.
    let outcome = rig
        .moderation
        .apply(
            &host(),
            Action::Timeout {
                target: twitch_user("Onche"),
                seconds: 600,
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.twitch, Some(Ok(())));
    match drain(&mut live).as_slice() {
        [ChatEvent::Clear(c)] => {
            assert_eq!(c.action, ClearKind::Timeout);
            assert_eq!(c.origin, Origin::Twitch);
            assert_eq!(c.target_login.as_deref(), Some("onche"));
            assert_eq!(c.target_user_id.as_deref(), Some("3003"));
            assert_eq!(c.duration_s, Some(600));
        }
        other => panic!("expected one Clear, got {other:?}"),
    }
    // The Twitch user's message is gone; the party nickname's stays.
    let backlog = rig.chat.backlog();
    assert_eq!(backlog.len(), 1);
    assert!(matches!(&backlog[0], ChatEvent::Message(m) if m.origin == Origin::Party));
    let posts = rig.twitch.moderation_requests();
    assert_request(
        &posts[0],
        "POST",
        "/moderation/bans",
        &ids_query(&[]),
        Some(json!({"data": {"user_id": "3003", "duration": 600, "reason": ""}})),
    );
    assert_eq!(rig.twitch.ban_of("3003"), Some(Some(600)));

    // Ban of a user who never wrote: looked up by login, no duration in the body.
    rig.twitch.take_requests();
    rig.moderation
        .apply(
            &host(),
            Action::Ban {
                target: twitch_user("spammer"),
                reason: Some("follow bots".into()),
                whole_party: false,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        drain(&mut live).as_slice(),
        [ChatEvent::Clear(c)] if c.action == ClearKind::Ban && c.duration_s.is_none()
    ));
    let requests = rig.twitch.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_request(&requests[0], "GET", "/users", &[("login", "spammer")], None);
    assert_request(
        &requests[1],
        "POST",
        "/moderation/bans",
        &ids_query(&[]),
        Some(json!({"data": {"user_id": "4004", "reason": "follow bots"}})),
    );
    assert_eq!(rig.twitch.ban_of("4004"), Some(None));
    let bans = rig.moderation.bans().unwrap();
    assert_eq!(bans.len(), 2);

    // Unban.
    rig.twitch.take_requests();
    let outcome = rig
        .moderation
        .apply(
            &host(),
            Action::Unban {
                target: Target {
                    origin: Origin::Twitch,
                    login: "spammer".into(),
                    user_id: Some("4004".into()),
                },
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.twitch, Some(Ok(())));
    assert_request(
        &rig.twitch.requests()[0],
        "DELETE",
        "/moderation/bans",
        &ids_query(&[("user_id", "4004")]),
        None,
    );
    assert_eq!(rig.twitch.ban_of("4004"), None);
    assert_eq!(rig.moderation.bans().unwrap().len(), 1);

    // A party nickname's ban stays in the party.
    rig.twitch.take_requests();
    let outcome = rig
        .moderation
        .apply(
            &host(),
            Action::Ban {
                target: party_nick("onche"),
                reason: None,
                whole_party: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.twitch, None);
    assert!(matches!(
        drain(&mut live).as_slice(),
        [ChatEvent::Clear(c)] if c.origin == Origin::Party
    ));
    assert!(rig.chat.backlog().is_empty());
    assert!(rig.twitch.requests().is_empty());
}

#[tokio::test]
async fn clear_chat_and_room_modes_apply_here_and_patch_twitch() {
    let rig = rig("modes").await;
    rig.chat
        .publish(twitch_message("m-1", "onche", "3003", "hello"));
    rig.chat.post("viewer", "hi").unwrap();
    let mut live = rig.chat.subscribe().live;

    rig.moderation
        .apply(&host(), Action::ClearChat {})
        .await
        .unwrap();
    assert!(matches!(
        drain(&mut live).as_slice(),
        [ChatEvent::Clear(c)] if c.action == ClearKind::Clear && c.target_login.is_none()
    ));
    assert!(rig.chat.backlog().is_empty());
    assert_request(
        rig.twitch.moderation_requests().last().unwrap(),
        "DELETE",
        "/moderation/chat",
        &ids_query(&[]),
        None,
    );

    let cases = [
        (
            Action::Slow { seconds: 30 },
            json!({"slow_mode": true, "slow_mode_wait_time": 30}),
        ),
        (Action::EmoteOnly { on: true }, json!({"emote_mode": true})),
        (
            Action::FollowersOnly { minutes: Some(10) },
            json!({"follower_mode": true, "follower_mode_duration": 10}),
        ),
        (
            Action::SubsOnly { on: true },
            json!({"subscriber_mode": true}),
        ),
        (Action::Slow { seconds: 0 }, json!({"slow_mode": false})),
        (
            Action::FollowersOnly { minutes: None },
            json!({"follower_mode": false}),
        ),
    ];
    for (action, body) in cases {
        rig.twitch.take_requests();
        let outcome = rig.moderation.apply(&host(), action.clone()).await.unwrap();
        assert_eq!(outcome.twitch, Some(Ok(())), "{action:?}");
        let events = drain(&mut live);
        let [ChatEvent::RoomState(room)] = events.as_slice() else {
            panic!("{action:?}: expected one RoomState, got {events:?}");
        };
        assert_eq!(room.modes, rig.chat.modes());
        assert_eq!(room.channel, "party_host");
        let requests = rig.twitch.requests();
        assert_eq!(requests.len(), 1, "{action:?}: {requests:#?}");
        assert_request(
            &requests[0],
            "PATCH",
            "/chat/settings",
            &ids_query(&[]),
            Some(body),
        );
    }
    // The modes merged, each action changing only its own.
    assert_eq!(
        rig.chat.modes(),
        RoomModes {
            emote_only: true,
            followers_only_minutes: None,
            r9k: false,
            slow_s: 0,
            subs_only: true,
        }
    );
    let settings = rig.twitch.settings();
    assert_eq!(settings["emote_mode"], true);
    assert_eq!(settings["subscriber_mode"], true);
    assert_eq!(settings["slow_mode"], false);

    // Twitch's slow-mode range holds in the party too.
    let err = rig
        .moderation
        .apply(&host(), Action::Slow { seconds: 600 })
        .await
        .unwrap_err();
    assert!(matches!(err, ModError::Invalid(_)));
}

#[tokio::test]
async fn a_new_blocked_term_hides_the_backlog_and_later_messages() {
    let rig = rig("terms").await;
    rig.chat
        .publish(twitch_message("m-1", "onche", "3003", "buy FOLLOWERS here"));
    rig.chat
        .publish(twitch_message("m-2", "other", "3004", "nice movie"));
    rig.chat.post("pal", "cheap followers!").unwrap();
    let mut live = rig.chat.subscribe().live;

    rig.moderation
        .apply(
            &moderator(),
            Action::AddBlockedTerm {
                term: "Followers".into(),
            },
        )
        .await
        .unwrap();
    let deleted: Vec<String> = drain(&mut live)
        .into_iter()
        .map(|e| match e {
            ChatEvent::Delete(d) => d.target_login,
            other => panic!("expected Deletes, got {other:?}"),
        })
        .collect();
    assert_eq!(deleted, ["onche", "pal"]);
    assert_eq!(ids(&rig.chat), ["m-2"]);
    assert!(
        rig.twitch.requests().is_empty(),
        "blocked terms are the party's"
    );

    // From now on: a Twitch message is hidden, a party post refused.
    assert!(
        rig.moderation
            .hides(&twitch_message("m-3", "x", "1", "get followers"))
    );
    assert!(
        !rig.moderation
            .hides(&twitch_message("m-4", "x", "1", "get popcorn"))
    );
    assert_eq!(
        rig.moderation
            .check_party_post("pal", "FoLlOwErS", Duration::ZERO),
        Err(Refusal::BlockedTerm)
    );
    assert_eq!(rig.moderation.blocked_terms().unwrap()[0].term, "Followers");

    // The same term in another case is the same term.
    rig.moderation
        .apply(
            &moderator(),
            Action::RemoveBlockedTerm {
                term: "FOLLOWERS".into(),
            },
        )
        .await
        .unwrap();
    assert!(rig.moderation.blocked_terms().unwrap().is_empty());
    assert!(
        !rig.moderation
            .hides(&twitch_message("m-3", "x", "1", "get followers"))
    );
    let err = rig
        .moderation
        .apply(
            &moderator(),
            Action::RemoveBlockedTerm {
                term: "followers".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ModError::NotFound(_)));
}

#[tokio::test]
async fn a_helix_error_reaches_the_moderator_and_the_audit_log_while_the_party_applies() {
    let rig = rig("helix-error").await;
    rig.chat
        .publish(twitch_message("m-1", "onche", "3003", "hello"));
    let mut live = rig.chat.subscribe().live;

    let message = "The user specified in the user_id field may not be banned.";
    rig.twitch.fail_next(400, message);
    let outcome = rig
        .moderation
        .apply(
            &moderator(),
            Action::Ban {
                target: twitch_user("onche"),
                reason: None,
                whole_party: false,
            },
        )
        .await
        .unwrap();
    assert!(outcome.applied);
    assert_eq!(outcome.twitch, Some(Err(format!("Twitch 400: {message}"))));
    // Applied in the party regardless.
    assert!(matches!(drain(&mut live).as_slice(), [ChatEvent::Clear(_)]));
    assert!(rig.chat.backlog().is_empty());
    assert_eq!(rig.moderation.bans().unwrap().len(), 1);
    let audit = &rig.moderation.audit(1).unwrap()[0];
    assert_eq!(audit.action, "ban");
    assert!(audit.result.starts_with("error: "), "{audit:?}");
    assert!(audit.result.contains(message), "{audit:?}");

    // The stand-in's own checks answer like Twitch: the broadcaster cannot be banned.
    let outcome = rig
        .moderation
        .apply(
            &moderator(),
            Action::Timeout {
                target: Target {
                    origin: Origin::Twitch,
                    login: "party_host".into(),
                    user_id: Some(BROADCASTER_ID.into()),
                },
                seconds: 60,
            },
        )
        .await
        .unwrap();
    assert_eq!(outcome.twitch, Some(Err(format!("Twitch 400: {message}"))));

    // A user Twitch does not know.
    let outcome = rig
        .moderation
        .apply(
            &moderator(),
            Action::Ban {
                target: twitch_user("nobody_here"),
                reason: None,
                whole_party: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        outcome.twitch,
        Some(Err("no Twitch user \"nobody_here\"".into()))
    );
}

#[tokio::test]
async fn a_wrong_token_or_client_id_is_refused_as_twitch_does() {
    let twitch = TestHelix::start(TestHelixConfig::default()).await.unwrap();
    let call = |token: &str, client_id: &str| {
        Helix::new(HelixConfig {
            base: twitch.base(),
            client_id: client_id.into(),
            token: Token::new(token),
            broadcaster_login: "party_host".into(),
        })
        .unwrap()
    };
    let err = call("wrong", "test-client-id")
        .delete_message(None)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Twitch 401: Invalid OAuth token");
    let err = call("oauth:test-token", "other-client")
        .delete_message(None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Twitch 401: Client ID and OAuth token do not match"
    );
    // `oauth:` is dropped and the right pair goes through.
    call("oauth:test-token", "test-client-id")
        .delete_message(None)
        .await
        .unwrap();
}

#[tokio::test]
async fn bans_terms_links_party_rule_and_audit_survive_a_restart() {
    let dir = Scratch::new("restart");
    let twitch = TestHelix::start(TestHelixConfig::default()).await.unwrap();
    twitch.add_user("spammer", "4004");
    let key;
    {
        let (moderation, _chat) = open(&dir, &twitch);
        let host = host();
        for action in [
            Action::Ban {
                target: party_nick("troll"),
                reason: Some("rude".into()),
                whole_party: false,
            },
            Action::Timeout {
                target: party_nick("loud"),
                seconds: 3600,
            },
            Action::Ban {
                target: twitch_user("spammer"),
                reason: None,
                whole_party: false,
            },
            Action::AddBlockedTerm {
                term: "badword".into(),
            },
            Action::PartyChat {
                mode: PartyChatMode::MinMinutes(15),
            },
        ] {
            moderation.apply(&host, action).await.unwrap();
        }
        key = cowatch::util::id::random_token(16);
        moderation.store().add_mod_link("alice", &key).unwrap();
    }

    let (moderation, _chat) = open(&dir, &twitch);
    let mut bans: Vec<(Origin, String)> = moderation
        .bans()
        .unwrap()
        .into_iter()
        .map(|b| (b.origin, b.login))
        .collect();
    bans.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        bans,
        [
            (Origin::Party, "loud".to_owned()),
            (Origin::Twitch, "spammer".to_owned()),
            (Origin::Party, "troll".to_owned()),
        ]
    );
    assert_eq!(moderation.blocked_terms().unwrap()[0].term, "badword");
    assert_eq!(
        moderation
            .store()
            .find_mod_key(&key)
            .unwrap()
            .unwrap()
            .label,
        "alice"
    );
    assert_eq!(moderation.party_chat(), PartyChatMode::MinMinutes(15));
    let audit = moderation.audit(100).unwrap();
    assert_eq!(audit.len(), 5);
    assert_eq!(audit[0].action, "party_chat");
    assert_eq!(audit[4].action, "ban");
    assert_eq!(audit[4].detail.as_deref(), Some("rude"));
    // And they are enforced from the reloaded state.
    let long = Duration::from_secs(3600);
    assert_eq!(
        moderation.check_party_post("troll", "hi", long),
        Err(Refusal::Banned)
    );
    assert!(matches!(
        moderation.check_party_post("loud", "hi", long),
        Err(Refusal::TimedOut(s)) if s > 3500
    ));
    assert_eq!(
        moderation.check_party_post("newbie", "hi", Duration::from_secs(60)),
        Err(Refusal::TooNew {
            minutes: 15,
            to_go_s: 14 * 60
        })
    );
    assert!(
        moderation.hides(&twitch_message("m", "spammer", "4004", "hello")),
        "a Twitch user banned here stays hidden here"
    );
}

#[tokio::test]
async fn party_posts_are_refused_for_the_right_reason() {
    let rig = rig("refusals").await;
    let m = &rig.moderation;
    let here = Duration::from_secs(3600);
    let t0 = unix_ms();

    m.apply(
        &host(),
        Action::Ban {
            target: party_nick("troll"),
            reason: None,
            whole_party: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        m.check_party_post_at("Troll", "hi", here, t0),
        Err(Refusal::Banned)
    );
    assert_eq!(
        Refusal::Banned.to_string(),
        "you are banned from the party chat"
    );

    // A timeout runs out.
    m.apply(
        &host(),
        Action::Timeout {
            target: party_nick("loud"),
            seconds: 60,
        },
    )
    .await
    .unwrap();
    let refused = m.check_party_post_at("loud", "hi", here, unix_ms());
    assert!(
        matches!(refused, Err(Refusal::TimedOut(s)) if (59..=60).contains(&s)),
        "{refused:?}"
    );
    assert_eq!(
        m.check_party_post_at("loud", "hi", here, unix_ms() + 61_000),
        Ok(())
    );

    // Closed, then open to those who have been here 5 minutes.
    m.apply(
        &host(),
        Action::PartyChat {
            mode: PartyChatMode::Closed,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        m.check_party_post_at("pal", "hi", here, t0),
        Err(Refusal::Closed)
    );
    m.apply(
        &host(),
        Action::PartyChat {
            mode: PartyChatMode::MinMinutes(5),
        },
    )
    .await
    .unwrap();
    let refused = m.check_party_post_at("pal", "hi", Duration::from_secs(180), t0);
    assert_eq!(
        refused,
        Err(Refusal::TooNew {
            minutes: 5,
            to_go_s: 120
        })
    );
    assert_eq!(
        refused.unwrap_err().to_string(),
        "party chat is open to viewers who have been here 5 minutes; 2 min to go"
    );
    assert_eq!(
        m.check_party_post_at("pal", "hi", Duration::from_secs(300), t0),
        Ok(())
    );
    m.apply(
        &host(),
        Action::PartyChat {
            mode: PartyChatMode::Open,
        },
    )
    .await
    .unwrap();

    // Slow mode: one message per 30 s per nickname.
    m.apply(&host(), Action::Slow { seconds: 30 })
        .await
        .unwrap();
    let t1 = t0 + 100_000;
    assert_eq!(m.check_party_post_at("pal", "one", here, t1), Ok(()));
    assert_eq!(
        m.check_party_post_at("pal", "two", here, t1 + 10_000),
        Err(Refusal::Slow(20))
    );
    assert_eq!(
        m.check_party_post_at("other", "one", here, t1 + 10_000),
        Ok(())
    );
    assert_eq!(
        m.check_party_post_at("pal", "two", here, t1 + 30_000),
        Ok(())
    );
    m.apply(&host(), Action::Slow { seconds: 0 }).await.unwrap();

    // Blocked terms.
    m.apply(
        &host(),
        Action::AddBlockedTerm {
            term: "BadWord".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        m.check_party_post_at("pal", "such a badword", here, t1 + 60_000),
        Err(Refusal::BlockedTerm)
    );
    assert_eq!(
        Refusal::BlockedTerm.to_string(),
        "your message contains a blocked term"
    );

    // Twitch's room modes: party viewers have no emotes, subs or follows.
    for (action, refusal, undo) in [
        (
            Action::EmoteOnly { on: true },
            Refusal::EmoteOnly,
            Action::EmoteOnly { on: false },
        ),
        (
            Action::SubsOnly { on: true },
            Refusal::SubsOnly,
            Action::SubsOnly { on: false },
        ),
        (
            Action::FollowersOnly { minutes: Some(0) },
            Refusal::FollowersOnly,
            Action::FollowersOnly { minutes: None },
        ),
    ] {
        m.apply(&host(), action).await.unwrap();
        assert_eq!(
            m.check_party_post_at("pal", "Kappa", here, t1 + 90_000),
            Err(refusal)
        );
        m.apply(&host(), undo).await.unwrap();
    }
    assert_eq!(
        m.check_party_post_at("pal", "Kappa", here, t1 + 90_000),
        Ok(())
    );
}

#[tokio::test]
async fn a_viewer_may_do_nothing() {
    let rig = rig("viewer").await;
    rig.chat
        .publish(twitch_message("m-1", "onche", "3003", "hello"));
    let mut live = rig.chat.subscribe().live;
    let viewer = Actor {
        role: Role::Viewer,
        name: "curious".into(),
    };
    for action in [
        Action::Ban {
            target: twitch_user("onche"),
            reason: None,
            whole_party: false,
        },
        Action::DeleteMessage {
            message_id: "m-1".into(),
        },
        Action::ClearChat {},
        Action::Slow { seconds: 30 },
        Action::AddBlockedTerm {
            term: "hello".into(),
        },
        Action::PartyChat {
            mode: PartyChatMode::Closed,
        },
    ] {
        let err = rig.moderation.apply(&viewer, action).await.unwrap_err();
        assert!(matches!(err, ModError::Forbidden), "{err:?}");
    }
    assert!(drain(&mut live).is_empty());
    assert_eq!(ids(&rig.chat), ["m-1"]);
    assert!(rig.moderation.bans().unwrap().is_empty());
    assert!(rig.moderation.blocked_terms().unwrap().is_empty());
    assert_eq!(rig.moderation.party_chat(), PartyChatMode::Open);
    assert_eq!(rig.chat.modes(), RoomModes::default());
    assert!(rig.twitch.requests().is_empty());
    // The attempts are on record, refused.
    let audit = rig.moderation.audit(10).unwrap();
    assert_eq!(audit.len(), 6);
    assert!(audit.iter().all(|e| e.actor_role == "viewer"
        && e.result == "error: only the host and moderators may do that"));
}

#[tokio::test]
async fn twitch_moderators_actions_are_logged_once() {
    let rig = rig("observe").await;
    let m = &rig.moderation;
    rig.chat
        .publish(twitch_message("m-1", "onche", "3003", "hello"));

    // Ours, forwarded: Twitch's IRC echo is not logged a second time.
    m.apply(
        &host(),
        Action::Timeout {
            target: twitch_user("onche"),
            seconds: 60,
        },
    )
    .await
    .unwrap();
    let echo = |login: &str, kind: ClearKind, duration: Option<u64>| {
        ChatEvent::Clear(cowatch::chat::model::Clear {
            origin: Origin::Twitch,
            channel: "party_host".into(),
            action: kind,
            target_login: Some(login.into()),
            target_user_id: Some("3003".into()),
            duration_s: duration,
            timestamp_ms: unix_ms(),
        })
    };
    m.observe(&echo("onche", ClearKind::Timeout, Some(60)));
    // A Twitch moderator's own ban, and a deleted message.
    m.observe(&echo("other", ClearKind::Ban, None));
    m.observe(&ChatEvent::Delete(cowatch::chat::model::Delete {
        channel: "party_host".into(),
        message_id: "m-9".into(),
        target_login: "someone".into(),
    }));
    // ROOMSTATE: the state on join is nobody's action; a change is.
    let room = |slow_s| {
        ChatEvent::RoomState(RoomState {
            channel: "party_host".into(),
            modes: RoomModes {
                slow_s,
                ..RoomModes::default()
            },
        })
    };
    m.observe(&room(0));
    m.observe(&room(0));
    // Ours again: Twitch's ROOMSTATE echo of a forwarded mode change is not logged.
    m.apply(&host(), Action::Slow { seconds: 30 })
        .await
        .unwrap();
    m.observe(&room(30));
    m.observe(&room(20));

    let audit = m.audit(10).unwrap();
    let lines: Vec<(&str, &str, Option<&str>, Option<&str>)> = audit
        .iter()
        .map(|e| {
            (
                e.actor_name.as_str(),
                e.action.as_str(),
                e.target.as_deref(),
                e.detail.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("twitch", "room_modes", None, Some("slow 20 s")),
            ("the_host", "slow", None, Some("30 s")),
            (
                "twitch",
                "delete_message",
                Some("twitch:someone"),
                Some("message m-9")
            ),
            ("twitch", "ban", Some("twitch:other"), None),
            ("the_host", "timeout", Some("twitch:onche"), Some("60 s")),
        ]
    );
    assert_eq!(audit.iter().filter(|e| e.actor_role == "twitch").count(), 3);
}

#[tokio::test]
async fn the_stand_in_refuses_what_twitch_refuses() {
    let twitch = TestHelix::start(TestHelixConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let send =
        |method: reqwest::Method, path: &str, query: &[(&str, &str)], body: Option<Value>| {
            let mut request = http
                .request(method, format!("{}{path}", twitch.base()))
                .query(query)
                .bearer_auth("test-token")
                .header("Client-Id", "test-client-id");
            if let Some(body) = body {
                request = request.json(&body);
            }
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (
                    status,
                    body["message"].as_str().unwrap_or_default().to_owned(),
                )
            }
        };
    let ids = ids_query(&[]);
    let post = reqwest::Method::POST;
    assert_eq!(
        send(
            post.clone(),
            "/moderation/bans",
            &[("moderator_id", MODERATOR_ID)],
            None
        )
        .await,
        (400, "Missing required parameter \"broadcaster_id\"".into())
    );
    assert_eq!(
        send(
            post.clone(),
            "/moderation/bans",
            &ids,
            Some(json!({"user_id": "3003"}))
        )
        .await,
        (400, "Missing required parameter \"data\"".into())
    );
    assert_eq!(
        send(
            post.clone(),
            "/moderation/bans",
            &ids,
            Some(json!({"data": {"user_id": "3003", "duration": 1_209_601}}))
        )
        .await,
        (400, "The value in the duration field is not valid.".into())
    );
    assert_eq!(
        send(
            post.clone(),
            "/moderation/bans",
            &[("broadcaster_id", BROADCASTER_ID), ("moderator_id", "9")],
            Some(json!({"data": {"user_id": "3003"}}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        send(reqwest::Method::DELETE, "/moderation/bans", &ids, None).await,
        (400, "Missing required parameter \"user_id\"".into())
    );
    assert_eq!(
        send(
            reqwest::Method::PATCH,
            "/chat/settings",
            &ids,
            Some(json!({"slow_mode": true, "slow_mode_wait_time": 2}))
        )
        .await,
        (
            400,
            "The value in the slow_mode_wait_time field is not valid.".into()
        )
    );
    assert_eq!(
        send(reqwest::Method::GET, "/moderation/nothing", &ids, None)
            .await
            .0,
        404
    );
}

#[test]
fn the_stand_in_writes_rfc3339_dates() {
    use common::helix::rfc3339;
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_632_857_251), "2021-09-28T19:27:31Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
}
