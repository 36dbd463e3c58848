//! Smoke tests of `cowatch bench`: short runs must finish and print numbers that show the thing
//! measured really happened.
//!
//! `bench pipeline` needs ffmpeg with libx264; `bench broadcast` needs /usr/bin/chromium (CI
//! installs both); `bench chat` needs the xqcow capture in ../shared/data/twitch. Like the
//! benchmarks, the tests fail, never skip, without them.

use std::process::Command;

/// The fps column of the row whose contender is `contender`.
fn fps_of(stdout: &str, contender: &str) -> f64 {
    let header = stdout
        .lines()
        .find(|l| l.starts_with("run "))
        .unwrap_or_else(|| panic!("no table header in:\n{stdout}"));
    // Columns are found by name so the test survives a new column.
    let column = header
        .split_whitespace()
        .position(|c| c == "fps")
        .expect("an fps column");
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(contender))
        .unwrap_or_else(|| panic!("no {contender} row in:\n{stdout}"));
    row.split_whitespace()
        .nth(column)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unreadable fps in `{row}`"))
}

/// Runs `cowatch bench ARGS…`, insists it succeeded, and returns what it printed.
fn run_bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cowatch"))
        .arg("bench")
        .args(args)
        .output()
        .expect("cowatch runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn short_pipeline_bench_compares_two_working_contenders() {
    let stdout = run_bench(&["pipeline", "--seconds", "4", "--runs", "1"]);

    let ratio: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ratio cowatch/ffmpeg:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no ratio line in:\n{stdout}"));
    assert!(ratio.is_finite() && ratio > 0.0, "ratio {ratio}\n{stdout}");

    for contender in ["cowatch", "ffmpeg"] {
        let fps = fps_of(&stdout, contender);
        assert!(fps > 20.0, "{contender} made {fps} frames/s\n{stdout}");
    }
    // A lost webcam or an ended movie would make cowatch look cheaper than it is.
    assert!(
        !stdout.lines().any(|l| l.starts_with("warning:")),
        "{stdout}"
    );
}

/// The columns of the broadcast table's row for `viewers`, by header name.
fn broadcast_row(stdout: &str, viewers: &str) -> std::collections::HashMap<String, String> {
    let header = stdout
        .lines()
        .find(|l| l.starts_with("viewers "))
        .unwrap_or_else(|| panic!("no viewers table in:\n{stdout}"));
    let row = stdout
        .lines()
        .skip_while(|l| !l.starts_with("viewers "))
        .find(|l| l.split_whitespace().next() == Some(viewers))
        .unwrap_or_else(|| panic!("no row for {viewers} viewers in:\n{stdout}"));
    header
        .split_whitespace()
        .map(str::to_string)
        .zip(row.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn short_broadcast_bench_measures_joins_latency_and_fan_out() {
    let started = std::time::Instant::now();
    let stdout = run_bench(&[
        "broadcast",
        "--joins",
        "3",
        "--viewers",
        "5",
        "--seconds",
        "3",
        "--runs",
        "1",
    ]);
    println!("{stdout}\ntook {:.1?}", started.elapsed());

    // A number, not "none": at least half the joins saw a keyframe.
    let first_keyframe: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("time to first keyframe"))
        .and_then(|rest| {
            rest.split_once("median ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no time to first keyframe number in:\n{stdout}"));
    assert!(
        first_keyframe > 0.0 && first_keyframe < 5000.0,
        "{first_keyframe} ms\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("glass-to-glass in Chromium:")),
        "{stdout}"
    );

    // The fan-out table: the server pinned in a namespace, the receivers apart.
    let row = broadcast_row(&stdout, "5");
    assert_eq!(row["connected"], "5/5", "{stdout}");
    assert_eq!(
        row["server_drops"], "0",
        "the server dropped with 5 viewers\n{stdout}"
    );
    assert_eq!(
        row["rcv_seq_lost"], "0",
        "packets lost with 5 viewers\n{stdout}"
    );
    let cores: f64 = row["server_cores"]
        .parse()
        .expect("server_cores is a number");
    assert!(cores > 0.0, "the server used no CPU?\n{stdout}");
}

/// The columns of the chat table's row for `rate` (e.g. `100x`), by header name.
fn chat_row(stdout: &str, rate: &str) -> std::collections::HashMap<String, String> {
    let header = stdout
        .lines()
        .find(|l| l.starts_with("rate "))
        .unwrap_or_else(|| panic!("no chat table in:\n{stdout}"));
    let row = stdout
        .lines()
        .skip_while(|l| !l.starts_with("rate "))
        .find(|l| l.split_whitespace().next() == Some(rate))
        .unwrap_or_else(|| panic!("no row for {rate} in:\n{stdout}"));
    header
        .split_whitespace()
        .map(str::to_string)
        .zip(row.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn short_chat_bench_delivers_every_message() {
    let started = std::time::Instant::now();
    let stdout = run_bench(&[
        "chat",
        "--clients",
        "20",
        "--rates",
        "100",
        "--max-seconds",
        "3",
        "--runs",
        "1",
    ]);
    println!("{stdout}\ntook {:.1?}", started.elapsed());

    let row = chat_row(&stdout, "100x");
    let messages: u64 = row["messages"].parse().expect("messages is a number");
    assert!(
        messages > 1000,
        "3 s at 100x is ~300 s of capture\n{stdout}"
    );
    let delivered: f64 = row["delivered_msg/s"]
        .parse()
        .expect("delivered_msg/s is a number");
    assert!(delivered > 0.0, "nothing delivered\n{stdout}");
    assert_eq!(row["lost"], "0", "messages lost\n{stdout}");
    let p99: f64 = row["p99_ms"].parse().expect("p99_ms is a number");
    assert!(p99.is_finite() && p99 > 0.0, "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("target at 100x:")),
        "no verdict\n{stdout}"
    );
}
