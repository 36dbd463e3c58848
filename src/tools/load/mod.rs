//! `cowatch receivers`: many light WHEP viewers in one process, the load generator of
//! `bench broadcast`'s fan-out table, `bench soak` and the churn and flood tests.
//!
//! A light viewer does what the server must see from a real one, and nothing more: ICE, DTLS,
//! SRTP authentication and decryption, RTCP reports; then it counts. Per viewer: packets and
//! bytes, gaps and repeats in each SSRC's extended sequence numbers, the first packet of a
//! keyframe and how long after the POST it came. It decodes nothing.
//!
//! Why str0m and not the webrtc-rs probe ([`probe`](super::probe)): a webrtc-rs peer costs a
//! handful of tokio tasks, channels and timers, and a copy per packet through its track
//! readers; a hundred of them saturated a core and the kernel dropped thousands of datagrams
//! at their sockets, so the benchmark measured the receivers instead of the server. Here each
//! viewer is one str0m `Rtc` in RTP mode, driven sans-IO ([`viewer`]) by one task reading one
//! UDP socket ([`run`]), on a one-thread runtime. The probe stays the independent check in
//! the tests (a second WebRTC stack that shares no code with the server); these viewers share
//! str0m with the server, which is fine for counting load and wrong for proving interop.
//!
//! 1. `--viewers N` steady viewers join at the start, at most `--parallel-posts` WHEP
//!    exchanges at a time, and stay until the end;
//! 2. once they are in, `--seconds S` of watching, during which `--churn-per-second` more
//!    viewers join each second and leave `--churn-stay` seconds later, a `--vanish-share` of
//!    them without DELETE (their socket just closes);
//!    Meanwhile, on request, a flood of `--flood-posts` offers ([`flood()`]) and `/healthz`
//!    read every `--health-every-ms`, each reading timed;
//! 3. at the end every viewer still in leaves with DELETE, and the report ([`Report`]) goes to
//!    stdout as JSON; progress goes to stderr.
//!
//! `/proc/net/snmp` is read before and after ([`snmp`]): in a network namespace of their own,
//! the receivers' kernel drops are told apart from anything the server lost.

mod flood;
mod report;
mod run;
mod snmp;
mod viewer;

use std::net::IpAddr;

use anyhow::{Context, bail};

use flood::health_latencies_owned;
pub use flood::{FloodReport, dead_offers, flood, health_latencies};
pub use report::{HealthLatency, KernelDrops, Left, Report, Totals, ViewerReport};
pub use snmp::{UdpCounters, udp_drops};

/// Options of `cowatch receivers`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceiversArgs {
    /// The party's WHEP endpoint, e.g. http://198.18.0.1:8080/whep (loopback or the test
    /// network of `tools::netns` only).
    #[arg(long)]
    pub whep: String,
    /// Steady viewers: join at the start, stay to the end.
    #[arg(long, default_value_t = 10)]
    pub viewers: usize,
    /// Steady viewers joining per second at most (0: as fast as `--parallel-posts` allows).
    #[arg(long, default_value_t = 0.0)]
    pub join_per_second: f64,
    /// Seconds of watching once the steady viewers are in.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Churn: viewers joining per second while the steady ones watch (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub churn_per_second: f64,
    /// Churn: for how many of the watching seconds viewers join (default: all of them); the
    /// rest lets the server notice the viewers that vanished.
    #[arg(long)]
    pub churn_seconds: Option<u64>,
    /// Churn: seconds each joining viewer stays before it leaves.
    #[arg(long, default_value_t = 2.0)]
    pub churn_stay: f64,
    /// Churn: share of the leavers that vanish without DELETE (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    pub vanish_share: f64,
    /// Offer flood: this many WHEP POSTs of real offers (no session kept) once the steady
    /// viewers are in, each timed to its answer (0: none).
    #[arg(long, default_value_t = 0)]
    pub flood_posts: usize,
    /// Offer flood: over this many seconds, evenly.
    #[arg(long, default_value_t = 10)]
    pub flood_seconds: u64,
    /// Read the party's /healthz every this many ms while watching, each reading timed (0:
    /// never).
    #[arg(long, default_value_t = 0)]
    pub health_every_ms: u64,
    /// WHEP exchanges in flight at once.
    #[arg(long, default_value_t = 8)]
    pub parallel_posts: usize,
    /// Address the viewers receive on (default: this machine's source address towards the
    /// server).
    #[arg(long)]
    pub bind: Option<IpAddr>,
}

/// Runs the receivers and prints their report as JSON.
pub fn main(args: ReceiversArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.vanish_share) {
        bail!("--vanish-share must be between 0 and 1");
    }
    if !args.join_per_second.is_finite() || args.join_per_second < 0.0 {
        bail!("--join-per-second must be 0 or more");
    }
    if !args.churn_per_second.is_finite() || args.churn_per_second < 0.0 {
        bail!("--churn-per-second must be 0 or more");
    }
    if args.churn_per_second > 0.0 && !(args.churn_stay > 0.0 && args.churn_stay.is_finite()) {
        bail!("--churn-stay must be more than 0 seconds");
    }
    // One socket per viewer, plus a few HTTP connections: past the usual 1024 soon.
    raise_open_files(args.viewers * 2 + 256)?;
    // str0m's DTLS and SRTP come from OpenSSL, installed once for the process.
    str0m::crypto::from_feature_flags().install_process_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(run::run(&args))?;
    println!(
        "{}",
        serde_json::to_string(&report).context("cannot serialise the report")?
    );
    Ok(())
}

/// Raises this process's open-file limit to at least `wanted`, up to the hard limit.
fn raise_open_files(wanted: usize) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    let wanted = wanted as libc::rlim_t;
    if limit.rlim_cur >= wanted {
        return Ok(());
    }
    if limit.rlim_max < wanted {
        bail!(
            "{wanted} open files needed, the hard limit is {} (ulimit -Hn)",
            limit.rlim_max
        );
    }
    limit.rlim_cur = wanted;
    // SAFETY: setrlimit(2) reads one rlimit from a live local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(())
}
