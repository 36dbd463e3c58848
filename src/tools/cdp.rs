//! A real headless Chromium driven over the Chrome DevTools Protocol (CDP), just enough of it
//! for the browser tests and `cowatch bench broadcast`: open a page, run JavaScript in it,
//! emulate a phone, take a screenshot.
//!
//! It speaks CDP over one synchronous websocket (tungstenite) instead of pulling in a big
//! async browser-automation crate: callers need a handful of methods, not a framework. Every
//! wait is bounded and every failure is an error naming what went wrong, never a hang.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use super::child;

/// Where Debian's `chromium` package installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one CDP command may take before the caller gives up on the browser.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Keeps only the newest diagnostic lines, so a chatty page cannot grow the log without bound.
const LOG_LINES: usize = 200;
/// Request URLs kept: a page test makes a few hundred.
const REQUEST_LINES: usize = 20_000;

/// A headless Chromium with one page attached. Dropping it kills the browser (and every process
/// it started) and deletes its profile.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: WebSocket<TcpStream>,
    /// The flattened CDP session of the page every page-level command goes to.
    session: String,
    next_id: u64,
    /// Console messages, exceptions and HTTP responses the page produced, newest last.
    log: Vec<String>,
    /// Every URL the page requested or opened a WebSocket to, oldest first (bounded only by
    /// [`REQUEST_LINES`]): what a proxy's access log would keep of the session.
    requests: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Starts Chromium headless on a fresh profile and attaches to its blank page.
    ///
    /// Fails (never skips) when Chromium is missing: a browser test or benchmark that silently
    /// passes without a browser would hide exactly what it exists to show.
    pub fn launch() -> anyhow::Result<Browser> {
        Self::launch_with(&[])
    }

    /// [`Browser::launch`] with more command-line switches (a fake camera, say).
    pub fn launch_with(extra: &[&str]) -> anyhow::Result<Browser> {
        if !Path::new(CHROMIUM).exists() {
            bail!("chromium is not installed at {CHROMIUM} (apt-get install chromium)");
        }
        let profile = fresh_profile_dir()?;
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                // Keep every packet on loopback: no update checks, sync, metrics or field trials.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--no-default-browser-check",
                "--no-first-run",
                "--disable-dev-shm-usage",
                // The viewer page autoplays (muted) and must not need a click.
                "--autoplay-policy=no-user-gesture-required",
                // The server and the browser share 127.0.0.1; WebRTC skips loopback otherwise.
                "--allow-loopback-in-peer-connection",
                // A headless page is never "visible" to a human; do not let Chromium throttle it
                // as if it were in a background tab, or frame rates become meaningless.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
            ])
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(["--remote-debugging-port=0", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so Drop can end the renderers and helpers too.
            .process_group(0);
        // No Chromium outlives its caller, even one killed before Drop could run.
        child::dies_with_parent(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                bail!("cannot start {CHROMIUM}: {e}");
            }
        };

        // Chromium picks the debugging port itself (port 0) and announces it on stderr. Keep
        // draining stderr afterwards: a full pipe would block the browser.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = tx.send(url.trim().to_string());
                    }
                    push_bounded(&mut lock(&stderr), line);
                }
            });
        }
        let connected = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| {
                anyhow::anyhow!(
                    "chromium did not announce its DevTools websocket within 30 s; stderr:\n{}",
                    lock(&stderr).join("\n")
                )
            })
            .and_then(|url| connect_ws(&url));
        let ws = match connected {
            Ok(ws) => ws,
            Err(e) => {
                let _ = kill_group(&mut child);
                let _ = std::fs::remove_dir_all(&profile);
                return Err(e);
            }
        };
        // From here on Drop cleans up whatever fails.
        let mut browser = Browser {
            child,
            profile,
            ws,
            session: String::new(),
            next_id: 0,
            log: Vec::new(),
            requests: Vec::new(),
            stderr,
        };
        browser.attach_to_page()?;
        for domain in ["Page", "Runtime", "Log", "Network"] {
            browser.call(&format!("{domain}.enable"), json!({}))?;
        }
        Ok(browser)
    }

    /// Finds the page Chromium opened (or opens one) and attaches to it with a flattened
    /// session, so the browser connection carries the page's commands too.
    fn attach_to_page(&mut self) -> anyhow::Result<()> {
        let targets = self.call_browser("Target.getTargets", json!({}))?;
        let existing = targets["targetInfos"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["targetId"].as_str())
            .map(str::to_string);
        let target = match existing {
            Some(id) => id,
            None => self.call_browser("Target.createTarget", json!({ "url": "about:blank" }))?
                ["targetId"]
                .as_str()
                .context("Target.createTarget returned no targetId")?
                .to_string(),
        };
        let attached = self.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        )?;
        self.session = attached["sessionId"]
            .as_str()
            .context("Target.attachToTarget returned no sessionId")?
            .to_string();
        Ok(())
    }

    /// Loads `url` in the page and waits until its document has finished loading.
    pub fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        let result = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(error) = result.get("errorText").and_then(Value::as_str) {
            bail!("navigating to {url} failed: {error}");
        }
        // Polling readyState is simpler than matching load events to this navigation, and just
        // as correct: the old document is gone once Page.navigate has returned.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval("document.readyState")? != "complete" {
            if Instant::now() >= deadline {
                bail!(
                    "{url} did not finish loading within 30 s; page log:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page and returns its value as JSON; promises are
    /// awaited. Fails when the expression throws, with the page's own error text.
    pub fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            let text = exception["exception"]["description"]
                .as_str()
                .or_else(|| exception["text"].as_str())
                .unwrap_or("(no description)");
            bail!("JavaScript `{expression}` threw: {text}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Makes the page lay out as on a device of `width` x `height` CSS pixels.
    pub fn emulate_device(
        &mut self,
        width: u32,
        height: u32,
        scale: f64,
        mobile: bool,
    ) -> anyhow::Result<()> {
        let orientation = if height >= width {
            json!({ "type": "portraitPrimary", "angle": 0 })
        } else {
            json!({ "type": "landscapePrimary", "angle": 90 })
        };
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": width,
                "height": height,
                "deviceScaleFactor": scale,
                "mobile": mobile,
                "screenOrientation": orientation,
            }),
        )?;
        // A phone has a touch screen; pages may lay out differently for coarse pointers.
        self.call(
            "Emulation.setTouchEmulationEnabled",
            json!({ "enabled": mobile, "maxTouchPoints": if mobile { 5 } else { 1 } }),
        )?;
        Ok(())
    }

    /// Saves a PNG of what the page shows now into `dir` and returns its path. The file is kept
    /// so a failed run can be looked at afterwards.
    pub fn screenshot(&mut self, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(
                shot["data"]
                    .as_str()
                    .context("Page.captureScreenshot returned no data")?,
            )
            .context("screenshot data is not base64")?;
        let path = dir.join(format!(
            "browser-{name}-{}-{}.png",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Every request line the page has made so far (method and URL, or `WS` and the URL of a
    /// WebSocket), oldest first.
    pub fn requests(&mut self) -> Vec<String> {
        let _ = self.pump(Duration::from_millis(10));
        self.requests.clone()
    }

    /// What the page said so far: console messages, uncaught exceptions, browser log entries
    /// and the HTTP status of every response, oldest first.
    pub fn log(&mut self) -> Vec<String> {
        // Pick up whatever arrived since the last command; a broken connection shows up in the
        // next command's error, so it can be ignored here.
        let _ = self.pump(Duration::from_millis(10));
        self.log.clone()
    }

    /// The newest lines Chromium itself wrote to stderr.
    pub fn stderr(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// Sends a command to the attached page and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    /// Sends a browser-level command (Target.*, Browser.*) and returns its result.
    pub fn call_browser(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(method, params, None)
    }

    fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(command.to_string()))
            .with_context(|| format!("CDP {method}: cannot send"))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let message = self
                .read_message(deadline)?
                .with_context(|| format!("CDP {method}: no answer within {CALL_TIMEOUT:?}"))?;
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    bail!("CDP {method} failed: {error}");
                }
                return Ok(message["result"].clone());
            }
            self.record_event(&message);
        }
    }

    /// Reads and records events until `quiet` passes without one.
    fn pump(&mut self, quiet: Duration) -> anyhow::Result<()> {
        while let Some(message) = self.read_message(Instant::now() + quiet)? {
            self.record_event(&message);
        }
        Ok(())
    }

    /// The next CDP message, or None when none arrived before `deadline`.
    fn read_message(&mut self, deadline: Instant) -> anyhow::Result<Option<Value>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // A read timeout turns the blocking socket into one we can give up on; tungstenite
            // keeps partial frames buffered across WouldBlock/TimedOut, so retrying is safe.
            self.ws
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .context("cannot set a read timeout on the DevTools socket")?;
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(&text)
                        .map(Some)
                        .context("CDP sent something that is not JSON");
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => bail!(
                    "the DevTools connection broke ({e}); did chromium crash? stderr:\n{}",
                    self.stderr().join("\n")
                ),
            }
        }
    }
    /// Keeps the events that help explain a failure, as one line each.
    fn record_event(&mut self, message: &Value) {
        let params = &message["params"];
        let request = match message["method"].as_str() {
            Some("Network.requestWillBeSent") => Some(format!(
                "{} {}",
                params["request"]["method"].as_str().unwrap_or("?"),
                params["request"]["url"].as_str().unwrap_or("?")
            )),
            Some("Network.webSocketCreated") => {
                Some(format!("WS {}", params["url"].as_str().unwrap_or("?")))
            }
            _ => None,
        };
        if let Some(line) = request {
            if self.requests.len() < REQUEST_LINES {
                self.requests.push(line);
            }
            return;
        }
        let line = match message["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match &a["value"] {
                        Value::String(s) => s.clone(),
                        Value::Null => a["description"].as_str().unwrap_or("?").to_string(),
                        v => v.to_string(),
                    })
                    .collect();
                format!(
                    "console.{}: {}",
                    params["type"].as_str().unwrap_or("?"),
                    args.join(" ")
                )
            }
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or_else(|| details["text"].as_str())
                    .unwrap_or("?");
                format!("uncaught exception: {text}")
            }
            Some("Log.entryAdded") => {
                let entry = &params["entry"];
                format!(
                    "log.{} ({}): {} {}",
                    entry["level"].as_str().unwrap_or("?"),
                    entry["source"].as_str().unwrap_or("?"),
                    entry["text"].as_str().unwrap_or(""),
                    entry["url"].as_str().unwrap_or(""),
                )
            }
            Some("Network.responseReceived") => {
                let response = &params["response"];
                format!(
                    "HTTP {} {}",
                    response["status"],
                    response["url"].as_str().unwrap_or("?")
                )
            }
            Some("Network.loadingFailed") => format!(
                "request failed: {} ({})",
                params["errorText"].as_str().unwrap_or("?"),
                params["type"].as_str().unwrap_or("?")
            ),
            _ => return,
        };
        push_bounded(&mut self.log, line);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = kill_group(&mut self.child);
        // Chromium may still be flushing the profile for a moment after the kill.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Kills the browser's whole process group (it was started as its leader) and reaps it.
fn kill_group(child: &mut Child) -> std::io::Result<()> {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals exactly the group we created; no memory is
    // touched.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    child.wait().map(drop)
}

fn connect_ws(url: &str) -> anyhow::Result<WebSocket<TcpStream>> {
    // Only ever a loopback address Chromium printed itself: ws://127.0.0.1:PORT/devtools/...
    let host_port = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .with_context(|| format!("unexpected DevTools url {url}"))?;
    let stream = TcpStream::connect(host_port)
        .with_context(|| format!("cannot connect to DevTools at {host_port}"))?;
    stream.set_nodelay(true).ok();
    let (ws, _) = tungstenite::client::client(url, stream)
        .map_err(|e| anyhow::anyhow!("DevTools websocket handshake with {url} failed: {e}"))?;
    Ok(ws)
}

fn fresh_profile_dir() -> anyhow::Result<PathBuf> {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cowatch-chromium-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the browser profile {}", dir.display()))?;
    Ok(dir)
}

/// The stderr log, even if its reader thread panicked while holding it (the lines are still
/// worth showing).
fn lock(lines: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn push_bounded(lines: &mut Vec<String>, line: String) {
    if lines.len() >= LOG_LINES {
        lines.remove(0);
    }
    lines.push(line);
}
