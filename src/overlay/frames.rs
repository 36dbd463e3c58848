//! Static layers of a layout: the canvas background with the chat panel, and the webcam border.

use image::{Rgba, RgbaImage};

use crate::geometry::{Color, Rect};

/// The bottom layer: a `width` × `height` canvas in `color`, with the chat area (where it
/// sits, and its own colour) painted as a panel.
pub fn background(width: u32, height: u32, color: Color, chat: Option<(Rect, Color)>) -> RgbaImage {
    let mut img = solid(width, height, color);
    if let Some((chat, chat_color)) = chat {
        let fill = rgba(chat_color);
        let x0 = chat.x.max(0) as u32;
        let y0 = chat.y.max(0) as u32;
        for y in y0..(y0 + chat.height).min(height) {
            for x in x0..(x0 + chat.width).min(width) {
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

    /// The side-panel layout's canvas colour, chat area and chat colour.
    const CANVAS: Color = Color {
        r: 0x0e,
        g: 0x0e,
        b: 0x10,
    };
    const CHAT: Rect = Rect::new(960, 180, 320, 540);
    const CHAT_COLOR: Color = Color {
        r: 0x18,
        g: 0x18,
        b: 0x1b,
    };

    #[test]
    fn chat_panel_is_painted_only_where_the_layout_puts_it() {
        let img = background(1280, 720, CANVAS, Some((CHAT, CHAT_COLOR)));
        let (cx, cy) = CHAT.center();
        assert_eq!(img.get_pixel(cx as u32, cy as u32).0, rgba(CHAT_COLOR).0);
        let (mx, my) = Rect::new(0, 0, 960, 720).center();
        assert_eq!(img.get_pixel(mx as u32, my as u32).0, rgba(CANVAS).0);
        let inset = background(1280, 720, CANVAS, None);
        assert!(inset.pixels().all(|p| p == inset.get_pixel(0, 0)));
    }
}
