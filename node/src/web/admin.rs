//! Admin and supervision endpoints, behind the admin credential from config: the directory
//! (departments, skills, queues with business hours, agents), replicated like everything
//! else, and real-time queue and agent views.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use parley_raft::command::{
    self as cmd, default_off_hours_message, AgentSpec, DepartmentSpec, DirectoryEntry,
    DirectoryKey, Op, QueueSpec, SkillSpec,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::agent::PASSWORD_BYTES_MAX;
use super::views::{activity_view, agent_view, queue_stats, ActivityView, AgentView, QueueStats};
use super::{admin_caller, path_id, WebState};
use crate::api::{BusinessHours, Channel, Department, Queue, Skill};
use crate::error::ApiError;
use crate::token::hash_password;

/// Registers the admin and supervisor routes under `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/directory", web::get().to(directory))
        .route("/admin/departments/{id}", web::put().to(put_department))
        .route(
            "/admin/departments/{id}",
            web::delete().to(delete_department),
        )
        .route("/admin/skills/{id}", web::put().to(put_skill))
        .route("/admin/skills/{id}", web::delete().to(delete_skill))
        .route("/admin/queues/{id}", web::put().to(put_queue))
        .route("/admin/queues/{id}", web::delete().to(delete_queue))
        .route(
            "/admin/queues/{id}/business_hours",
            web::put().to(put_business_hours),
        )
        .route("/admin/agents/{id}", web::put().to(put_agent))
        .route("/admin/agents/{id}", web::delete().to(delete_agent))
        .route("/supervisor/queues", web::get().to(supervisor_queues))
        .route("/supervisor/agents", web::get().to(supervisor_agents))
        .route(
            "/supervisor/activities/{activity_id}",
            web::get().to(supervisor_activity),
        );
}

/// The directory as the admin API shows it (no password hashes).
#[derive(Debug, Serialize, ToSchema)]
pub struct DirectoryView {
    /// Departments.
    pub departments: Vec<Department>,
    /// Skills.
    pub skills: Vec<Skill>,
    /// Queues.
    pub queues: Vec<Queue>,
    /// Agents.
    pub agents: Vec<AgentEntry>,
}

/// An agent's directory entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentEntry {
    /// Id (login name).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Skills.
    pub skills: Vec<String>,
    /// Limit per channel.
    pub limits: BTreeMap<Channel, u32>,
}

async fn read_directory(state: &WebState) -> Result<DirectoryView, ApiError> {
    state
        .read(|s, _| DirectoryView {
            departments: s.departments.values().map(Department::from).collect(),
            skills: s.skills.values().map(Skill::from).collect(),
            queues: s.queues.values().map(|q| Queue::from(&q.spec)).collect(),
            agents: s
                .agents
                .values()
                .map(|a| AgentEntry {
                    id: a.spec.id.clone(),
                    name: a.spec.name.clone(),
                    skills: a.spec.skills.clone(),
                    limits: a
                        .spec
                        .limits
                        .iter()
                        .map(|(c, n)| ((*c).into(), *n))
                        .collect(),
                })
                .collect(),
        })
        .await
}

/// The whole directory.
#[utoipa::path(get, path = "/api/v1/admin/directory", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 401), (status = 403)))]
pub async fn directory(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    Ok(HttpResponse::Ok().json(read_directory(&state).await?))
}

async fn apply(state: &WebState, op: Op) -> Result<HttpResponse, ApiError> {
    state.write(op).await?;
    Ok(HttpResponse::Ok().json(read_directory(state).await?))
}

/// Creates or renames an entry that is just an id and a name.
async fn upsert_named(
    state: &WebState,
    request: &HttpRequest,
    path: web::Path<String>,
    body: web::Json<NameBody>,
    entry: impl FnOnce(String, String) -> DirectoryEntry,
) -> Result<HttpResponse, ApiError> {
    admin_caller(state, request, None)?;
    let id = path_id("id", path.into_inner())?;
    apply(state, Op::Upsert(entry(id, body.into_inner().name))).await
}

/// Removes the entry the path names.
async fn remove(
    state: &WebState,
    request: &HttpRequest,
    path: web::Path<String>,
    key: impl FnOnce(String) -> DirectoryKey,
) -> Result<HttpResponse, ApiError> {
    admin_caller(state, request, None)?;
    let id = path_id("id", path.into_inner())?;
    apply(state, Op::Remove(key(id))).await
}

/// Body of the department and skill PUTs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    /// Display name, 1..=200 bytes.
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 50>")]
    pub name: String,
}

/// Create or rename a department.
#[utoipa::path(put, path = "/api/v1/admin/departments/{id}", tag = "admin",
    params(("id" = String, Path)), request_body = NameBody, security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 400), (status = 401), (status = 403)))]
pub async fn put_department(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<NameBody>,
) -> Result<HttpResponse, ApiError> {
    upsert_named(&state, &request, path, body, |id, name| {
        DirectoryEntry::Department(DepartmentSpec { id, name })
    })
    .await
}

/// Remove a department no queue uses.
#[utoipa::path(delete, path = "/api/v1/admin/departments/{id}", tag = "admin",
    params(("id" = String, Path)), security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 404), (status = 409)))]
pub async fn delete_department(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    remove(&state, &request, path, DirectoryKey::Department).await
}

/// Create or rename a skill.
#[utoipa::path(put, path = "/api/v1/admin/skills/{id}", tag = "admin",
    params(("id" = String, Path)), request_body = NameBody, security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 400), (status = 401), (status = 403)))]
pub async fn put_skill(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<NameBody>,
) -> Result<HttpResponse, ApiError> {
    upsert_named(&state, &request, path, body, |id, name| {
        DirectoryEntry::Skill(SkillSpec { id, name })
    })
    .await
}

/// Remove a skill no queue or agent uses.
#[utoipa::path(delete, path = "/api/v1/admin/skills/{id}", tag = "admin",
    params(("id" = String, Path)), security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 404), (status = 409)))]
pub async fn delete_skill(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    remove(&state, &request, path, DirectoryKey::Skill).await
}

/// Body of `PUT /api/v1/admin/queues/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueBody {
    /// Display name, 1..=200 bytes.
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 50>")]
    pub name: String,
    /// Department id.
    #[serde(default)]
    pub department: Option<String>,
    /// `chat` (default), `callback` or `email` (fed by mailboxes).
    #[serde(default)]
    #[schema(schema_with = crate::api::directory::queue_channel_schema)]
    pub channel: Option<Channel>,
    /// Skills an agent needs.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Offer timeout, ms (1000..=3600000). Default 30000.
    #[serde(default)]
    #[schema(minimum = 1000, maximum = 3600000)]
    #[serde(deserialize_with = "crate::web::whole_number_opt")]
    pub offer_timeout_ms: Option<u64>,
    /// Make agents who miss an offer not ready. Default true.
    #[serde(default)]
    pub not_ready_on_missed_offer: Option<bool>,
    /// Customer inactivity timeout, ms; 0 disables. Default 600000.
    #[serde(default)]
    #[schema(maximum = 86400000)]
    #[serde(deserialize_with = "crate::web::whole_number_opt")]
    pub inactivity_timeout_ms: Option<u64>,
    /// Opening hours; absent means always open.
    #[serde(default)]
    pub business_hours: Option<BusinessHours>,
    /// Off-hours message, 1..=500 bytes.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 125,
        pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most_opt::<_, 125>")]
    pub off_hours_message: Option<String>,
}

/// Create or replace a queue.
#[utoipa::path(put, path = "/api/v1/admin/queues/{id}", tag = "admin",
    params(("id" = String, Path)), request_body = QueueBody, security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 400), (status = 404), (status = 409)))]
pub async fn put_queue(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<QueueBody>,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let id = path_id("id", path.into_inner())?;
    let body = body.into_inner();
    let spec = QueueSpec {
        id,
        name: body.name,
        department: body.department,
        channel: body.channel.map_or(cmd::Channel::Chat, Into::into),
        skills: body.skills,
        offer_timeout_ms: body.offer_timeout_ms.unwrap_or(30_000),
        not_ready_on_missed_offer: body.not_ready_on_missed_offer.unwrap_or(true),
        inactivity_timeout_ms: body.inactivity_timeout_ms.unwrap_or(600_000),
        business_hours: body.business_hours.map(Into::into),
        off_hours_message: body
            .off_hours_message
            .unwrap_or_else(default_off_hours_message),
    };
    apply(&state, Op::Upsert(DirectoryEntry::Queue(spec))).await
}

/// Set (or clear, with `null`) a queue's business hours.
#[utoipa::path(put, path = "/api/v1/admin/queues/{id}/business_hours", tag = "admin",
    params(("id" = String, Path)), request_body = Option<BusinessHours>, security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 400), (status = 404)))]
pub async fn put_business_hours(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Option<BusinessHours>>,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let id = path_id("id", path.into_inner())?;
    let queue_id = id.clone();
    let mut spec = state
        .read(move |s, _| s.queues.get(&queue_id).map(|q| q.spec.clone()))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_queue", format!("unknown queue {id}")))?;
    spec.business_hours = body.into_inner().map(Into::into);
    apply(&state, Op::Upsert(DirectoryEntry::Queue(spec))).await
}

/// Remove a queue that holds no live work.
#[utoipa::path(delete, path = "/api/v1/admin/queues/{id}", tag = "admin",
    params(("id" = String, Path)), security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 404), (status = 409)))]
pub async fn delete_queue(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    remove(&state, &request, path, DirectoryKey::Queue).await
}

/// Body of `PUT /api/v1/admin/agents/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBody {
    /// Display name, 1..=200 bytes.
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 50>")]
    pub name: String,
    /// Skills.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Limit per channel, e.g. `{"chat": 3, "callback": 1}`.
    #[schema(schema_with = crate::api::directory::channel_limits_schema)]
    #[serde(deserialize_with = "crate::web::whole_number_values")]
    pub limits: BTreeMap<Channel, u32>,
    /// New password (8..=1024 bytes); required for a new agent, optional otherwise. Hashed
    /// with argon2 on the receiving node; only the hash is replicated.
    #[serde(default)]
    #[schema(min_length = 8, max_length = 256)]
    pub password: Option<String>,
}

/// Create or update an agent. Lowering a limit below the agent's current load is refused.
#[utoipa::path(put, path = "/api/v1/admin/agents/{id}", tag = "admin",
    params(("id" = String, Path)), request_body = AgentBody, security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 400), (status = 404), (status = 409)))]
pub async fn put_agent(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<AgentBody>,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let id = path_id("id", path.into_inner())?;
    let body = body.into_inner();
    let password_hash = match body.password {
        Some(password) => {
            if !(8..=PASSWORD_BYTES_MAX).contains(&password.len()) {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    format!("password must be 8 to {PASSWORD_BYTES_MAX} bytes"),
                ));
            }
            web::block(move || hash_password(&password))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| ApiError::internal(e.to_string()))?
        }
        None => {
            let agent_id = id.clone();
            state
                .read(move |s, _| {
                    s.agents
                        .get(&agent_id)
                        .map(|a| a.spec.password_hash.clone())
                })
                .await?
                // Well-formed, but there is no password to keep: a conflict with the
                // directory, as a chat started in a callback queue is.
                .ok_or_else(|| {
                    ApiError::conflict(
                        "password_required",
                        "there is no agent with this id yet: a new agent needs a password",
                    )
                })?
        }
    };
    let spec = AgentSpec {
        id,
        name: body.name,
        skills: body.skills,
        limits: body
            .limits
            .into_iter()
            .map(|(c, n)| (c.into(), n))
            .collect(),
        password_hash,
    };
    apply(&state, Op::Upsert(DirectoryEntry::Agent(spec))).await
}

/// Remove an agent who is logged out and holds no work.
#[utoipa::path(delete, path = "/api/v1/admin/agents/{id}", tag = "admin",
    params(("id" = String, Path)), security(("admin_token" = [])),
    responses((status = 200, body = DirectoryView), (status = 404), (status = 409)))]
pub async fn delete_agent(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    remove(&state, &request, path, DirectoryKey::Agent).await
}

/// Real-time supervisor view, as streams send it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SupervisorView {
    /// Applied index on this node when computed.
    pub applied_index: Option<u64>,
    /// Per queue.
    pub queues: Vec<QueueStats>,
    /// Per agent.
    pub agents: Vec<AgentView>,
}

/// The supervisor view from the applied state.
pub fn supervisor_view(state: &parley_raft::State, applied: Option<u64>) -> SupervisorView {
    SupervisorView {
        applied_index: applied,
        queues: queue_stats(state),
        agents: state
            .agents
            .values()
            .map(|a| agent_view(state, a))
            .collect(),
    }
}

/// Live figures per queue: waiting, oldest, offered, assigned, ready agents, estimated wait.
#[utoipa::path(get, path = "/api/v1/supervisor/queues", tag = "supervisor", security(("admin_token" = [])),
    responses((status = 200, body = Vec<QueueStats>), (status = 401), (status = 403)))]
pub async fn supervisor_queues(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    Ok(HttpResponse::Ok().json(state.read(|s, _| queue_stats(s)).await?))
}

/// Every agent's console state: presence, node, availability, load, work.
#[utoipa::path(get, path = "/api/v1/supervisor/agents", tag = "supervisor", security(("admin_token" = [])),
    responses((status = 200, body = Vec<AgentView>), (status = 401), (status = 403)))]
pub async fn supervisor_agents(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let agents = state
        .read(|s, _| {
            s.agents
                .values()
                .map(|a| agent_view(s, a))
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(HttpResponse::Ok().json(agents))
}

/// One activity, whoever holds it: status, history and, after a site was cut off, the agents'
/// island actions that lost at the merge (`island_conflicts`).
#[utoipa::path(get, path = "/api/v1/supervisor/activities/{activity_id}", tag = "supervisor",
    security(("admin_token" = [])),
    params(("activity_id" = String, Path, description = "The activity (a chat's id for chats)")),
    responses((status = 200, body = ActivityView), (status = 400), (status = 401), (status = 403),
        (status = 404)))]
pub async fn supervisor_activity(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let activity_id = path_id("activity_id", path.into_inner())?;
    let view = state
        .read(move |s, _| {
            s.activities
                .get(&activity_id)
                .map(|activity| activity_view(s, activity))
        })
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_activity", "no such activity"))?;
    Ok(HttpResponse::Ok().json(view))
}
