//! Two network namespaces joined by a veth pair: a private little network for browser tests
//! and benchmarks that need a real (non-loopback) interface, packet loss or a slow link.
//!
//! ```text
//!   root namespace (the test, cargo, everything else on the machine: untouched)
//!
//!   ┌ cw-PID-N-s (server side) ┐           ┌ cw-PID-N-v (viewer side) ┐
//!   │ lo                        │   veth    │ lo                        │
//!   │ cw0 198.18.0.1/24  ───────┼───────────┼─────── cw0 198.18.0.2/24  │
//!   │ iptables chain CW_LOSS    │           │ iptables chain CW_LOSS    │
//!   │                           │           └───────────────────────────┘
//!   │                           │           ┌ cw-PID-N-w (second viewer, on request) ┐
//!   │ cw1 198.18.1.1/24  ───────┼───────────┼─────── cw0 198.18.1.2/24               │
//!   └───────────────────────────┘           │ route to 198.18.0.0/24 via 198.18.1.1  │
//!                                           └────────────────────────────────────────┘
//! ```
//!
//! Why namespaces: Firefox ignores loopback ICE candidates, so it cannot watch a server on
//! 127.0.0.1; and loss or a bandwidth cap applied on the machine's loopback would hit every
//! other process. Here both ends have a real interface and nothing else: no default route, no
//! way out of the pair, 198.18.0.0/15 being the range set aside for exactly such benchmarks.
//!
//! - [`Link::create`] builds the pair; dropping the [`Link`] kills every process left in either
//!   namespace and deletes both. Names carry this process's id and a counter, so parallel tests
//!   never collide, and `create` first deletes the `cw-` namespaces of processes that are gone
//!   (a test killed before its Drop ran must not break the next run).
//! - [`Link::command`] is a `Command` that runs inside one side (`ip netns exec`).
//! - [`Link::run`] runs a closure on a thread that lives inside one side. This is how the test
//!   process, which stays in the root namespace, reaches a TCP port in a namespace: a socket
//!   keeps the namespace it was created in, whichever thread later uses it. A browser launched
//!   from such a closure (`link.run(Side::Viewer, Firefox::launch)`) starts inside the namespace
//!   and its DevTools/BiDi websocket is connected from inside too, with no port forward. The
//!   thread stays up until the `Link` drops because a child's parent-death signal fires when
//!   the *thread* that spawned it exits.
//! - [`Link::set_loss`] drops a random share of the UDP packets arriving at one side
//!   (iptables `statistic`), [`Link::set_rate`] caps what arrives at one side (a tc token
//!   bucket on the other side's end of the veth), and [`Link::counters`] reads back how many
//!   packets really arrived and were dropped, so a test can show that the loss happened.
//! - [`Link::add_second_viewer`] gives a second viewer a link of its own to the same server
//!   (it reaches 198.18.0.1 through the server's 198.18.1.1), so a rate cap per viewer is a cap
//!   per link, as two viewers at home have: two viewers capped on one veth would share it.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};

use super::child;

/// The server side's address on the veth pair.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The viewer side's address on the veth pair.
pub const VIEWER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The second viewer's address, on a veth pair of its own.
pub const SECOND_VIEWER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The server's end of the second viewer's pair: the second viewer's way to [`SERVER_IP`].
const SERVER_SECOND_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);

/// Every namespace this module makes starts with this, followed by the owner's pid.
const PREFIX: &str = "cw-";
/// The veth end's name, the same in both namespaces (names are per namespace).
const DEVICE: &str = "cw0";
/// The server's end of the second viewer's veth pair.
const SECOND_DEVICE: &str = "cw1";
/// The iptables chain that counts and drops incoming UDP.
const CHAIN: &str = "CW_LOSS";
/// Where `ip netns` keeps a namespace's handle.
const NETNS_DIR: &str = "/run/netns";

/// One end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// 198.18.0.1: where the party runs.
    Server,
    /// 198.18.0.2: where the viewers run.
    Viewer,
    /// 198.18.1.2: a viewer with a link of its own, once [`Link::add_second_viewer`] made it.
    SecondViewer,
}

impl Side {
    /// This side's address on its veth pair.
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Side::Server => SERVER_IP,
            Side::Viewer => VIEWER_IP,
            Side::SecondViewer => SECOND_VIEWER_IP,
        }
    }
}

/// What arrived at one side since its loss rule was last set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// UDP packets that reached this side's input, dropped or not.
    pub udp_in: u64,
    /// Of those, how many the random-loss rule dropped.
    pub udp_dropped: u64,
    /// Packets of any kind the rate cap towards this side dropped (its queue was full).
    pub rate_dropped: u64,
}

/// A server namespace and a viewer namespace joined by a veth pair. Dropping it kills every
/// process still in either namespace and deletes both.
pub struct Link {
    server: Namespace,
    viewer: Namespace,
    second: Option<Namespace>,
    /// The names' common start, `cw-PID-N`.
    base: String,
}

impl Link {
    /// Creates the two namespaces, brings `lo` up in both and joins them with a veth pair
    /// 198.18.0.1/24 (server) ↔ 198.18.0.2/24 (viewer). Needs root and iproute2/iptables.
    pub fn create() -> anyhow::Result<Link> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        remove_stale();
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{n}", std::process::id());
        // Each namespace is owned as soon as it exists, so a failure half-way cleans up.
        let server = Namespace::add(format!("{base}-s"))?;
        let viewer = Namespace::add(format!("{base}-v"))?;
        ip(&[
            "-n",
            &server.name,
            "link",
            "add",
            DEVICE,
            "type",
            "veth",
            "peer",
            "name",
            DEVICE,
            "netns",
            &viewer.name,
        ])?;
        let link = Link {
            server,
            viewer,
            second: None,
            base,
        };
        for side in [Side::Server, Side::Viewer] {
            let name = &link.ns(side).name;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
            let address = format!("{}/24", side.ip());
            ip(&["-n", name, "addr", "add", &address, "dev", DEVICE])?;
            ip(&["-n", name, "link", "set", DEVICE, "up"])?;
            // Every incoming packet passes the chain; it counts UDP (and drops some once
            // set_loss says so) and lets everything else through.
            link.iptables(side, &["-N", CHAIN])?;
            link.iptables(side, &["-A", "INPUT", "-j", CHAIN])?;
            link.iptables(side, &["-A", CHAIN, "-p", "udp"])?;
        }
        link.wait_until_up()?;
        Ok(link)
    }

    /// Adds the second viewer: a namespace at 198.18.1.2 with a veth pair of its own to the
    /// server side (198.18.1.1), and a route to 198.18.0.0/24 through it, so it reaches a server
    /// listening on 198.18.0.1 as the first viewer does, over its own link. Adding it twice
    /// changes nothing.
    pub fn add_second_viewer(&mut self) -> anyhow::Result<()> {
        if self.second.is_some() {
            return Ok(());
        }
        let second = Namespace::add(format!("{}-w", self.base))?;
        let (server, name) = (&self.server.name, &second.name);
        ip(&[
            "-n",
            server,
            "link",
            "add",
            SECOND_DEVICE,
            "type",
            "veth",
            "peer",
            "name",
            DEVICE,
            "netns",
            name,
        ])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        let address = format!("{SECOND_VIEWER_IP}/24");
        ip(&["-n", name, "addr", "add", &address, "dev", DEVICE])?;
        ip(&["-n", name, "link", "set", DEVICE, "up"])?;
        let address = format!("{SERVER_SECOND_IP}/24");
        ip(&["-n", server, "addr", "add", &address, "dev", SECOND_DEVICE])?;
        ip(&["-n", server, "link", "set", SECOND_DEVICE, "up"])?;
        let via = SERVER_SECOND_IP.to_string();
        ip(&["-n", name, "route", "add", "198.18.0.0/24", "via", &via])?;
        // A server socket bound to 0.0.0.0 answers from the address of the route it uses: by
        // default 198.18.1.1 here, which ICE rejects (it checked 198.18.0.1). Answers to the
        // second viewer leave from 198.18.0.1, as they would from a server with one address.
        let src = SERVER_IP.to_string();
        ip(&[
            "-n",
            server,
            "route",
            "replace",
            "198.18.1.0/24",
            "dev",
            SECOND_DEVICE,
            "src",
            &src,
        ])?;
        self.second = Some(second);
        self.iptables(Side::SecondViewer, &["-N", CHAIN])?;
        self.iptables(Side::SecondViewer, &["-A", "INPUT", "-j", CHAIN])?;
        self.iptables(Side::SecondViewer, &["-A", CHAIN, "-p", "udp"])?;
        self.wait_until_up()
    }

    /// The namespace's name, for `ip netns exec` and error messages.
    pub fn name(&self, side: Side) -> &str {
        &self.ns(side).name
    }

    /// A command that runs `program` inside `side`'s namespace. It dies with the thread that
    /// spawns it, like every child of the tools, and with the `Link` at the latest.
    pub fn command(&self, side: Side, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(side).name, program]);
        child::dies_with_parent(&mut command);
        command
    }

    /// Runs `job` on a thread that lives inside `side`'s namespace and returns its result; a
    /// panic in `job` is raised again here. Sockets it opens stay in the namespace; processes it
    /// spawns start there (and die when the `Link` drops, if they asked to die with their
    /// parent). Jobs on one side run one after another.
    pub fn run<T, F>(&self, side: Side, job: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let name = &self.ns(side).name;
        self.ns(side)
            .jobs
            .as_ref()
            .context("namespace thread is gone")?
            .send(Box::new(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                let _ = tx.send(result);
            }))
            .map_err(|_| anyhow::anyhow!("the thread inside {name} is gone"))?;
        match rx.recv() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => bail!("the thread inside {name} stopped before answering"),
        }
    }

    /// A TCP connection to `addr` as seen from inside `side` (its 127.0.0.1 is its own).
    pub fn connect(&self, side: Side, addr: SocketAddr) -> anyhow::Result<TcpStream> {
        self.run(side, move || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        })?
        .with_context(|| format!("cannot connect to {addr} inside {}", self.name(side)))
    }

    /// Drops each UDP packet arriving at `side` with probability `p` (0 turns loss off). Resets
    /// that side's UDP counters.
    pub fn set_loss(&self, side: Side, p: f64) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&p) {
            bail!("loss probability {p} is not between 0 and 1");
        }
        self.iptables(side, &["-F", CHAIN])?;
        self.iptables(side, &["-A", CHAIN, "-p", "udp"])?;
        if p > 0.0 {
            let p = format!("{p:.6}");
            self.iptables(
                side,
                &[
                    "-A",
                    CHAIN,
                    "-p",
                    "udp",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Caps what arrives at `side` to `kbit` kbit/s (None lifts the cap). The cap is a token
    /// bucket on the other side's veth end: packets queue up to 100 ms, then are dropped, as at
    /// a congested link.
    pub fn set_rate(&self, side: Side, kbit: Option<u32>) -> anyhow::Result<()> {
        let (sender, device) = self.towards(side);
        let Some(kbit) = kbit else {
            // No cap set is not an error: lifting one twice leaves the link as it was.
            let _ = run_quiet("tc", &["-n", sender, "qdisc", "del", "dev", device, "root"]);
            return Ok(());
        };
        if kbit < 8 {
            bail!("a rate of {kbit} kbit/s is too low to carry one packet");
        }
        // 20 ms worth of tokens, but at least a few full packets, or nothing passes at all.
        let burst = (u64::from(kbit) * 1000 / 8 / 50).max(4 * 1514);
        let (rate, burst) = (format!("{kbit}kbit"), burst.to_string());
        let args = [
            "-n", sender, "qdisc", "replace", "dev", device, "root", "tbf", "rate", &rate, "burst",
            &burst, "latency", "100ms",
        ];
        run_quiet("tc", &args).map(drop)
    }

    /// Has the kernel's receive work for what arrives at `side` done on `cpu` (RPS on its veth
    /// end). A veth delivers in the sender's context, so without this the receiving side's
    /// softirq work (IP and UDP input, socket wakeups) is charged to the sending process: on
    /// a 60-viewer party that was about a quarter of the server's fan-out CPU (perf). A real
    /// network card delivers on the receiver's machine.
    pub fn steer_receive(&self, side: Side, cpu: usize) -> anyhow::Result<()> {
        if cpu >= 64 {
            bail!("CPU {cpu} is beyond the mask this writes");
        }
        let mask = format!("{:x}", 1u64 << cpu);
        // `ip netns exec` mounts the namespace's own /sys, where its veth end lives.
        let script = format!("echo {mask} > /sys/class/net/{DEVICE}/queues/rx-0/rps_cpus");
        let name = self.ns(side).name.clone();
        run_quiet("ip", &["netns", "exec", &name, "sh", "-c", &script]).map(drop)
    }

    /// What arrived at `side`, and what was dropped on the way, since its loss was last set.
    pub fn counters(&self, side: Side) -> anyhow::Result<Counters> {
        let listing = self.iptables(side, &["-L", CHAIN, "-v", "-x", "-n"])?;
        let mut counters = Counters::default();
        // Header lines first, then one line a rule: pkts bytes target prot ...; the counting
        // rule has no target, so its second-to-third column is the protocol.
        for line in listing.lines().skip(2) {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let packets: u64 = columns
                .first()
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("unexpected iptables line: {line}"))?;
            if columns.get(2) == Some(&"DROP") {
                counters.udp_dropped = packets;
            } else {
                counters.udp_in = packets;
            }
        }
        let qdisc = self.qdisc_stats(side)?;
        counters.rate_dropped = qdisc
            .split(['(', ',', '\n'])
            .filter_map(|part| part.trim().strip_prefix("dropped "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        Ok(counters)
    }

    /// `tc -s qdisc` of the veth end that sends towards `side`: what its rate cap passed,
    /// dropped and holds.
    pub fn qdisc_stats(&self, side: Side) -> anyhow::Result<String> {
        let (sender, device) = self.towards(side);
        run_quiet("tc", &["-n", sender, "-s", "qdisc", "show", "dev", device])
    }

    /// The namespace and device whose egress carries what arrives at `side`: where a cap on
    /// `side`'s incoming rate goes. Towards the server, that is the first viewer's end.
    fn towards(&self, side: Side) -> (&str, &'static str) {
        match side {
            Side::Server => (&self.viewer.name, DEVICE),
            Side::Viewer => (&self.server.name, DEVICE),
            Side::SecondViewer => (&self.server.name, SECOND_DEVICE),
        }
    }

    fn ns(&self, side: Side) -> &Namespace {
        match side {
            Side::Server => &self.server,
            Side::Viewer => &self.viewer,
            Side::SecondViewer => self
                .second
                .as_ref()
                .expect("Link::add_second_viewer must run before the second viewer is used"),
        }
    }

    fn iptables(&self, side: Side, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["netns", "exec", &self.ns(side).name, "iptables", "-w"];
        all.extend_from_slice(args);
        run_quiet("ip", &all)
    }

    /// A veth end reports "up" a moment after it is set up; a server that binds before then
    /// works, but a first packet sent in that moment is lost. Waits until both ends carry.
    fn wait_until_up(&self) -> anyhow::Result<()> {
        let mut ends = vec![(&self.server.name, DEVICE), (&self.viewer.name, DEVICE)];
        if let Some(second) = &self.second {
            ends.extend([(&self.server.name, SECOND_DEVICE), (&second.name, DEVICE)]);
        }
        for _ in 0..100 {
            let mut up = true;
            for (name, device) in &ends {
                let state = run_quiet("ip", &["-n", name, "-o", "link", "show", device])?;
                up &= state.contains("state UP");
            }
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ends: Vec<String> = ends.iter().map(|(n, d)| format!("{n}/{d}")).collect();
        bail!(
            "the veth ends {} did not all come up within 2 s",
            ends.join(", ")
        )
    }
}

/// One named namespace and the thread that lives inside it. Dropping it stops the thread, kills
/// every process in the namespace and deletes it.
struct Namespace {
    name: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Namespace {
    fn add(name: String) -> anyhow::Result<Namespace> {
        ip(&["netns", "add", &name])?;
        let mut ns = Namespace {
            name,
            jobs: None,
            thread: None,
        };
        let handle = format!("{NETNS_DIR}/{}", ns.name);
        let file = File::open(&handle).with_context(|| format!("cannot open {handle}"))?;
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("netns {}", ns.name))
            .spawn(move || {
                // SAFETY: setns(2) moves only this thread into the namespace the open handle
                // names; it touches no memory of ours.
                let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                let entered = if entered == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                };
                let ok = entered.is_ok();
                drop(file);
                let _ = ready_tx.send(entered);
                if ok {
                    for job in inbox {
                        job();
                    }
                }
            })
            .context("cannot start a thread")?;
        ns.thread = Some(thread);
        ready
            .recv()
            .context("the namespace thread died")?
            .with_context(|| format!("cannot enter network namespace {}", ns.name))?;
        ns.jobs = Some(jobs);
        Ok(ns)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Closing the queue ends the thread; children it spawned get their death signal.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        delete(&self.name);
    }
}

/// Kills every process inside namespace `name`, then deletes it. Deleting alone would leave its
/// processes running in a namespace nobody can name any more.
fn delete(name: &str) {
    if let Ok(pids) = run_quiet("ip", &["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // Never ourselves: this process lives in the root namespace, but be sure.
            if pid != std::process::id() as i32 {
                // SAFETY: kill(2) touches no memory; the pid was just listed in the namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let _ = run_quiet("ip", &["netns", "del", name]);
}

/// Deletes the namespaces of earlier runs whose process is gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(&name);
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run_quiet("ip", args)
}

/// Runs a network admin command and returns its stdout; fails with its stderr.
fn run_quiet(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output: Output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} (apt-get install iproute2 iptables)"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    /// The pair carries TCP and UDP between the sides, the loss rule drops about the share it
    /// was given (and says so), and dropping the link removes both namespaces.
    #[test]
    fn link_carries_drops_and_cleans_up() {
        let link = Link::create().unwrap();
        let names = [
            link.name(Side::Server).to_string(),
            link.name(Side::Viewer).to_string(),
        ];
        for name in &names {
            assert!(std::path::Path::new(&format!("{NETNS_DIR}/{name}")).exists());
        }

        // TCP from the test process to a listener inside the server side, via the viewer side.
        let listener = link
            .run(Side::Server, || TcpListener::bind((SERVER_IP, 0)))
            .unwrap()
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = link.connect(Side::Viewer, addr).unwrap();
        let (mut served, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(VIEWER_IP));
        use std::io::{Read, Write};
        client.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        served.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");

        // 1000 datagrams at 30 % loss: between 200 and 400 lost, each counted by the rule.
        link.set_loss(Side::Server, 0.3).unwrap();
        let rx = link
            .run(Side::Server, || UdpSocket::bind((SERVER_IP, 0)))
            .unwrap()
            .unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        let tx = link
            .run(Side::Viewer, || UdpSocket::bind((VIEWER_IP, 0)))
            .unwrap()
            .unwrap();
        // Read while sending, so a full socket buffer cannot pass for loss.
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4];
            let mut received = 0u64;
            while rx.recv(&mut buf).is_ok() {
                received += 1;
            }
            received
        });
        for i in 0..1000u32 {
            tx.send_to(&i.to_be_bytes(), to).unwrap();
            std::thread::sleep(Duration::from_micros(100));
        }
        let received = reader.join().unwrap();
        let counters = link.counters(Side::Server).unwrap();
        println!("30 % loss: received {received} of 1000, {counters:?}");
        assert_eq!(counters.udp_in, 1000, "{counters:?}");
        assert_eq!(received + counters.udp_dropped, 1000, "{counters:?}");
        assert!(
            (200..=400).contains(&counters.udp_dropped),
            "{counters:?}, received {received}"
        );

        drop(link);
        for name in &names {
            assert!(!std::path::Path::new(&format!("{NETNS_DIR}/{name}")).exists());
        }
    }

    /// A cap of 800 kbit/s lets roughly 100 KB a second through, not the whole burst.
    #[test]
    fn rate_cap_limits_throughput() {
        let link = Link::create().unwrap();
        link.set_rate(Side::Viewer, Some(800)).unwrap();
        let rx = link
            .run(Side::Viewer, || UdpSocket::bind((VIEWER_IP, 0)))
            .unwrap()
            .unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        let tx = link
            .run(Side::Server, || UdpSocket::bind((SERVER_IP, 0)))
            .unwrap()
            .unwrap();
        // 2 MB in half a second is 32 Mbit/s, forty times the cap.
        let payload = [7u8; 1000];
        for _ in 0..2000 {
            tx.send_to(&payload, to).unwrap();
            std::thread::sleep(Duration::from_micros(250));
        }
        let mut received = 0u64;
        let mut buf = [0u8; 1500];
        while rx.recv(&mut buf).is_ok() {
            received += 1;
        }
        let counters = link.counters(Side::Viewer).unwrap();
        println!("800 kbit/s cap: received {received} of 2000 packets of 1000 B, {counters:?}");
        // ~0.5 s of sending + 100 ms queue at 100 KB/s plus the burst: well under 200 packets.
        assert!(received < 200, "received {received}, {counters:?}");
        assert!(counters.rate_dropped > 1000, "{counters:?}");
        link.set_rate(Side::Viewer, None).unwrap();
    }

    /// The second viewer reaches the server's 198.18.0.1 over a link of its own: a cap on the
    /// first viewer's link leaves it alone, and a cap on its own link holds.
    #[test]
    fn a_second_viewer_has_a_link_of_its_own() {
        let mut link = Link::create().unwrap();
        link.add_second_viewer().unwrap();
        let listener = link
            .run(Side::Server, || TcpListener::bind((SERVER_IP, 0)))
            .unwrap()
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = link.connect(Side::SecondViewer, addr).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(SECOND_VIEWER_IP));

        // 500 datagrams of 1000 B in about 125 ms (32 Mbit/s) to each viewer, the first capped.
        link.set_rate(Side::Viewer, Some(800)).unwrap();
        let bind = |side: Side| {
            let socket = link
                .run(side, move || UdpSocket::bind((side.ip(), 0)))
                .unwrap()
                .unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            socket
        };
        let (first, second) = (bind(Side::Viewer), bind(Side::SecondViewer));
        let tx = link
            .run(Side::Server, || UdpSocket::bind((SERVER_IP, 0)))
            .unwrap()
            .unwrap();
        let received = |rx: UdpSocket| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                let mut n = 0u64;
                while rx.recv(&mut buf).is_ok() {
                    n += 1;
                }
                n
            })
        };
        let (to_first, to_second) = (first.local_addr().unwrap(), second.local_addr().unwrap());
        let (first, second) = (received(first), received(second));
        for _ in 0..500 {
            tx.send_to(&[7u8; 1000], to_first).unwrap();
            tx.send_to(&[7u8; 1000], to_second).unwrap();
            std::thread::sleep(Duration::from_micros(250));
        }
        let (first, second) = (first.join().unwrap(), second.join().unwrap());
        println!("first viewer (capped) got {first} of 500, second {second} of 500");
        assert!(first < 100, "{first}");
        assert_eq!(second, 500);
        assert!(link.counters(Side::SecondViewer).unwrap().rate_dropped == 0);
        assert!(link.counters(Side::Viewer).unwrap().rate_dropped > 300);

        link.set_rate(Side::SecondViewer, Some(800)).unwrap();
        assert!(
            link.qdisc_stats(Side::SecondViewer)
                .unwrap()
                .contains("rate 800Kbit"),
            "{}",
            link.qdisc_stats(Side::SecondViewer).unwrap()
        );
    }

    /// Processes started inside a side see only that side's interfaces and die with the link.
    #[test]
    fn commands_run_inside_and_die_with_the_link() {
        let link = Link::create().unwrap();
        let out = link
            .command(Side::Viewer, "ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("198.18.0.2/24"), "{text}");
        assert!(!text.contains("198.18.0.1/24"), "{text}");
        let mut sleeper = link
            .command(Side::Server, "sleep")
            .arg("60")
            .spawn()
            .unwrap();
        // `ip netns exec` joins the namespace, then becomes `sleep`: until then the process is
        // not yet inside, and nothing can find it there.
        let comm = format!("/proc/{}/comm", sleeper.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            assert!(std::time::Instant::now() < deadline, "sleep never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(link);
        let status = sleeper.wait().unwrap();
        assert!(!status.success(), "{status:?}");
    }

    /// A namespace left by a test that was killed before its Drop ran is gone after the next
    /// `create`; the pid in its name (above the kernel's pid limit) belongs to no process.
    #[test]
    fn create_removes_namespaces_of_dead_processes() {
        let stale = format!("{PREFIX}4999999-0-s");
        ip(&["netns", "add", &stale]).unwrap();
        let _link = Link::create().unwrap();
        assert!(!std::path::Path::new(&format!("{NETNS_DIR}/{stale}")).exists());
    }
}
