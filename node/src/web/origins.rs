//! Which page origins may call this node: CORS for the API and an Origin check on WebSocket
//! upgrades.
//!
//! Allowed: the node's own origin (the `Host` the request was sent to), the HTTP address of
//! every cluster member (a page moves to another node when its node fails, and its origin is
//! then a member's), and the sites listed in `web.allowed_origins` (the embedded widget).
//! Requests without an `Origin` header (curl, servers, the CLI) are not browser requests and are
//! not checked here; their credential is.

use std::sync::Arc;

use actix_cors::Cors;
use actix_web::http::{header, Method};
use actix_web::HttpRequest;
use parley_raft::Replica;

use crate::config::web::normalise_origin;
use crate::error::ApiError;

/// How long a browser may keep a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE_S: usize = 600;

/// The origin rules of one node.
#[derive(Clone)]
pub struct Origins {
    /// `web.allowed_origins`, normalised.
    configured: Arc<Vec<String>>,
    /// For the members' HTTP addresses.
    replica: Replica,
}

impl Origins {
    /// The rules from the validated `web.allowed_origins` and the members of `replica`.
    pub fn new(configured: Vec<String>, replica: Replica) -> Self {
        Self {
            configured: Arc::new(configured),
            replica,
        }
    }

    /// Whether a page of `origin` may call this node, for a request sent to `host`.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let Ok(origin) = normalise_origin(origin) else {
            return false;
        };
        let Some((_, authority)) = origin.split_once("://") else {
            return false;
        };
        if host.is_some_and(|host| same_authority(authority, host)) {
            return true;
        }
        if self.configured.contains(&origin) {
            return true;
        }
        self.replica
            .status()
            .members
            .values()
            .any(|member| same_authority(authority, &member.http_addr))
    }

    /// The Origin check of a WebSocket upgrade (browsers apply no CORS to WebSockets): a
    /// request from a page of another, unlisted origin is refused.
    pub fn check_upgrade(&self, request: &HttpRequest) -> Result<(), ApiError> {
        let Some(origin) = request.headers().get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        if self.allows(origin, host) {
            Ok(())
        } else {
            Err(ApiError::new(
                parley_raft::ErrorClass::PermissionDenied,
                "origin_not_allowed",
                "pages of this origin may not open streams here: list it in web.allowed_origins",
            ))
        }
    }

    /// CORS for the whole HTTP surface: allowed origins get the usual answers; a preflight
    /// from any other origin is refused, and an actual request from one is served without CORS
    /// headers (the browser keeps the answer from the page).
    pub fn cors(&self) -> Cors {
        let origins = self.clone();
        Cors::default()
            .allowed_origin_fn(move |origin, head| {
                let host = head
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok());
                origin
                    .to_str()
                    .is_ok_and(|origin| origins.allows(origin, host))
            })
            .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .expose_headers([
                header::RETRY_AFTER,
                header::CONTENT_DISPOSITION,
                header::HeaderName::from_static("parley-island"),
            ])
            .max_age(PREFLIGHT_MAX_AGE_S)
    }
}

/// Whether the authority of an origin (`host[:port]`, default port left out) is `addr`
/// (`host:port` as a member or a `Host` header gives it).
fn same_authority(authority: &str, addr: &str) -> bool {
    let addr = addr.trim().to_ascii_lowercase();
    if authority == addr {
        return true;
    }
    // The origin leaves the scheme's default port out; an address may name it.
    [":80", ":443"]
        .iter()
        .any(|port| addr.strip_suffix(port) == Some(authority))
}

#[cfg(test)]
mod tests {
    use super::same_authority;

    #[test]
    fn authorities_match_with_and_without_default_ports() {
        assert!(same_authority("127.0.0.1:8001", "127.0.0.1:8001"));
        assert!(same_authority("parley.example", "parley.example:443"));
        assert!(same_authority("parley.example", "Parley.Example"));
        assert!(!same_authority("127.0.0.1:8001", "127.0.0.1:8002"));
        assert!(!same_authority("evil.example", "parley.example"));
    }
}
