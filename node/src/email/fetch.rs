//! The fetcher of one mailbox: while this node holds the mailbox's fetch lease, it takes every
//! mail of the folder past the replicated cursor into the cluster, one command per mail, in
//! UID order, then waits for more with IMAP IDLE (or polls a server without it).
//!
//! - Mail is found by UID (`UID SEARCH UID <next>:*`), never by sequence number or `\Seen`, and
//!   read with `BODY.PEEK[]`, which leaves `\Seen` alone: mail read in another client first is
//!   taken in all the same, and other clients see nothing change.
//! - The cursor is replicated and moves only with a mail taken in (`EmailOp::Ingest`, fenced by
//!   the lease), so a fetcher that dies mid-batch leaves the cursor at the last mail the
//!   cluster has; the next holder starts after it, and a mail proposed twice (by the dead
//!   holder and its successor) is applied once.
//! - A new UIDVALIDITY (the folder was recreated) starts again from UID 1; the cluster
//!   recognises what it has by Message-ID: before proposing a mail, the fetcher looks its
//!   Message-ID up in memory, then in the archive (a retired case leaves its Message-IDs
//!   there), and stamps the case it found into the command, which `apply` cannot read.
//! - A mail whose command carries attachment bytes waits for the node's one slot for such
//!   mails: an entry carries at most one of them per node (see `limits.rs`).
//! - Every network step is bounded by `email.io_timeout`; a failed session is retried after a
//!   pause that doubles up to 30 s.

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::Fetch;
use futures::TryStreamExt;
use parley_raft::command::email::{
    fetch_lease, message_id_key, EmailOp, IngestEmail, MailboxSpec, TlsMode,
};
use parley_raft::command::Op;
use parley_raft::state::email::ArchivedMessageId;
use parley_raft::{limits, Outcome, Rejection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::lease::{self, Held};
use super::status::Job;
use super::{parse, secret, Context, EmailError};

/// Most mails taken in per search before new ones are looked for again.
const BATCH_MAILS_MAX: usize = 50;
/// Longest pause between two failed sessions.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(30);

/// A connection to an IMAP server, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;

/// Runs the fetcher of `spec` until `stop`.
pub async fn run(ctx: Context, spec: MailboxSpec, stop: CancellationToken) {
    let mut lease_rx = lease::keep(
        ctx.replica.clone(),
        ctx.clock.clone(),
        fetch_lease(&spec.id),
        ctx.config.lease,
        stop.child_token(),
    );
    let mut pause = Duration::from_secs(1);
    loop {
        // Wait until this node holds the lease; a failure seen while it held it is no longer
        // this node's to report.
        if lease_rx.borrow().is_none() {
            ctx.status.clear(&spec.id, Job::Fetch);
        }
        while lease_rx.borrow().is_none() {
            tokio::select! {
                changed = lease_rx.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
        }
        match session(&ctx, &spec, &mut lease_rx, &stop).await {
            Ok(()) => pause = Duration::from_secs(1),
            Err(error) => {
                tracing::warn!(mailbox = %spec.id, %error, "fetching mail; will retry");
                ctx.status
                    .failed(&spec.id, Job::Fetch, ctx.clock.now_ms(), &error.to_string());
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            }
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

async fn within<T, E>(
    io_timeout: Duration,
    what: &'static str,
    step: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, EmailError>
where
    E: std::fmt::Display,
{
    match tokio::time::timeout(io_timeout, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(EmailError::Imap {
            step: what,
            problem: super::without_addresses(&error.to_string()),
        }),
        Err(_) => Err(EmailError::Timeout { step: what }),
    }
}

/// A connection to the IMAP server, ready for the client.
pub struct Connected {
    /// The stream the client talks over.
    pub stream: Box<dyn Io>,
    /// Whether the server's greeting was read already (STARTTLS reads it on the plain
    /// connection; no second greeting comes over TLS).
    pub greeted: bool,
}

/// Opens a TCP connection to the IMAP server and, as its `tls` says, TLS from the first byte,
/// STARTTLS (see [`super::starttls`]) or nothing. TLS trusts the public roots and
/// `extra_roots` (`email.ca_file`).
pub async fn connect(
    spec: &MailboxSpec,
    io_timeout: Duration,
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Connected, EmailError> {
    let server = &spec.imap;
    let name = rustls::pki_types::ServerName::try_from(server.host.clone()).map_err(|_| {
        EmailError::Imap {
            step: "tls",
            problem: "the host is not a valid TLS server name".to_owned(),
        }
    });
    let mut tcp = within(
        io_timeout,
        "connect",
        TcpStream::connect((server.host.as_str(), server.port)),
    )
    .await?;
    let greeted = match server.tls {
        TlsMode::Plain => {
            return Ok(Connected {
                stream: Box::new(tcp),
                greeted: false,
            })
        }
        TlsMode::Tls => false,
        TlsMode::Starttls => {
            super::starttls::negotiate(&mut tcp, io_timeout).await?;
            true
        }
    };
    let connector = tokio_rustls::TlsConnector::from(super::tls_client_config(extra_roots)?);
    let tls = within(io_timeout, "tls", connector.connect(name?, tcp)).await?;
    Ok(Connected {
        stream: Box::new(tls),
        greeted,
    })
}

/// Connects, logs in and selects the folder: the session and the folder's UIDVALIDITY.
async fn open(ctx: &Context, spec: &MailboxSpec) -> Result<(Session, u32, bool), EmailError> {
    let io = ctx.config.io_timeout;
    let connected = connect(spec, io, &ctx.config.extra_roots).await?;
    let mut client = async_imap::Client::new(connected.stream);
    if !connected.greeted {
        within(io, "greeting", async {
            client
                .read_response()
                .await
                .and_then(|r| r.ok_or_else(|| std::io::Error::other("connection closed")))
        })
        .await?;
    }
    let password = secret::resolve(spec.imap.password.as_ref())?;
    let mut session = within(io, "login", async {
        client
            .login(&spec.imap.username, &password)
            .await
            .map_err(|(error, _)| error)
    })
    .await?;
    let idle = within(io, "capabilities", session.capabilities())
        .await?
        .has_str("IDLE");
    let folder = within(io, "select", session.select(&spec.folder)).await?;
    let validity = folder.uid_validity.ok_or(EmailError::Imap {
        step: "select",
        problem: "the server gave no UIDVALIDITY".to_owned(),
    })?;
    Ok((session, validity, idle))
}

/// One session: open, take in what is new, wait, again; ends when the lease is lost or on
/// `stop` (`Ok`), or on a failure (`Err`).
async fn session(
    ctx: &Context,
    spec: &MailboxSpec,
    lease_rx: &mut watch::Receiver<Option<Held>>,
    stop: &CancellationToken,
) -> Result<(), EmailError> {
    let (mut session, validity, idle) = open(ctx, spec).await?;
    ctx.status.clear(&spec.id, Job::Fetch);
    tracing::info!(mailbox = %spec.id, uid_validity = validity, idle, "fetching mail");
    loop {
        if !take_in_new(ctx, spec, &mut session, validity, lease_rx).await? {
            break;
        }
        if stop.is_cancelled() || lease_rx.borrow().is_none() {
            break;
        }
        session = if idle {
            wait_idle(ctx, session, lease_rx, stop).await?
        } else {
            tokio::select! {
                () = tokio::time::sleep(ctx.config.poll_interval) => {}
                _ = lease_rx.changed() => {}
                () = stop.cancelled() => {}
            }
            session
        };
        if stop.is_cancelled() {
            break;
        }
    }
    let _ = tokio::time::timeout(ctx.config.io_timeout, session.logout()).await;
    Ok(())
}

/// Waits with IDLE until the server reports a change, the wait times out, the lease changes
/// or `stop`.
async fn wait_idle(
    ctx: &Context,
    session: Session,
    lease_rx: &mut watch::Receiver<Option<Held>>,
    stop: &CancellationToken,
) -> Result<Session, EmailError> {
    let io = ctx.config.io_timeout;
    let mut handle = session.idle();
    within(io, "idle", handle.init()).await?;
    {
        let (wait, interrupt) = handle.wait_with_timeout(ctx.config.poll_interval);
        tokio::pin!(wait);
        let outcome = tokio::select! {
            outcome = &mut wait => Some(outcome),
            _ = lease_rx.changed() => None,
            () = stop.cancelled() => None,
        };
        let outcome = match outcome {
            Some(outcome) => outcome,
            None => {
                drop(interrupt);
                match tokio::time::timeout(io, wait).await {
                    Ok(outcome) => outcome,
                    Err(_) => return Err(EmailError::Timeout { step: "idle" }),
                }
            }
        };
        match outcome {
            Ok(IdleResponse::NewData(_)) => tracing::debug!("new mail announced"),
            Ok(IdleResponse::Timeout | IdleResponse::ManualInterrupt) => {}
            Err(error) => {
                return Err(EmailError::Imap {
                    step: "idle",
                    problem: super::without_addresses(&error.to_string()),
                })
            }
        }
    }
    within(io, "idle done", handle.done()).await
}

/// Takes in every mail past the cursor; `false` when the lease was lost.
async fn take_in_new(
    ctx: &Context,
    spec: &MailboxSpec,
    session: &mut Session,
    validity: u32,
    lease_rx: &watch::Receiver<Option<Held>>,
) -> Result<bool, EmailError> {
    let io = ctx.config.io_timeout;
    loop {
        let cursor = ctx
            .replica
            .read(|state, _| state.email.mailboxes.get(&spec.id).and_then(|m| m.cursor));
        let next = match cursor {
            Some(cursor) if cursor.uid_validity == validity => cursor.last_uid.saturating_add(1),
            _ => 1,
        };
        // `n:*` always matches the newest mail, even below n: filter.
        let mut uids: Vec<u32> = within(io, "search", session.uid_search(format!("UID {next}:*")))
            .await?
            .into_iter()
            .filter(|uid| *uid >= next)
            .collect();
        uids.sort_unstable();
        uids.truncate(BATCH_MAILS_MAX);
        if uids.is_empty() {
            return Ok(true);
        }
        for uid in uids {
            let Some(held) = lease_rx.borrow().clone() else {
                return Ok(false);
            };
            if !held.usable(ctx.clock.now_ms()) {
                return Ok(false);
            }
            let (raw, truncated) = fetch_one(io, session, uid).await?;
            let own: Vec<String> = ctx.replica.read(|state, _| {
                state
                    .email
                    .mailboxes
                    .values()
                    .map(|m| m.spec.address.clone())
                    .collect()
            });
            let parse::Parsed {
                email,
                hints,
                contents,
            } = parse::parse(&raw, truncated, &ctx.config.mac, &own);
            drop(raw);
            let kind = email.kind;
            let known_case = known_case(ctx, &email.message_id).await?;
            // One mail with attachment bytes in flight per node (see the module docs).
            let _slot = if contents.is_empty() {
                None
            } else {
                Some(
                    ctx.attachment_slot
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| EmailError::Propose {
                            problem: "the node is shutting down".to_owned(),
                        })?,
                )
            };
            let attachment_base64_bytes: usize = contents.iter().map(|c| c.base64.len()).sum();
            let op = Op::Email(EmailOp::Ingest(Box::new(IngestEmail {
                fence: held.fence(),
                mailbox_id: spec.id.clone(),
                uid_validity: validity,
                uid,
                email,
                hints,
                new_case_id: super::ids::new_case_id(),
                new_activity_id: uuid::Uuid::new_v4().to_string(),
                known_case,
                contents,
            })));
            let proposed = std::time::Instant::now();
            match ctx.replica.propose(op).await {
                Ok(Outcome::EmailIngested {
                    case_id, duplicate, ..
                }) => {
                    let commit_ms = proposed.elapsed().as_millis();
                    tracing::info!(mailbox = %spec.id, uid, ?kind, case = ?case_id, duplicate,
                        attachment_base64_bytes, commit_ms, "mail taken in");
                }
                Ok(Outcome::Rejected(Rejection::LeaseLost { .. })) => return Ok(false),
                Ok(other) => {
                    return Err(EmailError::Refused {
                        what: format!("{other:?}"),
                    })
                }
                Err(error) => {
                    return Err(EmailError::Propose {
                        problem: error.to_string(),
                    })
                }
            }
        }
    }
}

/// The case holding `message_id`: one in memory, else a retired one whose record the archive
/// still has. Read in that order, a case retiring meanwhile is found in one or the other (it
/// leaves memory and enters the archive in the same step).
async fn known_case(ctx: &Context, message_id: &str) -> Result<Option<String>, EmailError> {
    let in_memory = ctx
        .replica
        .read(|state, _| state.email.message_ids.get(message_id).cloned());
    if in_memory.is_some() {
        return Ok(in_memory);
    }
    let archived = ctx
        .replica
        .store()
        .archived(&message_id_key(message_id))
        .await
        .map_err(|e| EmailError::Archive {
            problem: e.to_string(),
        })?;
    archived
        .map(|json| serde_json::from_str::<ArchivedMessageId>(&json).map(|r| r.case_id))
        .transpose()
        .map_err(|e| EmailError::Archive {
            problem: format!("an archived Message-ID record does not decode: {e}"),
        })
}

/// The mail with `uid`: whole, or its header only when larger than the bound (`true`).
async fn fetch_one(
    io: Duration,
    session: &mut Session,
    uid: u32,
) -> Result<(Vec<u8>, bool), EmailError> {
    let size = {
        let fetches: Vec<Fetch> = within(io, "fetch size", async {
            let stream = session
                .uid_fetch(uid.to_string(), "(UID RFC822.SIZE)")
                .await?;
            stream.try_collect::<Vec<Fetch>>().await
        })
        .await?;
        fetches
            .iter()
            .find(|f| f.uid == Some(uid))
            .and_then(|f| f.size)
    };
    let whole = size.is_none_or(|size| u64::from(size) <= limits::MAIL_RAW_BYTES_MAX);
    let query = if whole {
        "(UID BODY.PEEK[])"
    } else {
        "(UID BODY.PEEK[HEADER])"
    };
    let fetches: Vec<Fetch> = within(io, "fetch", async {
        let stream = session.uid_fetch(uid.to_string(), query).await?;
        stream.try_collect::<Vec<Fetch>>().await
    })
    .await?;
    let fetch = fetches
        .iter()
        .find(|f| f.uid == Some(uid))
        .ok_or(EmailError::Imap {
            step: "fetch",
            problem: format!("the server did not return mail {uid}"),
        })?;
    let raw = if whole { fetch.body() } else { fetch.header() };
    Ok((raw.unwrap_or_default().to_vec(), !whole))
}
