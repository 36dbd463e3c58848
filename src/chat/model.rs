//! The chat model: every chat line a viewer or the overlay can see, as a typed event that
//! serialises to the JSON the viewer page reads.
//!
//! Twitch lines arrive parsed by `twitch-irc`; [`from_twitch`] turns each into at most one
//! [`ChatEvent`]. Party messages are built with [`ChatMessage::party`]. Nothing here panics on
//! odd input: Twitch's emote ranges are checked against the text before use, missing colours
//! get Twitch's default palette, and unknown `USERNOTICE`s keep Twitch's own `system-msg`.

use serde::Serialize;
use twitch_irc::message::{
    Badge as TwitchBadge, ClearChatAction, Emote as TwitchEmote, FollowersOnlyMode, RGBColor,
    ServerMessage, UserNoticeEvent,
};

/// One thing that happened in chat, in the order it happened.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// A chat message, from Twitch (PRIVMSG) or from a party viewer.
    Message(ChatMessage),
    /// A highlighted event: sub, gift, raid, announcement… (USERNOTICE).
    Notice(UserNotice),
    /// A moderator cleared one user's messages (timeout, ban) or the whole chat (CLEARCHAT).
    Clear(Clear),
    /// A moderator deleted one message (CLEARMSG).
    Delete(Delete),
    /// The channel's room modes changed (ROOMSTATE); always the whole merged state.
    RoomState(RoomState),
    /// A server notice for the channel (NOTICE), such as "This room is now in slow mode."
    ServerNotice(ServerNotice),
    /// The state of the link to Twitch, so the page can say "chat reconnecting…".
    Connection(Connection),
}

impl ChatEvent {
    /// Whether late joiners should get this event in the backlog.
    pub fn is_backlogged(&self) -> bool {
        matches!(self, ChatEvent::Message(_) | ChatEvent::Notice(_))
    }

    /// The message id of a message or notice.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            ChatEvent::Message(m) => Some(&m.id),
            ChatEvent::Notice(n) => Some(&n.id),
            _ => None,
        }
    }

    /// The login of whoever wrote a message or caused a notice.
    pub fn sender_login(&self) -> Option<&str> {
        match self {
            ChatEvent::Message(m) => Some(&m.sender.login),
            ChatEvent::Notice(n) => Some(&n.sender.login),
            _ => None,
        }
    }
}

/// Where a message comes from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The streamer's Twitch channel.
    Twitch,
    /// A party viewer without a Twitch account.
    Party,
}

/// Who wrote something.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    /// Twitch user id; empty for party viewers.
    pub id: String,
    /// Lower-case login (the party nickname for party viewers).
    pub login: String,
    /// The name to show: Twitch's display name, which may differ from the login in case or
    /// script (Korean display names have ASCII logins).
    pub display_name: String,
}

/// A badge as Twitch names it (`subscriber` / `12`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Badge {
    /// Badge set, e.g. `moderator`.
    pub name: String,
    /// Version within the set, e.g. `1`, or months for `subscriber`.
    pub version: String,
}

/// A Twitch emote placed in a message, by code-point range as Twitch sends it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Emote {
    /// Emote id, used for the CDN image.
    pub id: String,
    /// First code point (inclusive).
    pub start: usize,
    /// Last code point (exclusive).
    pub end_exclusive: usize,
    /// The text it replaces, e.g. `Kappa`.
    pub code: String,
}

/// A piece of a message: text, or an emote shown as an image.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fragment {
    /// Plain text, inserted as text by every renderer.
    Text {
        /// The text.
        text: String,
    },
    /// An emote: an image when it loads, else its code.
    Emote {
        /// Emote id.
        id: String,
        /// Text fallback.
        code: String,
    },
}

/// The message a reply answers, as Twitch quotes it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reply {
    /// Id of the parent message.
    pub message_id: String,
    /// Author of the parent message.
    pub user: User,
    /// The parent's text.
    pub text: String,
}

/// A chat message.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessage {
    /// Twitch's message id (a UUID), or a party id.
    pub id: String,
    /// Twitch or party.
    pub origin: Origin,
    /// Channel login, without `#`.
    pub channel: String,
    /// The author.
    pub sender: User,
    /// The author's colour as Twitch sent it (`#RRGGBB`), if any.
    pub color: Option<String>,
    /// The colour to draw the name in: the author's, or Twitch's default for that name,
    /// lightened until it reads on the dark chat background.
    pub display_color: String,
    /// Badges, in Twitch's order.
    pub badges: Vec<Badge>,
    /// The whole text (for `/me`, without the ACTION wrapper).
    pub text: String,
    /// Emotes by code-point range into `text`.
    pub emotes: Vec<Emote>,
    /// `text` cut into text and emote pieces, ready to render.
    pub fragments: Vec<Fragment>,
    /// A `/me` action: Twitch shows the text in the name's colour.
    pub is_action: bool,
    /// The author's first message in the channel.
    pub first_msg: bool,
    /// Bits cheered with this message.
    pub bits: Option<u64>,
    /// The message this one replies to.
    pub reply: Option<Reply>,
    /// Twitch's `msg-id` on a PRIVMSG (e.g. `highlighted-message`).
    pub msg_id: Option<String>,
    /// Twitch's `tmi-sent-ts`, or the party's clock, in ms since the epoch.
    pub timestamp_ms: i64,
}

/// A USERNOTICE: subs, gifts, raids, announcements and the like.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserNotice {
    /// Twitch's message id.
    pub id: String,
    /// Channel login.
    pub channel: String,
    /// Twitch's `msg-id`, e.g. `resub` or `viewermilestone`.
    pub msg_id: String,
    /// The user the notice is about (the subscriber, the raider, the gifter…).
    pub sender: User,
    /// Colour as sent.
    pub color: Option<String>,
    /// Colour to draw the name in.
    pub display_color: String,
    /// Badges of the sender.
    pub badges: Vec<Badge>,
    /// Twitch's own sentence for the event (`system-msg`), shown as the card's title.
    pub system_message: String,
    /// The message the user attached, if any.
    pub text: Option<String>,
    /// Emotes in `text`.
    pub emotes: Vec<Emote>,
    /// `text` in pieces.
    pub fragments: Vec<Fragment>,
    /// What kind of event, with its details.
    pub event: NoticeKind,
    /// `tmi-sent-ts` in ms.
    pub timestamp_ms: i64,
}

/// The details of a USERNOTICE.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoticeKind {
    /// `sub` or `resub`.
    Sub {
        /// False for a first sub.
        is_resub: bool,
        /// Months in total.
        cumulative_months: u64,
        /// Months in a row, when the user shares it.
        streak_months: Option<u64>,
        /// `Prime`, `1000`, `2000` or `3000`.
        sub_plan: String,
        /// The plan's name.
        sub_plan_name: String,
    },
    /// `subgift` or `anonsubgift`.
    SubGift {
        /// The gift's sender is hidden.
        is_sender_anonymous: bool,
        /// Who got it.
        recipient: User,
        /// Recipient's months in total.
        cumulative_months: u64,
        /// The plan.
        sub_plan: String,
        /// The plan's name.
        sub_plan_name: String,
        /// Months in one multi-month gift.
        num_gifted_months: u64,
    },
    /// `submysterygift` or `anonsubmysterygift`: a wave of gifts follows.
    SubMysteryGift {
        /// The gifter is hidden.
        is_sender_anonymous: bool,
        /// Gifts in this wave.
        mass_gift_count: u64,
        /// The gifter's total in the channel.
        sender_total_gifts: Option<u64>,
        /// The plan.
        sub_plan: String,
    },
    /// `giftpaidupgrade` or `anongiftpaidupgrade`.
    GiftPaidUpgrade {
        /// Login of the original gifter; `None` when anonymous.
        gifter_login: Option<String>,
        /// Display name of the original gifter.
        gifter_name: Option<String>,
    },
    /// An incoming raid.
    Raid {
        /// Raiders.
        viewer_count: u64,
        /// The raider's avatar.
        profile_image_url: String,
    },
    /// `/announcement`.
    Announcement {
        /// `PRIMARY`, `BLUE`, `GREEN`, `ORANGE` or `PURPLE`.
        color: Option<String>,
    },
    /// A new bits badge tier.
    BitsBadgeTier {
        /// The tier, e.g. 1000.
        threshold: u64,
    },
    /// A watch streak or other milestone.
    ViewerMilestone {
        /// e.g. `watch-streak`.
        category: Option<String>,
        /// e.g. the streak length.
        value: Option<u64>,
    },
    /// A ritual such as `new_chatter`.
    Ritual {
        /// Ritual name.
        ritual_name: String,
    },
    /// A `msg-id` we do not know; Twitch's `system-msg` says what it is.
    Other,
}

/// A CLEARCHAT, or a party moderator's timeout, ban or clear.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Clear {
    /// Whose messages: a Twitch user's or a party nickname's (the same login can be both).
    pub origin: Origin,
    /// Channel login.
    pub channel: String,
    /// `timeout`, `ban` or `clear`.
    pub action: ClearKind,
    /// The user cleared, or `None` when the whole chat was cleared.
    pub target_login: Option<String>,
    /// That user's id.
    pub target_user_id: Option<String>,
    /// Timeout length.
    pub duration_s: Option<u64>,
    /// `tmi-sent-ts` in ms.
    pub timestamp_ms: i64,
}

/// What a CLEARCHAT did.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClearKind {
    /// A user was timed out.
    Timeout,
    /// A user was banned.
    Ban,
    /// The whole chat was cleared.
    Clear,
}

/// A CLEARMSG.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Delete {
    /// Channel login.
    pub channel: String,
    /// The deleted message.
    pub message_id: String,
    /// Its author.
    pub target_login: String,
}

/// A channel's room modes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RoomState {
    /// Channel login; empty before the first ROOMSTATE.
    pub channel: String,
    /// The modes, merged from every ROOMSTATE seen.
    #[serde(flatten)]
    pub modes: RoomModes,
}

/// The room modes of the channel, merged from every ROOMSTATE seen.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RoomModes {
    /// Only emotes may be posted.
    pub emote_only: bool,
    /// Followers-only: `None` when off, else the minimum follow age in minutes (0 = any).
    pub followers_only_minutes: Option<u64>,
    /// Unique-chat (r9k) mode.
    pub r9k: bool,
    /// Slow mode interval in seconds; 0 when off.
    pub slow_s: u64,
    /// Only subscribers may post.
    pub subs_only: bool,
}

/// A NOTICE.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerNotice {
    /// Twitch's `msg-id`, such as `slow_on`.
    pub msg_id: Option<String>,
    /// The sentence.
    pub text: String,
}

/// The state of the link to Twitch.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Connection {
    /// No Twitch channel configured: party chat only.
    Off,
    /// First connection in progress.
    Connecting,
    /// Joined and receiving.
    Connected,
    /// Lost or told to reconnect; trying again.
    Reconnecting,
}

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

/// Commands whose lines viewers see.
const SHOWN: [&str; 6] = [
    "PRIVMSG",
    "USERNOTICE",
    "CLEARCHAT",
    "CLEARMSG",
    "ROOMSTATE",
    "NOTICE",
];

/// `twitch-irc` refuses lines that lack a tag it expects, and Twitch has added tags over
/// the years (`badge-info` in 2019, `msg-param-cumulative-months`, `tmi-sent-ts` on
/// CLEARMSG…), so older servers, replays and recent-messages services send lines it
/// rejects. Such a line arrives as a generic message; this fills in the missing tags with
/// what Twitch means by their absence and parses it again. `None` when the message parsed
/// fine or cannot be repaired (then it is skipped).
fn repair(message: &ServerMessage) -> Option<ServerMessage> {
    let parsed = matches!(
        message,
        ServerMessage::Privmsg(_)
            | ServerMessage::UserNotice(_)
            | ServerMessage::ClearChat(_)
            | ServerMessage::ClearMsg(_)
            | ServerMessage::RoomState(_)
            | ServerMessage::Notice(_)
    );
    let source = message.source();
    if parsed || !SHOWN.contains(&source.command.as_str()) {
        return None;
    }
    let mut source = source.clone();
    // Each pass fixes the one tag the parser names; a few passes cover every known gap.
    for _ in 0..8 {
        match ServerMessage::try_from(source.clone()) {
            Ok(repaired) => return Some(repaired),
            Err(twitch_irc::message::ServerMessageParseError::MissingTag(_, key)) => {
                let tags = &source.tags.0;
                let value = match key {
                    "badge-info" | "badges" | "emotes" | "color" | "flags" | "user-type" => {
                        String::new()
                    }
                    "tmi-sent-ts" => crate::chat::now_ms().to_string(),
                    "msg-param-cumulative-months" => tags
                        .get("msg-param-months")
                        .cloned()
                        .unwrap_or_else(|| "0".into()),
                    "msg-param-gift-months" => "1".into(),
                    "msg-param-months" | "msg-param-should-share-streak" => "0".into(),
                    // Without an id nothing can delete it later, but it can still be shown.
                    "id" => format!("noid-{}", crate::chat::now_ms()),
                    _ => {
                        tracing::debug!(key, "skipping a Twitch line without a needed tag");
                        return None;
                    }
                };
                source.tags.0.insert(key.to_owned(), value);
            }
            Err(e) => {
                tracing::debug!("skipping a Twitch line that cannot be read: {e}");
                return None;
            }
        }
    }
    tracing::debug!(
        command = source.command,
        "skipping a Twitch line with missing tags"
    );
    None
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

/// Cuts `text` at the emotes' code-point ranges. Ranges that overlap, run past the end or
/// are empty (Twitch has sent all three) are ignored and their text stays text.
pub fn fragments(text: &str, emotes: &[Emote]) -> Vec<Fragment> {
    let chars: Vec<char> = text.chars().collect();
    let mut sorted: Vec<&Emote> = emotes
        .iter()
        .filter(|e| e.start < e.end_exclusive && e.end_exclusive <= chars.len())
        .collect();
    sorted.sort_by_key(|e| e.start);
    let mut out = Vec::new();
    let mut at = 0;
    for e in sorted {
        if e.start < at {
            continue;
        }
        if e.start > at {
            out.push(Fragment::Text {
                text: chars[at..e.start].iter().collect(),
            });
        }
        out.push(Fragment::Emote {
            id: e.id.clone(),
            code: chars[e.start..e.end_exclusive].iter().collect(),
        });
        at = e.end_exclusive;
    }
    if at < chars.len() {
        out.push(Fragment::Text {
            text: chars[at..].iter().collect(),
        });
    }
    out
}

/// Twitch's palette for users who never picked a colour.
const DEFAULT_COLORS: [(u8, u8, u8); 15] = [
    (0xFF, 0x00, 0x00),
    (0x00, 0x00, 0xFF),
    (0x00, 0x80, 0x00),
    (0xB2, 0x22, 0x22),
    (0xFF, 0x7F, 0x50),
    (0x9A, 0xCD, 0x32),
    (0xFF, 0x45, 0x00),
    (0x2E, 0x8B, 0x57),
    (0xDA, 0xA5, 0x20),
    (0xD2, 0x69, 0x1E),
    (0x5F, 0x9E, 0xA0),
    (0x1E, 0x90, 0xFF),
    (0xFF, 0x69, 0xB4),
    (0x8A, 0x2B, 0xE2),
    (0x00, 0xFF, 0x7F),
];

/// The colour a name is drawn in: the user's own, or a stable pick from Twitch's palette,
/// then lightened until it reads on the dark chat panel (pure blue on near-black does not).
pub fn display_color(color: Option<RGBColor>, login: &str) -> String {
    let (r, g, b) = match color {
        Some(c) => (c.r, c.g, c.b),
        None => {
            let sum: usize = login.bytes().map(usize::from).sum();
            DEFAULT_COLORS[sum % DEFAULT_COLORS.len()]
        }
    };
    let (r, g, b) = readable(r, g, b);
    format!("#{r:02X}{g:02X}{b:02X}")
}

/// Mixes a colour with white until its relative luminance is at least 0.2, which gives
/// about 5:1 contrast against the #18181B chat background.
fn readable(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let mut c = [f64::from(r), f64::from(g), f64::from(b)];
    for _ in 0..20 {
        if luminance(c) >= 0.2 {
            break;
        }
        for v in &mut c {
            *v += (255.0 - *v) * 0.15;
        }
    }
    (c[0].round() as u8, c[1].round() as u8, c[2].round() as u8)
}

fn luminance(c: [f64; 3]) -> f64 {
    let lin = |v: f64| {
        let s = v / 255.0;
        if s <= 0.039_28 {
            s / 12.92
        } else {
            ((s + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn out_of_range_emotes_stay_text() {
        let e = |start, end| Emote {
            id: "1".into(),
            start,
            end_exclusive: end,
            code: String::new(),
        };
        let f = fragments("hi", &[e(0, 9), e(1, 1)]);
        assert_eq!(f, vec![Fragment::Text { text: "hi".into() }]);
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
    fn dark_colours_are_lightened_bright_ones_kept() {
        assert_ne!(
            display_color(Some(RGBColor { r: 0, g: 0, b: 255 }), "x"),
            "#0000FF"
        );
        assert_eq!(
            display_color(
                Some(RGBColor {
                    r: 0x00,
                    g: 0xFF,
                    b: 0x7F
                }),
                "x"
            ),
            "#00FF7F"
        );
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
