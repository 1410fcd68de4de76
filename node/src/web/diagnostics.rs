//! Diagnostics behind the admin credential: this node's applied state checked against every
//! state invariant (`State::validate`), with the applied index and digest it was checked at.
//! The live chaos runner reads it on every node after its faults.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::{admin_caller, WebState};
use crate::error::ApiError;

/// Registers the diagnostics routes under `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/validate", web::get().to(validate));
}

/// The result of `State::validate` on this node's applied state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidateView {
    /// The index the state was checked at (none before the first entry applied).
    pub applied_index: Option<u64>,
    /// BLAKE3 of the state checked.
    pub digest: String,
    /// The broken invariants found; empty when every one holds. `validate` stops at the
    /// first, so there is at most one.
    pub violations: Vec<String>,
}

/// Checks this node's applied state against every state invariant. It walks the whole state:
/// meant for tests and chaos runs, not for frequent polling.
#[utoipa::path(get, path = "/api/v1/admin/validate", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = ValidateView), (status = 401), (status = 403)))]
pub async fn validate(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let (applied_index, digest, violations) = state
        .read(|s, applied| {
            let violations: Vec<String> = s
                .validate()
                .err()
                .map(|v| v.to_string())
                .into_iter()
                .collect();
            (applied, s.digest(), violations)
        })
        .await?;
    let digest = digest.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(ValidateView {
        applied_index,
        digest,
        violations,
    }))
}
