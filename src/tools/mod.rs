//! The tools: everything behind a subcommand other than `demo` and `party`.
//!
//! - [`probe`]: `cowatch probe`, a headless WHEP viewer on webrtc-rs.
//! - [`ctl`]: `cowatch ctl`, the party's API from a terminal.
//! - [`replay`]: `cowatch twitch-replay`, a Twitch-protocol server replaying a capture.
//! - [`bench`]: `cowatch bench`, the benchmarks.
//! - [`cdp`]: a headless Chromium driven over the DevTools protocol.
//! - [`http`]: the HTTP client of the tools that talk to a party on this machine.

pub mod bench;
pub mod cdp;
mod child;
pub mod ctl;
pub mod http;
pub mod probe;
pub mod replay;
