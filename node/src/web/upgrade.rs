//! The rolling-upgrade API, behind the admin credential: what every member's release
//! supports, and raising the cluster version once all of them support a higher one (see
//! `parley_raft::version`).

use actix_web::{web, HttpRequest, HttpResponse};

use super::{admin_caller, WebState};
use crate::api::Upgrade;
use crate::error::ApiError;

/// Registers the upgrade routes under `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/upgrade", web::get().to(upgrade_status))
        .route("/admin/upgrade/finalize", web::post().to(finalize_upgrade));
}

/// The cluster version and what every member's release supports.
#[utoipa::path(get, path = "/api/v1/admin/upgrade", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, body = Upgrade)))]
pub async fn upgrade_status(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let status = parley_raft::upgrade::status(&state.replica).await;
    Ok(HttpResponse::Ok().json(Upgrade::from(status)))
}

/// Raise the cluster version to the highest every member supports (nothing changes when it
/// is there already). Refused (409 `member_silent`) while a member does not answer.
#[utoipa::path(post, path = "/api/v1/admin/upgrade/finalize", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, body = Upgrade), (status = 409), (status = 503)))]
pub async fn finalize_upgrade(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let status = parley_raft::upgrade::finalize(&state.replica)
        .await
        .map_err(|e| ApiError::classified(&e))?;
    Ok(HttpResponse::Ok().json(Upgrade::from(status)))
}
