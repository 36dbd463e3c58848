//! The two clocks the product reads, and nowhere else.
//!
//! - [`unix_ms`]: wall-clock time. What Twitch stamps its messages with (`tmi-sent-ts`), what
//!   bans expire by (they survive restarts), and what the timecode strip carries, because a
//!   browser compares it with its own `Date.now()`.
//! - [`mono_ms`]: a monotonic clock that starts with the process. For watchdogs that compare
//!   two readings taken on different threads through an atomic; it never jumps with NTP.
//!
//! Code that needs an `Instant` takes it as a parameter where it can (the sans-IO cores), so
//! tests run it on a virtual clock.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the UNIX epoch (0 on a clock set before 1970).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the process first asked: monotonic, shared by every thread.
pub fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward() {
        let (wall, mono) = (unix_ms(), mono_ms());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(unix_ms() >= wall + 4);
        assert!(mono_ms() >= mono + 4);
        // 2020-01-01 in ms: a wall clock that reads less is not one.
        assert!(wall > 1_577_836_800_000);
    }
}
