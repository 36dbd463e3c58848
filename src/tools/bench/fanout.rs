//! The fan-out table of `cowatch bench broadcast`: what each viewer costs the server, measured
//! so that the receivers cannot pass for the server.
//!
//! - `cowatch demo` runs in the server side of a [`Link`] (198.18.0.1), pinned to CPU 0;
//! - `cowatch receivers` ([`load`](crate::tools::load), light str0m viewers, no decode) runs as
//!   a separate process in the viewer side (198.18.0.2), pinned to CPU 1;
//! - for each viewer count, rising: the server's CPU over a window with no viewers, then over
//!   the same window with N viewers watching (the kernel's account, `/proc/PID/stat`); the
//!   server's own drops (`send_drops` in `/metrics`), what the receivers missed (gaps in the
//!   RTP sequence numbers) and what the kernel dropped at the receivers' sockets
//!   (`/proc/net/snmp` in their namespace, which nothing else uses), each apart;
//! - the counts stop rising once the server's core is saturated or the server itself drops.
//!
//! - each side's kernel receive work runs on its own side's core ([`Link::steer_receive`]):
//!   a veth delivers in the sender's context, which would bill the receivers' UDP input to
//!   the server.
//!
//! Both run at nice -10: on a machine shared with other work they go first on their cores.
//!
//! `/healthz` and `/metrics` are read from inside the server's namespace, so the readings never
//! cross the link the media uses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::server::Server;
use super::{median, verdict};
use crate::tools::child;
use crate::tools::load::Report;
use crate::tools::netns::{Link, SERVER_IP, Side};

/// The party's ports inside its namespace (a new namespace: they are free).
const HTTP_PORT: u16 = 8080;
const WEBRTC_PORT: u16 = 8443;
/// CPUs: the server's and the receivers'.
pub(super) const SERVER_CPU: usize = 0;
const RECEIVERS_CPU: usize = 1;
/// Nice value of both: on a machine shared with builds, they go first on their cores, so the
/// table measures them and not the scheduler's share (cpu0_busy still shows what else ran).
const NICE: libc::c_int = -10;
/// The server's core counts as saturated from this share of it.
const SATURATED: f64 = 0.95;
/// The target: CPU-seconds per viewer per second of stream, i.e. 500 viewers per core.
pub(super) const TARGET_CPU_PER_VIEWER: f64 = 0.002;
/// Pause after the last viewer connected, before the CPU window: a join costs the cached GOP's
/// replay, which is the cost of joining, not of watching.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the viewers of one count may take to join, per 100 viewers, plus a floor. A server
/// that cannot take them in this time is past its limit.
const JOIN_TIME_PER_100: Duration = Duration::from_secs(10);
const JOIN_TIME_FLOOR: Duration = Duration::from_secs(30);
/// How long the sessions of finished receivers may take to disappear from the server.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// WHEP exchanges the receivers keep in flight while they join.
const PARALLEL_POSTS: &str = "16";

/// Fails with a clear message when the table cannot run here.
pub(super) fn check() -> anyhow::Result<()> {
    super::loss::check()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!(
            "the fan-out table needs 2 CPUs (the server on one, the receivers on the other); \
             this process may use {cpus}"
        );
    }
    Ok(())
}

/// One viewer count of one run.
pub(super) struct Row {
    pub(super) viewers: usize,
    /// Server cores with no viewers, just before.
    pub(super) baseline_cores: f64,
    /// Server cores with the viewers watching.
    pub(super) cores: f64,
    /// Share of CPU 0 busy over the window, whoever used it: above `cores`, something else ran
    /// on the server's core.
    pub(super) cpu0_busy: f64,
    /// Datagrams the server's socket refused during the window (`send_drops`).
    pub(super) server_drops: u64,
    /// Datagrams the server sent during the window.
    pub(super) server_sent: u64,
    /// Viewers the server counted connected when the window began.
    pub(super) connected: u64,
    /// The receivers' own account of the whole run.
    pub(super) receivers: Report,
}

impl Row {
    pub(super) fn fanout_cores(&self) -> f64 {
        self.cores - self.baseline_cores
    }

    pub(super) fn per_viewer(&self) -> f64 {
        self.fanout_cores() / self.viewers as f64
    }

    /// The server's core is full, the server itself dropped, or not every viewer got in: no
    /// count above is worth running.
    fn is_limit(&self) -> bool {
        self.cores >= SATURATED || self.server_drops > 0 || !self.all_joined()
    }

    /// Every viewer of the count was connected, by the server's count and the receivers': a
    /// figure per viewer over fewer viewers than asked would flatter the server.
    fn all_joined(&self) -> bool {
        self.connected >= self.viewers as u64 && self.receivers.steady.connected >= self.viewers
    }

    pub(super) fn describe(&self) -> String {
        let r = &self.receivers;
        format!(
            "{} viewers: server {:.3} cores ({:.3} with none; CPU 0 {:.0} % busy), {} sent, {} \
             dropped by the server; receivers: {} connected, {} lost, {} kernel drops \
             (RcvbufErrors), first keyframe median {}",
            self.viewers,
            self.cores,
            self.baseline_cores,
            self.cpu0_busy * 100.0,
            self.server_sent,
            self.server_drops,
            r.steady.connected,
            r.steady.lost,
            r.kernel.rcvbuf_errors,
            r.steady
                .first_keyframe_ms_median
                .map_or("-".into(), |ms| format!("{ms:.0} ms")),
        )
    }
}

/// A demo party in its namespace, pinned to CPU 0 when asked.
pub(super) struct Party {
    // Field order is drop order: the server goes before its namespaces.
    pub(super) server: Server,
    pub(super) link: Link,
    pub(super) http: SocketAddr,
}

/// `cowatch receivers` running in the viewer namespace.
pub(super) struct Running {
    child: std::process::Child,
    ready: mpsc::Receiver<()>,
    log: std::thread::JoinHandle<String>,
    out: std::thread::JoinHandle<String>,
}

impl Running {
    /// Waits until the steady viewers have joined; `Err` with the receivers' last line if not.
    pub(super) fn wait_ready(mut self, timeout: Duration) -> Result<Self, String> {
        if self.ready.recv_timeout(timeout).is_ok() {
            return Ok(self);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log.join().unwrap_or_default();
        Err(last_lines(&log, 1)
            .trim_start_matches("receivers: ")
            .to_owned())
    }

    /// Waits for the receivers to end and reads their report.
    pub(super) fn finish(mut self) -> anyhow::Result<Report> {
        let status = self.child.wait().context("waiting for the receivers")?;
        let text = self.out.join().unwrap_or_default();
        let log = self.log.join().unwrap_or_default();
        if !status.success() {
            bail!(
                "cowatch receivers failed ({status}):\n{}",
                last_lines(&log, 10)
            );
        }
        serde_json::from_str(text.trim())
            .with_context(|| format!("the receivers' report is not what was expected: {text}"))
    }
}

impl Party {
    pub(super) fn start(dir: &Path, max_viewers: usize, pinned: bool) -> anyhow::Result<Party> {
        let all = max_viewers.to_string();
        // Every receiver joins from the one viewer address, all at once: this measures the
        // fan-out, not the per-address rate limit or the caps on offers still connecting
        // (issue 13) that a real party has.
        let lifted = [
            "--whep-per-minute",
            "0",
            "--max-pending-offers",
            &all,
            "--max-pending-per-address",
            &all,
        ];
        Self::start_with(dir, max_viewers, pinned, &lifted)
    }

    /// [`Party::start`] with these limit flags instead.
    pub(super) fn start_with(
        dir: &Path,
        max_viewers: usize,
        pinned: bool,
        limits: &[&str],
    ) -> anyhow::Result<Party> {
        let link = Link::create()
            .context("cannot create the network namespaces (needs root, iproute2, iptables)")?;
        let exe = exe()?;
        let http = SocketAddr::from((SERVER_IP, HTTP_PORT));
        let mut command = link.command(Side::Server, &exe);
        command
            .arg("demo")
            .args(["--listen", &http.to_string()])
            .args(["--webrtc-port", &WEBRTC_PORT.to_string()])
            .args(["--public-ip", &SERVER_IP.to_string()])
            .args(["--max-viewers", &max_viewers.to_string()])
            .args(limits)
            .arg("--data-dir")
            .arg(dir.join("fanout-data"))
            .env("RUST_LOG", "warn");
        if pinned {
            child::with_nice(child::pinned_to_cpu(&mut command, SERVER_CPU), NICE);
            // Each side's kernel receive work on its own core, as on two machines: else the
            // server's sends would carry the receivers' IP/UDP input and wakeups.
            link.steer_receive(Side::Viewer, RECEIVERS_CPU)?;
            link.steer_receive(Side::Server, SERVER_CPU)?;
        }
        let server = Server::start(&mut command, &dir.join("fanout-server.stderr"))
            .context("the demo server in its namespace")?;
        Ok(Party { server, link, http })
    }

    /// GETs `path` from inside the server's namespace and returns the body.
    fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut stream = self.link.connect(Side::Server, self.http)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.http)?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .with_context(|| format!("reading {path}"))?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.split_whitespace().nth(1) == Some("200") => {
                Ok(body.to_owned())
            }
            _ => bail!("GET {path}: {response}"),
        }
    }

    pub(super) fn health(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.get("/healthz")?).context("/healthz is not JSON")
    }

    pub(super) fn viewer_stat(&self, name: &str) -> anyhow::Result<u64> {
        self.health()?
            .pointer(&format!("/viewers/{name}"))
            .and_then(Value::as_u64)
            .with_context(|| format!("/healthz has no viewers.{name}"))
    }

    /// A counter of `/metrics`.
    pub(super) fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let text = self.get("/metrics")?;
        let prefix = format!("cowatch_{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("/metrics has no cowatch_{name}"))
    }

    pub(super) fn drained(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let left = self.viewer_stat("viewers")?;
            if left == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{left} viewer session(s) still open {} s after their receivers ended",
                    DRAIN_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Server cores over `window`: its CPU seconds over the wall seconds, and CPU 0's busy share.
    fn cores(&self, window: Duration) -> anyhow::Result<(f64, f64)> {
        let cpu_before = self.server.process.cpu_seconds()?;
        let busy_before = cpu_busy(SERVER_CPU)?;
        let start = Instant::now();
        std::thread::sleep(window);
        let cpu_after = self.server.process.cpu_seconds()?;
        let busy_after = cpu_busy(SERVER_CPU)?;
        let wall = start.elapsed().as_secs_f64();
        let busy = (busy_after.0 - busy_before.0) / (busy_after.1 - busy_before.1).max(1.0);
        Ok(((cpu_after - cpu_before) / wall, busy))
    }

    /// Starts `cowatch receivers` with `args` in the viewer namespace (pinned to CPU 1 when
    /// asked); its stderr ends up in `dir/name.stderr`.
    pub(super) fn receivers(
        &self,
        dir: &Path,
        name: &str,
        args: &[String],
        pinned: bool,
    ) -> anyhow::Result<Running> {
        let mut command = self.link.command(Side::Viewer, &exe()?);
        command
            .arg("receivers")
            .args(["--whep", &format!("http://{}/whep", self.http)])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if pinned {
            child::with_nice(child::pinned_to_cpu(&mut command, RECEIVERS_CPU), NICE);
        }
        let mut child = command.spawn().context("cannot start cowatch receivers")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let stderr_path = dir.join(format!("{name}.stderr"));
        let (ready_tx, ready) = mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("receivers: ready:") {
                    let _ = ready_tx.send(());
                }
                log.push_str(&line);
                log.push('\n');
            }
            let _ = std::fs::write(&stderr_path, &log);
            log
        });
        let mut stdout = child.stdout.take().context("no stdout pipe")?;
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        Ok(Running {
            child,
            ready,
            log,
            out,
        })
    }

    /// One viewer count: baseline window, then `n` receivers and the same window. `None` when
    /// the viewers could not all join in time: the server is past its limit.
    fn row(&self, dir: &Path, n: usize, window: Duration) -> anyhow::Result<Option<Row>> {
        self.drained()?;
        let (baseline_cores, _) = self.cores(window)?;
        // The receivers watch for the settle time, the window and a margin once all joined.
        let watch = SETTLE + window + Duration::from_secs(2);
        let args = [
            "--viewers".to_owned(),
            n.to_string(),
            "--seconds".to_owned(),
            watch.as_secs().to_string(),
            "--parallel-posts".to_owned(),
            PARALLEL_POSTS.to_owned(),
        ];
        let running = self.receivers(dir, &format!("receivers-{n}"), &args, true)?;
        let join_time = JOIN_TIME_FLOOR + JOIN_TIME_PER_100 * (n as u32).div_ceil(100);
        let running = match running.wait_ready(join_time) {
            Ok(running) => running,
            Err(last) => {
                println!(
                    "  {n} viewers could not all join within {} s ({last}): the server is past \
                     its limit",
                    join_time.as_secs()
                );
                return Ok(None);
            }
        };
        std::thread::sleep(SETTLE);
        let connected = self.viewer_stat("connected")?;
        let drops_before = self.metric("send_drops_total")?;
        let sent_before = self.metric("sent_packets_total")?;
        let (cores, cpu0_busy) = self.cores(window)?;
        let server_drops = self.metric("send_drops_total")? - drops_before;
        let server_sent = self.metric("sent_packets_total")? - sent_before;
        let receivers = running.finish()?;
        Ok(Some(Row {
            viewers: n,
            baseline_cores,
            cores,
            cpu0_busy,
            server_drops,
            server_sent,
            connected,
            receivers,
        }))
    }
}

/// One run: rising counts until the server's core is full or the server drops.
pub(super) fn measure(dir: &Path, counts: &[usize], window: Duration) -> anyhow::Result<Vec<Row>> {
    let max = counts.iter().copied().max().unwrap_or(1);
    let mut party = Party::start(dir, max + 50, true)?;
    let mut rows = Vec::with_capacity(counts.len());
    for &n in counts {
        let Some(row) = party
            .row(dir, n, window)
            .with_context(|| format!("{n} viewers"))?
        else {
            // Its receivers were killed; their sessions time out before the next run starts.
            break;
        };
        println!("  {}", row.describe());
        let limit = row.is_limit();
        rows.push(row);
        if limit {
            println!(
                "  the server's core is saturated, the server dropped or not every viewer got \
                 in: no higher count"
            );
            break;
        }
    }
    party.server.process.check_alive("the demo server")?;
    Ok(rows)
}

/// Prints the table: medians over runs of each count every run reached.
pub(super) fn report(runs: &[Vec<Row>], window: Duration) {
    println!();
    println!(
        "fan-out: server pinned to CPU {SERVER_CPU} in a network namespace, receivers (`cowatch \
         receivers`, str0m, no decode) a separate process pinned to CPU {RECEIVERS_CPU} in \
         another; {} s windows; medians over {} runs",
        window.as_secs(),
        runs.len()
    );
    println!(
        "{:<9}{:<14}{:<14}{:<16}{:<10}{:<14}{:<14}{:<14}{:<12}first_kf_ms",
        "viewers",
        "server_cores",
        "fanout_cores",
        "cpu_s/viewer/s",
        "cpu0_busy",
        "server_drops",
        "rcv_seq_lost",
        "rcv_kernel",
        "connected"
    );
    let baseline = median(
        runs.iter()
            .flat_map(|r| r.iter().map(|row| row.baseline_cores))
            .collect(),
    );
    println!("{:<9}{baseline:<14.3}", 0);
    let mut counts: Vec<usize> = runs.iter().flatten().map(|r| r.viewers).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut best: Option<(usize, f64)> = None;
    for n in counts {
        let rows: Vec<&Row> = runs.iter().flatten().filter(|r| r.viewers == n).collect();
        let of = |f: &dyn Fn(&Row) -> f64| median(rows.iter().map(|r| f(r)).collect());
        let cores = of(&|r| r.cores);
        let fanout = of(&|r| r.fanout_cores());
        let per_viewer = of(&|r| r.per_viewer());
        let busy = of(&|r| r.cpu0_busy);
        // Loss is a yes/no promise: the worst run counts.
        let drops = rows.iter().map(|r| r.server_drops).max().unwrap_or(0);
        let lost = rows
            .iter()
            .map(|r| r.receivers.steady.lost)
            .max()
            .unwrap_or(0);
        let kernel = rows
            .iter()
            .map(|r| r.receivers.kernel.rcvbuf_errors)
            .max()
            .unwrap_or(0);
        let connected = rows.iter().map(|r| r.connected).min().unwrap_or(0);
        let first_kf = median(
            rows.iter()
                .filter_map(|r| r.receivers.steady.first_keyframe_ms_median)
                .collect(),
        );
        println!(
            "{n:<9}{cores:<14.3}{fanout:<14.3}{per_viewer:<16.5}{:<10}{drops:<14}{lost:<14}{kernel:<14}{:<12}{}",
            // No space inside a cell: the table is read back by splitting on whitespace.
            format!("{:.0}%", busy * 100.0),
            format!("{connected}/{n}"),
            if first_kf.is_finite() {
                format!("{first_kf:.0}")
            } else {
                "-".into()
            },
            n = n,
        );
        let all_runs = rows.len() == runs.len();
        let all_joined = rows.iter().all(|r| r.all_joined());
        if drops == 0 && cores < SATURATED && all_runs && all_joined {
            best = Some((n, per_viewer));
        }
    }
    println!(
        "  server_cores: the server's CPU (all its threads: encoder too) over the window; \
         fanout_cores: minus the 0-viewer window just before; cpu0_busy: CPU 0 busy whoever ran \
         on it; server_drops: datagrams the server's socket refused (/metrics send_drops_total, \
         worst run); rcv_seq_lost: RTP sequence gaps at the steady receivers over their whole \
         run (worst run); rcv_kernel: UDP RcvbufErrors in the receivers' namespace (worst run): \
         loss there is the receivers', not the server's"
    );
    match best {
        Some((n, per_viewer)) if per_viewer > 0.0 => {
            let per_core = 1.0 / per_viewer;
            println!(
                "viewers per core at 0 server-side loss: {per_core:.0} ({per_viewer:.5} CPU-s per \
                 viewer per s at {n} viewers, the largest count that all joined, with no server drop and the \
                 core not saturated)  (target ≥ {:.0}, ≤ {TARGET_CPU_PER_VIEWER} CPU-s/viewer/s: {})",
                1.0 / TARGET_CPU_PER_VIEWER,
                verdict(per_viewer <= TARGET_CPU_PER_VIEWER)
            );
        }
        _ => println!(
            "viewers per core at 0 server-side loss: NOT MEASURED (no count ran without server \
             drops in every run)  (target ≥ {:.0}: FAIL)",
            1.0 / TARGET_CPU_PER_VIEWER
        ),
    }
}

/// Busy and total jiffies of `cpu` from `/proc/stat`.
fn cpu_busy(cpu: usize) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("/proc/stat has no {name}"))?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: f64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    Ok((total - idle, total))
}

fn exe() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot locate the cowatch executable")?;
    exe.to_str()
        .map(str::to_owned)
        .context("the cowatch executable's path is not UTF-8")
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
