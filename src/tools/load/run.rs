//! The I/O around the light viewers: one UDP socket and one task per viewer on a one-thread
//! tokio runtime, the WHEP exchange, the join and leave schedule, and the kernel's count of
//! datagrams it dropped at these sockets.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::report::{HealthLatency, KernelDrops, Left, Report, Totals, ViewerReport};
use super::viewer::Offer;
use super::{ReceiversArgs, snmp};
use crate::tools::probe::{Answer, Whep, one_line};
use crate::util::lock::Locked;

/// How long ICE and DTLS may take after the answer before a viewer counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Receive buffer asked for each viewer's socket: about 1.5 s of a 2.5 Mbit/s stream (the
/// kernel counts ~2.3 KB per datagram), so a moment when the receivers' core is busy elsewhere
/// does not become loss.
const RECV_BUFFER: usize = 1024 * 1024;
/// Largest datagram read; WebRTC media stays under a path MTU of 1500.
const MAX_DATAGRAM: usize = 2048;
/// How often progress goes to stderr while viewers join.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What every viewer task shares.
struct Shared {
    whep: Whep,
    /// Address the viewers' sockets bind (port 0 each).
    bind: IpAddr,
    /// At most this many WHEP exchanges at once.
    posts: Semaphore,
    /// Cancelled when the run ends: every viewer leaves (with DELETE).
    stop: CancellationToken,
    /// Failures so far, by reason, for the progress lines.
    failures: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
}

/// When and how a viewer leaves.
#[derive(Debug, Clone, Copy)]
struct Plan {
    index: usize,
    steady: bool,
    /// Leave at this instant (churn); `None`: at the end of the run.
    leave_at: Option<tokio::time::Instant>,
    /// How: DELETE, or vanish without a word.
    vanish: bool,
    /// Not before this instant (steady viewers paced by `--join-per-second`).
    join_at: Option<tokio::time::Instant>,
}

/// Runs the whole schedule and returns the report.
pub(super) async fn run(args: &ReceiversArgs) -> anyhow::Result<Report> {
    let whep = Whep::open(&args.whep).await?;
    let bind = match args.bind {
        Some(ip) => ip,
        None => route_source(whep.server_ip().await?)?,
    };
    let shared = Arc::new(Shared {
        whep,
        bind,
        posts: Semaphore::new(args.parallel_posts.max(1)),
        stop: CancellationToken::new(),
        failures: Default::default(),
    });
    let kernel_before = snmp::udp_drops();
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();

    let first_join = tokio::time::Instant::now();
    for index in 0..args.viewers {
        let plan = Plan {
            index,
            steady: true,
            leave_at: None,
            vanish: false,
            join_at: (args.join_per_second > 0.0)
                .then(|| first_join + Duration::from_secs_f64(index as f64 / args.join_per_second)),
        };
        tasks.spawn(watch(shared.clone(), plan, Some(joined_tx.clone())));
    }
    drop(joined_tx);
    let (mut joined, mut connected) = (0, 0);
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    let interrupted = loop {
        if joined >= args.viewers {
            break false;
        }
        tokio::select! {
            next = joined_rx.recv() => match next {
                Some(ok) => {
                    joined += 1;
                    connected += usize::from(ok);
                }
                None => break false,
            },
            _ = progress.tick() => eprintln!(
                "receivers: {joined} of {} steady viewers joined, {connected} connected",
                args.viewers
            ),
            _ = tokio::signal::ctrl_c() => break true,
        }
    };
    let most_common = shared
        .failures
        .locked()
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(reason, n)| format!(" ({n} failed: {reason})"))
        .unwrap_or_default();
    eprintln!(
        "receivers: ready: {connected} of {} steady viewers connected after {:.1} s{most_common}; \
         watching {} s",
        args.viewers,
        started.elapsed().as_secs_f64(),
        args.seconds
    );

    let watch_start = tokio::time::Instant::now();
    let end = watch_start + Duration::from_secs(args.seconds);
    let churn_end = watch_start + Duration::from_secs(args.churn_seconds.unwrap_or(args.seconds));
    let health_stop = CancellationToken::new();
    let health = (args.health_every_ms > 0).then(|| {
        let url = health_url(&args.whep);
        let every = Duration::from_millis(args.health_every_ms);
        tokio::spawn(super::health_latencies_owned(
            url,
            every,
            health_stop.clone(),
        ))
    });
    let flood = (args.flood_posts > 0).then(|| {
        let (whep, posts) = (args.whep.clone(), args.flood_posts);
        let over = Duration::from_secs(args.flood_seconds);
        tokio::spawn(async move { super::flood(&whep, bind, posts, over).await })
    });
    if !interrupted {
        churn(&shared, args, &mut tasks, churn_end.min(end)).await;
        tokio::select! {
            _ = tokio::time::sleep_until(end) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    health_stop.cancel();
    let flood = match flood {
        Some(task) => Some(task.await.context("the flood task panicked")??),
        None => None,
    };
    let health = match health {
        Some(task) => Some(HealthLatency::of(
            task.await.context("the health task panicked")??,
        )),
        None => None,
    };
    shared.stop.cancel();
    let mut viewers = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        viewers.push(done.context("a viewer task panicked")?);
    }
    viewers.sort_by_key(|v| v.index);
    let kernel_after = snmp::udp_drops();
    eprintln!(
        "receivers: done after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Report {
        whep: args.whep.clone(),
        bind,
        watched_s: watch_start.elapsed().as_secs_f64(),
        steady: Totals::of(viewers.iter().filter(|v| v.steady)),
        churn: Totals::of(viewers.iter().filter(|v| !v.steady)),
        kernel: KernelDrops::between(kernel_before, kernel_after),
        flood,
        health,
        viewers,
    })
}

/// Until `end`: `--churn-per-second` viewers join each second and each leaves `--churn-stay`
/// later, a `--vanish-share` of them without DELETE.
async fn churn(
    shared: &Arc<Shared>,
    args: &ReceiversArgs,
    tasks: &mut JoinSet<ViewerReport>,
    end: tokio::time::Instant,
) {
    if args.churn_per_second <= 0.0 {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let every = Duration::from_secs_f64(1.0 / args.churn_per_second);
    let stay = Duration::from_secs_f64(args.churn_stay);
    let mut next = tokio::time::Instant::now();
    let mut n = 0usize;
    let mut progress = tokio::time::interval(PROGRESS_EVERY * 10);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = tokio::time::sleep_until(end) => return,
            _ = progress.tick() => {
                eprintln!("receivers: {n} churn viewers so far");
                continue;
            }
            _ = tokio::signal::ctrl_c() => return,
        }
        if next + stay > end {
            // It could not stay its time: the churn is over, the steady viewers watch on.
            tokio::select! {
                _ = tokio::time::sleep_until(end) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let plan = Plan {
            index: args.viewers + n,
            steady: false,
            leave_at: Some(next + stay),
            vanish: vanishes(n, args.vanish_share),
            join_at: None,
        };
        tasks.spawn(watch(shared.clone(), plan, None));
        n += 1;
        next += every;
    }
}

/// `/healthz` beside the WHEP endpoint: `http://h:p/whep` → `http://h:p/healthz`.
fn health_url(whep: &str) -> String {
    match whep.rfind("/whep") {
        Some(at) => format!("{}/healthz", &whep[..at]),
        None => format!("{}/healthz", whep.trim_end_matches('/')),
    }
}

/// Whether churn viewer `n` leaves without DELETE: spread evenly, `share` of them in all.
pub(super) fn vanishes(n: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    ((n + 1) as f64 * share).floor() > (n as f64 * share).floor()
}

/// One viewer's life: POST, connect, count until its plan says leave, leave.
async fn watch(
    shared: Arc<Shared>,
    plan: Plan,
    joined: Option<tokio::sync::mpsc::UnboundedSender<bool>>,
) -> ViewerReport {
    let mut report = ViewerReport::new(plan.index, plan.steady);
    let watched = Instant::now();
    let outcome = session(&shared, plan, &mut report, joined.as_ref()).await;
    if let Err(e) = outcome {
        let reason = format!("{e:#}");
        let short: String = reason.chars().take(120).collect();
        *shared.failures.locked().entry(short).or_default() += 1;
        report.error = Some(reason);
    }
    if let Some(joined) = joined
        && !report.connected
    {
        // A join that failed is a join too; a connected one was announced as it connected.
        let _ = joined.send(false);
    }
    report.watched_s = watched.elapsed().as_secs_f64();
    report
}

/// Refusals for now (429, 503 with `Retry-After`: too many offers connecting) are retried
/// this many times at most, as a well-behaved player would.
const MAX_RETRIES: usize = 60;

/// POSTs `sdp`, again after `Retry-After` while the server says "not now"; the last answer
/// and when its POST left.
async fn post_until_seated(shared: &Shared, sdp: &str) -> anyhow::Result<(Answer, Instant)> {
    for _ in 0..MAX_RETRIES {
        let posted = Instant::now();
        let answer = shared.whep.offer(sdp).await?;
        let Some(wait) = answer
            .retry_after
            .filter(|_| matches!(answer.status, 429 | 503))
        else {
            return Ok((answer, posted));
        };
        // Spread over the wait, so viewers refused together do not come back together.
        let jitter = Duration::from_millis(crate::util::id::random_u64() % 500);
        tokio::select! {
            _ = tokio::time::sleep(wait.min(Duration::from_secs(5)) + jitter) => {}
            _ = shared.stop.cancelled() => bail!("the run ended before this viewer could join"),
        }
    }
    bail!("still refused after {MAX_RETRIES} tries")
}

async fn session(
    shared: &Shared,
    plan: Plan,
    report: &mut ViewerReport,
    joined: Option<&tokio::sync::mpsc::UnboundedSender<bool>>,
) -> anyhow::Result<()> {
    if let Some(at) = plan.join_at {
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = shared.stop.cancelled() => bail!("the run ended before this viewer could join"),
        }
    }
    let socket = bind(shared.bind)?;
    let local = socket.local_addr()?;
    let offer = Offer::new(local, Instant::now())?;
    let (answer, posted) = {
        let _permit = tokio::select! {
            permit = shared.posts.acquire() => permit.context("the POST gate closed")?,
            _ = shared.stop.cancelled() => bail!("the run ended before this viewer could join"),
        };
        let (answer, posted) = post_until_seated(shared, &offer.sdp).await?;
        report.answer_ms = Some(posted.elapsed().as_secs_f64() * 1000.0);
        (answer, posted)
    };
    report.status = Some(answer.status);
    if !(200..300).contains(&answer.status) {
        bail!("HTTP {}: {}", answer.status, one_line(&answer.body));
    }
    let resource = answer
        .resource
        .context("the answer has no Location: the session cannot be deleted")??;
    let mut viewer = offer.accept(&answer.body, posted)?;

    let mut buf = vec![0u8; MAX_DATAGRAM];
    let send_errors = std::sync::atomic::AtomicU64::new(0);
    let mut send = |to: SocketAddr, data: &[u8]| {
        if socket.try_send_to(data, to).is_err() {
            send_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    viewer.poll(Instant::now(), &mut send)?;
    let connect_by = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let leave_at = plan.leave_at;
    let timer = tokio::time::sleep_until(viewer.timeout().into());
    tokio::pin!(timer);
    let mut announced = false;
    let left = loop {
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break Left::End,
            _ = sleep_until_maybe(leave_at) => {
                break if plan.vanish { Left::Vanish } else { Left::Delete };
            }
            ready = socket.readable() => {
                ready.context("the viewer's socket failed")?;
                loop {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => viewer.receive(Instant::now(), from, &buf[..n], &mut send)?,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // An ICMP error from an earlier send; nothing to read.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                        Err(e) => return Err(e).context("reading the viewer's socket"),
                    }
                }
            }
            _ = &mut timer => viewer.tick(Instant::now(), &mut send)?,
        }
        timer.as_mut().reset(viewer.timeout().into());
        let counts = viewer.counts();
        if !announced && counts.connected_after.is_some() {
            announced = true;
            report.connected = true;
            if let Some(joined) = joined {
                let _ = joined.send(true);
            }
        }
        if !viewer.is_alive() {
            report.fill(viewer.counts());
            bail!("the session closed (ICE consent lost or DTLS closed)");
        }
        if !announced && tokio::time::Instant::now() >= connect_by {
            report.fill(viewer.counts());
            bail!(
                "ICE and DTLS did not come up within {} s of the answer",
                CONNECT_TIMEOUT.as_secs()
            );
        }
    };
    report.fill(viewer.counts());
    report.left = Some(left);
    if left != Left::Vanish {
        viewer.close();
        viewer.poll(Instant::now(), &mut send)?;
    }
    report.send_errors = send_errors.into_inner();
    // Closed before the DELETE: media still on its way then arrives at no socket, instead of
    // filling an unread buffer and passing for the receivers' drops.
    drop(socket);
    if left != Left::Vanish {
        shared
            .whep
            .delete(&resource)
            .await
            .context("leaving with DELETE")?;
    }
    Ok(())
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until_maybe(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A non-blocking UDP socket on `ip`, port chosen by the kernel, with a larger receive buffer.
fn bind(ip: IpAddr) -> anyhow::Result<tokio::net::UdpSocket> {
    let domain = socket2::Domain::for_address(SocketAddr::new(ip, 0));
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .context("cannot open a UDP socket (too many open files?)")?;
    force_recv_buffer(&socket, RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket
        .bind(&SocketAddr::new(ip, 0).into())
        .with_context(|| format!("cannot bind a UDP socket on {ip}"))?;
    let std: UdpSocket = socket.into();
    tokio::net::UdpSocket::from_std(std).context("cannot register the UDP socket with tokio")
}

/// `SO_RCVBUFFORCE` as root (past `net.core.rmem_max`), else as much as `SO_RCVBUF` allows.
fn force_recv_buffer(socket: &socket2::Socket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = bytes as libc::c_int;
    // SAFETY: setsockopt(2) reads `size_of::<c_int>()` bytes from a live local.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced != 0 {
        let _ = socket.set_recv_buffer_size(bytes);
    }
}

/// The address this machine sends from towards `server`: what the viewers bind and offer.
/// `connect` on UDP only picks the route; nothing is sent.
fn route_source(server: IpAddr) -> anyhow::Result<IpAddr> {
    let any: SocketAddr = match server {
        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = UdpSocket::bind(any).context("cannot open a UDP socket")?;
    probe
        .connect((server, 9))
        .with_context(|| format!("no route to {server}"))?;
    Ok(probe.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_beside_whep() {
        assert_eq!(
            health_url("http://198.18.0.1:8080/whep"),
            "http://198.18.0.1:8080/healthz"
        );
        assert_eq!(health_url("http://h:1/"), "http://h:1/healthz");
    }

    #[test]
    fn vanishing_is_spread_evenly() {
        let half: Vec<bool> = (0..6).map(|n| vanishes(n, 0.5)).collect();
        assert_eq!(half, [false, true, false, true, false, true]);
        assert_eq!((0..100).filter(|&n| vanishes(n, 0.25)).count(), 25);
        assert!((0..10).all(|n| !vanishes(n, 0.0)));
        assert!((0..10).all(|n| vanishes(n, 1.0)));
    }
}
