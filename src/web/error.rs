//! Errors mapped to responses, once: status code plus a one-line plain-text reason.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::broadcast::BroadcastError;
use crate::pipeline::PipelineError;

/// An error a handler returns; becomes a status and a one-line reason.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    message: String,
}

impl AppError {
    /// An error with an explicit status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<BroadcastError> for AppError {
    fn from(e: BroadcastError) -> Self {
        let status = match &e {
            BroadcastError::BadOffer(_) | BroadcastError::Unsupported(_) => StatusCode::BAD_REQUEST,
            BroadcastError::Full(_) | BroadcastError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            BroadcastError::NotFound => StatusCode::NOT_FOUND,
            BroadcastError::Bind(..) => {
                tracing::error!(error = %e, "broadcaster error");
                return Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<PipelineError> for AppError {
    fn from(e: PipelineError) -> Self {
        let status = match &e {
            PipelineError::Invalid(_) | PipelineError::Layout(_) => StatusCode::BAD_REQUEST,
            PipelineError::Stopped | PipelineError::Internal(_) => StatusCode::SERVICE_UNAVAILABLE,
            PipelineError::Movie(_)
            | PipelineError::Source(_)
            | PipelineError::Config(_)
            | PipelineError::MissingPlugin(_)
            | PipelineError::Control(_)
            | PipelineError::NoMovie => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut line: String = self.message.lines().next().unwrap_or_default().to_string();
        line.push('\n');
        (
            self.status,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            line,
        )
            .into_response()
    }
}
