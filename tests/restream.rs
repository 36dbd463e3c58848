//! The restream, as a streamer runs it: `cowatch party --restream rtmp://…` against Debian's
//! nginx with its RTMP module on 127.0.0.1, read back with FFmpeg (nothing of cowatch on that
//! side), while a WebRTC viewer watches the party.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{HOST_KEY, MOVIE_RED, WEBCAM_GREEN, close, colour_at, make_movie, scratch};
use cowatch::pipeline::layout::Layout;
use cowatch::tools::probe::{ProbeHandle, ProbeOptions, probe_with};

const BIN: &str = env!("CARGO_BIN_EXE_cowatch");

/// The stream key in the URL: it must show up nowhere but on the wire.
const STREAM_KEY: &str = "live_4242_secretStreamKey";

/// nginx with the RTMP module, in a prefix of its own, in the foreground; killed on drop.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(dir: &Path, port: u16) -> Nginx {
        let module = "/usr/lib/nginx/modules/ngx_rtmp_module.so";
        assert!(
            Path::new(module).exists(),
            "{module} is missing: .ci/deps installs libnginx-mod-rtmp"
        );
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let conf = dir.join("nginx.conf");
        // wait_key: a reader starts at a keyframe, so its first frame is a whole picture.
        std::fs::write(
            &conf,
            format!(
                "load_module {module};\n\
                 daemon off;\nmaster_process off;\n\
                 error_log {logs}/error.log info;\npid {logs}/nginx.pid;\n\
                 events {{ worker_connections 64; }}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; \
                   application live {{ live on; record off; wait_key on; wait_video on; }} }} }}\n",
                logs = dir.join("logs").display(),
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian's nginx-light) is needed by this test");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The party, its web address, and its stderr (read to the end by a thread).
struct Party {
    child: Child,
    web: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Party {
    fn start(args: &[&str]) -> Party {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--webrtc-port", "0"])
            .env("RUST_LOG", "cowatch=info")
            .env("COWATCH_HOST_KEY", HOST_KEY)
            .env_remove("TWITCH_STREAM_KEY")
            .env_remove("PULSE_SERVER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = String::new();
        let web = loop {
            let line = lines
                .next()
                .expect("cowatch prints its health URL")
                .unwrap();
            printed.push_str(&line);
            printed.push('\n');
            if let Some(url) = line.trim().strip_prefix("health:") {
                break url.trim().trim_end_matches("/healthz").to_owned();
            }
        };
        assert!(
            printed.contains("restream:") && !printed.contains(STREAM_KEY),
            "the terminal names the target without its key:\n{printed}"
        );
        std::thread::spawn(move || lines.for_each(drop));
        Party { child, web, stderr }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.web.trim_start_matches("http://").parse().unwrap()
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let (status, _, body) = common::raw_http(self.addr(), method, path, Some(HOST_KEY), body);
        (status, body)
    }

    fn targets(&self) -> Vec<serde_json::Value> {
        let (_, _, body) = common::raw_http(self.addr(), "GET", "/healthz", None, "");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        health["restream"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the first target's status is `status`; how long it took.
    fn wait_status(&self, status: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let targets = self.targets();
            if targets.first().is_some_and(|t| t["status"] == status) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "restream not {status} within {timeout:?}: {targets:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it as Ctrl-C would; its log.
    fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        self.stderr.join().unwrap()
    }
}

/// What `ffprobe` says of the stream at `url`: `codec,width,height` per stream.
fn ffprobe(url: &str) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["8", "ffprobe", "-v", "error", "-show_entries"])
        .args(["stream=codec_type,codec_name,width,height,sample_rate"])
        .args(["-of", "csv=p=0", url])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One decoded frame of the stream at `url`, by FFmpeg.
fn grab_frame(url: &str, png: &Path) -> Result<image::RgbImage, String> {
    let _ = std::fs::remove_file(png);
    let out = Command::new("timeout")
        .args([
            "10",
            "ffmpeg",
            "-v",
            "error",
            "-i",
            url,
            "-frames:v",
            "1",
            "-y",
        ])
        .arg(png)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    image::open(png)
        .map(|i| i.to_rgb8())
        .map_err(|e| e.to_string())
}

fn composite_shown(img: &image::RgbImage) -> Result<(), String> {
    let layout = Layout::builtin("side-panel").unwrap();
    let (w, h) = (img.width() as i32, img.height() as i32);
    if (w, h) != (1280, 720) {
        return Err(format!("frame is {w}×{h}"));
    }
    for (name, rect, expected) in [
        ("movie", layout.movie, MOVIE_RED),
        ("webcam", layout.webcam_inner(), WEBCAM_GREEN),
    ] {
        let (x, y) = rect.center();
        let got = colour_at(img, x, y);
        if !close(got, expected) {
            return Err(format!(
                "{name} at ({x},{y}) is {got:?}, expected {expected:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn the_composite_reaches_an_rtmp_server_and_resumes_after_it_restarts_without_a_viewer_losing_anything()
 {
    let dir = scratch("restream");
    let movie = dir.join("red.mkv");
    make_movie(&movie, MOVIE_RED, 120);
    let port = free_port();
    let ngx_dir: PathBuf = dir.join("nginx");
    let nginx = Nginx::start(&ngx_dir, port);
    let url = format!("rtmp://127.0.0.1:{port}/live/{STREAM_KEY}");
    let data = dir.join("data");
    let recording = dir.join("party.mkv");
    let party = Party::start(&[
        "party",
        "--record",
        recording.to_str().unwrap(),
        "--movie",
        movie.to_str().unwrap(),
        "--webcam",
        &common::solid_webcam(WEBCAM_GREEN),
        "--layout",
        "side-panel",
        "--mic",
        "none",
        "--data-dir",
        data.to_str().unwrap(),
        "--restream",
        &url,
    ]);

    let started = Instant::now();
    // Live, and what the server has is the composite: H.264 1280×720 (the party's own
    // encode) and AAC.
    let took = party.wait_status("live", Duration::from_secs(15));
    eprintln!("restream live {took:?} after the party started");
    let target = &party.targets()[0];
    assert_eq!(
        target["url"],
        format!("rtmp://127.0.0.1:{port}/live/••••"),
        "{target}"
    );
    let streams = ffprobe(&url).expect("ffprobe reads the restream");
    assert!(streams.contains("h264,video,1280,720"), "{streams}");
    assert!(streams.contains("aac,audio"), "{streams}");
    let png = dir.join("frame.png");
    let frame = grab_frame(&url, &png).expect("ffmpeg decodes a frame of the restream");
    composite_shown(&frame).unwrap_or_else(|why| panic!("restreamed frame: {why}"));
    // Its bitrate shows: AAC at 160 kbit/s alone is most of it (the test's picture is one
    // flat colour per area, which H.264 makes tiny).
    let target = &party.targets()[0];
    assert!(target["bitrate_kbps"].as_u64().unwrap() > 100, "{target}");

    // A WebRTC viewer watches while the RTMP server goes away and comes back.
    let whep = format!("{}/whep", party.web);
    let watch = ProbeHandle::default();
    let viewer = {
        let watch = watch.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let options = ProbeOptions {
                url: whep,
                duration: Duration::from_secs(25),
                codec: None,
            };
            runtime.block_on(probe_with(&options, &watch))
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    drop(nginx);
    let took = party.wait_status("retrying", Duration::from_secs(10));
    eprintln!("restream noticed the server gone in {took:?}");
    std::thread::sleep(Duration::from_secs(3));
    let restarted = Instant::now();
    let nginx = Nginx::start(&ngx_dir, port);
    let live = party.wait_status("live", Duration::from_secs(10));
    eprintln!("restream live again {live:?} after nginx restarted");
    let frame = loop {
        match grab_frame(&url, &png) {
            Ok(frame) => break frame,
            Err(why) => assert!(
                restarted.elapsed() < Duration::from_secs(10),
                "no frame from the restarted server within 10 s: {why}"
            ),
        }
    };
    let resumed = restarted.elapsed();
    eprintln!("restream readable again {resumed:?} after nginx restarted");
    assert!(
        resumed <= Duration::from_secs(10),
        "resumed after {resumed:?}"
    );
    composite_shown(&frame).unwrap_or_else(|why| panic!("frame after the restart: {why}"));
    assert!(party.targets()[0]["reconnects"].as_u64().unwrap() >= 1);

    let report = viewer.join().unwrap().expect("the viewer's probe ran");
    let pictures = watch.video.timeline().describe();
    eprintln!(
        "viewer: {} video packets, {} lost; {pictures}",
        report.video_packets, report.packets_lost
    );
    // 25 s at 30 fps, whatever the RTMP server did meanwhile.
    assert!(report.connected && report.frames_shown > 700, "{report:?}");
    assert_eq!(
        report.packets_lost, 0,
        "the viewer lost packets: {report:?}"
    );
    assert!(
        report.longest_freeze_ms.unwrap_or(f64::MAX) < 1000.0,
        "the viewer's picture froze: {pictures}"
    );

    // From the host page: add a second target while live, refuse bad ones, remove it.
    let second = format!("rtmp://127.0.0.1:{port}/live/second-key-123");
    let (status, body) = party.call("POST", "/api/restream", &format!(r#"{{"url":"{second}"}}"#));
    assert_eq!(status, 201, "{body}");
    assert!(!body.contains("second-key-123"), "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let (status, body) = party.call("POST", "/api/restream", &format!(r#"{{"url":"{second}"}}"#));
    assert_eq!(status, 409, "{body}");
    let (status, body) = party.call("POST", "/api/restream", r#"{"url":"http://example.com/x"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("rtmp://"), "{body}");
    let (status, body) = party.call("POST", "/api/restream", r#"{"url":"twitch"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("TWITCH_STREAM_KEY"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while ffprobe(&format!("rtmp://127.0.0.1:{port}/live/second-key-123")).is_err() {
        assert!(
            Instant::now() < deadline,
            "the added target never got the stream"
        );
    }
    let (status, body) = party.call("DELETE", &format!("/api/restream/{id}"), "");
    assert_eq!(status, 204, "{body}");
    assert_eq!(party.targets().len(), 1);
    let (status, _) = party.call("DELETE", &format!("/api/restream/{id}"), "");
    assert_eq!(status, 404);

    let ran = started.elapsed().as_secs_f64();
    let log = party.stop();
    drop(nginx);
    // The recording went on through the restream's failures: it lasts as long as the party.
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&recording)
        .output()
        .unwrap();
    let duration: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    eprintln!("recording: {duration:.2} s; the party was live for {ran:.2} s after saying so");
    assert!(
        duration > ran - 1.0 && duration < ran + 5.0,
        "the recording lasts {duration:.2} s of {ran:.2} s"
    );
    assert!(
        !log.contains(STREAM_KEY),
        "the stream key was logged:\n{log}"
    );
    assert!(
        !log.contains("second-key-123"),
        "a stream key was logged:\n{log}"
    );
    assert!(log.contains("restream failed; trying again"), "{log}");
}
