//! Helpers shared by the integration tests: media files made on the spot, and a decoder that
//! turns the pipeline's RTP back into pictures, as a viewer would see them.

#![allow(dead_code)]

pub mod helix;
pub mod janus;
pub mod netns_party;
pub mod receivers;
pub mod twitch;
pub mod twitch_id;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cowatch::pipeline::layout::{Layout, Rect};
use cowatch::pipeline::output::RtpPacket;
use cowatch::pipeline::presets::EncoderPreset;
use cowatch::pipeline::source::{MicSource, MovieSource, WebcamSource};
use cowatch::pipeline::{Pipeline, Settings};
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use gst::prelude::*;
use gst_video::prelude::*;

/// Solid colours far apart in YUV, so a pixel cannot be mistaken for another.
pub const MOVIE_RED: [u8; 3] = [210, 40, 40];
pub const MOVIE_BLUE: [u8; 3] = [40, 60, 220];
pub const WEBCAM_GREEN: [u8; 3] = [40, 200, 60];

/// A unique scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cowatch-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn argb(c: [u8; 3]) -> u32 {
    0xff00_0000 | (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2])
}

/// Writes a Matroska movie of one solid colour with a tone: H.264 + Opus, like a real file.
pub fn make_movie(path: &Path, color: [u8; 3], seconds: u32) {
    gst::init().unwrap();
    let desc = format!(
        "videotestsrc pattern=solid-color foreground-color={fg} num-buffers={frames} \
         ! video/x-raw,width=640,height=360,framerate=25/1 ! x264enc speed-preset=ultrafast \
         ! h264parse ! matroskamux name=mux ! filesink location=\"{loc}\" \
         audiotestsrc num-buffers={abufs} samplesperbuffer=960 freq=330 \
         ! audio/x-raw,rate=48000 ! opusenc ! mux.",
        fg = argb(color),
        frames = seconds * 25,
        abufs = seconds * 50,
        loc = path.display()
    );
    let pipeline = gst::parse::launch(&desc).expect("test movie pipeline (x264enc, opusenc)");
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("test movie written in time");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("cannot write test movie: {}", e.error());
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

/// A live webcam description of one solid colour.
pub fn solid_webcam(color: [u8; 3]) -> String {
    format!(
        "videotestsrc is-live=true pattern=solid-color foreground-color={} \
         ! video/x-raw,width=640,height=480,framerate=30/1",
        argb(color)
    )
}

/// Settings for a test party: given movie, webcam and layout, no mic, low bitrate.
pub fn settings(movie: &Path, webcam: WebcamSource, layout: &str) -> Settings {
    Settings {
        movie: MovieSource::parse(movie.to_str().unwrap()).unwrap(),
        loop_movie: false,
        webcam,
        mic: MicSource::None,
        layout: Layout::builtin(layout).unwrap(),
        layouts: Default::default(),
        encoder: EncoderPreset::load("h264", Path::new("pipelines")).unwrap(),
        ladder: cowatch::pipeline::ladder::Ladder::load(Path::new("pipelines")).unwrap(),
        bitrate_kbps: 1500,
        duck_db: 12.0,
        record: None,
        timecode: false,
    }
}

/// Decodes the pipeline's video RTP, keeping the latest picture.
pub struct Viewer {
    latest: Arc<Mutex<Option<(Instant, image::RgbImage)>>>,
    frames: Arc<Mutex<u64>>,
    decoder: gst::Pipeline,
    pub rtp_timestamps: Arc<Mutex<Vec<u32>>>,
}

impl Viewer {
    /// Subscribes to `pipeline`'s video and decodes it with GStreamer's own depayloader and
    /// libav's decoder: nothing of cowatch on this side.
    pub fn watch(pipeline: &Pipeline) -> Self {
        let codecs = pipeline.codecs();
        let decoder = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(
                &gst::Caps::builder("application/x-rtp")
                    .field("media", "video")
                    .field("encoding-name", "H264")
                    .field("clock-rate", 90_000i32)
                    .field("payload", i32::from(codecs.video.payload_type))
                    .build(),
            )
            .is_live(true)
            .format(gst::Format::Time)
            .do_timestamp(true)
            .build();
        let latest = Arc::new(Mutex::new(None));
        let frames = Arc::new(Mutex::new(0));
        let chain = {
            let latest = latest.clone();
            let frames = frames.clone();
            h264_to_rgb(move |img| {
                *latest.lock().unwrap() = Some((Instant::now(), img));
                *frames.lock().unwrap() += 1;
            })
        };
        decoder.add(&src).unwrap();
        decoder.add_many(&chain).unwrap();
        src.link(&chain[0]).unwrap();
        gst::Element::link_many(&chain).unwrap();
        decoder.set_state(gst::State::Playing).unwrap();
        let rtp_timestamps = Arc::new(Mutex::new(Vec::new()));
        let mut rx = pipeline.subscribe_video();
        pipeline.request_keyframe();
        {
            let rtp_timestamps = rtp_timestamps.clone();
            std::thread::spawn(move || {
                loop {
                    let packet: RtpPacket = match rx.blocking_recv() {
                        Ok(p) => p,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    };
                    if packet.data.len() >= 8 {
                        let ts = u32::from_be_bytes(packet.data[4..8].try_into().unwrap());
                        rtp_timestamps.lock().unwrap().push(ts);
                    }
                    if src
                        .push_buffer(gst::Buffer::from_slice(packet.data))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        Self {
            latest,
            frames,
            decoder,
            rtp_timestamps,
        }
    }

    /// Decoded frames so far.
    pub fn frames(&self) -> u64 {
        *self.frames.lock().unwrap()
    }

    /// A picture decoded after this call (so it reflects everything done before it).
    pub fn fresh_frame(&self) -> image::RgbImage {
        let asked = Instant::now();
        let deadline = asked + Duration::from_secs(10);
        loop {
            if let Some((at, img)) = &*self.latest.lock().unwrap()
                && *at > asked
            {
                return img.clone();
            }
            assert!(Instant::now() < deadline, "no decoded frame within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `check` holds for a fresh frame, or fails with the last mismatch.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&image::RgbImage) -> Result<(), String>,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.fresh_frame();
            match check(&frame) {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => {
                    let path = std::env::temp_dir()
                        .join(format!("cowatch-failed-{}.png", what.replace(' ', "-")));
                    let _ = frame.save(&path);
                    panic!("{what}: {why} (frame saved to {})", path.display());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.decoder.set_state(gst::State::Null);
    }
}

/// Average colour of the 9×9 block around (x, y).
pub fn colour_at(img: &image::RgbImage, x: i32, y: i32) -> [u8; 3] {
    let mut sum = [0u32; 3];
    let mut n = 0;
    for dy in -4..=4 {
        for dx in -4..=4 {
            let p = img.get_pixel((x + dx) as u32, (y + dy) as u32);
            for c in 0..3 {
                sum[c] += u32::from(p[c]);
            }
            n += 1;
        }
    }
    sum.map(|s| (s / n) as u8)
}

/// Whether two colours match within what an encode/decode round trip changes.
pub fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 32)
}

/// Checks that the centre of `rect` has `expected`.
pub fn expect_at(
    img: &image::RgbImage,
    rect: Rect,
    expected: [u8; 3],
    name: &str,
) -> Result<(), String> {
    let (x, y) = rect.center();
    let got = colour_at(img, x, y);
    if close(got, expected) {
        Ok(())
    } else {
        Err(format!(
            "{name} centre ({x},{y}) is {got:?}, expected {expected:?}"
        ))
    }
}

/// Waits for the pipeline's health to satisfy `check`.
pub fn wait_health(
    pipeline: &Pipeline,
    what: &str,
    check: impl Fn(&cowatch::pipeline::Health) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check(&pipeline.health()) {
        assert!(
            Instant::now() < deadline,
            "{what}: health is {}",
            serde_json::to_string(&pipeline.health()).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// H.264 RTP → picture: GStreamer's depayloader and libav's decoder, nothing of cowatch.
/// Every decoded frame goes to `on_frame`.
pub fn h264_to_rgb(
    on_frame: impl Fn(image::RgbImage) + Send + Sync + 'static,
) -> [gst::Element; 4] {
    let depay = gst::ElementFactory::make("rtph264depay").build().unwrap();
    let dec = gst::ElementFactory::make("avdec_h264")
        .build()
        .expect("avdec_h264 (gstreamer1.0-libav) is needed by the tests");
    let convert = gst::ElementFactory::make("videoconvert").build().unwrap();
    let sink = gst_app::AppSink::builder()
        .caps(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGB")
                .build(),
        )
        .sync(false)
        .build();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                on_frame(to_rgb(&sample));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    [depay, dec, convert, sink.upcast()]
}

/// Copies an RGB sample into an image.
pub fn to_rgb(sample: &gst::Sample) -> image::RgbImage {
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let buffer = sample.buffer().unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).unwrap();
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).unwrap();
    image::RgbImage::from_fn(info.width(), info.height(), |x, y| {
        let i = y as usize * stride + x as usize * 3;
        image::Rgb([data[i], data[i + 1], data[i + 2]])
    })
}

/// Settings for the demo party (generated movie and tone), no mic.
pub fn demo_settings(webcam: WebcamSource, layout: &str, bitrate_kbps: u32) -> Settings {
    let catalog = cowatch::pipeline::presets::SourceCatalog::load(Path::new("pipelines")).unwrap();
    Settings {
        movie: MovieSource::demo(&catalog),
        loop_movie: true,
        webcam,
        mic: MicSource::None,
        layout: Layout::builtin(layout).unwrap(),
        layouts: Default::default(),
        encoder: EncoderPreset::load("h264", Path::new("pipelines")).unwrap(),
        ladder: cowatch::pipeline::ladder::Ladder::load(Path::new("pipelines")).unwrap(),
        bitrate_kbps,
        duck_db: 12.0,
        record: None,
        timecode: false,
    }
}

/// The fan-out of `pipeline` on a free loopback UDP port, for `max_viewers`. Offers still
/// connecting are capped far above the defaults: these tests' viewers all come from one address
/// (or, through `oneshot`, from none), and the pending caps have tests of their own
/// (`squat.rs`, which uses [`broadcaster_with`]).
pub async fn broadcaster(
    pipeline: &Pipeline,
    max_viewers: usize,
) -> cowatch::broadcast::Broadcaster {
    broadcaster_with(
        pipeline,
        cowatch::broadcast::SeatLimits {
            max_viewers,
            max_pending: max_viewers.max(100),
            max_pending_per_address: max_viewers.max(100),
        },
    )
    .await
}

/// The fan-out of `pipeline` on a free loopback UDP port, with `seats`.
pub async fn broadcaster_with(
    pipeline: &Pipeline,
    seats: cowatch::broadcast::SeatLimits,
) -> cowatch::broadcast::Broadcaster {
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    cowatch::broadcast::Broadcaster::start(
        cowatch::broadcast::BroadcastConfig {
            bind: loopback,
            advertise: loopback,
            seats,
            rendition_linger: cowatch::broadcast::RENDITION_LINGER,
        },
        pipeline.clone(),
        &cowatch::shutdown::Shutdown::new(),
    )
    .await
    .unwrap()
}

/// The web app over `pipeline` and `broadcaster`, with an empty chat, a fresh data
/// directory, a public party whose host key is [`HOST_KEY`], and no library.
pub fn app(pipeline: &Pipeline, broadcaster: &cowatch::broadcast::Broadcaster) -> axum::Router {
    cowatch::web::app(state(pipeline, broadcaster, &scratch_data(), None))
}

/// The host key of the parties the tests build.
pub const HOST_KEY: &str = "test-host-key-0123456789abcdefghijklmnopq";

/// The ingest key of [`state`]'s servers: it may publish a camera (WHIP) and nothing else.
pub const INGEST_KEY: &str = "test-ingest-key-0123456789abcdefghijkl";

/// A data directory of its own for one server.
pub fn scratch_data() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    scratch(&format!("data-{n}"))
}

/// Everything a server holds: the store in `data_dir`, the party (host key [`HOST_KEY`]),
/// moderation (forwarding to `helix` when given) and the chat hub it guards (`state.chat`,
/// with the default settings).
pub fn state(
    pipeline: &Pipeline,
    broadcaster: &cowatch::broadcast::Broadcaster,
    data_dir: &Path,
    helix: Option<cowatch::moderation::helix::Helix>,
) -> cowatch::web::AppState {
    state_with_chat(pipeline, broadcaster, Default::default(), data_dir, helix)
}

/// [`state`] with a chat hub of these settings.
pub fn state_with_chat(
    pipeline: &Pipeline,
    broadcaster: &cowatch::broadcast::Broadcaster,
    chat: cowatch::chat::ChatConfig,
    data_dir: &Path,
    helix: Option<cowatch::moderation::helix::Helix>,
) -> cowatch::web::AppState {
    let store = cowatch::store::Store::open(data_dir).unwrap();
    let (moderation, chat) =
        cowatch::moderation::Moderation::open(store.clone(), helix, chat).unwrap();
    let party = cowatch::party::Party::new(
        cowatch::party::PartyConfig {
            host_key: cowatch::party::Key::new(HOST_KEY),
            invite: None,
        },
        store,
    );
    let shutdown = cowatch::shutdown::Shutdown::new();
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let ingest = cowatch::ingest::Ingest::start(
        cowatch::ingest::IngestConfig {
            bind: loopback,
            advertise: loopback,
            key: Some(cowatch::party::Key::new(INGEST_KEY)),
        },
        pipeline.clone(),
        &shutdown,
    )
    .unwrap();
    cowatch::web::AppState {
        pipeline: pipeline.clone(),
        broadcaster: broadcaster.clone(),
        ingest,
        edges: cowatch::edge::Edges::none(),
        restream: cowatch::restream::Restream::start(
            Default::default(),
            pipeline.clone(),
            std::sync::Arc::new(|| {}),
            &shutdown,
        )
        .unwrap(),
        chat,
        party,
        moderation,
        library: None,
        twitch: None,
        shutdown,
        // Served in-process without connect info, every request shares one address: the
        // limits are the binary's, tested through it (tests/hostile_sockets.rs).
        limits: cowatch::web::limit::Limits::unlimited(),
    }
}

/// Serves the app on a free loopback port; returns its address.
pub async fn serve(
    pipeline: &Pipeline,
    broadcaster: &cowatch::broadcast::Broadcaster,
) -> std::net::SocketAddr {
    serve_app(app(pipeline, broadcaster)).await
}

/// Serves `app` on a free loopback port; returns its address.
pub async fn serve_app(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Headless Chromium as a desktop viewer: a 1280x800 window, so the chat column sits beside
/// the video, and Twitch's CDN blocked, so badge and emote fallbacks show whatever the
/// machine's network.
pub fn desktop_viewer() -> cowatch::tools::cdp::Browser {
    let mut browser = cowatch::tools::cdp::Browser::launch().expect("chromium starts");
    browser
        .call(
            "Network.setBlockedURLs",
            serde_json::json!({ "urls": ["*://static-cdn.jtvnw.net/*"] }),
        )
        .expect("CDP Network.setBlockedURLs");
    browser
        .emulate_device(1280, 800, 1.0, false)
        .expect("desktop emulation");
    browser
}

/// Raw HTTP/1.0 with an SDP body (JSON when it starts with `{`) and an optional Bearer key, so
/// the client shares nothing with the server's stack: `(status, head, body)`.
pub fn raw_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let kind = if body.starts_with('{') {
        "application/json"
    } else {
        "application/sdp"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}
