//! The one place where errors become HTTP answers.
//!
//! Every error body has the same shape: `{"error": {"code": "...", "message": "..."}}`, where
//! `code` is stable and documented and `message` is for humans. The status comes from the
//! error's [`ErrorClass`], the table the node-to-node gRPC services take their codes from too,
//! so a rejection means the same on both.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use parley_raft::{Classified, ErrorClass, ProposeError, Rejection};
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// What kind of failure: the HTTP status.
    pub class: ErrorClass,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds after which a retry may succeed (503 and 429).
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    /// An error of `class` with `code`.
    pub fn new(class: ErrorClass, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            class,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.class.http_status()
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::InvalidArgument, code, message)
    }

    /// 401: missing or wrong credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Unauthenticated, "unauthorized", message)
    }

    /// 401: the agent's session ended (logout, or a newer login).
    pub fn session_ended() -> Self {
        Self::from(Rejection::SessionEnded)
    }

    /// 403: the credential is valid but does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::PermissionDenied, "forbidden", message)
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Conflict, code, message)
    }

    /// 404 with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::NotFound, code, message)
    }

    /// 503: retry later, possibly on another node.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(ErrorClass::Unavailable, code, message)
        }
    }

    /// 500: a bug or an internal failure; details are logged, not sent.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Internal, "internal", message)
    }

    /// The answer for any classified error of the core.
    pub fn classified(error: &impl Classified) -> Self {
        let class = error.class();
        Self {
            retry_after_s: (class == ErrorClass::Unavailable).then_some(1),
            ..Self::new(class, error.code(), error.to_string())
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        Self::classified(&rejection)
    }
}

impl From<ProposeError> for ApiError {
    fn from(error: ProposeError) -> Self {
        Self::classified(&error)
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
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
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

/// Why a `parley ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No admin credential was given.
    #[error("no admin credential: pass --token-file or set PARLEY_ADMIN_TOKEN")]
    NoToken,
    /// The credential file could not be read.
    #[error("reading the admin credential from {what}: {source}")]
    Token {
        /// The file.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The URL is not an http(s) URL.
    #[error("{0:?} is not an http:// or https:// URL")]
    Url(String),
    /// A flag has a value that cannot work.
    #[error("{0}")]
    Usage(String),
    /// The CA file could not be used.
    #[error(transparent)]
    Tls(parley_raft::TlsError),
    /// The node could not be reached or did not answer in time.
    #[error("{url}: {source}")]
    Request {
        /// The node.
        url: String,
        /// Why.
        source: ureq::Error,
    },
    /// The node answered with an error.
    #[error("refused (HTTP {status}, {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error's stable code.
        code: String,
        /// The node's explanation.
        message: String,
    },
    /// The node's answer could not be read.
    #[error("{0}")]
    Answer(String),
    /// A local file could not be written or read.
    #[error("{what} {}: {source}", .path.display())]
    File {
        /// What was being done.
        what: String,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A backup is not whole or not readable.
    #[error(transparent)]
    Backup(parley_raft::BackupError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answers clients and docs/API.md rely on: a rejection's code and status are the
    /// same whether it came from this node's apply or from a forwarded write.
    #[test]
    fn rejections_and_write_errors_keep_their_documented_answers() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                Rejection::UnknownChat {
                    chat_id: "c".into(),
                }
                .into(),
                404,
                "unknown_chat",
            ),
            (
                Rejection::ChatEnded {
                    chat_id: "c".into(),
                }
                .into(),
                409,
                "chat_ended",
            ),
            (Rejection::SessionEnded.into(), 401, "session_ended"),
            (
                Rejection::invalid("text", "too long").into(),
                400,
                "invalid_field",
            ),
            (
                ProposeError::NoLeader { waited_ms: 1 }.into(),
                503,
                "no_leader",
            ),
            (ProposeError::Overloaded.into(), 503, "overloaded"),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status(), error.code), (status, code), "{error}");
            assert_eq!(error.retry_after_s.is_some(), status == 503, "{error}");
        }
    }
}

/// `parley snapshot` could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The backup file could not be opened.
    #[error("opening {}: {source}", .path.display())]
    Open {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The backup is not whole, not readable, or cannot be restored where asked.
    #[error(transparent)]
    Backup(#[from] parley_raft::BackupError),
    /// The node's config is not usable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The runtime the restore runs on could not start.
    #[error("starting the restore's runtime: {0}")]
    Runtime(std::io::Error),
}
