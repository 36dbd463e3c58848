//! The end of the composite: the mixed picture and sound encoded once (the preset's video
//! encoder, Opus), payloaded into RTP appsinks, and teed to the Matroska recording when asked.

use std::path::Path;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer_app as gst_app;

use gst::prelude::*;

use super::{FPS, queue};
use crate::gst_util;
use crate::pipeline::PipelineError;
use crate::pipeline::output::{Output, RenditionId, RtpCodec};
use crate::pipeline::presets::EncoderPreset;
use crate::pipeline::rendition::{self, Branch, Rendition};

/// Payload type of the Opus stream.
const OPUS_PT: u8 = 111;

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
    /// The on-demand renditions, idle until asked for.
    pub renditions: Vec<Arc<Rendition>>,
}

/// The encoders, payloaders and appsinks after `video_in` and `audio_in`, plus the recorder
/// when asked, plus an on-demand VP8 rendition when the main codec is not VP8 already.
pub fn encode(
    pipeline: &gst::Pipeline,
    (video_in, audio_in): (&gst::Element, &gst::Element),
    preset: &EncoderPreset,
    bitrate_kbps: u32,
    record: Option<&Path>,
) -> Result<EncodedOutputs, PipelineError> {
    let vp8 = if preset.codec.eq_ignore_ascii_case("VP8") {
        None
    } else {
        Some(EncoderPreset::builtin("vp8")?)
    };
    // The rendition branches off the raw composite, before the main encoder's queue, so both
    // encoders see the very same frames.
    let raw = match vp8 {
        Some(_) => {
            let tee = gst_util::make_with("tee", |b| b.name("raw-video-tee"))?;
            pipeline.add(&tee).map_err(PipelineError::internal)?;
            video_in.link(&tee).map_err(PipelineError::internal)?;
            tee
        }
        None => video_in.clone(),
    };
    let (video, encoder_src) = encode_video(pipeline, &raw, preset, bitrate_kbps)?;
    let audio = encode_audio(pipeline, audio_in)?;
    if let Some(path) = record {
        add_recorder(pipeline, (&video.tee, &audio.tee), preset, path)?;
    }
    let renditions = match vp8 {
        Some(vp8) => {
            let pt =
                rendition::distinct_payload_type(vp8.payload_type, &[preset.payload_type, OPUS_PT]);
            let branch = on_demand_branch(pipeline, &raw, &vp8, bitrate_kbps, pt)?;
            vec![Arc::new(Rendition::new(
                RenditionId::VP8,
                preset_codec(&vp8, pt),
                branch,
            ))]
        }
        None => Vec::new(),
    };
    Ok(EncodedOutputs {
        video_sink: video.sink,
        audio_sink: audio.sink,
        encoder_src,
        video_codec: preset_codec(preset, preset.payload_type),
        audio_codec: RtpCodec {
            encoding_name: "OPUS".into(),
            clock_rate: 48_000,
            payload_type: OPUS_PT,
            channels: Some(2),
            fmtp: Some("minptime=10;useinbandfec=1".into()),
        },
        renditions,
    })
}

/// What `preset` says about its RTP stream, sent with payload type `pt`.
fn preset_codec(preset: &EncoderPreset, pt: u8) -> RtpCodec {
    RtpCodec {
        encoding_name: preset.codec.clone(),
        clock_rate: preset.clock_rate,
        payload_type: pt,
        channels: None,
        fmtp: None,
    }
}

/// One encoded stream: the tee the recorder can branch from, and the RTP appsink.
struct Encoded {
    tee: gst::Element,
    sink: gst_app::AppSink,
}

/// The preset's encoder, its caps and its payloader (stamping `pt`), named `{prefix}-…`.
fn preset_elements(
    preset: &EncoderPreset,
    bitrate_kbps: u32,
    prefix: &str,
    pt: u8,
) -> Result<(gst::Bin, gst::Element, gst::Bin), PipelineError> {
    let parse = |what: &str, desc: &str| {
        gst::parse::bin_from_description(desc, true).map_err(|e| {
            PipelineError::Config(format!(
                "encoder preset {} ({what} `{desc}`): {e}",
                preset.name
            ))
        })
    };
    let encoder = parse(
        "encoder",
        &preset.encoder_description(bitrate_kbps, FPS as u32),
    )?;
    encoder.set_property("name", format!("{prefix}-encoder"));
    let encoded_caps = preset.caps.parse::<gst::Caps>().map_err(|_| {
        PipelineError::Config(format!(
            "encoder preset {}: invalid caps `{}`",
            preset.name, preset.caps
        ))
    })?;
    let caps = gst_util::capsfilter(&encoded_caps)?;
    let payloader = parse("payloader", &preset.payloader)?;
    payloader.set_property("name", format!("{prefix}-payloader"));
    set_payload_type(&payloader, pt);
    Ok((encoder, caps, payloader))
}

/// The link error of a preset's chain, as the user can fix it.
fn unlinkable(preset: &EncoderPreset) -> PipelineError {
    PipelineError::Config(format!(
        "encoder preset {}: its elements do not link (check `caps`)",
        preset.name
    ))
}

/// queue → the preset's encoder → caps → tee → queue → the preset's payloader → appsink;
/// with the encoder's output pad, where keyframe requests go.
fn encode_video(
    pipeline: &gst::Pipeline,
    video_in: &gst::Element,
    preset: &EncoderPreset,
    bitrate_kbps: u32,
) -> Result<(Encoded, gst::Pad), PipelineError> {
    let queue_in = queue("video-encode-queue")?;
    let (encoder, caps, payloader) =
        preset_elements(preset, bitrate_kbps, "video", preset.payload_type)?;
    let tee = gst_util::make_with("tee", |b| b.name("video-tee"))?;
    let pay_queue = queue("video-pay-queue")?;
    let sink = rtp_sink("video-rtp");
    gst_util::add_chain(
        pipeline,
        &[
            &queue_in,
            encoder.upcast_ref(),
            &caps,
            &tee,
            &pay_queue,
            payloader.upcast_ref(),
            sink.upcast_ref(),
        ],
    )
    .and_then(|()| video_in.link(&queue_in))
    .map_err(|_| unlinkable(preset))?;
    let encoder_src = encoder
        .static_pad("src")
        .expect("encoder bin has a src pad");
    Ok((Encoded { tee, sink }, encoder_src))
}

/// raw tee → valve (closed) → leaky queue → the preset's encoder → caps → payloader →
/// appsink: see [`crate::pipeline::rendition`] for why in this order.
fn on_demand_branch(
    pipeline: &gst::Pipeline,
    raw_tee: &gst::Element,
    preset: &EncoderPreset,
    bitrate_kbps: u32,
    pt: u8,
) -> Result<Branch, PipelineError> {
    let prefix = format!("rendition-{}", preset.name);
    let valve = gst_util::make_with("valve", |b| {
        b.name(format!("{prefix}-valve")).property("drop", true)
    })?;
    // Two frames of slack: enough to ride out scheduling jitter, never a wait for the tee.
    let queue = gst_util::make_with("queue", |b| {
        b.name(format!("{prefix}-queue"))
            .property("max-size-buffers", 2u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64)
            .property_from_str("leaky", "downstream")
    })?;
    let (encoder, caps, payloader) = preset_elements(preset, bitrate_kbps, &prefix, pt)?;
    let sink = rtp_sink(&format!("{prefix}-rtp"));
    gst_util::add_chain(
        pipeline,
        &[
            &valve,
            &queue,
            encoder.upcast_ref(),
            &caps,
            payloader.upcast_ref(),
            sink.upcast_ref(),
        ],
    )
    .and_then(|()| raw_tee.link(&valve))
    .map_err(|_| unlinkable(preset))?;
    let encoder_src = encoder
        .static_pad("src")
        .expect("encoder bin has a src pad");
    Ok(Branch {
        valve,
        encoder_src,
        sink,
    })
}

/// audioconvert → audioresample → 48 kHz stereo → opusenc → tee → queue → rtpopuspay → appsink.
fn encode_audio(
    pipeline: &gst::Pipeline,
    audio_in: &gst::Element,
) -> Result<Encoded, PipelineError> {
    let convert = gst_util::make("audioconvert")?;
    let resample = gst_util::make("audioresample")?;
    let opus_caps = gst_util::capsfilter(
        &gst::Caps::builder("audio/x-raw")
            .field("rate", 48_000i32)
            .field("channels", 2i32)
            .build(),
    )?;
    let opus = gst_util::make_with("opusenc", |b| {
        b.name("audio-encoder")
            .property("bitrate", 128_000i32)
            .property_from_str("frame-size", "20")
            // FEC as advertised (useinbandfec=1): each packet carries a low-rate copy of the
            // one before, so a single lost 20 ms frame is rebuilt instead of concealed. FEC
            // lives in Opus's SILK layer, which libopus only uses for music when the expected
            // loss is above 8 % (measured: at 5 % a tone stays CELT-only, without FEC).
            .property("inband-fec", true)
            .property("packet-loss-percentage", 10i32)
    })?;
    let tee = gst_util::make_with("tee", |b| b.name("audio-tee"))?;
    let pay_queue = queue("audio-pay-queue")?;
    let payloader = gst_util::make_with("rtpopuspay", |b| {
        b.name("audio-payloader").property("pt", u32::from(OPUS_PT))
    })?;
    let sink = rtp_sink("audio-rtp");
    gst_util::add_chain(
        pipeline,
        &[
            &convert,
            &resample,
            &opus_caps,
            &opus,
            &tee,
            &pay_queue,
            &payloader,
            sink.upcast_ref(),
        ],
    )
    .and_then(|()| audio_in.link(&convert))
    .map_err(PipelineError::internal)?;
    Ok(Encoded { tee, sink })
}

/// tee → queue → parser → matroskamux → filesink, for both streams: no second encode.
fn add_recorder(
    pipeline: &gst::Pipeline,
    (video_tee, audio_tee): (&gst::Element, &gst::Element),
    preset: &EncoderPreset,
    path: &Path,
) -> Result<(), PipelineError> {
    let video_queue = queue("record-video-queue")?;
    let video_parse = gst::parse::bin_from_description(&preset.parser, true).map_err(|e| {
        PipelineError::Config(format!("encoder preset {} (parser): {e}", preset.name))
    })?;
    let audio_queue = queue("record-audio-queue")?;
    let audio_parse = gst_util::make("opusparse")?;
    let mux = gst_util::make_with("matroskamux", |b| {
        // A crash or a kill still leaves a playable file.
        b.name("record-mux").property("streamable", true)
    })?;
    let sink = gst_util::make_with("filesink", |b| {
        b.name("record-sink")
            .property("location", path.to_string_lossy().to_string())
            .property("async", false)
    })?;
    gst_util::add_chain(
        pipeline,
        &[&video_queue, video_parse.upcast_ref(), &mux, &sink],
    )
    .and_then(|()| gst_util::add_chain(pipeline, &[&audio_queue, &audio_parse]))
    .and_then(|()| video_tee.link(&video_queue))
    .and_then(|()| audio_tee.link(&audio_queue))
    .and_then(|()| audio_parse.link(&mux))
    .map_err(PipelineError::internal)
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

/// Counts the encoded frames and keyframes leaving `encoder_src`, into `output`'s stats.
pub fn count_frames(encoder_src: &gst::Pad, output: &Output) {
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

fn rtp_sink(name: &str) -> gst_app::AppSink {
    // No sync: the composite is already paced by its live sources; waiting again would only
    // add latency.
    gst_app::AppSink::builder()
        .name(name)
        .sync(false)
        .async_(false)
        .max_buffers(256)
        .build()
}
