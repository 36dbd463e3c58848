//! An on-demand rendition: another encode of the very composite the main encoder sees, at
//! another size of the ladder (a 360p copy for weak links) or in another codec (VP8 for a
//! Firefox without OpenH264), or both.
//!
//! ```text
//! composite ─► raw tee ─┬─► queue ─► main encoder ─► …                           (always)
//!                       └─► valve ─► leaky queue ─► videoscale ─► encoder ─► payloader ─► appsink
//!                            drop while idle: no frame reaches the encoder
//! ```
//!
//! The valve sits right after the tee, in the composite's own thread, so an idle rendition
//! costs one reference count per frame: its queue thread never wakes, nothing is scaled and
//! its encoder is never even configured before the first activation. Once on, the leaky queue
//! drops the oldest frame rather than ever blocking the tee, so a slow encoder cannot stall
//! the main stream; scaling happens after it, on the branch's own thread. The branch is never
//! rebuilt: its payloader keeps one sequence-number and timestamp line across idle spells,
//! which is what a receiver's jitter buffer expects. Every payloader shares the main one's
//! timestamp offset, so the same frame has the same RTP timestamp in every rendition.
//!
//! Switching is a property and an event, thread-safe in GStreamer and quick, so it happens on
//! the caller's thread and not through the conductor, which may be busy for seconds loading a
//! movie while a viewer waits for its first picture.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use tokio::sync::broadcast;

use gst::prelude::*;

use super::health::{RenditionHealth, RenditionState};
use super::keyframe::KeyframeMarker;
use super::ladder::Encode;
use super::output::{self, RenditionId, RenditionInfo, RtpCodec, RtpPacket};
use crate::util::lock::Locked;

/// What a rendition encoded, for health.
#[derive(Debug, Default)]
struct Counters {
    frames: AtomicU64,
    keyframes: AtomicU64,
    packets: AtomicU64,
}

/// Whether it runs, and since when.
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    active: bool,
    last_started: Option<Instant>,
    last_stopped: Option<Instant>,
}

/// The elements of a built branch that a [`Rendition`] steers.
pub struct Branch {
    /// Drops every frame (and event) while the rendition is idle.
    pub valve: gst::Element,
    /// The encoder's output, where keyframe requests go and frames are counted.
    pub encoder_src: gst::Pad,
    /// The payloader's appsink.
    pub sink: gst_app::AppSink,
}

/// One on-demand rendition of the composite.
pub struct Rendition {
    id: RenditionId,
    /// What the ladder asked for: name, size, bitrate, preset.
    encode: Encode,
    /// What the preset says, before the payloader negotiated.
    codec: RtpCodec,
    valve: gst::Element,
    encoder_src: gst::Pad,
    sink_pad: gst::Pad,
    tx: broadcast::Sender<RtpPacket>,
    counters: Arc<Counters>,
    activity: Mutex<Activity>,
}

impl Rendition {
    /// Wraps a built `branch` encoding `encode`, idle: its packets go to a channel of its own.
    pub fn new(id: RenditionId, encode: Encode, codec: RtpCodec, branch: Branch) -> Self {
        let tx = broadcast::channel(output::VIDEO_CHANNEL).0;
        let counters = Arc::new(Counters::default());
        let counted = counters.clone();
        output::publish(
            &branch.sink,
            tx.clone(),
            Some(KeyframeMarker::for_codec(&codec.encoding_name)),
            move || counted.packets.fetch_add(1, Ordering::Relaxed),
        );
        let counted = counters.clone();
        branch
            .encoder_src
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(buffer) = info.buffer() {
                    counted.frames.fetch_add(1, Ordering::Relaxed);
                    if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        counted.keyframes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        branch.valve.set_property("drop", true);
        crate::gst_util::open_valve_on_eos(&branch.valve);
        Self {
            id,
            encode,
            codec,
            valve: branch.valve,
            encoder_src: branch.encoder_src,
            sink_pad: branch
                .sink
                .static_pad("sink")
                .expect("appsink has a sink pad"),
            tx,
            counters,
            activity: Mutex::default(),
        }
    }

    /// Its id.
    pub fn id(&self) -> RenditionId {
        self.id
    }

    /// Its name in the ladder (`360p`).
    pub fn name(&self) -> &str {
        &self.encode.name
    }

    /// Its RTP encoding name (`H264`).
    pub fn codec(&self) -> &str {
        &self.codec.encoding_name
    }

    /// Its id, size and codec, from the payloader's caps once it has run.
    pub fn info(&self) -> RenditionInfo {
        RenditionInfo {
            id: self.id,
            codec: output::codec_from_caps(self.sink_pad.current_caps().as_deref(), &self.codec),
            on_demand: true,
            name: self.encode.name.clone(),
            width: self.encode.width,
            height: self.encode.height,
            bitrate_kbps: self.encode.bitrate_kbps,
        }
    }

    /// Its RTP packets from now on (none while idle).
    pub fn subscribe(&self) -> broadcast::Receiver<RtpPacket> {
        self.tx.subscribe()
    }

    /// Starts or stops encoding; asking for what already holds changes nothing. Starting
    /// asks for a keyframe before the first frame reaches the encoder, so the first packets
    /// out are a keyframe even when the encoder last ran long ago.
    pub fn set_active(&self, active: bool, now: Instant) {
        let mut activity = self.activity.locked();
        if activity.active == active {
            return;
        }
        activity.active = active;
        if active {
            activity.last_started = Some(now);
            self.request_keyframe();
            self.valve.set_property("drop", false);
        } else {
            activity.last_stopped = Some(now);
            self.valve.set_property("drop", true);
        }
        tracing::info!(
            rendition = %self.id,
            name = %self.encode.name,
            codec = %self.codec.encoding_name,
            active,
            "rendition switched"
        );
    }

    /// Asks its encoder for a keyframe now (kept for the next frame when idle).
    pub fn request_keyframe(&self) {
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        self.encoder_src.send_event(event);
    }

    /// Its part of the health snapshot; times are seconds after `started`.
    pub fn health(&self, started: Instant) -> RenditionHealth {
        let activity = *self.activity.locked();
        let since =
            |t: Option<Instant>| t.map(|t| t.saturating_duration_since(started).as_secs_f64());
        RenditionHealth {
            id: self.id,
            name: self.encode.name.clone(),
            width: self.encode.width,
            height: self.encode.height,
            bitrate_kbps: self.encode.bitrate_kbps,
            codec: self.codec.encoding_name.clone(),
            on_demand: true,
            active: activity.active,
            state: if activity.active {
                RenditionState::Running
            } else {
                RenditionState::Idle
            },
            frames: self.counters.frames.load(Ordering::Relaxed),
            keyframes: self.counters.keyframes.load(Ordering::Relaxed),
            packets: self.counters.packets.load(Ordering::Relaxed),
            last_started_s: since(activity.last_started),
            last_stopped_s: since(activity.last_stopped),
        }
    }
}

/// `wanted` unless another stream already uses it; else the first dynamic payload type free.
pub fn distinct_payload_type(wanted: u8, taken: &[u8]) -> u8 {
    if !taken.contains(&wanted) {
        return wanted;
    }
    (96..=127).find(|pt| !taken.contains(pt)).unwrap_or(wanted)
}

#[cfg(test)]
mod tests {
    use super::distinct_payload_type;

    #[test]
    fn payload_types_never_clash() {
        assert_eq!(distinct_payload_type(97, &[96, 111]), 97);
        assert_eq!(distinct_payload_type(97, &[97, 111]), 96);
        assert_eq!(distinct_payload_type(96, &[96, 97, 111]), 98);
    }
}
