//! A `cowatch demo` inside the server side of a fresh [`Link`], reachable at 198.18.0.1 from the
//! viewer side: the starting point of every test that needs a real interface (Firefox) or a
//! bad network (loss, a rate cap) between a party and its viewers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cowatch::tools::netns::{Link, SERVER_IP, Side};

/// The party's web port inside the server namespace (the namespace is new, so it is free).
pub const HTTP_PORT: u16 = 8080;
/// The party's WebRTC port inside the server namespace.
pub const WEBRTC_PORT: u16 = 8443;

/// A party on 198.18.0.1 in its own namespace pair. Dropping it stops the party, then removes
/// the namespaces (and whatever else still runs in them).
pub struct NsParty {
    /// Dropped after the server: Drop below stops the server first.
    pub link: Link,
    child: Child,
    output: Arc<Mutex<String>>,
    data_dir: PathBuf,
}

impl NsParty {
    /// Starts `cowatch demo` with `args` added (a webcam, `--timecode`, an encoder…), listening
    /// and advertising 198.18.0.1, and waits until it announces its viewer page.
    pub fn start(args: &[&str]) -> NsParty {
        let link = Link::create().expect("cannot create the test's network namespaces");
        NsParty::start_on(link, args)
    }

    /// [`NsParty::start`] on a link the test made already (with other servers in it, e.g.
    /// Janus edges).
    pub fn start_on(link: Link, args: &[&str]) -> NsParty {
        let data_dir = super::scratch(&format!("ns-party-{}", link.name(Side::Server)));
        let mut child = link
            .command(Side::Server, env!("CARGO_BIN_EXE_cowatch"))
            .args(["demo", "--listen", &format!("{SERVER_IP}:{HTTP_PORT}")])
            .args(["--webrtc-port", &WEBRTC_PORT.to_string()])
            .args(["--public-ip", &SERVER_IP.to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the cowatch binary inside the server namespace");
        let output = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        // Both pipes are drained for the server's whole life: a full pipe would stall it.
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        for (pipe, ready) in [
            (
                Box::new(stdout) as Box<dyn std::io::Read + Send>,
                Some(ready_tx),
            ),
            (Box::new(stderr), None),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("viewer page:")
                        && let Some(ready) = &ready
                    {
                        let _ = ready.send(());
                    }
                    let mut output = output.lock().unwrap();
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        let mut party = NsParty {
            link,
            child,
            output,
            data_dir,
        };
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let status = party.child.try_wait().ok().flatten();
            panic!(
                "cowatch demo in {} did not print its viewer page within 60 s (exit status: \
                 {status:?}); it said:\n{}",
                party.link.name(Side::Server),
                party.output()
            );
        }
        party
    }

    /// The viewer page as the viewer side reaches it.
    pub fn url(&self) -> String {
        format!("http://{SERVER_IP}:{HTTP_PORT}/")
    }

    /// GETs `path` from the party as a viewer would, through the viewer side, and returns the
    /// body, or what went wrong (it is meant for failure messages: it never panics).
    pub fn get(&self, path: &str) -> String {
        self.get_from(Side::Viewer, path)
    }

    /// GETs `path` from inside the server's own namespace: the request never crosses the
    /// link, so polling `/healthz` adds nothing to a link whose rate is capped.
    pub fn peek(&self, path: &str) -> String {
        self.get_from(Side::Server, path)
    }

    fn get_from(&self, side: Side, path: &str) -> String {
        let addr = SocketAddr::from((SERVER_IP, HTTP_PORT));
        let fetched = self.link.connect(side, addr).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        });
        match fetched {
            Ok(response) => match response.split_once("\r\n\r\n") {
                Some((_, body)) => body.to_string(),
                None => response,
            },
            Err(e) => format!("(GET {path} failed: {e:#})"),
        }
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for NsParty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
