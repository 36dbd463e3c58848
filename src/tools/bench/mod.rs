//! Benchmarks printed as tables, behind `cowatch bench`.
//!
//! - `bench pipeline` ([`pipeline()`]): CPU cost of composite + encode against ffmpeg.
//! - `bench broadcast` ([`broadcast()`]): time to first frame, glass-to-glass latency in a real
//!   browser, and the CPU cost of fanning out to many viewers.
//! - `bench chat` ([`chat()`]): a real Twitch capture replayed through the bridge to many
//!   WebSocket clients: messages/s, delivery latency, loss, and the server's CPU and memory.
//!
//! Whatever is measured runs as a child process, so its CPU time comes from the kernel and not
//! from the program's own account of itself; every child is killed when a benchmark ends,
//! however it ends.

mod broadcast;
mod chat;
mod pipeline;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use broadcast::{BroadcastOptions, broadcast};
pub use chat::{ChatBenchOptions, chat};
pub use pipeline::{PipelineOptions, pipeline};

/// Options of `cowatch bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// CPU cost of composite + encode against ffmpeg doing the same work.
    Pipeline(PipelineOptions),
    /// Time to first frame, glass-to-glass latency in Chromium, and fan-out CPU per viewer.
    Broadcast(BroadcastOptions),
    /// A real Twitch capture replayed through the bridge to many WebSocket clients:
    /// messages/s, delivery latency, loss, and the server's CPU and memory.
    Chat(ChatBenchOptions),
}

/// Runs the benchmark chosen and prints its report.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        BenchCommand::Pipeline(options) => pipeline(&options),
        BenchCommand::Broadcast(options) => broadcast(&options),
        BenchCommand::Chat(options) => chat(&options),
    }
}

/// How long cowatch may take to say it is live.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a contender may take to exit once asked (or once its input time is up).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a contender's peak memory is read.
const RSS_SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// Median of `values` (mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A scratch directory, removed when the benchmark ends however it ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("cowatch-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create scratch directory {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads cowatch's stdout until it is live; returns the address of its `/healthz`. The rest of
/// stdout is drained on a thread so cowatch never blocks on a full pipe.
fn wait_until_live(stdout: ChildStdout, stderr_path: &Path) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                // Nobody listens any more; keep reading so the pipe never fills.
                continue;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut live = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("cowatch was not live within {} s", START_TIMEOUT.as_secs())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("cowatch exited before going live: {}", tail(stderr_path))
            }
        };
        live |= line.trim() == "cowatch is live";
        if let Some(url) = line.trim().strip_prefix("health:") {
            if !live {
                continue;
            }
            return parse_health_url(url.trim());
        }
    }
}

/// `http://127.0.0.1:40123/healthz` → `127.0.0.1:40123`.
fn parse_health_url(url: &str) -> anyhow::Result<SocketAddr> {
    url.strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .with_context(|| format!("cowatch printed an unexpected health address `{url}`"))
}

/// The last lines of a contender's stderr, on one line, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "(no output on stderr)".into()
    } else {
        joined
    }
}

/// A contender's process. Reaped with `wait4` for its rusage; killed and reaped on drop if the
/// benchmark fails first, so no contender outlives it.
struct Contender {
    child: Child,
    reaped: bool,
    /// Highest `VmHWM` seen. `ru_maxrss` cannot serve: Linux carries the spawning process's
    /// peak over `exec`, so every contender would report at least the benchmark's own.
    peak_kib: u64,
}

/// What the kernel says a contender cost.
struct Usage {
    /// `ru_utime + ru_stime`.
    cpu_s: f64,
    /// Peak resident memory, from `/proc` (see [`Contender::peak_kib`]).
    peak_rss_mib: f64,
    /// Exited with status 0.
    success: bool,
    /// How it ended, for messages.
    status: String,
}

impl Contender {
    fn spawn(command: &mut Command, stderr_path: &Path) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(stderr_path)
            .with_context(|| format!("cannot create {}", stderr_path.display()))?;
        let program = command.get_program().to_string_lossy().into_owned();
        // SAFETY: prctl is async-signal-safe and touches no memory of ours. Drop cannot run when
        // the benchmark is killed outright; the kernel then kills the contender instead, so no
        // server is left holding its ports.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        Ok(Self {
            child,
            reaped: false,
            peak_kib: 0,
        })
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// User + system CPU seconds the contender has used so far, all threads, from
    /// `/proc/PID/stat`: unlike `wait4`, this can be read while it runs.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let ticks = parse_stat_cpu_ticks(&stat).with_context(|| format!("unexpected {path}"))?;
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if per_second <= 0 {
            bail!("sysconf(_SC_CLK_TCK) failed");
        }
        Ok(ticks as f64 / per_second as f64)
    }

    /// CPU seconds used so far by the contender's threads whose name starts with `prefix`
    /// (`/proc/PID/task/*/stat`), to tell one part of a process from another; threads that
    /// have already exited are not counted.
    fn threads_cpu_seconds(&self, prefix: &str) -> anyhow::Result<f64> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut ticks = 0;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
            // A thread may exit between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(entry?.path().join("stat")) else {
                continue;
            };
            let name = stat
                .split_once('(')
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .map_or("", |(name, _)| name);
            if name.starts_with(prefix) {
                ticks += parse_stat_cpu_ticks(&stat).unwrap_or(0);
            }
        }
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if per_second <= 0 {
            bail!("sysconf(_SC_CLK_TCK) failed");
        }
        Ok(ticks as f64 / per_second as f64)
    }

    fn stdout(&mut self) -> anyhow::Result<ChildStdout> {
        self.child.stdout.take().context("no stdout pipe")
    }

    /// Lets the contender run for `duration`, sampling its memory meanwhile.
    fn run_for(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            self.sample_memory();
            std::thread::sleep(left.min(RSS_SAMPLE_PERIOD));
        }
    }

    fn sample_memory(&mut self) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()));
        let hwm = status.ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        self.peak_kib = self.peak_kib.max(hwm.unwrap_or(0));
    }

    /// Resident memory now (`VmRSS`), in KiB; `None` once the contender is gone. Unlike
    /// [`Contender::peak_kib`], this can show the peak of one window of a long run.
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        // SAFETY: kill has no memory effects; the pid is our unreaped child, so it cannot have
        // been recycled for another process.
        if unsafe { libc::kill(self.pid(), signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot signal the contender");
        }
        Ok(())
    }

    /// Waits for the exit, at most `timeout`; a contender that overstays is killed.
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<Usage> {
        let deadline = Instant::now() + timeout;
        let mut sampled = Instant::now();
        self.sample_memory();
        loop {
            if let Some(usage) = self.try_reap()? {
                return Ok(usage);
            }
            if Instant::now() >= deadline {
                bail!("it did not exit within {} s", timeout.as_secs());
            }
            if sampled.elapsed() >= RSS_SAMPLE_PERIOD {
                self.sample_memory();
                sampled = Instant::now();
            }
            // Short, so wall time is measured finely; the contender's CPU is not ours.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_reap(&mut self) -> anyhow::Result<Option<Usage>> {
        let mut status = 0;
        // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live locals of the right types.
        let pid = unsafe { libc::wait4(self.pid(), &mut status, libc::WNOHANG, &mut usage) };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("wait4 failed");
        }
        if pid == 0 {
            return Ok(None);
        }
        self.reaped = true;
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Some(Usage {
            cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            peak_rss_mib: self.peak_kib as f64 / 1024.0,
            success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            status: describe_status(status),
        }))
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.signal(libc::SIGKILL);
            let _ = self.wait(Duration::from_secs(5));
        }
    }
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks. The fields
/// are counted after the last `)`, because the command name before it may contain spaces and
/// parentheses.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state), so utime (14) is its 12th field.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status}")
    }
}

/// GETs `path` from `addr` over plain HTTP/1.0, which needs no client library, and parses the
/// body as JSON.
fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .context("malformed HTTP response")?;
    serde_json::from_str(body).with_context(|| format!("{path} is not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn stat_cpu_ticks_skip_a_tricky_name() {
        let stat = "1234 (co) wat ch) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 9";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn health_url_becomes_an_address() {
        let addr = parse_health_url("http://127.0.0.1:40123/healthz").unwrap();
        assert_eq!(addr.to_string(), "127.0.0.1:40123");
        assert!(parse_health_url("https://x/healthz").is_err());
    }
}
