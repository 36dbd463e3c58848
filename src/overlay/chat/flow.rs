//! Text flow: chat text shaped into runs of glyphs, and runs, emotes and pills filled greedily
//! into lines of a given width, a word wider than a whole line broken between characters.

use std::sync::Arc;

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont};
use image::RgbaImage;

use super::{FONT_PX, LINE_SPACING};

/// Shapes text with one font.
#[derive(Clone, Copy)]
pub(super) struct Shaper<'a> {
    /// The bundled font.
    pub font: &'a FontRef<'static>,
}

impl Shaper<'_> {
    /// Glyphs of `text` (no spaces in it) at `px`, kerned, skipping invisible characters;
    /// characters the font lacks get its "missing glyph" box.
    pub fn shape(&self, text: &str, px: f32) -> Vec<Glyph> {
        let scaled = self.font.as_scaled(PxScale::from(px));
        let mut caret = 0.0;
        let mut previous = None;
        let mut glyphs = Vec::new();
        for c in text.chars().filter(|c| !invisible(*c)) {
            let id = scaled.glyph_id(c);
            if let Some(p) = previous {
                caret += scaled.kern(p, id);
            }
            let advance = scaled.h_advance(id);
            glyphs.push(Glyph {
                id,
                x: caret,
                advance,
            });
            caret += advance;
            previous = Some(id);
        }
        glyphs
    }

    /// Height of every line of chat text: emotes are scaled to it, so all lines are equal.
    pub fn line_height(&self) -> i64 {
        (self.font.as_scaled(PxScale::from(FONT_PX)).height() + LINE_SPACING).ceil() as i64
    }

    /// Width of a space between words of chat text.
    pub fn space_width(&self) -> f32 {
        self.font
            .as_scaled(PxScale::from(FONT_PX))
            .h_advance(self.font.glyph_id(' '))
    }
}

/// Characters with no ink that the font has no glyph for either: drawing them would put
/// "missing glyph" boxes inside emoji sequences (joiners, skin tones, variation selectors) and
/// after the invisible tag characters some chat clients append to repeated messages.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{1F3FB}'..='\u{1F3FF}'
                | '\u{E0000}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// A glyph of a word, placed relative to the word's start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Glyph {
    /// The font's glyph (its "missing glyph" box for characters it lacks).
    pub id: GlyphId,
    /// Origin, kerning included.
    pub x: f32,
    /// Where the next glyph would start, from this one's origin.
    pub advance: f32,
}

/// Width of laid-out glyphs, from the first one's origin to the last one's advance.
pub(super) fn advance_width(glyphs: &[Glyph]) -> f32 {
    match (glyphs.first(), glyphs.last()) {
        (Some(first), Some(last)) => last.x + last.advance - first.x,
        _ => 0.0,
    }
}

/// Something drawn inline, with its own width.
pub(super) enum Inline {
    /// A run of glyphs in one colour (a word or a piece of one).
    Word {
        /// The glyphs, the first at x = 0.
        glyphs: Vec<Glyph>,
        /// Their size.
        px: f32,
        /// Their colour.
        color: [u8; 3],
    },
    /// An emote picture, already at line height.
    Emote(Arc<RgbaImage>),
    /// Text on a rounded, tinted background: an emote code or a tag.
    Pill {
        /// The text, the first glyph at x = 0.
        glyphs: Vec<Glyph>,
        /// Its size.
        px: f32,
        /// Its colour.
        color: [u8; 3],
        /// The background's colour…
        fill: [u8; 3],
        /// …and how much of it covers the panel.
        fill_alpha: f32,
        /// The background's height, centred on the line.
        height: f32,
    },
}

impl Inline {
    /// How much of the line it takes.
    pub fn width(&self) -> f32 {
        match self {
            Inline::Word { glyphs, .. } => advance_width(glyphs),
            Inline::Emote(image) => image.width() as f32,
            Inline::Pill { glyphs, .. } => advance_width(glyphs) + 2.0 * super::PILL_PAD_X,
        }
    }
}

/// What line breaking works on.
pub(super) enum Atom {
    /// Drawn as is; a word may be broken if it is wider than a line.
    Inline(Inline),
    /// A possible break; collapsed with its neighbours, dropped at line starts.
    Space,
    /// Always a new line.
    Break,
}

/// An inline item at its place on a line.
pub(super) struct Placed {
    /// From the start of the line.
    pub x: f32,
    /// What is drawn there.
    pub what: Inline,
}

/// Greedy line filling.
struct Flow {
    /// Usable line width.
    max: f32,
    /// Width of a space.
    space: f32,
    /// Where the next item goes on the current line.
    x: f32,
    /// A space waits to be placed before the next item.
    pending_space: bool,
    /// The lines so far; the last one is being filled.
    lines: Vec<Vec<Placed>>,
}

impl Flow {
    /// An empty first line `max` wide, with spaces `space` wide.
    fn new(max: f32, space: f32) -> Self {
        Flow {
            max,
            space,
            x: 0.0,
            pending_space: false,
            lines: vec![Vec::new()],
        }
    }

    /// Places the next atom; boxes that do not fit start a new line (or overflow one of
    /// their own when even a whole line is too narrow: drawing clips them).
    fn push(&mut self, atom: Atom) {
        match atom {
            Atom::Space => self.pending_space |= self.x > 0.0,
            Atom::Break => self.newline(),
            Atom::Inline(Inline::Word { glyphs, px, color }) => self.word(glyphs, px, color),
            Atom::Inline(item) => {
                let width = item.width();
                if self.x > 0.0 && self.x + self.gap() + width > self.max {
                    self.newline();
                }
                self.place(item, width);
            }
        }
    }

    /// Room taken by the space waiting before the next item.
    fn gap(&self) -> f32 {
        if self.pending_space { self.space } else { 0.0 }
    }

    /// Starts a new line; a pending space is dropped, as at every line start.
    fn newline(&mut self) {
        self.lines.push(Vec::new());
        self.x = 0.0;
        self.pending_space = false;
    }

    /// Puts `what` after the pending space on the current line.
    fn place(&mut self, what: Inline, width: f32) {
        let x = self.x + self.gap();
        if let Some(line) = self.lines.last_mut() {
            line.push(Placed { x, what });
        }
        self.x = x + width;
        self.pending_space = false;
    }

    /// A word goes on this line if it fits, else on the next; one wider than a whole line is
    /// broken between characters, as browsers do with `overflow-wrap: anywhere`.
    fn word(&mut self, glyphs: Vec<Glyph>, px: f32, color: [u8; 3]) {
        let width = advance_width(&glyphs);
        if self.x + self.gap() + width <= self.max {
            self.place(Inline::Word { glyphs, px, color }, width);
            return;
        }
        if width <= self.max {
            self.newline();
            self.place(Inline::Word { glyphs, px, color }, width);
            return;
        }
        let mut rest = &glyphs[..];
        while let Some(first) = rest.first() {
            let room = self.max - self.x - self.gap();
            let fit = rest
                .iter()
                .take_while(|g| g.x - first.x + g.advance <= room)
                .count();
            if fit == 0 && self.x > 0.0 {
                self.newline();
                continue;
            }
            // At a line start at least one glyph is taken, so even a line narrower than one
            // glyph makes progress.
            let (chunk, after) = rest.split_at(fit.max(1));
            let start = first.x;
            let chunk: Vec<Glyph> = chunk
                .iter()
                .map(|g| Glyph {
                    x: g.x - start,
                    ..*g
                })
                .collect();
            let chunk_width = advance_width(&chunk);
            self.place(
                Inline::Word {
                    glyphs: chunk,
                    px,
                    color,
                },
                chunk_width,
            );
            rest = after;
            if !rest.is_empty() {
                self.newline();
            }
        }
    }
}

/// Fills `atoms` into lines `max` wide with spaces `space` wide; empty lines at the end (a
/// trailing break) are dropped, so no line means nothing to show.
pub(super) fn fill_lines(atoms: Vec<Atom>, max: f32, space: f32) -> Vec<Vec<Placed>> {
    let mut flow = Flow::new(max, space);
    for atom in atoms {
        flow.push(atom);
    }
    let mut lines = flow.lines;
    while lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}
