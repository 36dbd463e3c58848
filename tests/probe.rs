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

#[test]
fn probe_watches_the_demo_with_zero_loss() {
    let (http, udp) = (free_port(), free_port());
    let mut demo = Command::new(BIN)
        .args(["demo", "--listen", &format!("127.0.0.1:{http}")])
        .args(["--webrtc-port", &udp.to_string()])
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
