//! The email channel's endpoints: mailboxes in the directory (admin credential), and an
//! agent's view of an email activity's case and its reply.
//!
//! A reply is recorded once per client id into the replicated outbox; the answer comes once it
//! is committed, before it is sent. The case view shows each reply's delivery: `queued`,
//! `retrying` (with the reason), `sent`, or `failed` (with the reason).
//!
//! A case and its stored attachments are read by the agent its activity is offered or assigned
//! to (agent token) and by supervisors (admin credential), who also read those of a retired
//! activity from the archive. Attachments are served as downloads only: `Content-Disposition:
//! attachment` with a cleaned file name, `X-Content-Type-Options: nosniff`, a sandboxing CSP,
//! and the listed type only when it is one no browser runs (else `application/octet-stream`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use parley_raft::command::email::{
    attachment_key, AttachmentMeta, EmailOp, MailboxSpec, QueueReply, SecretRef, ServerSpec,
    TlsMode,
};
use parley_raft::command::{AgentSession, Op, Outcome};
use parley_raft::state::email::{is_blake3_hex, AttachmentRecord};
use parley_raft::state::{ActivityDetail, Case, Delivery, Direction};
use parley_raft::{limits, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    admin_caller, agent_caller, bearer, new_id, path_id, unexpected, written_answer, WebState,
};
use crate::email::status::{Job, Status};
use crate::error::ApiError;
use crate::token::AGENT_TOKEN_PREFIX;

/// Registers the email routes under `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/mailboxes", web::get().to(list_mailboxes))
        .route("/admin/mailboxes/{id}", web::put().to(put_mailbox))
        .route("/admin/mailboxes/{id}", web::delete().to(delete_mailbox))
        .route("/emails/{activity_id}", web::get().to(case_of))
        .route(
            "/emails/{activity_id}/attachments/{blake3}",
            web::get().to(attachment),
        )
        .route("/emails/{activity_id}/reply", web::post().to(reply));
}

/// A mail server of a mailbox, as written in the admin API.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerBody {
    /// Host name or address.
    #[schema(pattern = r"^[A-Za-z0-9.:\[\]-]{1,253}$")]
    pub host: String,
    /// TCP port. Default: 993 (IMAP) or 465 (SMTP) with `tls`, 143 or 587 otherwise.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub port: Option<u16>,
    /// `tls` (TLS from the first byte, default), `starttls` (plain first, then STARTTLS before
    /// the login) or `plain` (no TLS; with a password only for a server on loopback). TLS trusts
    /// the public roots and each node's `email.ca_file`.
    #[serde(default)]
    #[schema(pattern = "^(tls|starttls|plain)$")]
    pub tls: Option<String>,
    /// Login name; empty or absent for an SMTP server that needs none.
    #[serde(default)]
    // Lengths in the schema are characters, the bounds bytes: a quarter of the bytes fits in
    // any encoding.
    #[schema(max_length = 63, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 63>")]
    pub username: String,
    /// The environment variable holding the password on every node. Never the password.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_]{1,1024}$")]
    pub password_env: Option<String>,
    /// The file holding the password on every node. Never the password.
    #[serde(default)]
    #[schema(pattern = r"^/[^\u0000]{0,1023}$")]
    pub password_file: Option<String>,
}

/// Body of `PUT /api/v1/admin/mailboxes/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxBody {
    /// The address customers write to; replies come from it.
    #[schema(min_length = 3, max_length = 63, pattern = r"^[^\s<>@]+@[^\s<>@]+$")]
    #[serde(deserialize_with = "crate::web::chars_at_most::<_, 63>")]
    pub address: String,
    /// Display name on replies. Default: the id.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most_opt::<_, 50>")]
    pub display_name: Option<String>,
    /// The email queue new mail enters.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub queue: String,
    /// The IMAP folder. Default `INBOX`.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    #[serde(deserialize_with = "crate::web::chars_at_most_opt::<_, 63>")]
    pub folder: Option<String>,
    /// The IMAP server.
    pub imap: ServerBody,
    /// The SMTP submission server.
    pub smtp: ServerBody,
}

/// A mailbox as the admin API shows it: its settings, where its folder was taken in up to,
/// and which nodes hold its leases.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxView {
    /// Id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Display name.
    pub display_name: String,
    /// The queue it feeds.
    pub queue: String,
    /// The IMAP folder.
    pub folder: String,
    /// IMAP server (password as a reference only).
    pub imap: ServerBody,
    /// SMTP server (password as a reference only).
    pub smtp: ServerBody,
    /// The folder's UIDVALIDITY the cursor belongs to, once mail was taken in.
    pub uid_validity: Option<u32>,
    /// The last UID taken in.
    pub last_uid: Option<u32>,
    /// The node holding the fetch lease, while unexpired at its last renewal.
    pub fetch_holder: Option<LeaseView>,
    /// The node holding the send lease.
    pub send_holder: Option<LeaseView>,
    /// Replies of this mailbox waiting to be sent.
    pub outbox: u64,
    /// Cases of this mailbox in memory.
    pub cases: u64,
    /// The last failure of the fetcher on the node answering (the fetch lease's holder knows;
    /// other nodes show none), kept until a session opens again.
    pub fetch_error: Option<MailboxProblem>,
    /// The last failure to reach the SMTP server, or a reply it refused for now, on the node
    /// answering (the send lease's holder knows), kept until a reply is sent.
    pub send_error: Option<MailboxProblem>,
}

/// A failure of a mailbox's fetcher or sender, as the node answering saw it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxProblem {
    /// The node that saw it (the one answering).
    pub node: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// What went wrong: the step and the server's or the TLS library's answer, without
    /// addresses (e.g. `imap tls: invalid peer certificate: UnknownIssuer`).
    pub error: String,
}

/// A lease's holder.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseView {
    /// The node.
    pub node: u64,
    /// Its fencing token.
    pub token: u64,
    /// When it expires unless renewed, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

fn tls_name(mode: TlsMode) -> String {
    match mode {
        TlsMode::Tls => "tls",
        TlsMode::Starttls => "starttls",
        TlsMode::Plain => "plain",
    }
    .to_owned()
}

fn server_view(server: &ServerSpec) -> ServerBody {
    let (password_env, password_file) = match &server.password {
        Some(SecretRef::Env(name)) => (Some(name.clone()), None),
        Some(SecretRef::File(path)) => (None, Some(path.clone())),
        None => (None, None),
    };
    ServerBody {
        host: server.host.clone(),
        port: Some(server.port),
        tls: Some(tls_name(server.tls)),
        username: server.username.clone(),
        password_env,
        password_file,
    }
}

fn mailbox_views(state: &State, status: &Status, node: u64) -> Vec<MailboxView> {
    let problem = |id: &str, job: Job| {
        status.get(id, job).map(|p| MailboxProblem {
            node,
            at_ms: p.at_ms,
            error: p.error,
        })
    };
    let lease = |name: String| {
        state.lease(&name).map(|l| LeaseView {
            node: l.holder,
            token: l.token,
            expires_at_ms: l.expires_at_ms,
        })
    };
    state
        .email
        .mailboxes
        .values()
        .map(|m| MailboxView {
            id: m.spec.id.clone(),
            address: m.spec.address.clone(),
            display_name: m.spec.display_name.clone(),
            queue: m.spec.queue_id.clone(),
            folder: m.spec.folder.clone(),
            imap: server_view(&m.spec.imap),
            smtp: server_view(&m.spec.smtp),
            uid_validity: m.cursor.map(|c| c.uid_validity),
            last_uid: m.cursor.map(|c| c.last_uid),
            fetch_holder: lease(parley_raft::command::email::fetch_lease(&m.spec.id)),
            send_holder: lease(parley_raft::command::email::send_lease(&m.spec.id)),
            outbox: state
                .email
                .outbox
                .values()
                .filter(|e| e.mailbox_id == m.spec.id)
                .count() as u64,
            cases: state
                .email
                .cases
                .values()
                .filter(|c| c.mailbox_id == m.spec.id)
                .count() as u64,
            fetch_error: problem(&m.spec.id, Job::Fetch),
            send_error: problem(&m.spec.id, Job::Send),
        })
        .collect()
}

/// The mailbox list as the admin API answers it.
async fn mailboxes(state: &WebState) -> Result<Vec<MailboxView>, ApiError> {
    let status = state.email_status.clone();
    let node = state.node_id;
    state
        .read(move |s, _| mailbox_views(s, &status, node))
        .await
}

/// Every mailbox with its cursor, lease holders and, on the node holding a lease, its last
/// failure.
#[utoipa::path(get, path = "/api/v1/admin/mailboxes", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = Vec<MailboxView>), (status = 401), (status = 403)))]
pub async fn list_mailboxes(
    state: web::Data<WebState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    Ok(HttpResponse::Ok().json(mailboxes(&state).await?))
}

fn server_spec(
    field: &str,
    body: ServerBody,
    tls_port: u16,
    port: u16,
) -> Result<ServerSpec, ApiError> {
    let tls = match body.tls.as_deref() {
        None | Some("tls") => TlsMode::Tls,
        Some("starttls") => TlsMode::Starttls,
        Some("plain") => TlsMode::Plain,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("{field}.tls must be tls, starttls or plain"),
            ))
        }
    };
    let password = match (body.password_env, body.password_file) {
        (None, None) => None,
        (Some(name), None) => Some(SecretRef::Env(name)),
        (None, Some(path)) => Some(SecretRef::File(path)),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("{field}: give password_env or password_file, not both"),
            ))
        }
    };
    Ok(ServerSpec {
        host: body.host,
        port: body
            .port
            .unwrap_or(if tls == TlsMode::Tls { tls_port } else { port }),
        tls,
        username: body.username,
        password,
    })
}

/// Create or replace a mailbox. Passwords are given as references (`password_env`,
/// `password_file`) that every node resolves; they are never replicated. A different IMAP
/// server, account or folder starts its cursor anew (mail already taken in is recognised by
/// Message-ID).
#[utoipa::path(put, path = "/api/v1/admin/mailboxes/{id}", tag = "admin",
    params(("id" = String, Path)), request_body = MailboxBody, security(("admin_token" = [])),
    responses((status = 200, body = Vec<MailboxView>), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409)))]
pub async fn put_mailbox(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<MailboxBody>,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let id = path_id("id", path.into_inner())?;
    let body = body.into_inner();
    let imap = server_spec("imap", body.imap, 993, 143)?;
    let spec = MailboxSpec {
        display_name: body.display_name.unwrap_or_else(|| id.clone()),
        id,
        address: body.address,
        queue_id: body.queue,
        imap,
        folder: body.folder.unwrap_or_else(|| "INBOX".to_owned()),
        smtp: server_spec("smtp", body.smtp, 465, 587)?,
    };
    state.write(Op::Email(EmailOp::UpsertMailbox(spec))).await?;
    Ok(HttpResponse::Ok().json(mailboxes(&state).await?))
}

/// Remove a mailbox: its mail is no longer fetched, its leases go; its cases stay until they
/// are retired, but replies to them can no longer be sent.
#[utoipa::path(delete, path = "/api/v1/admin/mailboxes/{id}", tag = "admin",
    params(("id" = String, Path)), security(("admin_token" = [])),
    responses((status = 200, body = Vec<MailboxView>), (status = 401), (status = 403), (status = 404)))]
pub async fn delete_mailbox(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin_caller(&state, &request, None)?;
    let mailbox_id = path_id("id", path.into_inner())?;
    state
        .write(Op::Email(EmailOp::RemoveMailbox { mailbox_id }))
        .await?;
    Ok(HttpResponse::Ok().json(mailboxes(&state).await?))
}

/// One message of a case.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseMessageView {
    /// Position in the case, from 1.
    pub seq: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// `normal`, `auto_reply` or `bounce`.
    pub kind: String,
    /// Its Message-ID.
    pub message_id: String,
    /// Sender address.
    pub from: String,
    /// Subject.
    pub subject: String,
    /// Plain text.
    pub text: String,
    /// Sanitized HTML (empty when none).
    pub html: String,
    /// Attachments: name, type, size, BLAKE3.
    pub attachments: Vec<AttachmentView>,
    /// Who wrote a reply.
    pub agent_id: Option<String>,
    /// A reply's outbox id.
    pub reply_id: Option<String>,
    /// A reply's delivery: `queued`, `retrying`, `sent` or `failed`.
    pub delivery: Option<String>,
    /// Why the last attempt failed (retrying or failed).
    pub delivery_reason: Option<String>,
    /// Attempts that failed so far.
    pub delivery_attempts: Option<u32>,
}

/// An attachment's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentView {
    /// File name.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// BLAKE3 of the content, hex: `GET /api/v1/emails/{activity_id}/attachments/{blake3}`
    /// downloads it when `stored`.
    pub blake3: String,
    /// Whether its bytes are stored (downloadable).
    pub stored: bool,
    /// Why not, when not (too large, the mail's attachments too large together, the
    /// attachment store full).
    pub not_stored: Option<String>,
}

/// An email case as its agent sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseView {
    /// The case.
    pub case_id: String,
    /// The email activity asked for.
    pub activity_id: String,
    /// The case's current activity (another one when the case was reopened).
    pub current_activity_id: String,
    /// The mailbox.
    pub mailbox_id: String,
    /// The customer's address.
    pub customer: String,
    /// The customer's name.
    pub customer_name: String,
    /// The first mail's subject.
    pub subject: String,
    /// Every mail in and reply out, oldest first.
    pub messages: Vec<CaseMessageView>,
}

fn case_view(case: &Case, activity_id: &str) -> CaseView {
    CaseView {
        case_id: case.id.clone(),
        activity_id: activity_id.to_owned(),
        current_activity_id: case.activity_id.clone(),
        mailbox_id: case.mailbox_id.clone(),
        customer: case.customer.clone(),
        customer_name: case.customer_name.clone(),
        subject: case.subject.clone(),
        messages: case
            .messages
            .iter()
            .map(|m| {
                let (delivery, delivery_reason, delivery_attempts) = match &m.delivery {
                    None => (None, None, None),
                    Some(Delivery::Queued) => (Some("queued"), None, None),
                    Some(Delivery::Retrying {
                        attempts, reason, ..
                    }) => (Some("retrying"), Some(reason.clone()), Some(*attempts)),
                    Some(Delivery::Sent { .. }) => (Some("sent"), None, None),
                    Some(Delivery::Failed { reason, .. }) => {
                        (Some("failed"), Some(reason.clone()), None)
                    }
                };
                CaseMessageView {
                    seq: m.seq,
                    at_ms: m.at_ms,
                    direction: match m.direction {
                        Direction::Inbound => "inbound",
                        Direction::Outbound => "outbound",
                    }
                    .to_owned(),
                    kind: serde_json::to_value(m.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    message_id: m.message_id.clone(),
                    from: m.from.clone(),
                    subject: m.subject.clone(),
                    text: m.text.clone(),
                    html: m.html.clone(),
                    attachments: m
                        .attachments
                        .iter()
                        .map(|a| AttachmentView {
                            name: a.name.clone(),
                            content_type: a.content_type.clone(),
                            size_bytes: a.size_bytes,
                            blake3: a.blake3.clone(),
                            stored: a.stored,
                            not_stored: a.not_stored.clone(),
                        })
                        .collect(),
                    agent_id: m.agent_id.clone(),
                    reply_id: m.reply_id.clone(),
                    delivery: delivery.map(str::to_owned),
                    delivery_reason,
                    delivery_attempts,
                }
            })
            .collect(),
    }
}

/// Who reads a case: the agent holding its activity, or a supervisor.
enum CaseReader {
    Agent(String),
    Supervisor,
}

/// The caller of a case read: an agent token, or the admin credential (supervisors).
async fn case_reader(state: &WebState, request: &HttpRequest) -> Result<CaseReader, ApiError> {
    if bearer(request, None)?.starts_with(AGENT_TOKEN_PREFIX) {
        let claims = agent_caller(state, request, None).await?;
        return Ok(CaseReader::Agent(claims.agent_id));
    }
    admin_caller(state, request, None)?;
    Ok(CaseReader::Supervisor)
}

/// The case of email activity `activity_id` as `reader` may read it: in memory (an agent only
/// while the activity is offered or assigned to them), or, for a supervisor, from the
/// archive record of the activity it was retired with.
async fn readable_case(
    state: &WebState,
    reader: &CaseReader,
    activity_id: &str,
) -> Result<Case, ApiError> {
    let id = activity_id.to_owned();
    let me = match reader {
        CaseReader::Agent(agent_id) => Some(agent_id.clone()),
        CaseReader::Supervisor => None,
    };
    let found = state
        .read(move |s, _| {
            let activity = s.activities.get(&id)?;
            let ActivityDetail::Email { case_id, .. } = &activity.detail else {
                return Some(Err(()));
            };
            if me.is_some() && activity.status.holder() != me.as_ref() {
                return Some(Err(()));
            }
            s.email.cases.get(case_id).map(|case| Ok(Case::clone(case)))
        })
        .await?;
    let unknown = || {
        ApiError::not_found(
            "unknown_activity",
            format!("unknown email activity {activity_id}"),
        )
    };
    match (found, reader) {
        (Some(Ok(case)), _) => Ok(case),
        (Some(Err(())), CaseReader::Agent(_)) => Err(ApiError::forbidden(
            "this is not an email activity offered or assigned to you",
        )),
        (Some(Err(())), CaseReader::Supervisor) => Err(unknown()),
        (None, CaseReader::Agent(_)) => Err(unknown()),
        (None, CaseReader::Supervisor) => state
            .replica
            .archived(activity_id)
            .await
            .map_err(|e| ApiError::internal(format!("reading the archive: {e}")))?
            .and_then(|retired| retired.case)
            .ok_or_else(unknown),
    }
}

/// The case of an email activity, for the agent it is offered or assigned to, or a supervisor
/// (admin credential; also a retired activity's, from the archive, for as long as it is kept).
#[utoipa::path(get, path = "/api/v1/emails/{activity_id}", tag = "agent",
    params(("activity_id" = String, Path)), security(("agent_token" = []), ("admin_token" = [])),
    responses((status = 200, body = CaseView), (status = 401), (status = 403), (status = 404)))]
pub async fn case_of(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let reader = case_reader(&state, &request).await?;
    let activity_id = path_id("activity_id", path.into_inner())?;
    let case = readable_case(&state, &reader, &activity_id).await?;
    Ok(HttpResponse::Ok().json(case_view(&case, &activity_id)))
}

/// Path of an attachment download.
#[derive(Debug, Deserialize)]
pub struct AttachmentPath {
    activity_id: String,
    blake3: String,
}

/// Types served as listed: ones browsers display or hand to a viewer without running code.
/// Any other type (HTML, SVG, XML, scripts, unknown) is served as `application/octet-stream`.
const SAFE_CONTENT_TYPES: &[&str] = &[
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "image/bmp",
    "image/gif",
    "image/jpeg",
    "image/png",
    "image/tiff",
    "image/webp",
    "text/csv",
    "text/plain",
    "video/mp4",
    "video/mpeg",
    "video/webm",
];

/// The `Content-Type` an attachment is served with.
pub fn served_content_type(listed: &str) -> &'static str {
    let listed = listed.trim().to_ascii_lowercase();
    SAFE_CONTENT_TYPES
        .iter()
        .find(|safe| **safe == listed)
        .copied()
        .unwrap_or("application/octet-stream")
}

/// The `Content-Disposition` an attachment is served with: always `attachment`; the file name
/// without any path, control characters, direction overrides, quotes or characters file
/// systems refuse, at most
/// 100 characters, not starting with a dot; an ASCII `filename` (others as `_`) and the exact
/// one as `filename*` (RFC 6266, RFC 8187).
pub fn attachment_disposition(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(c, '"' | '\\' | ':' | '*' | '?' | '<' | '>' | '|' | ';')
                // Direction marks and overrides (a name that reads as another extension).
                && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .take(100)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    let cleaned = if cleaned.is_empty() {
        "attachment"
    } else {
        cleaned
    };
    let ascii: String = cleaned
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    let mut encoded = String::with_capacity(cleaned.len() * 3);
    for byte in cleaned.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Download a stored attachment of an email activity's case, for the agent the activity is
/// offered or assigned to, or a supervisor (admin credential; also a retired activity's, while
/// the archive keeps it). Always a download (`Content-Disposition: attachment`, `nosniff`); the
/// listed type only when browsers run nothing of it, else `application/octet-stream`. 404 when
/// the case lists no such attachment (`unknown_attachment`), its bytes were not stored
/// (`attachment_not_stored`, with why) or have expired (`attachment_expired`).
#[utoipa::path(get, path = "/api/v1/emails/{activity_id}/attachments/{blake3}", tag = "agent",
    params(("activity_id" = String, Path),
        ("blake3" = String, Path, description = "The attachment's BLAKE3, as the case lists it",
            pattern = "^[0-9a-f]{64}$")),
    security(("agent_token" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "The attachment's bytes", content_type = "application/octet-stream"),
        (status = 401), (status = 403), (status = 404)))]
pub async fn attachment(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<AttachmentPath>,
) -> Result<HttpResponse, ApiError> {
    let reader = case_reader(&state, &request).await?;
    let AttachmentPath {
        activity_id,
        blake3,
    } = path.into_inner();
    let activity_id = path_id("activity_id", activity_id)?;
    if !is_blake3_hex(&blake3) {
        return Err(ApiError::bad_request(
            "invalid_path",
            "blake3 must be 64 lowercase hex digits",
        ));
    }
    let case = readable_case(&state, &reader, &activity_id).await?;
    let listed: Vec<&AttachmentMeta> = case
        .messages
        .iter()
        .flat_map(|m| &m.attachments)
        .filter(|a| a.blake3 == blake3)
        .collect();
    let Some(meta) = listed
        .iter()
        .find(|a| a.stored)
        .or_else(|| listed.first())
        .copied()
    else {
        return Err(ApiError::not_found(
            "unknown_attachment",
            format!("the case lists no attachment {blake3}"),
        ));
    };
    if !meta.stored {
        return Err(ApiError::not_found(
            "attachment_not_stored",
            format!(
                "the bytes of {} were not stored: {}",
                meta.name,
                meta.not_stored.as_deref().unwrap_or("no reason recorded")
            ),
        ));
    }
    let record = state
        .replica
        .store()
        .archived(&attachment_key(&blake3))
        .await
        .map_err(|e| ApiError::internal(format!("reading the archive: {e}")))?
        .ok_or_else(|| {
            ApiError::not_found(
                "attachment_expired",
                format!("the bytes of {} are no longer kept", meta.name),
            )
        })?;
    let bytes = serde_json::from_str::<AttachmentRecord>(&record)
        .ok()
        .and_then(|r| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(r.base64)
                .ok()
        })
        .filter(|bytes| blake3::hash(bytes).to_hex().as_str() == blake3)
        .ok_or_else(|| ApiError::internal(format!("the stored bytes of {blake3} are damaged")))?;
    Ok(HttpResponse::Ok()
        .content_type(served_content_type(&meta.content_type))
        .insert_header((
            header::CONTENT_DISPOSITION,
            attachment_disposition(&meta.name),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .body(bytes))
}

/// Body of `POST /api/v1/emails/{activity_id}/reply`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    /// Client-generated id (1..=128 printable ASCII bytes): a retry with the same id records
    /// nothing more and answers the same reply.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    pub client_id: String,
    /// The reply's text (plain text, at most 65536 bytes).
    #[schema(min_length = 1, max_length = 16384)]
    pub text: String,
}

/// A recorded reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyQueued {
    /// The outbox entry.
    pub reply_id: String,
    /// True when this answered a retry.
    pub replayed: bool,
    /// The case as it stands now (the reply's delivery in its last message of this reply).
    pub case: CaseView,
}

/// Reply to the customer of an email activity assigned to the caller. Recorded once per
/// `client_id` in the replicated outbox (201, or 200 for a retry); sent at least once by the
/// node holding the mailbox's send lease, retried while the SMTP server is unavailable. The
/// case view and the agent's feed (`case_updated`) show the delivery.
#[utoipa::path(post, path = "/api/v1/emails/{activity_id}/reply", tag = "agent",
    params(("activity_id" = String, Path)), request_body = ReplyBody, security(("agent_token" = [])),
    responses((status = 201, body = ReplyQueued), (status = 200, body = ReplyQueued), (status = 400),
        (status = 401), (status = 404), (status = 409)))]
pub async fn reply(
    state: web::Data<WebState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<ReplyBody>,
) -> Result<HttpResponse, ApiError> {
    let claims = agent_caller(&state, &request, None).await?;
    let activity_id = path_id("activity_id", path.into_inner())?;
    let body = body.into_inner();
    if body.text.len() > limits::MAIL_TEXT_BYTES_MAX {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("text is longer than {} bytes", limits::MAIL_TEXT_BYTES_MAX),
        ));
    }
    let id = activity_id.clone();
    let found = state
        .read(move |s, _| {
            let activity = s.activities.get(&id)?;
            let ActivityDetail::Email {
                case_id,
                mailbox_id,
                ..
            } = &activity.detail
            else {
                return Some(None);
            };
            let domain = s
                .email
                .mailboxes
                .get(mailbox_id)
                .and_then(|m| m.spec.address.split('@').nth(1).map(str::to_owned))
                .unwrap_or_else(|| "parley.invalid".to_owned());
            Some(Some((case_id.clone(), domain)))
        })
        .await?;
    let (case_id, domain) = match found {
        Some(Some(found)) => found,
        Some(None) => {
            return Err(ApiError::conflict(
                "not_email",
                format!("activity {activity_id} is not an email"),
            ))
        }
        None => {
            return Err(ApiError::not_found(
                "unknown_activity",
                format!("unknown activity {activity_id}"),
            ))
        }
    };
    let reply_id = new_id();
    let mac = &state.email_mac;
    let op = Op::Email(EmailOp::Reply(QueueReply {
        session: AgentSession {
            agent_id: claims.agent_id.clone(),
            session_id: claims.session_id.clone(),
        },
        activity_id: activity_id.clone(),
        client_id: body.client_id,
        message_id: mac.message_id(&case_id, &reply_id, &domain),
        subject_tag: mac.subject_tag(&case_id),
        reply_id,
        text: body.text,
    }));
    let (reply_id, replayed) = match state.write(op).await? {
        Outcome::ReplyQueued { reply_id, replayed } => (reply_id, replayed),
        other => return Err(unexpected(other)),
    };
    let id = activity_id.clone();
    let case = state
        .read(move |s, _| s.email.cases.get(&case_id).map(|c| case_view(c, &id)))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_case", "the case is no longer open"))?;
    Ok(written_answer(replayed, false).json(ReplyQueued {
        reply_id,
        replayed,
        case,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_types_browsers_run_nothing_of_are_served_as_listed() {
        assert_eq!(served_content_type("application/PDF"), "application/pdf");
        assert_eq!(served_content_type("image/png"), "image/png");
        for risky in [
            "text/html",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/javascript",
            "text/html; charset=utf-8",
            "",
        ] {
            assert_eq!(
                served_content_type(risky),
                "application/octet-stream",
                "{risky}"
            );
        }
    }

    #[test]
    fn a_download_name_carries_no_path_quote_or_control_character() {
        assert_eq!(
            attachment_disposition("../../etc/\"passwd\"\r\n.txt"),
            "attachment; filename=\"passwd.txt\"; filename*=UTF-8''passwd.txt"
        );
        assert_eq!(
            attachment_disposition("C:\\Users\\x\\Rechnung März.pdf"),
            "attachment; filename=\"Rechnung M_rz.pdf\"; \
             filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf"
        );
        assert_eq!(
            attachment_disposition(".."),
            "attachment; filename=\"attachment\"; filename*=UTF-8''attachment"
        );
        assert_eq!(
            attachment_disposition(""),
            "attachment; filename=\"attachment\"; filename*=UTF-8''attachment"
        );
        let long = attachment_disposition(&"a".repeat(500));
        assert!(long.len() < 260, "{long}");
        assert_eq!(
            attachment_disposition("x\u{7f}y\u{202e}fdp.exe"),
            "attachment; filename=\"xyfdp.exe\"; filename*=UTF-8''xyfdp.exe"
        );
        // Every byte is one a header may carry.
        let value = attachment_disposition("\u{3042}\u{1F600} \t.pdf");
        assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)), "{value}");
    }
}
