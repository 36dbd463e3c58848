//! cowatch: a self-hosted, Twitch-style watch party.
//!
//! # Layout
//!
//! - [`config`]: command line and config file, merged into settings.
//! - [`pipeline`]: the host GStreamer pipeline: movie, webcam and mic in; one composite,
//!   encoded once, out as RTP; controls and health.
//! - [`chat`]: the Twitch chat bridge and the party's chat, as one stream of typed events.
//! - [`overlay`]: pictures drawn in Rust for the composite (slates, static layers).
//! - [`broadcast`]: WebRTC fan-out of the encoded streams to viewers (str0m, WHEP).
//! - [`web`]: the axum server: `/healthz` and the pages.
//! - [`probe`]: a headless viewer on an independent WebRTC stack (webrtc-rs).
//! - [`bench`]: the benchmarks behind `cowatch bench`.
//! - [`shutdown`]: the stop signal every task watches.
//!
//! Data flows one way: pipeline → RTP → viewers.

pub mod bench;
pub mod broadcast;
pub mod chat;
pub mod config;
pub mod overlay;
pub mod pipeline;
pub mod probe;
pub mod shutdown;
pub mod web;
