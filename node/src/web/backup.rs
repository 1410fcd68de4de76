//! The backup API, behind the admin credential: a consistent snapshot of the replicated state,
//! as a backup file (see `parley_raft::backup`), for `parley ctl snapshot save`.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use parley_raft::backup::{self, file};
use parley_raft::BackupError;

use super::{admin_caller, WebState};
use crate::error::ApiError;

/// Longest a backup waits for this node to apply what it knows committed.
pub const BACKUP_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers the backup route under `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/snapshot", web::get().to(snapshot));
}

/// A backup of the replicated state: the file `parley ctl snapshot save` writes. The state is
/// cut at one log id on this node once it has applied every entry it knows committed; the
/// headers `Parley-Log-Index` and `Parley-State-Digest` repeat the file header's.
#[utoipa::path(get, path = "/api/v1/admin/snapshot", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A backup file (`parley snapshot inspect` reads it)",
            content_type = "application/octet-stream"),
        (status = 503, description = "This node is not caught up")))]
pub async fn snapshot(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let taken = backup::take(&state.replica, BACKUP_CATCH_UP_TIMEOUT)
        .await
        .map_err(|e| match e {
            BackupError::NotReady(why) => ApiError::unavailable("not_caught_up", why),
            other => ApiError::internal(other.to_string()),
        })?;
    let prefix = file::prefix(&taken.header).map_err(|e| ApiError::internal(e.to_string()))?;
    let length = (prefix.len() + taken.payload.len()) as u64;
    let name = format!(
        "parley-{}-{}.snapshot",
        taken.header.cluster_id, taken.header.log_id.index
    );
    let chunks = futures::stream::iter([
        Ok::<_, std::convert::Infallible>(web::Bytes::from(prefix)),
        Ok(web::Bytes::from(taken.payload)),
    ]);
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header(("Parley-Log-Index", taken.header.log_id.index.to_string()))
        .insert_header(("Parley-State-Digest", taken.header.state_digest.clone()))
        .body(SizedStream::new(length, chunks)))
}
