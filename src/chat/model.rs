//! The chat model: every chat line a viewer or the overlay can see, as a typed event that
//! serialises to the JSON the viewer page reads.
//!
//! - this file: the events and their parts;
//! - `twitch`: [`from_twitch`] turns each parsed `twitch-irc` line into at most one event;
//! - `repair`: lines from older servers that lack a tag `twitch-irc` wants are mended first;
//! - `fragments`: a text cut into text and emote pieces;
//! - `color`: the colour a name is drawn in.
//!
//! Party messages are built by the hub (see [`super::post`]). Nothing here panics on odd
//! input: Twitch's emote ranges are checked against the text before use, missing colours
//! get Twitch's default palette, and unknown `USERNOTICE`s keep Twitch's own `system-msg`.

mod color;
mod fragments;
mod repair;
mod twitch;

use serde::Serialize;

pub use color::display_color;
pub use fragments::fragments;
pub use twitch::from_twitch;

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

    /// The text a user wrote, in a message or notice.
    pub fn text(&self) -> Option<&str> {
        match self {
            ChatEvent::Message(m) => Some(&m.text),
            ChatEvent::Notice(n) => n.text.as_deref(),
            _ => None,
        }
    }

    /// Where the event came from: a message says; everything else comes from Twitch.
    pub fn origin(&self) -> Origin {
        match self {
            ChatEvent::Message(m) => m.origin,
            _ => Origin::Twitch,
        }
    }

    /// The channel of a message or notice (empty for a party message).
    pub fn channel(&self) -> &str {
        match self {
            ChatEvent::Message(m) => &m.channel,
            ChatEvent::Notice(n) => &n.channel,
            _ => "",
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
