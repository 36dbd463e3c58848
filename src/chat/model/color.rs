//! The colour a name is drawn in: the user's own or Twitch's default for that name, made
//! readable on the dark chat panel.

use twitch_irc::message::RGBColor;

/// Twitch's palette for users who never picked a colour.
const DEFAULT_COLORS: [(u8, u8, u8); 15] = [
    (0xFF, 0x00, 0x00),
    (0x00, 0x00, 0xFF),
    (0x00, 0x80, 0x00),
    (0xB2, 0x22, 0x22),
    (0xFF, 0x7F, 0x50),
    (0x9A, 0xCD, 0x32),
    (0xFF, 0x45, 0x00),
    (0x2E, 0x8B, 0x57),
    (0xDA, 0xA5, 0x20),
    (0xD2, 0x69, 0x1E),
    (0x5F, 0x9E, 0xA0),
    (0x1E, 0x90, 0xFF),
    (0xFF, 0x69, 0xB4),
    (0x8A, 0x2B, 0xE2),
    (0x00, 0xFF, 0x7F),
];

/// The colour a name is drawn in: the user's own, or a stable pick from Twitch's palette,
/// then lightened until it reads on the dark chat panel (pure blue on near-black does not).
pub fn display_color(color: Option<RGBColor>, login: &str) -> String {
    let (r, g, b) = match color {
        Some(c) => (c.r, c.g, c.b),
        None => {
            let sum: usize = login.bytes().map(usize::from).sum();
            DEFAULT_COLORS[sum % DEFAULT_COLORS.len()]
        }
    };
    let (r, g, b) = readable(r, g, b);
    format!("#{r:02X}{g:02X}{b:02X}")
}

/// Mixes a colour with white until its relative luminance is at least 0.2, which gives
/// about 5:1 contrast against the #18181B chat background.
fn readable(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let mut c = [f64::from(r), f64::from(g), f64::from(b)];
    for _ in 0..20 {
        if luminance(c) >= 0.2 {
            break;
        }
        for v in &mut c {
            *v += (255.0 - *v) * 0.15;
        }
    }
    (c[0].round() as u8, c[1].round() as u8, c[2].round() as u8)
}

fn luminance(c: [f64; 3]) -> f64 {
    let lin = |v: f64| {
        let s = v / 255.0;
        if s <= 0.039_28 {
            s / 12.92
        } else {
            ((s + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dark_colours_are_lightened_bright_ones_kept() {
        assert_ne!(
            display_color(Some(RGBColor { r: 0, g: 0, b: 255 }), "x"),
            "#0000FF"
        );
        assert_eq!(
            display_color(
                Some(RGBColor {
                    r: 0x00,
                    g: 0xFF,
                    b: 0x7F
                }),
                "x"
            ),
            "#00FF7F"
        );
    }
}
