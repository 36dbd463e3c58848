//! Rectangles and colours on a picture: the words layouts, the composite and the overlay
//! share. Depends on nothing else in the crate, so any part may use it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A rectangle on the canvas, in pixels, with `(x, y)` its top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    /// Left edge; grows to the right.
    pub x: i32,
    /// Top edge; grows downwards, as in every video frame.
    pub y: i32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Rect {
    /// The rectangle at `(x, y)` of `width` × `height`.
    pub const fn new(x: i32, y: i32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    /// The centre point, rounded towards the top-left when a side is odd.
    pub fn center(&self) -> (i32, i32) {
        (
            self.x.saturating_add_unsigned(self.width / 2),
            self.y.saturating_add_unsigned(self.height / 2),
        )
    }

    /// The rectangle shrunk by `px` on all four sides.
    ///
    /// A `px` larger than half a side collapses that side onto the centre instead of producing a
    /// negative size, so callers can inset by a user-supplied border without checking first.
    pub fn inset(&self, px: u32) -> Rect {
        let dx = px.min(self.width / 2);
        let dy = px.min(self.height / 2);
        Rect {
            x: self.x.saturating_add_unsigned(dx),
            y: self.y.saturating_add_unsigned(dy),
            width: self.width - 2 * dx,
            height: self.height - 2 * dy,
        }
    }

    /// Whether the two rectangles share at least one pixel.
    ///
    /// Rectangles that only touch along an edge do not intersect, so a chat area may start on
    /// the row right below the webcam; an empty rectangle intersects nothing.
    pub fn intersects(&self, other: &Rect) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && self.left() < other.right()
            && other.left() < self.right()
            && self.top() < other.bottom()
            && other.top() < self.bottom()
    }

    /// Whether the pixel at `(px, py)` lies inside; the right and bottom edges are exclusive,
    /// like pixel ranges everywhere else.
    pub fn contains(&self, px: i32, py: i32) -> bool {
        let (px, py) = (i64::from(px), i64::from(py));
        self.left() <= px && px < self.right() && self.top() <= py && py < self.bottom()
    }

    /// Whether `other` lies entirely inside this rectangle.
    pub fn covers(&self, other: &Rect) -> bool {
        self.left() <= other.left()
            && other.right() <= self.right()
            && self.top() <= other.top()
            && other.bottom() <= self.bottom()
    }

    fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    // Edges in i64 so that `x + width` cannot overflow whatever the field values are.
    fn left(&self) -> i64 {
        i64::from(self.x)
    }

    fn right(&self) -> i64 {
        i64::from(self.x) + i64::from(self.width)
    }

    fn top(&self) -> i64 {
        i64::from(self.y)
    }

    fn bottom(&self) -> i64 {
        i64::from(self.y) + i64::from(self.height)
    }
}

/// An opaque colour.
///
/// Written `"#rrggbb"` in layout files and serialised back the same way, because that is the
/// notation streamers copy from colour pickers and brand guides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
}

impl Color {
    /// Black.
    pub const BLACK: Color = Color { r: 0, g: 0, b: 0 };
    /// White.
    pub const WHITE: Color = Color {
        r: 0xff,
        g: 0xff,
        b: 0xff,
    };

    /// The colour as `0xffRRGGBB`: fully opaque ARGB, the packing GStreamer's colour properties
    /// (`videotestsrc` `foreground-color`, `textoverlay` `color`, ...) expect.
    pub fn argb(&self) -> u32 {
        0xff00_0000 | u32::from(self.r) << 16 | u32::from(self.g) << 8 | u32::from(self.b)
    }

    /// Reads `"#rrggbb"` (either case of hex digits); anything else is `None`.
    pub fn parse(text: &str) -> Option<Color> {
        let hex = text.strip_prefix('#')?;
        // Checked up front because `from_str_radix` would also accept a sign, as in "#+f0000".
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let byte = |at: usize| u8::from_str_radix(&hex[at..at + 2], 16).ok();
        Some(Color {
            r: byte(0)?,
            g: byte(2)?,
            b: byte(4)?,
        })
    }
}

/// Formats as `#rrggbb`, the same notation layout files use.
impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

/// Serialises as the string `"#rrggbb"`, so a serialised layout reads like a layout file.
impl Serialize for Color {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserialises from the string `"#rrggbb"` (either case of hex digits).
impl<'de> Deserialize<'de> for Color {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexColor;

        impl serde::de::Visitor<'_> for HexColor {
            type Value = Color;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a colour written \"#rrggbb\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Color, E> {
                Color::parse(text).ok_or_else(|| {
                    E::custom(format!(
                        "\"{text}\" is not a colour, expected \"#rrggbb\" such as \"#9146ff\""
                    ))
                })
            }
        }

        deserializer.deserialize_str(HexColor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_prints_as_hex_and_packs_as_argb() {
        assert_eq!(
            Color {
                r: 1,
                g: 0xab,
                b: 0xff
            }
            .to_string(),
            "#01abff"
        );
        assert_eq!(Color { r: 1, g: 2, b: 3 }.argb(), 0xff01_0203);
        assert_eq!(
            Color::parse("#01ABff"),
            Some(Color {
                r: 1,
                g: 0xab,
                b: 0xff
            })
        );
        assert_eq!(Color::parse("#+f0000"), None);
    }

    #[test]
    fn rect_center() {
        assert_eq!(Rect::new(10, 20, 100, 51).center(), (60, 45));
    }

    #[test]
    fn rect_inset_shrinks_every_side_and_never_inverts() {
        let r = Rect::new(10, 20, 100, 50);
        assert_eq!(r.inset(2), Rect::new(12, 22, 96, 46));
        assert_eq!(r.inset(0), r);
        assert_eq!(r.inset(40), Rect::new(50, 45, 20, 0));
        assert_eq!(r.inset(1000), Rect::new(60, 45, 0, 0));
    }

    #[test]
    fn rect_intersects_needs_a_shared_pixel() {
        let a = Rect::new(0, 0, 10, 10);
        let overlapping = Rect::new(9, 9, 10, 10);
        let touching = Rect::new(10, 0, 10, 10);
        let below = Rect::new(0, 10, 10, 10);
        let inside = Rect::new(2, 2, 2, 2);
        let empty = Rect::new(5, 5, 0, 3);
        assert!(a.intersects(&overlapping) && overlapping.intersects(&a));
        assert!(a.intersects(&inside) && inside.intersects(&a));
        assert!(!a.intersects(&touching));
        assert!(!a.intersects(&below));
        assert!(!a.intersects(&empty) && !empty.intersects(&a));
        assert!(a.covers(&inside) && !inside.covers(&a));
    }

    #[test]
    fn rect_contains_includes_top_left_and_excludes_bottom_right() {
        let r = Rect::new(-5, 5, 10, 10);
        assert!(r.contains(-5, 5));
        assert!(r.contains(4, 14));
        assert!(!r.contains(5, 14));
        assert!(!r.contains(4, 15));
        assert!(!r.contains(-6, 5));
    }
}
