//! The host pipeline seen from the outside: its RTP decoded back into pictures, its controls
//! applied while it streams, its faults survived.

mod common;

use std::time::Duration;

use common::*;
use cowatch::overlay::slate::{self, SlateKind};
use cowatch::pipeline::layout::Layout;
use cowatch::pipeline::source::{MovieSource, WebcamSource};
use cowatch::pipeline::{MovieState, Pipeline, WebcamState};

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
