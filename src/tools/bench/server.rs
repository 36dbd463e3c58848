//! A cowatch server under test: a contender started with a subcommand, waited for until it
//! says it is live, asked for its `/healthz`, and stopped the way a user would.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::process::Contender;
use crate::tools::http;

/// How long cowatch may take to say it is live.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the demo may take to encode its first frame once live.
const VIDEO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `/healthz` may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// A running cowatch, killed if the benchmark fails.
pub(super) struct Server {
    pub(super) process: Contender,
    /// Web address: the pages, `/whep`, `/chat` and `/healthz`.
    pub(super) http: SocketAddr,
}

impl Server {
    /// Runs `command` (cowatch with a subcommand), its stderr in `stderr_path`, and waits until
    /// it is live.
    pub(super) fn start(command: &mut Command, stderr_path: &Path) -> anyhow::Result<Self> {
        let mut process = Contender::spawn(command.stdout(Stdio::piped()), stderr_path)?;
        let stdout = process.stdout()?;
        let http = wait_until_live(stdout, &process)?;
        Ok(Self { process, http })
    }

    /// `cowatch demo` on free loopback ports, with `args` added, once it encodes video.
    pub(super) fn demo(
        dir: &Path,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot locate the cowatch executable")?;
        let server = Self::start(
            Command::new(exe)
                .arg("demo")
                // Port 0 for both: the kernel picks free ports, so no race with other
                // programs, and the server prints (and advertises) what it got.
                .args(["--listen", "127.0.0.1:0", "--webrtc-port", "0"])
                .args(args)
                .env("RUST_LOG", "warn"),
            &dir.join("server.stderr"),
        )
        .context("the demo server")?;
        // Live means listening; the first encoded frames follow a moment later, and every
        // measurement is about a party in progress.
        block_on(server.poll_health(
            VIDEO_TIMEOUT,
            |health| {
                health
                    .pointer("/output/video_frames")
                    .and_then(Value::as_u64)
                    .is_some_and(|n| n > 0)
            },
            |health| {
                anyhow::anyhow!(
                    "the demo server encoded no video within {} s: {health}",
                    VIDEO_TIMEOUT.as_secs()
                )
            },
        ))?;
        Ok(server)
    }

    /// Reads `/healthz` every 100 ms until `done` holds for it; after `timeout`, the error
    /// `late` makes of the last reading.
    pub(super) async fn poll_health(
        &self,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
        late: impl FnOnce(&Value) -> anyhow::Error,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let health = self.health().await?;
            if done(&health) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(late(&health));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/healthz`, or an error quoting the server's last words when it has died.
    pub(super) async fn health(&self) -> anyhow::Result<Value> {
        let url = format!("http://{}/healthz", self.http);
        let read = async {
            let response = http::local()?
                .get(&url)
                .timeout(HEALTH_TIMEOUT)
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(response.json().await?)
        };
        read.await.map_err(|e| {
            anyhow::anyhow!(
                "cannot read the server's /healthz ({e:#}); server stderr: {}",
                self.process.last_words()
            )
        })
    }
}

/// Runs `future` to its end from the benchmarks' synchronous code, on a runtime of its own.
pub(super) fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start an async runtime")?
        .block_on(future)
}

/// Reads cowatch's stdout until it is live; returns the address of its `/healthz`. The rest of
/// stdout is drained on a thread so cowatch never blocks on a full pipe.
fn wait_until_live(stdout: ChildStdout, process: &Contender) -> anyhow::Result<SocketAddr> {
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
                bail!("cowatch exited before going live: {}", process.last_words())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_url_becomes_an_address() {
        let addr = parse_health_url("http://127.0.0.1:40123/healthz").unwrap();
        assert_eq!(addr.to_string(), "127.0.0.1:40123");
        assert!(parse_health_url("https://x/healthz").is_err());
    }
}
