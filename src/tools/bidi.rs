//! A real headless Firefox (Debian's `firefox-esr`) driven over WebDriver BiDi, just enough of
//! it for the browser tests: open a page, run JavaScript in it, install a script that runs
//! before the page's own, and collect what the page logged.
//!
//! Like [`cdp`](super::cdp) it speaks the protocol over one synchronous websocket
//! (tungstenite): a handful of commands, every wait bounded, every failure an error that says
//! what the browser said. Firefox is started on a fresh profile whose `user.js` turns off
//! everything that would reach the network by itself (updates, telemetry, remote settings,
//! safe browsing, the OpenH264 download) and allows muted autoplay and media without asking.
//!
//! To run it inside a network namespace, launch it from there:
//! `link.run(Side::Viewer, Firefox::launch)` (see [`netns`](super::netns)): the browser starts
//! in the namespace and the websocket to it is opened from inside, so it works unchanged.

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
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use super::child;

/// Where Debian's `firefox-esr` package installs the browser.
pub const FIREFOX: &str = "/usr/bin/firefox-esr";

/// How long one BiDi command may take before the caller gives up on the browser.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Keeps only the newest diagnostic lines, so a chatty page cannot grow the log without bound.
const LOG_LINES: usize = 300;

/// Preferences of the fresh profile. Firefox applies WebDriver's recommended preferences
/// itself when remote control is on; these add what keeps every packet on the test's own
/// network and lets the viewer page play without a click.
const USER_JS: &str = r#"
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("browser.startup.page", 0);
user_pref("browser.aboutwelcome.enabled", false);
user_pref("browser.newtabpage.enabled", false);
user_pref("startup.homepage_welcome_url", "about:blank");
user_pref("toolkit.startup.max_resumed_crashes", -1);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("toolkit.telemetry.server", "");
user_pref("app.update.disabledForTesting", true);
user_pref("app.update.auto", false);
user_pref("app.normandy.enabled", false);
user_pref("app.shield.optoutstudies.enabled", false);
user_pref("services.settings.server", "data:,#remote-settings-dummy/v1");
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("extensions.blocklist.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.blockedURIs.enabled", false);
user_pref("browser.safebrowsing.provider.mozilla.updateURL", "");
user_pref("browser.safebrowsing.provider.google4.updateURL", "");
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.prefetch-next", false);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("network.proxy.type", 0);
user_pref("browser.region.network.url", "");
user_pref("geo.provider.network.url", "");
user_pref("media.gmp-manager.url", "");
user_pref("media.gmp-manager.updateEnabled", false);
user_pref("media.gmp-gmpopenh264.autoupdate", false);
user_pref("media.autoplay.default", 0);
user_pref("media.autoplay.blocking_policy", 0);
user_pref("media.navigator.permission.disabled", true);
user_pref("media.peerconnection.ice.obfuscate_host_addresses", false);
user_pref("dom.disable_open_during_load", false);
"#;

/// A headless Firefox with a WebDriver BiDi session on its first tab. Dropping it kills the
/// browser (and every process it started) and deletes its profile.
pub struct Firefox {
    child: Child,
    profile: PathBuf,
    ws: WebSocket<TcpStream>,
    /// The browsing context (tab) every page-level command goes to.
    context: String,
    next_id: u64,
    /// Console messages, errors and HTTP responses the page produced, newest last.
    log: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Firefox {
    /// Starts Firefox headless on a fresh profile and opens a BiDi session on its tab.
    ///
    /// Fails (never skips) when Firefox is missing: a browser test that silently passes
    /// without a browser would hide exactly what it exists to show.
    pub fn launch() -> anyhow::Result<Firefox> {
        if !Path::new(FIREFOX).exists() {
            bail!("firefox is not installed at {FIREFOX} (apt-get install firefox-esr)");
        }
        let profile = fresh_profile_dir()?;
        let mut command = Command::new(FIREFOX);
        command
            .args(["--headless", "--no-remote", "--profile"])
            .arg(&profile)
            // Port 0: Firefox picks a free port and announces it on stderr.
            .args(["--remote-debugging-port", "0", "about:blank"])
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .env("MOZ_CRASHREPORTER_SHUTDOWN", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so Drop can end the content processes too.
            .process_group(0);
        // No Firefox outlives its caller, even one killed before Drop could run.
        child::dies_with_parent(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                bail!("cannot start {FIREFOX}: {e}");
            }
        };

        // Keep draining stderr after the announcement: a full pipe would block the browser.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("WebDriver BiDi listening on ") {
                        let _ = tx.send(url.trim().to_string());
                    }
                    push_bounded(&mut lock(&stderr), line);
                }
            });
        }
        let connected = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| {
                anyhow::anyhow!(
                    "firefox did not announce its BiDi websocket within 60 s; stderr:\n{}",
                    lock(&stderr).join("\n")
                )
            })
            .and_then(|url| connect_ws(&format!("{url}/session")));
        let ws = match connected {
            Ok(ws) => ws,
            Err(e) => {
                let _ = kill_group(&mut child);
                let _ = std::fs::remove_dir_all(&profile);
                return Err(e);
            }
        };
        // From here on Drop cleans up whatever fails.
        let mut firefox = Firefox {
            child,
            profile,
            ws,
            context: String::new(),
            next_id: 0,
            log: Vec::new(),
            stderr,
        };
        firefox.call("session.new", json!({ "capabilities": {} }))?;
        let tree = firefox.call("browsingContext.getTree", json!({ "maxDepth": 0 }))?;
        firefox.context = match tree["contexts"][0]["context"].as_str() {
            Some(context) => context.to_string(),
            None => firefox.call("browsingContext.create", json!({ "type": "tab" }))?["context"]
                .as_str()
                .context("browsingContext.create returned no context")?
                .to_string(),
        };
        firefox.call(
            "session.subscribe",
            json!({ "events": ["log.entryAdded", "network.responseCompleted", "network.fetchError"] }),
        )?;
        Ok(firefox)
    }

    /// Loads `url` in the tab and waits until its document has finished loading.
    pub fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        let context = self.context.clone();
        self.call(
            "browsingContext.navigate",
            json!({ "context": context, "url": url, "wait": "complete" }),
        )
        .with_context(|| format!("navigating to {url} failed"))?;
        Ok(())
    }

    /// Runs `function` (a JavaScript function declaration, `() => { … }`) in every document
    /// this tab loads from now on, before the document's own scripts.
    pub fn add_preload_script(&mut self, function: &str) -> anyhow::Result<()> {
        let context = self.context.clone();
        self.call(
            "script.addPreloadScript",
            json!({ "functionDeclaration": function, "contexts": [context] }),
        )?;
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page and returns its value as JSON; promises
    /// are awaited. Fails when the expression throws, with the page's own error text.
    pub fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        // BiDi returns typed remote values; JSON made in the page is what callers want, and
        // `undefined` becomes null.
        let wrapped = format!("(async () => JSON.stringify(await ({expression})))()");
        let context = self.context.clone();
        let result = self.call(
            "script.evaluate",
            json!({
                "expression": wrapped,
                "target": { "context": context },
                "awaitPromise": true,
                "resultOwnership": "none",
            }),
        )?;
        if result["type"] == "exception" {
            let details = &result["exceptionDetails"];
            let text = details["text"].as_str().unwrap_or("(no description)");
            bail!("JavaScript `{expression}` threw: {text}");
        }
        match result["result"]["value"].as_str() {
            Some(json) => serde_json::from_str(json)
                .with_context(|| format!("`{expression}` gave something that is not JSON")),
            None => Ok(Value::Null),
        }
    }

    /// What the page said so far: console messages, uncaught errors and the HTTP status of
    /// every response, oldest first.
    pub fn log(&mut self) -> Vec<String> {
        // Pick up whatever arrived since the last command; a broken connection shows up in the
        // next command's error, so it can be ignored here.
        let _ = self.pump(Duration::from_millis(10));
        self.log.clone()
    }

    /// The newest lines Firefox itself wrote to stderr.
    pub fn stderr(&self) -> Vec<String> {
        lock(&self.stderr).clone()
    }

    /// Sends a BiDi command and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(command.to_string()))
            .with_context(|| format!("BiDi {method}: cannot send"))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let message = self
                .read_message(deadline)?
                .with_context(|| format!("BiDi {method}: no answer within {CALL_TIMEOUT:?}"))?;
            if message["id"] == id {
                if message["type"] == "error" {
                    bail!(
                        "BiDi {method} failed: {}: {}",
                        message["error"].as_str().unwrap_or("?"),
                        message["message"].as_str().unwrap_or("")
                    );
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

    /// The next BiDi message, or None when none arrived before `deadline`.
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
                .context("cannot set a read timeout on the BiDi socket")?;
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(&text)
                        .map(Some)
                        .context("BiDi sent something that is not JSON");
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
                    "the BiDi connection broke ({e}); did firefox crash? stderr:\n{}",
                    self.stderr().join("\n")
                ),
            }
        }
    }

    /// Keeps the events that help explain a failure, as one line each.
    fn record_event(&mut self, message: &Value) {
        let params = &message["params"];
        let line = match message["method"].as_str() {
            Some("log.entryAdded") => {
                let text = match params["text"].as_str() {
                    Some(text) => text.to_string(),
                    None => params["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| a["value"].to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                };
                format!(
                    "{}.{}: {text}",
                    params["type"].as_str().unwrap_or("log"),
                    params["level"].as_str().unwrap_or("?")
                )
            }
            Some("network.responseCompleted") => format!(
                "HTTP {} {} {}",
                params["response"]["status"],
                params["request"]["method"].as_str().unwrap_or("?"),
                params["request"]["url"].as_str().unwrap_or("?")
            ),
            Some("network.fetchError") => format!(
                "request failed: {} {}",
                params["errorText"].as_str().unwrap_or("?"),
                params["request"]["url"].as_str().unwrap_or("?")
            ),
            _ => return,
        };
        push_bounded(&mut self.log, line);
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        let _ = kill_group(&mut self.child);
        // Firefox may still be flushing the profile for a moment after the kill.
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
    // Only ever a loopback address Firefox printed itself: ws://127.0.0.1:PORT/session.
    let host_port = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .with_context(|| format!("unexpected BiDi url {url}"))?;
    let stream = TcpStream::connect(host_port)
        .with_context(|| format!("cannot connect to WebDriver BiDi at {host_port}"))?;
    stream.set_nodelay(true).ok();
    let (ws, _) = tungstenite::client::client(url, stream)
        .map_err(|e| anyhow::anyhow!("BiDi websocket handshake with {url} failed: {e}"))?;
    Ok(ws)
}

fn fresh_profile_dir() -> anyhow::Result<PathBuf> {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cowatch-firefox-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the browser profile {}", dir.display()))?;
    let prefs = dir.join("user.js");
    std::fs::write(&prefs, USER_JS).with_context(|| format!("cannot write {}", prefs.display()))?;
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
