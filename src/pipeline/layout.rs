//! Compositor layouts: where the movie, the webcam and the chat area sit on the canvas.
//!
//! Layouts are TOML files that streamers edit by hand, so loading is strict (a typo in a key is
//! an error, not a silently ignored setting) and every error is a single line naming the file
//! and the offending key: it ends up in a terminal or a log line, where a multi-line report with
//! carets would be mangled.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::geometry::{Color, Rect};
use crate::overlay::chat::ChatArea;

/// Where each element goes on the compositor canvas, as loaded and checked from a layout file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layout {
    /// `"side-panel"`, `"inset"`, or the file stem of a user layout; shown in logs and status.
    pub name: String,
    /// Canvas width in pixels: the width of the stream viewers receive.
    pub width: u32,
    /// Canvas height in pixels.
    pub height: u32,
    /// Fills every part of the canvas nothing else covers, including the movie's letterbox bars.
    pub background: Color,
    /// The area the movie is scaled into, keeping its aspect ratio.
    pub movie: Rect,
    /// The webcam's outer rectangle, border included; it may overlap the movie (picture in
    /// picture) and is then drawn above it.
    pub webcam: Rect,
    /// Border thickness in pixels, drawn inside `webcam`; 0 for none.
    pub webcam_border: u32,
    /// Colour of the webcam border.
    pub border_color: Color,
    /// The chat area, or `None` when the layout shows no chat on the video.
    pub chat: Option<Rect>,
    /// Fill behind the chat; equals `background` when the file does not set it or has no chat.
    pub chat_background: Color,
}

impl Layout {
    /// Names of the layouts shipped in pipelines/layouts (embedded with include_str!).
    pub const BUILTIN: &'static [&'static str] = &["side-panel", "inset"];

    /// The shipped layout called `name`, or `None` if there is none by that name.
    ///
    /// # Panics
    ///
    /// If a shipped file does not validate; the tests load every builtin, so that is a
    /// packaging bug rather than something a streamer can cause.
    pub fn builtin(name: &str) -> Option<Layout> {
        let text = builtin_text(name)?;
        Some(Self::from_toml(text, name).unwrap_or_else(|err| panic!("{err}")))
    }

    /// `spec` is a builtin name or a path to a .toml file.
    ///
    /// Anything else is rejected rather than tried as a file name, so that a mistyped builtin
    /// name gets "unknown layout" instead of a puzzling "file not found".
    pub fn load(spec: &str) -> Result<Layout, LayoutError> {
        if let Some(layout) = Self::builtin(spec) {
            return Ok(layout);
        }
        if !(spec.ends_with(".toml") || spec.contains('/')) {
            return Err(LayoutError::Unknown {
                spec: spec.to_owned(),
            });
        }
        let text = read_capped(Path::new(spec), spec)?;
        Self::from_toml(&text, spec)
    }

    /// Parses and validates a layout written in TOML.
    ///
    /// `origin` (a file path or builtin name) is only used to name the layout, from its file
    /// stem, and to say in error messages which layout is wrong.
    pub fn from_toml(text: &str, origin: &str) -> Result<Layout, LayoutError> {
        let raw = parse_raw(text, origin)?;
        Check { origin }.layout(raw)
    }

    /// The webcam picture area: `webcam` shrunk by the border.
    pub fn webcam_inner(&self) -> Rect {
        self.webcam.inset(self.webcam_border)
    }

    /// The chat area as the chat panel is drawn for it, or `None` when the layout shows no
    /// chat.
    pub fn chat_area(&self) -> Option<ChatArea> {
        self.chat.map(|chat| ChatArea {
            width: chat.width,
            height: chat.height,
            background: self.chat_background,
        })
    }
}

fn builtin_text(name: &str) -> Option<&'static str> {
    match name {
        "side-panel" => Some(include_str!("../../pipelines/layouts/side-panel.toml")),
        "inset" => Some(include_str!("../../pipelines/layouts/inset.toml")),
        _ => None,
    }
}

/// Why a layout could not be loaded. Every message is a single line.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// `spec` is neither a builtin name nor something that looks like a path to a file.
    #[error(
        "unknown layout `{spec}` (expected {} or a path to a .toml file)",
        builtin_list()
    )]
    Unknown {
        /// What the user asked for.
        spec: String,
    },
    /// The layout file could not be read.
    // The I/O error is part of the message rather than a `#[source]`, so that printing the
    // whole error chain does not say it twice.
    #[error("layout {path}: cannot read the file: {error}")]
    Read {
        /// The path as the user gave it.
        path: String,
        /// What the operating system reported.
        error: std::io::Error,
    },
    /// Not a regular file (a FIFO, a device, a directory).
    #[error("layout {path}: not a regular file")]
    NotAFile {
        /// The path as the user gave it.
        path: String,
    },
    /// Far larger than any layout.
    #[error(
        "layout {path}: {bytes} bytes is too large for a layout (at most {} bytes)",
        MAX_LAYOUT_BYTES
    )]
    TooBig {
        /// The path as the user gave it.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// A file the host page may not choose: outside the streamer's directories.
    #[error(
        "layout {spec}: only the built-in layouts ({}), the layout given at start and .toml files in {places} can be chosen while live",
        builtin_list()
    )]
    Outside {
        /// What the page asked for.
        spec: String,
        /// The directories allowed.
        places: String,
    },
    /// The text is not valid TOML.
    #[error("layout {origin}: TOML syntax error: {message}{}", line_suffix(.line))]
    Syntax {
        /// File path or builtin name.
        origin: String,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// The parser's description, flattened to one line.
        message: String,
    },
    /// The TOML is well-formed but a key is missing, unknown, of the wrong type, or has a value
    /// the compositor cannot use.
    #[error("layout {origin}: {message}{}", line_suffix(.line))]
    Invalid {
        /// File path or builtin name.
        origin: String,
        /// Dotted path of the offending key or table, such as `webcam.height` or `chat`.
        field: String,
        /// 1-based line of the offending key, when known.
        line: Option<usize>,
        /// What is wrong, naming `field`.
        message: String,
    },
}

/// Largest layout file read: a layout is a few hundred bytes.
pub const MAX_LAYOUT_BYTES: u64 = 64 * 1024;

/// Reads a layout file: opened without blocking (a FIFO cannot hang the caller), a regular
/// file only, at most [`MAX_LAYOUT_BYTES`]. `shown` names it in errors.
pub(super) fn read_capped(path: &Path, shown: &str) -> Result<String, LayoutError> {
    let read = |error| LayoutError::Read {
        path: shown.to_owned(),
        error,
    };
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(LayoutError::NotAFile {
            path: shown.to_owned(),
        });
    }
    if meta.len() > MAX_LAYOUT_BYTES {
        return Err(LayoutError::TooBig {
            path: shown.to_owned(),
            bytes: meta.len(),
        });
    }
    let mut text = String::new();
    // The file may grow between the check and the read.
    std::io::Read::take(file, MAX_LAYOUT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_LAYOUT_BYTES {
        return Err(LayoutError::TooBig {
            path: shown.to_owned(),
            bytes: text.len() as u64,
        });
    }
    Ok(text)
}

fn builtin_list() -> String {
    Layout::BUILTIN.join(", ")
}

fn line_suffix(line: &Option<usize>) -> String {
    line.map(|line| format!(" (line {line})"))
        .unwrap_or_default()
}

// The file as written, before validation. Every key is optional so that a missing one is
// reported by `Check` with its full dotted path; serde's own "missing field `height`" would not
// say which table it belongs to.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a layout document")]
struct RawLayout {
    canvas: Option<RawCanvas>,
    movie: Option<RawRect>,
    webcam: Option<RawWebcam>,
    chat: Option<RawChat>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with width, height and background"
)]
struct RawCanvas {
    width: Option<Int>,
    height: Option<Int>,
    background: Option<Color>,
}

/// A whole number as written in the file.
///
/// Kept as i64, TOML's own integer type, so that a negative or huge value reaches `Check` and
/// gets a message about the layout rather than serde's "expected u32"; and a type of its own so
/// that a quoted or fractional value is reported as "expected a whole number", not "expected i64".
#[derive(Clone, Copy)]
struct Int(i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WholeNumber;

        impl serde::de::Visitor<'_> for WholeNumber {
            type Value = Int;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Int, E> {
                Ok(Int(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Int, E> {
                i64::try_from(value)
                    .map(Int)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
            }
        }

        deserializer.deserialize_i64(WholeNumber)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with x, y, width and height")]
struct RawRect {
    x: Option<Int>,
    y: Option<Int>,
    width: Option<Int>,
    height: Option<Int>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with x, y, width, height, border and border_color"
)]
struct RawWebcam {
    x: Option<Int>,
    y: Option<Int>,
    width: Option<Int>,
    height: Option<Int>,
    border: Option<Int>,
    border_color: Option<Color>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with x, y, width, height and background"
)]
struct RawChat {
    x: Option<Int>,
    y: Option<Int>,
    width: Option<Int>,
    height: Option<Int>,
    background: Option<Color>,
}

fn parse_raw(text: &str, origin: &str) -> Result<RawLayout, LayoutError> {
    // Parse as plain TOML first so that broken syntax is reported as such, apart from errors
    // about the layout's keys and values.
    if let Err(err) = toml::from_str::<toml::Table>(text) {
        return Err(LayoutError::Syntax {
            origin: origin.to_owned(),
            line: err.span().map(|span| line_of(text, span.start)),
            message: one_line(err.message()),
        });
    }
    toml::from_str(text).map_err(|err| shape_error(text, origin, &err))
}

/// Turns a serde error (unknown key, wrong type, bad colour) into a one-line error that names
/// the key by its dotted path.
fn shape_error(text: &str, origin: &str, err: &toml::de::Error) -> LayoutError {
    let path = key_path(err);
    let message = one_line(err.message());
    let (field, message) = match message.strip_prefix("unknown field `") {
        // serde names only the key itself; prefix its table so the streamer knows where to look.
        Some(rest) => {
            let (key, tail) = rest.split_once('`').unwrap_or((rest, ""));
            let field = join_path(&path, key);
            let message = format!("unknown field `{field}`{tail}");
            (field, message)
        }
        None if path.is_empty() => (path, message),
        None => {
            let message = format!("`{path}`: {message}");
            (path, message)
        }
    };
    LayoutError::Invalid {
        origin: origin.to_owned(),
        field,
        line: err.span().map(|span| line_of(text, span.start)),
        message,
    }
}

/// The dotted path of the key a toml error is about, or "" for the top level.
fn key_path(err: &toml::de::Error) -> String {
    // toml keeps the path private and prints it, as a final "in `a.b`" line, only when it has
    // no source text to quote instead; so drop the text and read that line back.
    let mut bare = err.clone();
    bare.set_input(None);
    bare.to_string()
        .lines()
        .find_map(|line| {
            line.strip_prefix("in `")?
                .strip_suffix('`')
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn join_path(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

const CANVAS_MIN: i64 = 16;
const CANVAS_MAX_WIDTH: i64 = 3840;
const CANVAS_MAX_HEIGHT: i64 = 2160;

/// Validation of a parsed file; carries the origin so every error can name it.
struct Check<'a> {
    origin: &'a str,
}

impl Check<'_> {
    fn layout(&self, raw: RawLayout) -> Result<Layout, LayoutError> {
        let canvas = self.table(raw.canvas, "canvas")?;
        let width = self.canvas_side(canvas.width, "canvas.width", CANVAS_MAX_WIDTH)?;
        let height = self.canvas_side(canvas.height, "canvas.height", CANVAS_MAX_HEIGHT)?;
        let background = canvas.background.unwrap_or(Color::BLACK);
        let size = (width, height);

        let movie = self.table(raw.movie, "movie")?;
        let movie = self.rect("movie", [movie.x, movie.y, movie.width, movie.height], size)?;

        let cam = self.table(raw.webcam, "webcam")?;
        let webcam = self.rect("webcam", [cam.x, cam.y, cam.width, cam.height], size)?;
        let webcam_border = self.border(cam.border, &webcam)?;
        // The webcam is drawn above the movie, so one covering it would hide the film entirely.
        if webcam.covers(&movie) {
            return Err(self.invalid(
                "webcam",
                "`webcam` covers the whole `movie`; it may overlap the movie but must leave \
                 part of it visible"
                    .to_owned(),
            ));
        }

        let (chat, chat_background) = match raw.chat {
            None => (None, background),
            Some(chat) => {
                let rect = self.rect("chat", [chat.x, chat.y, chat.width, chat.height], size)?;
                // Chat is drawn as text on its own panel; text over the picture would be unreadable.
                for (other, name) in [(&movie, "movie"), (&webcam, "webcam")] {
                    if rect.intersects(other) {
                        return Err(self.invalid("chat", format!("`chat` overlaps `{name}`")));
                    }
                }
                (Some(rect), chat.background.unwrap_or(background))
            }
        };

        let name = Path::new(self.origin)
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or(self.origin)
            .to_owned();
        Ok(Layout {
            name,
            width,
            height,
            background,
            movie,
            webcam,
            webcam_border,
            border_color: cam.border_color.unwrap_or(Color::WHITE),
            chat,
            chat_background,
        })
    }

    fn invalid(&self, field: &str, message: String) -> LayoutError {
        LayoutError::Invalid {
            origin: self.origin.to_owned(),
            field: field.to_owned(),
            line: None,
            message,
        }
    }

    fn table<T>(&self, table: Option<T>, name: &str) -> Result<T, LayoutError> {
        table.ok_or_else(|| self.invalid(name, format!("missing table `[{name}]`")))
    }

    fn required(&self, value: Option<Int>, field: &str) -> Result<i64, LayoutError> {
        value
            .map(|Int(value)| value)
            .ok_or_else(|| self.invalid(field, format!("missing field `{field}`")))
    }

    fn canvas_side(&self, value: Option<Int>, field: &str, max: i64) -> Result<u32, LayoutError> {
        let value = self.required(value, field)?;
        // Encoders subsample chroma by two, hence even; the bounds are what encoders and
        // viewers' players handle everywhere.
        if !(CANVAS_MIN..=max).contains(&value) || value % 2 != 0 {
            return Err(self.invalid(
                field,
                format!(
                    "`{field}` is {value}; it must be an even number from {CANVAS_MIN} to {max}"
                ),
            ));
        }
        Ok(value as u32)
    }

    /// `values` are x, y, width and height, in that order.
    fn rect(
        &self,
        table: &str,
        values: [Option<Int>; 4],
        canvas: (u32, u32),
    ) -> Result<Rect, LayoutError> {
        const KEYS: [&str; 4] = ["x", "y", "width", "height"];
        let mut v = [0; 4];
        for ((slot, value), key) in v.iter_mut().zip(values).zip(KEYS) {
            *slot = self.required(value, &format!("{table}.{key}"))?;
        }
        let [x, y, width, height] = v;
        for (key, value) in [("x", x), ("y", y)] {
            if value < 0 {
                return Err(self.invalid(
                    &format!("{table}.{key}"),
                    format!("`{table}.{key}` is {value}; it must be 0 or more"),
                ));
            }
        }
        // Even sizes so that the scaled picture lines up with the encoder's chroma grid.
        for (key, value) in [("width", width), ("height", height)] {
            if value <= 0 || value % 2 != 0 {
                return Err(self.invalid(
                    &format!("{table}.{key}"),
                    format!("`{table}.{key}` is {value}; it must be an even number above 0"),
                ));
            }
        }
        let (canvas_width, canvas_height) = canvas;
        if x.saturating_add(width) > i64::from(canvas_width) {
            return Err(self.invalid(
                table,
                format!(
                    "`{table}` (x={x}, width={width}) extends past the canvas width {canvas_width}"
                ),
            ));
        }
        if y.saturating_add(height) > i64::from(canvas_height) {
            return Err(self.invalid(
                table,
                format!(
                    "`{table}` (y={y}, height={height}) extends past the canvas height {canvas_height}"
                ),
            ));
        }
        // Every value is now within the canvas, at most 3840, so the conversions are lossless.
        Ok(Rect {
            x: x as i32,
            y: y as i32,
            width: width as u32,
            height: height as u32,
        })
    }

    fn border(&self, border: Option<Int>, webcam: &Rect) -> Result<u32, LayoutError> {
        let border = border.map_or(0, |Int(border)| border);
        if border < 0 {
            return Err(self.invalid(
                "webcam.border",
                format!("`webcam.border` is {border}; it must be 0 or more"),
            ));
        }
        let smaller_side = webcam.width.min(webcam.height);
        if border.saturating_mul(2) >= i64::from(smaller_side) {
            return Err(self.invalid(
                "webcam.border",
                format!(
                    "`webcam.border` is {border}; it leaves no room for the picture in a {}x{} \
                     webcam (it must be less than {})",
                    webcam.width,
                    webcam.height,
                    smaller_side.div_ceil(2)
                ),
            ));
        }
        Ok(border as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "./my.toml";

    /// A valid layout (the side-panel geometry) whose lines the error tests edit one at a time.
    const BASE: &str = r##"
[canvas]
width = 1280
height = 720
background = "#0e0e10"

[movie]
x = 0
y = 0
width = 960
height = 720

[webcam]
x = 960
y = 0
width = 320
height = 180
border = 2
border_color = "#9146ff"

[chat]
x = 960
y = 180
width = 320
height = 540
background = "#18181b"
"##;

    /// BASE with `from` replaced; insists on exactly one match so a test cannot silently
    /// check the unedited, valid file.
    fn edited(from: &str, to: &str) -> String {
        assert_eq!(
            BASE.matches(from).count(),
            1,
            "`{from}` must occur once in BASE"
        );
        BASE.replacen(from, to, 1)
    }

    /// Loads `text`, expects an error, and checks the properties every error must have.
    fn error_of(text: &str) -> (String, String) {
        let err = Layout::from_toml(text, ORIGIN).expect_err("layout should be rejected");
        let message = err.to_string();
        assert!(!message.contains('\n'), "multi-line error: {message}");
        assert!(
            message.starts_with("layout ./my.toml: "),
            "error does not name the origin: {message}"
        );
        let field = match &err {
            LayoutError::Invalid { field, .. } => field.clone(),
            _ => String::new(),
        };
        (message, field)
    }

    /// Asserts the error is about `field` and that the message names it.
    fn assert_field_error(text: &str, field: &str) -> String {
        let (message, reported) = error_of(text);
        assert_eq!(reported, field, "{message}");
        assert!(message.contains(&format!("`{field}`")), "{message}");
        message
    }

    #[test]
    fn every_builtin_loads_and_validates() {
        for &name in Layout::BUILTIN {
            let layout = Layout::builtin(name).expect("listed builtin exists");
            assert_eq!(layout.name, name);
            assert_eq!(Layout::load(name).unwrap(), layout);
        }
        assert_eq!(Layout::builtin("nope"), None);
    }

    #[test]
    fn side_panel_is_the_twitch_like_layout() {
        let layout = Layout::builtin("side-panel").unwrap();
        let rect = |x, y, width, height| Rect {
            x,
            y,
            width,
            height,
        };
        assert_eq!((layout.width, layout.height), (1280, 720));
        assert_eq!(layout.background, Color::parse("#0e0e10").unwrap());
        assert_eq!(layout.movie, rect(0, 0, 960, 720));
        assert_eq!(layout.webcam, rect(960, 0, 320, 180));
        assert_eq!(layout.webcam_border, 2);
        assert_eq!(layout.border_color.argb(), 0xff91_46ff);
        assert_eq!(layout.webcam_inner(), rect(962, 2, 316, 176));
        assert_eq!(layout.chat, Some(rect(960, 180, 320, 540)));
        assert_eq!(layout.chat_background.argb(), 0xff18_181b);
    }

    #[test]
    fn inset_is_picture_in_picture_without_chat() {
        let layout = Layout::builtin("inset").unwrap();
        assert_eq!(
            layout.movie,
            Rect {
                x: 0,
                y: 0,
                width: 1280,
                height: 720
            }
        );
        let cam = layout.webcam;
        assert_eq!((cam.width, cam.height), (320, 180));
        // 16 px margin to the bottom-right corner.
        assert_eq!(cam.x + cam.width as i32, 1280 - 16);
        assert_eq!(cam.y + cam.height as i32, 720 - 16);
        assert!(cam.intersects(&layout.movie));
        assert_eq!(layout.webcam_border, 2);
        assert_eq!(layout.chat, None);
        assert_eq!(layout.chat_background, layout.background);
    }

    #[test]
    fn base_fixture_is_valid_and_named_after_the_file() {
        let layout = Layout::from_toml(BASE, "layouts/my-room.toml").unwrap();
        assert_eq!(layout.name, "my-room");
        assert_eq!(
            layout,
            Layout {
                name: "my-room".into(),
                ..Layout::builtin("side-panel").unwrap()
            }
        );
    }

    #[test]
    fn optional_keys_take_documented_defaults() {
        let text = edited("background = \"#18181b\"\n", "")
            .replacen("border = 2\nborder_color = \"#9146ff\"\n", "", 1)
            .replacen("background = \"#0e0e10\"\n", "", 1);
        let layout = Layout::from_toml(&text, ORIGIN).unwrap();
        assert_eq!(layout.background, Color::BLACK);
        assert_eq!(layout.chat_background, Color::BLACK);
        assert_eq!(layout.webcam_border, 0);
        assert_eq!(layout.border_color, Color::WHITE);
        assert_eq!(layout.webcam_inner(), layout.webcam);
    }

    #[test]
    fn missing_field_is_named_with_its_table() {
        let message = assert_field_error(&edited("height = 180\n", ""), "webcam.height");
        assert_eq!(message, "layout ./my.toml: missing field `webcam.height`");
        assert_field_error(
            &edited("[canvas]\nwidth = 1280\n", "[canvas]\n"),
            "canvas.width",
        );
    }

    #[test]
    fn missing_table_is_named() {
        let text = edited("[movie]\nx = 0\ny = 0\nwidth = 960\nheight = 720\n", "");
        let (message, field) = error_of(&text);
        assert_eq!(field, "movie");
        assert_eq!(message, "layout ./my.toml: missing table `[movie]`");
    }

    #[test]
    fn unknown_top_level_field_is_named_with_its_line() {
        let (message, field) = error_of(&edited("[webcam]", "[webcan]"));
        assert_eq!(field, "webcan");
        assert!(
            message.starts_with("layout ./my.toml: unknown field `webcan`"),
            "{message}"
        );
        assert!(message.ends_with("(line 13)"), "{message}");
    }

    #[test]
    fn unknown_nested_field_is_named_with_its_table() {
        let (message, field) = error_of(&edited("border = 2", "bordr = 2"));
        assert_eq!(field, "webcam.bordr");
        assert!(
            message.starts_with("layout ./my.toml: unknown field `webcam.bordr`"),
            "{message}"
        );
        assert!(message.contains("expected one of"), "{message}");
        assert!(message.ends_with("(line 18)"), "{message}");
    }

    #[test]
    fn wrong_type_is_named() {
        let message =
            assert_field_error(&edited("height = 540", "height = \"tall\""), "chat.height");
        assert!(message.contains("expected a whole number"), "{message}");
        assert!(message.ends_with("(line 25)"), "{message}");
        // A key, not a table: top-level keys must come before the first table header.
        let text = format!(
            "movie = 3\n{}",
            edited("[movie]\nx = 0\ny = 0\nwidth = 960\nheight = 720\n", "")
        );
        let message = assert_field_error(&text, "movie");
        assert!(
            message.contains("expected a table with x, y, width and height"),
            "{message}"
        );
    }

    #[test]
    fn rect_past_the_canvas_is_named_with_its_extent() {
        let text = edited(
            "x = 960\ny = 0\nwidth = 320",
            "x = 1200\ny = 0\nwidth = 200",
        );
        let message = assert_field_error(&text, "webcam");
        assert_eq!(
            message,
            "layout ./my.toml: `webcam` (x=1200, width=200) extends past the canvas width 1280"
        );
        let message = assert_field_error(&edited("height = 540", "height = 542"), "chat");
        assert!(
            message.contains("(y=180, height=542) extends past the canvas height 720"),
            "{message}"
        );
    }

    #[test]
    fn rect_sizes_must_be_positive_and_even_and_positions_not_negative() {
        assert_field_error(&edited("width = 960", "width = 961"), "movie.width");
        assert_field_error(&edited("width = 960", "width = 0"), "movie.width");
        assert_field_error(&edited("height = 180", "height = -180"), "webcam.height");
        assert_field_error(&edited("x = 960\ny = 180", "x = -2\ny = 180"), "chat.x");
        assert_field_error(&edited("x = 0\ny = 0", "x = 0\ny = -1"), "movie.y");
    }

    #[test]
    fn canvas_size_must_be_even_and_within_bounds() {
        assert_field_error(&edited("width = 1280", "width = 1281"), "canvas.width");
        assert_field_error(&edited("width = 1280", "width = 3842"), "canvas.width");
        assert_field_error(&edited("width = 1280", "width = 14"), "canvas.width");
        let message = assert_field_error(
            &edited("height = 720\nbackground", "height = 2162\nbackground"),
            "canvas.height",
        );
        assert!(message.contains("even number from 16 to 2160"), "{message}");
    }

    #[test]
    fn border_must_leave_room_for_the_picture() {
        assert_field_error(&edited("border = 2", "border = 90"), "webcam.border");
        assert_field_error(&edited("border = 2", "border = -1"), "webcam.border");
        let layout = Layout::from_toml(&edited("border = 2", "border = 89"), ORIGIN).unwrap();
        assert_eq!(layout.webcam_inner().height, 2);
    }

    #[test]
    fn chat_must_not_overlap_movie_or_webcam() {
        let message = assert_field_error(&edited("x = 960\ny = 180", "x = 958\ny = 180"), "chat");
        assert_eq!(message, "layout ./my.toml: `chat` overlaps `movie`");
        let message = assert_field_error(&edited("x = 960\ny = 180", "x = 960\ny = 178"), "chat");
        assert_eq!(message, "layout ./my.toml: `chat` overlaps `webcam`");
    }

    #[test]
    fn webcam_may_overlap_the_movie_but_not_cover_it() {
        let pip = edited("x = 960\ny = 0", "x = 800\ny = 0");
        assert!(Layout::from_toml(&pip, ORIGIN).is_ok());

        let same = BASE.replacen(
            "x = 960\ny = 0\nwidth = 320\nheight = 180",
            "x = 0\ny = 0\nwidth = 960\nheight = 720",
            1,
        );
        let message = assert_field_error(&same, "webcam");
        assert!(
            message.contains("`webcam` covers the whole `movie`"),
            "{message}"
        );
    }

    #[test]
    fn colours_must_be_hex_triplets() {
        for bad in [
            "\"#12345\"",
            "\"red\"",
            "\"#gg0000\"",
            "\"#+f0000\"",
            "\"#1234567\"",
            "9146",
        ] {
            let text = edited("\"#9146ff\"", bad);
            let message = assert_field_error(&text, "webcam.border_color");
            assert!(message.contains("#rrggbb"), "{message}");
        }
        let upper = edited("\"#9146ff\"", "\"#9146FF\"");
        assert_eq!(
            Layout::from_toml(&upper, ORIGIN)
                .unwrap()
                .border_color
                .argb(),
            0xff91_46ff
        );
    }

    #[test]
    fn toml_syntax_errors_become_one_line_with_a_line_number() {
        let (message, _) = error_of(&edited("height = 180", "height = = 180"));
        assert!(
            message.starts_with("layout ./my.toml: TOML syntax error: "),
            "{message}"
        );
        assert!(message.ends_with("(line 17)"), "{message}");
        let (message, _) = error_of(&edited("[chat]", "[chat"));
        assert!(message.contains("TOML syntax error"), "{message}");
        // Duplicate keys are a TOML error too, caught before the layout checks.
        let (message, _) = error_of(&edited("border = 2", "border = 2\nborder = 3"));
        assert!(
            message.contains("TOML syntax error") && message.ends_with("(line 19)"),
            "{message}"
        );
    }

    #[test]
    fn load_rejects_unknown_names_and_reports_unreadable_files() {
        let err = Layout::load("foo").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown layout `foo` (expected side-panel, inset or a path to a .toml file)"
        );
        let path = "./no-such-dir/missing.toml";
        let message = Layout::load(path).unwrap_err().to_string();
        assert!(
            message.starts_with("layout ./no-such-dir/missing.toml: cannot read the file: "),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }

    #[test]
    fn load_reads_a_file_and_names_the_layout_after_it() {
        let dir = std::env::temp_dir().join(format!("cowatch-layout-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("corner.toml");
        std::fs::write(&path, edited("border = 2", "border = 4")).unwrap();
        let loaded = Layout::load(path.to_str().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        let layout = loaded.unwrap();
        assert_eq!(layout.name, "corner");
        assert_eq!(layout.webcam_border, 4);

        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, edited("height = 180\n", "")).unwrap();
        let err = Layout::load(bad.to_str().unwrap()).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            err,
            format!("layout {}: missing field `webcam.height`", bad.display())
        );
    }

    #[test]
    fn colour_serialises_back_to_hex() {
        let layout = Layout::builtin("side-panel").unwrap();
        let text = toml::to_string(&layout).unwrap();
        assert!(text.contains("background = \"#0e0e10\""), "{text}");
        assert!(text.contains("border_color = \"#9146ff\""), "{text}");
    }
}
