//! Text that cannot lie: what a party line's text and nickname become before anything checks
//! them, and the folded form blocked terms and reserved names are compared in.
//!
//! - [`clean`]: NFKC; control characters (C0, C1, DEL) refused, except tab and line breaks,
//!   which become spaces; invisible characters (Unicode's default-ignorable code points:
//!   zero-width spaces, bidi overrides and isolates, fillers) stripped. A zero-width
//!   (non-)joiner or a variation selector right after a visible character stays: scripts
//!   such as Persian and Devanagari, and emoji, need them there.
//! - [`fold`]: NFKC, lower case, the UTS #39 confusable skeleton, lower case again, and only
//!   letters and digits kept: `bad\u{200b}word`, `bаdword` (Cyrillic а), `ｂａｄｗｏｒｄ` and
//!   `b a d w o r d` all fold to `badword`.
//!
//! The confusable table is Unicode's own (`unicode-security`), not ours.

use unicode_normalization::UnicodeNormalization;
use unicode_security::skeleton;

/// Why a text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// A control character (escape, bell, NUL…).
    #[error("message contains a control character (U+{:04X}); remove it", u32::from(*.0))]
    Control(char),
}

/// A party line's text, normalized: NFKC, no invisible characters, trimmed. May be empty
/// (nothing visible was said): the caller refuses that.
pub fn clean(text: &str) -> Result<String, TextError> {
    let mut out = String::with_capacity(text.len());
    let mut after_visible = false;
    for c in text.nfkc() {
        if c.is_control() {
            if matches!(c, '\t' | '\n' | '\r') {
                out.push(' ');
                after_visible = false;
                continue;
            }
            return Err(TextError::Control(c));
        }
        if is_invisible(c) {
            if after_visible && is_joiner_or_selector(c) {
                out.push(c);
            }
            continue;
        }
        out.push(c);
        after_visible = !c.is_whitespace();
    }
    Ok(out.trim().to_owned())
}

/// A nickname, normalized (NFKC): `ａｄｍｉｎ` is `admin` before any rule looks at it.
pub fn clean_nick(nick: &str) -> String {
    nick.trim().nfkc().collect()
}

/// The form blocked terms and names are compared in (see the module documentation).
pub fn fold(text: &str) -> String {
    let lower: String = text.nfkc().flat_map(char::to_lowercase).collect();
    skeleton(&lower)
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// Whether `c` shows nothing: one of Unicode's default-ignorable code points. Read from
/// `unicode-security`'s table through [`skeleton`], which drops exactly those.
fn is_invisible(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    let mut buf = [0; 4];
    skeleton(c.encode_utf8(&mut buf)).next().is_none()
}

/// Zero-width joiner and non-joiner, and variation selectors: meaningful after a character.
fn is_joiner_or_selector(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_control_text() {
        assert_eq!(clean("\u{200B}\u{200B}").unwrap(), "");
        assert_eq!(clean("\u{FEFF}\u{2060}\u{3164}").unwrap(), "");
        assert_eq!(clean("hi\u{202E}olleh").unwrap(), "hiolleh");
        assert_eq!(clean("a\u{2066}b\u{2069}").unwrap(), "ab");
        assert_eq!(clean("bad\u{200B}word").unwrap(), "badword");
        assert_eq!(clean("\u{0}"), Err(TextError::Control('\u{0}')));
        assert_eq!(clean("hi\u{1B}[2J"), Err(TextError::Control('\u{1B}')));
        assert_eq!(clean("ding\u{7}"), Err(TextError::Control('\u{7}')));
        assert_eq!(clean("c1\u{85}x"), Err(TextError::Control('\u{85}')));
        assert_eq!(
            TextError::Control('\u{1B}').to_string(),
            "message contains a control character (U+001B); remove it"
        );
        assert_eq!(clean(" two\nlines\t").unwrap(), "two lines");
        // Emoji and joining scripts keep what they need; a lone joiner goes.
        assert_eq!(clean("❤\u{FE0F}").unwrap(), "❤\u{FE0F}");
        assert_eq!(clean("👩\u{200D}💻").unwrap(), "👩\u{200D}💻");
        assert_eq!(clean("\u{200D}\u{FE0F}").unwrap(), "");
        assert_eq!(clean("ｈｅｌｌｏ").unwrap(), "hello");
    }

    #[test]
    fn variants_fold_to_one_form() {
        for variant in [
            "badword",
            "BadWord",
            "bad\u{200B}word",
            "b\u{0430}dword",
            "ｂａｄｗｏｒｄ",
            "b a d w o r d",
            "b.a-d_w.o.r.d",
        ] {
            assert_eq!(fold(variant), fold("badword"), "{variant:?}");
        }
        assert_eq!(fold("h\u{043E}st"), fold("host"));
        assert_eq!(fold("ａｄｍｉｎ"), fold("admin"));
        assert_ne!(fold("goodword"), fold("badword"));
        assert_eq!(clean_nick(" ａｄｍｉｎ "), "admin");
    }
}
