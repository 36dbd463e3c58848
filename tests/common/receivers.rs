//! `cowatch receivers` (light str0m viewers, a process of their own) inside the viewer side of
//! an [`NsParty`], and what the load tests read from the server beside them.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cowatch::tools::load::Report;
use cowatch::tools::netns::{SERVER_IP, Side};
use serde_json::Value;

use super::netns_party::{HTTP_PORT, NsParty};

/// Whether this process may build network namespaces; a load test without them says so and
/// passes, as the brief for these tests allows (CI runs as root).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) only reads this process's credentials.
    unsafe { libc::geteuid() == 0 }
}

/// A running `cowatch receivers`.
pub struct Receivers {
    child: Child,
    ready: mpsc::Receiver<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
    log: std::thread::JoinHandle<String>,
}

impl Receivers {
    /// Starts `cowatch receivers --whep <the party's> <args>` in the viewer namespace.
    pub fn start(party: &NsParty, args: &[&str]) -> Receivers {
        let mut child = party
            .link
            .command(Side::Viewer, env!("CARGO_BIN_EXE_cowatch"))
            .arg("receivers")
            .args(["--whep", &format!("http://{SERVER_IP}:{HTTP_PORT}/whep")])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start cowatch receivers in the viewer namespace");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, ready) = mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("receivers: ready:") {
                    let _ = tx.send(line.clone());
                }
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        let mut out = child.stdout.take().expect("stdout is piped");
        let stdout = Some(std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        }));
        Receivers {
            child,
            ready,
            stdout,
            log,
        }
    }

    /// Waits until the steady viewers have joined; returns the receivers' line saying so.
    pub fn wait_ready(&self, timeout: Duration) -> String {
        self.ready
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("the steady viewers did not join within {timeout:?}"))
    }

    /// Waits for the receivers to finish and returns their report.
    pub fn finish(mut self) -> Report {
        let status = self.child.wait().expect("waiting for cowatch receivers");
        let text = self.stdout.take().unwrap().join().unwrap_or_default();
        let log = std::mem::replace(&mut self.log, std::thread::spawn(String::new))
            .join()
            .unwrap_or_default();
        assert!(
            status.success(),
            "cowatch receivers failed ({status}):\n{log}"
        );
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("the receivers' report does not parse ({e}): {text}"))
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The party's `/healthz`, read from inside its own namespace.
pub fn health(party: &NsParty) -> Value {
    let body = party.peek("/healthz");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz is not JSON ({e}): {body}"))
}

/// `viewers.<name>` of `/healthz`.
pub fn viewer_stat(party: &NsParty, name: &str) -> u64 {
    let health = health(party);
    health
        .pointer(&format!("/viewers/{name}"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("/healthz has no viewers.{name}: {health}"))
}

/// Resident memory of the party's process, KiB (the one cowatch in its namespace).
pub fn server_rss_kib(party: &NsParty) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server_pid(party)))
        .expect("the party's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// CPU seconds the party's process has used so far (user + system, all threads).
pub fn server_cpu_seconds(party: &NsParty) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server_pid(party)))
        .expect("the party's /proc stat");
    let rest = stat.rsplit_once(')').expect("a /proc stat line").1;
    // Fields from 3 (state) on: utime and stime are the 12th and 13th.
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse::<u64>().expect("a tick count"))
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The pid of the one cowatch in the party's namespace.
fn server_pid(party: &NsParty) -> u32 {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", party.link.name(Side::Server)])
        .output()
        .expect("ip netns pids");
    let pids = String::from_utf8_lossy(&out.stdout).into_owned();
    for pid in pids.split_whitespace() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "cowatch"
            && let Ok(pid) = pid.parse()
        {
            return pid;
        }
    }
    panic!(
        "no cowatch process in {}: {pids}",
        party.link.name(Side::Server)
    )
}
