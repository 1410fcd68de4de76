//! The membership API, behind the admin credential: list the members with their replication
//! progress, add a node as a learner, promote a caught-up learner, remove a member. Any node
//! answers; the leader checks and makes the change (see `parley_raft::membership`).

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use parley_raft::membership::MemberChange;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{admin_caller, WebState};
use crate::api::Members;
use crate::error::ApiError;

/// How long a membership request may take, leader changes included. A voter change commits
/// two entries (joint, then final membership).
pub const MEMBERSHIP_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Registers the membership routes under `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/members", web::get().to(list_members))
        .route("/admin/members", web::post().to(add_member))
        .route(
            "/admin/members/{id}/promote",
            web::post().to(promote_member),
        )
        .route("/admin/members/{id}", web::delete().to(remove_member));
}

async fn member_request(
    state: &WebState,
    change: Option<MemberChange>,
) -> Result<HttpResponse, ApiError> {
    let list = state
        .replica
        .members()
        .request(change, MEMBERSHIP_REQUEST_TIMEOUT)
        .await
        .map_err(|e| ApiError::classified(&e))?;
    Ok(HttpResponse::Ok().json(Members::from(list)))
}

/// The members with their replication progress, as the leader sees them.
#[utoipa::path(get, path = "/api/v1/admin/members", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, body = Members), (status = 503)))]
pub async fn list_members(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    member_request(&state, None).await
}

/// Body of `POST /api/v1/admin/members`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    /// The new node's id: positive, never used before in this cluster.
    #[schema(minimum = 1)]
    pub id: u64,
    /// Its site.
    #[schema(min_length = 1, max_length = 50, pattern = r"\S")]
    pub site: String,
    /// Its gRPC address, `host:port`, as the members reach it.
    #[schema(
        max_length = 255,
        pattern = r"^[^\s/]+:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    pub grpc_addr: String,
    /// Its HTTP address, `host:port`, as clients reach it.
    #[schema(
        max_length = 255,
        pattern = r"^[^\s/]+:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
    )]
    pub http_addr: String,
}

/// Add a node as a learner: the leader starts sending it the log. The node must run with
/// `cluster_state = "existing"`. Adding the same node again changes nothing.
#[utoipa::path(post, path = "/api/v1/admin/members", tag = "admin",
    request_body = AddMemberBody, security(("admin_token" = [])),
    responses((status = 200, body = Members), (status = 400), (status = 409), (status = 503)))]
pub async fn add_member(
    state: web::Data<WebState>,
    request: HttpRequest,
    body: web::Json<AddMemberBody>,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let body = body.into_inner();
    let change = MemberChange::Add {
        id: body.id,
        site: body.site,
        grpc_addr: body.grpc_addr,
        http_addr: body.http_addr,
    };
    member_request(&state, Some(change)).await
}

/// Make a learner a voter; refused (409 `member_behind`) while it has not caught up.
#[utoipa::path(post, path = "/api/v1/admin/members/{id}/promote", tag = "admin",
    params(("id" = u64, Path, minimum = 1)), security(("admin_token" = [])),
    responses((status = 200, body = Members), (status = 404), (status = 409), (status = 503)))]
pub async fn promote_member(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let change = MemberChange::Promote {
        id: path.into_inner(),
    };
    member_request(&state, Some(change)).await
}

/// Query of `DELETE /api/v1/admin/members/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// Remove a member even where it does not say that its island writes are merged (they are
    /// then lost), and a voter even where the voters left would not keep a healthy quorum or
    /// its site would have no voter left (never the last voter).
    #[serde(default)]
    pub force: bool,
}

/// Remove a member. Refused (409) unless `force` where the member is an island or holds island
/// writes not merged yet (`island_writes_unmerged`) or does not answer whether it does
/// (`island_unknown`), and for a voter where the voters left would not keep a healthy quorum
/// (`quorum_at_risk`) or its site would keep no voter (`site_emptied`).
#[utoipa::path(delete, path = "/api/v1/admin/members/{id}", tag = "admin",
    params(("id" = u64, Path, minimum = 1), RemoveQuery), security(("admin_token" = [])),
    responses((status = 200, body = Members), (status = 404), (status = 409), (status = 503)))]
pub async fn remove_member(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<u64>,
    query: web::Query<RemoveQuery>,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let change = MemberChange::Remove {
        id: path.into_inner(),
        force: query.force,
    };
    member_request(&state, Some(change)).await
}
