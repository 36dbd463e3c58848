//! The composite pipeline: slots → compositor and audio mixer → encoders → RTP appsinks (and the
//! optional recording). It is live and runs from start to shutdown without ever being rebuilt;
//! everything that changes reaches it through slots and pad properties.
//!
//! - [`mix`]: where pictures and sound enter, and the compositor and mixer;
//! - [`encode`]: the encoders, the RTP appsinks and the recording;
//! - here: the [`Canvas`] handle, which places the layers for a layout and shows the static
//!   pictures (backdrop with the chat panel, webcam border, slates).

mod encode;
mod mix;

use std::sync::Arc;

use gstreamer as gst;

use gst::prelude::*;

use super::layout::{Layout, Rect};
use super::output::{Media, Output};
use super::slot::Slot;
use super::{PipelineError, Settings};
use crate::gst_util;
use crate::overlay::{frames, slate};
pub use encode::EncodedOutputs;

/// Output frame rate of the composite.
pub const FPS: i32 = 30;

/// The format every audio feed is converted to before the mixer.
pub fn audio_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("rate", 48_000i32)
        .field("channels", 2i32)
        .field("layout", "interleaved")
        .build()
}

/// The running composite and the handles to steer it.
pub struct Canvas {
    /// The live pipeline.
    pub pipeline: gst::Pipeline,
    /// Canvas colour and chat panel.
    pub background: Arc<Slot>,
    /// Movie frames.
    pub movie: Arc<Slot>,
    /// The frame around the webcam.
    pub border: Arc<Slot>,
    /// Webcam frames or the camera-off slate.
    pub webcam: Arc<Slot>,
    /// Movie sound.
    pub movie_audio: Arc<Slot>,
    /// Microphone sound.
    pub mic: Arc<Slot>,
    /// Mixer pad of the movie, for volume and ducking.
    pub movie_audio_pad: gst::Pad,
    /// Mixer pad of the microphone, for mute.
    pub mic_pad: gst::Pad,
    /// The encoded streams.
    pub outputs: EncodedOutputs,
    /// Compositor pads, for placement on layout changes.
    background_pad: gst::Pad,
    movie_pad: gst::Pad,
    border_pad: gst::Pad,
    webcam_pad: gst::Pad,
    /// What fits the webcam to its rectangle.
    webcam_fit: mix::WebcamFit,
    /// The capsfilter that sets the canvas size.
    canvas_caps: gst::Element,
    /// The backdrop as the layout paints it (chat area plain), and where it sits; `None` when
    /// the movie covers the whole canvas.
    backdrop: Option<(Rect, image::RgbaImage)>,
    /// The chat panel drawn by the overlay, exactly the size of the layout's chat area.
    chat_panel: Option<image::RgbaImage>,
}

impl Canvas {
    /// Builds the composite for `layout`, encoding what `settings` ask (the `ladder`'s
    /// renditions in the `encoder` preset at `bitrate_kbps`, `record`, `timecode`).
    pub fn build(settings: &Settings, output: &Output) -> Result<Self, PipelineError> {
        let (layout, preset) = (&settings.layout, &settings.encoder);
        let encodes =
            settings
                .ladder
                .plan(preset, (layout.width, layout.height), settings.bitrate_kbps)?;
        let pipeline = gst::Pipeline::with_name("composite");
        let video = mix::video(&pipeline, layout)?;
        let audio = mix::audio(&pipeline)?;
        let outputs = encode::encode(
            &pipeline,
            (&video.out, &audio.out),
            &encodes,
            settings.record.as_deref(),
        )?;
        output.attach(&outputs.video_sink, Media::Video, &preset.codec);
        output.attach(&outputs.audio_sink, Media::Audio, &preset.codec);
        encode::count_frames(&outputs.encoder_src, output);
        if settings.timecode {
            super::timecode::stamp_on(&video.out.static_pad("src").expect("capsfilter src"));
        }
        Ok(Self {
            pipeline,
            background: video.background.slot,
            movie: video.movie.slot,
            border: video.border.slot,
            webcam: video.webcam.slot,
            movie_audio: audio.movie.slot,
            mic: audio.mic.slot,
            movie_audio_pad: audio.movie.pad,
            mic_pad: audio.mic.pad,
            outputs,
            background_pad: video.background.pad,
            movie_pad: video.movie.pad,
            border_pad: video.border.pad,
            webcam_pad: video.webcam.pad,
            webcam_fit: video.webcam_fit,
            canvas_caps: video.out,
            backdrop: None,
            chat_panel: None,
        })
    }

    /// Places every layer for `layout` and repaints the static ones. Safe while playing: the
    /// compositor picks up pad properties on its next frame.
    ///
    /// The chat panel is kept when it still fits the new chat area; otherwise the area shows
    /// the plain panel until the overlay draws one at the new size.
    pub fn apply_layout(&mut self, layout: &Layout) {
        // The compositor blends every layer on every frame, so the backdrop only covers what
        // the movie leaves uncovered (the movie feed letterboxes to its full rectangle).
        self.backdrop = backdrop(layout).map(|rect| {
            let full = layout_background(layout);
            let part = image::imageops::crop_imm(
                &full,
                rect.x as u32,
                rect.y as u32,
                rect.width,
                rect.height,
            )
            .to_image();
            (rect, part)
        });
        if !panel_fits(self.chat_panel.as_ref(), layout) {
            self.chat_panel = None;
        }
        match &self.backdrop {
            Some((rect, _)) => {
                place(&self.background_pad, *rect);
                self.background_pad.set_property("alpha", 1.0f64);
                self.show_backdrop(layout);
            }
            // A transparent pad costs the compositor nothing.
            None => self.background_pad.set_property("alpha", 0.0f64),
        }
        place(&self.movie_pad, layout.movie);
        place(&self.border_pad, layout.webcam);
        let inner = layout.webcam_inner();
        place(&self.webcam_pad, inner);
        show_picture(
            &self.border,
            frames::solid(
                layout.webcam.width,
                layout.webcam.height,
                layout.border_color,
            ),
        );
        self.webcam_fit.fit(inner, self.webcam.caps());
    }

    /// Shows `panel` in the chat area of `layout` (`None`: the plain panel). A panel drawn for
    /// another size (the layout changed while it was drawn) is dropped and the plain panel
    /// shows until the next one. Costs one copy of the backdrop and a buffer swap: the
    /// drawing itself happened elsewhere.
    pub fn set_chat_panel(&mut self, layout: &Layout, panel: Option<image::RgbaImage>) {
        if !panel_fits(panel.as_ref(), layout) {
            tracing::debug!("chat panel drawn for another layout; showing the plain panel");
            self.chat_panel = None;
        } else {
            self.chat_panel = panel;
        }
        self.show_backdrop(layout);
    }

    /// Pushes the backdrop with the chat panel, if any, over its chat area.
    fn show_backdrop(&self, layout: &Layout) {
        let Some((rect, plain)) = &self.backdrop else {
            return;
        };
        let frame = backdrop_frame(plain, *rect, self.chat_panel.as_ref().zip(layout.chat));
        show_picture(&self.background, frame);
    }

    /// Shows `kind` in the webcam rectangle of `layout`.
    pub fn show_webcam_slate(&self, layout: &Layout, kind: slate::SlateKind) {
        let inner = layout.webcam_inner();
        show_picture(&self.webcam, slate::render(kind, inner.width, inner.height));
    }

    /// Shows `kind` in the movie rectangle of `layout`.
    pub fn show_movie_slate(&self, layout: &Layout, kind: slate::SlateKind, caption: &str) {
        let r = layout.movie;
        show_picture(
            &self.movie,
            slate::render_with_caption(kind, r.width, r.height, caption),
        );
    }

    /// Sets the canvas size (a layout may use another canvas).
    pub fn set_canvas(&self, layout: &Layout) {
        self.canvas_caps.set_property("caps", canvas_caps(layout));
    }
}

/// The canvas as `layout` paints it: its colour, and the chat area plain.
fn layout_background(layout: &Layout) -> image::RgbaImage {
    frames::background(
        layout.width,
        layout.height,
        layout.background,
        layout.chat.map(|chat| (chat, layout.chat_background)),
    )
}

/// The backdrop `plain`, which sits at `rect` on the canvas, with a chat panel copied over
/// its chat area (in canvas coordinates) when there is one.
fn backdrop_frame(
    plain: &image::RgbaImage,
    rect: Rect,
    panel: Option<(&image::RgbaImage, Rect)>,
) -> image::RgbaImage {
    let mut frame = plain.clone();
    if let Some((panel, chat)) = panel {
        // The backdrop starts at `rect`, not at the canvas origin; `replace` clips.
        image::imageops::replace(
            &mut frame,
            panel,
            i64::from(chat.x) - i64::from(rect.x),
            i64::from(chat.y) - i64::from(rect.y),
        );
    }
    frame
}

/// Whether `panel` (when there is one) is exactly the size of `layout`'s chat area.
fn panel_fits(panel: Option<&image::RgbaImage>, layout: &Layout) -> bool {
    match (panel, layout.chat) {
        (None, _) => true,
        (Some(panel), Some(chat)) => panel.dimensions() == (chat.width, chat.height),
        (Some(_), None) => false,
    }
}

/// The part of the canvas the movie does not cover, as one rectangle; `None` when the movie
/// covers it all. Falls back to the whole canvas when the uncovered part is not a rectangle.
pub fn backdrop(layout: &Layout) -> Option<Rect> {
    let (w, h) = (layout.width, layout.height);
    let m = layout.movie;
    let full_height = m.y == 0 && m.height == h;
    let full_width = m.x == 0 && m.width == w;
    let rect = |x: u32, y: u32, width: u32, height: u32| Rect {
        x: x as i32,
        y: y as i32,
        width,
        height,
    };
    match (full_width, full_height) {
        (true, true) => None,
        (false, true) if m.x == 0 => Some(rect(m.width, 0, w - m.width, h)),
        (false, true) if m.x as u32 + m.width == w => Some(rect(0, 0, m.x as u32, h)),
        (true, false) if m.y == 0 => Some(rect(0, m.height, w, h - m.height)),
        (true, false) if m.y as u32 + m.height == h => Some(rect(0, 0, w, m.y as u32)),
        _ => Some(rect(0, 0, w, h)),
    }
}

/// The composite's own format: the canvas size at [`FPS`].
fn canvas_caps(layout: &Layout) -> gst::Caps {
    let mut caps = frame_caps("I420", layout.width, layout.height);
    caps.make_mut().set("framerate", gst::Fraction::new(FPS, 1));
    caps
}

/// Raw video of one size in the canvas's colorimetry. Every layer is converted to exactly
/// this once, where it enters: layers that differ from the canvas (BT.601 is GStreamer's
/// default for small pictures) would otherwise be converted again on every output frame.
pub fn frame_caps(format: &str, width: u32, height: u32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", format)
        .field("width", width as i32)
        .field("height", height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .field("colorimetry", "bt709")
        .field("chroma-site", "mpeg2")
        .build()
}

/// Shows `img` in `slot` until something else is shown.
fn show_picture(slot: &Slot, img: image::RgbaImage) {
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGBA")
        .field("width", img.width() as i32)
        .field("height", img.height() as i32)
        .field("framerate", gst::Fraction::new(0, 1))
        .build();
    slot.show(&caps, gst::Buffer::from_mut_slice(img.into_raw()));
}

fn place(pad: &gst::Pad, rect: Rect) {
    pad.set_property("xpos", rect.x);
    pad.set_property("ypos", rect.y);
    pad.set_property("width", rect.width as i32);
    pad.set_property("height", rect.height as i32);
}

/// A queue that holds up to a second, however many buffers or bytes that is.
fn queue(name: &str) -> Result<gst::Element, PipelineError> {
    Ok(gst_util::make_with("queue", |b| {
        b.name(name)
            .property("max-size-buffers", 0u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", gst::ClockTime::SECOND.nseconds())
    })?)
}

#[cfg(test)]
mod tests {
    use super::{backdrop, backdrop_frame, panel_fits};
    use crate::pipeline::layout::{Layout, Rect};

    #[test]
    fn backdrop_is_what_the_movie_leaves_uncovered() {
        let side = Layout::builtin("side-panel").unwrap();
        assert_eq!(
            backdrop(&side),
            Some(Rect {
                x: 960,
                y: 0,
                width: 320,
                height: 720
            })
        );
        assert_eq!(backdrop(&Layout::builtin("inset").unwrap()), None);
        let mut odd = side.clone();
        odd.movie = Rect {
            x: 10,
            y: 10,
            width: 600,
            height: 400,
        };
        assert_eq!(
            backdrop(&odd),
            Some(Rect {
                x: 0,
                y: 0,
                width: 1280,
                height: 720
            })
        );
    }

    #[test]
    fn chat_panel_lands_on_the_chat_area_of_the_backdrop() {
        let side = Layout::builtin("side-panel").unwrap();
        let rect = backdrop(&side).unwrap();
        let chat = side.chat.unwrap();
        let area = side.chat_area().unwrap();
        assert_eq!((area.width, area.height), (chat.width, chat.height));
        assert_eq!(Layout::builtin("inset").unwrap().chat_area(), None);

        let plain = super::layout_background(&side);
        let plain = image::imageops::crop_imm(
            &plain,
            rect.x as u32,
            rect.y as u32,
            rect.width,
            rect.height,
        )
        .to_image();
        let mut panel =
            image::RgbaImage::from_pixel(chat.width, chat.height, image::Rgba([255, 0, 0, 255]));
        panel.put_pixel(0, 0, image::Rgba([0, 255, 0, 255]));
        let frame = backdrop_frame(&plain, rect, Some((&panel, chat)));
        assert_eq!(frame.dimensions(), plain.dimensions());
        // The panel's corner is the chat area's corner, relative to the backdrop.
        let (cx, cy) = ((chat.x - rect.x) as u32, (chat.y - rect.y) as u32);
        assert_eq!(frame.get_pixel(cx, cy).0, [0, 255, 0, 255]);
        assert_eq!(frame.get_pixel(cx + 1, cy + 1).0, [255, 0, 0, 255]);
        // Above the chat area (behind the webcam) the backdrop is untouched.
        assert_eq!(frame.get_pixel(cx, cy - 1), plain.get_pixel(cx, cy - 1));
        assert_eq!(backdrop_frame(&plain, rect, None), plain);

        assert!(panel_fits(Some(&panel), &side));
        assert!(!panel_fits(
            Some(&panel),
            &Layout::builtin("inset").unwrap()
        ));
        let small = image::RgbaImage::new(10, 10);
        assert!(!panel_fits(Some(&small), &side));
        assert!(panel_fits(None, &side));
    }
}
