//! The start of the composite: where pictures and sound enter (slots), and the compositor and
//! audio mixer that put them together. Four video layers, bottom to top: the backdrop (canvas
//! colour and chat panel), the movie, the webcam's border and the webcam, scaled and cropped to
//! its rectangle on the way in. Two sounds: the movie's and the mic's, over a live silence.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use gst::prelude::*;

use super::{audio_caps, canvas_caps, queue};
use crate::gst_util;
use crate::pipeline::PipelineError;
use crate::pipeline::layout::{Layout, Rect};
use crate::pipeline::slot::{CapsHook, Slot};
use crate::util::lock::Locked;

/// Extra time the mixers wait for their inputs: covers the jitter of feeds re-timestamped on
/// arrival, so no audio is dropped as late.
const MIXER_LATENCY: gst::ClockTime = gst::ClockTime::from_mseconds(40);

/// Z-order of the layers, bottom to top.
mod z {
    pub const BACKGROUND: u32 = 0;
    pub const MOVIE: u32 = 1;
    pub const BORDER: u32 = 2;
    pub const WEBCAM: u32 = 3;
}

/// An input of the compositor or the mixer: the slot pictures or sound are pushed into, and
/// the aggregator pad it arrives on (placement, volume, mute).
pub struct Input {
    /// Where the picture or sound is pushed.
    pub slot: Arc<Slot>,
    /// The compositor's or mixer's pad for it.
    pub pad: gst::Pad,
}

/// The compositor and its four layers.
pub struct VideoMix {
    /// The composite picture, out of the capsfilter that sets the canvas size and rate.
    pub out: gst::Element,
    /// Canvas colour and chat panel.
    pub background: Input,
    /// Movie frames.
    pub movie: Input,
    /// The frame around the webcam.
    pub border: Input,
    /// Webcam frames or the camera-off slate.
    pub webcam: Input,
    /// What fits the webcam to its rectangle.
    pub webcam_fit: WebcamFit,
}

/// The audio mixer and its two inputs.
pub struct AudioMix {
    /// The mixed sound.
    pub out: gst::Element,
    /// Movie sound.
    pub movie: Input,
    /// Microphone sound.
    pub mic: Input,
}

/// Builds the compositor for `layout` in `pipeline`.
pub fn video(pipeline: &gst::Pipeline, layout: &Layout) -> Result<VideoMix, PipelineError> {
    let compositor = gst_util::make_with("compositor", |b| {
        b.name("compositor")
            .property_from_str("background", "black")
            .property("latency", MIXER_LATENCY.nseconds())
    })?;
    let out = gst_util::make_with("capsfilter", |b| {
        b.name("canvas-caps").property("caps", canvas_caps(layout))
    })?;
    gst_util::add_chain(pipeline, &[&compositor, &out]).map_err(PipelineError::internal)?;
    let layer =
        |name: &str, zorder: u32| video_slot(pipeline, &compositor, name, zorder, &[], None);
    let background = layer("background", z::BACKGROUND)?;
    let movie = layer("movie", z::MOVIE)?;
    movie
        .pad
        .set_property_from_str("sizing-policy", "keep-aspect-ratio");
    let border = layer("border", z::BORDER)?;
    let webcam_fit = WebcamFit::new(layout.webcam_inner())?;
    let webcam = video_slot(
        pipeline,
        &compositor,
        "webcam",
        z::WEBCAM,
        &[&webcam_fit.crop, &webcam_fit.scale, &webcam_fit.size],
        Some(webcam_fit.crop_hook()),
    )?;
    Ok(VideoMix {
        out,
        background,
        movie,
        border,
        webcam,
        webcam_fit,
    })
}

/// Builds the audio mixer in `pipeline`. A live silence keeps it producing even with no movie
/// sound and no mic.
pub fn audio(pipeline: &gst::Pipeline) -> Result<AudioMix, PipelineError> {
    let mixer = gst_util::make_with("audiomixer", |b| {
        b.name("mixer")
            .property("latency", MIXER_LATENCY.nseconds())
    })?;
    let silence = gst_util::make_with("audiotestsrc", |b| {
        b.name("silence")
            .property("is-live", true)
            .property_from_str("wave", "silence")
            .property("samplesperbuffer", 480i32)
    })?;
    let silence_caps = gst_util::capsfilter(&audio_caps())?;
    // The queue gives the live source a maximum latency, without which the mixer cannot
    // configure its own.
    let silence_queue = queue("silence-queue")?;
    gst_util::add_chain(pipeline, &[&silence, &silence_caps, &silence_queue, &mixer])
        .map_err(PipelineError::internal)?;
    Ok(AudioMix {
        movie: audio_slot(pipeline, &mixer, "movie-audio")?,
        mic: audio_slot(pipeline, &mixer, "mic")?,
        out: mixer,
    })
}

/// Crops the webcam to the aspect ratio of its rectangle and scales it to the rectangle's
/// size, once per camera frame, rather than letting the compositor scale it every frame.
pub struct WebcamFit {
    /// Centre crop.
    crop: gst::Element,
    scale: gst::Element,
    /// The size of the rectangle.
    size: gst::Element,
    /// The rectangle's size, shared with the crop hook that runs when the camera's size
    /// changes.
    target: Arc<Mutex<(u32, u32)>>,
}

impl WebcamFit {
    fn new(inner: Rect) -> Result<Self, PipelineError> {
        Ok(Self {
            crop: gst_util::make_with("videocrop", |b| b.name("webcam-crop"))?,
            scale: gst_util::make("videoscale")?,
            size: gst_util::make_with("capsfilter", |b| {
                b.name("webcam-size").property("caps", sized(inner))
            })?,
            target: Arc::new(Mutex::new((inner.width, inner.height))),
        })
    }

    /// Crops again for the new camera size.
    fn crop_hook(&self) -> CapsHook {
        let crop = self.crop.clone();
        let target = self.target.clone();
        Box::new(move |caps: &gst::Caps| {
            let target = *target.locked();
            apply_crop(&crop, caps, target);
        })
    }

    /// Fits the webcam to `inner`; `caps` are the camera's current ones, if it sent any.
    pub fn fit(&self, inner: Rect, caps: Option<gst::Caps>) {
        let target = (inner.width, inner.height);
        *self.target.locked() = target;
        self.size.set_property("caps", sized(inner));
        if let Some(caps) = caps {
            apply_crop(&self.crop, &caps, target);
        }
    }
}

/// Raw video of `rect`'s size, any format.
fn sized(rect: Rect) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("width", rect.width as i32)
        .field("height", rect.height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}

/// Crops the webcam picture to the aspect ratio of its rectangle, centred, so the compositor's
/// scaling fills the rectangle without distortion.
fn apply_crop(crop: &gst::Element, caps: &gst::Caps, target: (u32, u32)) {
    let Ok(info) = gst_video::VideoInfo::from_caps(caps) else {
        return;
    };
    let (l, r, t, b) = centre_crop(info.width(), info.height(), target.0, target.1);
    crop.set_property("left", l as i32);
    crop.set_property("right", r as i32);
    crop.set_property("top", t as i32);
    crop.set_property("bottom", b as i32);
}

/// Pixels to cut from (left, right, top, bottom) of a `w`×`h` picture to reach the aspect
/// ratio `tw`:`th`. Kept even so I420 chroma stays aligned.
pub fn centre_crop(w: u32, h: u32, tw: u32, th: u32) -> (u32, u32, u32, u32) {
    if w == 0 || h == 0 || tw == 0 || th == 0 {
        return (0, 0, 0, 0);
    }
    let (w64, h64, tw64, th64) = (u64::from(w), u64::from(h), u64::from(tw), u64::from(th));
    if w64 * th64 > h64 * tw64 {
        // Too wide: cut the sides.
        let (first, second) = halves(w - (h64 * tw64 / th64) as u32);
        (first, second, 0, 0)
    } else {
        let (first, second) = halves(h - (w64 * th64 / tw64) as u32);
        (0, 0, first, second)
    }
}

/// Splits an amount to cut into two even parts.
fn halves(cut: u32) -> (u32, u32) {
    let cut = cut & !1;
    let first = (cut / 2) & !1;
    (first, cut - first)
}

/// appsrc → [extra…] → I420 → compositor pad at `zorder`.
fn video_slot(
    pipeline: &gst::Pipeline,
    compositor: &gst::Element,
    name: &str,
    zorder: u32,
    extra: &[&gst::Element],
    hook: Option<CapsHook>,
) -> Result<Input, PipelineError> {
    let appsrc = gst_app::AppSrc::builder()
        .name(format!("{name}-src"))
        .build();
    // Slates and layers arrive as RGBA; converting once per new frame here is far cheaper than
    // the compositor converting the same frame for every output frame.
    let convert = gst_util::make("videoconvert")?;
    let caps = gst_util::capsfilter(
        &gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("colorimetry", "bt709")
            .field("chroma-site", "mpeg2")
            .build(),
    )?;
    let mut chain: Vec<&gst::Element> = vec![appsrc.upcast_ref()];
    chain.extend_from_slice(extra);
    chain.push(&convert);
    chain.push(&caps);
    gst_util::add_chain(pipeline, &chain).map_err(PipelineError::internal)?;
    let pad = link_to_aggregator(&caps, compositor)?;
    pad.set_property("zorder", zorder);
    let slot = Arc::new(Slot::new(appsrc, pipeline, true, hook));
    Ok(Input { slot, pad })
}

/// appsrc → audiomixer pad.
fn audio_slot(
    pipeline: &gst::Pipeline,
    mixer: &gst::Element,
    name: &str,
) -> Result<Input, PipelineError> {
    let appsrc = gst_app::AppSrc::builder()
        .name(format!("{name}-src"))
        .caps(&audio_caps())
        .build();
    pipeline.add(&appsrc).map_err(PipelineError::internal)?;
    let pad = link_to_aggregator(appsrc.upcast_ref(), mixer)?;
    let slot = Arc::new(Slot::new(appsrc, pipeline, false, None));
    Ok(Input { slot, pad })
}

/// Links `upstream` to a new sink pad of the compositor or mixer, returning that pad.
fn link_to_aggregator(
    upstream: &gst::Element,
    aggregator: &gst::Element,
) -> Result<gst::Pad, PipelineError> {
    let pad = aggregator
        .request_pad_simple("sink_%u")
        .ok_or_else(|| PipelineError::Internal(format!("{} refused a pad", aggregator.name())))?;
    upstream
        .static_pad("src")
        .expect("the last element of a slot has a src pad")
        .link(&pad)
        .map_err(PipelineError::internal)?;
    Ok(pad)
}

#[cfg(test)]
mod tests {
    use super::centre_crop;

    #[test]
    fn crop_keeps_the_centre_at_the_target_ratio() {
        // 4:3 camera into a 16:9 rectangle: cut top and bottom.
        let (l, r, t, b) = centre_crop(640, 480, 316, 176);
        assert_eq!((l, r), (0, 0));
        assert!(t.abs_diff(b) <= 2);
        let kept = 480 - t - b;
        assert!((640.0 / kept as f64 - 316.0 / 176.0).abs() < 0.02);
        // Wide camera into a square: cut the sides.
        let (l, r, t, b) = centre_crop(1280, 720, 100, 100);
        assert_eq!((t, b), (0, 0));
        assert_eq!(1280 - l - r, 720);
        assert_eq!(centre_crop(0, 0, 1, 1), (0, 0, 0, 0));
    }
}
