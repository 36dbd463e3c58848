//! cowatch: a self-hosted, Twitch-style watch party.
//!
//! # Code map
//!
//! The product's core is one folder per concern; everything that runs only behind a tool
//! subcommand (`probe`, `bench`, `twitch-replay`, `ctl`) is under [`tools`], which the core
//! never uses. [`main`](../cowatch/index.html) parses ([`cli`]), resolves the options
//! ([`config`]) and wires the parts together; it decides nothing.
//!
//! **An RTP packet, from the movie to a viewer's browser:**
//! `pipeline/feed.rs` (movie, webcam and mic, each in a pipeline of its own) →
//! `pipeline/slot.rs` → `pipeline/canvas/mix.rs` (compositor and audio mixer, laid out by
//! `pipeline/layout.rs`, ducked by `pipeline/ducking.rs`) → `pipeline/canvas/encode.rs`
//! (encoded once; the recording taps here; the on-demand renditions of the ladder,
//! `pipeline/ladder.rs` and `pipeline/rendition.rs`, branch off the raw composite: 360p, VP8)
//! → `pipeline/output.rs` (RTP packets
//! on a broadcast channel per rendition, keyframes marked by `pipeline/keyframe.rs`) →
//! `broadcast/run.rs` (the socket loop: owns the UDP socket and time) →
//! `broadcast/engine.rs` (sans-IO: routing; per rendition, `broadcast/stream.rs`, the GOP
//! cache and keyframe policy of `broadcast/keyframes.rs`) → `broadcast/viewer.rs` (one str0m
//! `Rtc` per viewer: SRTP, NACK repair, its bandwidth estimate; `broadcast/adapt.rs` picks its
//! rendition from it and the cap of `broadcast/quality.rs`, and the engine moves it at a
//! keyframe) → back to `run.rs`, which sends the datagram. A viewer arrives through
//! `web/whep.rs` → `broadcast/offer.rs` (which picks its codec).
//!
//! **A Twitch chat line:** `chat/bridge.rs` (twitch-irc) → `chat/model/twitch.rs` (a typed
//! [`chat::ChatEvent`]) → `chat/mod.rs` ([`chat::Chat::receive_twitch`], the hub's door) →
//! the hub's [`chat::Gate`], which is `moderation/gate.rs` (bans, blocked terms; what
//! Twitch's moderators did goes to `moderation/audit.rs`) → numbered and published by the
//! hub → `web/chat.rs` (each page's WebSocket) and `panel.rs` → `overlay/chat/` (drawn) →
//! the pipeline's chat panel.
//!
//! **A party viewer's line:** `web/api/party.rs` (`POST /api/chat`) → `party/mod.rs`
//! ([`party::Party::post_chat`]: the line's shape in `chat/post.rs`, the session, the
//! nickname) → [`chat::Chat::post_party`] → the same gate (plus the party-chat rule, room
//! modes, slow mode) → the same hub and the same way out.
//!
//! **A moderator's action:** `web/api/moderation.rs` (`POST /api/mod`, checked by
//! `web/extract.rs`) → `moderation/mod.rs` ([`moderation::Moderation::apply`]) →
//! `moderation/action.rs` (is it well formed?) → `moderation/apply.rs` (in the party at
//! once: the gate's rules change, the hub publishes the deletion or clear) →
//! `moderation/forward.rs` → `moderation/helix.rs` (Twitch) → `moderation/audit.rs`, kept by
//! `store.rs`.
//!
//! **Past one machine:** [`edge`] feeds the main H.264 rendition and the Opus, untouched, as
//! plain RTP to a Janus streaming mountpoint on each `--edge` (`edge/forward.rs`), which it
//! creates and watches through Janus's HTTP API (`edge/janus.rs`, `edge/mod.rs`); the
//! viewer page asks `web/api/party.rs` (`GET /api/placement`, decided in
//! `edge/placement.rs`) whether to play from the origin or from an edge.
//!
//! **Restream:** [`restream`] takes the main H.264, as encoded, and AAC from the mix from
//! the pipeline ([`pipeline::Pipeline::encoded_feed`], `pipeline/tap.rs`) and sends them to
//! each `--restream` RTMP server through a pipeline of its own per target
//! (`restream/push.rs`), connecting again after a failure (`restream/target.rs`).
//!
//! **Signing in to Twitch:** `cowatch twitch login` (`twitch/command.rs`, the Device Code
//! Grant over `twitch/client.rs`) keeps the sign-in in the data directory (`twitch/file.rs`);
//! a party takes it over (`config/twitch.rs`), and `twitch/session.rs` refreshes it and
//! publishes each new token through `chat/login.rs` to the bridge and Helix.
//!
//! The rest: [`party`] (keys, roles, sessions), [`library`] (the movies of `--library`),
//! [`store`] (the SQLite file), [`geometry`] and [`gst_util`] (small shared pieces),
//! [`web`] (thin handlers: extract, call a handle, map the error in `web/error.rs`; the
//! pages' scripts and styles in `web/assets/`), [`util`] (one clock, one id maker, one lock
//! rule) and [`shutdown`].
//!
//! # Threads and tasks
//!
//! Every tokio task of a running party is spawned through [`shutdown::Shutdown::spawn`]:
//! named, logged if it panics or ends early, and awaited by [`shutdown::Shutdown::finish`].
//!
//! | what | where | owner | stops |
//! |---|---|---|---|
//! | web server (axum) | `main.rs` | `main` | graceful, on the shutdown token |
//! | chat WebSocket, one per page | `web/chat.rs` | axum | on the token ("going away"), or when the page leaves |
//! | `broadcaster` (the `cowatch-fanout` thread, with a runtime of its own; a task awaits it) | `broadcast/run.rs` | [`shutdown`] | on the token, or when every [`broadcast::Broadcaster`] handle is gone or the pipeline's streams close |
//! | `ingest` task (WHIP publishers) | `ingest/run.rs` | [`shutdown`] | on the token (closing the publisher's session), or when every [`ingest::Ingest`] handle is gone |
//! | `twitch-sign-in` task (refreshes a stored sign-in) | `twitch/session.rs` | [`shutdown`] | on the token; after Twitch refused the refresh token it only waits for it |
//! | `twitch-bridge` task (and twitch-irc's own tasks, which its client owns) | `chat/bridge.rs` | [`shutdown`] | on the token, or when the [`chat::bridge::Bridge`] handle is dropped |
//! | `chat-log` task | `chat/log.rs` | [`shutdown`] | on the token, or when the hub closes |
//! | `chat-panel` task | `panel.rs` | [`shutdown`] | on the token, or when the pipeline stops |
//! | `edge-poll` task, one per edge | `edge/mod.rs` | [`shutdown`] | on the token (it then removes our mountpoint and session from the edge, 1 s at most) |
//! | `edge-forward` task, one per edge | `edge/forward.rs` | [`shutdown`] | on the token, or when the pipeline's streams close |
//! | `restream` task, one per RTMP target | `restream/mod.rs` | a child of [`shutdown`] | on the token, or when the host removes the target (its pipeline then goes to `Null` off the runtime) |
//! | `signals` task | `main.rs` | [`shutdown`] | turns Ctrl-C or SIGTERM into the token |
//! | `rate-limit sweeper` task | `web/limit.rs` | [`shutdown`] | on the token (it forgets addresses the rate limiters have not seen for a while, once a minute) |
//! | `conductor` thread | `pipeline/conductor.rs` | [`pipeline::Pipeline`] | on [`pipeline::Pipeline::shutdown`], which `main` calls last, after every task, so the recording gets all they sent |
//! | a movie being opened | `pipeline/conductor.rs` | the conductor | once the movie opened or failed (reported as a command) |
//! | a replaced feed being stopped | `pipeline/feed.rs` | nobody: fire and forget | once its pipeline reached `Null` (a wedged source must not wedge the conductor) |
//! | GStreamer's streaming threads | the pipelines | GStreamer | when their pipeline goes to `Null` |
//! | `library-probe` thread | `library/probe.rs` | [`library::Library`] (weakly) | after the last title, on a rescan, or once the library is dropped |
//! | painting a panel, reading a thumbnail | tokio's blocking pool | the caller, which awaits it | when done |
//!
//! Stopping: Ctrl-C or SIGTERM → the token is cancelled → the server stops accepting and
//! the tasks end → `main` waits for them (5 s at most, naming any that hang) → the pipeline
//! sends EOS so the recording gets its index → exit.

pub mod broadcast;
pub mod chat;
pub mod cli;
pub mod config;
pub mod edge;
pub mod geometry;
pub mod gst_util;
pub mod ingest;
pub mod library;
pub mod moderation;
pub mod overlay;
pub mod panel;
pub mod party;
pub mod pipeline;
pub mod restream;
pub mod shutdown;
pub mod store;
pub mod tools;
pub mod twitch;
pub mod util;
pub mod web;
