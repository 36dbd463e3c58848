//! Whether the fan-out keeps up with the encoder, from how late it takes each video packet.
//! Sans-IO: every input carries `now`.
//!
//! A party is full when its seats are taken, but also when its one fan-out loop cannot send
//! what the encoder makes: then every viewer loses packets at once (seen in the soak and in
//! CI: the loop fell behind the encoder's channel and a tenth of every viewer's packets were
//! lost). The loop's lag behind the encoder says so before that happens. It is saturated once
//! the worst lag of [`SATURATED_AFTER`] windows in a row reached [`SATURATED_LAG`]: a busy
//! moment (a keyframe to every viewer at once) is not an overload, a few seconds of it are.
//! It is clear again after one window whose worst lag stayed under [`CLEAR_LAG`].

use std::time::{Duration, Instant};

/// The span over which the worst lag is taken.
pub const WINDOW: Duration = Duration::from_secs(1);
/// A window's worst lag at or above this counts towards saturation.
pub const SATURATED_LAG: Duration = Duration::from_millis(500);
/// Windows in a row at [`SATURATED_LAG`] before new viewers are turned away.
pub const SATURATED_AFTER: u32 = 3;
/// A window's worst lag under this clears saturation.
pub const CLEAR_LAG: Duration = Duration::from_millis(100);

/// The fan-out's lag behind the encoder, window by window.
#[derive(Debug)]
pub struct Load {
    window_start: Instant,
    worst: Duration,
    /// The last complete window's worst lag.
    last_worst: Duration,
    /// Complete windows in a row at [`SATURATED_LAG`] or more.
    late_windows: u32,
    saturated: bool,
}

impl Load {
    /// Nothing measured yet, at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            worst: Duration::ZERO,
            last_worst: Duration::ZERO,
            late_windows: 0,
            saturated: false,
        }
    }

    /// A video packet the encoder handed over at `made` is taken by the fan-out at `now`.
    /// True when that changed whether the fan-out is saturated.
    pub fn on_video(&mut self, now: Instant, made: Instant) -> bool {
        let was = self.saturated;
        while now >= self.window_start + WINDOW {
            self.close_window();
        }
        self.worst = self.worst.max(now.saturating_duration_since(made));
        was != self.saturated
    }

    fn close_window(&mut self) {
        self.last_worst = self.worst;
        if self.worst >= SATURATED_LAG {
            self.late_windows += 1;
        } else {
            self.late_windows = 0;
        }
        if self.late_windows >= SATURATED_AFTER {
            self.saturated = true;
        } else if self.worst < CLEAR_LAG {
            self.saturated = false;
        }
        self.worst = Duration::ZERO;
        self.window_start += WINDOW;
    }

    /// Whether new viewers should be turned away.
    pub fn is_saturated(&self) -> bool {
        self.saturated
    }

    /// The last complete window's worst lag.
    pub fn worst_lag(&self) -> Duration {
        self.last_worst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds a packet every 10 ms for `span`, each taken `lag` after it was made.
    fn feed(load: &mut Load, now: &mut Instant, span: Duration, lag: Duration) -> Vec<bool> {
        let end = *now + span;
        let mut changes = Vec::new();
        while *now < end {
            if load.on_video(*now, *now - lag) {
                changes.push(load.is_saturated());
            }
            *now += ms(10);
        }
        changes
    }

    #[test]
    fn a_busy_moment_is_not_an_overload() {
        let t0 = Instant::now();
        let mut now = t0 + ms(1000);
        let mut load = Load::new(t0);
        feed(&mut load, &mut now, ms(3000), ms(5));
        // Two late windows, then a normal one: never saturated.
        assert!(feed(&mut load, &mut now, ms(2000), ms(800)).is_empty());
        feed(&mut load, &mut now, ms(1000), ms(5));
        assert!(!load.is_saturated());
        assert!(feed(&mut load, &mut now, ms(2000), ms(800)).is_empty());
        assert!(!load.is_saturated());
    }

    #[test]
    fn seconds_of_lag_saturate_and_one_calm_window_clears() {
        let t0 = Instant::now();
        let mut now = t0;
        let mut load = Load::new(t0);
        let changes = feed(&mut load, &mut now, ms(3990), ms(600));
        assert_eq!(
            changes,
            [true],
            "saturated once the third late window closed"
        );
        assert!(load.worst_lag() >= SATURATED_LAG);
        // Still late, but under the saturating lag and over the clearing one: it stays.
        assert!(feed(&mut load, &mut now, ms(3000), ms(300)).is_empty());
        assert!(load.is_saturated());
        let changes = feed(&mut load, &mut now, ms(2000), ms(20));
        assert_eq!(changes, [false], "one calm window clears it");
        assert!(load.worst_lag() < CLEAR_LAG);
    }
}
