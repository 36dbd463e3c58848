//! GStreamer's view of one file: what the discoverer says about it, and one frame decoded,
//! letterboxed and encoded as the title's PNG thumbnail.

use std::time::{Duration, Instant};

use gst_video::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_pbutils as gst_pbutils;
use gstreamer_pbutils::prelude::*;
use gstreamer_video as gst_video;

use super::THUMBNAIL_SIZE;
use crate::gst_util::{self, PrerollError, clock_time};

/// How long the `Discoverer` may spend on one file before it counts as broken.
pub(super) const DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long decoding one thumbnail frame may take (preroll, seek and pull together).
const THUMBNAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// The thumbnail frame is taken at this fraction of the duration…
const THUMBNAIL_AT_FRACTION: f64 = 0.10;

/// …but no later than this, so long movies do not need a far seek.
const THUMBNAIL_AT_MOST: Duration = Duration::from_secs(5);

/// The largest frame asked of GStreamer: enough for a good downscale by the `image` crate, while
/// a 4K frame is never copied whole.
const DECODE_MAX: (u32, u32) = (1280, 720);

/// What the discoverer tells about a movie.
pub(super) struct Media {
    /// Its length, when the container says.
    pub(super) duration: Option<Duration>,
    /// Whether a seek can be tried.
    seekable: bool,
    /// Display size of the first video stream (pixel aspect applied), when known.
    display_size: Option<(f64, f64)>,
}

/// Runs the discoverer on `uri`; the error is a short reason for the dashboard.
pub(super) fn discover(discoverer: &gst_pbutils::Discoverer, uri: &str) -> Result<Media, String> {
    let info = discoverer
        .discover_uri(uri)
        .map_err(|e| format!("not a playable movie: {}", e.message()))?;
    match info.result() {
        gst_pbutils::DiscovererResult::Ok => {}
        gst_pbutils::DiscovererResult::Timeout => {
            return Err(format!(
                "not a playable movie: no answer within {} s",
                DISCOVER_TIMEOUT.as_secs()
            ));
        }
        gst_pbutils::DiscovererResult::MissingPlugins => {
            // Installer details read "gstreamer|1.0|app|H.265 (Main Profile) decoder|…".
            let what: Vec<String> = info
                .missing_elements_installer_details()
                .iter()
                .filter_map(|d| d.split('|').nth(3).map(str::to_owned))
                .collect();
            return Err(format!("GStreamer plugin missing: {}", what.join(", ")));
        }
        other => return Err(format!("not a playable movie ({other:?})")),
    }
    let video = info.video_streams();
    let Some(first) = video.first() else {
        return Err("not a movie: no video stream".into());
    };
    let par = first.par();
    let display_size =
        (first.width() > 0 && first.height() > 0 && par.numer() > 0 && par.denom() > 0).then(
            || {
                (
                    f64::from(first.width()) * f64::from(par.numer()) / f64::from(par.denom()),
                    f64::from(first.height()),
                )
            },
        );
    Ok(Media {
        duration: info.duration().map(|d| Duration::from_nanos(d.nseconds())),
        seekable: info.is_seekable(),
        display_size,
    })
}

/// Where the thumbnail frame is taken: 10 % into the movie, at most 5 s, 0 when unknown.
pub(super) fn thumbnail_position(duration: Option<Duration>) -> Duration {
    duration.map_or(Duration::ZERO, |d| {
        d.mul_f64(THUMBNAIL_AT_FRACTION).min(THUMBNAIL_AT_MOST)
    })
}

/// Sets a pipeline to `Null` when dropped, so every return path releases the decoder.
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// Decodes one frame at `at`: uridecodebin → videoconvert → videoscale → RGB caps → appsink,
/// prerolled in `Paused`, then a key-unit seek and the new preroll sample.
pub(super) fn decode_frame(
    uri: &str,
    media: &Media,
    at: Duration,
) -> Result<image::RgbImage, String> {
    let pipeline = gst::Pipeline::with_name("library-thumbnail");
    let guard = NullOnDrop(pipeline.clone());
    let decode = gst_util::make_with("uridecodebin", |b| b.property("uri", uri))
        .map_err(|e| e.to_string())?;
    let convert = gst_util::make("videoconvert").map_err(|e| e.to_string())?;
    // The size below keeps the aspect up to rounding; borders would show as thin lines.
    let scale = gst_util::make_with("videoscale", |b| b.property("add-borders", false))
        .map_err(|e| e.to_string())?;
    let filter =
        gst_util::capsfilter(&frame_caps(media.display_size)).map_err(|e| e.to_string())?;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(1)
        .enable_last_sample(false)
        .build();
    pipeline
        .add_many([&decode, &convert, &scale, &filter, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([&convert, &scale, &filter, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    let pipeline_weak = pipeline.downgrade();
    let convert_weak = convert.downgrade();
    decode.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(convert)) = (pipeline_weak.upgrade(), convert_weak.upgrade())
        else {
            return;
        };
        let Some(convert_pad) = convert.static_pad("sink") else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_video = caps
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/"));
        // The first video stream makes the thumbnail.
        if is_video && !convert_pad.is_linked() {
            let _ = pad.link(&convert_pad);
            return;
        }
        // Audio and further streams go to a fakesink: left unlinked, a demuxer may stop with
        // not-linked. Not async, so it never holds up the preroll.
        if let Ok(fakesink) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            && pipeline.add(&fakesink).is_ok()
        {
            let _ = fakesink.sync_state_with_parent();
            if let Some(sink_pad) = fakesink.static_pad("sink") {
                let _ = pad.link(&sink_pad);
            }
        }
    });

    let deadline = Instant::now() + THUMBNAIL_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    gst_util::preroll(&pipeline, left()).map_err(decode_error)?;
    if !at.is_zero() && media.seekable {
        // Key unit: the nearest keyframe is good enough for a thumbnail and needs no decoding
        // of the frames after it.
        let seeked = pipeline.seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
            clock_time(at),
        );
        if seeked.is_ok() {
            gst_util::wait_async_done(&pipeline, left()).map_err(decode_error)?;
        }
    }
    let sample = sink
        .try_pull_preroll(clock_time(left()))
        .ok_or_else(|| "no frame decoded".to_string())?;
    let frame = sample_to_rgb(&sample)?;
    drop(guard);
    Ok(frame)
}

/// RGB caps for the decoded frame: the source's display aspect, fitted into [`DECODE_MAX`],
/// square pixels. Without a known size the ranges let `videoscale` keep the aspect itself.
fn frame_caps(display_size: Option<(f64, f64)>) -> gst::Caps {
    let builder = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    match display_size {
        Some((w, h)) => {
            let (w, h) = fit((w, h), DECODE_MAX);
            builder.field("width", w as i32).field("height", h as i32)
        }
        None => builder
            .field("width", gst::IntRange::new(1, DECODE_MAX.0 as i32))
            .field("height", gst::IntRange::new(1, DECODE_MAX.1 as i32)),
    }
    .build()
}

/// The largest size with the aspect of `size` that fits `bounds`, never upscaled, at least 1×1.
fn fit(size: (f64, f64), bounds: (u32, u32)) -> (u32, u32) {
    let (w, h) = size;
    let scale = (f64::from(bounds.0) / w)
        .min(f64::from(bounds.1) / h)
        .min(1.0);
    let w = ((w * scale).round() as u32).clamp(1, bounds.0);
    let h = ((h * scale).round() as u32).clamp(1, bounds.1);
    (w, h)
}

/// Why decoding the thumbnail frame stopped, in the dashboard's words.
fn decode_error(e: PrerollError) -> String {
    match e {
        PrerollError::Failed(message) => message,
        PrerollError::Refused => "cannot start decoding".into(),
        PrerollError::TimedOut(_) => format!("no frame within {} s", THUMBNAIL_TIMEOUT.as_secs()),
    }
}

/// Copies an RGB sample into an image, row by row (GStreamer pads rows to 4 bytes).
fn sample_to_rgb(sample: &gst::Sample) -> Result<image::RgbImage, String> {
    let caps = sample.caps().ok_or("frame without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
    let buffer = sample.buffer().ok_or("frame without data")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|e| e.to_string())?;
    let stride = usize::try_from(frame.plane_stride()[0]).map_err(|e| e.to_string())?;
    let data = frame.plane_data(0).map_err(|e| e.to_string())?;
    let (width, height) = (info.width(), info.height());
    let row = width as usize * 3;
    let mut pixels = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        let line = data
            .get(y * stride..y * stride + row)
            .ok_or("frame shorter than its caps")?;
        pixels.extend_from_slice(line);
    }
    image::RgbImage::from_raw(width, height, pixels).ok_or_else(|| "bad frame size".into())
}

/// Scales `frame` to fit [`THUMBNAIL_SIZE`], centred on black: every thumbnail has the same
/// size, so the page's grid stays even whatever the movie's aspect.
pub(super) fn letterbox(frame: &image::RgbImage) -> image::RgbImage {
    let (tw, th) = THUMBNAIL_SIZE;
    let (w, h) = (
        f64::from(frame.width().max(1)),
        f64::from(frame.height().max(1)),
    );
    // Up or down: a small movie still fills the box.
    let scale = (f64::from(tw) / w).min(f64::from(th) / h);
    let nw = ((w * scale).round() as u32).clamp(1, tw);
    let nh = ((h * scale).round() as u32).clamp(1, th);
    // Triangle filters over the whole footprint, so a large downscale does not alias.
    let resized = image::imageops::resize(frame, nw, nh, image::imageops::FilterType::Triangle);
    let mut canvas = image::RgbImage::new(tw, th);
    image::imageops::replace(
        &mut canvas,
        &resized,
        i64::from((tw - nw) / 2),
        i64::from((th - nh) / 2),
    );
    canvas
}

/// Encodes a picture as PNG.
pub(super) fn encode_png(img: &image::RgbImage) -> Result<Vec<u8>, String> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_keeps_aspect_on_black() {
        // A tall white frame: bars left and right, picture in the middle.
        let tall = image::RgbImage::from_pixel(100, 200, image::Rgb([255, 255, 255]));
        let thumb = letterbox(&tall);
        assert_eq!(thumb.dimensions(), THUMBNAIL_SIZE);
        assert_eq!(thumb.get_pixel(160, 90).0, [255, 255, 255]);
        assert_eq!(thumb.get_pixel(5, 90).0, [0, 0, 0]);
        assert_eq!(thumb.get_pixel(314, 90).0, [0, 0, 0]);
        // 16:9 fills the box exactly.
        let wide = image::RgbImage::from_pixel(1280, 720, image::Rgb([10, 200, 30]));
        let thumb = letterbox(&wide);
        assert_eq!(thumb.get_pixel(0, 0).0, [10, 200, 30]);
        assert_eq!(thumb.get_pixel(319, 179).0, [10, 200, 30]);
    }

    #[test]
    fn thumbnail_position_is_a_tenth_at_most_five_seconds() {
        assert_eq!(thumbnail_position(None), Duration::ZERO);
        assert_eq!(
            thumbnail_position(Some(Duration::from_secs(20))),
            Duration::from_secs(2)
        );
        assert_eq!(
            thumbnail_position(Some(Duration::from_secs(7200))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit((3840.0, 2160.0), DECODE_MAX), (1280, 720));
        assert_eq!(fit((640.0, 480.0), DECODE_MAX), (640, 480));
        assert_eq!(fit((1000.0, 2000.0), DECODE_MAX), (360, 720));
    }
}
