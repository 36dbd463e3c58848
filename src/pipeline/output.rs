//! What the pipeline hands to the broadcaster: RTP packets, encoded once, and the parameters
//! a receiver needs to decode them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer_app as gst_app;
use serde::Serialize;
use tokio::sync::broadcast;

use super::keyframe::KeyframeMarker;

/// Which stream a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    /// The composite video.
    Video,
    /// The mixed audio.
    Audio,
}

/// One RTP packet, exactly as the payloader produced it.
#[derive(Debug, Clone)]
pub struct RtpPacket {
    /// The whole packet, header included. Cheap to clone for every viewer.
    pub data: Bytes,
    /// The packet carries part of a keyframe (or the parameter sets before it), so a viewer
    /// joining now can start decoding from here.
    pub keyframe: bool,
    /// When the payloader handed it over: how late the fan-out takes it says whether the
    /// fan-out keeps up.
    pub at: std::time::Instant,
}

/// Codec parameters of one stream, for SDP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RtpCodec {
    /// Encoding name (`H264`, `VP8`, `OPUS`).
    pub encoding_name: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Payload type in the packets.
    pub payload_type: u8,
    /// Channels (audio only).
    pub channels: Option<u32>,
    /// SDP `a=fmtp` parameters, when the codec has any.
    pub fmtp: Option<String>,
}

/// Codec parameters of both streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodecParams {
    /// The composite video.
    pub video: RtpCodec,
    /// The mixed audio.
    pub audio: RtpCodec,
}

/// Counters of what left the pipeline, for health and metrics.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Encoded video frames.
    pub video_frames: AtomicU64,
    /// Keyframes among them.
    pub keyframes: AtomicU64,
    /// RTP packets of video.
    pub video_packets: AtomicU64,
    /// RTP packets of audio.
    pub audio_packets: AtomicU64,
    /// Running time of the last encoded frame, in ns: it only ever grows.
    pub last_video_pts_ns: AtomicU64,
}

/// Which encode of the composite a video packet belongs to. Every rendition shows the same
/// picture; they differ in codec and size. Ids follow the build order of the ladder
/// ([`crate::pipeline::ladder::Ladder::plan`]): look one up by codec and name
/// ([`crate::pipeline::Pipeline::rendition_id`]) rather than by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RenditionId(pub u8);

impl RenditionId {
    /// The main encode, in the `--encoder` preset: always on.
    pub const MAIN: Self = Self(0);
}

impl std::fmt::Display for RenditionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a receiver needs to know about one rendition.
///
/// Every rendition's payloader stamps the same RTP timestamp on the same composite frame
/// (they share one `timestamp-offset`), so a viewer moved from one rendition to another sees
/// its timestamps go on as before; only the sequence numbers need rewriting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenditionInfo {
    /// Which one.
    pub id: RenditionId,
    /// Its RTP codec; the payload type differs from every other rendition's.
    pub codec: RtpCodec,
    /// Whether it only encodes while asked to ([`crate::pipeline::Pipeline::set_rendition_active`]).
    pub on_demand: bool,
    /// Its name in the ladder (`720p`, `360p`), the label viewers pick.
    pub name: String,
    /// Picture width it encodes.
    pub width: u32,
    /// Picture height it encodes.
    pub height: u32,
    /// Its target video bitrate.
    pub bitrate_kbps: u32,
}

/// The fan-out points of the two streams.
#[derive(Clone)]
pub struct Output {
    /// Video packets of the main rendition, to every subscriber.
    pub video: broadcast::Sender<RtpPacket>,
    /// Audio packets, to every subscriber.
    pub audio: broadcast::Sender<RtpPacket>,
    /// Counters.
    pub stats: Arc<OutputStats>,
}

/// Capacity of a video channel. A second of video at 2.5 Mbit/s is about 250 packets; a
/// subscriber further behind than this lags and should ask for a keyframe.
pub const VIDEO_CHANNEL: usize = 2048;

impl Output {
    /// Creates the channels.
    pub fn new() -> Self {
        Self {
            video: broadcast::channel(VIDEO_CHANNEL).0,
            audio: broadcast::channel(512).0,
            stats: Arc::default(),
        }
    }

    /// Makes `sink` publish its RTP packets to the `media` channel; `video_codec` is the
    /// encoding name of the main video (it decides how keyframes are found).
    pub fn attach(&self, sink: &gst_app::AppSink, media: Media, video_codec: &str) {
        let stats = self.stats.clone();
        match media {
            Media::Video => publish(
                sink,
                self.video.clone(),
                Some(KeyframeMarker::for_codec(video_codec)),
                move || stats.video_packets.fetch_add(1, Ordering::Relaxed),
            ),
            Media::Audio => publish(sink, self.audio.clone(), None, move || {
                stats.audio_packets.fetch_add(1, Ordering::Relaxed)
            }),
        }
    }
}

/// Makes `sink` publish its RTP packets to `tx`, calling `counted` for each. `marker` finds
/// the keyframes of a video stream; `None` (audio) flags none.
pub fn publish(
    sink: &gst_app::AppSink,
    tx: broadcast::Sender<RtpPacket>,
    mut marker: Option<KeyframeMarker>,
    counted: impl Fn() -> u64 + Send + 'static,
) {
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let mut publish = |buffer: &gst::BufferRef| {
                    let Ok(map) = buffer.map_readable() else {
                        return;
                    };
                    let delta = buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    let keyframe = marker.as_mut().is_some_and(|m| m.is_keyframe(&map, delta));
                    counted();
                    // No subscriber is fine: nobody is watching yet.
                    let _ = tx.send(RtpPacket {
                        data: Bytes::copy_from_slice(&map),
                        keyframe,
                        at: std::time::Instant::now(),
                    });
                };
                if let Some(list) = sample.buffer_list() {
                    list.iter().for_each(&mut publish);
                } else if let Some(buffer) = sample.buffer() {
                    publish(buffer);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

impl Default for Output {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads codec parameters from a payloader's negotiated caps, falling back to `fallback` for
/// what they do not say.
pub fn codec_from_caps(caps: Option<&gst::CapsRef>, fallback: &RtpCodec) -> RtpCodec {
    let Some(s) = caps.and_then(|c| c.structure(0)) else {
        return fallback.clone();
    };
    let fmtp = match fallback.encoding_name.as_str() {
        "H264" => {
            let profile = s
                .get::<String>("profile-level-id")
                .unwrap_or_else(|_| "42e01f".into());
            Some(format!(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
            ))
        }
        "OPUS" => Some("minptime=10;useinbandfec=1".into()),
        _ => fallback.fmtp.clone(),
    };
    RtpCodec {
        encoding_name: s
            .get::<String>("encoding-name")
            .unwrap_or_else(|_| fallback.encoding_name.clone()),
        clock_rate: s
            .get::<i32>("clock-rate")
            .map(|r| r as u32)
            .unwrap_or(fallback.clock_rate),
        payload_type: s
            .get::<i32>("payload")
            .map(|p| p as u8)
            .unwrap_or(fallback.payload_type),
        channels: fallback.channels,
        fmtp,
    }
}
