//! The host pipeline seen from the outside: its RTP decoded back into pictures, its controls
//! applied while it streams, its faults survived.

mod common;

use std::time::Duration;

use common::*;
use cowatch::overlay::slate::{self, SlateKind};
use cowatch::pipeline::layout::Layout;
use cowatch::pipeline::output::{RenditionId, RtpPacket};
use cowatch::pipeline::source::{MovieSource, WebcamSource};
use cowatch::pipeline::{MovieState, Pipeline, RenditionState, WebcamState};

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Movie and webcam land in their rectangles for `first`, then for `second` after a live
/// switch, and the stream never stops in between.
fn layouts_place_movie_and_webcam(first: &str, second: &str) {
    let dir = scratch(&format!("layout-{first}"));
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 20);
    let pipeline = Pipeline::start(settings(
        &movie,
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        first,
    ))
    .unwrap();
    let viewer = Viewer::watch(&pipeline);

    for name in [first, second] {
        let layout = Layout::builtin(name).unwrap();
        if name != first {
            block(pipeline.set_layout(layout.clone())).unwrap();
        }
        viewer.wait_for(&format!("layout {name}"), Duration::from_secs(5), |img| {
            expect_at(img, layout.webcam_inner(), WEBCAM_GREEN, "webcam")?;
            expect_at(img, layout.movie, MOVIE_RED, "movie")?;
            if let Some(chat) = layout.chat {
                let bg = layout.chat_background;
                expect_at(img, chat, [bg.r, bg.g, bg.b], "chat panel")?;
            }
            Ok(())
        });
    }
    // The stream goes on after the switch.
    let frames = viewer.frames();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        viewer.frames() >= frames + 20,
        "stream stalled after the switch"
    );
    let h = pipeline.health();
    assert_eq!(h.layout, second);
    assert!(h.errors.is_empty(), "{:?}", h.errors);
    assert_rtp_monotonic(&viewer);
    block(pipeline.shutdown());
}

#[test]
fn side_panel_then_inset_pixels() {
    layouts_place_movie_and_webcam("side-panel", "inset");
}

#[test]
fn inset_then_side_panel_pixels() {
    layouts_place_movie_and_webcam("inset", "side-panel");
}

#[test]
fn lost_webcam_shows_the_slate_and_the_stream_goes_on() {
    let dir = scratch("webcam-loss");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 20);
    // A camera that dies after 45 frames, about 1.5 s in.
    let webcam = format!("{} ! identity error-after=45", solid_webcam(WEBCAM_GREEN));
    let pipeline = Pipeline::start(settings(
        &movie,
        WebcamSource::Description(webcam),
        "side-panel",
    ))
    .unwrap();
    let viewer = Viewer::watch(&pipeline);
    let layout = Layout::builtin("side-panel").unwrap();
    let inner = layout.webcam_inner();

    viewer.wait_for("webcam before failure", Duration::from_secs(5), |img| {
        expect_at(img, inner, WEBCAM_GREEN, "webcam")
    });
    wait_health(&pipeline, "webcam lost", |h| h.webcam == WebcamState::Lost);
    let frames_at_loss = viewer.frames();
    let (px, py) = slate::probe_point(inner.width, inner.height);
    let slate_bg = slate::background(SlateKind::CameraOff);
    viewer.wait_for("camera-off slate", Duration::from_secs(3), |img| {
        let got = colour_at(img, inner.x + px as i32, inner.y + py as i32 + 4);
        if !close(got, slate_bg) {
            return Err(format!(
                "webcam area is {got:?}, expected the slate's {slate_bg:?}"
            ));
        }
        expect_at(img, layout.movie, MOVIE_RED, "movie")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        viewer.frames() >= frames_at_loss + 20,
        "the stream stalled after the webcam died: {} → {} frames",
        frames_at_loss,
        viewer.frames()
    );
    let h = pipeline.health();
    assert!(
        h.errors.iter().any(|e| e.element.contains("identity")),
        "the failing element is named in health: {:?}",
        h.errors
    );
    assert_rtp_monotonic(&viewer);
    block(pipeline.shutdown());
}

#[test]
fn pause_seek_and_load_keep_the_stream_flowing() {
    let dir = scratch("controls");
    let red = dir.join("red.mkv");
    let blue = dir.join("blue.mkv");
    make_movie(&red, MOVIE_RED, 20);
    make_movie(&blue, MOVIE_BLUE, 5);
    let pipeline = Pipeline::start(settings(
        &red,
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        "side-panel",
    ))
    .unwrap();
    let viewer = Viewer::watch(&pipeline);
    let layout = Layout::builtin("side-panel").unwrap();
    viewer.wait_for("movie playing", Duration::from_secs(5), |img| {
        expect_at(img, layout.movie, MOVIE_RED, "movie")
    });

    // Pause: the position stands still, the stream does not.
    block(pipeline.pause()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let paused_at = pipeline.health().movie.position_s.unwrap();
    let frames = viewer.frames();
    std::thread::sleep(Duration::from_secs(1));
    let h = pipeline.health();
    assert_eq!(h.movie.state, MovieState::Paused);
    assert!(
        (h.movie.position_s.unwrap() - paused_at).abs() < 0.05,
        "moved while paused"
    );
    assert!(
        viewer.frames() >= frames + 20,
        "stream stalled while paused"
    );
    expect_at(
        &viewer.fresh_frame(),
        layout.movie,
        MOVIE_RED,
        "paused movie",
    )
    .unwrap();

    // Play: the position moves again.
    block(pipeline.play()).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(pipeline.health().movie.position_s.unwrap() > paused_at + 0.5);

    // Seek.
    block(pipeline.seek(Duration::from_secs(12))).unwrap();
    wait_health(&pipeline, "seek to 12 s", |h| {
        h.movie
            .position_s
            .is_some_and(|p| (11.5..14.0).contains(&p))
    });
    let err = block(pipeline.seek(Duration::from_secs(3600))).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");

    // A movie that cannot be opened changes nothing.
    let err = block(pipeline.load(MovieSource::Uri {
        uri: format!("file://{}/missing.mkv", dir.display()),
    }))
    .unwrap_err();
    assert!(err.to_string().contains("missing.mkv"), "{err}");
    expect_at(
        &viewer.fresh_frame(),
        layout.movie,
        MOVIE_RED,
        "movie after failed load",
    )
    .unwrap();

    // Another movie.
    block(pipeline.load(MovieSource::parse(blue.to_str().unwrap()).unwrap())).unwrap();
    viewer.wait_for("second movie", Duration::from_secs(5), |img| {
        expect_at(img, layout.movie, MOVIE_BLUE, "movie")
    });
    assert!(pipeline.health().movie.title.contains("blue.mkv"));

    // Its end shows the intermission slate instead of ending the stream.
    wait_health(&pipeline, "end of movie", |h| {
        h.movie.state == MovieState::Ended
    });
    let slate_bg = slate::background(SlateKind::Intermission);
    let (px, py) = slate::probe_point(layout.movie.width, layout.movie.height);
    viewer.wait_for("intermission", Duration::from_secs(3), |img| {
        let got = colour_at(
            img,
            layout.movie.x + px as i32,
            layout.movie.y + py as i32 + 4,
        );
        close(got, slate_bg).then_some(()).ok_or(format!(
            "movie area is {got:?}, expected intermission {slate_bg:?}"
        ))
    });
    let frames = viewer.frames();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        viewer.frames() >= frames + 20,
        "stream stalled at the end of the movie"
    );
    assert_rtp_monotonic(&viewer);
    assert!(pipeline.health().output.last_video_pts_s > 0.0);
    block(pipeline.shutdown());
}

#[test]
fn recording_holds_the_same_composite() {
    let dir = scratch("record");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 20);
    let out = dir.join("vod.mkv");
    let mut s = settings(
        &movie,
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        "inset",
    );
    s.record = Some(out.clone());
    let pipeline = Pipeline::start(s).unwrap();
    wait_health(&pipeline, "three seconds encoded", |h| {
        h.output.video_frames >= 90
    });
    block(pipeline.shutdown());

    let (img, has_audio) = decode_file_frame(&out, 2.0);
    assert!(has_audio, "the recording has no audio stream");
    let layout = Layout::builtin("inset").unwrap();
    expect_at(&img, layout.webcam_inner(), WEBCAM_GREEN, "recorded webcam").unwrap();
    expect_at(&img, layout.movie, MOVIE_RED, "recorded movie").unwrap();
}

/// RTP timestamps of the video never go back (modulo 2^32), whatever the controls did.
fn assert_rtp_monotonic(viewer: &Viewer) {
    // Solid colours compress to about one packet per frame.
    let ts = viewer.rtp_timestamps.lock().unwrap().clone();
    assert!(ts.len() > 20, "too few packets: {}", ts.len());
    for pair in ts.windows(2) {
        let step = pair[1].wrapping_sub(pair[0]) as i32;
        assert!(
            step >= 0,
            "RTP timestamp went back: {} → {}",
            pair[0],
            pair[1]
        );
    }
}

/// Decodes the frame at `at_s` seconds of a file; also tells whether it has audio.
fn decode_file_frame(path: &std::path::Path, at_s: f64) -> (image::RgbImage, bool) {
    use gst::prelude::*;
    use gstreamer as gst;
    use gstreamer_app as gst_app;

    let pipeline = gst::parse::launch(&format!(
        "uridecodebin uri=file://{} name=d d. ! videoconvert ! video/x-raw,format=RGB ! appsink name=v sync=false \
         d. ! audioconvert ! fakesink name=a sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("v")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut found = None;
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let buffer = sample.buffer().unwrap();
        if buffer.pts().is_some_and(|p| p.seconds_f64() >= at_s) {
            let img = to_rgb(&sample);
            found = Some(img);
            break;
        }
    }
    let a = pipeline.by_name("a").unwrap();
    let has_audio = a.static_pad("sink").unwrap().current_caps().is_some();
    pipeline.set_state(gst::State::Null).unwrap();
    (found.expect("the recording has a frame at 2 s"), has_audio)
}

#[test]
fn voice_ducks_the_movie_and_toggles_apply_live() {
    let dir = scratch("toggles");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 20);
    let mut s = settings(
        &movie,
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        "side-panel",
    );
    // A loud, steady "voice".
    s.mic = cowatch::pipeline::source::MicSource::Description(
        "audiotestsrc is-live=true wave=sine freq=220 volume=0.5".into(),
    );
    let pipeline = Pipeline::start(s).unwrap();
    let viewer = Viewer::watch(&pipeline);
    let layout = Layout::builtin("side-panel").unwrap();
    let inner = layout.webcam_inner();

    // Voice on the mic: the movie is ducked by 12 dB (gain ≈ 0.25).
    wait_health(&pipeline, "movie ducked", |h| {
        (h.movie_gain - 0.251).abs() < 0.01
    });
    // Muted mic: the movie comes back.
    block(pipeline.set_mic_muted(true)).unwrap();
    assert_eq!(pipeline.health().mic, cowatch::pipeline::MicState::Muted);
    wait_health(&pipeline, "movie back after mute", |h| h.movie_gain == 1.0);

    // Webcam off shows the slate; on brings the camera back.
    block(pipeline.set_webcam(false)).unwrap();
    assert_eq!(pipeline.health().webcam, WebcamState::Off);
    let (px, py) = slate::probe_point(inner.width, inner.height);
    let slate_bg = slate::background(SlateKind::CameraOff);
    viewer.wait_for("webcam off", Duration::from_secs(3), |img| {
        let got = colour_at(img, inner.x + px as i32, inner.y + py as i32 + 4);
        close(got, slate_bg).then_some(()).ok_or(format!(
            "webcam area is {got:?}, expected the slate's {slate_bg:?}"
        ))
    });
    block(pipeline.set_webcam(true)).unwrap();
    viewer.wait_for("webcam back on", Duration::from_secs(5), |img| {
        expect_at(img, inner, WEBCAM_GREEN, "webcam")
    });

    // A keyframe on request arrives well before the 2 s GOP would bring one.
    std::thread::sleep(Duration::from_millis(200));
    let before = pipeline.health().output.keyframes;
    pipeline.request_keyframe();
    wait_health(&pipeline, "requested keyframe", |h| {
        h.output.keyframes > before
    });

    let codecs = pipeline.codecs();
    assert_eq!(codecs.video.encoding_name, "H264");
    assert!(
        codecs.video.fmtp.as_deref().is_some_and(
            |f| f.contains("packetization-mode=1") && f.contains("profile-level-id=42")
        ),
        "{:?}",
        codecs.video
    );
    assert_eq!(codecs.audio.encoding_name, "OPUS");
    assert_eq!(codecs.audio.clock_rate, 48_000);
    block(pipeline.shutdown());
}

#[test]
fn vp8_preset_streams() {
    let dir = scratch("vp8");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 10);
    let mut s = settings(&movie, WebcamSource::None, "inset");
    s.encoder =
        cowatch::pipeline::presets::EncoderPreset::load("vp8", std::path::Path::new("pipelines"))
            .unwrap();
    let pipeline = Pipeline::start(s).unwrap();
    let mut rx = pipeline.subscribe_video();
    wait_health(&pipeline, "vp8 frames", |h| h.output.video_frames >= 30);
    let packet = rx.try_recv().expect("video packets flow");
    assert_eq!(packet.data[0] >> 6, 2, "RTP version 2");
    assert_eq!(
        packet.data[1] & 0x7f,
        97,
        "VP8 payload type from the preset"
    );
    assert_eq!(pipeline.codecs().video.encoding_name, "VP8");
    block(pipeline.shutdown());
}

#[test]
fn timecode_strip_carries_the_wall_clock() {
    let dir = scratch("timecode");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 10);
    let mut s = settings(&movie, WebcamSource::None, "inset");
    s.timecode = true;
    let pipeline = Pipeline::start(s).unwrap();
    let viewer = Viewer::watch(&pipeline);
    let first = viewer.fresh_frame();
    let read = |img: &image::RgbImage| {
        cowatch::pipeline::timecode::read_rgb(img.as_raw(), img.width(), img.height()).unwrap()
    };
    let stamped = read(&first);
    let now = cowatch::pipeline::timecode::now_ms();
    assert!(
        now >= stamped && now - stamped < 2000,
        "strip says {stamped}, clock says {now}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let later = read(&viewer.fresh_frame());
    assert!(
        later > stamped + 300,
        "the strip advances: {stamped} → {later}"
    );
    block(pipeline.shutdown());
}

/// The first packet of each VP8 frame says whether it is a keyframe (RFC 7741): read here
/// with no code of cowatch, as the oracle for its flags. `None` for a packet that does not
/// start a frame.
fn vp8_frame_start_is_key(packet: &[u8]) -> Option<bool> {
    let csrc = usize::from(packet[0] & 0x0f);
    assert_eq!(packet[0] & 0x30, 0, "no padding or extension expected");
    let d = &packet[12 + csrc * 4..];
    if d[0] & 0x10 == 0 || d[0] & 0x0f != 0 {
        return None;
    }
    let mut at = 1;
    if d[0] & 0x80 != 0 {
        let x = d[1];
        at = 2;
        if x & 0x80 != 0 {
            at += if d[2] & 0x80 != 0 { 2 } else { 1 };
        }
        at += usize::from(x & 0x40 != 0) + usize::from(x & 0x30 != 0);
    }
    Some(d[at] & 1 == 0)
}

fn rtp_timestamp(packet: &RtpPacket) -> u32 {
    u32::from_be_bytes(packet.data[4..8].try_into().unwrap())
}

/// Every packet flagged keyframe is part of a keyframe and every packet of a keyframe is
/// flagged; returns how many keyframes and delta frames `packets` hold.
fn assert_vp8_flags_at_keyframes(packets: &[RtpPacket]) -> (usize, usize) {
    let (mut keys, mut deltas) = (0, 0);
    let mut frame: Option<(u32, bool)> = None;
    for (i, p) in packets.iter().enumerate() {
        if let Some(key) = vp8_frame_start_is_key(&p.data) {
            frame = Some((rtp_timestamp(p), key));
            if key { keys += 1 } else { deltas += 1 }
        }
        let Some((ts, key)) = frame else {
            continue; // the middle of a frame whose start came before the subscription
        };
        assert_eq!(
            rtp_timestamp(p),
            ts,
            "packet {i} belongs to no started frame"
        );
        assert_eq!(
            p.keyframe,
            key,
            "packet {i} flagged keyframe={} in a {} frame",
            p.keyframe,
            if key { "key" } else { "delta" }
        );
    }
    (keys, deltas)
}

/// The packets `rx` receives within `window`.
fn collect(
    rx: &mut tokio::sync::broadcast::Receiver<RtpPacket>,
    window: Duration,
) -> Vec<RtpPacket> {
    let until = std::time::Instant::now() + window;
    let mut out = Vec::new();
    while std::time::Instant::now() < until {
        match rx.try_recv() {
            Ok(p) => out.push(p),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("video channel: {e}"),
        }
    }
    out
}

/// Waits for the first packet on `rx`; with the time it took.
fn first_packet(rx: &mut tokio::sync::broadcast::Receiver<RtpPacket>) -> (Duration, RtpPacket) {
    let asked = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(p) => return (asked.elapsed(), p),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                assert!(
                    asked.elapsed() < Duration::from_secs(5),
                    "no packet within 5 s"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("video channel: {e}"),
        }
    }
}

/// VP8 RTP → pictures: see [`decode`].
fn decode_vp8(packets: &[RtpPacket], payload_type: u8) -> Vec<image::RgbImage> {
    decode(packets, "VP8", payload_type)
}

/// RTP of `codec` (`VP8`, `H264`) → pictures through GStreamer's depayloader and libvpx's or
/// libav's decoder, nothing of cowatch. A depayloader that does not start at a keyframe drops
/// frames until one comes, so every frame sent is decoded only if the first one is a keyframe.
fn decode(packets: &[RtpPacket], codec: &str, payload_type: u8) -> Vec<image::RgbImage> {
    use gst::prelude::*;
    use gstreamer as gst;
    use gstreamer_app as gst_app;

    let decoder = match codec {
        "VP8" => "rtpvp8depay ! vp8dec",
        "H264" => "rtph264depay ! avdec_h264",
        other => panic!("no decoder for {other}"),
    };
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=application/x-rtp,media=video,encoding-name={codec},\
         clock-rate=90000,payload={payload_type} \
         ! {decoder} ! videoconvert ! video/x-raw,format=RGB ! appsink name=out sync=false"
    ))
    .unwrap_or_else(|e| {
        panic!("{decoder} (gst-plugins-good, gstreamer1.0-libav) is needed by the tests: {e}")
    })
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let out = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let first_ts = rtp_timestamp(&packets[0]);
    for p in packets {
        let mut buffer = gst::Buffer::from_slice(p.data.clone());
        let ticks = u64::from(rtp_timestamp(p).wrapping_sub(first_ts));
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_nseconds(ticks * 100_000 / 9));
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
    let mut frames = Vec::new();
    while let Some(sample) = out.try_pull_sample(gst::ClockTime::from_seconds(5)) {
        frames.push(to_rgb(&sample));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    frames
}

/// The number of distinct frames (RTP timestamps) in `packets`.
fn frames_in(packets: &[RtpPacket]) -> usize {
    let mut ts: Vec<u32> = packets.iter().map(rtp_timestamp).collect();
    ts.dedup();
    ts.len()
}

fn rendition_health(pipeline: &Pipeline, id: RenditionId) -> cowatch::pipeline::RenditionHealth {
    pipeline
        .health()
        .renditions
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("health lists no rendition {id}"))
}

#[test]
fn vp8_rendition_encodes_the_composite_only_while_asked() {
    let dir = scratch("vp8-rendition");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 30);
    let pipeline = Pipeline::start(settings(
        &movie,
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        "side-panel",
    ))
    .unwrap();
    let layout = Layout::builtin("side-panel").unwrap();

    let renditions = pipeline.renditions();
    let listed: Vec<_> = renditions
        .iter()
        .map(|r| (r.codec.encoding_name.as_str(), r.name.as_str(), r.on_demand))
        .collect();
    assert_eq!(
        listed,
        [
            ("H264", "720p", false),
            ("H264", "360p", true),
            ("VP8", "720p", true),
            ("VP8", "360p", true)
        ]
    );
    assert_eq!(renditions[0].id, RenditionId::MAIN);
    let vp8_id = pipeline.rendition_id("VP8", "720p").unwrap();
    let vp8 = renditions.iter().find(|r| r.id == vp8_id).unwrap();
    assert_eq!((vp8.width, vp8.height), (1280, 720));
    let mut pts: Vec<u8> = renditions.iter().map(|r| r.codec.payload_type).collect();
    pts.sort();
    pts.dedup();
    assert_eq!(
        pts.len(),
        renditions.len(),
        "payload types clash: {renditions:?}"
    );
    let mut main_rx = pipeline.subscribe_video();
    let mut rx = pipeline.subscribe_rendition(vp8_id).unwrap();
    assert!(pipeline.subscribe_rendition(RenditionId(9)).is_none());
    assert!(pipeline.set_rendition_active(RenditionId(9), true).is_err());

    // Idle: the main stream flows, the rendition sends nothing and says so.
    wait_health(&pipeline, "a second of main video", |h| {
        h.output.video_frames >= 30
    });
    assert!(
        collect(&mut rx, Duration::from_secs(1)).is_empty(),
        "idle rendition sent packets"
    );
    let h = rendition_health(&pipeline, vp8_id);
    assert_eq!(
        (h.active, h.state, h.frames),
        (false, RenditionState::Idle, 0)
    );
    assert_eq!(h.last_started_s, None);
    let main = &pipeline.health().renditions[0];
    assert!(main.active && main.frames >= 30, "{main:?}");

    // On: the first packet starts a keyframe, at once; every frame sent decodes, with the
    // composite's pixels.
    while main_rx.try_recv().is_ok() {}
    pipeline.set_rendition_active(vp8_id, true).unwrap();
    pipeline.set_rendition_active(vp8_id, true).unwrap();
    let (took, first) = first_packet(&mut rx);
    eprintln!("first VP8 packet {} ms after activation", took.as_millis());
    assert!(first.keyframe, "the first packet is not flagged keyframe");
    assert_eq!(
        vp8_frame_start_is_key(&first.data),
        Some(true),
        "the first packet does not start a keyframe"
    );
    assert!(
        took < Duration::from_millis(500),
        "first keyframe took {took:?}"
    );
    let mut packets = vec![first];
    let (more, main) = collect_both(&mut rx, &mut main_rx, Duration::from_secs(2));
    packets.extend(more);
    // A viewer switched between renditions keeps its timestamp line: same frame, same stamp.
    assert_same_timestamps(&packets, &main, "VP8 720p");
    let (keys, deltas) = assert_vp8_flags_at_keyframes(&packets);
    // The leaky queue drops frames when the encoder falls behind (a loaded machine): the
    // count only shows that it runs.
    assert!(
        keys >= 1 && deltas >= 10,
        "{keys} keyframes, {deltas} delta frames in 2 s"
    );
    let decoded = decode_vp8(&packets, vp8.codec.payload_type);
    assert_eq!(
        decoded.len(),
        frames_in(&packets),
        "frames lost to a missing keyframe"
    );
    let last = decoded.last().unwrap();
    expect_at(last, layout.movie, MOVIE_RED, "VP8 movie").unwrap();
    expect_at(last, layout.webcam_inner(), WEBCAM_GREEN, "VP8 webcam").unwrap();
    let h = rendition_health(&pipeline, vp8_id);
    assert_eq!((h.active, h.state), (true, RenditionState::Running));
    assert!(h.frames >= 15 && h.keyframes >= 1, "{h:?}");
    assert!(h.last_started_s.is_some());
    // The main encode kept its pace while both ran.
    let before = pipeline.health().output.video_frames;
    std::thread::sleep(Duration::from_secs(1));
    let main_fps = pipeline.health().output.video_frames - before;
    assert!(main_fps >= 20, "main encode slowed to {main_fps} frames/s");

    // Off: packets stop, health says idle.
    pipeline.set_rendition_active(vp8_id, false).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    while rx.try_recv().is_ok() {}
    assert!(
        collect(&mut rx, Duration::from_secs(1)).is_empty(),
        "packets after deactivation"
    );
    let h = rendition_health(&pipeline, vp8_id);
    assert_eq!((h.active, h.state), (false, RenditionState::Idle));
    assert!(h.last_stopped_s > h.last_started_s, "{h:?}");
    let frames_when_idle = h.frames;

    // On again after a pause longer than a GOP: a forced keyframe first, at once.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(rendition_health(&pipeline, vp8_id).frames, frames_when_idle);
    pipeline.set_rendition_active(vp8_id, true).unwrap();
    let (took, first) = first_packet(&mut rx);
    eprintln!(
        "first VP8 packet {} ms after re-activation",
        took.as_millis()
    );
    assert!(first.keyframe && vp8_frame_start_is_key(&first.data) == Some(true));
    assert!(
        took < Duration::from_millis(500),
        "first keyframe took {took:?}"
    );
    let mut packets = vec![first];
    packets.extend(collect(&mut rx, Duration::from_secs(1)));
    assert_vp8_flags_at_keyframes(&packets);
    let decoded = decode_vp8(&packets, vp8.codec.payload_type);
    assert_eq!(
        decoded.len(),
        frames_in(&packets),
        "frames lost to a missing keyframe"
    );
    expect_at(
        decoded.last().unwrap(),
        layout.movie,
        MOVIE_RED,
        "VP8 movie again",
    )
    .unwrap();

    // A keyframe on request.
    let keys = rendition_health(&pipeline, vp8_id).keyframes;
    pipeline.request_keyframe_of(vp8_id);
    wait_health(&pipeline, "requested VP8 keyframe", |h| {
        h.renditions
            .iter()
            .any(|r| r.id == vp8_id && r.keyframes > keys)
    });
    // Stopping waits for the end of every stream (the recording's index depends on it): an
    // idle rendition must not hold it up.
    pipeline.set_rendition_active(vp8_id, false).unwrap();
    let stopping = std::time::Instant::now();
    block(pipeline.shutdown());
    eprintln!(
        "shutdown with the rendition idle took {:?}",
        stopping.elapsed()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "shutdown with the rendition idle took {:?}",
        stopping.elapsed()
    );
    assert!(matches!(
        pipeline.set_rendition_active(vp8_id, false),
        Err(cowatch::pipeline::PipelineError::Stopped)
    ));
}

#[test]
fn vp8_main_has_no_vp8_fallback_and_flags_exactly_its_keyframes() {
    let dir = scratch("vp8-flags");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 10);
    let mut s = settings(&movie, WebcamSource::None, "inset");
    s.encoder =
        cowatch::pipeline::presets::EncoderPreset::load("vp8", std::path::Path::new("pipelines"))
            .unwrap();
    let pipeline = Pipeline::start(s).unwrap();
    let listed: Vec<_> = pipeline
        .renditions()
        .into_iter()
        .map(|r| (r.id, r.codec.encoding_name, r.name))
        .collect();
    assert_eq!(
        listed,
        [
            (RenditionId::MAIN, "VP8".into(), "720p".into()),
            (RenditionId(1), "VP8".into(), "360p".into())
        ]
    );
    assert_eq!(
        pipeline.rendition_id("VP8", "720p"),
        Some(RenditionId::MAIN)
    );
    assert!(pipeline.subscribe_rendition(RenditionId(2)).is_none());
    let mut rx = pipeline.subscribe_video();
    wait_health(&pipeline, "vp8 frames", |h| h.output.video_frames >= 10);
    let mut packets = collect(&mut rx, Duration::from_millis(1500));
    pipeline.request_keyframe();
    packets.extend(collect(&mut rx, Duration::from_millis(1500)));
    let (keys, deltas) = assert_vp8_flags_at_keyframes(&packets);
    // The 2 s GOP and the requested one.
    assert!(
        keys >= 2 && deltas >= 40,
        "{keys} keyframes, {deltas} delta frames in 3 s"
    );
    block(pipeline.shutdown());
}

#[test]
fn opus_carries_in_band_fec() {
    let dir = scratch("opus-fec");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 10);
    let pipeline = Pipeline::start(settings(&movie, WebcamSource::None, "inset")).unwrap();
    let mut rx = pipeline.subscribe_audio();
    wait_health(&pipeline, "audio", |h| h.output.audio_packets >= 50);
    let packets = collect(&mut rx, Duration::from_secs(1));
    assert!(
        packets.len() >= 40,
        "{} audio packets in 1 s",
        packets.len()
    );
    // FEC lives in the SILK layer: TOC configs 0..=15 (SILK or hybrid) carry it, CELT-only
    // (16..=31) cannot. Only a packet after the first can hold a copy of its predecessor.
    let configs: Vec<u8> = packets.iter().map(|p| p.data[12] >> 3).collect();
    assert!(
        configs.iter().all(|c| *c < 16),
        "CELT-only Opus packets carry no FEC: configs {configs:?}"
    );
    block(pipeline.shutdown());
}

/// The packets `a` and `b` receive within `window`, drained side by side so neither lags.
fn collect_both(
    a: &mut tokio::sync::broadcast::Receiver<RtpPacket>,
    b: &mut tokio::sync::broadcast::Receiver<RtpPacket>,
    window: Duration,
) -> (Vec<RtpPacket>, Vec<RtpPacket>) {
    let until = std::time::Instant::now() + window;
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    while std::time::Instant::now() < until {
        let mut idle = true;
        for (rx, out) in [(&mut *a, &mut from_a), (&mut *b, &mut from_b)] {
            match rx.try_recv() {
                Ok(p) => {
                    out.push(p);
                    idle = false;
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {}
                Err(e) => panic!("video channel: {e}"),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    (from_a, from_b)
}

/// Every frame of `rendition` that falls within what `main` sent at the same time carries the
/// RTP timestamp of one of `main`'s frames: the same composite frame, the same timestamp.
fn assert_same_timestamps(rendition: &[RtpPacket], main: &[RtpPacket], name: &str) {
    let main: std::collections::BTreeSet<u32> = main.iter().map(rtp_timestamp).collect();
    let (Some(&first), Some(&last)) = (main.first(), main.last()) else {
        panic!("no main packets");
    };
    // Timestamps advance 3000 a frame from a random start: no wrap within a few seconds
    // unless the start was near it, which `within` handles by distance from `first`.
    let within = |ts: u32| ts.wrapping_sub(first) <= last.wrapping_sub(first);
    let frames: std::collections::BTreeSet<u32> = rendition
        .iter()
        .map(rtp_timestamp)
        .filter(|ts| within(*ts))
        .collect();
    let shared = frames.intersection(&main).count();
    eprintln!(
        "{name}: {} frames within the main stream's {} frames, {shared} with a main timestamp",
        frames.len(),
        main.len()
    );
    assert!(
        frames.len() >= 20,
        "{name}: only {} frames overlap the main stream's",
        frames.len()
    );
    assert_eq!(
        shared,
        frames.len(),
        "{name} frames whose timestamp no main frame has: {:?}",
        frames.difference(&main).take(5).collect::<Vec<_>>()
    );
}

/// `rect` of a 1280x720 canvas on a picture scaled by `factor` (2 for 360p).
fn scaled(rect: cowatch::pipeline::layout::Rect, factor: u32) -> cowatch::pipeline::layout::Rect {
    cowatch::pipeline::layout::Rect {
        x: rect.x / factor as i32,
        y: rect.y / factor as i32,
        width: rect.width / factor,
        height: rect.height / factor,
    }
}

#[test]
fn h264_360p_rendition_is_the_whole_composite_scaled_on_the_same_timestamps() {
    let dir = scratch("h264-360p");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 30);
    let pipeline = Pipeline::start(settings(
        &movie,
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        "side-panel",
    ))
    .unwrap();
    let layout = Layout::builtin("side-panel").unwrap();
    let id = pipeline.rendition_id("h264", "360p").unwrap();
    let info = pipeline
        .renditions()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    assert_eq!(
        (info.width, info.height, info.bitrate_kbps, info.on_demand),
        (640, 360, 600, true)
    );
    let main = &pipeline.renditions()[0];
    assert_eq!(
        (
            main.name.as_str(),
            main.width,
            main.height,
            main.bitrate_kbps
        ),
        ("720p", 1280, 720, 1500)
    );

    // Idle: health lists it by name and size, and it sends nothing.
    wait_health(&pipeline, "a second of main video", |h| {
        h.output.video_frames >= 30
    });
    let h = rendition_health(&pipeline, id);
    assert_eq!(
        (h.name.as_str(), h.width, h.height, h.codec.as_str()),
        ("360p", 640, 360, "H264")
    );
    assert_eq!((h.state, h.frames), (RenditionState::Idle, 0));
    let mut rx = pipeline.subscribe_rendition(id).unwrap();
    let mut main_rx = pipeline.subscribe_video();
    assert!(
        collect(&mut rx, Duration::from_millis(500)).is_empty(),
        "idle rendition sent packets"
    );
    while main_rx.try_recv().is_ok() {}

    // On: a keyframe at once, then the whole composite at half size.
    pipeline.set_rendition_active(id, true).unwrap();
    let (took, first) = first_packet(&mut rx);
    eprintln!("first 360p packet {} ms after activation", took.as_millis());
    assert!(
        first.keyframe,
        "the first 360p packet is not flagged keyframe"
    );
    assert!(
        took < Duration::from_millis(500),
        "first keyframe took {took:?}"
    );
    let mut packets = vec![first];
    let (more, main_packets) = collect_both(&mut rx, &mut main_rx, Duration::from_secs(2));
    packets.extend(more);
    assert_same_timestamps(&packets, &main_packets, "H.264 360p");
    let decoded = decode(&packets, "H264", info.codec.payload_type);
    assert_eq!(
        decoded.len(),
        frames_in(&packets),
        "frames lost to a missing keyframe"
    );
    let last = decoded.last().unwrap();
    assert_eq!(last.dimensions(), (640, 360));
    // Scaled, not cropped: every layer sits at half its canvas position and size.
    expect_at(last, scaled(layout.movie, 2), MOVIE_RED, "360p movie").unwrap();
    expect_at(
        last,
        scaled(layout.webcam_inner(), 2),
        WEBCAM_GREEN,
        "360p webcam",
    )
    .unwrap();
    let chat = scaled(layout.chat.unwrap(), 2);
    let bg = layout.chat_background;
    expect_at(last, chat, [bg.r, bg.g, bg.b], "360p chat panel").unwrap();
    let h = rendition_health(&pipeline, id);
    assert_eq!(h.state, RenditionState::Running);
    assert!(h.frames >= 20 && h.keyframes >= 1, "{h:?}");

    // Off: it stops sending, health says idle; the main stream goes on.
    pipeline.set_rendition_active(id, false).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    while rx.try_recv().is_ok() {}
    let frames = pipeline.health().output.video_frames;
    assert!(
        collect(&mut rx, Duration::from_secs(1)).is_empty(),
        "360p packets after deactivation"
    );
    assert!(pipeline.health().output.video_frames >= frames + 20);
    let h = rendition_health(&pipeline, id);
    assert_eq!(h.state, RenditionState::Idle);
    assert!(h.last_stopped_s > h.last_started_s, "{h:?}");
    block(pipeline.shutdown());
}

#[test]
fn a_bad_ladder_is_refused_with_what_to_fix() {
    use cowatch::pipeline::ladder::Ladder;
    let dir = scratch("bad-ladder");
    let write = |text: &str| std::fs::write(dir.join("ladder.toml"), text).unwrap();
    write(
        "[[rendition]]\nname = \"720p\"\nheight = 720\n[[rendition]]\nname = \"360p\"\nheight = 361\nbitrate_kbps = 600\n",
    );
    let err = Ladder::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("ladder.toml") && err.contains("360p") && err.contains("even"),
        "{err}"
    );
    write("fallback_encoders = [\"av1\"]\n[[rendition]]\nname = \"720p\"\nheight = 720\n");
    let err = Ladder::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("av1") && err.contains("fallback_encoders"),
        "{err}"
    );

    // Taller than the canvas: refused when the pipeline starts, before anything runs.
    write(
        "[[rendition]]\nname = \"1080p\"\nheight = 1080\n[[rendition]]\nname = \"360p\"\nheight = 360\nbitrate_kbps = 600\n",
    );
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 5);
    let mut s = settings(&movie, WebcamSource::None, "inset");
    s.ladder = Ladder::load(&dir).unwrap();
    let err = Pipeline::start(s)
        .err()
        .expect("a 1080p rendition on a 720p canvas");
    let err = err.to_string();
    assert!(err.contains("1080p") && err.contains("1280x720"), "{err}");
}
