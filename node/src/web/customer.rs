//! Customer endpoints: start a chat, post, read and follow events, end, rate, transcript;
//! request a callback. Chat endpoints also accept the token of the agent holding the chat.

use std::fmt::Write as _;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use parley_raft::command::{
    EndChat, Op, Participant, PostMessage, RequestCallback, StartChat, SubmitSurvey,
};
use parley_raft::limits;
use parley_raft::state::EventCursor;
use parley_raft::Outcome;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::views::{chat_view, ChatView};
use super::{
    await_chat, chat_caller, mailbox, new_id, path_id, unexpected, written_answer, WebState,
    EVENTS_PAGE_DEFAULT,
};
use crate::api::{ChatEvent, Customer, EventBody, Participant as ApiParticipant, TransferTarget};
use crate::error::ApiError;
use crate::messaging::{Feed, WaitForEvents};

/// Registers the customer routes under `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/chats", web::post().to(start_chat))
        .route("/chats/{chat_id}", web::get().to(get_chat))
        .route("/chats/{chat_id}/messages", web::post().to(post_message))
        .route("/chats/{chat_id}/events", web::get().to(chat_events))
        .route("/chats/{chat_id}/end", web::post().to(end_chat))
        .route("/chats/{chat_id}/survey", web::post().to(submit_survey))
        .route("/chats/{chat_id}/transcript", web::get().to(transcript))
        .route("/callbacks", web::post().to(request_callback));
}

/// Body of `POST /api/v1/chats`: the pre-chat form.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartChatBody {
    /// Client-generated idempotency key for this start (1..=128 printable ASCII).
    #[schema(pattern = r"^[!-~]{1,128}$")]
    pub request_id: String,
    /// The queue (entry point).
    pub queue_id: String,
    /// Name and email.
    pub customer: Customer,
    /// The question, at most 2000 bytes.
    #[serde(default)]
    // Lengths in the schema are characters, the bounds bytes: the schema states the length
    // that fits in any encoding (a quarter of the bytes).
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 500>")]
    pub question: String,
}

/// A started chat and the token that opens it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatStarted {
    /// The chat's id.
    pub chat_id: String,
    /// Bearer token for this chat only.
    pub token: String,
    /// True when the request id had already started this chat.
    pub replayed: bool,
    /// The chat now: queued with position and estimated wait, or already offered.
    pub chat: Option<ChatView>,
    /// True when the write was taken in island mode: durable on this node, merged into the
    /// cluster once its site is connected again. Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub island: bool,
}

/// Start a chat. Outside the queue's business hours the answer is 409 `off_hours` with the
/// queue's message, and no chat is created.
#[utoipa::path(post, path = "/api/v1/chats", tag = "customer", request_body = StartChatBody,
    responses(
        (status = 201, body = ChatStarted, description = "Chat started"),
        (status = 200, body = ChatStarted, description = "Same request id: the same chat"),
        (status = 400, description = "Invalid field"),
        (status = 404, description = "Unknown queue"),
        (status = 409, description = "off_hours, limit_reached (open chats per customer) or idempotency_conflict"),
        (status = 429, description = "rate_limited: too many chats started from this address; see Retry-After"),
        (status = 503, description = "No quorum or overloaded: retry, maybe on another node")))]
pub async fn start_chat(
    state: web::Data<WebState>,
    request: HttpRequest,
    body: web::Json<StartChatBody>,
) -> Result<HttpResponse, ApiError> {
    state
        .rate_limits
        .chat_start(request.peer_addr().map(|a| a.ip()))?;
    let body = body.into_inner();
    let op = Op::StartChat(StartChat {
        chat_id: new_id(),
        request_id: body.request_id,
        queue_id: body.queue_id,
        customer: body.customer.into(),
        question: body.question,
    });
    let written = state.write_marked(op).await?;
    let island = written.island;
    let (chat_id, replayed) = match written.outcome {
        Outcome::ChatStarted {
            chat_id, replayed, ..
        } => (chat_id, replayed),
        other => return Err(unexpected(other)),
    };
    let id = chat_id.clone();
    let chat = state.read(move |s, _| chat_view(s, &id)).await?;
    Ok(written_answer(replayed, island).json(ChatStarted {
        token: state.chat_tokens.issue(&chat_id),
        chat_id,
        replayed,
        chat,
        island,
    }))
}

/// The chat's status: queue position and estimated wait, agent, last event.
#[utoipa::path(get, path = "/api/v1/chats/{chat_id}", tag = "customer",
    params(("chat_id" = String, Path)), security(("chat_token" = []), ("agent_token" = [])),
    responses((status = 200, body = ChatView), (status = 401), (status = 404)))]
pub async fn get_chat(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path_id("chat id", path.into_inner())?;
    chat_caller(&state, &request, None, &chat_id).await?;
    await_chat(&state, &chat_id).await?;
    let id = chat_id.clone();
    let view = state
        .read_activity(&chat_id, move |s, _| chat_view(s, &id))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_chat", "no such chat"))?;
    Ok(HttpResponse::Ok().json(view))
}

/// Body of `POST /api/v1/chats/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessageBody {
    /// Client-generated id; a retry with the same id is not posted twice.
    #[schema(pattern = r"^[!-~]{1,128}$")]
    pub client_msg_id: String,
    /// The text, 1..=4096 bytes, not only spaces, no control characters but newline and tab.
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 1024>")]
    pub text: String,
}

/// A committed message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePosted {
    /// The chat.
    pub chat_id: String,
    /// The message's sequence number.
    pub seq: u64,
    /// True when the client message id had already been posted.
    pub replayed: bool,
    /// True when the write was taken in island mode: durable in its site's island journal,
    /// merged into the cluster once its site is connected again. Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub island: bool,
    /// With `island`: the island node whose journal took it (the node asked, or the node
    /// keeping its site's island journal); the message's events carry the same
    /// `island.node_id`. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub island_node: Option<u64>,
}

/// Post a message as the customer (chat token) or the chat's agent (agent token). Answered
/// once committed on a majority.
#[utoipa::path(post, path = "/api/v1/chats/{chat_id}/messages", tag = "customer",
    params(("chat_id" = String, Path)), request_body = PostMessageBody,
    security(("chat_token" = []), ("agent_token" = [])),
    responses(
        (status = 201, body = MessagePosted), (status = 200, body = MessagePosted, description = "Replayed"),
        (status = 400), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "chat_ended, limit_reached or idempotency_conflict"),
        (status = 503)))]
pub async fn post_message(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<PostMessageBody>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path_id("chat id", path.into_inner())?;
    let sender = chat_caller(&state, &request, None, &chat_id).await?;
    let body = body.into_inner();
    let op = Op::PostMessage(PostMessage {
        chat_id,
        sender,
        client_msg_id: body.client_msg_id,
        text: body.text,
    });
    let written = state.write_marked(op).await?;
    match written.outcome {
        Outcome::MessagePosted {
            chat_id,
            seq,
            replayed,
        } => Ok(
            written_answer(replayed, written.island).json(MessagePosted {
                chat_id,
                seq,
                replayed,
                island: written.island,
                island_node: written.island_node,
            }),
        ),
        other => Err(unexpected(other)),
    }
}

/// A page size from a query (default 100), checked.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(EVENTS_PAGE_DEFAULT);
    if !(1..=limits::EVENTS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {}", limits::EVENTS_PAGE_MAX),
        ));
    }
    Ok(limit)
}

/// A chat events cursor from a query, checked.
pub fn parse_cursor(text: Option<&str>) -> Result<EventCursor, ApiError> {
    text.map_or(Ok(EventCursor::default()), |text| {
        text.parse()
            .map_err(|e: String| ApiError::bad_request("invalid_query", format!("after: {e}")))
    })
}

/// Query of a chat's events endpoint. Unknown parameters are ignored (a browser's cache
/// buster).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChatEventsQuery {
    /// Return the events after this cursor: a sequence number (events with `seq > after`), or
    /// the `next_after` of an earlier page, which is an island cursor
    /// (`i.<node>.<epoch>.<fork>.<seq>`) after events an island took. Default 0 (all).
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

/// A page of chat events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    /// The chat.
    pub chat_id: String,
    /// Events in sequence order.
    pub events: Vec<ChatEvent>,
    /// The chat's last sequence number as applied on this node.
    pub last_seq: u64,
    /// This node's applied Raft index when the page was read.
    pub applied_index: Option<u64>,
    /// The cursor to pass as `after` for the next page, on any node: the last event's `seq`,
    /// or an island cursor after events an island took (their numbers are provisional until
    /// the island merges). The same as the `after` asked when the page is empty.
    pub next_after: String,
}

async fn read_page(
    state: &WebState,
    chat_id: &str,
    after: EventCursor,
    limit: usize,
) -> Result<EventsPage, ApiError> {
    let id = chat_id.to_owned();
    state
        .read_activity(chat_id, move |s, applied| {
            let chat = s.chats.get(&id)?;
            let page = s.events_page(&id, &after, limit).unwrap_or_default();
            let next_after = page.last().map_or(after, |(_, at)| *at).to_string();
            Some(EventsPage {
                last_seq: chat.last_seq(),
                chat_id: id.clone(),
                events: page.into_iter().map(|(e, _)| ChatEvent::from(e)).collect(),
                applied_index: applied,
                next_after,
            })
        })
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_chat", "no such chat"))
}

/// Waits (bounded) until `feed` moves past `after`.
pub async fn long_poll(
    state: &WebState,
    feed: Feed,
    after: u64,
    wait_ms: u64,
) -> Result<(), ApiError> {
    let wait = Duration::from_millis(wait_ms).min(state.long_poll_max);
    if wait.is_zero() {
        return Ok(());
    }
    let woken = state
        .messaging
        .send(WaitForEvents { feed, after })
        .await
        .map_err(mailbox)??;
    // Either outcome (new events, or the wait elapsed) ends in a fresh read.
    let _ = tokio::time::timeout(wait, woken).await;
    Ok(())
}

/// The chat's events after `after`: exactly the missed ones, on any node (G3). With
/// `wait_ms`, waits for the next one if there is none yet.
#[utoipa::path(get, path = "/api/v1/chats/{chat_id}/events", tag = "customer",
    params(("chat_id" = String, Path), ChatEventsQuery),
    security(("chat_token" = []), ("agent_token" = [])),
    responses((status = 200, body = EventsPage), (status = 400), (status = 401), (status = 404)))]
pub async fn chat_events(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<ChatEventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path_id("chat id", path.into_inner())?;
    chat_caller(&state, &request, None, &chat_id).await?;
    let limit = page_limit(query.limit)?;
    let after = parse_cursor(query.after.as_deref())?;
    await_chat(&state, &chat_id).await?;
    let page = read_page(&state, &chat_id, after, limit).await?;
    if !page.events.is_empty() || query.wait_ms == 0 {
        return Ok(HttpResponse::Ok().json(page));
    }
    // Nothing new: wait for the chat to pass its head here (or the client's sequence number,
    // if this node is behind it).
    let head = match after {
        EventCursor::After(seq) => seq.max(page.last_seq),
        EventCursor::Island(_) => page.last_seq,
    };
    long_poll(&state, Feed::Chat(chat_id.clone()), head, query.wait_ms).await?;
    let page = read_page(&state, &chat_id, after, limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A chat's end.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatEnded {
    /// The chat.
    pub chat_id: String,
    /// Sequence number of the `ended` event.
    pub seq: u64,
    /// True when the write was taken in island mode: durable on this node, merged into the
    /// cluster once its site is connected again. Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub island: bool,
}

/// End the chat, as its customer or its agent; the other side gets an `ended` event. A
/// customer ending before an agent accepted abandons it. Ending twice answers the same.
#[utoipa::path(post, path = "/api/v1/chats/{chat_id}/end", tag = "customer",
    params(("chat_id" = String, Path)), security(("chat_token" = []), ("agent_token" = [])),
    responses((status = 200, body = ChatEnded), (status = 401), (status = 403), (status = 404), (status = 503)))]
pub async fn end_chat(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path_id("chat id", path.into_inner())?;
    let by = chat_caller(&state, &request, None, &chat_id).await?;
    let written = state
        .write_marked(Op::EndChat(EndChat { chat_id, by }))
        .await?;
    match written.outcome {
        Outcome::ChatEnded { chat_id, seq } => {
            Ok(written_answer(true, written.island).json(ChatEnded {
                chat_id,
                seq,
                island: written.island,
            }))
        }
        other => Err(unexpected(other)),
    }
}

/// Body of `POST /api/v1/chats/{id}/survey`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SurveyBody {
    /// 1 (poor) to 5 (excellent).
    #[schema(minimum = 1, maximum = 5)]
    #[serde(deserialize_with = "crate::web::whole_number")]
    pub rating: u8,
    /// Optional comment, at most 2000 bytes.
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 500>")]
    pub comment: String,
}

/// Rate an ended chat (customer only, once; the same rating again is accepted).
#[utoipa::path(post, path = "/api/v1/chats/{chat_id}/survey", tag = "customer",
    params(("chat_id" = String, Path)), request_body = SurveyBody, security(("chat_token" = [])),
    responses((status = 200, body = ChatView), (status = 400), (status = 401), (status = 403),
        (status = 409, description = "The chat has not ended, or is already rated differently")))]
pub async fn submit_survey(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<SurveyBody>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path_id("chat id", path.into_inner())?;
    if chat_caller(&state, &request, None, &chat_id).await? != Participant::Customer {
        return Err(ApiError::forbidden("only the customer rates a chat"));
    }
    let body = body.into_inner();
    let written = state
        .write_marked(Op::SubmitSurvey(SubmitSurvey {
            chat_id: chat_id.clone(),
            rating: body.rating,
            comment: body.comment,
        }))
        .await?;
    let view = state
        .read(move |s, _| chat_view(s, &chat_id))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_chat", "no such chat"))?;
    Ok(written_answer(true, written.island).json(view))
}

/// Query of the transcript endpoint. Unknown parameters are ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TranscriptQuery {
    /// `json` (default) or `text`.
    #[serde(default)]
    #[param(pattern = "^(json|text)$")]
    pub format: Option<String>,
}

/// A chat's transcript.
#[derive(Debug, Serialize, ToSchema)]
pub struct Transcript {
    /// The chat.
    pub chat: ChatView,
    /// Every event.
    pub events: Vec<ChatEvent>,
}

/// The whole chat as JSON or plain text, as a download.
#[utoipa::path(get, path = "/api/v1/chats/{chat_id}/transcript", tag = "customer",
    params(("chat_id" = String, Path), TranscriptQuery),
    security(("chat_token" = []), ("agent_token" = [])),
    responses((status = 200, body = Transcript, description = "JSON, or text/plain with format=text"),
        (status = 400), (status = 401), (status = 404)))]
pub async fn transcript(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<TranscriptQuery>,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path_id("chat id", path.into_inner())?;
    let text = match query.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("format must be json or text, not {other:?}"),
            ))
        }
    };
    chat_caller(&state, &request, None, &chat_id).await?;
    await_chat(&state, &chat_id).await?;
    let id = chat_id.clone();
    let (view, events, agents) = state
        .read_activity(&chat_id, move |s, _| {
            let view = chat_view(s, &id)?;
            let events = s
                .chats
                .get(&id)?
                .events
                .iter()
                .map(ChatEvent::from)
                .collect::<Vec<_>>();
            let agents: std::collections::BTreeMap<String, String> = s
                .agents
                .values()
                .map(|a| (a.spec.id.clone(), a.spec.name.clone()))
                .collect();
            Some((view, events, agents))
        })
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_chat", "no such chat"))?;
    let disposition = format!(
        "attachment; filename=\"chat-{chat_id}.{}\"",
        if text { "txt" } else { "json" }
    );
    if !text {
        return Ok(HttpResponse::Ok()
            .insert_header(("Content-Disposition", disposition))
            .json(Transcript { chat: view, events }));
    }
    Ok(HttpResponse::Ok()
        .insert_header(("Content-Disposition", disposition))
        .content_type("text/plain; charset=utf-8")
        .body(render_text(&view, &events, &agents)))
}

fn timestamp(at_ms: u64) -> String {
    i64::try_from(at_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || at_ms.to_string(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

fn render_text(
    view: &ChatView,
    events: &[ChatEvent],
    agents: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Chat {}", view.chat_id);
    let mut customer = "Customer".to_owned();
    for event in events {
        let at = timestamp(event.at_ms);
        let line = match &event.body {
            EventBody::Started {
                queue_id,
                customer_name,
                question,
            } => {
                customer = customer_name.clone();
                format!("{customer_name} started a chat in {queue_id}: {question}")
            }
            EventBody::Message { from, text, .. } => {
                let who = match from {
                    ApiParticipant::Customer => customer.clone(),
                    ApiParticipant::Agent { agent_id } => agents
                        .get(agent_id)
                        .cloned()
                        .unwrap_or_else(|| agent_id.clone()),
                    ApiParticipant::System => "System".to_owned(),
                };
                format!("{who}: {text}")
            }
            EventBody::AgentJoined { agent_name, .. } => format!("{agent_name} joined"),
            EventBody::AgentLeft { agent_id, reason } => {
                let name = agents.get(agent_id).unwrap_or(agent_id);
                format!("{name} left ({reason})")
            }
            EventBody::Transferred { target } => match target {
                TransferTarget::Agent { agent_id } => {
                    format!(
                        "Transferred to {}",
                        agents.get(agent_id).unwrap_or(agent_id)
                    )
                }
                TransferTarget::Queue { queue_id } => {
                    format!("Transferred to queue {queue_id}")
                }
            },
            EventBody::Ended { reason, .. } => format!("Chat ended ({reason})"),
            EventBody::Rated { rating } => format!("Rated {rating}/5"),
        };
        let _ = writeln!(out, "[{at}] #{} {line}", event.seq);
    }
    out
}

/// Body of `POST /api/v1/callbacks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    /// Client-generated idempotency key.
    #[schema(pattern = r"^[!-~]{1,128}$")]
    pub request_id: String,
    /// A callback queue.
    pub queue_id: String,
    /// Who to call, 1..=200 bytes.
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 50>")]
    pub name: String,
    /// E.164 number, e.g. `+33123456789`.
    #[schema(pattern = r"^\+[0-9]{7,15}$")]
    pub phone: String,
    /// When to call, RFC 3339 (e.g. `2026-11-23T15:00:00Z`); absent or past means as soon as
    /// possible; at most 30 days ahead.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub requested_at: Option<String>,
}

/// A callback request's activity.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackRequested {
    /// The callback activity.
    pub activity_id: String,
    /// When it is routed, ms since the Unix epoch.
    pub due_at_ms: u64,
    /// True when the request id had already created it.
    pub replayed: bool,
    /// True when the write was taken in island mode: durable on this node, merged into the
    /// cluster once its site is connected again. Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub island: bool,
}

/// Ask to be called back: creates a callback activity, routed to an agent when due.
#[utoipa::path(post, path = "/api/v1/callbacks", tag = "customer", request_body = CallbackBody,
    responses((status = 201, body = CallbackRequested), (status = 200, body = CallbackRequested),
        (status = 400), (status = 404), (status = 409), (status = 503)))]
pub async fn request_callback(
    state: web::Data<WebState>,
    body: web::Json<CallbackBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let requested_at_ms = match &body.requested_at {
        None => 0,
        Some(text) => {
            let at: jiff::Timestamp = text.parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_field",
                    format!("requested_at {text:?} is not an RFC 3339 time"),
                )
            })?;
            u64::try_from(at.as_millisecond()).unwrap_or(0)
        }
    };
    let op = Op::RequestCallback(RequestCallback {
        activity_id: new_id(),
        request_id: body.request_id,
        queue_id: body.queue_id,
        name: body.name,
        phone: body.phone,
        requested_at_ms,
    });
    let written = state.write_marked(op).await?;
    match written.outcome {
        Outcome::CallbackRequested {
            activity_id,
            due_at_ms,
            replayed,
        } => Ok(
            written_answer(replayed, written.island).json(CallbackRequested {
                activity_id,
                due_at_ms,
                replayed,
                island: written.island,
            }),
        ),
        other => Err(unexpected(other)),
    }
}
