//! One connection to one RTMP server: a small pipeline of its own (appsrc ×2 → h264parse /
//! aacparse → flvmux → rtmp2sink), fed with the composite's encoded samples.
//!
//! Its own pipeline, not a branch of the composite's: a server that refuses, stalls or
//! drops the connection fails this pipeline alone, and the viewers and the recording never
//! see it. The samples' timestamps are moved to start at the first keyframe this
//! connection sends ([`Timeline`]), so the server sees a stream that begins at 0 with a
//! picture it can decode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer_app as gst_app;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use gst::prelude::*;

use super::target::TargetUrl;
use super::{Status, TargetShared};
use crate::gst_util;
use crate::pipeline::{EncodedFeed, Pipeline};

/// How a connection ended.
pub enum Ended {
    /// Removed, or the party is ending.
    Stopped,
    /// It failed; the message is the user's to read, the key hidden.
    Failed(String),
}

/// Most a server may fall behind before the connection is given up and made again: about
/// three seconds of a 2.5 Mbit/s party. Past this it is not keeping up, and a fresh
/// connection (starting at a keyframe) beats a stream that drops frames.
const MAX_QUEUED_BYTES: u64 = 1_000_000;

/// How often the bitrate and the backlog are read.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// Runs one connection until it fails or `stop` fires. `keyframe` asks the encoder for a
/// keyframe (through the party's gate), so the server gets a picture at once.
pub async fn connect(
    target: &Arc<TargetShared>,
    pipeline: &Pipeline,
    keyframe: &(dyn Fn() + Send + Sync),
    stop: &CancellationToken,
) -> Ended {
    let feed = match pipeline.encoded_feed() {
        Ok(feed) => feed,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let outlet = match Outlet::build(&target.url) {
        Ok(outlet) => outlet,
        Err(e) => return Ended::Failed(e),
    };
    let ended = outlet.run(feed, target, keyframe, stop).await;
    outlet.close().await;
    ended
}

/// The connection's pipeline.
struct Outlet {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: gst_app::AppSrc,
    sink: gst::Element,
    url: TargetUrl,
}

impl Outlet {
    fn build(url: &TargetUrl) -> Result<Outlet, String> {
        let missing = |e: gst_util::MissingElement| e.to_string();
        let pipeline = gst::Pipeline::with_name("restream");
        let appsrc = |name: &str| {
            gst_app::AppSrc::builder()
                .name(name)
                .format(gst::Format::Time)
                // Not live: flvmux then waits for both streams instead of timing out on one,
                // and the sink writes as soon as the muxer has something.
                .is_live(false)
                .stream_type(gst_app::AppStreamType::Stream)
                .build()
        };
        let (video, audio) = (appsrc("video"), appsrc("audio"));
        let h264parse = gst_util::make("h264parse").map_err(missing)?;
        let aacparse = gst_util::make("aacparse").map_err(missing)?;
        let mux =
            gst_util::make_with("flvmux", |b| b.property("streamable", true)).map_err(missing)?;
        let sink = gst_util::make_with("rtmp2sink", |b| {
            b.property("location", url.expose())
                .property("sync", false)
                .property("async", false)
        })
        .map_err(missing)?;
        let added = gst_util::add_chain(&pipeline, &[video.upcast_ref(), &h264parse])
            .and_then(|()| gst_util::add_chain(&pipeline, &[audio.upcast_ref(), &aacparse]))
            .and_then(|()| gst_util::add_chain(&pipeline, &[&mux, &sink]))
            .and_then(|()| h264parse.link(&mux))
            .and_then(|()| aacparse.link(&mux));
        added.map_err(|e| format!("cannot build the restream pipeline: {e}"))?;
        Ok(Outlet {
            pipeline,
            video,
            audio,
            sink,
            url: url.clone(),
        })
    }

    async fn run(
        &self,
        mut feed: EncodedFeed,
        target: &Arc<TargetShared>,
        keyframe: &(dyn Fn() + Send + Sync),
        stop: &CancellationToken,
    ) -> Ended {
        let Some(bus) = self.pipeline.bus() else {
            return Ended::Failed("the restream pipeline has no bus".into());
        };
        let mut messages = bus.stream();
        if let Err(e) = self.pipeline.set_state(gst::State::Playing) {
            return Ended::Failed(format!("cannot start the restream pipeline: {e}"));
        }
        target.set_status(Status::Connecting);
        keyframe();
        let mut timeline = Timeline::default();
        let mut stats = tokio::time::interval(STATS_EVERY);
        let mut sent = SentBytes::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ended::Stopped,
                message = messages.next() => match message {
                    Some(message) => if let Some(ended) = self.failure(&message) {
                        return ended;
                    },
                    None => return Ended::Failed("the restream pipeline stopped".into()),
                },
                sample = feed.video.recv() => match sample {
                    Ok(sample) => self.push(&self.video, &sample, &mut timeline, Track::Video),
                    // Frames were skipped: start again at the next keyframe.
                    Err(RecvError::Lagged(_)) => {
                        timeline.resync();
                        keyframe();
                    }
                    Err(RecvError::Closed) => return Ended::Stopped,
                },
                sample = feed.audio.recv() => match sample {
                    Ok(sample) => self.push(&self.audio, &sample, &mut timeline, Track::Audio),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return Ended::Stopped,
                },
                _ = stats.tick() => {
                    // Live once media flows: the handshake alone sends bytes too.
                    if let Some(kbps) = sent.rate(self.sent_bytes(), Instant::now())
                        && timeline.started()
                    {
                        if kbps > 0 {
                            target.set_status(Status::Live);
                        }
                        target.set_bitrate(kbps);
                    }
                    let queued = self.video.current_level_bytes() + self.audio.current_level_bytes();
                    if queued > MAX_QUEUED_BYTES {
                        return Ended::Failed("the RTMP server is not keeping up with the stream".into());
                    }
                }
            }
        }
    }

    /// What a bus message means for the connection: an error or the end of the stream
    /// ends it.
    fn failure(&self, message: &gst::Message) -> Option<Ended> {
        match message.view() {
            gst::MessageView::Error(e) => {
                Some(Ended::Failed(self.url.redact(&e.error().to_string())))
            }
            gst::MessageView::Eos(_) => {
                Some(Ended::Failed("the RTMP server ended the stream".into()))
            }
            _ => None,
        }
    }

    fn push(
        &self,
        src: &gst_app::AppSrc,
        sample: &gst::Sample,
        timeline: &mut Timeline,
        track: Track,
    ) {
        let Some(buffer) = sample.buffer() else {
            return;
        };
        let running = |t: Option<gst::ClockTime>| {
            let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
            segment.to_running_time(t?)
        };
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let Some(pts) = running(buffer.pts()).and_then(|pts| timeline.place(pts, track, keyframe))
        else {
            return;
        };
        let dts = running(buffer.dts()).map(|dts| timeline.rebase(dts));
        let caps = sample.caps_owned();
        if src.caps() != caps {
            src.set_caps(caps.as_ref());
        }
        let mut buffer = buffer.copy();
        {
            let buffer = buffer.make_mut();
            buffer.set_pts(pts);
            buffer.set_dts(dts);
        }
        // A refused push means the pipeline is failing; its bus says why.
        let _ = src.push_buffer(buffer);
    }

    /// Bytes the sink has written to the server.
    fn sent_bytes(&self) -> u64 {
        let stats = self.sink.property::<gst::Structure>("stats");
        stats.get::<u64>("out-bytes-total").unwrap_or(0)
    }

    /// Stops the pipeline, off the runtime: closing the connection may wait on the network.
    async fn close(self) {
        let pipeline = self.pipeline;
        let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
    }
}

/// Which stream a sample is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Video,
    Audio,
}

/// Moves the composite's running times to the connection's own: 0 at the first keyframe it
/// sends. Until then (and after [`Timeline::resync`]) nothing is sent: a server given
/// pictures it cannot decode, or sound before the picture, shows a broken start.
#[derive(Debug, Default)]
struct Timeline {
    /// The composite's running time of the connection's time 0.
    base: Option<gst::ClockTime>,
    /// Waiting for a keyframe after frames were skipped.
    resyncing: bool,
}

impl Timeline {
    /// Where a sample at composite running time `at` goes; `None` drops it.
    fn place(
        &mut self,
        at: gst::ClockTime,
        track: Track,
        keyframe: bool,
    ) -> Option<gst::ClockTime> {
        if track == Track::Video && (self.resyncing || self.base.is_none()) {
            if !keyframe {
                return None;
            }
            self.resyncing = false;
            self.base.get_or_insert(at);
        }
        if self.resyncing {
            return None;
        }
        let base = self.base?;
        at.checked_sub(base)
    }

    /// Whether the first keyframe went out.
    fn started(&self) -> bool {
        self.base.is_some()
    }

    /// `at` on the connection's clock (0 before its start).
    fn rebase(&self, at: gst::ClockTime) -> gst::ClockTime {
        self.base
            .map_or(gst::ClockTime::ZERO, |base| at.saturating_sub(base))
    }

    /// Frames were skipped: drop everything until the next keyframe, keeping time 0.
    fn resync(&mut self) {
        self.resyncing = true;
    }
}

/// Bytes per second from a growing byte count, read once a second.
#[derive(Debug, Default)]
struct SentBytes {
    last: Option<(u64, Instant)>,
}

impl SentBytes {
    /// The rate since the last reading, in kbit/s.
    fn rate(&mut self, total: u64, now: Instant) -> Option<u32> {
        let last = self.last.replace((total, now));
        let (before, then) = last?;
        let seconds = now.saturating_duration_since(then).as_secs_f64();
        (seconds > 0.0)
            .then(|| (total.saturating_sub(before) as f64 * 8.0 / seconds / 1000.0) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(n)
    }

    #[test]
    fn the_stream_starts_at_the_first_keyframe_with_sound_from_then_on() {
        let mut timeline = Timeline::default();
        assert_eq!(timeline.place(ms(900), Track::Audio, true), None);
        assert_eq!(timeline.place(ms(1000), Track::Video, false), None);
        assert_eq!(timeline.place(ms(1033), Track::Video, true), Some(ms(0)));
        assert_eq!(timeline.place(ms(1020), Track::Audio, true), None);
        assert_eq!(timeline.place(ms(1053), Track::Audio, true), Some(ms(20)));
        assert_eq!(timeline.place(ms(1066), Track::Video, false), Some(ms(33)));
        assert_eq!(timeline.rebase(ms(1066)), ms(33));
    }

    #[test]
    fn after_skipped_frames_nothing_is_sent_until_a_keyframe_and_time_goes_on() {
        let mut timeline = Timeline::default();
        timeline.place(ms(0), Track::Video, true);
        timeline.resync();
        assert_eq!(timeline.place(ms(500), Track::Video, false), None);
        assert_eq!(timeline.place(ms(510), Track::Audio, true), None);
        assert_eq!(timeline.place(ms(2000), Track::Video, true), Some(ms(2000)));
        assert_eq!(timeline.place(ms(2010), Track::Audio, true), Some(ms(2010)));
    }

    #[test]
    fn the_bitrate_comes_from_the_bytes_of_the_last_second() {
        let t0 = Instant::now();
        let mut sent = SentBytes::default();
        assert_eq!(sent.rate(1_000, t0), None);
        assert_eq!(sent.rate(313_500, t0 + Duration::from_secs(1)), Some(2500));
    }
}
