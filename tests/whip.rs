//! WHIP ingest: a publisher's camera in the composite's webcam rectangle.
//!
//! The publisher is OBS-like, on another WebRTC stack than ours: GStreamer's `webrtcbin` sends
//! H.264 Main profile without B-frames on pt 96 and Opus on pt 111, with no candidates in its
//! offer and no trickle. The composite is read back by decoding the broadcast's own RTP.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::layout::Layout;
use cowatch::pipeline::source::WebcamSource;
use gstreamer as gst;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

use gst::prelude::*;

/// The publisher's camera: nothing else in the party is this colour.
const PUBLISHED_BLUE: [u8; 3] = [40, 60, 220];

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    raw_http(addr, method, path, key, body)
}

/// An OBS-like WHIP publisher of one solid colour and a tone.
struct Publisher {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
}

impl Publisher {
    /// Builds the sender and makes its offer: no candidates in it, as OBS sends.
    fn offer(color: [u8; 3]) -> (Self, String) {
        gst::init().unwrap();
        let argb = 0xff00_0000u32
            | (u32::from(color[0]) << 16)
            | (u32::from(color[1]) << 8)
            | u32::from(color[2]);
        let description = format!(
            "webrtcbin name=w bundle-policy=max-bundle \
             videotestsrc is-live=true pattern=solid-color foreground-color={argb} \
             ! video/x-raw,width=640,height=480,framerate=30/1 ! videoconvert \
             ! x264enc tune=zerolatency bframes=0 key-int-max=60 speed-preset=ultrafast \
             ! video/x-h264,profile=main ! rtph264pay pt=96 config-interval=-1 \
             ! application/x-rtp,media=video,encoding-name=H264,payload=96 ! w. \
             audiotestsrc is-live=true wave=sine freq=880 ! audioconvert ! audioresample \
             ! opusenc ! rtpopuspay pt=111 \
             ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! w."
        );
        let pipeline = gst::parse::launch(&description)
            .expect("the publisher's pipeline (x264enc, opusenc, webrtcbin)")
            .downcast::<gst::Pipeline>()
            .unwrap();
        let webrtc = pipeline.by_name("w").unwrap();
        // Gather on loopback only: every packet of this test stays on 127.0.0.1.
        let ice = webrtc.property::<gst_webrtc::WebRTCICE>("ice-agent");
        assert!(ice.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]));
        pipeline.set_state(gst::State::Playing).unwrap();
        // Offer once both streams have their caps, as OBS does (webrtcbin would otherwise
        // offer an m-line it cannot fill yet).
        let deadline = Instant::now() + Duration::from_secs(5);
        while webrtc
            .sink_pads()
            .iter()
            .any(|pad| pad.current_caps().is_none())
        {
            assert!(
                Instant::now() < deadline,
                "the publisher's encoders did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let promise = gst::Promise::new();
        webrtc.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        assert_eq!(promise.wait(), gst::PromiseResult::Replied);
        let offer = promise
            .get_reply()
            .unwrap()
            .value("offer")
            .unwrap()
            .get::<gst_webrtc::WebRTCSessionDescription>()
            .unwrap();
        webrtc.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
        let sdp = offer.sdp().as_text().unwrap();
        assert!(
            !sdp.contains("a=candidate"),
            "an OBS-like offer has no candidates"
        );
        assert!(sdp.contains("H264/90000"), "{sdp}");
        (Self { pipeline, webrtc }, sdp)
    }

    fn answer(&self, answer: &str) {
        let answer = gst_sdp::SDPMessage::parse_buffer(answer.as_bytes()).unwrap();
        let answer =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, answer);
        self.webrtc
            .emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn webcam_is(img: &image::RgbImage, color: [u8; 3]) -> Result<(), String> {
    let layout = Layout::builtin("side-panel").unwrap();
    expect_at(img, layout.webcam_inner(), color, "webcam")
}

fn webcam_is_not(img: &image::RgbImage, color: [u8; 3]) -> Result<(), String> {
    match webcam_is(img, color) {
        Ok(()) => Err("the webcam rectangle still shows the publisher".into()),
        Err(_) => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_obs_like_publisher_takes_the_webcam_slot_and_leaving_brings_back_the_slate_or_camera() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = scratch("whip");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 60);
    let pipeline = Pipeline::start(settings(
        &movie,
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        "side-panel",
    ))
    .unwrap();
    let broadcaster = broadcaster(&pipeline, 10).await;
    let server = serve(&pipeline, &broadcaster).await;
    let health = move || {
        let (_, _, body) = http(server, "GET", "/healthz", None, "");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };

    let watched = pipeline.clone();
    tokio::task::spawn_blocking(move || {
        let viewer = Viewer::watch(&watched);
        viewer.wait_for("the local camera first", Duration::from_secs(10), |img| {
            webcam_is(img, WEBCAM_GREEN)
        });

        // Keys: none is 401, a viewer's or a wrong one 403; nothing changes.
        let (_, offer) = Publisher::offer(PUBLISHED_BLUE);
        let (status, _, body) = http(server, "POST", "/whip", None, &offer);
        assert_eq!(status, 401, "{body}");
        let (status, _, body) = http(server, "POST", "/whip", Some("not-the-key"), &offer);
        assert_eq!(status, 403, "{body}");
        assert!(health()["publisher"].is_null());

        // The publisher (ingest key): 201, an answer with our candidate, a Location.
        let (publisher, offer) = Publisher::offer(PUBLISHED_BLUE);
        let (status, head, answer) = http(server, "POST", "/whip", Some(INGEST_KEY), &offer);
        assert_eq!(status, 201, "{head}\n{answer}");
        let location = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("location:")
                    .then(|| l[9..].trim().to_string())
            })
            .expect("a Location header");
        assert!(location.starts_with("/whip/"), "{location}");
        assert!(answer.contains("a=candidate:"), "{answer}");
        publisher.answer(&answer);
        let asked = Instant::now();
        viewer.wait_for(
            "the publisher's camera in the webcam rectangle",
            Duration::from_secs(10),
            |img| webcam_is(img, PUBLISHED_BLUE),
        );
        println!(
            "publisher's camera in the composite {} ms after its answer",
            asked.elapsed().as_millis()
        );
        let state = health()["publisher"].clone();
        assert_eq!(state["video"], "H264", "{state}");
        assert_eq!(state["audio"], true, "{state}");
        assert_eq!(state["connected"], true, "{state}");

        // A second publisher is a conflict, and changes nothing.
        let (_, offer) = Publisher::offer(PUBLISHED_BLUE);
        let (status, _, body) = http(server, "POST", "/whip", Some(INGEST_KEY), &offer);
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("already publishing"), "{body}");
        let (status, _, _) = http(server, "PATCH", &location, Some(INGEST_KEY), "");
        assert_eq!(status, 405);

        // DELETE: the local camera comes back.
        let (status, _, body) = http(server, "DELETE", &location, Some(HOST_KEY), "");
        assert_eq!(status, 200, "{body}");
        viewer.wait_for(
            "the local camera after DELETE",
            Duration::from_secs(3),
            |img| webcam_is(img, WEBCAM_GREEN),
        );
        assert!(health()["publisher"].is_null());
        drop(publisher);

        // Publishing again with the host key, then vanishing without DELETE: the slate shows,
        // as for a local camera that stops: the webcam watchdog's 2.5 s, then the composite,
        // the encoder and this decoder (2.9 s measured on a quiet machine; the bound leaves
        // room for a loaded one).
        let (publisher, offer) = Publisher::offer(PUBLISHED_BLUE);
        let (status, _, answer) = http(server, "POST", "/whip", Some(HOST_KEY), &offer);
        assert_eq!(status, 201, "{answer}");
        publisher.answer(&answer);
        viewer.wait_for(
            "the publisher's camera again",
            Duration::from_secs(10),
            |img| webcam_is(img, PUBLISHED_BLUE),
        );
        drop(publisher);
        let gone = Instant::now();
        viewer.wait_for(
            "the slate after the publisher vanished",
            Duration::from_millis(3500),
            |img| webcam_is_not(img, PUBLISHED_BLUE),
        );
        println!(
            "slate {} ms after the publisher vanished",
            gone.elapsed().as_millis()
        );
    })
    .await
    .unwrap();
}

/// A Y4M file of one solid colour (Chromium loops it as its fake camera).
fn solid_y4m(path: &std::path::Path, color: [u8; 3]) {
    let (w, h) = (640usize, 480usize);
    let [r, g, b] = color.map(f64::from);
    // BT.601, limited range: what Chromium's capture pipeline assumes of I420.
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    let mut data = format!("YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n").into_bytes();
    for _ in 0..30 {
        data.extend_from_slice(b"FRAME\n");
        data.extend(std::iter::repeat_n(y.round() as u8, w * h));
        data.extend(std::iter::repeat_n(u.round() as u8, w * h / 4));
        data.extend(std::iter::repeat_n(v.round() as u8, w * h / 4));
    }
    std::fs::write(path, data).unwrap();
}

/// What a streamer does: open the host page, click *Use this browser's camera and mic*, and
/// see their camera in the party; *Stop* brings the party's own camera back. Then the phone
/// link: its QR code, read back, opens the phone page, whose camera goes into the party.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_page_puts_this_browsers_camera_and_then_a_phones_into_the_party() {
    let dir = scratch("whip-browser");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 60);
    let camera = dir.join("blue.y4m");
    solid_y4m(&camera, PUBLISHED_BLUE);
    let pipeline = Pipeline::start(settings(
        &movie,
        WebcamSource::Description(solid_webcam(WEBCAM_GREEN)),
        "side-panel",
    ))
    .unwrap();
    let broadcaster = broadcaster(&pipeline, 10).await;
    let server = serve(&pipeline, &broadcaster).await;

    let watched = pipeline.clone();
    tokio::task::spawn_blocking(move || {
        let viewer = Viewer::watch(&watched);
        viewer.wait_for("the local camera first", Duration::from_secs(10), |img| {
            webcam_is(img, WEBCAM_GREEN)
        });
        let fake_camera = format!("--use-file-for-fake-video-capture={}", camera.display());
        let mut browser = cowatch::tools::cdp::Browser::launch_with(&[
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            &fake_camera,
        ])
        .expect("chromium starts");
        browser
            .navigate(&format!("http://{server}/host#key={HOST_KEY}"))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while browser
            .eval("document.getElementById('dash') && !document.getElementById('dash').hidden")
            .unwrap()
            != serde_json::Value::Bool(true)
        {
            assert!(Instant::now() < deadline, "the dashboard did not open");
            std::thread::sleep(Duration::from_millis(100));
        }

        let clicked = Instant::now();
        browser
            .eval("document.getElementById('cam-start').click()")
            .unwrap();
        viewer.wait_for(
            "this browser's camera in the webcam rectangle",
            Duration::from_secs(10),
            |img| webcam_is(img, PUBLISHED_BLUE),
        );
        let shown = clicked.elapsed();
        println!(
            "browser camera in the composite {} ms after the click",
            shown.as_millis()
        );
        let status = browser
            .eval("document.getElementById('cam-status').textContent")
            .unwrap();
        let preview = browser
            .eval("document.getElementById('cam-preview').videoWidth")
            .unwrap();
        assert!(
            preview.as_u64().is_some_and(|w| w > 0),
            "the preview plays: {preview}"
        );

        browser
            .eval("document.getElementById('cam-stop').click()")
            .unwrap();
        viewer.wait_for(
            "the party's camera after Stop",
            Duration::from_secs(3),
            |img| webcam_is(img, WEBCAM_GREEN),
        );
        let requests = browser.requests();
        assert!(
            requests.iter().any(|r| r.contains("/whip")),
            "the page published over WHIP: {requests:?}"
        );
        assert!(
            !requests.iter().any(|r| r.contains(HOST_KEY)),
            "a request line carries the host key: {requests:?}"
        );
        assert!(
            status.as_str().is_some_and(|s| s.contains("in the party")),
            "the page says the camera is in: {status}"
        );
        // Measured as a streamer would see it, but bounded loosely: CI shares two cores.
        assert!(
            shown < Duration::from_secs(5),
            "camera shown after {shown:?}"
        );

        // A phone's camera: the dashboard draws the phone link as a QR code, and the page it
        // names publishes with the ingest key from its fragment.
        browser
            .eval("document.getElementById('phone-show').click()")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while browser
            .eval("document.getElementById('phone-qr').naturalWidth")
            .unwrap()
            .as_u64()
            .unwrap_or(0)
            == 0
        {
            assert!(Instant::now() < deadline, "no QR code on the dashboard");
            std::thread::sleep(Duration::from_millis(100));
        }
        let png: Vec<u8> = serde_json::from_value(
            browser
                .eval(
                    "(async () => { const r = await fetch(document.getElementById('phone-qr').src); \
                     return Array.from(new Uint8Array(await r.arrayBuffer())); })()",
                )
                .unwrap(),
        )
        .unwrap();
        let qr = image::load_from_memory(&png).unwrap().to_luma8();
        let mut prepared = rqrr::PreparedImage::prepare(qr);
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the picture");
        let (_, link) = grids[0].decode().expect("the QR code reads");
        assert_eq!(link, format!("http://{server}/phone#key={INGEST_KEY}"));
        browser.navigate(&link).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while browser
            .eval("!!document.getElementById('cam-start')")
            .unwrap()
            != serde_json::Value::Bool(true)
        {
            assert!(Instant::now() < deadline, "the phone page did not open");
            std::thread::sleep(Duration::from_millis(100));
        }
        browser
            .eval("document.getElementById('cam-start').click()")
            .unwrap();
        viewer.wait_for(
            "the phone's camera in the webcam rectangle",
            Duration::from_secs(10),
            |img| webcam_is(img, PUBLISHED_BLUE),
        );
        let requests = browser.requests();
        assert!(
            !requests.iter().any(|r| r.contains(INGEST_KEY)),
            "a request line carries the ingest key: {requests:?}"
        );
    })
    .await
    .unwrap();
}
