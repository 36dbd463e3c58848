//! The chat panel: the chat area of the composite, drawn from the same events the viewer pages
//! get. [`render_panel`] draws the visible end of the chat into an RGBA picture the size of
//! the layout's chat area: newest at the bottom, older lines scrolling off the top, names in
//! their colours, emotes as pictures when [`EmoteCache`] has them (else their code in a pill),
//! and subs, gifts, raids, announcements and cheers as tinted cards.
//!
//! - [`emotes`]: the emote pictures, from the streamer's directory;
//! - `compose`: what each event becomes (words, tags, pills, cards);
//! - `flow`: text shaped into glyphs and filled into lines;
//! - `paint`: the lines drawn onto the picture.
//!
//! Only drawing happens here; following the chat and handing pictures to the pipeline is the
//! job of the `panel` module. Chat text is only ever drawn as glyphs: nothing in a message is
//! interpreted, and nothing in it can make the drawing panic (empty strings, 500-character
//! words, emoji the font lacks).

mod compose;
pub mod emotes;
mod flow;
mod paint;

use image::{Rgba, RgbaImage};

pub use emotes::{DEFAULT_EMOTE_DIR, EmoteCache};

use crate::chat::model::ChatEvent;
use crate::geometry::Color;
use compose::Composer;
use paint::Painter;

/// Height of chat text in pixels. Sized for the 1280×720 canvas: a stream is read from across
/// the room and often scaled down, so it is larger than the 13 px of Twitch's own page, while
/// a 320 px panel still fits about four words a line.
pub const FONT_PX: f32 = 18.0;

/// Text of the small tags before a name ("party", "100 bits"): readable, but clearly not
/// part of the message.
const TAG_PX: f32 = 12.0;
/// Emote codes are drawn a little smaller than text so their pill fits inside the line.
const PILL_PX: f32 = 15.0;
/// Room between a pill's text and its edges.
const PILL_PAD_X: f32 = 4.0;
/// Room between lines, on top of the font's own ascent-to-descent height.
const LINE_SPACING: f32 = 3.0;
/// Left and right margin of plain messages.
const PAD_X: f32 = 10.0;
/// Room under the newest message, so it does not sit on the canvas edge.
const PAD_BOTTOM: i64 = 8;
/// Room between two messages.
const GAP: i64 = 6;
/// Cards are inset from the panel edges by this much, so two cards in a row stay apart.
const CARD_MARGIN: f32 = 4.0;
/// Width of a card's coloured bar.
const CARD_BAR: f32 = 3.0;
/// Where a card's text starts.
const CARD_TEXT_X: f32 = CARD_MARGIN + CARD_BAR + 7.0;
/// Room above and below a card's text.
const CARD_PAD_Y: i64 = 5;
/// How strongly a card's colour tints the panel behind its text.
const CARD_TINT: f32 = 0.18;

/// Message text: Twitch's own chat text colour.
const TEXT: [u8; 3] = [239, 239, 241];
/// A card's title (Twitch's `system-msg`), a shade softer than the message under it.
const TITLE: [u8; 3] = [222, 222, 230];
/// The code of an emote with no picture.
const MUTED: [u8; 3] = [180, 180, 192];
/// Subs and gifts, in Twitch purple.
const PURPLE: [u8; 3] = [169, 112, 255];
/// Raids.
const ORANGE: [u8; 3] = [255, 138, 46];
/// Bits.
const GOLD: [u8; 3] = [240, 190, 45];
/// Blue announcements and milestones.
const BLUE: [u8; 3] = [64, 150, 255];
/// Green announcements.
const GREEN: [u8; 3] = [0, 200, 120];
/// Party messages' tag: not a Twitch colour, so the tag never reads as a badge.
const TEAL: [u8; 3] = [45, 200, 190];
/// Notices we have no colour for.
const GREY: [u8; 3] = [140, 140, 156];

/// The size and colour of the chat panel to draw: the layout's chat area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatArea {
    /// Width of the panel to draw, in pixels.
    pub width: u32,
    /// Height of the panel to draw.
    pub height: u32,
    /// The colour behind the chat, so the drawn panel matches the plain one.
    pub background: Color,
}

/// Draws the newest of `events` into a `width` × `height` picture on `background`.
///
/// Messages and notices are drawn, newest at the bottom; everything else (room modes, link
/// state, clears) is not a line and is skipped, since the hub's backlog has already applied
/// clears and deletions. Older messages that do not fit scroll off the top, and only what
/// can be seen is laid out, so 150 messages cost no more than 20. Any size is accepted: a zero
/// size gives an empty picture and a tiny one clips.
pub fn render_panel(
    events: &[ChatEvent],
    width: u32,
    height: u32,
    background: Color,
    emotes: &EmoteCache,
) -> RgbaImage {
    let bg = Rgba([background.r, background.g, background.b, 255]);
    let mut img = RgbaImage::from_pixel(width, height, bg);
    if width == 0 || height == 0 {
        return img;
    }
    let font = super::font();
    let composer = Composer::new(font, width, emotes);
    let painter = Painter::new(font, width, composer.line_height());
    let mut bottom = i64::from(height) - PAD_BOTTOM;
    for event in events.iter().rev() {
        if bottom <= 0 {
            break;
        }
        let Some(block) = composer.block(event) else {
            continue;
        };
        let top = bottom - block.height(composer.line_height());
        painter.paint(&mut img, &block, top);
        bottom = top - GAP;
    }
    img
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use image::Rgba;

    use super::*;
    use crate::chat::model::{
        ChatMessage, Clear, ClearKind, Fragment, NoticeKind, Origin, User, UserNotice,
    };

    const BG: Color = Color {
        r: 0x18,
        g: 0x18,
        b: 0x1b,
    };
    const W: u32 = 320;
    const H: u32 = 540;

    /// Height of a line of chat text.
    fn line_height() -> i64 {
        flow::Shaper {
            font: crate::overlay::font(),
        }
        .line_height()
    }

    /// A cache that never finds a picture.
    fn no_emotes() -> EmoteCache {
        EmoteCache::new("/nonexistent/cowatch-emotes")
    }

    /// A Twitch message by `name`, whose name is drawn in `color`.
    fn message(name: &str, color: &str, fragments: Vec<Fragment>) -> ChatEvent {
        let text = fragments
            .iter()
            .map(|f| match f {
                Fragment::Text { text } => text.as_str(),
                Fragment::Emote { code, .. } => code.as_str(),
            })
            .collect();
        ChatEvent::Message(ChatMessage {
            id: format!("id-{name}"),
            origin: Origin::Twitch,
            channel: "chan".into(),
            sender: User {
                id: "1".into(),
                login: name.to_lowercase(),
                display_name: name.into(),
            },
            color: Some(color.into()),
            display_color: color.into(),
            badges: Vec::new(),
            text,
            emotes: Vec::new(),
            fragments,
            is_action: false,
            first_msg: false,
            bits: None,
            reply: None,
            msg_id: None,
            timestamp_ms: 0,
        })
    }

    /// A plain Twitch message.
    fn say(name: &str, text: &str) -> ChatEvent {
        message(name, "#FF7F50", vec![Fragment::Text { text: text.into() }])
    }

    /// A notice with Twitch's sentence `system` and the user's `text`.
    fn notice(system: &str, event: NoticeKind, text: Option<&str>) -> ChatEvent {
        ChatEvent::Notice(UserNotice {
            id: "n".into(),
            channel: "chan".into(),
            msg_id: "resub".into(),
            sender: User {
                id: "2".into(),
                login: "subber".into(),
                display_name: "Subber".into(),
            },
            color: None,
            display_color: "#9ACD32".into(),
            badges: Vec::new(),
            system_message: system.into(),
            text: text.map(str::to_owned),
            emotes: Vec::new(),
            fragments: Vec::new(),
            event,
            timestamp_ms: 0,
        })
    }

    /// Exactly the panel colour.
    fn is_bg(p: &Rgba<u8>) -> bool {
        p.0 == [BG.r, BG.g, BG.b, 255]
    }

    /// Non-background pixels in rows `y0..y1`.
    fn ink(img: &RgbaImage, y0: u32, y1: u32) -> usize {
        (y0..y1.min(img.height()))
            .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
            .filter(|(x, y)| !is_bg(img.get_pixel(*x, *y)))
            .count()
    }

    /// First and last row with ink.
    fn ink_rows(img: &RgbaImage) -> Option<(u32, u32)> {
        let rows: Vec<u32> = (0..img.height())
            .filter(|y| ink(img, *y, y + 1) > 0)
            .collect();
        Some((*rows.first()?, *rows.last()?))
    }

    #[test]
    fn empty_chat_is_plain_background() {
        let img = render_panel(&[], W, H, BG, &no_emotes());
        assert_eq!(img.dimensions(), (W, H));
        assert!(img.pixels().all(is_bg));
        // Events that are not lines draw nothing either.
        let clear = ChatEvent::Clear(Clear {
            origin: Origin::Twitch,
            channel: "c".into(),
            action: ClearKind::Clear,
            target_login: None,
            target_user_id: None,
            duration_s: None,
            timestamp_ms: 0,
        });
        let img = render_panel(&[clear], W, H, BG, &no_emotes());
        assert!(img.pixels().all(is_bg));
    }

    #[test]
    fn a_message_sits_at_the_bottom() {
        let img = render_panel(&[say("alice", "hello there")], W, H, BG, &no_emotes());
        let (top, bottom) = ink_rows(&img).expect("something drawn");
        assert!(bottom < H - 2, "padding under the newest line");
        assert!(top > H - 60, "one line, at the bottom: ink from row {top}");
        assert!(ink(&img, H - 60, H) > 100);
        assert!(img.pixels().all(|p| p.0[3] == 255), "opaque");
    }

    #[test]
    fn newer_messages_are_lower() {
        let events = [say("alice", "first"), say("bob", "second")];
        let both = render_panel(&events, W, H, BG, &no_emotes());
        let last = render_panel(&events[1..], W, H, BG, &no_emotes());
        // The newest is drawn in the same place whether or not older ones exist.
        let (top_last, _) = ink_rows(&last).unwrap();
        for y in top_last..H {
            for x in 0..W {
                assert_eq!(both.get_pixel(x, y), last.get_pixel(x, y), "({x},{y})");
            }
        }
        let (top_both, _) = ink_rows(&both).unwrap();
        assert!(top_both + 15 < top_last, "the older one is above");
    }

    #[test]
    fn many_messages_fill_the_panel_from_the_top() {
        let events: Vec<ChatEvent> = (0..200)
            .map(|i| say(&format!("user{i}"), &format!("message number {i} says hi")))
            .collect();
        let img = render_panel(&events, W, H, BG, &no_emotes());
        assert!(ink(&img, 0, 40) > 50, "the top is filled");
        assert!(ink(&img, H - 40, H) > 50, "the bottom too");
    }

    #[test]
    fn the_name_is_in_its_colour() {
        let img = render_panel(
            &[message(
                "Nerixyz",
                "#FF0000",
                vec![Fragment::Text { text: "hi".into() }],
            )],
            W,
            H,
            BG,
            &no_emotes(),
        );
        let red = img.pixels().filter(|p| p.0 == [255, 0, 0, 255]).count();
        assert!(red > 30, "only {red} pixels in the name's colour");
        // The name comes first: every red pixel is on the left half.
        for (x, _, p) in img.enumerate_pixels() {
            if p.0 == [255, 0, 0, 255] {
                assert!(x < W / 2, "red at column {x}");
            }
        }
        let light = img.pixels().filter(|p| p.0 == [239, 239, 241, 255]).count();
        assert!(light > 5, "the text is in light text");
    }

    #[test]
    fn action_text_is_in_the_name_colour() {
        let ChatEvent::Message(mut m) = say("alice", "dances wildly around") else {
            unreachable!()
        };
        m.is_action = true;
        m.display_color = "#00FF7F".into();
        let img = render_panel(&[ChatEvent::Message(m)], W, H, BG, &no_emotes());
        assert!(
            !img.pixels().any(|p| p.0 == [239, 239, 241, 255]),
            "no light text in an action"
        );
        let right = img
            .enumerate_pixels()
            .filter(|(x, _, p)| *x > W / 2 && p.0 == [0, 255, 127, 255])
            .count();
        assert!(right > 10, "the action text, right of the name, is green");
    }

    #[test]
    fn a_long_word_wraps_inside_the_panel() {
        let word = "W".repeat(500);
        let img = render_panel(&[say("alice", &word)], W, H, BG, &no_emotes());
        let (top, bottom) = ink_rows(&img).unwrap();
        assert!(
            i64::from(bottom - top) > 10 * line_height(),
            "broken over many lines: rows {top}..{bottom}"
        );
        // Nothing is drawn in the right margin.
        for y in 0..H {
            for x in W - PAD_X as u32 + 1..W {
                assert!(is_bg(img.get_pixel(x, y)), "({x},{y}) in the margin");
            }
        }
    }

    #[test]
    fn odd_input_and_sizes_do_not_panic() {
        let nasty = [
            say("", ""),
            say("a", "   "),
            say("emoji", "😂👨‍👩‍👧 🏳️‍🌈 👍🏽 \u{E0000}"),
            say("ctl", "tab\there\nnew\u{1}line\u{7f}"),
            say("zalgo", &"a\u{0301}\u{0302}\u{0303}\u{0304}".repeat(40)),
            say("rtl", "مرحبا שלום 漢字 한국어"),
            say("x", &"y ".repeat(250)),
            message(
                "e",
                "not a colour",
                vec![Fragment::Emote {
                    id: "../../etc/passwd".into(),
                    code: String::new(),
                }],
            ),
            notice("", NoticeKind::Other, Some("")),
            notice("", NoticeKind::Announcement { color: None }, None),
        ];
        for (w, h) in [
            (320, 540),
            (0, 0),
            (0, 10),
            (10, 0),
            (1, 1),
            (3, 500),
            (20, 20),
        ] {
            let img = render_panel(&nasty, w, h, BG, &no_emotes());
            assert_eq!(img.dimensions(), (w, h));
        }
        // The emoji line still draws something (the font's box for what it lacks).
        let img = render_panel(&nasty[2..3], W, H, BG, &no_emotes());
        assert!(ink(&img, 0, H) > 0);
    }

    #[test]
    fn notices_and_cheers_are_cards() {
        let sub = notice(
            "Subber subscribed at Tier 1. They've subscribed for 5 months!",
            NoticeKind::Sub {
                is_resub: true,
                cumulative_months: 5,
                streak_months: None,
                sub_plan: "1000".into(),
                sub_plan_name: "Tier 1".into(),
            },
            Some("hype"),
        );
        let img = render_panel(&[sub], W, H, BG, &no_emotes());
        // The bar is the card colour, the card a tint of it.
        let (_, bottom) = ink_rows(&img).unwrap();
        let bar = img.get_pixel(CARD_MARGIN as u32 + 1, bottom - 2).0;
        assert_eq!(&bar[..3], &PURPLE);
        let tint = img.get_pixel(W - CARD_MARGIN as u32 - 2, bottom - 2).0;
        assert!(
            !is_bg(&Rgba(tint)) && tint[2] > tint[1],
            "purple tint: {tint:?}"
        );

        let raid = notice(
            "10 raiders from Someone have joined!",
            NoticeKind::Raid {
                viewer_count: 10,
                profile_image_url: String::new(),
            },
            None,
        );
        let img = render_panel(&[raid], W, H, BG, &no_emotes());
        let (_, bottom) = ink_rows(&img).unwrap();
        assert_eq!(
            &img.get_pixel(CARD_MARGIN as u32 + 1, bottom - 2).0[..3],
            &ORANGE
        );

        let ChatEvent::Message(mut cheer) = say("alice", "Cheer100 nice") else {
            unreachable!()
        };
        cheer.bits = Some(100);
        let img = render_panel(&[ChatEvent::Message(cheer)], W, H, BG, &no_emotes());
        let (_, bottom) = ink_rows(&img).unwrap();
        assert_eq!(
            &img.get_pixel(CARD_MARGIN as u32 + 1, bottom - 2).0[..3],
            &GOLD
        );
    }

    #[test]
    fn party_messages_are_tagged() {
        let ChatEvent::Message(mut m) = say("alice", "hi") else {
            unreachable!()
        };
        let twitch = render_panel(&[ChatEvent::Message(m.clone())], W, H, BG, &no_emotes());
        m.origin = Origin::Party;
        let party = render_panel(&[ChatEvent::Message(m)], W, H, BG, &no_emotes());
        let teal_ish = |img: &RgbaImage| {
            img.pixels()
                .filter(|p| p.0[1] > 150 && p.0[2] > 150 && p.0[0] < 100)
                .count()
        };
        assert_eq!(teal_ish(&twitch), 0);
        assert!(teal_ish(&party) > 10, "a teal party tag");
    }

    #[test]
    fn emotes_are_pictures_when_cached_else_their_code() {
        let dir = std::env::temp_dir().join(format!("cowatch-emotes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        RgbaImage::from_pixel(56, 56, Rgba([0, 0, 255, 255]))
            .save(dir.join("25.png"))
            .unwrap();
        std::fs::write(dir.join("26.png"), b"not a png").unwrap();
        let cache = EmoteCache::new(&dir);
        let kappa = |id: &str| {
            message(
                "alice",
                "#FF7F50",
                vec![
                    Fragment::Text {
                        text: "look ".into(),
                    },
                    Fragment::Emote {
                        id: id.into(),
                        code: "Kappa".into(),
                    },
                ],
            )
        };
        let blue = |img: &RgbaImage| img.pixels().filter(|p| p.0 == [0, 0, 255, 255]).count();

        let img = render_panel(&[kappa("25")], W, H, BG, &cache);
        let line_h = line_height() as usize;
        assert!(
            blue(&img) >= (line_h - 2) * (line_h - 2),
            "the picture, at line height: {} px",
            blue(&img)
        );
        assert_eq!(cache.get("25", 10).unwrap().dimensions(), (10, 10));

        for id in ["26", "27", "../25"] {
            let img = render_panel(&[kappa(id)], W, H, BG, &cache);
            assert_eq!(blue(&img), 0, "{id}");
            assert!(
                img.pixels().any(|p| p.0 == [180, 180, 192, 255]),
                "{id}: the code is drawn"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_hundred_long_messages_render_quickly() {
        let events: Vec<ChatEvent> = (0..200)
            .map(|i| say(&format!("u{i}"), &"long words here ".repeat(31)))
            .collect();
        let started = Instant::now();
        render_panel(&events, W, H, BG, &no_emotes());
        // Only the visible end is laid out; generous for unoptimised builds.
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
