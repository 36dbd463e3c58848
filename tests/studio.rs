//! The streamer's side of the binary, run as a streamer runs it: a recording players can seek
//! (and that survives a kill), and a quiet start on a machine without a microphone.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cowatch");

/// Starts `cowatch` with `args` and waits for it to say it is live (its health URL).
fn start(args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--webrtc-port", "0"])
        .env("RUST_LOG", "cowatch=warn")
        .env_remove("PULSE_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("cowatch prints its health URL once live")
            .unwrap();
        if line.trim().starts_with("health:") {
            break;
        }
    }
    // Keep reading so a full pipe never blocks it.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// `ffprobe`'s answer for `entries` of `file`, one value per line.
fn ffprobe(file: &Path, args: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .args(["-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe (ffmpeg) is installed");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last video frame's time when `file` is decoded from start to end.
fn decoded_to(file: &Path) -> f64 {
    ffprobe(
        file,
        &["-select_streams", "v:0", "-show_entries", "frame=pts_time"],
    )
    .lines()
    .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
    .fold(0.0, f64::max)
}

#[test]
fn a_recording_ended_by_ctrl_c_has_its_duration_and_seeks_and_a_killed_one_plays_to_its_end() {
    let dir = common::scratch("studio-record");
    let ended = dir.join("ended.mkv");
    let mut child = start(&["demo", "--record", ended.to_str().unwrap()], &[]);
    std::thread::sleep(Duration::from_secs(8));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let log = stderr_of(&mut child);
    assert!(status.success(), "exited with {status}: {log}");
    let duration = ffprobe(&ended, &["-show_entries", "format=duration"]);
    let duration: f64 = duration
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no duration in the recording: {duration:?}"));
    assert!(duration >= 6.0, "duration {duration} s");
    // A seek to 5 s lands on a frame that decodes.
    let frame = dir.join("at-5s.png");
    let seek = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-ss", "5"])
        .arg("-i")
        .arg(&ended)
        .args(["-frames:v", "1"])
        .arg(&frame)
        .output()
        .unwrap();
    assert!(
        seek.status.success(),
        "{}",
        String::from_utf8_lossy(&seek.stderr)
    );
    let img = image::open(&frame)
        .expect("the frame at 5 s decodes")
        .to_rgb8();
    assert_eq!((img.width(), img.height()), (1280, 720));
    println!("ended with Ctrl-C: duration {duration:.2} s, frame at 5 s decoded");

    let killed = dir.join("killed.mkv");
    let started = Instant::now();
    let mut child = start(&["demo", "--record", killed.to_str().unwrap()], &[]);
    std::thread::sleep(Duration::from_millis(10_500).saturating_sub(started.elapsed()));
    child.kill().unwrap();
    child.wait().unwrap();
    let to = decoded_to(&killed);
    assert!(
        to >= 8.0,
        "a recording killed after 10 s decodes to {to} s only"
    );
    println!(
        "killed after {:.1} s: decodes to {to:.2} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn without_a_microphone_the_party_says_so_in_one_line_and_nothing_else() {
    assert!(
        !Path::new("/dev/snd").exists(),
        "this test needs a machine without a sound card (CI's has none)"
    );
    let dir = common::scratch("studio-quiet");
    let movie = dir.join("movie.mkv");
    common::make_movie(&movie, common::MOVIE_RED, 5);
    let runtime = dir.join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let data = dir.join("data");
    let mut child = start(
        &[
            "party",
            "--movie",
            movie.to_str().unwrap(),
            "--webcam",
            "none",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("XDG_RUNTIME_DIR", runtime.to_str().unwrap())],
    );
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let log = stderr_of(&mut child);
    assert!(
        log.contains("no microphone found; continuing with movie sound only"),
        "{log}"
    );
    for noise in ["ALSA lib", "AL lib", "alsa", "openal"] {
        assert!(!log.contains(noise), "{noise:?} on stderr:\n{log}");
    }
}
