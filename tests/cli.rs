//! The binary as a streamer meets it: clear one-line errors, and a demo that starts and serves.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cowatch");

/// Runs cowatch with `args`; returns (exit code, stderr) and checks it failed in one line.
fn fails(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(code, 0, "{args:?} succeeded; stderr: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?} should fail with one line, got:\n{stderr}"
    );
    (code, stderr)
}

fn temp(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("cowatch-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn missing_movie_is_one_clear_line() {
    let (_, err) = fails(&["party", "--movie", "/nonexistent"]);
    assert!(err.contains("/nonexistent"), "{err}");
    assert!(err.contains("not found"), "{err}");
    assert!(err.contains("--movie"), "{err}");
}

#[test]
fn undecodable_movie_is_one_clear_line() {
    let path = temp("not-a-movie.mkv", "this is not a movie\n");
    let (_, err) = fails(&[
        "party", "--movie", &path, "--webcam", "none", "--mic", "none",
    ]);
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("cannot play movie"), "{err}");
}

#[test]
fn bad_layout_file_names_the_field() {
    let path = temp(
        "layout.toml",
        "[canvas]\nwidth = 1280\nheight = 720\n[movie]\nx = 0\ny = 0\nwidth = 960\n",
    );
    let (_, err) = fails(&["demo", "--layout", &path]);
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("movie.height"), "{err}");
    let (_, err) = fails(&["demo", "--layout", "diagonal"]);
    assert!(err.contains("unknown layout `diagonal`"), "{err}");
}

#[test]
fn unknown_flag_is_one_line() {
    let (code, err) = fails(&["party", "--movie", "x.mkv", "--webcma", "none"]);
    assert_eq!(code, 2);
    assert!(err.contains("--webcma"), "{err}");
}

#[test]
fn bad_config_key_names_key_and_file() {
    let path = temp("cowatch.toml", "bitrate = 2000\nwebcma = \"none\"\n");
    let (_, err) = fails(&["demo", "--config", &path]);
    assert!(err.contains("webcma"), "{err}");
    assert!(err.contains(&path), "{err}");
}

#[test]
fn demo_starts_serves_health_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut health_url = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while health_url.is_none() && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(url) = line.trim().strip_prefix("health:") {
            health_url = Some(url.trim().to_string());
        }
    }
    let url = health_url.expect("the demo prints its health URL");
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/healthz"))
        .unwrap()
        .to_string();

    // The composite streams: frames keep coming.
    let first = health(&addr);
    assert_eq!(first["state"], "live", "{first}");
    assert_eq!(first["webcam"], "live", "{first}");
    assert_eq!(first["movie"]["duration_s"], 120.0, "{first}");
    std::thread::sleep(Duration::from_secs(2));
    let second = health(&addr);
    let frames = |h: &serde_json::Value| h["output"]["video_frames"].as_u64().unwrap();
    assert!(frames(&second) >= frames(&first) + 45, "{first}\n{second}");
    assert!(
        second["output"]["audio_packets"].as_u64().unwrap() > 0,
        "{second}"
    );

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exited with {status}");
}

fn health(addr: &str) -> serde_json::Value {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("application/json"),
        "{head}"
    );
    serde_json::from_str(body).unwrap()
}

/// The product's command line: exactly the party and its tools, nothing made for tests.
#[test]
fn help_lists_exactly_the_product_subcommands() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "demo",
            "party",
            "twitch",
            "probe",
            "bench",
            "twitch-replay",
            "ctl",
            "help"
        ],
        "{help}"
    );
}

/// The stand-ins of Twitch's Helix API and of Twitch chat's test controls live in
/// tests/common, never in the product: no source file under src/ names them.
#[test]
fn no_stand_in_is_in_the_product() {
    const STAND_INS: [&str; 11] = [
        "TestHelix",
        "TestTwitchId",
        "TestServer",
        "test_helix",
        "test_server",
        "set_refuse_joins",
        "set_bot_badges",
        "join_attempts",
        "wait_received",
        "received_at",
        "drop_connections",
    ];
    let mut files = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut sources = 0;
    let mut found = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        sources += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        for name in STAND_INS.iter().filter(|name| text.contains(*name)) {
            found.push(format!("{}: {name}", path.display()));
        }
    }
    assert!(sources > 50, "only {sources} source files found under src/");
    assert!(
        found.is_empty(),
        "stand-ins in the product:\n{}",
        found.join("\n")
    );
}

/// Stopping is orderly: SIGTERM closes every page's chat socket with "going away" (the page
/// shows reconnecting… and comes back with the server), and the process waits for each of
/// its tasks instead of dropping them, then exits cleanly.
#[test]
fn sigterm_closes_chat_sockets_and_waits_for_every_task() {
    let data = std::env::temp_dir().join(format!("cowatch-cli-stop-{}", std::process::id()));
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--webrtc-port", "0"])
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "cowatch=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the demo prints its health URL")
            .unwrap();
        if let Some(url) = line.trim().strip_prefix("health:") {
            let url = url.trim();
            break url["http://".len()..url.len() - "/healthz".len()].to_string();
        }
    };
    let (mut socket, _) = tungstenite::connect(format!("ws://{addr}/chat")).unwrap();
    let first = socket.read().unwrap();
    assert!(first.is_text(), "the chat's state comes first: {first:?}");

    let asked = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let close = loop {
        match socket.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(e) => panic!("the socket ended without a close frame: {e}"),
        }
    };
    let code = close.map(|f| u16::from(f.code));
    assert_eq!(code, Some(1001), "closed as going away");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exited with {status}: {stderr}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        asked.elapsed()
    );
    for sign in ["still running", "ended before shutdown", "panicked"] {
        assert!(!stderr.contains(sign), "{sign:?} in the log:\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn a_damaged_database_is_refused_at_start_and_repair_keeps_the_party_going() {
    let dir = std::env::temp_dir().join(format!("cowatch-cli-{}-damaged", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(cowatch::store::FILE_NAME);
    std::fs::write(&db, vec![b'z'; 8192]).unwrap();
    let data_dir = dir.display().to_string();
    let (_, err) = fails(&["demo", "--listen", "127.0.0.1:0", "--data-dir", &data_dir]);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert!(err.contains("--repair"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        vec![b'z'; 8192],
        "a refused start left the file as it was"
    );

    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--webrtc-port", "0"])
        .args(["--repair", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut repaired, mut addr) = (false, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while addr.is_none() && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        repaired |= line.contains("database:") && line.contains("repaired");
        addr = line
            .trim()
            .strip_prefix("health:")
            .and_then(|url| url.trim().strip_prefix("http://"))
            .and_then(|u| u.strip_suffix("/healthz"))
            .map(str::to_owned);
    }
    // Under load the pipeline may still be starting when the address is printed.
    let live = addr.is_some_and(|addr| {
        while Instant::now() < deadline {
            if health(&addr)["state"] == "live" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(repaired, "--repair says what it did");
    assert!(live, "the party started after the repair");
    assert!(status.success(), "demo exited with {status}");
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains(".damaged-"));
    assert!(aside, "the damaged file is kept aside");
    let _ = std::fs::remove_dir_all(&dir);
}
