//! `cowatch bench soak`: churn and an offer flood for minutes, as a table.
//!
//! A `cowatch demo` runs in a network namespace at 198.18.0.1; `cowatch receivers` in the other
//! holds 200 steady viewers, makes 10 more join and 10 leave every second (half of the leavers
//! without DELETE), sends 1,000 WHEP offers in the first 10 s, and reads `/healthz` every
//! 100 ms, timing each reading. Meanwhile the benchmark reads the server's memory and its
//! forced keyframes. After the churn, the vanished viewers have the server's viewer time-out to
//! be noticed; whatever sessions are left beyond the 200 have leaked.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Scratch;
use super::fanout::Party;
use crate::broadcast::VIEWER_TIMEOUT;

/// Options of `cowatch bench soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakOptions {
    /// Minutes of churn.
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
    /// Steady viewers.
    #[arg(long, default_value_t = 200)]
    pub viewers: usize,
    /// Viewers joining (and, once under way, leaving) per second.
    #[arg(long, default_value_t = 10)]
    pub churn_per_second: u32,
    /// WHEP offers of the flood, sent over its first 10 s.
    #[arg(long, default_value_t = 1000)]
    pub flood_posts: usize,
    /// Instead of the churn: issue 13's attacker from an address of its own (fragment floods on
    /// `/chat`, offer squatting, session and chat floods) while `--viewers` probe viewers and
    /// `--chat-clients` chat sockets stay.
    #[arg(long)]
    pub hostile: bool,
    /// Well-behaved chat sockets of `--hostile`.
    #[arg(long, default_value_t = 200)]
    pub chat_clients: usize,
}

/// Warm-up before memory is first read.
const WARM_UP: Duration = Duration::from_secs(10);
/// Margin after the viewer time-out for the server to reap the silent leavers.
const SETTLE: Duration = Duration::from_secs(5);
/// Each churn viewer stays this long.
const STAY: &str = "2";
/// Seats above the steady viewers.
const CHURN_ROOM: usize = 150;
/// The flood's length.
const FLOOD_SECONDS: u64 = 10;

/// Runs the soak and prints its table.
pub fn soak(options: &SoakOptions) -> anyhow::Result<()> {
    if options.minutes == 0 || options.viewers == 0 {
        bail!("--minutes and --viewers must be at least 1");
    }
    super::loss::check()?;
    let scratch = Scratch::new()?;
    if options.hostile {
        return measure_hostile(&scratch.0, options)
            .map_err(|e| anyhow::anyhow!("the hostile soak: {e:#}"));
    }
    measure(&scratch.0, options).map_err(|e| anyhow::anyhow!("the soak: {e:#}"))
}

fn measure(dir: &Path, options: &SoakOptions) -> anyhow::Result<()> {
    let churn_seconds = options.minutes * 60;
    // Room for the churn (about 20 in, and 15 s of silent leavers not yet timed out) and no
    // more: most of the flood finds the party full, as it would.
    let party = Party::start(dir, options.viewers + CHURN_ROOM, false)?;
    let watch = churn_seconds + (VIEWER_TIMEOUT + SETTLE).as_secs() + 10;
    let args: Vec<String> = [
        "--viewers",
        &options.viewers.to_string(),
        "--seconds",
        &watch.to_string(),
        "--churn-per-second",
        &options.churn_per_second.to_string(),
        "--churn-seconds",
        &churn_seconds.to_string(),
        "--churn-stay",
        STAY,
        "--vanish-share",
        "0.5",
        "--flood-posts",
        &options.flood_posts.to_string(),
        "--flood-seconds",
        &FLOOD_SECONDS.to_string(),
        "--health-every-ms",
        "100",
        "--parallel-posts",
        "16",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    println!(
        "cowatch bench soak: {} steady viewers, {} joins and leaves a second for {} min (half \
         the leavers silent), {} offers in {FLOOD_SECONDS} s; server pid {}",
        options.viewers,
        options.churn_per_second,
        options.minutes,
        options.flood_posts,
        party.server.process.pid()
    );
    let running = party
        .receivers(dir, "soak-receivers", &args, false)?
        .wait_ready(Duration::from_secs(120))
        .map_err(|last| anyhow::anyhow!("the steady viewers did not all join: {last}"))?;
    let started = Instant::now();
    // The sessions the party must come back to: the steady viewers that got in.
    let steady = party.viewer_stat("connected")?;
    let joins_before = party.viewer_stat("joins")?;
    let forced_before = party.viewer_stat("keyframes_forced")?;
    let server_before = ServerSide::read(&party)?;
    std::thread::sleep(WARM_UP);
    let rss_start = party
        .server
        .process
        .rss_kib()
        .context("the server is gone")?;
    let churn_end = started + Duration::from_secs(churn_seconds);
    let rss_peak = rss_peak_until(&party, churn_end, Duration::from_secs(10), rss_start);
    let deadline = Instant::now() + VIEWER_TIMEOUT + SETTLE;
    let mut sessions = party.viewer_stat("viewers")?;
    while sessions != steady && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        sessions = party.viewer_stat("viewers")?;
    }
    // Whose the steady viewers' loss is: what the server itself dropped or withheld.
    let server_side = ServerSide::read(&party)?.since(&server_before);
    let forced = party.viewer_stat("keyframes_forced")? - forced_before;
    let joins = party.viewer_stat("joins")? - joins_before;
    let seconds = started.elapsed().as_secs_f64();
    let rss_end = party
        .server
        .process
        .rss_kib()
        .context("the server is gone")?;
    let report = running.finish()?;

    let churn: Vec<_> = report.viewers.iter().filter(|v| !v.steady).collect();
    let left = |how: crate::tools::load::Left| churn.iter().filter(|v| v.left == Some(how)).count();
    let deleted = left(crate::tools::load::Left::Delete);
    let vanished = left(crate::tools::load::Left::Vanish);
    let leaked = sessions as i64 - steady as i64;
    let growth = rss_end as f64 / rss_start as f64 - 1.0;
    let per_second = forced as f64 / seconds;
    println!();
    println!(
        "| steady viewers in | joins (server count) | leaves: DELETE / silent | sessions leaked (< 0: \
         steady ones lost) | \
         RSS start → end (peak) | keyframes forced /s | /healthz p99 (max) | flood answers | steady lost / \
         receivers' kernel drops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let (h_p99, h_max, h_failed) = report
        .health
        .as_ref()
        .map_or((f64::NAN, f64::NAN, 0), |h| (h.p99_ms, h.max_ms, h.failed));
    println!(
        "| {steady}/{} | {joins} | {deleted} / {vanished} | {leaked} | {:.0} → {:.0} MiB ({:+.1} %, peak {:.0}) \
         | {per_second:.2} | {h_p99:.1} ms ({h_max:.1} ms, {h_failed} failed) | {} | {} / {} |",
        options.viewers,
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        growth * 100.0,
        rss_peak as f64 / 1024.0,
        report.flood.as_ref().map_or("-".into(), |f| format!(
            "{:?} (slowest {:.0} ms)",
            f.statuses, f.slowest_answer_ms
        )),
        report.steady.lost,
        report.kernel.rcvbuf_errors,
    );
    println!(
        "  targets: 0 leaked: {}; RSS growth < 10 %: {}; ≤ 1 keyframe forced /s: {}; /healthz \
         < 100 ms: {}; steady viewers lose nothing the server is responsible for: {}",
        super::verdict(leaked == 0),
        super::verdict(growth < 0.10),
        super::verdict(per_second <= 1.0),
        super::verdict(h_max < 100.0),
        super::verdict(report.steady.lost <= report.kernel.in_errors)
    );
    println!(
        "  the server's own: {} datagrams dropped by its full send buffer, {} video packets lost \
         behind the encoder (each for every viewer), {} viewers' media paused as silent",
        server_side.send_drops, server_side.video_lagged, server_side.media_pauses
    );
    println!(
        "  shared the machine: the server and the receivers (not pinned), and whatever else ran; \
         load average at the end {}",
        super::browser::load_average()
    );
    Ok(())
}

/// The server's counters of media it did not deliver, from `/healthz`.
struct ServerSide {
    send_drops: u64,
    video_lagged: u64,
    media_pauses: u64,
}

impl ServerSide {
    fn read(party: &Party) -> anyhow::Result<Self> {
        Ok(Self {
            send_drops: party.viewer_stat("send_drops")?,
            video_lagged: party.viewer_stat("video_lagged")?,
            media_pauses: party.viewer_stat("media_pauses")?,
        })
    }

    fn since(self, before: &Self) -> Self {
        Self {
            send_drops: self.send_drops - before.send_drops,
            video_lagged: self.video_lagged - before.video_lagged,
            media_pauses: self.media_pauses - before.media_pauses,
        }
    }
}

/// Reads the server's memory every `every` until `end`; the highest reading, at least `start`.
fn rss_peak_until(party: &Party, end: Instant, every: Duration, start: u64) -> u64 {
    let mut peak = start;
    while Instant::now() < end {
        std::thread::sleep(every.min(end - Instant::now()));
        peak = peak.max(party.server.process.rss_kib().unwrap_or(0));
    }
    peak
}

/// Seats above the probe viewers in the hostile soak: what a squatter would try to take.
const HOSTILE_ROOM: usize = 20;

/// `--hostile`: the probe viewers and chat clients stay while the attacker runs; reports what
/// they lost, `/healthz`'s times and the server's memory, and what the attacker got.
fn measure_hostile(dir: &Path, options: &SoakOptions) -> anyhow::Result<()> {
    let seconds = options.minutes * 60;
    // The probe viewers stand for as many people but share one address here, so that
    // address's offer limits are lifted (for the attacker too); every other limit, and the
    // total cap on offers still connecting, is the default a party runs with. The server gets
    // a core of its own, as on its own machine; everything else shares the other.
    let lifted = options.viewers.to_string();
    let limits = [
        "--whep-per-minute",
        "0",
        "--max-pending-per-address",
        &lifted,
    ];
    let mut party = Party::start_with(dir, options.viewers + HOSTILE_ROOM, true, &limits)?;
    let args: Vec<String> = [
        "--viewers",
        &options.viewers.to_string(),
        "--seconds",
        &(seconds + 20).to_string(),
        "--health-every-ms",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    println!(
        "cowatch bench soak --hostile: {} probe viewers and {} chat clients (198.18.0.2) for {} min \
         while an attacker at 198.18.1.2 floods; server pid {}",
        options.viewers,
        options.chat_clients,
        options.minutes,
        party.server.process.pid()
    );
    let running = party
        .receivers(dir, "hostile-receivers", &args, false)?
        .wait_ready(Duration::from_secs(120))
        .map_err(|last| anyhow::anyhow!("the probe viewers did not all join: {last}"))?;
    let steady = party.viewer_stat("connected")?;
    let chat = super::hostile::ChatClients::start(&party.link, party.http, options.chat_clients)?;
    let rss_start = party
        .server
        .process
        .rss_kib()
        .context("the server is gone")?;
    let http = party.http;
    let attack = super::hostile::Attack::start(&mut party.link, http)?;
    let end = Instant::now() + Duration::from_secs(seconds);
    let rss_peak = rss_peak_until(&party, end, Duration::from_secs(5), rss_start);
    let attacked = attack.stop();
    let chat = chat.stop()?;
    let still = party.viewer_stat("connected")?;
    let rss_end = party
        .server
        .process
        .rss_kib()
        .context("the server is gone")?;
    let report = running.finish()?;
    let (h_p99, h_max, h_failed) = report
        .health
        .as_ref()
        .map_or((f64::NAN, f64::NAN, 0), |h| (h.p99_ms, h.max_ms, h.failed));
    println!();
    println!(
        "| probe viewers in → after | probe packets lost (receivers' kernel drops) | chat clients | \
         chat lines posted / missed (poster refused) | /healthz p99 (max, failed) | RSS start → end (peak) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {steady} of {} → {still} | {} ({}) | {}/{} | {} / {} ({:?}) | {h_p99:.1} ms ({h_max:.1} ms, {h_failed}) \
         | {:.0} → {:.0} MiB (peak {:.0}) |",
        options.viewers,
        report.steady.lost,
        report.kernel.rcvbuf_errors,
        chat.clients,
        options.chat_clients,
        chat.posted,
        chat.missed,
        chat.refused,
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
    );
    println!(
        "  attacker (one address): fragment sockets closed by the server {} after {} MiB; \
         squatting offers {:?}; session requests {:?}; chat posts {:?}",
        attacked.fragment_closes,
        attacked.fragment_mib,
        attacked.squat,
        attacked.sessions,
        attacked.chat
    );
    let nothing_lost = report.steady.lost <= report.kernel.in_errors
        && still >= steady
        && chat.missed == 0
        && chat.posted > 0
        && chat.clients == options.chat_clients;
    println!(
        "  targets: the well-behaved lose nothing: {}; /healthz p99 ≤ 100 ms: {}",
        super::verdict(nothing_lost),
        super::verdict(h_p99 <= 100.0 && h_failed == 0)
    );
    println!(
        "  shared the machine: the server pinned to CPU {} (nice -10); the receivers (who also \
         time /healthz), the chat clients and the attacker unpinned, and whatever else ran; \
         load average at the end {}",
        super::fanout::SERVER_CPU,
        super::browser::load_average()
    );
    Ok(())
}
