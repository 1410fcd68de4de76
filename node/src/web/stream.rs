//! WebSocket streams: a customer's chat, an agent's work, the supervisor view.
//!
//! Every stream starts from the client's `after` and sends exactly the events it missed (read
//! from this node's applied state), then live ones as the messaging actor reports progress
//! (G3). Reconnecting to any node with the last seen `seq` is the whole failover story for a
//! client. Ephemeral frames (`typing`, `queue_status`) carry no `seq`. Chat event frames and
//! agent feed frames also carry `after`, the cursor to resume from after that event (an island
//! cursor after events an island took, whose numbers are provisional until it merges).
//!
//! Close codes: 1012 (service restart) when the node stops, meaning "reconnect to another
//! node with after=<last seq>"; 4001 when an agent session ends; 4410 when an agent is further
//! behind than the kept feed; 1008 when a client does not read fast enough.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{rt, web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use parley_raft::command::{AgentSession, ChatId, Op, Participant};
use parley_raft::state::EventCursor;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use utoipa::IntoParams;

use super::admin::supervisor_view;
use super::views::agent_feed;
use super::{
    admin_caller, agent_caller, await_chat, chat_caller, mailbox, path_id, WebState,
    STREAM_PROTOCOL,
};
use crate::error::ApiError;
use crate::messaging::{Ephemeral, Feed, Subscribe, Typing, Unsubscribe, EPHEMERAL_QUEUE};
use crate::token::AgentClaims;

/// How often the server pings an idle client.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// A client silent this long (no frame, no pong) is disconnected.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);
/// Longest one frame may wait for the client to read before the stream is closed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame accepted from a client.
pub const CLIENT_FRAME_BYTES_MAX: usize = 4096;
/// Events read from the state per batch while catching up.
const CATCH_UP_PAGE: usize = 200;
/// How often a waiting customer's queue position is refreshed.
const QUEUE_STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// Least time between two supervisor snapshots.
const SUPERVISOR_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two typing indicators taken from one stream; more are dropped (a
/// client sends one every few seconds while its user types).
pub const TYPING_INTERVAL_MIN: Duration = Duration::from_millis(250);

/// Least time between two answered client pings (pages ping every 500 ms).
pub const CLIENT_PING_INTERVAL_MIN: Duration = Duration::from_millis(200);

/// Close code: the agent session ended.
pub const CLOSE_SESSION_ENDED: u16 = 4001;
/// Close code: the agent's resume point is older than the kept feed.
pub const CLOSE_RESUME_TOO_OLD: u16 = 4410;

/// Registers the stream routes under `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/chats/{chat_id}/stream", web::get().to(chat_stream))
        .route("/agents/me/stream", web::get().to(agent_stream))
        .route("/supervisor/stream", web::get().to(supervisor_stream));
}

/// Query of the supervisor stream. Unknown parameters are ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The bearer token, for clients that cannot set an Authorization header on a WebSocket.
    #[serde(default)]
    pub access_token: Option<String>,
}

/// Query of a chat's or an agent's stream. Unknown parameters are ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResumeQuery {
    /// Send the events after this cursor first: a sequence number, or the `after` of the last
    /// event frame received (see `GET /api/v1/chats/{chat_id}/events` and
    /// `GET /api/v1/agents/me/events`). Default 0.
    #[param(value_type = Option<String>, pattern = r"^([0-9]{1,20}|i\.[0-9]{1,20}\.[0-9]{1,20}\.[0-9]{1,20}\.[0-9]{1,20})$")]
    #[serde(default)]
    pub after: Option<String>,
    /// The bearer token, for clients that cannot set an Authorization header on a WebSocket.
    #[serde(default)]
    pub access_token: Option<String>,
}

/// A chat event as a stream sends it: the event and the cursor after it.
#[derive(Serialize)]
struct ChatEventFrame {
    #[serde(flatten)]
    event: crate::api::ChatEvent,
    after: String,
}

/// A frame a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    /// The client is typing (agents name the chat).
    Typing {
        #[serde(default)]
        chat_id: Option<ChatId>,
    },
    /// The client checks the stream is alive (a page cannot send WebSocket pings): answered
    /// `{"type": "pong"}` at once, so a page whose node went silent notices within its own
    /// timeout instead of the TCP stack's.
    Ping,
}

/// The answer to a client's `ping` frame.
const PONG_FRAME: &str = r#"{"type":"pong"}"#;

#[derive(Serialize)]
struct QueueStatusFrame {
    #[serde(rename = "type")]
    kind: &'static str,
    position: u64,
    estimated_wait_s: u64,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'a str,
    message: &'a str,
}

/// What a stream follows, with its caller.
enum Source {
    Chat {
        chat_id: ChatId,
        caller: Participant,
        /// Where the client stands: the cursor after the last event sent.
        after: EventCursor,
    },
    Agent {
        claims: AgentClaims,
        /// Where the client stands: the cursor after the last feed event sent.
        after: EventCursor,
    },
    Supervisor,
}

impl Source {
    fn feed(&self) -> Feed {
        match self {
            Source::Chat { chat_id, .. } => Feed::Chat(chat_id.clone()),
            Source::Agent { claims, .. } => Feed::Agent(claims.agent_id.clone()),
            Source::Supervisor => Feed::Supervisor,
        }
    }
}

/// A chat's events over WebSocket, for its customer or its agent: missed events after
/// `after`, then live ones; `typing` and `queue_status` frames in between.
#[utoipa::path(get, path = "/api/v1/chats/{chat_id}/stream", tag = "streams",
    params(("chat_id" = String, Path), ResumeQuery),
    security(("chat_token" = []), ("agent_token" = [])),
    responses((status = 101, description = "WebSocket: one JSON chat event per text frame"),
        (status = 401), (status = 404)))]
pub async fn chat_stream(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<ResumeQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let chat_id = path_id("chat id", path.into_inner())?;
    let after = super::customer::parse_cursor(query.after.as_deref())?;
    let caller = chat_caller(&state, &request, query.access_token.as_deref(), &chat_id).await?;
    if !await_chat(&state, &chat_id).await? {
        return Err(ApiError::not_found("unknown_chat", "no such chat"));
    }
    let head = match after {
        EventCursor::After(seq) => seq,
        EventCursor::Island(_) => 0,
    };
    open(
        state.get_ref().clone(),
        &request,
        body,
        Source::Chat {
            chat_id,
            caller,
            after,
        },
        head,
    )
}

/// An agent's work over WebSocket: offers, assignments, releases, availability and every event
/// of their chats, after `after` (their feed sequence), then live.
#[utoipa::path(get, path = "/api/v1/agents/me/stream", tag = "streams",
    params(ResumeQuery), security(("agent_token" = [])),
    responses((status = 101, description = "WebSocket: one JSON feed item per text frame"),
        (status = 401)))]
pub async fn agent_stream(
    state: web::Data<WebState>,
    request: HttpRequest,
    query: web::Query<ResumeQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let after = super::customer::parse_cursor(query.after.as_deref())?;
    let claims = agent_caller(&state, &request, query.access_token.as_deref()).await?;
    // Presence: record the node the agent now uses (best effort).
    let (agent_id, node) = (claims.agent_id.clone(), state.node_id);
    let moved = state
        .read(move |s, _| {
            s.agents
                .get(&agent_id)
                .and_then(|a| a.session.as_ref())
                .is_some_and(|session| session.node != node)
        })
        .await?;
    if moved {
        let (web_state, session) = (state.get_ref().clone(), agent_session(&claims));
        rt::spawn(async move {
            let _ = web_state.write(Op::Presence(session)).await;
        });
    }
    open(
        state.get_ref().clone(),
        &request,
        body,
        Source::Agent { claims, after },
        match after {
            EventCursor::After(seq) => seq,
            EventCursor::Island(_) => 0,
        },
    )
}

/// The supervisor view over WebSocket: a snapshot now and after changes, at most one per
/// second.
#[utoipa::path(get, path = "/api/v1/supervisor/stream", tag = "streams",
    params(StreamQuery), security(("admin_token" = [])),
    responses((status = 101, description = "WebSocket: {\"type\":\"snapshot\", ...SupervisorView}"),
        (status = 401), (status = 403)))]
pub async fn supervisor_stream(
    state: web::Data<WebState>,
    request: HttpRequest,
    query: web::Query<StreamQuery>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, query.access_token.as_deref())?;
    open(
        state.get_ref().clone(),
        &request,
        body,
        Source::Supervisor,
        0,
    )
}

fn agent_session(claims: &AgentClaims) -> AgentSession {
    AgentSession {
        agent_id: claims.agent_id.clone(),
        session_id: claims.session_id.clone(),
    }
}

fn open(
    state: WebState,
    request: &HttpRequest,
    body: web::Payload,
    source: Source,
    after: u64,
) -> Result<HttpResponse, ApiError> {
    state.origins.check_upgrade(request)?;
    let (mut response, session, messages) = actix_ws::handle(request, body).map_err(|e| {
        ApiError::bad_request(
            "not_a_websocket",
            format!("expected a WebSocket upgrade: {e}"),
        )
    })?;
    if offers_stream_protocol(request) {
        // A browser offering subprotocols fails the connection unless one is chosen.
        response.headers_mut().insert(
            actix_web::http::header::SEC_WEBSOCKET_PROTOCOL,
            actix_web::http::header::HeaderValue::from_static(STREAM_PROTOCOL),
        );
    }
    let messages = messages
        .max_frame_size(CLIENT_FRAME_BYTES_MAX)
        .aggregate_continuations()
        .max_continuation_size(CLIENT_FRAME_BYTES_MAX);
    rt::spawn(async move {
        let mut stream = Stream {
            state,
            session,
            source,
            cursor: after,
            last_queue_status: None,
            last_typing: None,
            last_pong: None,
        };
        let reason = stream.run(messages).await;
        let _ = stream.session.close(reason).await;
    });
    Ok(response)
}

/// Whether the upgrade offers the `parley` subprotocol (pages do, with their credential).
fn offers_stream_protocol(request: &HttpRequest) -> bool {
    request
        .headers()
        .get_all(actix_web::http::header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == STREAM_PROTOCOL)
}

/// Why a stream ends early, as a close frame.
fn close(code: CloseCode, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(description.to_owned()),
    })
}

struct Stream {
    state: WebState,
    session: Session,
    source: Source,
    /// The last seq sent (feed seq for agents, applied index for supervisors).
    cursor: u64,
    last_queue_status: Option<(u64, u64)>,
    /// When this stream last passed a typing indicator on (see [`TYPING_INTERVAL_MIN`]).
    last_typing: Option<std::time::Instant>,
    /// When this stream last answered a client's ping.
    last_pong: Option<std::time::Instant>,
}

enum Sent {
    /// Keep going.
    Ok,
    /// Close with this reason.
    Close(Option<CloseReason>),
}

impl Stream {
    async fn run(
        &mut self,
        mut messages: actix_ws::AggregatedMessageStream,
    ) -> Option<CloseReason> {
        let notify = Arc::new(Notify::new());
        let (ephemeral_tx, mut ephemeral_rx) = mpsc::channel::<Ephemeral>(EPHEMERAL_QUEUE);
        let subscription = self
            .state
            .messaging
            .send(Subscribe {
                feed: self.source.feed(),
                head: self.cursor,
                notify: notify.clone(),
                ephemeral: ephemeral_tx,
            })
            .await;
        let id = match subscription.map_err(mailbox) {
            Ok(Ok(id)) => id,
            Ok(Err(error)) | Err(error) => {
                return close(CloseCode::Again, &error.message);
            }
        };
        // Catch up at once: whatever was applied before the subscription.
        notify.notify_one();
        let reason = self.serve(&notify, &mut ephemeral_rx, &mut messages).await;
        self.state.messaging.do_send(Unsubscribe(id));
        reason
    }

    async fn serve(
        &mut self,
        notify: &Notify,
        ephemeral: &mut mpsc::Receiver<Ephemeral>,
        messages: &mut actix_ws::AggregatedMessageStream,
    ) -> Option<CloseReason> {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        let mut queue_status = tokio::time::interval(QUEUE_STATUS_INTERVAL);
        let mut last_heard = Instant::now();
        let mut last_snapshot: Option<Instant> = None;
        let shutdown = self.state.shutdown.clone();
        loop {
            let sent = tokio::select! {
                () = shutdown.cancelled() => {
                    return close(
                        CloseCode::Restart,
                        "node stopping: reconnect to another node with after=<last seq>",
                    );
                }
                () = notify.notified() => {
                    if let (Source::Supervisor, Some(at)) = (&self.source, last_snapshot) {
                        let wait = SUPERVISOR_MIN_INTERVAL.saturating_sub(at.elapsed());
                        tokio::time::sleep(wait).await;
                    }
                    last_snapshot = Some(Instant::now());
                    self.deliver().await
                }
                Some(event) = ephemeral.recv() => self.send(&event.frame).await,
                message = messages.recv() => match message {
                    None => return None,
                    Some(Err(actix_ws::ProtocolError::Overflow)) => {
                        return close(CloseCode::Size, "frame larger than 4 KiB");
                    }
                    Some(Err(_)) => return close(CloseCode::Protocol, "malformed frame"),
                    Some(Ok(message)) => {
                        last_heard = Instant::now();
                        self.on_message(message).await
                    }
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > CLIENT_TIMEOUT {
                        return close(CloseCode::Away, "no answer to pings");
                    }
                    match self.session.ping(b"").await {
                        Ok(()) => Sent::Ok,
                        Err(_) => return None,
                    }
                }
                _ = queue_status.tick(), if matches!(self.source, Source::Chat { .. }) => {
                    self.queue_status().await
                }
            };
            if let Sent::Close(reason) = sent {
                return reason;
            }
        }
    }

    async fn send(&mut self, frame: &str) -> Sent {
        match tokio::time::timeout(SEND_TIMEOUT, self.session.text(frame.to_owned())).await {
            Ok(Ok(())) => Sent::Ok,
            Ok(Err(_)) => Sent::Close(None),
            Err(_) => Sent::Close(close(
                CloseCode::Policy,
                "the client does not read its stream",
            )),
        }
    }

    async fn send_json(&mut self, value: &impl Serialize) -> Sent {
        match serde_json::to_string(value) {
            Ok(frame) => self.send(&frame).await,
            Err(error) => Sent::Close(close(CloseCode::Error, &error.to_string())),
        }
    }

    /// Sends everything after the cursor, in pages.
    async fn deliver(&mut self) -> Sent {
        loop {
            let mut chat_after = None;
            let mut feed_after = None;
            let frames: Result<Vec<(u64, String)>, Option<CloseReason>> = match &self.source {
                Source::Chat { chat_id, after, .. } => {
                    let (chat_id, after) = (chat_id.clone(), *after);
                    let page = self
                        .read(move |s, _| {
                            Ok(s.events_page(&chat_id, &after, CATCH_UP_PAGE)
                                .unwrap_or_default()
                                .into_iter()
                                .filter_map(|(e, at)| {
                                    let frame = ChatEventFrame {
                                        event: crate::api::ChatEvent::from(e),
                                        after: at.to_string(),
                                    };
                                    Some((e.seq, serde_json::to_string(&frame).ok()?, at))
                                })
                                .collect::<Vec<_>>())
                        })
                        .await;
                    page.map(|page| {
                        chat_after = page.last().map(|(_, _, at)| *at);
                        page.into_iter()
                            .map(|(seq, frame, _)| (seq, frame))
                            .collect()
                    })
                }
                Source::Agent { claims, after } => {
                    let (agent_id, session_id, after) =
                        (claims.agent_id.clone(), claims.session_id.clone(), *after);
                    let page = self.read(move |s, _| {
                        let current = s
                            .agents
                            .get(&agent_id)
                            .is_some_and(|a| a.has_session(&session_id));
                        match agent_feed(s, &agent_id, &after, CATCH_UP_PAGE) {
                            Some(Ok(items)) => {
                                let next = items
                                    .last()
                                    .and_then(|e| e.after.parse::<EventCursor>().ok());
                                let frames: Vec<(u64, String)> = items
                                    .iter()
                                    .filter_map(|e| Some((e.seq, serde_json::to_string(e).ok()?)))
                                    .collect();
                                // Deliver the feed up to the logout, then close.
                                if frames.is_empty() && !current {
                                    return Err(close(
                                        CloseCode::from(CLOSE_SESSION_ENDED),
                                        "the agent session has ended; log in again",
                                    ));
                                }
                                Ok((frames, next))
                            }
                            Some(Err(first)) => Err(close(
                                CloseCode::from(CLOSE_RESUME_TOO_OLD),
                                &format!(
                                    "events before {first} are no longer kept; reload \
                                     /api/v1/agents/me/activities"
                                ),
                            )),
                            None => {
                                Err(close(CloseCode::from(CLOSE_SESSION_ENDED), "no such agent"))
                            }
                        }
                    });
                    page.await.map(|(frames, next)| {
                        feed_after = next;
                        frames
                    })
                }
                Source::Supervisor => {
                    self.read(move |s, applied| {
                        let view = supervisor_view(s, applied);
                        #[derive(Serialize)]
                        struct Snapshot<'a> {
                            #[serde(rename = "type")]
                            kind: &'static str,
                            #[serde(flatten)]
                            view: &'a super::admin::SupervisorView,
                        }
                        let frame = serde_json::to_string(&Snapshot {
                            kind: "snapshot",
                            view: &view,
                        })
                        .map_err(|e| close(CloseCode::Error, &e.to_string()))?;
                        Ok(vec![(applied.unwrap_or(0), frame)])
                    })
                    .await
                }
            };
            let frames = match frames {
                Ok(frames) => frames,
                Err(reason) => return Sent::Close(reason),
            };
            let Some(&(last, _)) = frames.last() else {
                return Sent::Ok;
            };
            for (_, frame) in &frames {
                if let Sent::Close(reason) = self.send(frame).await {
                    return Sent::Close(reason);
                }
            }
            self.cursor = last;
            match (&mut self.source, chat_after, feed_after) {
                (Source::Chat { after, .. }, Some(at), _)
                | (Source::Agent { after, .. }, _, Some(at)) => {
                    *after = at;
                }
                _ => {}
            }
            // A supervisor gets one snapshot; a chat stream is done with a short page; an agent
            // stream reads once more, which closes it if the session ended with this page.
            match self.source {
                Source::Supervisor => return Sent::Ok,
                Source::Chat { .. } if frames.len() < CATCH_UP_PAGE => return Sent::Ok,
                _ => {}
            }
        }
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&parley_raft::State, Option<u64>) -> Result<R, Option<CloseReason>>
            + Send
            + 'static,
    ) -> Result<R, Option<CloseReason>> {
        match self.state.read(f).await {
            Ok(result) => result,
            Err(error) => Err(close(CloseCode::Again, &error.message)),
        }
    }

    async fn queue_status(&mut self) -> Sent {
        let Source::Chat { chat_id, .. } = &self.source else {
            return Sent::Ok;
        };
        let Ok(position) = self.state.queue_positions.get(&self.state, chat_id).await else {
            return Sent::Ok;
        };
        let Some(position) = position else {
            self.last_queue_status = None;
            return Sent::Ok;
        };
        let status = (position.position, position.estimated_wait_ms.div_ceil(1000));
        if self.last_queue_status == Some(status) {
            return Sent::Ok;
        }
        self.last_queue_status = Some(status);
        self.send_json(&QueueStatusFrame {
            kind: "queue_status",
            position: status.0,
            estimated_wait_s: status.1,
        })
        .await
    }

    async fn on_message(&mut self, message: AggregatedMessage) -> Sent {
        match message {
            AggregatedMessage::Ping(bytes) => match self.session.pong(&bytes).await {
                Ok(()) => Sent::Ok,
                Err(_) => Sent::Close(None),
            },
            AggregatedMessage::Pong(_) => Sent::Ok,
            AggregatedMessage::Close(reason) => Sent::Close(reason),
            AggregatedMessage::Binary(_) => {
                self.error("unsupported", "send JSON text frames").await
            }
            AggregatedMessage::Text(text) => match serde_json::from_str::<ClientFrame>(&text) {
                Ok(ClientFrame::Typing { chat_id }) => self.typing(chat_id).await,
                Ok(ClientFrame::Ping) => self.pong().await,
                Err(error) => self.error("malformed_frame", &error.to_string()).await,
            },
        }
    }

    async fn error(&mut self, code: &str, message: &str) -> Sent {
        let frame = ErrorFrame {
            kind: "error",
            code,
            message,
        };
        self.send_json(&frame).await
    }

    /// Answers a client's ping; pings closer together than [`CLIENT_PING_INTERVAL_MIN`] are
    /// answered once.
    async fn pong(&mut self) -> Sent {
        let now = std::time::Instant::now();
        if self
            .last_pong
            .is_some_and(|last| now.duration_since(last) < CLIENT_PING_INTERVAL_MIN)
        {
            return Sent::Ok;
        }
        self.last_pong = Some(now);
        self.send(PONG_FRAME).await
    }

    async fn typing(&mut self, chat_id: Option<ChatId>) -> Sent {
        let now = std::time::Instant::now();
        if self
            .last_typing
            .is_some_and(|last| now.duration_since(last) < TYPING_INTERVAL_MIN)
        {
            return Sent::Ok;
        }
        self.last_typing = Some(now);
        let (chat_id, from) = match (&self.source, chat_id) {
            (
                Source::Chat {
                    chat_id, caller, ..
                },
                _,
            ) => (chat_id.clone(), caller.clone()),
            (Source::Agent { claims, .. }, Some(chat_id)) => {
                let (chat, me) = (chat_id.clone(), claims.agent_id.clone());
                let holds = self
                    .state
                    .read(move |s, _| {
                        s.chats
                            .get(&chat)
                            .is_some_and(|c| c.agent_id.as_ref() == Some(&me))
                    })
                    .await
                    .unwrap_or(false);
                if !holds {
                    return self.error("forbidden", "you are not in this chat").await;
                }
                (
                    chat_id,
                    Participant::Agent {
                        agent_id: claims.agent_id.clone(),
                    },
                )
            }
            (Source::Agent { .. }, None) => {
                return self.error("invalid_frame", "typing needs a chat_id").await;
            }
            (Source::Supervisor, _) => {
                return self.error("unsupported", "supervisors do not type").await;
            }
        };
        // Best effort: a full messaging mailbox drops the indicator instead of growing past
        // its bound (`do_send` would).
        let _ = self.state.messaging.try_send(Typing { chat_id, from });
        Sent::Ok
    }
}
