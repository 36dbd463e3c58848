//! Smoke test of `cowatch bench pipeline`: a short run must finish, compare, and show that
//! both contenders really produced video. Needs ffmpeg with libx264 (as the benchmark does).

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

#[test]
fn short_pipeline_bench_compares_two_working_contenders() {
    let out = Command::new(env!("CARGO_BIN_EXE_cowatch"))
        .args(["bench", "pipeline", "--seconds", "4", "--runs", "1"])
        .output()
        .expect("cowatch runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

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
