//! Pictures the pipeline shows besides the movie and the webcam: slates and static layers
//! ([`slate`], [`frames`]) and the chat panel of layouts with a chat area ([`chat`]). They are
//! drawn to RGBA with the `image` crate, off the video thread, only when they change.
//!
//! The overlay only draws: it knows rectangles and colours ([`crate::geometry`]) and the chat's
//! event model, never the pipeline that shows its pictures.

pub mod chat;
pub mod frames;
pub mod slate;

use std::sync::OnceLock;

use ab_glyph::FontRef;

/// The bundled font (DejaVu Sans Bold), parsed once. Embedded so slates and the chat panel
/// render without depending on system fonts.
pub(crate) fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(include_bytes!("../../overlay/fonts/DejaVuSans-Bold.ttf"))
            .expect("the bundled DejaVu font parses")
    })
}
