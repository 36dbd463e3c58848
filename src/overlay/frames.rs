//! Static layers of a layout: the canvas background with the chat panel, and the webcam border.

use image::{Rgba, RgbaImage};

use crate::pipeline::layout::{Color, Layout};

/// The bottom layer: canvas colour, with the chat area painted as a panel.
pub fn background(layout: &Layout) -> RgbaImage {
    let mut img = solid(layout.width, layout.height, layout.background);
    if let Some(chat) = layout.chat {
        let fill = rgba(layout.chat_background);
        let x0 = chat.x.max(0) as u32;
        let y0 = chat.y.max(0) as u32;
        for y in y0..(y0 + chat.height).min(layout.height) {
            for x in x0..(x0 + chat.width).min(layout.width) {
                img.put_pixel(x, y, fill);
            }
        }
    }
    img
}

/// A plain opaque rectangle.
pub fn solid(width: u32, height: u32, color: Color) -> RgbaImage {
    RgbaImage::from_pixel(width, height, rgba(color))
}

fn rgba(c: Color) -> Rgba<u8> {
    Rgba([c.r, c.g, c.b, 255])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_panel_is_painted_only_where_the_layout_puts_it() {
        let layout = Layout::builtin("side-panel").unwrap();
        let img = background(&layout);
        let chat = layout.chat.unwrap();
        let (cx, cy) = chat.center();
        assert_eq!(
            img.get_pixel(cx as u32, cy as u32).0,
            rgba(layout.chat_background).0
        );
        let (mx, my) = layout.movie.center();
        assert_eq!(
            img.get_pixel(mx as u32, my as u32).0,
            rgba(layout.background).0
        );
        let inset = background(&Layout::builtin("inset").unwrap());
        assert!(inset.pixels().all(|p| p == inset.get_pixel(0, 0)));
    }
}
