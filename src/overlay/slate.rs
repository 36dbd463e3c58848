//! Placeholder frames ("slates") that stand in for a missing source.
//!
//! The compositor keeps its layout fixed, so when the webcam drops or the
//! movie ends, something must still fill that rectangle. Slates are plain
//! RGBA images rendered once per size and pushed as a still frame.
//!
//! Layout contract (relied upon by tests that inspect decoded frames):
//! the top fifth of every slate (`y < height / 5`) is always plain
//! [`background`]; all text and artwork sits below it. [`probe_point`]
//! returns a pixel inside that band.

use ab_glyph::{Font, FontRef, OutlinedGlyph, PxScale, ScaleFont, point};
use image::{Rgba, RgbaImage};

/// What a slate announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlateKind {
    /// The streamer's webcam is missing or has failed.
    CameraOff,
    /// The movie has ended or nothing is loaded yet.
    Intermission,
    /// A source is being opened and has not produced frames yet.
    Loading,
}

/// Below this pixel height glyphs become unreadable smudges that only
/// make the slate look broken, so text is omitted instead.
const MIN_TEXT_PX: f32 = 5.0;

/// Fraction of the width text may occupy; the margin keeps it clear of
/// whatever the compositor draws at the rectangle's edges.
const MAX_TEXT_WIDTH: f32 = 0.86;

/// Renders a slate of exactly `width` x `height` as RGBA (opaque).
///
/// Equivalent to [`render_with_caption`] with an empty caption. Any size is
/// accepted, including zero and tiny ones; elements that cannot fit are
/// left out rather than drawn illegibly.
pub fn render(kind: SlateKind, width: u32, height: u32) -> RgbaImage {
    render_with_caption(kind, width, height, "")
}

/// Same as [`render`], with an extra smaller line of text under the title
/// (e.g. the movie name or "camera lost").
///
/// An empty (or all-whitespace) caption means "no caption"; the
/// intermission slate then shows "back soon". Captions too long for the
/// slate are shortened with an ellipsis.
pub fn render_with_caption(kind: SlateKind, width: u32, height: u32, caption: &str) -> RgbaImage {
    let [r, g, b] = background(kind);
    let mut img = RgbaImage::from_pixel(width, height, Rgba([r, g, b, 255]));
    if width == 0 || height == 0 {
        return img;
    }

    // Control characters (newlines from file names, tabs) would render as
    // boxes; a caption is a single line.
    let caption: String = caption
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let caption = caption.trim();

    match kind {
        SlateKind::CameraOff => draw_camera_off(&mut img, [r, g, b], caption),
        SlateKind::Intermission => {
            let sub = if caption.is_empty() {
                "back soon"
            } else {
                caption
            };
            draw_title_slate(&mut img, "Intermission", sub, [196, 176, 232]);
        }
        SlateKind::Loading => {
            draw_title_slate(&mut img, "Loading\u{2026}", caption, [160, 196, 204]);
        }
    }
    img
}

/// The slate's dominant background colour (so tests can recognise a slate
/// in a decoded frame).
pub fn background(kind: SlateKind) -> [u8; 3] {
    match kind {
        SlateKind::CameraOff => [40, 44, 52],
        SlateKind::Intermission => [36, 20, 60],
        SlateKind::Loading => [18, 40, 46],
    }
}

/// A pixel of a `width` x `height` slate that is guaranteed to be plain
/// [`background`], for tests that sample a single pixel of a frame.
///
/// It lies horizontally centred in the top tenth, inside the band that the
/// layout never draws into, and away from the edges where encoder
/// artefacts and scaler filtering are worst. Only meaningful when both
/// dimensions are non-zero.
pub fn probe_point(width: u32, height: u32) -> (u32, u32) {
    (width / 2, height / 10)
}

const TITLE_COLOR: [u8; 3] = [236, 236, 242];

/// Draws a large title with a thin rule and a smaller subtitle below it.
fn draw_title_slate(img: &mut RgbaImage, title: &str, sub: &str, sub_color: [u8; 3]) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let has_sub = !sub.is_empty();
    // Without a subtitle the title alone should sit at the optical centre.
    let title_y = if has_sub { 0.44 * h } else { 0.5 * h };
    let title_px = fit_px(title, 0.17 * h, MAX_TEXT_WIDTH * w);
    if let Some(px) = title_px {
        draw_text_centered(img, title, title_y, px, TITLE_COLOR);
    }
    if !has_sub {
        return;
    }
    // A short rule ties title and subtitle together as one block.
    let rule_y = 0.56 * h;
    let rule_half = 0.12 * w;
    let rule_t = (h / 180.0).max(1.0);
    if title_px.is_some() && h >= 40.0 {
        let (a, b) = ((w / 2.0 - rule_half, rule_y), (w / 2.0 + rule_half, rule_y));
        draw_segment(img, a, b, rule_t / 2.0, sub_color);
    }
    draw_caption(img, sub, 0.66 * h, 0.075 * h, sub_color);
}

/// Draws the crossed-out camera icon, "camera off" and an optional caption.
fn draw_camera_off(img: &mut RgbaImage, bg: [u8; 3], caption: &str) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    // With a caption the block grows downwards, so lift it to stay centred.
    let lift = if caption.is_empty() { 0.0 } else { 0.04 * h };
    let icon_h = (0.22 * h).min(0.16 * w);
    // Under ~10 px the icon is a blob that reads as dirt, not a camera.
    if icon_h >= 10.0 {
        draw_camera_icon(img, bg, w / 2.0, 0.44 * h - lift, icon_h);
    }
    let title = "camera off";
    if let Some(px) = fit_px(title, 0.11 * h, MAX_TEXT_WIDTH * w) {
        draw_text_centered(img, title, 0.67 * h - lift, px, TITLE_COLOR);
    }
    if !caption.is_empty() {
        draw_caption(img, caption, 0.80 * h - lift, 0.065 * h, [168, 174, 186]);
    }
}

/// Draws an outline camera (body, viewfinder bump, lens) crossed by a slash,
/// fitting in a box `size` tall centred on (`cx`, `cy`).
///
/// Outlines instead of fills keep the slate's centre mostly background, so
/// an averaged centre sample still identifies the slate.
fn draw_camera_icon(img: &mut RgbaImage, bg: [u8; 3], cx: f32, cy: f32, size: f32) {
    const ICON: [u8; 3] = [200, 205, 216];
    const SLASH: [u8; 3] = [226, 92, 92];
    let t = (size / 14.0).max(1.0);
    let half_t = t / 2.0;

    // Body takes the lower 80% of the box; the bump sits on top of it.
    let body_h = 0.8 * size;
    let body_w = 1.45 * size;
    let body_top = cy - size / 2.0 + (size - body_h);
    let body = (
        cx - body_w / 2.0,
        body_top,
        cx + body_w / 2.0,
        body_top + body_h,
    );
    let radius = 0.14 * size;
    stroke_rounded_rect(img, body, radius, half_t, ICON);

    let bump_w = 0.42 * size;
    let bump = (
        cx - bump_w / 2.0,
        cy - size / 2.0 + half_t,
        cx + bump_w / 2.0,
        body_top + half_t,
    );
    fill_shape(img, expand(bump, 1.0), ICON, |x, y| {
        rect_coverage(x, y, bump)
    });

    let lens_c = (cx, body_top + body_h / 2.0);
    let lens_r = 0.26 * size;
    fill_shape(
        img,
        (
            lens_c.0 - lens_r - t,
            lens_c.1 - lens_r - t,
            lens_c.0 + lens_r + t,
            lens_c.1 + lens_r + t,
        ),
        ICON,
        |x, y| {
            let d = ((x - lens_c.0).powi(2) + (y - lens_c.1).powi(2)).sqrt();
            edge_coverage(half_t - (d - lens_r).abs())
        },
    );

    // The slash is cut out of the icon with a background-coloured halo,
    // the conventional "disabled" look, then drawn on top.
    let a = (cx - 0.6 * size, cy - 0.5 * size);
    let b = (cx + 0.6 * size, cy + 0.5 * size);
    draw_segment(img, a, b, 1.6 * t, bg);
    draw_segment(img, a, b, 0.7 * t, SLASH);
}

/// Draws an anti-aliased, round-capped line from `a` to `b`.
fn draw_segment(img: &mut RgbaImage, a: (f32, f32), b: (f32, f32), half_t: f32, color: [u8; 3]) {
    let bbox = (a.0.min(b.0), a.1.min(b.1), a.0.max(b.0), a.1.max(b.1));
    fill_shape(img, expand(bbox, half_t + 1.0), color, |x, y| {
        segment_coverage(x, y, a, b, half_t)
    });
}

/// Grows a box by `by` on every side, for anti-aliasing fringes.
fn expand(r: (f32, f32, f32, f32), by: f32) -> (f32, f32, f32, f32) {
    (r.0 - by, r.1 - by, r.2 + by, r.3 + by)
}

/// Strokes a rounded rectangle whose outline is centred on `r`'s edges.
fn stroke_rounded_rect(
    img: &mut RgbaImage,
    r: (f32, f32, f32, f32),
    radius: f32,
    half_t: f32,
    color: [u8; 3],
) {
    let (cx, cy) = ((r.0 + r.2) / 2.0, (r.1 + r.3) / 2.0);
    let (hw, hh) = ((r.2 - r.0) / 2.0, (r.3 - r.1) / 2.0);
    fill_shape(img, expand(r, half_t + 1.0), color, |x, y| {
        // Signed distance to a rounded box (negative inside).
        let qx = (x - cx).abs() - (hw - radius);
        let qy = (y - cy).abs() - (hh - radius);
        let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
        let d = outside + qx.max(qy).min(0.0) - radius;
        edge_coverage(half_t - d.abs())
    });
}

/// Maps a signed distance to the shape's edge (positive inside) to pixel
/// coverage, giving a one-pixel anti-aliased fringe.
fn edge_coverage(inside_by: f32) -> f32 {
    (inside_by + 0.5).clamp(0.0, 1.0)
}

/// Coverage of an axis-aligned rectangle at pixel centre (`x`, `y`).
fn rect_coverage(x: f32, y: f32, r: (f32, f32, f32, f32)) -> f32 {
    let dx = (x - r.0).min(r.2 - x);
    let dy = (y - r.1).min(r.3 - y);
    edge_coverage(dx.min(dy))
}

/// Coverage of a round-capped line from `a` to `b` with half-width `half_t`.
fn segment_coverage(x: f32, y: f32, a: (f32, f32), b: (f32, f32), half_t: f32) -> f32 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let len2 = abx * abx + aby * aby;
    let s = if len2 > 0.0 {
        (((x - a.0) * abx + (y - a.1) * aby) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (px, py) = (a.0 + s * abx - x, a.1 + s * aby - y);
    edge_coverage(half_t - (px * px + py * py).sqrt())
}

/// Evaluates `coverage` at every pixel centre within `bbox` (clipped to the
/// image) and blends `color` in by that amount.
///
/// One coverage-function primitive keeps every shape anti-aliased the same
/// way, and the clipping here is what makes odd and tiny sizes safe.
fn fill_shape(
    img: &mut RgbaImage,
    bbox: (f32, f32, f32, f32),
    color: [u8; 3],
    coverage: impl Fn(f32, f32) -> f32,
) {
    let x0 = bbox.0.floor().max(0.0) as u32;
    let y0 = bbox.1.floor().max(0.0) as u32;
    let x1 = (bbox.2.ceil().max(0.0) as u32).min(img.width());
    let y1 = (bbox.3.ceil().max(0.0) as u32).min(img.height());
    for y in y0..y1 {
        for x in x0..x1 {
            let c = coverage(x as f32 + 0.5, y as f32 + 0.5);
            blend(img, x as i64, y as i64, color, c);
        }
    }
}

/// Alpha-blends `color` over the pixel at (`x`, `y`); out-of-bounds
/// coordinates are ignored so callers can draw partially visible shapes.
fn blend(img: &mut RgbaImage, x: i64, y: i64, color: [u8; 3], coverage: f32) {
    if coverage <= 0.0 || x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 {
        return;
    }
    let a = coverage.min(1.0);
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (dst, src) in p.0.iter_mut().zip(color) {
        *dst = (*dst as f32 * (1.0 - a) + src as f32 * a).round() as u8;
    }
    // The background is opaque and stays so; slates are never composited
    // with transparency.
    p.0[3] = 255;
}

fn font() -> &'static FontRef<'static> {
    super::font()
}

/// Lays `text` out on a baseline at y = 0 starting at x = 0, returning the
/// outlines of the glyphs that have ink (spaces have none).
fn layout(text: &str, px: f32) -> Vec<OutlinedGlyph> {
    let font = font();
    let scaled = font.as_scaled(PxScale::from(px));
    let mut caret = 0.0;
    let mut prev = None;
    let mut out = Vec::new();
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(px, point(caret, 0.0));
        caret += scaled.h_advance(id);
        prev = Some(id);
        if let Some(outline) = font.outline_glyph(glyph) {
            out.push(outline);
        }
    }
    out
}

/// Pixel bounds (min x, min y, max x, max y) of the ink of laid-out glyphs.
fn ink_bounds(glyphs: &[OutlinedGlyph]) -> Option<(f32, f32, f32, f32)> {
    glyphs.iter().map(|g| g.px_bounds()).fold(None, |acc, b| {
        let (x0, y0, x1, y1) = acc.unwrap_or((b.min.x, b.min.y, b.max.x, b.max.y));
        Some((
            x0.min(b.min.x),
            y0.min(b.min.y),
            x1.max(b.max.x),
            y1.max(b.max.y),
        ))
    })
}

/// Width in pixels of the ink of `text` at `px` height.
///
/// Ink rather than advance width, because centring and fitting are about
/// what is visible: trailing side bearings would skew both.
fn text_width(text: &str, px: f32) -> f32 {
    ink_bounds(&layout(text, px)).map_or(0.0, |(x0, _, x1, _)| x1 - x0)
}

/// Largest pixel height up to `want_px` at which `text` is at most
/// `max_width` wide, or `None` if that would be below [`MIN_TEXT_PX`].
fn fit_px(text: &str, want_px: f32, max_width: f32) -> Option<f32> {
    let mut px = want_px;
    // Width is only roughly linear in px (hinting-free, but bounds are
    // rounded to whole pixels), so re-measure a few times.
    for _ in 0..4 {
        if px < MIN_TEXT_PX {
            return None;
        }
        let w = text_width(text, px);
        if w <= max_width {
            return Some(px);
        }
        px = (px * max_width / w).min(px * 0.95);
    }
    (px >= MIN_TEXT_PX && text_width(text, px) <= max_width).then_some(px)
}

/// Draws a secondary line: shrunk to fit if needed, and when even the
/// smallest legible size is too wide, shortened with an ellipsis.
fn draw_caption(img: &mut RgbaImage, text: &str, center_y: f32, want_px: f32, color: [u8; 3]) {
    let max_width = MAX_TEXT_WIDTH * img.width() as f32;
    if let Some(px) = fit_px(text, want_px, max_width) {
        draw_text_centered(img, text, center_y, px, color);
        return;
    }
    let px = want_px.min(MIN_TEXT_PX * 1.6);
    if px < MIN_TEXT_PX {
        return;
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (1..chars.len()).rev() {
        let mut short: String = chars[..keep]
            .iter()
            .collect::<String>()
            .trim_end()
            .to_owned();
        short.push('\u{2026}');
        if text_width(&short, px) <= max_width {
            draw_text_centered(img, &short, center_y, px, color);
            return;
        }
    }
}

/// Draws `text` with its ink box centred horizontally and on `center_y`.
///
/// Centring the ink (not the line box) keeps it within about
/// `center_y ± px_height / 2`, since a line's ink never exceeds DejaVu's
/// ascent-to-descent span, which is what `px_height` measures; the
/// top-band contract in the module docs relies on that.
fn draw_text_centered(
    img: &mut RgbaImage,
    text: &str,
    center_y: f32,
    px_height: f32,
    color: [u8; 3],
) {
    let glyphs = layout(text, px_height);
    let Some((x0, y0, x1, y1)) = ink_bounds(&glyphs) else {
        return;
    };
    // Whole-pixel offsets keep each glyph's rasterisation as laid out.
    let dx = ((img.width() as f32 - (x1 - x0)) / 2.0 - x0).round() as i64;
    let dy = (center_y - (y0 + y1) / 2.0).round() as i64;
    for g in &glyphs {
        let b = g.px_bounds();
        let (gx, gy) = (b.min.x as i64 + dx, b.min.y as i64 + dy);
        g.draw(|x, y, c| blend(img, gx + x as i64, gy + y as i64, color, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [SlateKind; 3] = [
        SlateKind::CameraOff,
        SlateKind::Intermission,
        SlateKind::Loading,
    ];

    fn is_bg(img: &RgbaImage, kind: SlateKind, x: u32, y: u32) -> bool {
        let [r, g, b] = background(kind);
        img.get_pixel(x, y).0 == [r, g, b, 255]
    }

    fn bg_fraction(img: &RgbaImage, kind: SlateKind) -> f64 {
        let n = img
            .enumerate_pixels()
            .filter(|(x, y, _)| is_bg(img, kind, *x, *y))
            .count();
        n as f64 / (img.width() as f64 * img.height() as f64)
    }

    const SIZES: [(u32, u32); 8] = [
        (160, 90),
        (320, 180),
        (640, 360),
        (1280, 720),
        (1920, 1080),
        (333, 187),
        (90, 160),
        (1000, 100),
    ];

    #[test]
    fn sizes_are_exact() {
        for kind in KINDS {
            for (w, h) in SIZES
                .into_iter()
                .chain([(0, 0), (0, 5), (1, 1), (2, 2), (7, 3)])
            {
                let img = render_with_caption(kind, w, h, "The Third Man (1949)");
                assert_eq!(img.dimensions(), (w, h), "{kind:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn background_dominates() {
        for kind in KINDS {
            for (w, h) in SIZES {
                for caption in ["", "a rather long caption naming the feature film"] {
                    let img = render_with_caption(kind, w, h, caption);
                    let f = bg_fraction(&img, kind);
                    assert!(
                        f >= 0.7,
                        "{kind:?} {w}x{h} {caption:?}: only {f:.3} background"
                    );
                }
            }
        }
    }

    #[test]
    fn output_is_opaque() {
        for kind in KINDS {
            let img = render_with_caption(kind, 640, 360, "caption");
            assert!(img.pixels().all(|p| p.0[3] == 255), "{kind:?}");
        }
    }

    #[test]
    fn top_band_and_probe_point_are_background() {
        for kind in KINDS {
            for (w, h) in SIZES.into_iter().chain([(1, 1), (2, 2), (5, 3), (17, 9)]) {
                for caption in ["", "Ågÿ jpq — descenders and accents"] {
                    let img = render_with_caption(kind, w, h, caption);
                    let (px, py) = probe_point(w, h);
                    assert!(is_bg(&img, kind, px, py), "{kind:?} {w}x{h} probe");
                    for y in 0..h / 5 {
                        for x in 0..w {
                            assert!(is_bg(&img, kind, x, y), "{kind:?} {w}x{h} ({x},{y})");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tiny_and_odd_sizes_do_not_panic() {
        for kind in KINDS {
            for w in 0..24 {
                for h in 0..24 {
                    render_with_caption(kind, w, h, "x");
                }
            }
            for (w, h) in [
                (1, 1000),
                (1000, 1),
                (3, 1079),
                (1921, 7),
                (161, 91),
                (4097, 3),
            ] {
                render_with_caption(kind, w, h, "caption");
            }
        }
    }

    #[test]
    fn text_draws_something() {
        for kind in KINDS {
            let img = render(kind, 640, 360);
            let f = bg_fraction(&img, kind);
            assert!(f < 0.99, "{kind:?}: nothing drawn ({f:.4} background)");
        }
    }

    #[test]
    fn caption_changes_the_image() {
        for kind in KINDS {
            let plain = render(kind, 640, 360);
            let captioned = render_with_caption(kind, 640, 360, "camera lost");
            assert_ne!(plain, captioned, "{kind:?}");
        }
    }

    #[test]
    fn overlong_caption_is_shortened_not_overflowing() {
        let long = "word ".repeat(200);
        let img = render_with_caption(SlateKind::Intermission, 320, 180, &long);
        // Captions are limited to the central MAX_TEXT_WIDTH, so the outer
        // columns stay background.
        for y in 0..180 {
            assert!(is_bg(&img, SlateKind::Intermission, 0, y));
            assert!(is_bg(&img, SlateKind::Intermission, 319, y));
        }
        assert_ne!(img, render(SlateKind::Intermission, 320, 180));
    }

    #[test]
    fn kinds_differ() {
        assert_ne!(
            background(SlateKind::CameraOff),
            background(SlateKind::Intermission)
        );
        assert_ne!(
            background(SlateKind::Loading),
            background(SlateKind::Intermission)
        );
        assert_ne!(
            background(SlateKind::Loading),
            background(SlateKind::CameraOff)
        );
        let a = render(SlateKind::CameraOff, 320, 180);
        let b = render(SlateKind::Intermission, 320, 180);
        assert_ne!(a, b);
    }

    #[test]
    fn text_width_scales_and_fits() {
        let small = text_width("Intermission", 20.0);
        let big = text_width("Intermission", 40.0);
        assert!(
            small > 0.0 && (big / small - 2.0).abs() < 0.15,
            "{small} {big}"
        );
        assert_eq!(text_width("   ", 40.0), 0.0);
        let px = fit_px("Intermission", 200.0, 300.0).expect("fits when shrunk");
        assert!(text_width("Intermission", px) <= 300.0);
        assert_eq!(fit_px("Intermission", 200.0, 10.0), None);
    }
}
