//! The HTTP server: thin handlers over the module handles. Today `/healthz` and a status page;
//! the viewer page, WHEP and chat hang off the same router.

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};

use crate::pipeline::Pipeline;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The host pipeline.
    pub pipeline: Pipeline,
}

/// The router, apart from `main` so tests can drive it with `oneshot`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// The pipeline's state as JSON.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.pipeline.health())
}

/// A status page until the viewer page exists.
async fn index() -> Html<&'static str> {
    Html(include_str!("status.html"))
}
