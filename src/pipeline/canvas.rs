//! The composite pipeline: slots → compositor and audio mixer → encoders → RTP appsinks (and the
//! optional recording). It is live and runs from start to shutdown without ever being rebuilt;
//! everything that changes reaches it through slots and pad properties.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use gst::prelude::*;

use super::PipelineError;
use super::layout::{Color, Layout, Rect};
use super::output::{Media, Output, RtpCodec};
use super::presets::EncoderPreset;
use super::slot::Slot;
use crate::overlay::{frames, slate};

/// Output frame rate of the composite.
pub const FPS: i32 = 30;

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

/// The format every audio feed is converted to before the mixer.
pub fn audio_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("rate", 48_000i32)
        .field("channels", 2i32)
        .field("layout", "interleaved")
        .build()
}

/// Creates an element, naming the missing plugin when it is not installed.
pub fn make(factory: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        PipelineError::MissingPlugin(format!(
            "GStreamer element `{factory}` is not installed (see the README's package list)"
        ))
    })
}

/// Where the composite ends: the encoded streams.
pub struct EncodedOutputs {
    /// The video payloader's appsink (its caps give the codec parameters).
    pub video_sink: gst_app::AppSink,
    /// The audio payloader's appsink.
    pub audio_sink: gst_app::AppSink,
    /// Upstream force-key-unit events are sent here.
    pub encoder_src: gst::Pad,
    /// What the preset says about the video stream before negotiation.
    pub video_codec: RtpCodec,
    /// Opus, before negotiation.
    pub audio_codec: RtpCodec,
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
    /// Compositor pads, for placement on layout changes.
    background_pad: gst::Pad,
    movie_pad: gst::Pad,
    border_pad: gst::Pad,
    webcam_pad: gst::Pad,
    /// Mixer pads, for ducking and mute.
    pub movie_audio_pad: gst::Pad,
    /// Mixer pad of the microphone.
    pub mic_pad: gst::Pad,
    /// The aspect ratio the webcam is cropped to, shared with the crop hook.
    webcam_target: Arc<Mutex<(u32, u32)>>,
    /// Centre crop of the webcam.
    webcam_crop: gst::Element,
    /// The encoded streams.
    pub outputs: EncodedOutputs,
    /// The backdrop as the layout paints it (chat area plain), and where it sits; `None` when
    /// the movie covers the whole canvas.
    backdrop: Option<(Rect, image::RgbaImage)>,
    /// The chat panel drawn by the overlay, exactly the size of the layout's chat area.
    chat_panel: Option<image::RgbaImage>,
}

/// The chat area of a layout, as the chat overlay needs it to draw a panel that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatArea {
    /// Width of the panel to draw, in pixels.
    pub width: u32,
    /// Height of the panel to draw.
    pub height: u32,
    /// The colour behind the chat, so the drawn panel matches the plain one.
    pub background: Color,
}

impl ChatArea {
    /// The chat area of `layout`, or `None` when it shows no chat.
    pub fn of(layout: &Layout) -> Option<ChatArea> {
        layout.chat.map(|chat| ChatArea {
            width: chat.width,
            height: chat.height,
            background: layout.chat_background,
        })
    }
}

impl Canvas {
    /// Builds the composite for `layout`, encoding with `preset`; `record` adds a Matroska
    /// recording of the very same encoded streams.
    pub fn build(
        layout: &Layout,
        preset: &EncoderPreset,
        bitrate_kbps: u32,
        record: Option<&Path>,
        timecode: bool,
        output: &Output,
    ) -> Result<Self, PipelineError> {
        let pipeline = gst::Pipeline::with_name("composite");

        // Video: four layers into the compositor.
        let compositor = gst::ElementFactory::make("compositor")
            .name("compositor")
            .property_from_str("background", "black")
            .property("latency", MIXER_LATENCY.nseconds())
            .build()
            .map_err(|_| missing("compositor"))?;
        let canvas_caps = gst::ElementFactory::make("capsfilter")
            .name("canvas-caps")
            .property("caps", canvas_caps(layout))
            .build()
            .map_err(|_| missing("capsfilter"))?;
        pipeline
            .add_many([&compositor, &canvas_caps])
            .map_err(internal)?;
        compositor.link(&canvas_caps).map_err(internal)?;

        let (background, background_pad) = video_slot(
            &pipeline,
            &compositor,
            "background",
            z::BACKGROUND,
            &[],
            None,
        )?;
        let (movie, movie_pad) = video_slot(&pipeline, &compositor, "movie", z::MOVIE, &[], None)?;
        movie_pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
        let (border, border_pad) =
            video_slot(&pipeline, &compositor, "border", z::BORDER, &[], None)?;

        let webcam_crop = gst::ElementFactory::make("videocrop")
            .name("webcam-crop")
            .build()
            .map_err(|_| missing("videocrop"))?;
        let webcam_target = Arc::new(Mutex::new((
            layout.webcam_inner().width,
            layout.webcam_inner().height,
        )));
        let hook = {
            let crop = webcam_crop.clone();
            let target = webcam_target.clone();
            Box::new(move |caps: &gst::Caps| {
                let target = *target.lock().unwrap();
                apply_crop(&crop, caps, target);
            })
        };
        // Scaled to its rectangle here, once per camera frame, rather than by the compositor.
        let webcam_scale = make("videoscale")?;
        let webcam_size = gst::ElementFactory::make("capsfilter")
            .name(WEBCAM_SIZE)
            .property("caps", sized(layout.webcam_inner()))
            .build()
            .map_err(|_| missing("capsfilter"))?;
        let (webcam, webcam_pad) = video_slot(
            &pipeline,
            &compositor,
            "webcam",
            z::WEBCAM,
            &[&webcam_crop, &webcam_scale, &webcam_size],
            Some(hook),
        )?;

        // Audio: a live silence keeps the mixer producing even with no movie sound and no mic.
        let mixer = gst::ElementFactory::make("audiomixer")
            .name("mixer")
            .property("latency", MIXER_LATENCY.nseconds())
            .build()
            .map_err(|_| missing("audiomixer"))?;
        let silence = gst::ElementFactory::make("audiotestsrc")
            .name("silence")
            .property("is-live", true)
            .property_from_str("wave", "silence")
            .property("samplesperbuffer", 480i32)
            .build()
            .map_err(|_| missing("audiotestsrc"))?;
        let silence_caps = capsfilter(&audio_caps())?;
        // The queue gives the live source a maximum latency, without which the mixer cannot
        // configure its own.
        let silence_queue = queue("silence-queue")?;
        pipeline
            .add_many([&mixer, &silence, &silence_caps, &silence_queue])
            .map_err(internal)?;
        gst::Element::link_many([&silence, &silence_caps, &silence_queue, &mixer])
            .map_err(internal)?;
        let (movie_audio, movie_audio_pad) = audio_slot(&pipeline, &mixer, "movie-audio")?;
        let (mic, mic_pad) = audio_slot(&pipeline, &mixer, "mic")?;

        let outputs = encode(
            &pipeline,
            &canvas_caps,
            &mixer,
            preset,
            bitrate_kbps,
            record,
        )?;
        output.attach(&outputs.video_sink, Media::Video);
        output.attach(&outputs.audio_sink, Media::Audio);
        count_frames(&outputs.encoder_src, output);
        if timecode {
            super::timecode::stamp_on(&canvas_caps.static_pad("src").expect("capsfilter src"));
        }

        let canvas = Self {
            pipeline,
            background,
            movie,
            border,
            webcam,
            movie_audio,
            mic,
            background_pad,
            movie_pad,
            border_pad,
            webcam_pad,
            movie_audio_pad,
            mic_pad,
            webcam_target,
            webcam_crop,
            outputs,
            backdrop: None,
            chat_panel: None,
        };
        Ok(canvas)
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
        self.border.show(
            &rgba_caps(layout.webcam.width, layout.webcam.height),
            rgba_buffer(frames::solid(
                layout.webcam.width,
                layout.webcam.height,
                layout.border_color,
            )),
        );
        *self.webcam_target.lock().unwrap() = (inner.width, inner.height);
        if let Some(size) = self.pipeline.by_name(WEBCAM_SIZE) {
            size.set_property("caps", sized(inner));
        }
        if let Some(caps) = self.webcam.caps() {
            apply_crop(&self.webcam_crop, &caps, (inner.width, inner.height));
        }
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
        self.background
            .show(&rgba_caps(rect.width, rect.height), rgba_buffer(frame));
    }

    /// Shows `kind` in the webcam rectangle of `layout`.
    pub fn show_webcam_slate(&self, layout: &Layout, kind: slate::SlateKind) {
        let inner = layout.webcam_inner();
        let img = slate::render(kind, inner.width, inner.height);
        self.webcam
            .show(&rgba_caps(inner.width, inner.height), rgba_buffer(img));
    }

    /// Shows `kind` in the movie rectangle of `layout`.
    pub fn show_movie_slate(&self, layout: &Layout, kind: slate::SlateKind, caption: &str) {
        let r = layout.movie;
        let img = slate::render_with_caption(kind, r.width, r.height, caption);
        self.movie
            .show(&rgba_caps(r.width, r.height), rgba_buffer(img));
    }

    /// Sets the canvas size (a layout may use another canvas).
    pub fn set_canvas(&self, layout: &Layout) {
        if let Some(caps) = self.pipeline.by_name("canvas-caps") {
            caps.set_property("caps", canvas_caps(layout));
        }
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

/// Name of the capsfilter that sizes the webcam.
const WEBCAM_SIZE: &str = "webcam-size";

/// Raw video of `rect`'s size, any format.
fn sized(rect: Rect) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("width", rect.width as i32)
        .field("height", rect.height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
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

fn rgba_caps(width: u32, height: u32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "RGBA")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("framerate", gst::Fraction::new(0, 1))
        .build()
}

fn rgba_buffer(img: image::RgbaImage) -> gst::Buffer {
    gst::Buffer::from_mut_slice(img.into_raw())
}

fn place(pad: &gst::Pad, rect: Rect) {
    pad.set_property("xpos", rect.x);
    pad.set_property("ypos", rect.y);
    pad.set_property("width", rect.width as i32);
    pad.set_property("height", rect.height as i32);
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

/// appsrc → [extra…] → compositor pad at `zorder`.
fn video_slot(
    pipeline: &gst::Pipeline,
    compositor: &gst::Element,
    name: &str,
    zorder: u32,
    extra: &[&gst::Element],
    hook: Option<super::slot::CapsHook>,
) -> Result<(Arc<Slot>, gst::Pad), PipelineError> {
    let appsrc = gst_app::AppSrc::builder()
        .name(format!("{name}-src"))
        .build();
    // Slates and layers arrive as RGBA; converting once per new frame here is far cheaper than
    // the compositor converting the same frame for every output frame.
    let convert = make("videoconvert")?;
    let caps = capsfilter(
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
    pipeline.add_many(chain.iter().copied()).map_err(internal)?;
    gst::Element::link_many(chain.iter().copied()).map_err(internal)?;
    let pad = link_to_aggregator(&caps, compositor)?;
    pad.set_property("zorder", zorder);
    let slot = Arc::new(Slot::new(appsrc, pipeline, true, hook));
    Ok((slot, pad))
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
        .map_err(internal)?;
    Ok(pad)
}

/// appsrc → audiomixer pad.
fn audio_slot(
    pipeline: &gst::Pipeline,
    mixer: &gst::Element,
    name: &str,
) -> Result<(Arc<Slot>, gst::Pad), PipelineError> {
    let appsrc = gst_app::AppSrc::builder()
        .name(format!("{name}-src"))
        .caps(&audio_caps())
        .build();
    pipeline.add(&appsrc).map_err(internal)?;
    let pad = link_to_aggregator(appsrc.upcast_ref(), mixer)?;
    let slot = Arc::new(Slot::new(appsrc, pipeline, false, None));
    Ok((slot, pad))
}

/// The encoders, payloaders and appsinks, plus the recorder when asked.
fn encode(
    pipeline: &gst::Pipeline,
    video_in: &gst::Element,
    audio_in: &gst::Element,
    preset: &EncoderPreset,
    bitrate_kbps: u32,
    record: Option<&Path>,
) -> Result<EncodedOutputs, PipelineError> {
    let parse = |what: &str, desc: &str| {
        gst::parse::bin_from_description(desc, true).map_err(|e| {
            PipelineError::Config(format!(
                "encoder preset {} ({what} `{desc}`): {e}",
                preset.name
            ))
        })
    };
    let vqueue = queue("video-encode-queue")?;
    let encoder = parse(
        "encoder",
        &preset.encoder_description(bitrate_kbps, FPS as u32),
    )?;
    encoder.set_property("name", "video-encoder");
    let encoded_caps = gst::Caps::from_str_checked(&preset.caps, &preset.name)?;
    let vcaps = capsfilter(&encoded_caps)?;
    let vtee = gst::ElementFactory::make("tee")
        .name("video-tee")
        .build()
        .map_err(|_| missing("tee"))?;
    let vpay_queue = queue("video-pay-queue")?;
    let payloader = parse("payloader", &preset.payloader)?;
    payloader.set_property("name", "video-payloader");
    set_payload_type(&payloader, preset.payload_type);
    let video_sink = rtp_sink("video-rtp")?;
    pipeline
        .add_many([
            vqueue.upcast_ref(),
            encoder.upcast_ref(),
            &vcaps,
            &vtee,
            &vpay_queue,
            payloader.upcast_ref(),
            video_sink.upcast_ref(),
        ])
        .map_err(internal)?;
    gst::Element::link_many([
        video_in,
        &vqueue,
        encoder.upcast_ref(),
        &vcaps,
        &vtee,
        &vpay_queue,
        payloader.upcast_ref(),
        video_sink.upcast_ref(),
    ])
    .map_err(|_| {
        PipelineError::Config(format!(
            "encoder preset {}: its elements do not link (check `caps`)",
            preset.name
        ))
    })?;

    let aconvert = make("audioconvert")?;
    let aresample = make("audioresample")?;
    let opus_caps = capsfilter(
        &gst::Caps::builder("audio/x-raw")
            .field("rate", 48_000i32)
            .field("channels", 2i32)
            .build(),
    )?;
    let opus = gst::ElementFactory::make("opusenc")
        .name("audio-encoder")
        .property("bitrate", 128_000i32)
        .property_from_str("frame-size", "20")
        .build()
        .map_err(|_| missing("opusenc"))?;
    let atee = gst::ElementFactory::make("tee")
        .name("audio-tee")
        .build()
        .map_err(|_| missing("tee"))?;
    let apay_queue = queue("audio-pay-queue")?;
    let apay = gst::ElementFactory::make("rtpopuspay")
        .name("audio-payloader")
        .property("pt", 111u32)
        .build()
        .map_err(|_| missing("rtpopuspay"))?;
    let audio_sink = rtp_sink("audio-rtp")?;
    let audio_chain = [
        &aconvert,
        &aresample,
        &opus_caps,
        &opus,
        &atee,
        &apay_queue,
        &apay,
        audio_sink.upcast_ref(),
    ];
    pipeline.add_many(audio_chain).map_err(internal)?;
    audio_in.link(&aconvert).map_err(internal)?;
    gst::Element::link_many(audio_chain).map_err(internal)?;

    if let Some(path) = record {
        add_recorder(pipeline, &vtee, &atee, preset, path)?;
    }

    let encoder_src = encoder
        .static_pad("src")
        .expect("encoder bin has a src pad");
    Ok(EncodedOutputs {
        video_sink,
        audio_sink,
        encoder_src,
        video_codec: RtpCodec {
            encoding_name: preset.codec.clone(),
            clock_rate: preset.clock_rate,
            payload_type: preset.payload_type,
            channels: None,
            fmtp: None,
        },
        audio_codec: RtpCodec {
            encoding_name: "OPUS".into(),
            clock_rate: 48_000,
            payload_type: 111,
            channels: Some(2),
            fmtp: Some("minptime=10;useinbandfec=1".into()),
        },
    })
}

/// tee → queue → parser → matroskamux → filesink, for both streams: no second encode.
fn add_recorder(
    pipeline: &gst::Pipeline,
    vtee: &gst::Element,
    atee: &gst::Element,
    preset: &EncoderPreset,
    path: &Path,
) -> Result<(), PipelineError> {
    let vqueue = queue("record-video-queue")?;
    let vparse = gst::parse::bin_from_description(&preset.parser, true).map_err(|e| {
        PipelineError::Config(format!("encoder preset {} (parser): {e}", preset.name))
    })?;
    let aqueue = queue("record-audio-queue")?;
    let aparse = make("opusparse")?;
    let mux = gst::ElementFactory::make("matroskamux")
        .name("record-mux")
        // A crash or a kill still leaves a playable file.
        .property("streamable", true)
        .build()
        .map_err(|_| missing("matroskamux"))?;
    let sink = gst::ElementFactory::make("filesink")
        .name("record-sink")
        .property("location", path.to_string_lossy().to_string())
        .property("async", false)
        .build()
        .map_err(|_| missing("filesink"))?;
    pipeline
        .add_many([&vqueue, vparse.upcast_ref(), &aqueue, &aparse, &mux, &sink])
        .map_err(internal)?;
    gst::Element::link_many([vtee, &vqueue, vparse.upcast_ref(), &mux, &sink]).map_err(internal)?;
    gst::Element::link_many([atee, &aqueue, &aparse, &mux]).map_err(internal)?;
    Ok(())
}

fn set_payload_type(payloader: &gst::Bin, pt: u8) {
    // The preset's payloader is a bin around one element: find the RTP payloader inside.
    let mut it = payloader.iterate_recurse();
    while let Ok(Some(element)) = it.next() {
        if element.has_property("pt") {
            element.set_property("pt", u32::from(pt));
        }
    }
}

fn count_frames(encoder_src: &gst::Pad, output: &Output) {
    let stats = output.stats.clone();
    encoder_src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            use std::sync::atomic::Ordering::Relaxed;
            stats.video_frames.fetch_add(1, Relaxed);
            if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                stats.keyframes.fetch_add(1, Relaxed);
            }
            if let Some(pts) = buffer.pts() {
                stats.last_video_pts_ns.fetch_max(pts.nseconds(), Relaxed);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

fn rtp_sink(name: &str) -> Result<gst_app::AppSink, PipelineError> {
    // No sync: the composite is already paced by its live sources; waiting again would only
    // add latency.
    Ok(gst_app::AppSink::builder()
        .name(name)
        .sync(false)
        .async_(false)
        .max_buffers(256)
        .build())
}

fn queue(name: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make("queue")
        .name(name)
        .property("max-size-buffers", 0u32)
        .property("max-size-bytes", 0u32)
        .property("max-size-time", gst::ClockTime::SECOND.nseconds())
        .build()
        .map_err(|_| missing("queue"))
}

fn capsfilter(caps: &gst::Caps) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make("capsfilter")
        .property("caps", caps)
        .build()
        .map_err(|_| missing("capsfilter"))
}

fn missing(factory: &str) -> PipelineError {
    PipelineError::MissingPlugin(format!(
        "GStreamer element `{factory}` is not installed (see the README's package list)"
    ))
}

fn internal(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Internal(e.to_string())
}

/// Parsing caps from preset text, with the preset named in the error.
trait CapsFromStr {
    fn from_str_checked(text: &str, preset: &str) -> Result<gst::Caps, PipelineError>;
}

impl CapsFromStr for gst::Caps {
    fn from_str_checked(text: &str, preset: &str) -> Result<gst::Caps, PipelineError> {
        text.parse::<gst::Caps>().map_err(|_| {
            PipelineError::Config(format!("encoder preset {preset}: invalid caps `{text}`"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{ChatArea, backdrop, backdrop_frame, centre_crop, panel_fits};
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
        let area = ChatArea::of(&side).unwrap();
        assert_eq!((area.width, area.height), (chat.width, chat.height));
        assert_eq!(ChatArea::of(&Layout::builtin("inset").unwrap()), None);

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
