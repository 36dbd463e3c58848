//! The party seen by webrtc-rs, an independent WebRTC stack: `cowatch probe` against the demo,
//! and twenty viewers joining at once.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{broadcaster, demo_settings, serve};
use cowatch::pipeline::Pipeline;
use cowatch::pipeline::presets::SourceCatalog;
use cowatch::pipeline::source::WebcamSource;
use cowatch::tools::probe::{ProbeOptions, probe};

const BIN: &str = env!("CARGO_BIN_EXE_cowatch");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cowatch demo` with `extra` options on free loopback ports, once it announced its WHEP URL;
/// with its HTTP port.
fn start_demo(extra: &[&str]) -> (std::process::Child, u16) {
    let (http, udp) = (free_port(), free_port());
    let mut demo = Command::new(BIN)
        .args(["demo", "--listen", &format!("127.0.0.1:{http}")])
        .args(["--webrtc-port", &udp.to_string()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("WHEP:"))),
        "the demo did not start"
    );
    // Read the rest, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    (demo, http)
}

#[test]
fn probe_watches_the_demo_with_zero_loss() {
    let (mut demo, http) = start_demo(&[]);
    let out = Command::new(BIN)
        .args([
            "probe",
            &format!("http://127.0.0.1:{http}/whep"),
            "--seconds",
            "5",
        ])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    unsafe { libc::kill(demo.id() as i32, libc::SIGTERM) };
    let _ = demo.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> String {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{stdout}"))
            .trim_start()[name.len()..]
            .trim()
            .to_string()
    };
    assert_eq!(field("packets lost"), "0", "{stdout}");
    let keyframes: u64 = field("keyframes seen").parse().unwrap();
    assert!(
        keyframes >= 2,
        "a keyframe at join and at least one more in 5 s: {stdout}"
    );
    let first: f64 = field("first keyframe")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first < 1000.0, "{stdout}");
    let video = field("video");
    let packets: u64 = video
        .split(", ")
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read video packets from {video:?}"));
    assert!(packets > 500, "steady RTP for 5 s: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_viewers_joining_at_once_all_get_a_keyframe_within_a_second() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let catalog = SourceCatalog::load(Path::new("pipelines")).unwrap();
    let pipeline = Pipeline::start(demo_settings(
        WebcamSource::Description(catalog.webcam.test.clone()),
        "side-panel",
        2500,
    ))
    .unwrap();
    let broadcaster = broadcaster(&pipeline, 100).await;
    let url = format!("http://{}/whep", serve(&pipeline, &broadcaster).await);
    // Let the encoder settle so the joins are not measuring pipeline start-up.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let joins: Vec<_> = (0..20)
        .map(|_| {
            let options = ProbeOptions {
                url: url.clone(),
                duration: Duration::from_secs(3),
                codec: None,
            };
            tokio::spawn(async move { probe(&options).await })
        })
        .collect();
    let mut reports = Vec::new();
    for join in joins {
        reports.push(join.await.unwrap().unwrap());
    }
    let firsts: Vec<String> = reports
        .iter()
        .map(|r| {
            format!(
                "{:.0}/{:.0}",
                r.post_to_answer_ms,
                r.time_to_first_keyframe_ms.unwrap_or(f64::NAN)
            )
        })
        .collect();
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.status, 201, "viewer {i}: {r:?}");
        let first = r
            .time_to_first_keyframe_ms
            .unwrap_or_else(|| panic!("viewer {i} never got a keyframe: {r:?}"));
        assert!(
            first < 1000.0,
            "viewer {i}: first keyframe after {first:.0} ms (answer/first keyframe ms of all: {firsts:?}; {:?})",
            broadcaster.stats()
        );
        assert_eq!(r.packets_lost, 0, "viewer {i}: {r:?}");
        assert!(r.video_packets > 100, "viewer {i}: {r:?}");
    }
    let stats = broadcaster.stats();
    assert_eq!(stats.joins, 20);
    assert!(
        stats.keyframes_forced <= 6,
        "joins are merged into few encoder keyframes: {stats:?}"
    );
    pipeline.shutdown().await;
}

/// `/healthz`'s entry for the VP8 rendition.
fn vp8_health(http: u16) -> serde_json::Value {
    let body = ureq_get(&format!("http://127.0.0.1:{http}/healthz"));
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    health["renditions"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["codec"] == "VP8"))
        .cloned()
        .unwrap_or_else(|| panic!("no VP8 rendition in /healthz: {health}"))
}

/// A plain HTTP GET on loopback (the tests' own client, not the tools').
fn ureq_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut last = String::new();
    // A server still starting its encoders on a loaded machine has been seen to close a
    // connection without an answer: try again a few times, then say what came back.
    for _ in 0..5 {
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        if let Some((_, body)) = response.split_once("\r\n\r\n") {
            return body.to_string();
        }
        last = response;
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("GET {url}: no HTTP answer, got {last:?}")
}

#[test]
fn a_vp8_only_viewer_starts_the_vp8_rendition_and_it_stops_after_the_linger() {
    let (mut demo, http) = start_demo(&["--rendition-linger", "2"]);
    let idle = vp8_health(http);
    assert_eq!(idle["state"], "idle", "nobody needs VP8 yet: {idle}");
    assert_eq!(idle["frames"], 0, "{idle}");

    // An independent WebRTC stack offering VP8 only, as Firefox without OpenH264 does.
    let out = Command::new(BIN)
        .args(["probe", &format!("http://127.0.0.1:{http}/whep")])
        .args(["--seconds", "4", "--codec", "vp8"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let during = vp8_health(http); // The probe has left; the linger keeps it running.
    let left = std::time::Instant::now();
    let mut stopped = None;
    while left.elapsed() < Duration::from_secs(8) {
        let now = vp8_health(http);
        if now["state"] == "idle" {
            stopped = Some((left.elapsed(), now));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(demo.id() as i32, libc::SIGTERM) };
    let _ = demo.wait();

    assert!(
        out.status.success(),
        "the VP8 probe saw no picture:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("VP8"), "{stdout}");
    let keyframes = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("keyframes seen"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(keyframes >= 1, "{stdout}");
    assert_eq!(during["state"], "running", "{during}");
    let frames = during["frames"].as_u64().unwrap_or(0);
    assert!(frames >= 60, "VP8 frames encoded while watched: {during}");
    let (after, stopped) = stopped.expect("the VP8 rendition never stopped after its viewer left");
    println!("VP8 rendition stopped {after:?} after its viewer left (linger 2 s): {stopped}");
    assert!(
        after >= Duration::from_secs(1),
        "stopped before the linger: {after:?}"
    );
}
