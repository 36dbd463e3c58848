//! The hostile mix of `cowatch bench soak --hostile`: what issue 13's attacker did, from one
//! address of its own, and the well-behaved chat clients whose losses the soak reports.
//!
//! The attacker (the second viewer's namespace, 198.18.1.2) runs four loops until told to stop:
//! WebSocket fragment floods on `/chat` (non-final 1 MiB fragments that never end), offer
//! squatting (110 real offers whose ICE never completes, every 3 s), a `POST /api/session`
//! flood and a `POST /api/chat` flood. Each loop counts the answers it got.
//!
//! The chat clients (the first viewer's namespace, 198.18.0.2, beside the probe viewers) hold
//! `/chat` sockets while one of them posts a numbered line every few seconds, slower than the
//! flood allowance; each client counts the numbered lines it saw.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::tools::netns::{Link, Side};

/// WebSocket connections that send fragments forever.
const FRAGMENT_SOCKETS: usize = 8;
/// One fragment.
const FRAGMENT_BYTES: usize = 1 << 20;
/// Offers sent in each squatting round, and how often.
const SQUAT_OFFERS: usize = 110;
const SQUAT_EVERY: Duration = Duration::from_secs(3);
/// Requests a second of each POST flood: a script on a home link, and well past every limit.
const FLOOD_PER_SECOND: u32 = 50;
/// How often the well-behaved poster speaks (the flood allowance is 5, then one per 2 s).
const POST_EVERY: Duration = Duration::from_millis(2500);
/// The marker of the well-behaved poster's lines.
const MARK: &str = "steady-line-";

/// Answers one attack got, by HTTP status (`"closed"`, `"error"` for the rest).
pub type Answers = BTreeMap<String, usize>;

/// What the attacker sent and got.
#[derive(Debug, Default, Clone)]
pub struct AttackReport {
    /// Fragment floods: sockets the server closed, and MiB it took in before closing them.
    pub fragment_closes: usize,
    /// MiB of fragments the server accepted.
    pub fragment_mib: usize,
    /// WHEP offers of the squatting rounds.
    pub squat: Answers,
    /// `POST /api/session`.
    pub sessions: Answers,
    /// `POST /api/chat`.
    pub chat: Answers,
}

/// The attacker's loops, running until [`Attack::stop`].
pub struct Attack {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<AttackReport>>,
    threads: Vec<JoinHandle<()>>,
}

impl Attack {
    /// Starts the attack on the party at `http` from the second viewer's namespace.
    pub fn start(link: &mut Link, http: SocketAddr) -> anyhow::Result<Attack> {
        link.add_second_viewer()?;
        let from = Side::SecondViewer.ip().into();
        let offers = crate::tools::load::dead_offers(from, 32)?;
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(AttackReport::default()));
        let (s, r) = (stop.clone(), report.clone());
        // Threads started inside the namespace's thread stay in its namespace.
        let threads = link.run(Side::SecondViewer, move || {
            let mut threads = Vec::new();
            for _ in 0..FRAGMENT_SOCKETS {
                let (s, r) = (s.clone(), r.clone());
                threads.push(std::thread::spawn(move || fragments(http, &s, &r)));
            }
            let (s2, r2) = (s.clone(), r.clone());
            threads.push(std::thread::spawn(move || squat(http, &offers, &s2, &r2)));
            let (s3, r3) = (s.clone(), r.clone());
            threads.push(std::thread::spawn(move || session_flood(http, &s3, &r3)));
            threads.push(std::thread::spawn(move || chat_flood(http, &s, &r)));
            threads
        })?;
        Ok(Attack {
            stop,
            report,
            threads,
        })
    }

    /// Stops every loop and returns what they counted.
    pub fn stop(self) -> AttackReport {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Sends `request` (a whole HTTP/1.1 request with `Connection: close`) and returns the status,
/// or what went wrong.
fn exchange(http: SocketAddr, request: &[u8]) -> (String, String) {
    let attempt = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&http, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(request)?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    match attempt() {
        Ok(response) => {
            let status = response
                .split_whitespace()
                .nth(1)
                .unwrap_or("garbled")
                .to_owned();
            let body = response
                .split_once("\r\n\r\n")
                .map_or("", |(_, b)| b)
                .to_owned();
            (status, body)
        }
        Err(_) => ("error".into(), String::new()),
    }
}

fn post(http: SocketAddr, path: &str, content_type: &str, body: &str) -> (String, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {http}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(http, request.as_bytes())
}

fn count(report: &Mutex<AttackReport>, pick: fn(&mut AttackReport) -> &mut Answers, key: String) {
    if let Ok(mut r) = report.lock() {
        *pick(&mut r).entry(key).or_default() += 1;
    }
}

/// Opens `/chat` and sends non-final fragments until the server closes the socket; again.
fn fragments(http: SocketAddr, stop: &AtomicBool, report: &Mutex<AttackReport>) {
    let payload = vec![b'x'; FRAGMENT_BYTES];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect_timeout(&http, Duration::from_secs(5)) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let upgrade = format!(
            "GET /chat HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        if stream.write_all(upgrade.as_bytes()).is_err() {
            continue;
        }
        let mut sent = 0usize;
        let mut first = true;
        while !stop.load(Ordering::Relaxed) {
            // FIN clear; text first, continuation after; masked, as a client must.
            let opcode = if first { 0x1 } else { 0x0 };
            let mut frame = vec![opcode, 0x80 | 127];
            frame.extend_from_slice(&(FRAGMENT_BYTES as u64).to_be_bytes());
            frame.extend_from_slice(&[0, 0, 0, 0]);
            frame.extend_from_slice(&payload);
            if stream.write_all(&frame).is_err() {
                if let Ok(mut r) = report.lock() {
                    r.fragment_closes += 1;
                }
                break;
            }
            first = false;
            sent += 1;
            if let Ok(mut r) = report.lock() {
                r.fragment_mib += 1;
            }
        }
        let _ = sent;
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Every [`SQUAT_EVERY`], [`SQUAT_OFFERS`] offers nobody will complete.
fn squat(http: SocketAddr, offers: &[String], stop: &AtomicBool, report: &Mutex<AttackReport>) {
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        for i in 0..SQUAT_OFFERS {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let offer = &offers[(round * SQUAT_OFFERS + i) % offers.len()];
            let (status, _) = post(http, "/whep", "application/sdp", offer);
            count(report, |r| &mut r.squat, status);
        }
        round += 1;
        pause(stop, SQUAT_EVERY.saturating_sub(started.elapsed()));
    }
}

fn session_flood(http: SocketAddr, stop: &AtomicBool, report: &Mutex<AttackReport>) {
    let every = Duration::from_secs(1) / FLOOD_PER_SECOND;
    while !stop.load(Ordering::Relaxed) {
        let (status, _) = post(http, "/api/session", "application/json", "{}");
        count(report, |r| &mut r.sessions, status);
        std::thread::sleep(every);
    }
}

fn chat_flood(http: SocketAddr, stop: &AtomicBool, report: &Mutex<AttackReport>) {
    let every = Duration::from_secs(1) / FLOOD_PER_SECOND;
    let mut token = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(session) = token.clone().or_else(|| session(http)) else {
            count(report, |r| &mut r.chat, "no session".into());
            pause(stop, Duration::from_secs(1));
            continue;
        };
        token = Some(session.clone());
        n += 1;
        let body = serde_json::json!({ "session": session, "nick": format!("flood{}", n % 40), "text": format!("spam {n}") });
        let (status, _) = post(http, "/api/chat", "application/json", &body.to_string());
        count(report, |r| &mut r.chat, status);
        std::thread::sleep(every);
    }
}

/// A new session's token.
fn session(http: SocketAddr) -> Option<String> {
    let (status, body) = post(http, "/api/session", "application/json", "{}");
    if !status.starts_with('2') {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()?
        .get("token")?
        .as_str()
        .map(str::to_owned)
}

fn pause(stop: &AtomicBool, mut left: Duration) {
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let step = left.min(Duration::from_millis(100));
        std::thread::sleep(step);
        left -= step;
    }
}

/// What the well-behaved chat clients saw.
#[derive(Debug, Clone, Default)]
pub struct ChatReport {
    /// Clients that held their socket.
    pub clients: usize,
    /// Lines the poster got `201` for.
    pub posted: usize,
    /// The poster's refused lines, by status.
    pub refused: Answers,
    /// Lines posted that some client never saw, summed over clients.
    pub missed: usize,
}

/// The well-behaved side of the chat: `clients` sockets and one poster, until stopped.
pub struct ChatClients {
    stop: Arc<AtomicBool>,
    posted: Arc<Mutex<(Vec<u64>, Answers)>>,
    readers: Vec<JoinHandle<Option<BTreeSet<u64>>>>,
    poster: Option<JoinHandle<()>>,
}

impl ChatClients {
    /// Opens `clients` chat sockets from the viewers' namespace, then starts the poster.
    pub fn start(link: &Link, http: SocketAddr, clients: usize) -> anyhow::Result<ChatClients> {
        let stop = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(Mutex::new((Vec::new(), Answers::new())));
        let (s, p) = (stop.clone(), posted.clone());
        let (readers, poster) = link.run(Side::Viewer, move || {
            let readers: Vec<_> = (0..clients)
                .map(|_| {
                    let s = s.clone();
                    std::thread::spawn(move || read_chat(http, &s))
                })
                .collect();
            // The sockets open before the first line, so every client can see every line.
            std::thread::sleep(Duration::from_secs(2));
            let poster = std::thread::spawn(move || post_lines(http, &s, &p));
            (readers, poster)
        })?;
        Ok(ChatClients {
            stop,
            posted,
            readers,
            poster: Some(poster),
        })
    }

    /// Stops the poster, lets the last line arrive, closes the sockets and counts.
    pub fn stop(mut self) -> anyhow::Result<ChatReport> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poster) = self.poster.take() {
            poster.join().ok().context("the chat poster panicked")?;
        }
        let (posted, refused) = self
            .posted
            .lock()
            .map(|p| p.clone())
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mut report = ChatReport {
            posted: posted.len(),
            refused,
            ..ChatReport::default()
        };
        for reader in self.readers {
            let Some(seen) = reader.join().ok().flatten() else {
                report.missed += posted.len();
                continue;
            };
            report.clients += 1;
            report.missed += posted.iter().filter(|n| !seen.contains(n)).count();
        }
        Ok(report)
    }
}

/// Holds a chat socket, noting the numbers of the poster's lines, until `stop` (and a last
/// second for the last line). `None` when the socket could not open or broke.
fn read_chat(http: SocketAddr, stop: &AtomicBool) -> Option<BTreeSet<u64>> {
    let stream = TcpStream::connect_timeout(&http, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let (mut socket, _) = tungstenite::client::client(format!("ws://{http}/chat"), stream).ok()?;
    let mut seen = BTreeSet::new();
    let mut stopping: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let since = *stopping.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                return Some(seen);
            }
        }
        match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                for part in text.split(MARK).skip(1) {
                    let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(n) = digits.parse() {
                        seen.insert(n);
                    }
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
}

fn post_lines(http: SocketAddr, stop: &AtomicBool, posted: &Mutex<(Vec<u64>, Answers)>) {
    let Some(session) = session(http) else {
        if let Ok(mut p) = posted.lock() {
            *p.1.entry("no session".into()).or_default() += 1;
        }
        return;
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let body = serde_json::json!({ "session": session, "nick": "steady_poster", "text": format!("{MARK}{n} hello") });
        let (status, _) = post(http, "/api/chat", "application/json", &body.to_string());
        if let Ok(mut p) = posted.lock() {
            if status == "201" {
                p.0.push(n);
            } else {
                *p.1.entry(status).or_default() += 1;
            }
        }
        pause(stop, POST_EVERY);
    }
}
