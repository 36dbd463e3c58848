//! What each chat event becomes on the panel: "Name: text" with emotes as pictures or pills,
//! small tags before the name (party, bits), and tinted cards for subs, gifts, raids,
//! announcements and cheers. The result is a [`Block`] of lines, ready to paint.

use ab_glyph::FontRef;

use super::emotes::EmoteCache;
use super::flow::{self, Atom, Inline, Placed, Shaper};
use super::{
    BLUE, CARD_MARGIN, CARD_PAD_Y, CARD_TEXT_X, FONT_PX, GOLD, GREEN, GREY, MUTED, ORANGE, PAD_X,
    PILL_PX, PURPLE, TAG_PX, TEAL, TEXT, TITLE,
};
use crate::chat::model::{ChatEvent, ChatMessage, Fragment, NoticeKind, Origin, UserNotice};
use crate::geometry::Color;

/// One message or notice, laid out.
pub(super) struct Block {
    /// Never empty: blocks with nothing to show are not made.
    pub lines: Vec<Vec<Placed>>,
    /// Where the lines start, from the panel's left edge.
    pub left: f32,
    /// A card's colour; `None` for a plain message.
    pub card: Option<[u8; 3]>,
}

impl Block {
    /// Height on the panel with lines `line_h` high, card padding included.
    pub fn height(&self, line_h: i64) -> i64 {
        let pad = if self.card.is_some() {
            2 * CARD_PAD_Y
        } else {
            0
        };
        self.lines.len() as i64 * line_h + pad
    }
}

/// Lays out events as blocks for one panel width.
pub(super) struct Composer<'a> {
    /// Shapes the text.
    shaper: Shaper<'a>,
    /// Emote pictures.
    emotes: &'a EmoteCache,
    /// Panel width.
    width: f32,
    /// Height of every line; emotes are scaled to it.
    line_h: i64,
}

impl<'a> Composer<'a> {
    /// A composer for a panel `width` wide.
    pub fn new(font: &'a FontRef<'static>, width: u32, emotes: &'a EmoteCache) -> Self {
        let shaper = Shaper { font };
        Composer {
            shaper,
            emotes,
            width: width as f32,
            line_h: shaper.line_height(),
        }
    }

    /// Height of every line.
    pub fn line_height(&self) -> i64 {
        self.line_h
    }

    /// Cuts `text` into words and spaces in one colour.
    fn text(&self, atoms: &mut Vec<Atom>, text: &str, color: [u8; 3]) {
        for (i, word) in text.split(char::is_whitespace).enumerate() {
            if i > 0 {
                atoms.push(Atom::Space);
            }
            let glyphs = self.shaper.shape(word, FONT_PX);
            if !glyphs.is_empty() {
                atoms.push(Atom::Inline(Inline::Word {
                    glyphs,
                    px: FONT_PX,
                    color,
                }));
            }
        }
    }

    /// A small tag before a name, in `color` on a tint of it.
    fn tag(&self, atoms: &mut Vec<Atom>, text: &str, color: [u8; 3]) {
        atoms.push(Atom::Inline(Inline::Pill {
            glyphs: self.shaper.shape(text, TAG_PX),
            px: TAG_PX,
            color,
            fill: color,
            fill_alpha: 0.22,
            height: TAG_PX + 6.0,
        }));
        atoms.push(Atom::Space);
    }

    /// Message fragments: text, emote pictures, or emote codes in a subtle pill.
    fn fragments(&self, atoms: &mut Vec<Atom>, fragments: &[Fragment], color: [u8; 3]) {
        for fragment in fragments {
            match fragment {
                Fragment::Text { text } => self.text(atoms, text, color),
                Fragment::Emote { id, code } => {
                    let item = match self.emotes.get(id, self.line_h as u32) {
                        Some(image) => Inline::Emote(image),
                        None => Inline::Pill {
                            glyphs: self.shaper.shape(code, PILL_PX),
                            px: PILL_PX,
                            color: MUTED,
                            fill: [255, 255, 255],
                            fill_alpha: 0.10,
                            height: self.line_h as f32 - 2.0,
                        },
                    };
                    atoms.push(Atom::Inline(item));
                }
            }
        }
    }

    /// "Name: text", or "Name text" in the name's colour for a `/me`.
    fn said(
        &self,
        atoms: &mut Vec<Atom>,
        name: &str,
        name_color: [u8; 3],
        fragments: &[Fragment],
        is_action: bool,
    ) {
        self.text(atoms, name, name_color);
        if is_action {
            atoms.push(Atom::Space);
            self.fragments(atoms, fragments, name_color);
        } else {
            self.text(atoms, ":", TEXT);
            atoms.push(Atom::Space);
            self.fragments(atoms, fragments, TEXT);
        }
    }

    /// Lays out one event; `None` for events that are not lines, or that have nothing to
    /// show.
    pub fn block(&self, event: &ChatEvent) -> Option<Block> {
        let (atoms, card) = match event {
            ChatEvent::Message(m) => self.message(m),
            ChatEvent::Notice(n) => self.notice(n),
            _ => return None,
        };
        let left = if card.is_some() { CARD_TEXT_X } else { PAD_X };
        let right = if card.is_some() {
            CARD_MARGIN + 6.0
        } else {
            PAD_X
        };
        let lines = flow::fill_lines(atoms, self.width - left - right, self.shaper.space_width());
        (!lines.is_empty()).then_some(Block { lines, left, card })
    }

    /// A message's atoms, and its card colour when it cheered bits.
    fn message(&self, m: &ChatMessage) -> (Vec<Atom>, Option<[u8; 3]>) {
        let mut atoms = Vec::new();
        let bits = m.bits.filter(|b| *b > 0);
        if let Some(bits) = bits {
            self.tag(&mut atoms, &format!("{bits} bits"), GOLD);
        }
        if m.origin == Origin::Party {
            self.tag(&mut atoms, "party", TEAL);
        }
        let name_color = name_color(&m.display_color);
        self.said(
            &mut atoms,
            &m.sender.display_name,
            name_color,
            &m.fragments,
            m.is_action,
        );
        (atoms, bits.map(|_| GOLD))
    }

    /// A notice's atoms (Twitch's sentence, then what the user said, if anything) and its
    /// card colour.
    fn notice(&self, n: &UserNotice) -> (Vec<Atom>, Option<[u8; 3]>) {
        let mut atoms = Vec::new();
        let title = n.system_message.trim();
        let title = if title.is_empty() {
            fallback_title(n)
        } else {
            title.to_owned()
        };
        self.text(&mut atoms, &title, TITLE);
        let text_only;
        let fragments = match (&n.text, n.fragments.is_empty()) {
            (Some(text), true) => {
                text_only = [Fragment::Text { text: text.clone() }];
                &text_only[..]
            }
            _ => &n.fragments[..],
        };
        let has_text = fragments.iter().any(|f| match f {
            Fragment::Text { text } => !text.trim().is_empty(),
            Fragment::Emote { .. } => true,
        });
        if has_text {
            atoms.push(Atom::Break);
            let name_color = name_color(&n.display_color);
            self.said(
                &mut atoms,
                &n.sender.display_name,
                name_color,
                fragments,
                false,
            );
        }
        (atoms, Some(notice_color(&n.event)))
    }
}

/// A name's colour as Twitch sends it (`#RRGGBB`), else the text colour.
fn name_color(display_color: &str) -> [u8; 3] {
    Color::parse(display_color).map_or(TEXT, |c| [c.r, c.g, c.b])
}

/// A card's colour: purple for subs and gifts, orange for raids, gold for bits, the
/// announcement's own colour.
fn notice_color(kind: &NoticeKind) -> [u8; 3] {
    match kind {
        NoticeKind::Sub { .. }
        | NoticeKind::SubGift { .. }
        | NoticeKind::SubMysteryGift { .. }
        | NoticeKind::GiftPaidUpgrade { .. } => PURPLE,
        NoticeKind::Raid { .. } => ORANGE,
        NoticeKind::BitsBadgeTier { .. } => GOLD,
        NoticeKind::Announcement { color } => match color.as_deref() {
            Some("BLUE") => BLUE,
            Some("GREEN") => GREEN,
            Some("ORANGE") => ORANGE,
            _ => PURPLE,
        },
        NoticeKind::ViewerMilestone { .. } => BLUE,
        NoticeKind::Ritual { .. } => TEAL,
        NoticeKind::Other => GREY,
    }
}

/// A title for a notice whose `system-msg` was empty (announcements usually are).
fn fallback_title(n: &UserNotice) -> String {
    let name = &n.sender.display_name;
    match &n.event {
        NoticeKind::Sub { .. } => format!("{name} subscribed"),
        NoticeKind::SubGift { recipient, .. } => {
            format!("{name} gifted a sub to {}", recipient.display_name)
        }
        NoticeKind::SubMysteryGift {
            mass_gift_count, ..
        } => format!("{name} is gifting {mass_gift_count} subs"),
        NoticeKind::GiftPaidUpgrade { .. } => format!("{name} is continuing their gifted sub"),
        NoticeKind::Raid { viewer_count, .. } => {
            format!("{name} is raiding with {viewer_count} viewers")
        }
        NoticeKind::Announcement { .. } => "Announcement".to_owned(),
        NoticeKind::BitsBadgeTier { threshold } => {
            format!("{name} unlocked the {threshold} bits badge")
        }
        NoticeKind::ViewerMilestone { .. } => format!("{name} reached a milestone"),
        NoticeKind::Ritual { .. } => format!("{name} is new here"),
        NoticeKind::Other => name.clone(),
    }
}
