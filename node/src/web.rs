//! The HTTP edge: routes, request parsing and validation, and answers.
//!
//! Handlers parse and bound the input, then ask the app actor (writes, reads) or the messaging
//! actor (long-poll waits). Every failure is an [`ApiError`].

use std::time::Duration;

use actix::{Addr, MailboxError};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use parley_raft::command::Customer;
use parley_raft::limits;
use serde::Deserialize;

use crate::app::{
    AppActor, CheckReady, GetClusterView, PostCustomerMessage, ReadEvents, RenderMetrics,
    StartChatRequest,
};
use crate::error::ApiError;
use crate::messaging::{MessagingActor, WaitForEvents};

/// Largest accepted JSON body, in bytes.
pub const JSON_BODY_BYTES_MAX: usize = 64 * 1024;
/// Default number of events per page.
pub const EVENTS_PAGE_DEFAULT: usize = 100;

/// What every handler can reach.
#[derive(Clone)]
pub struct WebState {
    /// The app actor.
    pub app: Addr<AppActor>,
    /// The messaging actor.
    pub messaging: Addr<MessagingActor>,
    /// Longest long-poll wait a client may ask for.
    pub long_poll_max: Duration,
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
                .route("/chats", web::post().to(start_chat))
                .route("/chats/{chat_id}/messages", web::post().to(post_message))
                .route("/chats/{chat_id}/events", web::get().to(chat_events)),
        )
        .default_service(web::to(not_found));
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError {
                status: 413,
                code: "payload_too_large",
                message: format!("the body is larger than {JSON_BODY_BYTES_MAX} bytes"),
                retry_after_s: None,
            }
        }
        JsonPayloadError::ContentType => ApiError {
            status: 415,
            code: "unsupported_media_type",
            message: "send the body as application/json".to_owned(),
            retry_after_s: None,
        },
        other => ApiError::bad_request("malformed_json", other.to_string()),
    }
}

fn query_error(error: QueryPayloadError) -> ApiError {
    ApiError::bad_request("invalid_query", error.to_string())
}

fn path_error(error: PathError) -> ApiError {
    ApiError::bad_request("invalid_path", error.to_string())
}

fn mailbox(error: MailboxError) -> ApiError {
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

async fn cluster(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let view = state.app.send(GetClusterView).await.map_err(mailbox)??;
    Ok(HttpResponse::Ok().json(view))
}

/// Body of `POST /api/v1/chats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartChatBody {
    /// Client-generated idempotency key for this start.
    pub request_id: String,
    /// The queue (entry point).
    pub queue_id: String,
    /// Pre-chat form: name and email.
    pub customer: Customer,
    /// Pre-chat form: the question.
    #[serde(default)]
    pub question: String,
}

async fn start_chat(
    state: web::Data<WebState>,
    body: web::Json<StartChatBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let started = state
        .app
        .send(StartChatRequest {
            request_id: body.request_id,
            queue_id: body.queue_id,
            customer: body.customer,
            question: body.question,
        })
        .await
        .map_err(mailbox)??;
    let mut response = if started.replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(response.json(started))
}

/// Body of `POST /api/v1/chats/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessageBody {
    /// Client-generated id; a retry with the same id is not posted twice.
    pub client_msg_id: String,
    /// The text.
    pub text: String,
}

fn bearer(request: &HttpRequest) -> Result<String, ApiError> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <chat token>"))?;
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
            "expected Authorization: Bearer <chat token>",
        )),
    }
}

fn chat_id_from_path(raw: String) -> Result<String, ApiError> {
    parley_raft::state::check_client_id("chat id", &raw)
        .map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
    Ok(raw)
}

async fn post_message(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<PostMessageBody>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = chat_id_from_path(path.into_inner())?;
    let token = bearer(&request)?;
    let body = body.into_inner();
    let posted = state
        .app
        .send(PostCustomerMessage {
            chat_id,
            token,
            client_msg_id: body.client_msg_id,
            text: body.text,
        })
        .await
        .map_err(mailbox)??;
    let mut response = if posted.replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(response.json(posted))
}

/// Query of `GET /api/v1/chats/{id}/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events with `seq > after`. Default 0 (all).
    #[serde(default)]
    pub after: u64,
    /// Most events returned, 1..=1000. Default 100.
    pub limit: Option<usize>,
    /// If no event is newer than `after`, wait up to this many milliseconds for one (long poll).
    /// Default 0 (answer at once); capped by the node's `timeouts.long_poll_max`.
    #[serde(default)]
    pub wait_ms: u64,
}

async fn chat_events(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = chat_id_from_path(path.into_inner())?;
    let token = bearer(&request)?;
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(EVENTS_PAGE_DEFAULT);
    if !(1..=limits::EVENTS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {}", limits::EVENTS_PAGE_MAX),
        ));
    }
    let read = || ReadEvents {
        chat_id: chat_id.clone(),
        token: token.clone(),
        after: query.after,
        limit,
    };
    let page = state.app.send(read()).await.map_err(mailbox)??;
    let wait = Duration::from_millis(query.wait_ms).min(state.long_poll_max);
    if !page.events.is_empty() || wait.is_zero() {
        return Ok(HttpResponse::Ok().json(page));
    }
    let woken = state
        .messaging
        .send(WaitForEvents {
            chat_id: chat_id.clone(),
            after: query.after,
        })
        .await
        .map_err(mailbox)??;
    // Either outcome (new events, or the wait elapsed) ends in a fresh read.
    let _ = tokio::time::timeout(wait, woken).await;
    let page = state.app.send(read()).await.map_err(mailbox)??;
    Ok(HttpResponse::Ok().json(page))
}
