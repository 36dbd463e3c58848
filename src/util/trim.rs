//! Gives the memory of sessions that ended back to the system.
//!
//! Each viewer's session holds its own copies of the packets it was sent lately (str0m's send
//! and resend buffers): roughly half a megabyte. When a raid leaves, or a churn of viewers
//! passes, glibc keeps those pages in its arenas, and the process stays as large as its peak:
//! in a 60 s churn of 580 viewers beside 100 steady ones, the server ended 24 to 31 % larger
//! than it started with the same 100 viewers, flat rather than growing (no leak, nothing a
//! streamer on a small machine gets back). `malloc_trim` returns free pages of every arena.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often it looks whether sessions ended.
const EVERY: Duration = Duration::from_secs(10);

/// Until `stop`: every [`EVERY`], when `ended()` (a count of sessions that ended, never
/// falling) moved, trims the allocator's free memory off the runtime's threads.
pub async fn run(ended: impl Fn() -> u64, stop: CancellationToken) {
    let mut seen = ended();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = ended();
        if now == seen {
            continue;
        }
        seen = now;
        // Walks every arena under its lock: milliseconds, kept off the fan-out's thread.
        let trimmed = tokio::task::spawn_blocking(trim).await;
        if let Err(e) = trimmed {
            tracing::warn!(error = %e, "returning freed memory failed");
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it takes
    // their locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
