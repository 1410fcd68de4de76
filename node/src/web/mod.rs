//! The HTTP and WebSocket edge: routes, request parsing and validation, authentication, and
//! answers.
//!
//! Handlers parse and bound the input, check the caller's credential, then ask the app actor
//! (writes through Raft, reads of the applied state) or the messaging actor (waits, streams,
//! typing). Every failure is an [`ApiError`].
//!
//! - [`customer`]: chats, callbacks, transcripts (chat tokens).
//! - [`agent`]: login, availability, work, activities (agent tokens).
//! - [`admin`]: directory changes and supervision (the admin credential).
//! - [`members`]: membership changes (the admin credential).
//! - [`backup`]: a backup file of the replicated state (the admin credential).
//! - [`upgrade`]: rolling upgrades: versions and the cluster version (the admin credential).
//! - [`stream`]: WebSocket streams for all three.
//! - [`openapi`]: the OpenAPI document, generated from the handlers.
//! - [`origins`]: which page origins may call the node (CORS, WebSocket Origin check).
//! - [`pages`]: the web pages (widget, console, wallboard, admin) and their security headers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, MailboxError};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use parley_raft::command::{ChatId, Op, Participant};
use parley_raft::state::QueuePosition;
use parley_raft::{ErrorClass, Outcome, Replica, State};
use serde::Deserialize as _;
use tokio_util::sync::CancellationToken;

use crate::app::{AppActor, CheckReady, GetClusterView, RenderMetrics, Written};
use crate::error::ApiError;
use crate::messaging::{Feed, MessagingActor, WaitForEvents};
use crate::metrics::Metrics;
use crate::token::{AgentClaims, AgentTokens, ChatTokens, AGENT_TOKEN_PREFIX};
use rate_limits::RateLimits;

pub mod admin;
pub mod agent;
pub mod backup;
pub mod customer;
pub mod diagnostics;
pub mod email;
pub mod members;
pub mod openapi;
pub mod origins;
pub mod pages;
pub mod rate_limits;
pub mod stream;
pub mod upgrade;
pub mod views;

/// Largest accepted JSON body, in bytes.
pub const JSON_BODY_BYTES_MAX: usize = 64 * 1024;
/// Default number of events per page.
pub const EVENTS_PAGE_DEFAULT: usize = 100;

/// What every handler can reach.
#[derive(Clone)]
pub struct WebState {
    /// The app actor (readiness, the cluster view, metrics).
    pub app: Addr<AppActor>,
    /// Write counters and latency.
    pub metrics: Arc<Metrics>,
    /// The messaging actor.
    pub messaging: Addr<MessagingActor>,
    /// Chat tokens.
    pub chat_tokens: ChatTokens,
    /// Agent tokens.
    pub agent_tokens: AgentTokens,
    /// Hash of the admin credential, if configured.
    pub admin_token_hash: Option<blake3::Hash>,
    /// Longest long-poll wait a client may ask for.
    pub long_poll_max: Duration,
    /// Cancelled when the node stops: streams close with "go elsewhere".
    pub shutdown: CancellationToken,
    /// Cancelled when the node starts draining (SIGTERM): `/readyz` answers 503 from then on.
    pub draining: CancellationToken,
    /// This node's id (agent presence).
    pub node_id: u64,
    /// Waiting customers' queue positions, shared by their streams.
    pub queue_positions: Arc<QueuePositions>,
    /// The replica: writes and reads of the applied state and the archive.
    pub replica: Replica,
    /// Abuse limits: logins, chat starts, password checks in flight.
    pub rate_limits: Arc<RateLimits>,
    /// The key of the MACs in our Message-IDs and subject tags (replies are stamped with them).
    pub email_mac: crate::email::ids::ThreadMac,
    /// The last failures of this node's email services, for the mailbox view.
    pub email_status: crate::email::status::Status,
    /// Which page origins may call this node.
    pub origins: origins::Origins,
    /// Whether this node serves the pages (`web.pages`).
    pub pages: bool,
}

/// How old the shared queue positions may be before a stream recomputes them.
const QUEUE_POSITIONS_MAX_AGE: Duration = Duration::from_secs(1);

/// Every waiting activity's queue position, computed in one pass at most once a second and
/// shared by every stream of a waiting customer (each asks every 2 s; with thousands waiting,
/// one scan of the waiting line per stream would cost the square of their number).
#[derive(Default)]
pub struct QueuePositions {
    cached: tokio::sync::Mutex<Option<(Instant, Positions)>>,
}

/// Queue positions by activity id.
type Positions = Arc<HashMap<String, QueuePosition>>;

impl QueuePositions {
    /// `activity_id`'s position, from positions at most a second old.
    pub async fn get(
        &self,
        state: &WebState,
        activity_id: &str,
    ) -> Result<Option<QueuePosition>, ApiError> {
        let mut cached = self.cached.lock().await;
        let fresh = cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < QUEUE_POSITIONS_MAX_AGE)
            .map(|(_, positions)| positions.clone());
        let positions = match fresh {
            Some(positions) => positions,
            None => {
                let positions = Arc::new(state.read(|s, _| s.queue_positions()).await?);
                *cached = Some((Instant::now(), positions.clone()));
                positions
            }
        };
        drop(cached);
        Ok(positions.get(activity_id).copied())
    }
}

impl WebState {
    /// Commits `op`.
    pub async fn write(&self, op: Op) -> Result<Outcome, ApiError> {
        self.write_marked(op).await.map(|written| written.outcome)
    }

    /// Commits `op` or, on an island, takes it into the island journal; says which.
    pub async fn write_marked(&self, op: Op) -> Result<Written, ApiError> {
        crate::app::commit(&self.replica, &self.metrics, op).await
    }

    /// Runs `f` on the state that holds `activity_id`: the applied state while the activity is
    /// in memory, else (it was retired) a state holding only its archived record. `f` answers
    /// `None` where the activity is not in the state it is given.
    pub async fn read_activity<R: Send + 'static>(
        &self,
        activity_id: &str,
        f: impl Fn(&State, Option<u64>) -> Option<R> + Send + Sync + 'static,
    ) -> Result<Option<R>, ApiError> {
        let f = Arc::new(f);
        let live = Arc::clone(&f);
        let (found, applied) = self
            .read(move |s, applied| (live(s, applied), applied))
            .await?;
        if found.is_some() {
            return Ok(found);
        }
        let retired = self
            .replica
            .archived(activity_id)
            .await
            .map_err(|e| ApiError::internal(format!("reading the archive: {e}")))?;
        Ok(retired.and_then(|r| f(&r.into_state(), applied)))
    }

    /// Runs `f` on the applied state.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&State, Option<u64>) -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        Ok(self
            .replica
            .read(|state, applied| f(state, applied.map(|id| id.index))))
    }
}

/// Registers every route and the input error handlers.
pub fn configure(cfg: &mut web::ServiceConfig, state: WebState) {
    cfg.app_data(web::Data::new(state))
        .app_data(
            web::JsonConfig::default()
                .limit(JSON_BODY_BYTES_MAX)
                .error_handler(|error, _req| json_error(error).into()),
        )
        .app_data(
            web::QueryConfig::default().error_handler(|error, _req| query_error(error).into()),
        )
        .app_data(web::PathConfig::default().error_handler(|error, _req| path_error(error).into()))
        .route("/livez", web::get().to(livez))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .service(
            web::scope("/api/v1")
                .route("/cluster", web::get().to(cluster))
                .route("/openapi.json", web::get().to(openapi::serve))
                .route("/queues", web::get().to(pages::public_queues))
                .configure(customer::routes)
                .configure(agent::routes)
                .configure(admin::routes)
                .configure(members::routes)
                .configure(upgrade::routes)
                .configure(backup::routes)
                .configure(diagnostics::routes)
                .configure(email::routes)
                .configure(stream::routes),
        )
        .configure(pages::routes)
        .default_service(web::to(not_found));
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::new(
                ErrorClass::PayloadTooLarge,
                "payload_too_large",
                format!("the body is larger than {JSON_BODY_BYTES_MAX} bytes"),
            )
        }
        JsonPayloadError::ContentType => ApiError::new(
            ErrorClass::UnsupportedMediaType,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        JsonPayloadError::Deserialize(error) if error.to_string().starts_with(TEXT_TOO_LONG) => {
            ApiError::bad_request("invalid_field", error.to_string())
        }
        other => ApiError::bad_request("malformed_json", other.to_string()),
    }
}

fn query_error(error: QueryPayloadError) -> ApiError {
    ApiError::bad_request("invalid_query", error.to_string())
}

fn path_error(error: PathError) -> ApiError {
    ApiError::bad_request("invalid_path", error.to_string())
}

/// The actor could not take the request (full mailbox, or stopping).
pub fn mailbox(error: MailboxError) -> ApiError {
    ApiError::unavailable(
        "busy",
        format!("the node could not take the request: {error}"),
    )
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("not_found", "no such endpoint"))
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::unavailable(
            "draining",
            "this node is stopping; use another node",
        ));
    }
    match state.app.send(CheckReady).await.map_err(mailbox)? {
        Ok(()) => Ok(HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n")),
        Err(reason) => Err(ApiError::unavailable("not_ready", reason)),
    }
}

async fn metrics(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let text = state.app.send(RenderMetrics).await.map_err(mailbox)??;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

/// The cluster as this node sees it: leader, term, members with site and role, this node's
/// applied index and state digest.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses((status = 200, body = crate::app::ClusterView)))]
pub async fn cluster(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let view = state.app.send(GetClusterView).await.map_err(mailbox)??;
    Ok(HttpResponse::Ok().json(view))
}

/// The WebSocket subprotocol a browser page offers and the node answers with.
pub const STREAM_PROTOCOL: &str = "parley";
/// Prefix of the subprotocol that carries a page's credential, base64url-encoded (browsers
/// cannot set an Authorization header on a WebSocket, and a URL ends up in logs and history).
pub const STREAM_TOKEN_PROTOCOL_PREFIX: &str = "parley-token.";
/// Longest credential accepted in a subprotocol, in bytes once decoded.
const STREAM_TOKEN_BYTES_MAX: usize = 1024;

/// The credential a WebSocket upgrade carries in `Sec-WebSocket-Protocol`, if any.
fn subprotocol_token(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    use base64::Engine as _;
    for value in request.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        for protocol in value.split(',').map(str::trim) {
            let Some(encoded) = protocol.strip_prefix(STREAM_TOKEN_PROTOCOL_PREFIX) else {
                continue;
            };
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .ok()
                .filter(|d| d.len() <= STREAM_TOKEN_BYTES_MAX)
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| {
                    ApiError::unauthorized("the parley-token subprotocol is not base64url text")
                })?;
            return Ok(Some(decoded));
        }
    }
    Ok(None)
}

/// The bearer credential of a request: the `Authorization: Bearer` header, or for WebSocket
/// upgrades (browsers cannot set headers there) a `parley-token.<base64url>` subprotocol or an
/// `access_token` query parameter.
pub fn bearer(request: &HttpRequest, query_token: Option<&str>) -> Result<String, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        if let Some(token) = subprotocol_token(request)? {
            return Ok(token);
        }
        return match query_token {
            Some(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
            _ => Err(ApiError::unauthorized(
                "missing Authorization: Bearer <token>",
            )),
        };
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim().to_owned())
        }
        _ => Err(ApiError::unauthorized(
            "expected Authorization: Bearer <token>",
        )),
    }
}

/// Checks an id taken from the path.
pub fn path_id(field: &str, raw: String) -> Result<String, ApiError> {
    parley_raft::state::check_client_id(field, &raw)
        .map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
    Ok(raw)
}

/// The agent whose token the request carries, if that session is still the agent's current
/// one in the replicated state.
pub async fn agent_caller(
    state: &WebState,
    request: &HttpRequest,
    query_token: Option<&str>,
) -> Result<AgentClaims, ApiError> {
    let token = bearer(request, query_token)?;
    agent_from_token(state, &token).await
}

async fn agent_from_token(state: &WebState, token: &str) -> Result<AgentClaims, ApiError> {
    let claims = state
        .agent_tokens
        .verify(token)
        .ok_or_else(|| ApiError::unauthorized("not a valid agent token"))?;
    let (current, head) = agent_session(state, &claims).await?;
    if current {
        return Ok(claims);
    }
    // A login through another node moments ago may not be applied here yet: wait (at most
    // `UNKNOWN_CHAT_WAIT`) for the agent's feed to move, as a login does, and look again.
    let woken = state
        .messaging
        .send(WaitForEvents {
            feed: Feed::Agent(claims.agent_id.clone()),
            after: head,
        })
        .await
        .map_err(mailbox)??;
    let _ = tokio::time::timeout(UNKNOWN_CHAT_WAIT, woken).await;
    if agent_session(state, &claims).await?.0 {
        return Ok(claims);
    }
    Err(ApiError::session_ended())
}

/// Whether the session `claims` names is the agent's current one here, and the agent's feed
/// head.
async fn agent_session(state: &WebState, claims: &AgentClaims) -> Result<(bool, u64), ApiError> {
    let (agent_id, session_id) = (claims.agent_id.clone(), claims.session_id.clone());
    state
        .read(move |s, _| {
            let agent = s.agents.get(&agent_id);
            (
                agent.is_some_and(|a| a.has_session(&session_id)),
                agent.map_or(0, |a| a.feed_last_seq()),
            )
        })
        .await
}

/// How long a read waits for this node to apply a chat (or an agent's login) it does not know
/// yet.
pub const UNKNOWN_CHAT_WAIT: Duration = Duration::from_secs(1);

/// Waits (at most [`UNKNOWN_CHAT_WAIT`]) until this node has applied `chat_id`, for reads that
/// arrive here moments after the chat was started through another node. Answers whether the
/// chat is known now.
pub async fn await_chat(state: &WebState, chat_id: &str) -> Result<bool, ApiError> {
    let id = chat_id.to_owned();
    if state.read(move |s, _| s.chats.contains_key(&id)).await? {
        return Ok(true);
    }
    let archived = state
        .replica
        .archived(chat_id)
        .await
        .map_err(|e| ApiError::internal(format!("reading the archive: {e}")))?;
    if archived.is_some_and(|r| r.chat.is_some()) {
        return Ok(true);
    }
    let woken = state
        .messaging
        .send(WaitForEvents {
            feed: Feed::Chat(chat_id.to_owned()),
            after: 0,
        })
        .await
        .map_err(mailbox)??;
    let _ = tokio::time::timeout(UNKNOWN_CHAT_WAIT, woken).await;
    let id = chat_id.to_owned();
    state.read(move |s, _| s.chats.contains_key(&id)).await
}

/// Who is calling a chat endpoint: the chat's customer (chat token) or the agent holding the
/// chat (agent token).
pub async fn chat_caller(
    state: &WebState,
    request: &HttpRequest,
    query_token: Option<&str>,
    chat_id: &ChatId,
) -> Result<Participant, ApiError> {
    let token = bearer(request, query_token)?;
    if token.starts_with(AGENT_TOKEN_PREFIX) {
        let claims = agent_from_token(state, &token).await?;
        await_chat(state, chat_id).await?;
        let (chat, me) = (chat_id.clone(), claims.agent_id.clone());
        let holds = state
            .read(move |s, _| {
                s.activities
                    .get(&chat)
                    .is_some_and(|a| a.status.holder() == Some(&me))
            })
            .await?;
        if !holds {
            return Err(ApiError::forbidden(
                "this chat is not offered or assigned to you",
            ));
        }
        return Ok(Participant::Agent {
            agent_id: claims.agent_id,
        });
    }
    if !state.chat_tokens.verify(chat_id, &token) {
        return Err(ApiError::unauthorized("the token does not open this chat"));
    }
    Ok(Participant::Customer)
}

/// The admin credential check (constant-time comparison of hashes).
pub fn admin_caller(
    state: &WebState,
    request: &HttpRequest,
    query_token: Option<&str>,
) -> Result<(), ApiError> {
    let Some(expected) = state.admin_token_hash else {
        return Err(ApiError::forbidden(
            "the admin API is disabled on this node: set admin_token in its config",
        ));
    };
    let token = bearer(request, query_token)?;
    if blake3::hash(token.as_bytes()) != expected {
        return Err(ApiError::unauthorized("not the admin credential"));
    }
    Ok(())
}

/// Deserializes an integer that JSON may spell as a number with a zero fraction (`5.0`), as
/// JSON Schema's `integer` allows; a fraction or an out-of-range value is refused.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v <= u64::MAX as f64)
            .map(|v| v as u64)
    });
    let whole = whole.ok_or_else(|| D::Error::custom(format!("{number} is not a whole number")))?;
    T::try_from(whole).map_err(|_| D::Error::custom(format!("{whole} is out of range")))
}

/// How a text over its character bound is reported, so [`json_error`] answers
/// `invalid_field` for it, as for every other bound, and not `malformed_json`.
const TEXT_TOO_LONG: &str = "a text is longer than";

/// Deserializes a string of at most `N` characters (Unicode code points, what JSON Schema's
/// `maxLength` counts). The edge bounds text in characters, at a quarter of the byte bound the
/// state keeps (`limits.rs`), so every text the document allows fits the state's bound.
pub fn chars_at_most<'de, D, const N: usize>(deserializer: D) -> Result<String, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let text = String::deserialize(deserializer)?;
    if text.chars().count() > N {
        return Err(D::Error::custom(format!("{TEXT_TOO_LONG} {N} characters")));
    }
    Ok(text)
}

/// [`chars_at_most`] for an optional field (`null` or absent: `None`).
pub fn chars_at_most_opt<'de, D, const N: usize>(
    deserializer: D,
) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let text = Option::<String>::deserialize(deserializer)?;
    if text.as_ref().is_some_and(|t| t.chars().count() > N) {
        return Err(D::Error::custom(format!("{TEXT_TOO_LONG} {N} characters")));
    }
    Ok(text)
}

/// [`whole_number`] for an optional field (`null` or absent: `None`).
pub fn whole_number_opt<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::{Error, IntoDeserializer};
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let value: serde_json::Value = number.into();
    whole_number(value.into_deserializer())
        .map(Some)
        .map_err(|e: serde_json::Error| D::Error::custom(e))
}

/// [`whole_number`] for every value of a map.
pub fn whole_number_values<'de, D, K, T>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<K, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: serde::Deserialize<'de> + Ord,
    T: TryFrom<u64>,
{
    use serde::de::{Error, IntoDeserializer};
    let raw = std::collections::BTreeMap::<K, serde_json::Number>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(key, number)| {
            let value: serde_json::Value = number.into();
            whole_number(value.into_deserializer())
                .map(|v| (key, v))
                .map_err(|e: serde_json::Error| D::Error::custom(e))
        })
        .collect()
}

/// Answers 201 for a new resource, 200 for a replayed request.
pub fn created_or_replayed(replayed: bool) -> actix_web::HttpResponseBuilder {
    if replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    }
}

/// The header every answer to a write taken in island mode carries (`Parley-Island: true`),
/// also where the body has no `island` field.
pub const ISLAND_HEADER: &str = "parley-island";

/// The answer to a write: 200 or 201 as [`created_or_replayed`], marked when it was taken in
/// island mode.
pub fn written_answer(replayed: bool, island: bool) -> actix_web::HttpResponseBuilder {
    let mut builder = created_or_replayed(replayed);
    if island {
        builder.insert_header((ISLAND_HEADER, "true"));
    }
    builder
}

/// A 200 answer, saying (`Parley-Island: true`) when the write was taken in island mode.
pub fn ok_answer(island: bool) -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    if island {
        builder.insert_header((ISLAND_HEADER, "true"));
    }
    builder
}

/// An outcome the handler did not expect: a bug, reported as such.
pub fn unexpected(outcome: Outcome) -> ApiError {
    ApiError::internal(format!("unexpected outcome {outcome:?}"))
}

/// A new id for something this node creates.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod credential_tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn upgrade(protocols: &str) -> HttpRequest {
        TestRequest::default()
            .insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocols))
            .to_http_request()
    }

    #[test]
    fn a_page_s_credential_comes_from_its_subprotocol() {
        // base64url("pa2.cluster.alice:x.s") without padding
        let request = upgrade("parley, parley-token.cGEyLmNsdXN0ZXIuYWxpY2U6eC5z");
        assert_eq!(
            bearer(&request, None).as_deref(),
            Ok("pa2.cluster.alice:x.s")
        );
    }

    #[test]
    fn the_authorization_header_wins_and_the_query_is_the_last_resort() {
        let request = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer from-header"))
            .insert_header((header::SEC_WEBSOCKET_PROTOCOL, "parley, parley-token.eA"))
            .to_http_request();
        assert_eq!(bearer(&request, Some("q")).as_deref(), Ok("from-header"));
        let request = upgrade("parley");
        assert_eq!(
            bearer(&request, Some("from-query")).as_deref(),
            Ok("from-query")
        );
        assert!(bearer(&request, None).is_err());
    }

    #[test]
    fn a_malformed_or_oversized_subprotocol_credential_is_refused() {
        let request = upgrade("parley, parley-token.not*base64");
        assert_eq!(
            bearer(&request, None).map_err(|e| e.code),
            Err("unauthorized")
        );
        let long = "A".repeat(4 * STREAM_TOKEN_BYTES_MAX);
        let request = upgrade(&format!("parley, parley-token.{long}"));
        assert!(bearer(&request, None).is_err());
    }
}
