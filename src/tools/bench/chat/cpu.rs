//! CPU and memory of a measurement window: the server's (all threads, and its tokio threads
//! alone), this process's, and the whole machine's, from the kernel's counters.

use std::time::{Duration, Instant};

use crate::tools::bench::process::{Contender, ticks_to_seconds};

/// How often the server's resident memory is read during a window.
pub(super) const RSS_PERIOD: Duration = Duration::from_millis(50);
/// Name prefix of the server's tokio threads, where the bridge, the hub and every
/// WebSocket run; the video pipeline runs on GStreamer's threads.
const TOKIO_THREADS: &str = "tokio-";

/// The CPU counters a window compares, read at one moment.
#[derive(Clone, Copy)]
pub(super) struct CpuReading {
    pub(super) at: Instant,
    /// The server's CPU seconds, all threads.
    server: f64,
    /// Of which its tokio threads.
    tokio: f64,
    /// This process's (the test server's and the clients').
    own: f64,
    /// Busy seconds of every CPU of the machine, whoever used them.
    machine: f64,
}

impl CpuReading {
    pub(super) fn take(server: &Contender) -> anyhow::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            server: server.cpu_seconds()?,
            tokio: server.threads_cpu_seconds(TOKIO_THREADS)?,
            own: own_cpu_seconds(),
            machine: machine_busy_seconds(),
        })
    }
}

/// Cores used between two readings: CPU-seconds per wall second.
#[derive(Clone, Copy)]
pub(super) struct Cores {
    pub(super) server: f64,
    pub(super) tokio: f64,
    pub(super) own: f64,
    pub(super) machine: f64,
}

impl Cores {
    pub(super) fn between(start: &CpuReading, end: &CpuReading) -> Self {
        let wall = end.at.duration_since(start.at).as_secs_f64();
        Self {
            server: (end.server - start.server) / wall,
            tokio: (end.tokio - start.tokio) / wall,
            own: (end.own - start.own) / wall,
            machine: (end.machine - start.machine) / wall,
        }
    }

    /// What neither the server nor this process used: other programs on the machine.
    pub(super) fn others(&self) -> f64 {
        self.machine - self.server - self.own
    }
}

/// A measurement window over the server: CPU readings at its start, and the peak of its
/// resident memory while it lasts.
pub(super) struct Window<'a> {
    process: &'a Contender,
    pub(super) start: CpuReading,
    peak_kib: u64,
    sampled: Instant,
}

impl<'a> Window<'a> {
    pub(super) fn open(process: &'a Contender) -> anyhow::Result<Self> {
        let start = CpuReading::take(process)?;
        Ok(Self {
            process,
            start,
            peak_kib: process.rss_kib().unwrap_or(0),
            sampled: start.at,
        })
    }

    /// Reads the resident memory if it is time to.
    pub(super) fn sample(&mut self) {
        if self.sampled.elapsed() >= RSS_PERIOD {
            self.sampled = Instant::now();
            self.peak_kib = self.peak_kib.max(self.process.rss_kib().unwrap_or(0));
        }
    }

    pub(super) fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// User + system CPU seconds of this whole process (every thread) so far.
fn own_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain old data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live local of the right type.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Seconds all CPUs together have been busy since boot (everything but idle and iowait in
/// `/proc/stat`); NaN where it cannot be read.
fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(ticks) = stat.lines().next().and_then(parse_machine_busy_ticks) else {
        return f64::NAN;
    };
    ticks_to_seconds(ticks).unwrap_or(f64::NAN)
}

/// Busy ticks of the `cpu` line of `/proc/stat`: user, nice, system, irq, softirq and steal
/// (fields 1–3 and 6–8); guest time is already counted in user.
fn parse_machine_busy_ticks(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 8 {
        return None;
    }
    Some(values[0] + values[1] + values[2] + values[5] + values[6] + values[7])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let line = "cpu  100 2 30 600 6 0 4 5 0 0";
        assert_eq!(parse_machine_busy_ticks(line), Some(141));
        assert_eq!(parse_machine_busy_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_machine_busy_ticks("cpu 1 2"), None);
    }
}
