//! A hostile viewer against the real binary (issue 13): sockets that try to pin memory or use
//! up descriptors, and bursts of the POSTs that cost the server. Each test runs `cowatch demo`
//! on 127.0.0.1 and attacks it from there; the well-behaved client comes from another loopback
//! address (127.0.0.2, 127.0.0.3), as a viewer on another connection would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cowatch");
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const POSTER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A `cowatch demo` child, killed when dropped.
struct Party {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    data: std::path::PathBuf,
}

impl Party {
    /// Starts the demo on 127.0.0.1 with `args` added; `nofile` caps its open files (soft and
    /// hard) from before it starts, as `ulimit -n` would.
    fn start(name: &str, args: &[&str], nofile: Option<u64>) -> Party {
        let data =
            std::env::temp_dir().join(format!("cowatch-hostile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut command = Command::new(BIN);
        command
            .args(["demo", "--listen", "127.0.0.1:0", "--webrtc-port", "0"])
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("RUST_LOG", "cowatch=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("the cowatch binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the demo died: {}", stderr.lock().unwrap()))
                .unwrap();
            if let Some(url) = line.trim().strip_prefix("health:") {
                let url = url.trim();
                break url["http://".len()..url.len() - "/healthz".len()]
                    .parse()
                    .unwrap();
            }
        };
        // The rest of stdout is drained so the child never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        let party = Party {
            child,
            addr,
            stderr,
            data,
        };
        // Live means encoding: the party the attacker meets is one in progress.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get(NEIGHBOUR, addr, "/healthz")
            .body
            .contains("\"video_frames\":")
        {
            assert!(Instant::now() < deadline, "the demo never got healthy");
            std::thread::sleep(Duration::from_millis(200));
        }
        party
    }

    /// The server's resident memory in KiB, from /proc.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Party {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// One HTTP answer as a client reads it.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

/// One HTTP/1.1 request from `from`, the connection closed after it.
fn request(
    from: Ipv4Addr,
    to: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Answer {
    let mut stream = connect_from(from, to).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Type: \
         {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let retry_after = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().parse().ok())
            .flatten()
    });
    Answer {
        status,
        retry_after,
        body: body.to_owned(),
    }
}

fn get(from: Ipv4Addr, to: SocketAddr, path: &str) -> Answer {
    request(from, to, "GET", path, "text/plain", "")
}

fn post_json(from: Ipv4Addr, to: SocketAddr, path: &str, body: &str) -> Answer {
    request(from, to, "POST", path, "application/json", body)
}

/// A WebSocket upgrade request for `/chat`, as bytes on the wire.
fn upgrade_request(to: SocketAddr) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A text frame header that is not final and announces `len` bytes, masked with a zero key
/// (so the payload that follows may be sent as is).
fn fragment_header(len: u64) -> Vec<u8> {
    let mut header = vec![0x01, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

/// Issue 13, finding 1: sockets that send non-final 1 MiB fragments and never finish are
/// closed, and the server's memory stays where it was (it grew ~60 MiB a socket before).
#[test]
fn a_fragment_flood_is_closed_and_memory_stays_flat() {
    let party = Party::start("fragments", &[], None);
    std::thread::sleep(Duration::from_secs(2));
    let before = party.rss_kib();
    const SOCKETS: usize = 8;
    const FRAGMENTS: usize = 60;
    let mib = vec![0u8; 1 << 20];
    let mut closed = 0;
    let mut sent_mib = 0;
    for _ in 0..SOCKETS {
        let stream = connect_from(ATTACKER, party.addr).unwrap();
        let (mut socket, response) =
            tungstenite::client(format!("ws://{}/chat", party.addr), stream)
                .expect("the chat socket opens");
        assert_eq!(response.status(), 101);
        let raw = socket.get_mut();
        let mut refused = false;
        for _ in 0..FRAGMENTS {
            if raw.write_all(&fragment_header(mib.len() as u64)).is_err()
                || raw.write_all(&mib).is_err()
            {
                refused = true;
                break;
            }
            sent_mib += 1;
        }
        // Whether or not the kernel took every byte, the server must have closed the socket:
        // a read ends (EOF, reset, or a close frame) rather than time out.
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let ended = loop {
            match raw.read(&mut buf) {
                Ok(0) => break true,
                // The snapshot, or a close frame, may come first.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break false,
                Err(_) => break true,
            }
        };
        if refused || ended {
            closed += 1;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = party.rss_kib();
    println!(
        "{SOCKETS} sockets sent {sent_mib} MiB of fragments; {closed} closed; server RSS \
         {before} KiB before, {after} KiB after"
    );
    assert_eq!(closed, SOCKETS, "every fragment flood is closed");
    assert!(
        after < before + 16 * 1024,
        "the server grew from {before} KiB to {after} KiB under the fragment flood"
    );
    let health = get(NEIGHBOUR, party.addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
}

/// Issue 13, finding 2/3: a burst on each costly POST gets `429` with `Retry-After` once the
/// address has had its share, and a request from another address still gets through.
#[test]
fn bursts_get_429_with_retry_after_and_another_address_gets_through() {
    const SHARE: usize = 5;
    let share = SHARE.to_string();
    let party = Party::start(
        "bursts",
        &[
            "--whep-per-minute",
            &share,
            "--session-per-minute",
            &share,
            "--chat-per-minute",
            &share,
        ],
        None,
    );
    // An unknown session: the handler refuses it (401), where a real one would meet the
    // chat's own per-session rate (also a 429, without the address in its reason).
    let chat_body = r#"{"session":"unknown","nick":"burster","text":"hi"}"#;
    let calls: [(&str, &str, &str); 3] = [
        // Not a real offer: the limit answers before the offer is read, and a real one would
        // hold a seat.
        ("/whep", "application/sdp", "v=0\r\n"),
        ("/api/session", "application/json", "{}"),
        ("/api/chat", "application/json", chat_body),
    ];
    for (path, content_type, body) in calls {
        let mut statuses = Vec::new();
        for _ in 0..SHARE + 3 {
            statuses.push(request(
                ATTACKER,
                party.addr,
                "POST",
                path,
                content_type,
                body,
            ));
        }
        let codes: Vec<u16> = statuses.iter().map(|a| a.status).collect();
        println!("{path}: {codes:?}");
        assert!(
            codes[..SHARE].iter().all(|&c| c != 429 && c != 0),
            "{path}: the address's share is served: {codes:?}"
        );
        for refused in &statuses[SHARE..] {
            assert_eq!(refused.status, 429, "{path}: {codes:?}");
            let wait = refused.retry_after.expect("429 carries Retry-After");
            assert!((1..=60).contains(&wait), "{path}: Retry-After {wait}");
            assert!(
                refused.body.contains("from your address") && !refused.body.trim().contains('\n'),
                "{path}: one-line reason: {:?}",
                refused.body
            );
        }
        let other = request(POSTER, party.addr, "POST", path, content_type, body);
        assert_ne!(
            other.status, 429,
            "{path} from another address: {}",
            other.body
        );
        assert_ne!(other.status, 0, "{path} from another address got no answer");
    }
}

/// Issue 13, finding 4: under `ulimit -n 1024`, 1,100 chat connections from one address
/// neither run the server out of descriptors nor keep `/healthz` or a newcomer's chat from
/// working.
#[test]
fn healthz_and_chat_work_during_1100_chat_connections_under_ulimit_1024() {
    const CONNECTIONS: usize = 1_100;
    let ours = cowatch::web::limit::raise_nofile().unwrap();
    assert!(
        ours > CONNECTIONS as u64 + 200,
        "this test needs {} open files and the hard limit is {ours}",
        CONNECTIONS + 200
    );
    let party = Party::start("nofile", &[], Some(1024));
    let request = upgrade_request(party.addr);
    let mut held = Vec::new();
    let mut unreachable = 0;
    for _ in 0..CONNECTIONS {
        match connect_from(ATTACKER, party.addr) {
            Ok(mut stream) => {
                // A refused connection may be closed before the request is written.
                let _ = stream.write_all(request.as_bytes());
                held.push(stream);
            }
            Err(_) => unreachable += 1,
        }
    }
    // How each was answered; every connection stays held by the attacker meanwhile.
    let mut upgraded = 0;
    let mut refused = 0;
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = [0u8; 12];
        match stream.read_exact(&mut head) {
            Ok(()) if head.starts_with(b"HTTP/1.1 101") => upgraded += 1,
            _ => refused += 1,
        }
    }
    println!(
        "{CONNECTIONS} chat connections: {upgraded} upgraded, {refused} refused or closed, \
         {unreachable} not connected"
    );
    let started = Instant::now();
    let health = get(ATTACKER, party.addr, "/healthz");
    let took = started.elapsed();
    assert_eq!(health.status, 200, "/healthz: {}", health.body);
    assert!(
        took < Duration::from_secs(2),
        "/healthz took {took:?} during the connections"
    );
    assert!(upgraded >= 1, "the attacker got some chat sockets");
    let health: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    println!(
        "chat sockets open at the server: {}",
        health["chat_sockets"]
    );

    // A newcomer on another address reads the chat and sees a message posted now.
    let stream = connect_from(NEIGHBOUR, party.addr).unwrap();
    let (mut chat, _) = tungstenite::client(format!("ws://{}/chat", party.addr), stream)
        .expect("a newcomer's chat socket opens");
    let session = post_json(POSTER, party.addr, "/api/session", "{}");
    assert_eq!(session.status, 200, "{}", session.body);
    let token: serde_json::Value = serde_json::from_str(&session.body).unwrap();
    let posted = post_json(
        POSTER,
        party.addr,
        "/api/chat",
        &format!(
            r#"{{"session":"{}","nick":"newcomer","text":"still here"}}"#,
            token["token"].as_str().unwrap()
        ),
    );
    assert_eq!(posted.status, 201, "{}", posted.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "the newcomer never saw the message"
        );
        match chat.read().expect("the newcomer's socket stays open") {
            tungstenite::Message::Text(text) if text.contains("still here") => break,
            _ => {}
        }
    }
    drop(held);
    let log = party.stderr();
    assert!(
        !log.contains("Too many open files"),
        "the server ran out of descriptors:\n{log}"
    );
}
