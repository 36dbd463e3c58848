//! Painting laid-out blocks onto the panel: a card's tint and bar, runs of glyphs, emote
//! pictures and pills, all blended into the picture and clipped to it.

use std::sync::Arc;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::RgbaImage;

use super::compose::Block;
use super::flow::{Glyph, Inline};
use super::{CARD_BAR, CARD_MARGIN, CARD_PAD_Y, CARD_TINT, PILL_PAD_X};

/// Draws blocks on a panel of one width.
pub(super) struct Painter<'a> {
    /// The bundled font.
    font: &'a FontRef<'static>,
    /// Panel width.
    width: f32,
    /// Height of every line.
    line_h: i64,
}

impl<'a> Painter<'a> {
    /// A painter for a panel `width` wide with lines `line_h` high.
    pub fn new(font: &'a FontRef<'static>, width: u32, line_h: i64) -> Self {
        Painter {
            font,
            width: width as f32,
            line_h,
        }
    }

    /// Draws `block` with its top at `top`, clipped to the picture.
    pub fn paint(&self, img: &mut RgbaImage, block: &Block, top: i64) {
        let mut text_top = top;
        if let Some(color) = block.card {
            self.card(img, color, top, top + block.height(self.line_h));
            text_top += CARD_PAD_Y;
        }
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

    /// A card from row `top` to `bottom`: the panel tinted with `color`, and a bar of it on
    /// the left.
    fn card(&self, img: &mut RgbaImage, color: [u8; 3], top: i64, bottom: i64) {
        let (x0, x1) = (CARD_MARGIN, self.width - CARD_MARGIN);
        let (y0, y1) = (top as f32, bottom as f32);
        fill_rounded(img, (x0, y0, x1, y1), 3.0, color, CARD_TINT);
        fill_rounded(img, (x0, y0, x0 + CARD_BAR, y1), 0.0, color, 1.0);
    }

    /// Draws one inline item at `x` on the line spanning rows `line` (top, bottom).
    fn draw(&self, img: &mut RgbaImage, x: f32, line: (i64, i64), what: &Inline) {
        match what {
            Inline::Word { glyphs, px, color } => {
                self.glyphs(img, x, line, glyphs, *px, *color);
            }
            Inline::Emote(image) => emote(img, (x.round() as i64, line.0), image),
            Inline::Pill {
                glyphs,
                px,
                color,
                fill,
                fill_alpha,
                height,
            } => {
                let mid = (line.0 + line.1) as f32 / 2.0;
                let rect = (x, mid - height / 2.0, x + what.width(), mid + height / 2.0);
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

/// Blends an emote picture, its top-left corner at `origin`, by its own alpha.
fn emote(img: &mut RgbaImage, origin: (i64, i64), image: &Arc<RgbaImage>) {
    for (ex, ey, p) in image.enumerate_pixels() {
        let [r, g, b, a] = p.0;
        let (x, y) = (origin.0 + i64::from(ex), origin.1 + i64::from(ey));
        blend(img, x, y, [r, g, b], f32::from(a) / 255.0);
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
