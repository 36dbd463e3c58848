//! The chat panel: the chat area of the composite, drawn from the same events the viewer pages
//! get.
//!
//! - [`render_panel`] draws the visible end of the chat into an RGBA picture the size of the
//!   layout's chat area: newest at the bottom, older lines scrolling off the top, names in their
//!   colours, emotes as pictures when [`EmoteCache`] has them (else their code in a pill), and
//!   subs, gifts, raids, announcements and cheers as tinted cards.
//! - [`spawn_renderer`] follows a [`Chat`] and hands a fresh picture to the [`Pipeline`]
//!   whenever what is visible changes, at most [`MIN_RENDER_INTERVAL`] apart, drawing on
//!   tokio's blocking pool. The pipeline only swaps the picture in, so a chat flood costs the
//!   video a few cheap frame swaps a second, never a stall.
//!
//! Chat text is only ever drawn as glyphs: nothing in a message is interpreted, and nothing in
//! it can make the drawing panic (empty strings, 500-character words, emoji the font lacks).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use image::imageops::FilterType;
use image::{ImageFormat, ImageReader, Limits, Rgba, RgbaImage};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chat::Chat;
use crate::chat::model::{ChatEvent, ChatMessage, Fragment, NoticeKind, Origin, UserNotice};
use crate::geometry::Color;
use crate::pipeline::Pipeline;

/// Height of chat text in pixels. Sized for the 1280×720 canvas: a stream is read from across
/// the room and often scaled down, so it is larger than the 13 px of Twitch's own page, while
/// a 320 px panel still fits about four words a line.
pub const FONT_PX: f32 = 18.0;

/// Renders never follow each other closer than this: at 1,000 messages a second the panel
/// shows the latest state five times a second instead of drawing every message.
pub const MIN_RENDER_INTERVAL: Duration = Duration::from_millis(200);

/// Where emote pictures are looked for by default, relative to the working directory like
/// `pipelines/` (emotes are the streamer's files, so they cannot be embedded as the font is).
pub const DEFAULT_EMOTE_DIR: &str = "overlay/emotes";

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
    let bg = [background.r, background.g, background.b];
    let mut img = RgbaImage::from_pixel(width, height, Rgba([bg[0], bg[1], bg[2], 255]));
    if width == 0 || height == 0 {
        return img;
    }
    // Without a font (a broken build) a plain panel still beats a crashed renderer.
    let Some(font) = font() else {
        return img;
    };
    let painter = Painter::new(font, width, emotes);
    let mut bottom = i64::from(height) - PAD_BOTTOM;
    for event in events.iter().rev() {
        if bottom <= 0 {
            break;
        }
        let Some(block) = painter.block(event) else {
            continue;
        };
        let top = bottom - block.height(painter.line_h);
        painter.paint(&mut img, &block, top);
        bottom = top - GAP;
    }
    img
}

/// Emote pictures from a directory of `<emote id>.png` files, decoded on first use and kept,
/// already scaled to the line height.
///
/// Nothing is downloaded: the streamer drops files in the directory (see its README), and an
/// emote without a file is drawn as its code. A miss is remembered for a minute, so a file
/// added during the party shows up without re-reading the disk on every render.
pub struct EmoteCache {
    /// The directory of `<id>.png` files.
    dir: PathBuf,
    /// By emote id. A std mutex: only the renderer's blocking thread uses it, briefly.
    entries: Mutex<HashMap<String, CachedEmote>>,
}

/// What the cache knows of one emote id.
struct CachedEmote {
    /// The picture at the height it was last asked for; `None` when there is no usable file.
    image: Option<Arc<RgbaImage>>,
    /// When the file was looked for, so misses are retried now and then.
    checked: Instant,
}

impl EmoteCache {
    /// How long a missing emote file stays missing before the directory is looked at again.
    const MISS_RETRY: Duration = Duration::from_secs(60);
    /// Emotes kept; past this the cache starts over, which bounds memory on a channel that
    /// sees thousands of different emotes in a long stream.
    const MAX_ENTRIES: usize = 4096;
    /// Emote pictures larger than this are refused rather than decoded (Twitch's largest
    /// size is 112 px; this leaves room for anything sensible).
    const MAX_SIDE: u32 = 1024;

    /// A cache over the `<id>.png` files of `dir`; the directory need not exist.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmoteCache {
            dir: dir.into(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The directory the files are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The picture of emote `id` scaled to `height` pixels (keeping its aspect ratio, at most
    /// four times as wide as high), or `None` when there is no usable file for it.
    pub fn get(&self, id: &str, height: u32) -> Option<Arc<RgbaImage>> {
        if height == 0 || !valid_id(id) {
            return None;
        }
        // A panic elsewhere cannot leave a half-written entry that matters: use it as is.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get(id) {
            match &entry.image {
                Some(image) if image.height() == height => return Some(image.clone()),
                None if entry.checked.elapsed() < Self::MISS_RETRY => return None,
                _ => {}
            }
        }
        let image = self.load(id, height).map(Arc::new);
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            id.to_owned(),
            CachedEmote {
                image: image.clone(),
                checked: Instant::now(),
            },
        );
        image
    }

    /// Reads and scales `<dir>/<id>.png`.
    fn load(&self, id: &str, height: u32) -> Option<RgbaImage> {
        let path = self.dir.join(format!("{id}.png"));
        if !path.is_file() {
            return None;
        }
        let decoded = ImageReader::open(&path)
            .map_err(image::ImageError::IoError)
            .and_then(|mut reader| {
                reader.set_format(ImageFormat::Png);
                let mut limits = Limits::default();
                limits.max_image_width = Some(Self::MAX_SIDE);
                limits.max_image_height = Some(Self::MAX_SIDE);
                reader.limits(limits);
                reader.decode()
            });
        let picture = match decoded {
            Ok(picture) => picture.to_rgba8(),
            Err(error) => {
                // Once a minute at most, thanks to the miss cache.
                tracing::warn!(path = %path.display(), %error, "unusable emote picture");
                return None;
            }
        };
        if picture.width() == 0 || picture.height() == 0 {
            return None;
        }
        let width = (f64::from(picture.width()) * f64::from(height) / f64::from(picture.height()))
            .round()
            .clamp(1.0, f64::from(height) * 4.0) as u32;
        Some(image::imageops::resize(
            &picture,
            width,
            height,
            FilterType::Triangle,
        ))
    }
}

/// Reads from [`DEFAULT_EMOTE_DIR`].
impl Default for EmoteCache {
    fn default() -> Self {
        EmoteCache::new(DEFAULT_EMOTE_DIR)
    }
}

/// Twitch emote ids are digits or `emotesv2_` and hex; anything else (a path, a dot) never
/// reaches the file system.
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Follows `chat` and keeps the chat area of `pipeline` showing it, with emotes from
/// [`DEFAULT_EMOTE_DIR`]. See [`spawn_renderer_with`].
pub fn spawn_renderer(chat: Chat, pipeline: Pipeline) -> JoinHandle<()> {
    spawn_renderer_with(chat, pipeline, EmoteCache::default())
}

/// Follows `chat` and keeps the chat area of `pipeline` showing it.
///
/// The panel is drawn again when a message, notice, clear or deletion arrives, or when the
/// layout's chat area changes, but never within [`MIN_RENDER_INTERVAL`] of the previous
/// drawing: a burst is coalesced into one picture of its end. Each drawing reads the hub's
/// backlog, which is exactly what is visible (cleared and deleted messages are already gone),
/// so a lagging subscription loses nothing: it only triggers a redraw. Drawing happens on
/// tokio's blocking pool; the pipeline only swaps the finished picture in.
///
/// Call it within a tokio runtime (it spawns a task there). The task ends when the pipeline
/// stops or the chat's live stream closes. It holds a clone of `chat` to read the backlog, so
/// while it runs the stream stays open: stop it with the pipeline, or abort the handle.
pub fn spawn_renderer_with(chat: Chat, pipeline: Pipeline, emotes: EmoteCache) -> JoinHandle<()> {
    let area = pipeline.chat_area();
    tokio::spawn(drive(chat, area, Arc::new(emotes), move |image| {
        pipeline.set_chat_panel(image).is_ok()
    }))
}

/// The renderer's loop, apart from the pipeline so tests can watch what it shows: `show` gets
/// each new panel (`None`: the plain panel) and says whether anyone is still there.
async fn drive(
    chat: Chat,
    mut area: watch::Receiver<Option<ChatArea>>,
    emotes: Arc<EmoteCache>,
    show: impl Fn(Option<RgbaImage>) -> bool,
) {
    let mut live = chat.subscribe().live;
    // The backlog may already hold messages: draw them at once.
    let mut dirty = true;
    let mut last_render: Option<tokio::time::Instant> = None;
    loop {
        let due = last_render.map_or_else(tokio::time::Instant::now, |at| at + MIN_RENDER_INTERVAL);
        tokio::select! {
            // The timer first: under a flood the stream is always ready, and the panel must
            // still be drawn.
            biased;
            () = tokio::time::sleep_until(due), if dirty => {
                dirty = false;
                let current = *area.borrow_and_update();
                // No chat area in this layout: nothing to draw until one comes back.
                let Some(current) = current else { continue };
                last_render = Some(tokio::time::Instant::now());
                let Some(panel) = render(&chat, current, &emotes).await else { continue };
                if !show(panel) {
                    break;
                }
            }
            changed = area.changed() => {
                // The pipeline has stopped.
                if changed.is_err() {
                    break;
                }
                dirty = true;
            }
            received = live.recv() => match received {
                Ok(published) => dirty |= changes_panel(&published.event),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "chat overlay lagged; redrawing from the backlog");
                    dirty = true;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
}

/// Draws the backlog for `area` on the blocking pool. `Some(None)` is the plain panel (an
/// empty chat needs no drawing); `None` means the drawing failed and nothing should change.
async fn render(
    chat: &Chat,
    area: ChatArea,
    emotes: &Arc<EmoteCache>,
) -> Option<Option<RgbaImage>> {
    let events = chat.backlog();
    if events.is_empty() {
        return Some(None);
    }
    let emotes = emotes.clone();
    let drawn = tokio::task::spawn_blocking(move || {
        render_panel(&events, area.width, area.height, area.background, &emotes)
    })
    .await;
    match drawn {
        Ok(image) => Some(Some(image)),
        Err(error) => {
            tracing::error!(%error, "drawing the chat panel failed; keeping the previous one");
            None
        }
    }
}

/// Whether an event changes what the panel shows.
fn changes_panel(event: &ChatEvent) -> bool {
    matches!(
        event,
        ChatEvent::Message(_) | ChatEvent::Notice(_) | ChatEvent::Clear(_) | ChatEvent::Delete(_)
    )
}

/// The bundled font, parsed once.
fn font() -> Option<&'static FontRef<'static>> {
    Some(super::font())
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

/// `#RRGGBB` as bytes; anything else is `None`.
fn parse_hex(text: &str) -> Option<[u8; 3]> {
    let hex = text.strip_prefix('#')?;
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |at: usize| u8::from_str_radix(&hex[at..at + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

/// A glyph of a word, placed relative to the word's start.
#[derive(Debug, Clone, Copy)]
struct Glyph {
    /// The font's glyph (its "missing glyph" box for characters it lacks).
    id: GlyphId,
    /// Origin, kerning included.
    x: f32,
    /// Where the next glyph would start, from this one's origin.
    advance: f32,
}

/// Width of laid-out glyphs, from the first one's origin to the last one's advance.
fn advance_width(glyphs: &[Glyph]) -> f32 {
    match (glyphs.first(), glyphs.last()) {
        (Some(first), Some(last)) => last.x + last.advance - first.x,
        _ => 0.0,
    }
}

/// Something drawn inline, with its own width.
enum Inline {
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
    fn width(&self) -> f32 {
        match self {
            Inline::Word { glyphs, .. } => advance_width(glyphs),
            Inline::Emote(image) => image.width() as f32,
            Inline::Pill { glyphs, .. } => advance_width(glyphs) + 2.0 * PILL_PAD_X,
        }
    }
}

/// What line breaking works on.
enum Atom {
    /// Drawn as is; a word may be broken if it is wider than a line.
    Inline(Inline),
    /// A possible break; collapsed with its neighbours, dropped at line starts.
    Space,
    /// Always a new line.
    Break,
}

/// An inline item at its place on a line.
struct Placed {
    /// From the start of the line.
    x: f32,
    /// What is drawn there.
    what: Inline,
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

/// One message or notice, laid out.
struct Block {
    /// Never empty: blocks with nothing to show are not made.
    lines: Vec<Vec<Placed>>,
    /// Where the lines start, from the panel's left edge.
    left: f32,
    /// A card's colour; `None` for a plain message.
    card: Option<[u8; 3]>,
}

impl Block {
    /// Height on the panel with lines `line_h` high, card padding included.
    fn height(&self, line_h: i64) -> i64 {
        let pad = if self.card.is_some() {
            2 * CARD_PAD_Y
        } else {
            0
        };
        self.lines.len() as i64 * line_h + pad
    }
}

/// Lays out and draws blocks for one panel width.
struct Painter<'a> {
    /// The bundled font.
    font: &'a FontRef<'static>,
    /// Emote pictures.
    emotes: &'a EmoteCache,
    /// Panel width.
    width: f32,
    /// Height of every line: emotes are scaled to it, so all lines are equal.
    line_h: i64,
}

impl<'a> Painter<'a> {
    /// A painter for a panel `width` wide.
    fn new(font: &'a FontRef<'static>, width: u32, emotes: &'a EmoteCache) -> Self {
        let line_h = (font.as_scaled(PxScale::from(FONT_PX)).height() + LINE_SPACING).ceil();
        Painter {
            font,
            emotes,
            width: width as f32,
            line_h: line_h as i64,
        }
    }

    /// Glyphs of `text` (no spaces in it) at `px`, kerned, skipping invisible characters;
    /// characters the font lacks get its "missing glyph" box.
    fn shape(&self, text: &str, px: f32) -> Vec<Glyph> {
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

    /// Cuts `text` into words and spaces in one colour.
    fn text(&self, atoms: &mut Vec<Atom>, text: &str, color: [u8; 3]) {
        for (i, word) in text.split(char::is_whitespace).enumerate() {
            if i > 0 {
                atoms.push(Atom::Space);
            }
            let glyphs = self.shape(word, FONT_PX);
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
            glyphs: self.shape(text, TAG_PX),
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
                            glyphs: self.shape(code, PILL_PX),
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
    fn block(&self, event: &ChatEvent) -> Option<Block> {
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
        let space = self
            .font
            .as_scaled(PxScale::from(FONT_PX))
            .h_advance(self.font.glyph_id(' '));
        let mut flow = Flow::new(self.width - left - right, space);
        for atom in atoms {
            flow.push(atom);
        }
        let mut lines = flow.lines;
        while lines.last().is_some_and(Vec::is_empty) {
            lines.pop();
        }
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
        let name_color = parse_hex(&m.display_color).unwrap_or(TEXT);
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
            let name_color = parse_hex(&n.display_color).unwrap_or(TEXT);
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

    /// Draws `block` with its top at `top`, clipped to the picture.
    fn paint(&self, img: &mut RgbaImage, block: &Block, top: i64) {
        let height = block.height(self.line_h);
        if let Some(color) = block.card {
            let (x0, x1) = (CARD_MARGIN, self.width - CARD_MARGIN);
            let (y0, y1) = (top as f32, (top + height) as f32);
            fill_rounded(img, (x0, y0, x1, y1), 3.0, color, CARD_TINT);
            fill_rounded(img, (x0, y0, x0 + CARD_BAR, y1), 0.0, color, 1.0);
        }
        let text_top = top + if block.card.is_some() { CARD_PAD_Y } else { 0 };
        for (i, line) in block.lines.iter().enumerate() {
            let y0 = text_top + i as i64 * self.line_h;
            let y1 = y0 + self.line_h;
            if y1 <= 0 || y0 >= i64::from(img.height()) {
                continue;
            }
            for placed in line {
                self.draw(img, block.left + placed.x, (y0, y1), &placed.what);
            }
        }
    }

    /// Draws one inline item at `x` on the line spanning rows `line` (top, bottom).
    fn draw(&self, img: &mut RgbaImage, x: f32, line: (i64, i64), what: &Inline) {
        match what {
            Inline::Word { glyphs, px, color } => {
                self.glyphs(img, x, line, glyphs, *px, *color);
            }
            Inline::Emote(image) => {
                let (ox, oy) = (x.round() as i64, line.0);
                for (ex, ey, p) in image.enumerate_pixels() {
                    let [r, g, b, a] = p.0;
                    let (px, py) = (ox + i64::from(ex), oy + i64::from(ey));
                    blend(img, px, py, [r, g, b], f32::from(a) / 255.0);
                }
            }
            Inline::Pill {
                glyphs,
                px,
                color,
                fill,
                fill_alpha,
                height,
            } => {
                let mid = (line.0 + line.1) as f32 / 2.0;
                let width = what.width();
                let rect = (x, mid - height / 2.0, x + width, mid + height / 2.0);
                fill_rounded(img, rect, height / 2.0, *fill, *fill_alpha);
                self.glyphs(img, x + PILL_PAD_X, line, glyphs, *px, *color);
            }
        }
    }

    /// Draws glyphs on the line `line` (top, bottom), vertically centred, clipped to it so
    /// stacked combining marks cannot smear over the neighbouring lines.
    fn glyphs(
        &self,
        img: &mut RgbaImage,
        x: f32,
        line: (i64, i64),
        glyphs: &[Glyph],
        px: f32,
        color: [u8; 3],
    ) {
        let scaled = self.font.as_scaled(PxScale::from(px));
        let line_h = (line.1 - line.0) as f32;
        let baseline = line.0 as f32 + (line_h - scaled.height()) / 2.0 + scaled.ascent();
        for g in glyphs {
            let glyph =
                g.id.with_scale_and_position(px, point(x + g.x, baseline.round()));
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            let (gx, gy) = (bounds.min.x as i64, bounds.min.y as i64);
            outline.draw(|dx, dy, coverage| {
                let y = gy + i64::from(dy);
                if (line.0..line.1).contains(&y) {
                    blend(img, gx + i64::from(dx), y, color, coverage);
                }
            });
        }
    }
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

/// Blends `color` into the rectangle (x0, y0, x1, y1) with corners of `radius`, at `alpha`,
/// anti-aliased at the edges and clipped to the picture.
fn fill_rounded(
    img: &mut RgbaImage,
    rect: (f32, f32, f32, f32),
    radius: f32,
    color: [u8; 3],
    alpha: f32,
) {
    let (x0, y0, x1, y1) = rect;
    let radius = radius.min((x1 - x0) / 2.0).min((y1 - y0) / 2.0).max(0.0);
    let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    let (hw, hh) = ((x1 - x0) / 2.0, (y1 - y0) / 2.0);
    let px0 = x0.floor().max(0.0) as u32;
    let py0 = y0.floor().max(0.0) as u32;
    let px1 = (x1.ceil().max(0.0) as u32).min(img.width());
    let py1 = (y1.ceil().max(0.0) as u32).min(img.height());
    for y in py0..py1 {
        for x in px0..px1 {
            // Signed distance to a rounded box, negative inside; half a pixel of fringe.
            let qx = (x as f32 + 0.5 - cx).abs() - (hw - radius);
            let qy = (y as f32 + 0.5 - cy).abs() - (hh - radius);
            let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
            let d = outside + qx.max(qy).min(0.0) - radius;
            let coverage = (0.5 - d).clamp(0.0, 1.0);
            blend(img, i64::from(x), i64::from(y), color, coverage * alpha);
        }
    }
}

/// Blends `color` over the pixel at (`x`, `y`) by `alpha`; pixels outside the picture are
/// ignored, which is what clips everything drawn here.
fn blend(img: &mut RgbaImage, x: i64, y: i64, color: [u8; 3], alpha: f32) {
    if alpha <= 0.0 || x < 0 || y < 0 || x >= i64::from(img.width()) || y >= i64::from(img.height())
    {
        return;
    }
    let a = alpha.min(1.0);
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (dst, src) in p.0.iter_mut().zip(color) {
        *dst = (f32::from(*dst) * (1.0 - a) + f32::from(src) * a).round() as u8;
    }
    // The panel is part of the opaque backdrop.
    p.0[3] = 255;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ChatConfig;
    use crate::chat::model::{Clear, ClearKind, User};

    const BG: Color = Color {
        r: 0x18,
        g: 0x18,
        b: 0x1b,
    };
    const W: u32 = 320;
    const H: u32 = 540;

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
            origin: crate::chat::Origin::Twitch,
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
        let emotes = no_emotes();
        let painter = Painter::new(font().unwrap(), W, &emotes);
        assert!(
            i64::from(bottom - top) > 10 * painter.line_h,
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
        let line_h = Painter::new(font().unwrap(), W, &cache).line_h as usize;
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

    /// Every panel the renderer's loop handed over, in order.
    type Shown = Arc<Mutex<Vec<Option<RgbaImage>>>>;

    /// The renderer's loop, without a pipeline: what it would show, and when.
    fn spawn_drive(
        chat: &Chat,
        area: watch::Receiver<Option<ChatArea>>,
    ) -> (JoinHandle<()>, Shown) {
        let shown = Arc::new(Mutex::new(Vec::new()));
        let sink = shown.clone();
        let task = tokio::spawn(drive(
            chat.clone(),
            area,
            Arc::new(no_emotes()),
            move |image| {
                sink.lock().unwrap().push(image);
                true
            },
        ));
        (task, shown)
    }

    /// The side-panel chat area.
    fn area() -> Option<ChatArea> {
        Some(ChatArea {
            width: W,
            height: H,
            background: BG,
        })
    }

    #[tokio::test]
    async fn a_flood_is_drawn_a_few_times_a_second() {
        let chat = Chat::new(ChatConfig::default());
        let (tx, rx) = watch::channel(area());
        let (task, shown) = spawn_drive(&chat, rx);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            shown.lock().unwrap().len(),
            1,
            "the empty start, drawn once"
        );
        assert!(shown.lock().unwrap()[0].is_none(), "as the plain panel");

        // 1,000 messages in one second.
        let started = Instant::now();
        for i in 0..1000 {
            chat.post(&format!("user{i}"), "spam spam spam").unwrap();
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let took = started.elapsed();
        tokio::time::sleep(MIN_RENDER_INTERVAL * 2).await;
        let renders = shown.lock().unwrap().len() - 1;
        let most = (took.as_millis() / MIN_RENDER_INTERVAL.as_millis()) as usize + 2;
        assert!(
            (2..=most).contains(&renders),
            "{renders} renders for 1,000 messages in {took:?}"
        );
        assert!(shown.lock().unwrap().last().unwrap().is_some());

        // Room modes are not drawn; a clear is, as the plain panel.
        let before = shown.lock().unwrap().len();
        chat.publish(ChatEvent::RoomState(Default::default()));
        tokio::time::sleep(MIN_RENDER_INTERVAL * 2).await;
        assert_eq!(shown.lock().unwrap().len(), before);
        chat.publish(ChatEvent::Clear(Clear {
            origin: crate::chat::Origin::Twitch,
            channel: "c".into(),
            action: ClearKind::Clear,
            target_login: None,
            target_user_id: None,
            duration_s: None,
            timestamp_ms: 0,
        }));
        tokio::time::sleep(MIN_RENDER_INTERVAL * 2).await;
        assert_eq!(shown.lock().unwrap().len(), before + 1);
        assert!(shown.lock().unwrap().last().unwrap().is_none());

        // The pipeline going away ends the task.
        drop(tx);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the renderer ends with the pipeline")
            .unwrap();
    }

    #[tokio::test]
    async fn a_new_chat_area_is_drawn_at_its_size_and_none_draws_nothing() {
        let chat = Chat::new(ChatConfig::default());
        chat.post("alice", "hello").unwrap();
        let (tx, rx) = watch::channel(None);
        let (_task, shown) = spawn_drive(&chat, rx);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(shown.lock().unwrap().is_empty(), "no chat area, no drawing");
        tx.send_replace(Some(ChatArea {
            width: 200,
            height: 100,
            background: BG,
        }));
        let deadline = Instant::now() + Duration::from_secs(2);
        while shown.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let shown = shown.lock().unwrap();
        let image = shown.last().expect("drawn").as_ref().expect("not plain");
        assert_eq!(image.dimensions(), (200, 100));
    }
}
