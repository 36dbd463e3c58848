//! Mending Twitch lines from older servers, replays and recent-messages services, which
//! lack tags `twitch-irc` insists on.

use crate::util::clock::unix_ms;
use twitch_irc::message::ServerMessage;

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
pub(super) fn repair(message: &ServerMessage) -> Option<ServerMessage> {
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
                    "tmi-sent-ts" => unix_ms().to_string(),
                    "msg-param-cumulative-months" => tags
                        .get("msg-param-months")
                        .cloned()
                        .unwrap_or_else(|| "0".into()),
                    "msg-param-gift-months" => "1".into(),
                    "msg-param-months" | "msg-param-should-share-streak" => "0".into(),
                    // Without an id nothing can delete it later, but it can still be shown.
                    "id" => format!("noid-{}", unix_ms()),
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
