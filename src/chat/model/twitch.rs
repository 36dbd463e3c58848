//! Twitch lines as chat events: one parsed `twitch-irc` message in, at most one
//! [`ChatEvent`] out.

use twitch_irc::message::{
    Badge as TwitchBadge, ClearChatAction, Emote as TwitchEmote, FollowersOnlyMode, RGBColor,
    ServerMessage, UserNoticeEvent,
};

use super::repair::repair;
use super::{
    Badge, ChatEvent, ChatMessage, Clear, ClearKind, Delete, Emote, NoticeKind, Origin, Reply,
    RoomModes, RoomState, ServerNotice, User, UserNotice, display_color, fragments,
};

/// Turns one parsed Twitch line into a chat event, with `modes` the room state so far
/// (ROOMSTATE lines may carry only the mode that changed). Lines viewers never see (PING,
/// JOIN, USERSTATE…) give `None`.
pub fn from_twitch(message: &ServerMessage, modes: &RoomModes) -> Option<ChatEvent> {
    if let Some(repaired) = repair(message) {
        return from_twitch(&repaired, modes);
    }
    match message {
        ServerMessage::Privmsg(m) => {
            let emotes = emotes(&m.emotes);
            // An empty `/me` arrives as "\x01ACTION\x01", which twitch-irc leaves as text.
            let (text, is_action) = match m.message_text.as_str() {
                "\u{1}ACTION\u{1}" => (String::new(), true),
                text => (text.replace('\u{1}', ""), m.is_action),
            };
            Some(ChatEvent::Message(ChatMessage {
                id: m.message_id.clone(),
                origin: Origin::Twitch,
                channel: m.channel_login.clone(),
                sender: user(&m.sender.id, &m.sender.login, &m.sender.name),
                color: m.name_color.map(hex),
                display_color: display_color(m.name_color, &m.sender.login),
                badges: badges(&m.badges),
                fragments: fragments(&text, &emotes),
                text,
                emotes,
                is_action,
                first_msg: tag(&m.source, "first-msg") == Some("1"),
                bits: m.bits,
                reply: m.reply_parent.as_ref().map(|p| Reply {
                    message_id: p.message_id.clone(),
                    user: user(
                        &p.reply_parent_user.id,
                        &p.reply_parent_user.login,
                        &p.reply_parent_user.name,
                    ),
                    text: p.message_text.clone(),
                }),
                msg_id: tag(&m.source, "msg-id").map(str::to_owned),
                timestamp_ms: m.server_timestamp.timestamp_millis(),
            }))
        }
        ServerMessage::UserNotice(m) => {
            // A `/me` resub message keeps its "\x01ACTION …\x01" wrapper in twitch-irc,
            // and Twitch counts its emote ranges from the "A" of ACTION. The event keeps the
            // ranges as Twitch sent them; text, codes and fragments are of the unwrapped text.
            const ACTION: &str = "\u{1}ACTION ";
            let raw = m.message_text.as_deref();
            let action = raw.and_then(|t| t.strip_prefix(ACTION));
            let text = match (raw, action) {
                (_, Some(t)) => Some(t.strip_suffix('\u{1}').unwrap_or(t).to_owned()),
                (Some(t), None) => Some(t.to_owned()),
                (None, None) => None,
            };
            let shift = if action.is_some() {
                ACTION.len() - 1
            } else {
                0
            };
            let mut emotes = match &text {
                Some(_) => emotes(&m.emotes),
                None => Vec::new(),
            };
            let shifted: Vec<Emote> = emotes
                .iter()
                .filter(|e| e.start >= shift)
                .map(|e| Emote {
                    start: e.start - shift,
                    end_exclusive: e.end_exclusive - shift,
                    ..e.clone()
                })
                .collect();
            let shifted = with_codes(shifted, text.as_deref().unwrap_or_default());
            for e in &mut emotes {
                if let Some(s) = shifted.iter().find(|s| s.start + shift == e.start) {
                    e.code = s.code.clone();
                }
            }
            Some(ChatEvent::Notice(UserNotice {
                id: m.message_id.clone(),
                channel: m.channel_login.clone(),
                msg_id: m.event_id.clone(),
                sender: user(&m.sender.id, &m.sender.login, &m.sender.name),
                color: m.name_color.map(hex),
                display_color: display_color(m.name_color, &m.sender.login),
                badges: badges(&m.badges),
                system_message: m.system_message.clone(),
                fragments: text
                    .as_deref()
                    .map_or_else(Vec::new, |t| fragments(t, &shifted)),
                text,
                emotes,
                event: notice_kind(&m.event, &m.event_id, &m.source),
                timestamp_ms: m.server_timestamp.timestamp_millis(),
            }))
        }
        ServerMessage::ClearChat(m) => {
            let (action, login, id, duration) = match &m.action {
                ClearChatAction::ChatCleared => (ClearKind::Clear, None, None, None),
                ClearChatAction::UserBanned {
                    user_login,
                    user_id,
                } => (
                    ClearKind::Ban,
                    Some(user_login.clone()),
                    Some(user_id.clone()),
                    None,
                ),
                ClearChatAction::UserTimedOut {
                    user_login,
                    user_id,
                    timeout_length,
                } => (
                    ClearKind::Timeout,
                    Some(user_login.clone()),
                    Some(user_id.clone()),
                    Some(timeout_length.as_secs()),
                ),
            };
            Some(ChatEvent::Clear(Clear {
                origin: Origin::Twitch,
                channel: m.channel_login.clone(),
                action,
                target_login: login,
                target_user_id: id,
                duration_s: duration,
                timestamp_ms: m.server_timestamp.timestamp_millis(),
            }))
        }
        ServerMessage::ClearMsg(m) => Some(ChatEvent::Delete(Delete {
            channel: m.channel_login.clone(),
            message_id: m.message_id.clone(),
            target_login: m.sender_login.clone(),
        })),
        ServerMessage::RoomState(m) => {
            let mut next = modes.clone();
            if let Some(v) = m.emote_only {
                next.emote_only = v;
            }
            if let Some(v) = &m.followers_only {
                next.followers_only_minutes = match v {
                    FollowersOnlyMode::Disabled => None,
                    FollowersOnlyMode::Enabled(d) => Some(d.as_secs() / 60),
                };
            }
            if let Some(v) = m.r9k {
                next.r9k = v;
            }
            if let Some(v) = m.slow_mode {
                next.slow_s = v.as_secs();
            }
            if let Some(v) = m.subscribers_only {
                next.subs_only = v;
            }
            Some(ChatEvent::RoomState(RoomState {
                channel: m.channel_login.clone(),
                modes: next,
            }))
        }
        ServerMessage::Notice(m) if m.channel_login.is_some() => {
            Some(ChatEvent::ServerNotice(ServerNotice {
                msg_id: m.message_id.clone(),
                text: m.message_text.clone(),
            }))
        }
        _ => None,
    }
}

fn notice_kind(
    event: &UserNoticeEvent,
    msg_id: &str,
    source: &twitch_irc::message::IRCMessage,
) -> NoticeKind {
    match event {
        UserNoticeEvent::SubOrResub {
            is_resub,
            cumulative_months,
            streak_months,
            sub_plan,
            sub_plan_name,
        } => NoticeKind::Sub {
            is_resub: *is_resub,
            cumulative_months: *cumulative_months,
            streak_months: *streak_months,
            sub_plan: sub_plan.clone(),
            sub_plan_name: sub_plan_name.clone(),
        },
        UserNoticeEvent::SubGift {
            is_sender_anonymous,
            cumulative_months,
            recipient,
            sub_plan,
            sub_plan_name,
            num_gifted_months,
        } => NoticeKind::SubGift {
            is_sender_anonymous: *is_sender_anonymous,
            recipient: user(&recipient.id, &recipient.login, &recipient.name),
            cumulative_months: *cumulative_months,
            sub_plan: sub_plan.clone(),
            sub_plan_name: sub_plan_name.clone(),
            num_gifted_months: *num_gifted_months,
        },
        UserNoticeEvent::SubMysteryGift {
            mass_gift_count,
            sender_total_gifts,
            sub_plan,
        } => NoticeKind::SubMysteryGift {
            is_sender_anonymous: false,
            mass_gift_count: *mass_gift_count,
            sender_total_gifts: *sender_total_gifts,
            sub_plan: sub_plan.clone(),
        },
        UserNoticeEvent::AnonSubMysteryGift {
            mass_gift_count,
            sub_plan,
        } => NoticeKind::SubMysteryGift {
            is_sender_anonymous: true,
            mass_gift_count: *mass_gift_count,
            sender_total_gifts: None,
            sub_plan: sub_plan.clone(),
        },
        UserNoticeEvent::GiftPaidUpgrade {
            gifter_login,
            gifter_name,
            ..
        } => NoticeKind::GiftPaidUpgrade {
            gifter_login: Some(gifter_login.clone()),
            gifter_name: Some(gifter_name.clone()),
        },
        UserNoticeEvent::AnonGiftPaidUpgrade { .. } => NoticeKind::GiftPaidUpgrade {
            gifter_login: None,
            gifter_name: None,
        },
        UserNoticeEvent::Raid {
            viewer_count,
            profile_image_url,
        } => NoticeKind::Raid {
            viewer_count: *viewer_count,
            profile_image_url: profile_image_url.clone(),
        },
        UserNoticeEvent::Announcement { color } => NoticeKind::Announcement {
            color: color.clone(),
        },
        UserNoticeEvent::BitsBadgeTier { threshold } => NoticeKind::BitsBadgeTier {
            threshold: *threshold,
        },
        UserNoticeEvent::Ritual { ritual_name } => NoticeKind::Ritual {
            ritual_name: ritual_name.clone(),
        },
        _ if msg_id == "viewermilestone" => NoticeKind::ViewerMilestone {
            category: tag(source, "msg-param-category").map(str::to_owned),
            value: tag(source, "msg-param-value").and_then(|v| v.parse().ok()),
        },
        _ => NoticeKind::Other,
    }
}

fn tag<'a>(source: &'a twitch_irc::message::IRCMessage, key: &str) -> Option<&'a str> {
    source
        .tags
        .0
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn user(id: &str, login: &str, display_name: &str) -> User {
    // Kept as Twitch sent it (some carry a trailing space; renderers trim); an empty one
    // falls back to the login so no line is nameless.
    User {
        id: id.to_owned(),
        login: login.to_owned(),
        display_name: if display_name.trim().is_empty() {
            login
        } else {
            display_name
        }
        .to_owned(),
    }
}

fn badges(list: &[TwitchBadge]) -> Vec<Badge> {
    list.iter()
        .map(|b| Badge {
            name: b.name.clone(),
            version: b.version.clone(),
        })
        .collect()
}

fn emotes(list: &[TwitchEmote]) -> Vec<Emote> {
    list.iter()
        .map(|e| Emote {
            id: e.id.clone(),
            start: e.char_range.start,
            end_exclusive: e.char_range.end,
            code: e.code.clone(),
        })
        .collect()
}

/// Emote codes read from `text` at their ranges (ranges past the end keep no code).
fn with_codes(mut list: Vec<Emote>, text: &str) -> Vec<Emote> {
    let chars: Vec<char> = text.chars().collect();
    for e in &mut list {
        if e.start < e.end_exclusive && e.end_exclusive <= chars.len() {
            e.code = chars[e.start..e.end_exclusive].iter().collect();
        }
    }
    list
}

fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.r, c.g, c.b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::model::Fragment;
    use twitch_irc::message::IRCMessage;

    fn parse(line: &str) -> ServerMessage {
        ServerMessage::try_from(IRCMessage::parse(line).unwrap()).unwrap()
    }

    fn message(line: &str) -> ChatMessage {
        match from_twitch(&parse(line), &RoomModes::default()) {
            Some(ChatEvent::Message(m)) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn emotes_cut_by_code_points_after_astral_emoji() {
        // The emoji is one code point but two UTF-16 units and four bytes: ranges count
        // code points.
        let m = message(
            "@badge-info=;badges=;color=#FF0000;display-name=nerixyz;emotes=25:1-5,8-12;flags=;id=a;mod=0;room-id=1;subscriber=0;tmi-sent-ts=1;turbo=0;user-id=2;user-type= :nerixyz!nerixyz@nerixyz.tmi.twitch.tv PRIVMSG #pajlada :😂Kappa😂 Kappa b",
        );
        assert_eq!(
            m.fragments,
            vec![
                Fragment::Text {
                    text: "😂".into()
                },
                Fragment::Emote {
                    id: "25".into(),
                    code: "Kappa".into()
                },
                Fragment::Text {
                    text: "😂 ".into()
                },
                Fragment::Emote {
                    id: "25".into(),
                    code: "Kappa".into()
                },
                Fragment::Text { text: " b".into() },
            ]
        );
    }

    #[test]
    fn action_resub_text_loses_its_wrapper_and_keeps_its_emotes() {
        let line = "@badge-info=subscriber/22;badges=moderator/1,subscriber/12;color=#19E6E6;display-name=randers;emotes=25:7-11,23-27/499:29-30;flags=;id=1;login=randers;mod=1;msg-id=resub;msg-param-cumulative-months=22;msg-param-months=0;msg-param-should-share-streak=0;msg-param-sub-plan-name=Channel\\sSubscription;msg-param-sub-plan=1000;room-id=11148817;subscriber=1;system-msg=randers\\ssubscribed;tmi-sent-ts=1594583778756;user-id=40286300;user-type=mod :tmi.twitch.tv USERNOTICE #pajlada :\u{1}ACTION Kappa TEST TEST Kappa :)\u{1}";
        let Some(ChatEvent::Notice(n)) = from_twitch(&parse(line), &RoomModes::default()) else {
            panic!("not a notice")
        };
        assert_eq!(n.text.as_deref(), Some("Kappa TEST TEST Kappa :)"));
        let codes: Vec<&str> = n.emotes.iter().map(|e| e.code.as_str()).collect();
        assert_eq!(codes, ["Kappa", "Kappa", ":)"]);
        assert_eq!(n.emotes[0].start, 7, "ranges stay as Twitch sent them");
        assert_eq!(
            n.fragments[0],
            Fragment::Emote {
                id: "25".into(),
                code: "Kappa".into()
            }
        );
    }

    #[test]
    fn action_and_missing_colour() {
        let m = message(
            "@badge-info=;badges=;color=;display-name=CarvedTaleare\\s;emotes=;flags=;id=c;mod=0;room-id=22484632;subscriber=0;tmi-sent-ts=1594554085753;turbo=0;user-id=467684514;user-type= :carvedtaleare!carvedtaleare@carvedtaleare.tmi.twitch.tv PRIVMSG #forsen :\u{1}ACTION NaM\u{1}",
        );
        assert!(m.is_action);
        assert_eq!(m.text, "NaM");
        assert_eq!(m.color, None);
        assert_eq!(m.sender.display_name, "CarvedTaleare ");
        assert!(m.display_color.starts_with('#'));
    }

    #[test]
    fn partial_roomstate_merges_into_the_known_modes() {
        let full = parse(
            "@emote-only=0;followers-only=-1;r9k=0;room-id=1;slow=0;subs-only=0 :tmi.twitch.tv ROOMSTATE #a",
        );
        let Some(ChatEvent::RoomState(first)) = from_twitch(&full, &RoomModes::default()) else {
            panic!()
        };
        let slow = parse("@room-id=1;slow=30 :tmi.twitch.tv ROOMSTATE #a");
        let Some(ChatEvent::RoomState(next)) = from_twitch(&slow, &first.modes) else {
            panic!()
        };
        assert_eq!(next.channel, "a");
        assert_eq!(next.modes.slow_s, 30);
        assert_eq!(next.modes.followers_only_minutes, None);
    }
}
