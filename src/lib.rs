//! cowatch: a self-hosted, Twitch-style watch party.
//!
//! # Layout
//!
//! - [`cli`]: the command line: the subcommands and their options.
//! - [`config`]: the party's options (flags and config file), merged into settings.
//! - [`party`]: who may do what: the host key, moderator links, invites, viewer sessions.
//! - [`pipeline`]: the host GStreamer pipeline: movie, webcam and mic in; one composite,
//!   encoded once, out as RTP; controls and health.
//! - [`chat`]: the Twitch chat bridge and the party's chat, as one stream of typed events.
//! - [`moderation`]: moderator actions (applied in the party, forwarded to Twitch Helix),
//!   blocked terms, party-chat rules, and the checks the chat hub runs on every message.
//! - [`store`]: the SQLite file under `--data-dir` that bans, blocked terms, moderator
//!   links, party settings and the audit log survive restarts in.
//! - [`library`]: the movies of `--library DIR`, with durations and thumbnails probed in the
//!   background, for the dashboard's "Watch party" picker.
//! - [`geometry`]: rectangles and colours, shared by layouts, the composite and the overlay.
//! - [`gst_util`]: GStreamer helpers shared by the pipeline and the library (elements,
//!   preroll, bus events).
//! - [`overlay`]: pictures drawn in Rust for the composite (slates, static layers).
//! - [`panel`]: the chat panel wired: follows the chat, draws it with the overlay and hands
//!   the pictures to the pipeline.
//! - [`broadcast`]: WebRTC fan-out of the encoded streams to viewers (str0m, WHEP).
//! - [`web`]: the axum server: `/healthz` and the pages.
//! - [`tools`]: what runs behind the other subcommands: `probe`, `ctl`, `twitch-replay`,
//!   `bench`. Nothing else uses them.
//! - [`shutdown`]: the stop signal every task watches.
//!
//! Data flows one way: pipeline → RTP → viewers.

pub mod broadcast;
pub mod chat;
pub mod cli;
pub mod config;
pub mod geometry;
pub mod gst_util;
pub mod library;
pub mod moderation;
pub mod overlay;
pub mod panel;
pub mod party;
pub mod pipeline;
pub mod shutdown;
pub mod store;
pub mod tools;
pub mod util;
pub mod web;
