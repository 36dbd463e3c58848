//! The HTTP server: thin handlers over the module handles.
//!
//! - `/` the viewer page, `/host` the host's dashboard, `/assets/` their scripts and styles
//!   (`pages`);
//! - `/healthz` state as JSON, `/metrics` Prometheus text;
//! - `/api/placement` where a new viewer watches: the origin or a Janus edge (`edge/`);
//! - `/whep` WHEP signalling for any WebRTC player (and the page's keyframe and quality calls);
//! - `/whip` WHIP signalling for the streamer's camera and mic from OBS, a browser or a phone;
//! - `/chat` the chat as a WebSocket event stream;
//! - `/api/` the JSON API (`api`), its callers and bodies checked by `extract`, its errors
//!   mapped once in `error`;
//! - what one address and everyone together may take (connections, chat sockets, the
//!   costly POSTs' rates): `limit`.

mod api;
mod chat;
mod error;
mod extract;
pub mod limit;
mod pages;
mod qr;
mod whep;
mod whip;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::broadcast::{Broadcaster, Sessions, StatsSnapshot};
use crate::chat::Chat;
use crate::library::Library;
use crate::moderation::Moderation;
use crate::party::Party;
use crate::pipeline::{Health, Pipeline};
use crate::shutdown::Shutdown;

/// Offers are a few kB; anything much larger is refused before it is read.
const MAX_BODY: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The host pipeline.
    pub pipeline: Pipeline,
    /// The WebRTC fan-out.
    pub broadcaster: Broadcaster,
    /// Publishers' cameras and mics (WHIP).
    pub ingest: crate::ingest::Ingest,
    /// The party's chat.
    pub chat: Chat,
    /// Who may do what.
    pub party: Party,
    /// Moderator actions, bans, blocked terms, the audit log.
    pub moderation: Moderation,
    /// The Janus edges (empty without `--edge`).
    pub edges: crate::edge::Edges,
    /// The RTMP targets (`--restream`, and the host page's).
    pub restream: crate::restream::Restream,
    /// The host's media library, when `--library` is given.
    pub library: Option<Library>,
    /// The stored Twitch sign-in the party uses, if any (the host page shows whose it is).
    pub twitch: Option<crate::twitch::Session>,
    /// Ends the chat sockets when the party stops (axum's graceful shutdown does not wait for
    /// upgraded connections).
    pub shutdown: Shutdown,
    /// Per-address and total caps, and the POSTs' rate limits.
    pub limits: limit::Limits,
}

/// The router, apart from `main` so tests can drive it with `oneshot`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(pages::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/chat", get(chat::socket))
        .merge(api::routes())
        .route("/whep", post(whep::post).options(whep::options))
        .route(
            "/whep/{id}",
            axum::routing::delete(whep::delete)
                .patch(whep::patch)
                .options(whep::options),
        )
        .route("/whep/{id}/keyframe", post(whep::keyframe))
        .route("/whip", post(whip::post).options(whep::options))
        .route(
            "/whip/{id}",
            axum::routing::delete(whip::delete)
                .patch(whep::patch)
                .options(whep::options),
        )
        .route("/whep/{id}/quality", post(whep::quality))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit::rate_limit,
        ))
        .layer(middleware::from_fn(cors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state)
}

/// Any WHEP player on any origin may watch: the party link is the access control. (Done by
/// hand because a generic CORS layer answers every OPTIONS itself and drops WHEP's
/// `Accept-Post`.)
async fn cors(request: axum::extract::Request, next: Next) -> axum::response::Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Content-Type, Accept-Post"),
    );
    response
}

/// A handler panicked: the caller gets a 500 with no detail and the log gets the reason, so
/// one bad request never takes a connection (or a task) down silently.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let reason = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(reason, "a request handler panicked");
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal error (see the server log)",
    )
        .into_response()
}

/// `/healthz`: the pipeline and the viewers.
#[derive(Serialize)]
struct HealthReport {
    #[serde(flatten)]
    pipeline: Health,
    viewers: StatsSnapshot,
    max_viewers: usize,
    /// Each rendition and each viewer (absent once the fan-out has stopped).
    sessions: Option<Sessions>,
    /// Each Janus edge: state, viewers by Janus, our mountpoint.
    edges: Vec<crate::edge::EdgeReport>,
    /// `/chat` sockets open now.
    chat_sockets: usize,
    /// Whoever publishes the camera and mic over WHIP, if anyone.
    publisher: Option<crate::ingest::PublisherState>,
    /// Each RTMP target: its URL without the key, state and bitrate.
    restream: Vec<crate::restream::TargetReport>,
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(HealthReport {
        pipeline: state.pipeline.health(),
        viewers: state.broadcaster.stats(),
        max_viewers: state.broadcaster.max_viewers(),
        sessions: state.broadcaster.sessions().await.ok(),
        edges: state.edges.report(),
        chat_sockets: state.limits.chat_sockets(),
        publisher: state.ingest.state().await.ok().flatten(),
        restream: state.restream.report(),
    })
}

/// `/metrics` in the Prometheus text format.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let b = state.broadcaster.stats();
    let o = state.pipeline.health().output;
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        text.push_str(&format!(
            "# HELP cowatch_{name} {help}\n# TYPE cowatch_{name} {kind}\ncowatch_{name} {value}\n"
        ));
    };
    metric(
        "viewers",
        "gauge",
        "Viewers holding a session.",
        b.viewers as u64,
    );
    metric(
        "viewers_connected",
        "gauge",
        "Viewers receiving media: the ones counted against --max-viewers.",
        b.connected as u64,
    );
    metric(
        "viewers_pending",
        "gauge",
        "Offers answered whose ICE and DTLS have not completed yet.",
        b.pending as u64,
    );
    metric(
        "viewers_refused_at_connect_total",
        "counter",
        "Viewers closed as they connected because the last seat was taken meanwhile.",
        b.refused_at_connect,
    );
    metric(
        "viewer_joins_total",
        "counter",
        "Viewers that joined.",
        b.joins,
    );
    metric(
        "sent_bytes_total",
        "counter",
        "UDP bytes sent to viewers.",
        b.bytes_sent,
    );
    metric(
        "sent_packets_total",
        "counter",
        "UDP datagrams sent to viewers.",
        b.packets_sent,
    );
    metric(
        "send_drops_total",
        "counter",
        "Datagrams dropped by a full socket buffer.",
        b.send_drops,
    );
    metric(
        "keyframes_requested_total",
        "counter",
        "Keyframe requests from viewers.",
        b.keyframes_requested,
    );
    metric(
        "keyframes_forced_total",
        "counter",
        "Keyframes asked of the encoder.",
        b.keyframes_forced,
    );
    metric(
        "encoded_frames_total",
        "counter",
        "Video frames encoded.",
        o.video_frames,
    );
    metric(
        "encoded_keyframes_total",
        "counter",
        "Keyframes encoded.",
        o.keyframes,
    );
    metric(
        "nacks_received_total",
        "counter",
        "NACK messages received from viewers.",
        b.nacks_received,
    );
    metric(
        "packets_resent_total",
        "counter",
        "Video packets resent (RTX) after a viewer's NACK.",
        b.packets_resent,
    );
    metric(
        "media_pauses_total",
        "counter",
        "Times a viewer silent for 3 s had its media paused until heard again.",
        b.media_pauses,
    );
    metric(
        "fanout_lagged_packets_total",
        "counter",
        "Video packets lost for every viewer: the fan-out fell behind the encoder (overload).",
        b.video_lagged,
    );
    if let Ok(sessions) = state.broadcaster.sessions().await {
        per_viewer(&mut text, &sessions);
    }
    per_edge(&mut text, &state.edges.report());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The per-viewer and per-rendition series of `/metrics`, labelled by session id and codec.
fn per_viewer(text: &mut String, sessions: &Sessions) {
    type Field = fn(&crate::broadcast::ViewerStats) -> u64;
    let series: [(&str, &str, Field); 6] = [
        (
            "viewer_nacks_received_total",
            "NACK messages this viewer sent.",
            |v| v.nacks_received,
        ),
        (
            "viewer_packets_resent_total",
            "Video packets resent to this viewer.",
            |v| v.packets_resent,
        ),
        (
            "viewer_keyframe_requests_total",
            "Keyframes this viewer asked for.",
            |v| v.keyframe_requests,
        ),
        (
            "viewer_video_packets_total",
            "Video packets sent to this viewer (first sends).",
            |v| v.video_packets,
        ),
        (
            "viewer_rendition_switches_total",
            "Times this viewer was moved between renditions.",
            |v| v.switches,
        ),
        (
            "viewer_media_pauses_total",
            "Times this viewer went silent and its media was paused.",
            |v| v.pauses,
        ),
    ];
    for (name, help, field) in series {
        text.push_str(&format!(
            "# HELP cowatch_{name} {help}\n# TYPE cowatch_{name} counter\n"
        ));
        for v in &sessions.viewers {
            text.push_str(&format!(
                "cowatch_{name}{{viewer=\"{}\",codec=\"{}\"}} {}\n",
                v.id,
                v.codec,
                field(v)
            ));
        }
    }
    text.push_str(
        "# HELP cowatch_viewer_estimate_kbps What the bandwidth estimate (TWCC) says this \
         viewer's link carries, labelled with the rendition it receives.\n\
         # TYPE cowatch_viewer_estimate_kbps gauge\n",
    );
    for v in &sessions.viewers {
        if let Some(kbps) = v.estimate_kbps {
            text.push_str(&format!(
                "cowatch_viewer_estimate_kbps{{viewer=\"{}\",codec=\"{}\",rendition=\"{}\"}} {kbps}\n",
                v.id, v.codec, v.rendition
            ));
        }
    }
    text.push_str(
        "# HELP cowatch_rendition_active Whether a rendition's encoder runs.\n\
         # TYPE cowatch_rendition_active gauge\n",
    );
    for r in &sessions.renditions {
        text.push_str(&format!(
            "cowatch_rendition_active{{rendition=\"{}\",codec=\"{}\",name=\"{}\"}} {}\n",
            r.id.0,
            r.codec,
            r.name,
            u8::from(r.active)
        ));
    }
}

/// The per-edge series of `/metrics`, labelled by the edge's URL.
fn per_edge(text: &mut String, edges: &[crate::edge::EdgeReport]) {
    if edges.is_empty() {
        return;
    }
    type Field = fn(&crate::edge::EdgeReport) -> u64;
    let series: [(&str, &str, &str, Field); 4] = [
        (
            "edge_up",
            "gauge",
            "Whether the edge answers and carries our mountpoint.",
            |e| u64::from(e.state == crate::edge::EdgeState::Up),
        ),
        (
            "edge_viewers",
            "gauge",
            "Viewers on the edge's mountpoint, as Janus counts them.",
            |e| e.viewers,
        ),
        (
            "edge_sent_bytes_total",
            "counter",
            "RTP bytes forwarded to the edge.",
            |e| e.bytes_sent,
        ),
        (
            "edge_keyframe_requests_total",
            "counter",
            "Keyframe requests (PLI/FIR) the edge sent.",
            |e| e.keyframe_requests,
        ),
    ];
    for (name, kind, help, field) in series {
        text.push_str(&format!(
            "# HELP cowatch_{name} {help}\n# TYPE cowatch_{name} {kind}\n"
        ));
        for e in edges {
            text.push_str(&format!(
                "cowatch_{name}{{edge=\"{}\"}} {}\n",
                e.url.replace('\\', "\\\\").replace('"', "\\\""),
                field(e)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_without_its_reason() {
        let app = axum::Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    let detail: &'static str = ["internal detail at 0x7fca"][0];
                    panic!("{detail}");
                    #[allow(unreachable_code)]
                    ""
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                super::panicked,
            ));
        let response = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("0x7fca"), "{text}");
        assert!(text.contains("internal error"), "{text}");
    }
}
