//! A contender: a measured program run as a child process, so its CPU time comes from the
//! kernel and not from the program's own account of itself. It is killed and reaped when the
//! benchmark ends, however it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::tools::child;

/// How long a contender may take to exit once asked (or once its input time is up).
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a contender's peak memory is read.
const RSS_SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// A contender's process. Reaped with `wait4` for its rusage; killed and reaped on drop if the
/// benchmark fails first, so no contender outlives it.
pub(super) struct Contender {
    child: Child,
    /// Where its stderr goes, for error messages.
    stderr_path: PathBuf,
    reaped: bool,
    /// Highest `VmHWM` seen. `ru_maxrss` cannot serve: Linux carries the spawning process's
    /// peak over `exec`, so every contender would report at least the benchmark's own.
    peak_kib: u64,
}

/// What the kernel says a contender cost.
pub(super) struct Usage {
    /// `ru_utime + ru_stime`.
    pub(super) cpu_s: f64,
    /// Peak resident memory, from `/proc` (see [`Contender::peak_kib`]).
    pub(super) peak_rss_mib: f64,
    /// Exited with status 0.
    pub(super) success: bool,
    /// How it ended, for messages.
    pub(super) status: String,
}

impl Contender {
    /// Starts `command` with its stderr in the file `stderr_path`.
    pub(super) fn spawn(command: &mut Command, stderr_path: &Path) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(stderr_path)
            .with_context(|| format!("cannot create {}", stderr_path.display()))?;
        let program = command.get_program().to_string_lossy().into_owned();
        let child = child::dies_with_parent(command)
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        Ok(Self {
            child,
            stderr_path: stderr_path.to_owned(),
            reaped: false,
            peak_kib: 0,
        })
    }

    pub(super) fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// User + system CPU seconds the contender has used so far, all threads, from
    /// `/proc/PID/stat`: unlike `wait4`, this can be read while it runs.
    pub(super) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let ticks = parse_stat_cpu_ticks(&stat).with_context(|| format!("unexpected {path}"))?;
        ticks_to_seconds(ticks)
    }

    /// CPU seconds used so far by the contender's threads whose name starts with `prefix`
    /// (`/proc/PID/task/*/stat`), to tell one part of a process from another; threads that
    /// have already exited are not counted.
    pub(super) fn threads_cpu_seconds(&self, prefix: &str) -> anyhow::Result<f64> {
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
        ticks_to_seconds(ticks)
    }

    pub(super) fn stdout(&mut self) -> anyhow::Result<ChildStdout> {
        self.child.stdout.take().context("no stdout pipe")
    }

    /// Lets the contender run for `duration`, sampling its memory meanwhile.
    pub(super) fn run_for(&mut self, duration: Duration) {
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
    pub(super) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub(super) fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        // SAFETY: kill has no memory effects; the pid is our unreaped child, so it cannot have
        // been recycled for another process.
        if unsafe { libc::kill(self.pid(), signal) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot signal the contender");
        }
        Ok(())
    }

    /// Waits for the exit, at most `timeout`; a contender that overstays is killed.
    pub(super) fn wait(&mut self, timeout: Duration) -> anyhow::Result<Usage> {
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

    pub(super) fn try_reap(&mut self) -> anyhow::Result<Option<Usage>> {
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

impl Contender {
    /// The last lines of its stderr, on one line, for error messages.
    pub(super) fn last_words(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(3);
        let joined = lines[start..].join(" | ");
        if joined.is_empty() {
            "(no output on stderr)".into()
        } else {
            joined
        }
    }

    /// An error quoting its last words if it has exited.
    pub(super) fn check_alive(&mut self, what: &str) -> anyhow::Result<()> {
        match self.try_reap()? {
            None => Ok(()),
            Some(usage) => bail!(
                "{what} exited with {} during the benchmark: {}",
                usage.status,
                self.last_words()
            ),
        }
    }

    /// Stops it the way a user would (SIGTERM), checks that it stopped cleanly, and returns
    /// what it cost.
    pub(super) fn stop(&mut self, what: &str) -> anyhow::Result<Usage> {
        self.signal(libc::SIGTERM)?;
        let usage = self
            .wait(STOP_TIMEOUT)
            .with_context(|| format!("{what} did not stop after SIGTERM"))?;
        if !usage.success {
            bail!(
                "{what} exited with {} after SIGTERM: {}",
                usage.status,
                self.last_words()
            );
        }
        Ok(usage)
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

/// CPU seconds in `ticks` of the kernel's clock.
pub(super) fn ticks_to_seconds(ticks: u64) -> anyhow::Result<f64> {
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(ticks as f64 / per_second as f64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_skip_a_tricky_name() {
        let stat = "1234 (co) wat ch) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 9";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }
}
