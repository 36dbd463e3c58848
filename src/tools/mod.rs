//! The tools: everything behind a subcommand other than `demo` and `party`.
//!
//! They use the core (the chat model, the pipeline's defaults, a running party over HTTP)
//! the way any client would, and nothing in the core uses them: a party runs without this
//! folder, and a change here cannot change what a party does.
//!
//! - [`probe`]: `cowatch probe`, a headless WHEP viewer on webrtc-rs, an independent WebRTC
//!   stack; tests and `bench broadcast` run many at once.
//! - [`load`]: `cowatch receivers`, many light str0m viewers in one process that count what
//!   arrives: the load generator of `bench broadcast`'s fan-out, `bench soak` and the load tests.
//! - [`ctl`]: `cowatch ctl`, the party's `/api/` from a terminal.
//! - [`replay`]: `cowatch twitch-replay`, a Twitch-protocol (TMI) server replaying a capture;
//!   `bench chat` replays through it, and the tests build their Twitch on it.
//! - [`bench`](mod@bench): `cowatch bench`, the benchmarks.
//! - [`cdp`]: a headless Chromium driven over the DevTools protocol, for `bench broadcast`
//!   and the browser tests.
//! - [`bidi`]: a headless Firefox driven over WebDriver BiDi, for the browser tests.
//! - [`framelog`]: what a viewer page shows frame by frame in headless Chromium (sizes, freezes).
//! - [`http`]: the one HTTP client of the tools that talk to a party on this machine.
//! - [`netns`]: two network namespaces joined by a veth pair, with loss and rate caps, for
//!   tests and benchmarks that need a real interface or a bad network.
//!
//! Each tool's options are a clap `Args` struct beside it; `cli` puts them on the command
//! line.

pub mod bench;
pub mod bidi;
pub mod cdp;
mod child;
pub mod ctl;
pub mod framelog;
pub mod http;
pub mod load;
pub mod netns;
pub mod probe;
pub mod replay;
