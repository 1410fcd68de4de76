//! Agent endpoints: login and logout, availability, the work list and feed, and actions on
//! activities (accept, transfer, complete).

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use parley_raft::command::{
    ActivityAction, AgentSession, Complete, Login, Op, SetAvailability, Transfer, TransferTarget,
};
use parley_raft::state::EventCursor;
use parley_raft::{limits, ErrorClass};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::customer::{long_poll, page_limit, parse_cursor};
use super::views::{activity_view, agent_feed, agent_view, ActivityView, AgentFeedItem, AgentView};
use super::{agent_caller, new_id, ok_answer, path_id, WebState};
use crate::api::Channel;
use crate::error::ApiError;
use crate::messaging::Feed;
use crate::token::{unknown_agent_hash, verify_password, AgentClaims};

/// Longest accepted password, in bytes.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// Registers the agent routes under `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/agents/login", web::post().to(login))
        .route("/agents/logout", web::post().to(logout))
        .route("/agents/me/availability", web::put().to(set_availability))
        .route("/agents/me/activities", web::get().to(my_activities))
        .route("/agents/me/events", web::get().to(my_events))
        .route("/activities/{activity_id}/accept", web::post().to(accept))
        .route(
            "/activities/{activity_id}/transfer",
            web::post().to(transfer),
        )
        .route(
            "/activities/{activity_id}/complete",
            web::post().to(complete),
        );
}

/// Body of `POST /api/v1/agents/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The agent's id, at most 64 bytes.
    #[schema(max_length = 16)]
    pub agent_id: String,
    /// The agent's password, at most 1024 bytes.
    #[schema(max_length = 256)]
    pub password: String,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedIn {
    /// Bearer token for every agent endpoint, valid on every node until logout or a newer
    /// login.
    pub token: String,
    /// The session it names.
    pub session_id: String,
    /// The agent's console state (a new login keeps the agent's work).
    pub agent: AgentView,
}

/// Log in on any node. A new login replaces the agent's previous session; assigned work stays.
#[utoipa::path(post, path = "/api/v1/agents/login", tag = "agent", request_body = LoginBody,
    responses((status = 200, body = LoggedIn), (status = 400), (status = 401, description = "invalid_credentials"),
        (status = 429, description = "rate_limited: too many attempts from this address or for this agent; see Retry-After"),
        (status = 503)))]
pub async fn login(
    state: web::Data<WebState>,
    request: HttpRequest,
    body: web::Json<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.password.len() > PASSWORD_BYTES_MAX
        || body.agent_id.len() > limits::DIRECTORY_ID_BYTES_MAX
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            "agent_id or password is too long",
        ));
    }
    state
        .rate_limits
        .login(request.peer_addr().map(|a| a.ip()), &body.agent_id)?;
    let agent_id = body.agent_id.clone();
    let hash = state
        .read(move |s, _| {
            s.agents
                .get(&agent_id)
                .map(|a| a.spec.password_hash.clone())
        })
        .await?;
    let password = body.password;
    // argon2 is deliberately slow: keep it off the async workers, a bounded number at a time.
    // An unknown agent costs the same check (against a dummy hash), so the answer's timing
    // does not tell which agent ids exist.
    let permit = state.rate_limits.password_check().await?;
    let valid = web::block(move || {
        let _permit = permit;
        match hash {
            Some(hash) => verify_password(&password, &hash),
            None => {
                // The same work as for a known agent; its answer is not the login's.
                let _ = verify_password(&password, unknown_agent_hash());
                false
            }
        }
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    if !valid {
        return Err(ApiError {
            code: "invalid_credentials",
            ..ApiError::unauthorized("unknown agent or wrong password")
        });
    }
    let session_id = new_id();
    let written = state
        .write_marked(Op::Login(Login {
            agent_id: body.agent_id.clone(),
            session_id: session_id.clone(),
        }))
        .await?;
    let agent_id = body.agent_id.clone();
    let agent = state
        .read(move |s, _| s.agents.get(&agent_id).map(|a| agent_view(s, a)))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_agent", "no such agent"))?;
    Ok(ok_answer(written.island).json(LoggedIn {
        token: state.agent_tokens.issue(&body.agent_id, &session_id),
        session_id,
        agent,
    }))
}

fn session(claims: &AgentClaims) -> AgentSession {
    AgentSession {
        agent_id: claims.agent_id.clone(),
        session_id: claims.session_id.clone(),
    }
}

/// End the session everywhere. Refused (409) while the agent holds assigned work; pending
/// offers go back to their queues.
#[utoipa::path(post, path = "/api/v1/agents/logout", tag = "agent", security(("agent_token" = [])),
    responses((status = 204), (status = 401), (status = 409)))]
pub async fn logout(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let claims = agent_caller(&state, &request, None).await?;
    let written = state.write_marked(Op::Logout(session(&claims))).await?;
    let mut answer = HttpResponse::NoContent();
    if written.island {
        answer.insert_header((super::ISLAND_HEADER, "true"));
    }
    Ok(answer.finish())
}

async fn view_of(state: &WebState, agent_id: String) -> Result<AgentView, ApiError> {
    state
        .read(move |s, _| s.agents.get(&agent_id).map(|a| agent_view(s, a)))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_agent", "no such agent"))
}

/// Body of `PUT /api/v1/agents/me/availability`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityBody {
    /// Ready (true) or not ready (false) per channel; channels left out keep their state.
    pub channels: BTreeMap<Channel, bool>,
    /// Why not ready (`lunch`, `training`, ...: lowercase letters, digits, `_`, `-`).
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9_-]{1,64}$")]
    pub reason: Option<String>,
}

/// Set availability per channel, with a not-ready reason. Becoming ready routes waiting work.
#[utoipa::path(put, path = "/api/v1/agents/me/availability", tag = "agent",
    request_body = AvailabilityBody, security(("agent_token" = [])),
    responses((status = 200, body = AgentView), (status = 400), (status = 401)))]
pub async fn set_availability(
    state: web::Data<WebState>,
    request: HttpRequest,
    body: web::Json<AvailabilityBody>,
) -> Result<HttpResponse, ApiError> {
    let claims = agent_caller(&state, &request, None).await?;
    let body = body.into_inner();
    let written = state
        .write_marked(Op::SetAvailability(SetAvailability {
            session: session(&claims),
            channels: body
                .channels
                .into_iter()
                .map(|(channel, ready)| (channel.into(), ready))
                .collect(),
            reason: body.reason,
        }))
        .await?;
    Ok(ok_answer(written.island).json(view_of(&state, claims.agent_id).await?))
}

/// The agent's console state: availability, load, and every activity offered or assigned,
/// with `feed_last_seq` to resume the stream from.
#[utoipa::path(get, path = "/api/v1/agents/me/activities", tag = "agent", security(("agent_token" = [])),
    responses((status = 200, body = AgentView), (status = 401)))]
pub async fn my_activities(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let claims = agent_caller(&state, &request, None).await?;
    Ok(HttpResponse::Ok().json(view_of(&state, claims.agent_id).await?))
}

/// Query of the agent feed endpoint. Unknown parameters are ignored (a browser's cache
/// buster).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentEventsQuery {
    /// Return the events after this cursor: a sequence number (events with `seq > after`), or
    /// the `next_after` of an earlier page (an island cursor `i.<node>.<epoch>.<fork>.<seq>`
    /// after events an island's view numbered). Default 0 (all).
    #[param(value_type = Option<String>, pattern = r"^([0-9]{1,20}|i\.[0-9]{1,20}\.[0-9]{1,20}\.[0-9]{1,20}\.[0-9]{1,20})$")]
    #[serde(default)]
    pub after: Option<String>,
    /// Most events returned, 1..=1000. Default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// If no event is newer than `after`, wait up to this many milliseconds for one (long
    /// poll). Default 0; capped by the node's `timeouts.long_poll_max`.
    #[serde(default)]
    pub wait_ms: u64,
}

/// A page of an agent's feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentEventsPage {
    /// Feed events in order; chat events carry the chat event.
    pub events: Vec<AgentFeedItem>,
    /// The feed's last sequence number on this node.
    pub last_seq: u64,
    /// The cursor to pass as `after` for the next page, on any node: the last event's
    /// `after`; the same as the `after` asked when the page is empty.
    pub next_after: String,
}

async fn read_feed(
    state: &WebState,
    agent_id: &str,
    after: EventCursor,
    limit: usize,
) -> Result<(AgentEventsPage, u64), ApiError> {
    let agent_id = agent_id.to_owned();
    let (page, last_seq, resume) = state
        .read(move |s, _| {
            let last = s.agents.get(&agent_id).map_or(0, |a| a.feed_last_seq());
            let resume = s.feed_resume(&agent_id, &after);
            (agent_feed(s, &agent_id, &after, limit), last, resume)
        })
        .await?;
    match page {
        None => Err(ApiError::not_found("unknown_agent", "no such agent")),
        Some(Err(first)) => Err(resume_too_old(first)),
        Some(Ok(events)) => {
            let next_after = events
                .last()
                .map_or_else(|| after.to_string(), |e| e.after.clone());
            Ok((
                AgentEventsPage {
                    events,
                    last_seq,
                    next_after,
                },
                resume.max(last_seq),
            ))
        }
    }
}

/// 410: the events after the client's position are no longer kept.
pub fn resume_too_old(first: u64) -> ApiError {
    ApiError::new(
        ErrorClass::Gone,
        "resume_too_old",
        format!(
            "events before {first} are no longer kept; reload GET /api/v1/agents/me/activities \
             and resume from its feed_last_seq"
        ),
    )
}

/// The agent's feed after `after` (the same resume as the stream, for clients without
/// WebSocket). 410 `resume_too_old` when the client is further behind than the kept feed.
#[utoipa::path(get, path = "/api/v1/agents/me/events", tag = "agent",
    params(AgentEventsQuery), security(("agent_token" = [])),
    responses((status = 200, body = AgentEventsPage), (status = 401), (status = 410)))]
pub async fn my_events(
    state: web::Data<WebState>,
    request: HttpRequest,
    query: web::Query<AgentEventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let claims = agent_caller(&state, &request, None).await?;
    let limit = page_limit(query.limit)?;
    let after = parse_cursor(query.after.as_deref())?;
    let (page, head) = read_feed(&state, &claims.agent_id, after, limit).await?;
    if !page.events.is_empty() || query.wait_ms == 0 {
        return Ok(HttpResponse::Ok().json(page));
    }
    // Nothing new: wait for the feed to pass its head here (or the client's position, if
    // this node is behind it).
    long_poll(
        &state,
        Feed::Agent(claims.agent_id.clone()),
        head,
        query.wait_ms,
    )
    .await?;
    let (page, _) = read_feed(&state, &claims.agent_id, after, limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn activity_after(state: &WebState, activity_id: String) -> Result<ActivityView, ApiError> {
    state
        .read(move |s, _| s.activities.get(&activity_id).map(|a| activity_view(s, a)))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_activity", "no such activity"))
}

/// Accept an activity offered to you.
#[utoipa::path(post, path = "/api/v1/activities/{activity_id}/accept", tag = "agent",
    params(("activity_id" = String, Path)), security(("agent_token" = [])),
    responses((status = 200, body = ActivityView), (status = 401), (status = 404),
        (status = 409, description = "Not offered to you (e.g. the offer timed out)")))]
pub async fn accept(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let activity_id = path_id("activity id", path.into_inner())?;
    let claims = agent_caller(&state, &request, None).await?;
    let written = state
        .write_marked(Op::Accept(ActivityAction {
            session: session(&claims),
            activity_id: activity_id.clone(),
        }))
        .await?;
    Ok(ok_answer(written.island).json(activity_after(&state, activity_id).await?))
}

/// Body of `POST /api/v1/activities/{id}/transfer`: `{"to": "agent", "agent_id": ...}` or
/// `{"to": "queue", "queue_id": ...}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "to", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransferBody {
    /// To an agent (logged in, ready for the channel, below their limit): offered to them.
    Agent {
        /// The receiving agent.
        agent_id: String,
    },
    /// To a queue of the same channel: back of the queue.
    Queue {
        /// The receiving queue.
        queue_id: String,
    },
}

/// Transfer an activity you work to another agent or queue; a chat's customer is told.
#[utoipa::path(post, path = "/api/v1/activities/{activity_id}/transfer", tag = "agent",
    params(("activity_id" = String, Path)), request_body = TransferBody, security(("agent_token" = [])),
    responses((status = 200, body = ActivityView), (status = 400), (status = 401), (status = 404), (status = 409)))]
pub async fn transfer(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<TransferBody>,
) -> Result<HttpResponse, ApiError> {
    let activity_id = path_id("activity id", path.into_inner())?;
    let claims = agent_caller(&state, &request, None).await?;
    let target = match body.into_inner() {
        TransferBody::Agent { agent_id } => TransferTarget::Agent { agent_id },
        TransferBody::Queue { queue_id } => TransferTarget::Queue { queue_id },
    };
    let written = state
        .write_marked(Op::Transfer(Transfer {
            action: ActivityAction {
                session: session(&claims),
                activity_id: activity_id.clone(),
            },
            target,
        }))
        .await?;
    Ok(ok_answer(written.island).json(activity_after(&state, activity_id).await?))
}

/// Body of `POST /api/v1/activities/{id}/complete`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// The result. Callbacks need one of `reached`, `no_answer`, `busy`, `voicemail`,
    /// `wrong_number`; chats take any short word (default `completed`).
    #[serde(default)]
    #[schema(pattern = r"^[a-z0-9_-]{1,64}$")]
    pub outcome: Option<String>,
}

/// Complete an activity you work. An open chat ends (its customer is told).
#[utoipa::path(post, path = "/api/v1/activities/{activity_id}/complete", tag = "agent",
    params(("activity_id" = String, Path)), request_body = CompleteBody, security(("agent_token" = [])),
    responses((status = 200, body = ActivityView), (status = 400), (status = 401), (status = 404), (status = 409)))]
pub async fn complete(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let activity_id = path_id("activity id", path.into_inner())?;
    let claims = agent_caller(&state, &request, None).await?;
    // The body is optional: empty means no outcome.
    let body: CompleteBody = if body.iter().all(u8::is_ascii_whitespace) {
        CompleteBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("malformed_json", e.to_string()))?
    };
    let written = state
        .write_marked(Op::Complete(Complete {
            action: ActivityAction {
                session: session(&claims),
                activity_id: activity_id.clone(),
            },
            outcome: body.outcome,
        }))
        .await?;
    Ok(ok_answer(written.island).json(activity_after(&state, activity_id).await?))
}
