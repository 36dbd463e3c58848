//! The end of the composite: the mixed picture and sound encoded (each rendition of the
//! ladder in its preset's video encoder, Opus once), payloaded into RTP appsinks, teed to
//! the Matroska recording when asked, and to the restream's tap (H.264 as encoded, AAC from
//! the mix) when the main encode is H.264.

use std::path::Path;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer_app as gst_app;

use gst::prelude::*;

use super::{FPS, queue};
use crate::gst_util;
use crate::pipeline::PipelineError;
use crate::pipeline::ladder::Encode;
use crate::pipeline::output::{Output, RenditionId, RtpCodec};
use crate::pipeline::presets::EncoderPreset;
use crate::pipeline::rendition::{self, Branch, Rendition};
use crate::pipeline::tap::Tap;

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
    /// What the main encode is: the ladder's first rung in the `--encoder` preset.
    pub main: Encode,
    /// What the preset says about the video stream before negotiation.
    pub video_codec: RtpCodec,
    /// Opus, before negotiation.
    pub audio_codec: RtpCodec,
    /// The on-demand renditions, idle until asked for, in the ladder's order (ids from 1).
    pub renditions: Vec<Arc<Rendition>>,
    /// The encoded streams for the restream, or why there are none.
    pub tap: Result<Arc<Tap>, String>,
}

/// The encoders, payloaders and appsinks after `video_in` and `audio_in`, plus the recorder
/// when asked: `encodes[0]` always on, every other one an on-demand rendition.
pub fn encode(
    pipeline: &gst::Pipeline,
    (video_in, audio_in): (&gst::Element, &gst::Element),
    encodes: &[Encode],
    record: Option<&Path>,
) -> Result<EncodedOutputs, PipelineError> {
    let (main, on_demand) = encodes
        .split_first()
        .ok_or_else(|| PipelineError::Internal("no main encode in the ladder".into()))?;
    // One timestamp line for every video payloader: the same composite frame carries the same
    // RTP timestamp in every rendition, so the broadcaster can move a viewer from one to
    // another without rewriting timestamps. Random, as each payloader's own would be (RFC
    // 3550 §5.1); u32::MAX would tell the payloader to pick its own.
    let timestamp_offset = (crate::util::id::random_u64() as u32).min(u32::MAX - 1);
    // The renditions branch off the raw composite, before the main encoder's queue, so every
    // encoder sees the very same frames.
    let raw = if on_demand.is_empty() {
        video_in.clone()
    } else {
        let tee = gst_util::make_with("tee", |b| b.name("raw-video-tee"))?;
        pipeline.add(&tee).map_err(PipelineError::internal)?;
        video_in.link(&tee).map_err(PipelineError::internal)?;
        tee
    };
    let stamp = Stamp {
        pt: main.preset.payload_type,
        timestamp_offset,
    };
    let (video, encoder_src) = encode_video(pipeline, &raw, main, stamp)?;
    let (audio, raw_audio) = encode_audio(pipeline, audio_in)?;
    if let Some(path) = record {
        add_recorder(pipeline, (&video.tee, &audio.tee), &main.preset, path)?;
    }
    let tap = if main.preset.codec == "H264" {
        add_tap(pipeline, &video.tee, &raw_audio)?
    } else {
        Err(format!(
            "the encoder preset {} makes {}; RTMP carries H.264 (use an H.264 preset)",
            main.preset.name, main.preset.codec
        ))
    };
    let mut taken = vec![main.preset.payload_type, OPUS_PT];
    let mut renditions = Vec::with_capacity(on_demand.len());
    for (i, encode) in on_demand.iter().enumerate() {
        let pt = rendition::distinct_payload_type(encode.preset.payload_type, &taken);
        taken.push(pt);
        let id = u8::try_from(i + 1)
            .map(RenditionId)
            .map_err(|_| PipelineError::Config("the ladder asks for over 255 encodes".into()))?;
        let stamp = Stamp {
            pt,
            timestamp_offset,
        };
        let branch = on_demand_branch(pipeline, &raw, encode, stamp)?;
        let codec = preset_codec(&encode.preset, pt);
        renditions.push(Arc::new(Rendition::new(id, encode.clone(), codec, branch)));
    }
    Ok(EncodedOutputs {
        video_sink: video.sink,
        audio_sink: audio.sink,
        encoder_src,
        main: main.clone(),
        video_codec: preset_codec(&main.preset, main.preset.payload_type),
        audio_codec: RtpCodec {
            encoding_name: "OPUS".into(),
            clock_rate: 48_000,
            payload_type: OPUS_PT,
            channels: Some(2),
            fmtp: Some("minptime=10;useinbandfec=1".into()),
        },
        renditions,
        tap,
    })
}

/// What a video payloader stamps on its packets.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    /// Payload type.
    pt: u8,
    /// RTP timestamp of running time 0, shared by every rendition.
    timestamp_offset: u32,
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

/// The elements of one video encode, in order, named `{prefix}-…`: a scaler and its caps when
/// `encode` is scaled, the preset's encoder, its caps and its payloader (stamping `stamp`).
/// Also the encoder's output pad, where keyframe requests go.
struct VideoChain {
    scaler: Vec<gst::Element>,
    encoder: gst::Bin,
    caps: gst::Element,
    payloader: gst::Bin,
}

impl VideoChain {
    fn build(encode: &Encode, prefix: &str, stamp: Stamp) -> Result<Self, PipelineError> {
        let preset = &encode.preset;
        let parse = |what: &str, desc: &str| {
            gst::parse::bin_from_description(desc, true).map_err(|e| {
                PipelineError::Config(format!(
                    "encoder preset {} ({what} `{desc}`): {e}",
                    preset.name
                ))
            })
        };
        let scaler = if encode.scaled {
            // Bilinear: at 2:1 it averages neighbouring pixels, as sharp as Lanczos to the eye
            // (31 dB PSNR against it on text) for two thirds of 4-tap's CPU; nearest-neighbour
            // saves a quarter more but breaks chat text into jaggies (24 dB).
            let scale = gst_util::make_with("videoscale", |b| {
                b.name(format!("{prefix}-scale"))
                    .property_from_str("method", "bilinear")
            })?;
            // Square pixels at the rung's size: a canvas of another shape gets borders (the
            // videoscale default), never a crop or a stretch.
            let size = gst_util::capsfilter(
                &gst::Caps::builder("video/x-raw")
                    .field("width", encode.width as i32)
                    .field("height", encode.height as i32)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .build(),
            )?;
            vec![scale, size]
        } else {
            Vec::new()
        };
        let encoder = parse(
            "encoder",
            &preset.encoder_description(encode.bitrate_kbps, FPS as u32),
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
        set_payloader(&payloader, stamp);
        Ok(Self {
            scaler,
            encoder,
            caps,
            payloader,
        })
    }

    /// The scaler (if any), the encoder and its caps, in order.
    fn head(&self) -> Vec<&gst::Element> {
        let mut head: Vec<&gst::Element> = self.scaler.iter().collect();
        head.extend([self.encoder.upcast_ref(), &self.caps]);
        head
    }

    fn encoder_src(&self) -> gst::Pad {
        self.encoder
            .static_pad("src")
            .expect("encoder bin has a src pad")
    }
}

/// The link error of a preset's chain, as the user can fix it.
fn unlinkable(preset: &EncoderPreset) -> PipelineError {
    PipelineError::Config(format!(
        "encoder preset {}: its elements do not link (check `caps`)",
        preset.name
    ))
}

/// queue → (scaler →) the preset's encoder → caps → tee → queue → the preset's payloader →
/// appsink; with the encoder's output pad, where keyframe requests go.
fn encode_video(
    pipeline: &gst::Pipeline,
    video_in: &gst::Element,
    main: &Encode,
    stamp: Stamp,
) -> Result<(Encoded, gst::Pad), PipelineError> {
    let queue_in = queue("video-encode-queue")?;
    let chain = VideoChain::build(main, "video", stamp)?;
    let tee = gst_util::make_with("tee", |b| b.name("video-tee"))?;
    let pay_queue = queue("video-pay-queue")?;
    let sink = rtp_sink("video-rtp");
    let mut elements = vec![&queue_in];
    elements.extend(chain.head());
    elements.extend([
        &tee,
        &pay_queue,
        chain.payloader.upcast_ref::<gst::Element>(),
        sink.upcast_ref(),
    ]);
    gst_util::add_chain(pipeline, &elements)
        .and_then(|()| video_in.link(&queue_in))
        .map_err(|_| unlinkable(&main.preset))?;
    Ok((Encoded { tee, sink }, chain.encoder_src()))
}

/// raw tee → valve (closed) → leaky queue → scaler → the preset's encoder → caps → payloader
/// → appsink: see [`crate::pipeline::rendition`] for why in this order. Elements are named
/// `{codec}-{rung}-…` (`h264-360p-queue`), unique as the ladder checks codecs and rung names;
/// the queue's name also names the branch's thread.
fn on_demand_branch(
    pipeline: &gst::Pipeline,
    raw_tee: &gst::Element,
    encode: &Encode,
    stamp: Stamp,
) -> Result<Branch, PipelineError> {
    let prefix = format!("{}-{}", encode.preset.codec.to_lowercase(), encode.name);
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
    let chain = VideoChain::build(encode, &prefix, stamp)?;
    let sink = rtp_sink(&format!("{prefix}-rtp"));
    let mut elements = vec![&valve, &queue];
    elements.extend(chain.head());
    elements.extend([
        chain.payloader.upcast_ref::<gst::Element>(),
        sink.upcast_ref(),
    ]);
    gst_util::add_chain(pipeline, &elements)
        .and_then(|()| raw_tee.link(&valve))
        .map_err(|_| unlinkable(&encode.preset))?;
    Ok(Branch {
        valve,
        encoder_src: chain.encoder_src(),
        sink,
    })
}

/// audioconvert → audioresample → 48 kHz stereo → tee → opusenc → tee → queue → rtpopuspay →
/// appsink; with the raw tee, where the restream's AAC encode branches off.
fn encode_audio(
    pipeline: &gst::Pipeline,
    audio_in: &gst::Element,
) -> Result<(Encoded, gst::Element), PipelineError> {
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
    let raw_tee = gst_util::make_with("tee", |b| b.name("raw-audio-tee"))?;
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
            &raw_tee,
            &opus,
            &tee,
            &pay_queue,
            &payloader,
            sink.upcast_ref(),
        ],
    )
    .and_then(|()| audio_in.link(&convert))
    .map_err(PipelineError::internal)?;
    Ok((Encoded { tee, sink }, raw_tee))
}

/// AAC bitrate of the restream: what Twitch recommends for stereo.
const AAC_BITRATE: i32 = 160_000;

/// encoded video tee → valve → queue → appsink, and raw audio tee → valve → leaky queue → AAC
/// encoder → aacparse → appsink; both valves closed until a feed opens them. `Ok(Err(why))`
/// when no AAC encoder is installed: the party runs, the restream says why it cannot.
fn add_tap(
    pipeline: &gst::Pipeline,
    video_tee: &gst::Element,
    raw_audio_tee: &gst::Element,
) -> Result<Result<Arc<Tap>, String>, PipelineError> {
    // FFmpeg's encoder first (gstreamer1.0-libav, better at 160 kbit/s), then VisualOn's.
    let encoder = gst_util::make_with("avenc_aac", |b| {
        b.name("restream-aac").property("bitrate", AAC_BITRATE)
    })
    .or_else(|_| {
        gst_util::make_with("voaacenc", |b| {
            b.name("restream-aac").property("bitrate", AAC_BITRATE)
        })
    });
    let Ok(encoder) = encoder else {
        return Ok(Err(
            "no AAC encoder is installed (install gstreamer1.0-libav)".into(),
        ));
    };
    let valve = |name: &str| gst_util::make_with("valve", |b| b.name(name).property("drop", true));
    let (video_valve, audio_valve) = (
        valve("restream-video-valve")?,
        valve("restream-audio-valve")?,
    );
    // The restream must never hold the composite back: a stalled branch drops, the viewers
    // and the recording go on.
    let leaky = |name: &str| {
        gst_util::make_with("queue", |b| {
            b.name(name)
                .property("max-size-buffers", 0u32)
                .property("max-size-bytes", 0u32)
                .property("max-size-time", gst::ClockTime::SECOND.nseconds())
                .property_from_str("leaky", "downstream")
        })
    };
    let (video_queue, audio_queue) = (
        leaky("restream-video-queue")?,
        leaky("restream-audio-queue")?,
    );
    let convert = gst_util::make("audioconvert")?;
    let parse = gst_util::make("aacparse")?;
    let video_sink = rtp_sink("restream-video");
    let audio_sink = rtp_sink("restream-audio");
    gst_util::add_chain(
        pipeline,
        &[&video_valve, &video_queue, video_sink.upcast_ref()],
    )
    .and_then(|()| {
        gst_util::add_chain(
            pipeline,
            &[
                &audio_valve,
                &audio_queue,
                &convert,
                &encoder,
                &parse,
                audio_sink.upcast_ref(),
            ],
        )
    })
    .and_then(|()| video_tee.link(&video_valve))
    .and_then(|()| raw_audio_tee.link(&audio_valve))
    .map_err(PipelineError::internal)?;
    Ok(Ok(Tap::new(
        (&video_sink, &audio_sink),
        [video_valve, audio_valve],
    )))
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
        // Not streamable: at its end (EOS on Ctrl-C, SIGTERM or *End party*) the muxer goes
        // back to write the duration and the cues, so players can seek. A kill leaves a
        // segment of unknown size with clusters of a second at most, which players read up to
        // the last one written.
        b.name("record-mux").property("streamable", false).property(
            "max-cluster-duration",
            gst::ClockTime::SECOND.nseconds() as i64,
        )
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

fn set_payloader(payloader: &gst::Bin, stamp: Stamp) {
    // The preset's payloader is a bin around one element: find the RTP payloader inside.
    let mut it = payloader.iterate_recurse();
    while let Ok(Some(element)) = it.next() {
        if element.has_property("pt") {
            element.set_property("pt", u32::from(stamp.pt));
        }
        if element.has_property("timestamp-offset") {
            element.set_property("timestamp-offset", stamp.timestamp_offset);
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
