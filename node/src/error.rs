//! The one place where errors become HTTP answers.
//!
//! Every error body has the same shape: `{"error": {"code": "...", "message": "..."}}`, where
//! `code` is stable and documented and `message` is for humans.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use parley_raft::{ProposeError, Rejection};
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds after which a retry may succeed (503 only).
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: status.as_u16(),
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: missing or wrong credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 401: the agent's session ended (logout, or a newer login).
    pub fn session_ended() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "session_ended",
            "the agent session has ended; log in again",
        )
    }

    /// 403: the credential is valid but does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 404 with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 503: retry later, possibly on another node.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 500: a bug or an internal failure; details are logged, not sent.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let message = rejection.to_string();
        match rejection {
            Rejection::UnknownQueue { .. } => Self::not_found("unknown_queue", message),
            Rejection::UnknownChat { .. } => Self::not_found("unknown_chat", message),
            Rejection::UnknownAgent { .. } => Self::not_found("unknown_agent", message),
            Rejection::UnknownActivity { .. } => Self::not_found("unknown_activity", message),
            Rejection::UnknownEntry { .. } => Self::not_found("unknown_entry", message),
            Rejection::ChatEnded { .. } => Self::conflict("chat_ended", message),
            Rejection::OffHours { .. } => Self::conflict("off_hours", message),
            Rejection::SessionEnded => Self::session_ended(),
            Rejection::Conflict { .. } => Self::conflict("conflict", message),
            Rejection::LimitReached { .. } => Self::conflict("limit_reached", message),
            Rejection::Invalid { .. } => Self::bad_request("invalid_field", message),
            Rejection::IdempotencyConflict { .. } => {
                Self::new(StatusCode::CONFLICT, "idempotency_conflict", message)
            }
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(error: ProposeError) -> Self {
        let message = error.to_string();
        match error {
            ProposeError::NoLeader { .. } => Self::unavailable("no_leader", message),
            ProposeError::Timeout { .. } => Self::unavailable("write_timeout", message),
            ProposeError::Overloaded => Self::unavailable("overloaded", message),
            ProposeError::ShuttingDown => Self::unavailable("shutting_down", message),
            ProposeError::Codec(_) => Self::internal(message),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(Body {
            error: Detail {
                code: self.code,
                message: &self.message,
            },
        })
    }
}
