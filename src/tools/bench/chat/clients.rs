//! The WebSocket clients of `/chat`: each reads frames, counts the replay's messages once and
//! times them from the moment their line was handed to the TMI server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::plan::Plan;

/// How long every client may take to connect and receive its snapshot.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes a client reads at once; a frame of the hub's (at most about 64 KiB) takes a few.
const CLIENT_READ_BUFFER: usize = 16 * 1024;

/// What the clients check a replay's messages against.
pub(super) struct Replay {
    /// Message id → index into `sent_ns`.
    index: HashMap<String, u32>,
    /// When each message was handed to the test server, in ns after `base`; `u64::MAX`
    /// until then. Atomics, so the sender records and clients read without a lock.
    pub(super) sent_ns: Vec<AtomicU64>,
    /// The clock's zero for `sent_ns`.
    pub(super) base: Instant,
}

impl Replay {
    pub(super) fn new(plan: &Plan) -> Self {
        Self {
            index: plan
                .ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i as u32))
                .collect(),
            sent_ns: plan.ids.iter().map(|_| AtomicU64::new(u64::MAX)).collect(),
            base: Instant::now(),
        }
    }

    pub(super) fn messages(&self) -> usize {
        self.sent_ns.len()
    }
}

/// One event of a `/chat` frame: only what the count needs, borrowed from the frame.
#[derive(Deserialize)]
struct Ev<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: Option<&'a str>,
}

/// The type of one event, and its id when it is a message. 500 clients share the server's
/// machine, so this must cost far less than the server's work per event: the hub writes
/// every event as `{"seq":N,"type":"…",…}` and a message's `"id"` right after its type, so
/// that prefix is read in place; whatever does not have it (or has escapes in it) goes
/// through serde, which must otherwise scan the whole event to skip the fields not needed.
fn kind_and_id(line: &str) -> Option<(&str, Option<&str>)> {
    if let Some(found) = read_prefix(line) {
        return Some(found);
    }
    serde_json::from_str::<Ev>(line)
        .ok()
        .map(|event| (event.kind, event.id))
}

/// The fast path of [`kind_and_id`]; `None` leaves the event to serde.
fn read_prefix(line: &str) -> Option<(&str, Option<&str>)> {
    let rest = line.strip_prefix("{\"seq\":")?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let (kind, rest) = rest.strip_prefix(",\"type\":\"")?.split_once('"')?;
    if kind.contains('\\') {
        return None;
    }
    if kind != "message" {
        return Some((kind, None));
    }
    let (id, _) = rest.strip_prefix(",\"id\":\"")?.split_once('"')?;
    if id.contains('\\') {
        return None;
    }
    Some((kind, Some(id)))
}

/// What one client counted during the current replay.
#[derive(Default)]
struct Tally {
    replay: Option<Arc<Replay>>,
    /// Bit per message of the replay: already received, so a resent backlog is not
    /// counted twice.
    seen: Vec<u64>,
    /// Distinct messages of the replay received.
    received: u64,
    /// Send → receive of each, in µs.
    latencies_us: Vec<u32>,
    /// `reset` events: the socket fell behind and was sent the backlog again.
    resets: u64,
    /// Events that did not parse.
    unreadable: u64,
    /// Frames since connecting; the first carries the snapshot's start.
    frames: u64,
    /// Why the socket ended, once it has.
    ended: Option<String>,
}

impl Tally {
    /// Counts the events of one frame read at `now`; returns the new messages of the replay.
    fn frame(&mut self, text: &str, now: Instant) -> u64 {
        self.frames += 1;
        let mut new = 0;
        for line in text.split('\n') {
            if line.is_empty() {
                continue;
            }
            let Some((kind, id)) = kind_and_id(line) else {
                self.unreadable += 1;
                continue;
            };
            match kind {
                "reset" => self.resets += 1,
                "message" => {
                    let Some(replay) = &self.replay else {
                        continue;
                    };
                    // Backlog of earlier replays and snapshots: not ours.
                    let Some(&i) = id.and_then(|id| replay.index.get(id)) else {
                        continue;
                    };
                    let (word, bit) = (i as usize / 64, 1u64 << (i % 64));
                    if self.seen[word] & bit != 0 {
                        continue;
                    }
                    self.seen[word] |= bit;
                    self.received += 1;
                    new += 1;
                    let sent = replay.sent_ns[i as usize].load(Ordering::Acquire);
                    if sent != u64::MAX {
                        let at = now.duration_since(replay.base).as_nanos() as u64;
                        let us = at.saturating_sub(sent) / 1000;
                        self.latencies_us.push(us.min(u64::from(u32::MAX)) as u32);
                    }
                }
                _ => {}
            }
        }
        new
    }
}

/// One client's tally, shared between its task and the benchmark. A std mutex: it is held
/// for one frame's bookkeeping, never across an await, and the benchmark takes it only
/// between replays.
type Slot = Mutex<Tally>;

fn lock(slot: &Slot) -> MutexGuard<'_, Tally> {
    // A panicking client leaves nothing worse than a partial count.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// The WebSocket clients, on a runtime of their own; dropping this closes them all.
pub(super) struct Clients {
    slots: Vec<Arc<Slot>>,
    /// Distinct replay messages received so far, over all clients, so the benchmark can
    /// see deliveries stop without taking every client's lock.
    delivered: Arc<AtomicU64>,
    /// Kept for its tasks; dropped last.
    _runtime: Runtime,
}

impl Clients {
    /// Connects `n` clients to `ws://{http}/chat` and waits until each has its snapshot.
    pub(super) fn connect(http: SocketAddr, n: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("bench-chat-client")
            .enable_all()
            .build()
            .context("cannot start the clients' runtime")?;
        let url = format!("ws://{http}/chat");
        let delivered = Arc::new(AtomicU64::new(0));
        let slots: Vec<Arc<Slot>> = (0..n).map(|_| Arc::default()).collect();
        for slot in &slots {
            runtime.spawn(client(url.clone(), slot.clone(), delivered.clone()));
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let mut ready = 0;
            for slot in &slots {
                let tally = lock(slot);
                if let Some(why) = &tally.ended {
                    bail!("a chat client could not read {url}: {why}");
                }
                ready += usize::from(tally.frames > 0);
            }
            if ready == n {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "only {ready} of {n} chat clients had their snapshot from {url} within {} s",
                    CONNECT_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            slots,
            delivered,
            _runtime: runtime,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Points every client at `replay`, with empty counts.
    pub(super) fn begin(&self, replay: &Arc<Replay>) {
        let words = replay.messages().div_ceil(64);
        for slot in &self.slots {
            let mut tally = lock(slot);
            tally.replay = Some(replay.clone());
            tally.seen = vec![0; words];
            tally.received = 0;
            tally.latencies_us = Vec::with_capacity(replay.messages());
            tally.resets = 0;
            tally.unreadable = 0;
        }
        self.delivered.store(0, Ordering::Relaxed);
    }

    /// Takes every client's counts of the replay, merged; an error if a client has gone.
    pub(super) fn finish(&self) -> anyhow::Result<Counts> {
        let mut counts = Counts::default();
        for slot in &self.slots {
            let mut tally = lock(slot);
            if let Some(why) = &tally.ended {
                bail!("a chat client lost its socket: {why}");
            }
            tally.replay = None;
            counts.received += tally.received;
            counts.resets += tally.resets;
            counts.unreadable += tally.unreadable;
            counts
                .latencies_us
                .append(&mut std::mem::take(&mut tally.latencies_us));
        }
        counts.latencies_us.sort_unstable();
        Ok(counts)
    }
}

/// A replay's deliveries over all clients.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) received: u64,
    pub(super) resets: u64,
    pub(super) unreadable: u64,
    /// Sorted.
    pub(super) latencies_us: Vec<u32>,
}

/// One client: reads frames until the socket ends, and says why it ended.
async fn client(url: String, slot: Arc<Slot>, delivered: Arc<AtomicU64>) {
    let why = match read_chat(&url, &slot, &delivered).await {
        Ok(()) => "the server closed it".to_owned(),
        Err(e) => format!("{e:#}"),
    };
    lock(&slot).ended = Some(why);
}

async fn read_chat(url: &str, slot: &Slot, delivered: &AtomicU64) -> anyhow::Result<()> {
    // tungstenite zeroes `read_buffer_size` bytes before every read (128 KiB by default):
    // with 500 sockets that memset alone would cost a good part of a core.
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .context("cannot connect")?;
    while let Some(frame) = socket.next().await {
        match frame.context("read failed")? {
            Message::Text(text) => {
                let now = Instant::now();
                let new = lock(slot).frame(text.as_str(), now);
                if new > 0 {
                    delivered.fetch_add(new, Ordering::Relaxed);
                }
            }
            Message::Close(_) => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_each_message_once_and_ignores_others() {
        let plan = Plan {
            rate: 1.0,
            lines: vec![],
            due: vec![],
            message_of: vec![],
            ids: vec!["a-r1-1".into(), "b-r1-1".into()],
            capture_lines: 0,
        };
        let replay = Arc::new(Replay::new(&plan));
        replay.sent_ns[0].store(0, Ordering::Relaxed);
        let mut tally = Tally {
            replay: Some(replay.clone()),
            seen: vec![0],
            ..Tally::default()
        };
        let frame = concat!(
            r#"{"seq":1,"type":"connection","state":"connected"}"#,
            "\n",
            r#"{"seq":2,"type":"message","id":"a-r1-1","sender":{"id":"7"},"text":"x"}"#,
            "\n",
            r#"{"seq":3,"type":"message","id":"old","text":"y"}"#,
            "\n",
            r#"{"seq":4,"type":"message","id":"a-r1-1"}"#,
            "\n",
            r#"{"type":"reset"}"#,
        );
        let new = tally.frame(frame, replay.base + Duration::from_millis(5));
        assert_eq!(new, 1);
        assert_eq!(tally.received, 1);
        assert_eq!(tally.resets, 1);
        assert_eq!(tally.latencies_us, [5_000]);
        assert_eq!(tally.unreadable, 0);
    }

    #[test]
    fn fast_prefix_agrees_with_serde() {
        let chat = crate::chat::Chat::new(crate::chat::ChatConfig::default());
        let message = chat.post("viewer", "hello \"there\" \\o/").unwrap();
        let snapshot = chat.subscribe().snapshot;
        let mut events: Vec<String> = snapshot
            .iter()
            .chain([&message])
            .map(|p| String::from_utf8(p.json.to_vec()).unwrap())
            .collect();
        events.push(r#"{"type":"reset"}"#.into());
        events.push(r#"{"seq":9,"type":"message","id":"a\"b","text":"x"}"#.into());
        events.push(r#"{"seq":9,"type":"message","text":"x","id":"late"}"#.into());
        for event in &events {
            let slow = serde_json::from_str::<Ev>(event)
                .map(|e| (e.kind, e.id))
                .ok();
            assert_eq!(kind_and_id(event), slow, "{event}");
        }
        // The hub's own message takes the fast path.
        let json = std::str::from_utf8(&message.json).unwrap();
        let fast = read_prefix(json).expect("the fast path reads the hub's messages");
        assert_eq!(fast, ("message", Some(message.event.message_id().unwrap())));
        assert_eq!(kind_and_id(r#"{"seq":1,"type":"#), None);
    }
}
