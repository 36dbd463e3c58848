//! Pixels through WebRTC: GStreamer's own `webrtcbin` (another WebRTC stack) watches the party
//! over WHEP, decodes it, and finds the webcam inside its rectangle and the movie elsewhere.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::layout::Layout;
use cowatch::pipeline::source::WebcamSource;
use gstreamer as gst;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

use gst::prelude::*;

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    raw_http(addr, method, path, None, body)
}

/// A webrtcbin viewer: returns the latest decoded RGB frame through `latest`.
struct WebrtcbinViewer {
    pipeline: gst::Pipeline,
    latest: Arc<Mutex<Option<image::RgbImage>>>,
}

impl WebrtcbinViewer {
    fn connect(server: SocketAddr) -> Self {
        gst::init().unwrap();
        let pipeline = gst::Pipeline::new();
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .expect("webrtcbin (gstreamer1.0-plugins-bad, gstreamer1.0-nice)");
        pipeline.add(&webrtc).unwrap();
        // Gather on loopback only: every packet of this test stays on 127.0.0.1.
        let ice = webrtc.property::<gst_webrtc::WebRTCICE>("ice-agent");
        let added = ice.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]);
        assert!(added, "webrtcbin refused to restrict ICE to loopback");

        let latest = Arc::new(Mutex::new(None));
        {
            let latest = latest.clone();
            let weak = pipeline.downgrade();
            webrtc.connect_pad_added(move |_, pad| {
                let Some(pipeline) = weak.upgrade() else {
                    return;
                };
                let caps = pad.current_caps().unwrap();
                let media = caps.structure(0).unwrap().get::<String>("media").unwrap();
                if media != "video" {
                    let sink = gst::ElementFactory::make("fakesink")
                        .property("async", false)
                        .build()
                        .unwrap();
                    pipeline.add(&sink).unwrap();
                    sink.sync_state_with_parent().unwrap();
                    pad.link(&sink.static_pad("sink").unwrap()).unwrap();
                    return;
                }
                let latest = latest.clone();
                let chain = h264_to_rgb(move |img| *latest.lock().unwrap() = Some(img));
                pipeline.add_many(&chain).unwrap();
                gst::Element::link_many(&chain).unwrap();
                for e in &chain {
                    e.sync_state_with_parent().unwrap();
                }
                pad.link(&chain[0].static_pad("sink").unwrap()).unwrap();
            });
        }
        for (media, caps) in [
            (
                "video",
                "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,packetization-mode=(string)1,profile-level-id=(string)42e01f",
            ),
            (
                "audio",
                "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000",
            ),
        ] {
            let caps: gst::Caps = caps.parse().unwrap();
            webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
            );
            let _ = media;
        }
        pipeline.set_state(gst::State::Playing).unwrap();

        // Offer, then wait for all (loopback) candidates: WHEP here is not trickled.
        let promise = gst::Promise::new();
        webrtc.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        let reply = promise.wait();
        assert_eq!(reply, gst::PromiseResult::Replied);
        let offer = promise
            .get_reply()
            .unwrap()
            .value("offer")
            .unwrap()
            .get::<gst_webrtc::WebRTCSessionDescription>()
            .unwrap();
        webrtc.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            != gst_webrtc::WebRTCICEGatheringState::Complete
        {
            assert!(Instant::now() < deadline, "ICE gathering did not complete");
            std::thread::sleep(Duration::from_millis(20));
        }
        let local = webrtc
            .property::<gst_webrtc::WebRTCSessionDescription>("local-description")
            .sdp()
            .as_text()
            .unwrap();
        let (status, head, body) = http(server, "POST", "/whep", &local);
        assert_eq!(status, 201, "{head}\n{body}");
        let answer = gst_sdp::SDPMessage::parse_buffer(body.as_bytes()).unwrap();
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, answer);
        webrtc.emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
        Self { pipeline, latest }
    }

    fn wait_for(&self, what: &str, check: impl Fn(&image::RgbImage) -> Result<(), String>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::from("no frame decoded");
        while Instant::now() < deadline {
            if let Some(img) = self.latest.lock().unwrap().clone() {
                match check(&img) {
                    Ok(()) => return,
                    Err(why) => last = why,
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what}: {last}");
    }
}

impl Drop for WebrtcbinViewer {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtcbin_sees_the_webcam_in_its_rectangle() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = scratch("webrtc-pixels");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 20);
    let pipeline = Pipeline::start(settings(
        &movie,
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        "side-panel",
    ))
    .unwrap();
    let broadcaster = broadcaster(&pipeline, 10).await;
    let server = serve(&pipeline, &broadcaster).await;

    let viewer = tokio::task::spawn_blocking(move || {
        let viewer = WebrtcbinViewer::connect(server);
        let layout = Layout::builtin("side-panel").unwrap();
        viewer.wait_for("webcam and movie through WebRTC", |img| {
            if img.width() != 1280 || img.height() != 720 {
                return Err(format!("frame is {}x{}", img.width(), img.height()));
            }
            expect_at(img, layout.webcam_inner(), WEBCAM_GREEN, "webcam")?;
            expect_at(img, layout.movie, MOVIE_RED, "movie")?;
            // Elsewhere than the webcam: a corner of the movie and the chat panel.
            let (mx, my) = (
                layout.movie.x + 200,
                layout.movie.y + layout.movie.height as i32 / 2,
            );
            let got = colour_at(img, mx, my);
            if !close(got, MOVIE_RED) {
                return Err(format!("movie at ({mx},{my}) is {got:?}"));
            }
            Ok(())
        });
        viewer
    })
    .await
    .unwrap();
    assert_eq!(broadcaster.stats().connected, 1);
    assert!(broadcaster.stats().keyframes_forced >= 1 || broadcaster.stats().joins == 1);
    drop(viewer);
    pipeline.shutdown().await;
}
