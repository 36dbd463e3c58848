//! Errors mapped to responses, once: status code plus a one-line plain-text reason.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::broadcast::{BadQuality, BroadcastError};
use crate::chat::PostError;
use crate::moderation::ModError;
use crate::party::{ChatError, ModLinkError, SessionError};
use crate::pipeline::PipelineError;
use crate::store::StoreError;

/// An error a handler returns; becomes a status and a one-line reason.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    message: String,
    /// Seconds for `Retry-After`: the refusal is temporary and says when to come back.
    retry_after: Option<u64>,
}

impl AppError {
    /// An error with an explicit status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same refusal, with `Retry-After: seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl From<BroadcastError> for AppError {
    fn from(e: BroadcastError) -> Self {
        let retry = crate::broadcast::RETRY_AFTER.as_secs();
        let status = match &e {
            BroadcastError::BadOffer(_) | BroadcastError::Unsupported(_) => StatusCode::BAD_REQUEST,
            BroadcastError::Full(_) | BroadcastError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            BroadcastError::Busy | BroadcastError::AtCapacity => {
                return Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .retry_after(retry);
            }
            BroadcastError::TooManyFromAddress(_) => {
                return Self::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).retry_after(retry);
            }
            BroadcastError::NotFound => StatusCode::NOT_FOUND,
            BroadcastError::Bind(..) | BroadcastError::Thread(_) => {
                tracing::error!(error = %e, "broadcaster error");
                return Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<BadQuality> for AppError {
    fn from(e: BadQuality) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl AppError {
    /// A failure that is ours, not the caller's: logged in full, answered with 500 and no
    /// detail.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("{e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see the server log)",
        )
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<SessionError> for AppError {
    fn from(e: SessionError) -> Self {
        let status = match e {
            SessionError::Unknown => StatusCode::UNAUTHORIZED,
            SessionError::NickTaken(_) | SessionError::Reserved(_) => StatusCode::CONFLICT,
            SessionError::TooManyNicks(_) => StatusCode::TOO_MANY_REQUESTS,
            SessionError::Full => StatusCode::SERVICE_UNAVAILABLE,
            SessionError::Uninvited => StatusCode::FORBIDDEN,
        };
        let wait = match e {
            SessionError::TooManyNicks(seconds) => Some(seconds),
            _ => None,
        };
        let error = Self::new(status, e.to_string());
        match wait {
            Some(seconds) => error.retry_after(seconds),
            None => error,
        }
    }
}

impl From<PostError> for AppError {
    fn from(e: PostError) -> Self {
        let status = match e {
            PostError::BadNick(_) | PostError::Empty | PostError::Text(_) => {
                StatusCode::BAD_REQUEST
            }
            PostError::TooLong(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PostError::TooFast(_) => StatusCode::TOO_MANY_REQUESTS,
            PostError::Refused(_) => StatusCode::FORBIDDEN,
        };
        // A 429 says when to come back, as the per-address limits' do.
        let wait = match e {
            PostError::TooFast(seconds) => Some(seconds),
            _ => None,
        };
        let error = Self::new(status, e.to_string());
        match wait {
            Some(seconds) => error.retry_after(seconds),
            None => error,
        }
    }
}

impl From<ChatError> for AppError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Post(e) => e.into(),
            ChatError::Session(e) => e.into(),
        }
    }
}

impl From<ModError> for AppError {
    fn from(e: ModError) -> Self {
        let status = match e {
            ModError::Forbidden => StatusCode::FORBIDDEN,
            ModError::Invalid(_) => StatusCode::BAD_REQUEST,
            ModError::NotFound(_) => StatusCode::NOT_FOUND,
            ModError::Store(e) => return e.into(),
        };
        Self::new(status, e.to_string())
    }
}

impl From<ModLinkError> for AppError {
    fn from(e: ModLinkError) -> Self {
        match e {
            ModLinkError::BadLabel => Self::new(StatusCode::BAD_REQUEST, e.to_string()),
            ModLinkError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            ModLinkError::Store(e) => e.into(),
        }
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
        let mut response = (
            self.status,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            line,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<crate::restream::RestreamError> for AppError {
    fn from(e: crate::restream::RestreamError) -> Self {
        use crate::restream::RestreamError as E;
        let status = match &e {
            E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::Conflict(_) => StatusCode::CONFLICT,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        AppError::new(status, e.to_string())
    }
}

impl From<crate::ingest::IngestError> for AppError {
    fn from(e: crate::ingest::IngestError) -> Self {
        let status = match &e {
            crate::ingest::IngestError::BadOffer(_)
            | crate::ingest::IngestError::Unsupported(_) => StatusCode::BAD_REQUEST,
            crate::ingest::IngestError::Busy => StatusCode::CONFLICT,
            crate::ingest::IngestError::NotFound => StatusCode::NOT_FOUND,
            crate::ingest::IngestError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            crate::ingest::IngestError::Pipeline(_) | crate::ingest::IngestError::Bind(..) => {
                tracing::error!(error = %e, "ingest error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        AppError::new(status, e.to_string())
    }
}
