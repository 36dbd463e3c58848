//! What a viewer page shows, frame by frame, as a test or a benchmark reads it from headless
//! Chromium: a script that logs every frame the page's video presents (its size when it
//! changes, gaps over 100 ms), and the arithmetic on that log (when frames first had a
//! height, the longest freeze in a window). Times are epoch milliseconds: Chromium runs on
//! this machine, so its clock is ours.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Install with `Page.addScriptToEvaluateOnNewDocument` (runs before the page's scripts):
/// records each frame the page's video presents, as sizes (epoch ms, width, height) when they
/// change and gaps over 100 ms (epoch ms of the frame before, length).
pub const FRAME_LOG: &str = r#"(() => {
  const log = { sizes: [], gaps: [], frames: 0, last: 0, error: null };
  window.cowatchFrames = log;
  const start = () => {
    const v = document.getElementById('video');
    if (!v) { log.error = 'no video element'; return; }
    if (!('requestVideoFrameCallback' in v)) { log.error = 'no requestVideoFrameCallback'; return; }
    const onFrame = (now, meta) => {
      const t = performance.timeOrigin + now;
      const prev = log.sizes[log.sizes.length - 1];
      if (!prev || prev[1] !== meta.width || prev[2] !== meta.height) {
        if (log.sizes.length < 1000) log.sizes.push([t, meta.width, meta.height]);
      }
      if (log.last && t - log.last > 100 && log.gaps.length < 5000) log.gaps.push([log.last, t - log.last]);
      log.last = t;
      log.frames++;
      v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})()"#;

/// The frame log and the player's own state (`window.cowatch`), read in one evaluation.
pub const READ_PAGE: &str = r#"(() => {
  const l = window.cowatchFrames || {};
  const v = document.getElementById('video');
  const c = window.cowatch || {};
  return { sizes: l.sizes || [], gaps: l.gaps || [], frames: l.frames || 0, last: l.last || 0,
    error: l.error || null, now: performance.timeOrigin + performance.now(),
    videoWidth: v ? v.videoWidth : 0, videoHeight: v ? v.videoHeight : 0,
    state: c.state || null, reconnects: c.reconnects || 0, freezes: c.freezes || 0,
    longestFreezeMs: c.longestFreezeMs || 0 };
})()"#;

/// Milliseconds since the epoch: the clock Chromium's frame times are in.
pub fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A moment in both clocks viewers are read in: a probe's (`Instant`) and the page's (epoch ms).
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// The probe's clock.
    pub at: Instant,
    /// The page's clock.
    pub epoch_ms: f64,
}

impl Moment {
    /// Now, in both.
    pub fn now() -> Self {
        Self {
            at: Instant::now(),
            epoch_ms: epoch_ms(),
        }
    }
}

/// When the page's frames first had `height` lines at or after `since` (epoch ms): `since`
/// itself if they already had it; `None` if never.
pub fn first_at_height(page: &Value, height: u32, since: f64) -> Option<f64> {
    let sizes: Vec<(f64, u64)> = page["sizes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s[0].as_f64()?, s[2].as_u64()?)))
        .collect();
    let before = sizes.iter().rev().find(|(t, _)| *t <= since);
    if before.is_some_and(|(_, h)| *h == u64::from(height)) {
        return Some(since);
    }
    sizes
        .iter()
        .find(|(t, h)| *t > since && *h == u64::from(height))
        .map(|(t, _)| *t)
}

/// The longest time without a presented frame between `from` and `to` (epoch ms), the end
/// included.
pub fn longest_freeze(page: &Value, from: f64, to: f64) -> f64 {
    let overlap = |start: f64, end: f64| (end.min(to) - start.max(from)).max(0.0);
    let last = page["last"].as_f64().filter(|&l| l > 0.0).unwrap_or(from);
    page["gaps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| Some((g[0].as_f64()?, g[1].as_f64()?)))
        .map(|(start, ms)| overlap(start, start + ms))
        .fold(overlap(last, to), f64::max)
}
