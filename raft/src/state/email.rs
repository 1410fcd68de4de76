//! The email channel: mailboxes, the per-mailbox cursor, cases and their threading, the outbox.
//!
//! - **Taking mail in exactly once** ([`EmailOp::Ingest`]): each mailbox has a replicated
//!   cursor (UIDVALIDITY, last UID taken in). A mail at or below the cursor under the same
//!   UIDVALIDITY is a duplicate; so is a mail whose Message-ID a case holds, in memory or
//!   retired to the archive (the same mail delivered twice, or re-fetched after a UIDVALIDITY
//!   change). `apply` cannot read the archive: the proposer looks the Message-ID up (memory,
//!   then the archive record [`message_id_key`] a retired case left) and stamps the case it
//!   found into the command ([`IngestEmail::known_case`]). Only the holder of the mailbox's
//!   fetch lease may advance the cursor (see [`super::lease`]).
//! - **Threading**, in order: a case named by one of our own Message-IDs (checked by the
//!   proposer's MAC), then any In-Reply-To/References id a case holds, then a case named by the
//!   subject tag (MAC checked by the proposer). A normal mail that threads to nothing opens a
//!   case with a new email activity in the mailbox's queue. An auto-reply or bounce only ever
//!   attaches to a case; one that threads to nothing is dropped (counted as taken in).
//! - **Activities**: a case has one current activity; mail to a case whose activity is live is
//!   added to it (its holder's feed is told), mail to a case whose activity is over opens a
//!   new activity for the same case.
//! - **Outbox** ([`EmailOp::Reply`], [`EmailOp::RecordDelivery`]): a reply is recorded once per
//!   client id into the case and the outbox; the send lease's holder sends it (at least once)
//!   and records each attempt; a reply leaves the outbox once sent or failed for good. A case
//!   is retired with its current activity, but never while one of its replies is still in the
//!   outbox (its retirement waits). Each of its Message-IDs is then archived to it
//!   ([`message_id_key`]), expiring with the activity's record.
//! - **Attachments**: the command taking a mail in carries the bytes of the attachments within
//!   the limits (`limits::MAIL_ATTACHMENT*_STORED_BYTES_MAX`); `apply` checks each against its
//!   BLAKE3 and puts it in the archive under [`attachment_key`], once per hash however many
//!   mails carry it. The state keeps only metadata and an index of what is stored
//!   ([`StoredAttachment`]): a record is kept "until moved" (`u64::MAX`) while a message in
//!   memory lists it, and when the last one retires its expiry becomes the latest archive
//!   expiry of the cases that listed it (`ArchiveOp::Expire`). A purge drops the index entries
//!   of what it deleted. Cluster-wide, at most `limits::ATTACHMENT_STORE_BYTES_MAX` bytes are
//!   stored; an attachment not stored is listed with `stored: false` and the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::lease::Lease;
use super::{
    check_client_id, check_directory_id, check_text, Activity, ActivityDetail, ActivityStatus,
    AgentEventBody, InvariantViolation, State, Timer, Transition,
};
use crate::command::email::{
    attachment_key, message_id_key, AttachmentMeta, DeliveryResult, EmailOp, InboundEmail,
    IngestEmail, MailKind, MailboxSpec, QueueReply, RecordDelivery, SecretRef, ServerSpec, TlsMode,
};
use crate::command::{ActivityId, CaseId, Channel, MailboxId, Outcome, Rejection, ReplyId};
use crate::limits;
use crate::types::NodeId;
use parley_storage::ArchiveOp;

/// The email channel's part of the state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EmailState {
    /// Mailboxes by id, with their cursors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mailboxes: BTreeMap<MailboxId, Mailbox>,
    /// Leases by name (see [`super::lease`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leases: BTreeMap<String, Lease>,
    /// Cases in memory by id. Shared with snapshot copies like activities.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cases: BTreeMap<CaseId, Arc<Case>>,
    /// Every Message-ID a case in memory holds (mail in, replies out), to its case: for
    /// deduplication and threading.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub message_ids: BTreeMap<String, CaseId>,
    /// Replies not yet sent or failed for good, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outbox: BTreeMap<ReplyId, OutboxEntry>,
    /// Attachments whose bytes are in the archive, by BLAKE3 (hex).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attachments: BTreeMap<String, StoredAttachment>,
    /// The stored attachments' bytes together.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attachment_bytes: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// An attachment whose bytes are in the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAttachment {
    /// Its size, in bytes.
    pub size_bytes: u64,
    /// How many messages in memory list it as stored; while any does, its record does not
    /// expire.
    pub in_memory: u32,
    /// The latest archive expiry of the retired cases that listed it (0 before one retired);
    /// its record's expiry once `in_memory` is 0.
    pub expires_at_ms: u64,
}

/// The archive record of a stored attachment ([`attachment_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// The bytes, standard base64.
    pub base64: String,
}

/// The archive record of a retired case's Message-ID ([`message_id_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedMessageId {
    /// The case that held it.
    pub case_id: CaseId,
    /// The activity the case was retired with (its archive record holds the case).
    pub activity_id: ActivityId,
}

/// Whether `hash` is a BLAKE3 in lowercase hex.
pub fn is_blake3_hex(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl EmailState {
    /// Whether nothing of the email channel was ever used (left out of the serialized state,
    /// so the digest of a state without email is the one a release without email computes).
    pub fn is_empty(&self) -> bool {
        self.mailboxes.is_empty()
            && self.leases.is_empty()
            && self.cases.is_empty()
            && self.message_ids.is_empty()
            && self.outbox.is_empty()
            && self.attachments.is_empty()
            && self.attachment_bytes == 0
    }
}

/// A mailbox and its cursor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// Configuration.
    pub spec: MailboxSpec,
    /// How far mail was taken in; `None` before the first mail.
    pub cursor: Option<Cursor>,
}

/// How far a mailbox's folder was taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The folder's UIDVALIDITY the UIDs below belong to.
    pub uid_validity: u32,
    /// The highest UID taken in under it.
    pub last_uid: u32,
}

/// An email thread with one customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// Stable id (in our Message-IDs and subject tags).
    pub id: CaseId,
    /// The mailbox it came in through (replies go out through it).
    pub mailbox_id: MailboxId,
    /// The customer's address.
    pub customer: String,
    /// The customer's display name.
    pub customer_name: String,
    /// The subject of the first mail.
    pub subject: String,
    /// When it was opened.
    pub created_at_ms: u64,
    /// Its current (latest) activity.
    pub activity_id: ActivityId,
    /// Every mail in and reply out, oldest first; `messages[i].seq == i + 1`.
    pub messages: Vec<CaseMessage>,
    /// Client id of each reply to its id, so a retried reply is recorded once.
    pub replies: BTreeMap<String, ReplyId>,
}

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the customer (or their mail system).
    Inbound,
    /// A reply of ours.
    Outbound,
}

/// Where a reply's delivery stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Delivery {
    /// In the outbox, not tried yet.
    Queued,
    /// Tried and failed for a reason that may pass; tried again after `retry_at_ms`.
    Retrying {
        /// Attempts so far.
        attempts: u32,
        /// The last failure.
        reason: String,
        /// When the next attempt is due.
        retry_at_ms: u64,
    },
    /// Accepted by the SMTP server.
    Sent {
        /// When.
        at_ms: u64,
    },
    /// Refused for good; not tried again.
    Failed {
        /// Why.
        reason: String,
        /// When.
        at_ms: u64,
    },
}

impl Delivery {
    /// Whether it will not change any more.
    pub fn is_final(&self) -> bool {
        matches!(self, Delivery::Sent { .. } | Delivery::Failed { .. })
    }
}

/// One message of a case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseMessage {
    /// Position in the case, from 1.
    pub seq: u64,
    /// When it was taken in or written.
    pub at_ms: u64,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Normal, auto-reply or bounce (inbound).
    pub kind: MailKind,
    /// Its Message-ID.
    pub message_id: String,
    /// Sender address (the mailbox's for a reply).
    pub from: String,
    /// Subject.
    pub subject: String,
    /// Plain text.
    pub text: String,
    /// Sanitized HTML, empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub html: String,
    /// Attachment metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentMeta>,
    /// The agent who wrote a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// A reply's outbox id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_id: Option<ReplyId>,
    /// A reply's delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

/// A reply waiting to be sent: everything the sender needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Its id.
    pub reply_id: ReplyId,
    /// The case.
    pub case_id: CaseId,
    /// The mailbox it is sent through.
    pub mailbox_id: MailboxId,
    /// Its message in the case.
    pub message_seq: u64,
    /// Recipient address.
    pub to: String,
    /// Subject (with the case tag).
    pub subject: String,
    /// Text.
    pub text: String,
    /// Its Message-ID.
    pub message_id: String,
    /// The message it answers.
    pub in_reply_to: Option<String>,
    /// The thread's ids, oldest first.
    pub references: Vec<String>,
    /// Where its delivery stands (never final while in the outbox).
    pub delivery: Delivery,
    /// When it was queued.
    pub queued_at_ms: u64,
}

impl OutboxEntry {
    /// When it is due to be tried: now when queued, at its retry time when retrying.
    pub fn due_at_ms(&self) -> u64 {
        match &self.delivery {
            Delivery::Retrying { retry_at_ms, .. } => *retry_at_ms,
            _ => self.queued_at_ms,
        }
    }
}

fn check_address(field: &str, address: &str) -> Result<(), Rejection> {
    check_text(field, address, 3, limits::EMAIL_BYTES_MAX)?;
    let valid = address.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    }) && !address
        .chars()
        .any(|c| c.is_whitespace() || c == '<' || c == '>');
    if !valid {
        return Err(Rejection::invalid(field, "is not an email address"));
    }
    Ok(())
}

fn check_server(field: &str, server: &ServerSpec) -> Result<(), Rejection> {
    let host_ok = !server.host.is_empty()
        && server.host.len() <= limits::MAIL_HOST_BYTES_MAX
        && server
            .host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !host_ok {
        return Err(Rejection::invalid(
            &format!("{field}.host"),
            "must be a host name or address",
        ));
    }
    if server.port == 0 {
        return Err(Rejection::invalid(
            &format!("{field}.port"),
            "must not be 0",
        ));
    }
    if server.username.len() > limits::MAIL_NAME_BYTES_MAX
        || server.username.chars().any(char::is_control)
    {
        return Err(Rejection::invalid(
            &format!("{field}.username"),
            format!(
                "must be at most {} bytes without control characters",
                limits::MAIL_NAME_BYTES_MAX
            ),
        ));
    }
    match &server.password {
        None => {}
        Some(SecretRef::Env(name)) => {
            let ok = !name.is_empty()
                && name.len() <= limits::SECRET_REF_BYTES_MAX
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(Rejection::invalid(
                    &format!("{field}.password.env"),
                    "must be an environment variable name (letters, digits, '_')",
                ));
            }
        }
        Some(SecretRef::File(path))
            if !path.starts_with('/') || path.len() > limits::SECRET_REF_BYTES_MAX =>
        {
            return Err(Rejection::invalid(
                &format!("{field}.password.file"),
                "must be an absolute path",
            ));
        }
        Some(SecretRef::File(_)) => {}
    }
    if server.tls == TlsMode::Plain && server.password.is_some() && !is_loopback(&server.host) {
        return Err(Rejection::invalid(
            &format!("{field}.tls"),
            "plain (no TLS) with a password is allowed for a loopback server only",
        ));
    }
    Ok(())
}

/// Whether `host` names this machine.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks a mailbox spec on its own (the queue it names is checked by `apply`).
pub fn check_mailbox_spec(spec: &MailboxSpec) -> Result<(), Rejection> {
    check_directory_id("id", &spec.id)?;
    check_address("address", &spec.address)?;
    check_text(
        "display_name",
        &spec.display_name,
        1,
        limits::NAME_BYTES_MAX,
    )?;
    check_directory_id("queue_id", &spec.queue_id)?;
    check_text("folder", &spec.folder, 1, limits::MAIL_NAME_BYTES_MAX)?;
    check_server("imap", &spec.imap)?;
    check_server("smtp", &spec.smtp)
}

fn check_message_id(field: &str, id: &str) -> Result<(), Rejection> {
    if id.is_empty()
        || id.len() > limits::MESSAGE_ID_BYTES_MAX
        || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Rejection::invalid(
            field,
            format!(
                "must be 1 to {} bytes of printable ASCII",
                limits::MESSAGE_ID_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

fn check_inbound(email: &InboundEmail) -> Result<(), Rejection> {
    check_message_id("message_id", &email.message_id)?;
    if email.in_reply_to.len() + email.references.len() > limits::MAIL_THREAD_IDS_MAX {
        return Err(Rejection::invalid(
            "references",
            format!("more than {} ids", limits::MAIL_THREAD_IDS_MAX),
        ));
    }
    for id in email.in_reply_to.iter().chain(&email.references) {
        check_message_id("references", id)?;
    }
    // The sender may be anything a mail system wrote (a bounce has none): bounded only.
    let bounded = |field: &str, value: &str, max: usize| {
        if value.len() > max {
            Err(Rejection::invalid(
                field,
                format!("longer than {max} bytes"),
            ))
        } else {
            Ok(())
        }
    };
    bounded("from", &email.from, limits::EMAIL_BYTES_MAX)?;
    bounded("from_name", &email.from_name, limits::NAME_BYTES_MAX)?;
    bounded("subject", &email.subject, limits::MAIL_SUBJECT_BYTES_MAX)?;
    bounded("text", &email.text, limits::MAIL_TEXT_BYTES_MAX)?;
    bounded("html", &email.html, limits::MAIL_HTML_BYTES_MAX)?;
    if email.attachments.len() > limits::MAIL_ATTACHMENTS_MAX {
        return Err(Rejection::invalid(
            "attachments",
            format!("more than {}", limits::MAIL_ATTACHMENTS_MAX),
        ));
    }
    for attachment in &email.attachments {
        bounded("attachments.name", &attachment.name, limits::NAME_BYTES_MAX)?;
        bounded(
            "attachments.content_type",
            &attachment.content_type,
            limits::NAME_BYTES_MAX,
        )?;
        if !is_blake3_hex(&attachment.blake3) {
            return Err(Rejection::invalid(
                "attachments.blake3",
                "must be 64 lowercase hex digits",
            ));
        }
    }
    Ok(())
}

/// Longest base64 text of `bytes` bytes (padded).
fn base64_len(bytes: u64) -> u64 {
    bytes.div_ceil(3).saturating_mul(4)
}

fn check_contents(ingest: &IngestEmail) -> Result<(), Rejection> {
    if ingest.contents.len() > limits::MAIL_ATTACHMENTS_MAX {
        return Err(Rejection::invalid(
            "contents",
            format!("more than {}", limits::MAIL_ATTACHMENTS_MAX),
        ));
    }
    let mut total: u64 = 0;
    for (index, content) in ingest.contents.iter().enumerate() {
        if !is_blake3_hex(&content.blake3) {
            return Err(Rejection::invalid(
                "contents.blake3",
                "must be 64 lowercase hex digits",
            ));
        }
        if ingest.contents[..index]
            .iter()
            .any(|c| c.blake3 == content.blake3)
        {
            return Err(Rejection::invalid("contents", "one entry per hash"));
        }
        if !ingest
            .email
            .attachments
            .iter()
            .any(|a| a.blake3 == content.blake3)
        {
            return Err(Rejection::invalid(
                "contents",
                "bytes of an attachment the mail does not list",
            ));
        }
        let length = content.base64.len() as u64;
        if length > base64_len(limits::MAIL_ATTACHMENT_STORED_BYTES_MAX) {
            return Err(Rejection::invalid(
                "contents",
                format!(
                    "an attachment larger than {} bytes",
                    limits::MAIL_ATTACHMENT_STORED_BYTES_MAX
                ),
            ));
        }
        total = total.saturating_add(length);
    }
    if total > base64_len(limits::MAIL_ATTACHMENTS_STORED_BYTES_MAX) {
        return Err(Rejection::invalid(
            "contents",
            format!(
                "more than {} bytes of attachments",
                limits::MAIL_ATTACHMENTS_STORED_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// The bytes of `ingest`'s contents, each checked against its hash and the size its
/// attachments list: hash to bytes length.
fn verify_contents(ingest: &IngestEmail) -> Result<BTreeMap<&str, u64>, Rejection> {
    use base64::Engine;
    let mut verified = BTreeMap::new();
    for content in &ingest.contents {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&content.base64)
            .map_err(|_| Rejection::invalid("contents.base64", "is not standard base64"))?;
        if blake3::hash(&bytes).to_hex().as_str() != content.blake3 {
            return Err(Rejection::invalid(
                "contents",
                format!("the bytes do not hash to {}", content.blake3),
            ));
        }
        let size = bytes.len() as u64;
        let listed_otherwise = ingest
            .email
            .attachments
            .iter()
            .any(|a| a.blake3 == content.blake3 && a.size_bytes != size);
        if listed_otherwise || size > limits::MAIL_ATTACHMENT_STORED_BYTES_MAX {
            return Err(Rejection::invalid(
                "contents",
                format!("the bytes of {} are not the size listed", content.blake3),
            ));
        }
        verified.insert(content.blake3.as_str(), size);
    }
    let total: u64 = verified.values().sum();
    if total > limits::MAIL_ATTACHMENTS_STORED_BYTES_MAX {
        return Err(Rejection::invalid(
            "contents",
            format!(
                "more than {} bytes of attachments",
                limits::MAIL_ATTACHMENTS_STORED_BYTES_MAX
            ),
        ));
    }
    Ok(verified)
}

/// In KiB, for reasons shown to people.
fn kib(bytes: u64) -> u64 {
    bytes / 1024
}

/// In MiB, for reasons shown to people.
fn mib(bytes: u64) -> u64 {
    bytes / (1024 * 1024)
}

fn check_lease_name(name: &str) -> Result<(), Rejection> {
    if name.is_empty()
        || name.len() > limits::LEASE_NAME_BYTES_MAX
        || !name.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Rejection::invalid(
            "name",
            format!(
                "must be 1 to {} bytes of printable ASCII",
                limits::LEASE_NAME_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

/// The bounds an email operation's own fields must meet (see `input.rs`).
pub(super) fn check_email_input(op: &EmailOp) -> Result<(), Rejection> {
    match op {
        EmailOp::UpsertMailbox(spec) => check_mailbox_spec(spec),
        EmailOp::RemoveMailbox { mailbox_id } => check_directory_id("mailbox_id", mailbox_id),
        EmailOp::AcquireLease(request) => {
            check_lease_name(&request.name)?;
            if !(limits::LEASE_DURATION_MS_MIN..=limits::LEASE_DURATION_MS_MAX)
                .contains(&request.duration_ms)
            {
                return Err(Rejection::invalid(
                    "duration_ms",
                    format!(
                        "must be {} to {}",
                        limits::LEASE_DURATION_MS_MIN,
                        limits::LEASE_DURATION_MS_MAX
                    ),
                ));
            }
            Ok(())
        }
        EmailOp::ReleaseLease { name, .. } => check_lease_name(name),
        EmailOp::Ingest(ingest) => {
            check_lease_name(&ingest.fence.name)?;
            check_directory_id("mailbox_id", &ingest.mailbox_id)?;
            check_client_id("new_case_id", &ingest.new_case_id)?;
            check_client_id("new_activity_id", &ingest.new_activity_id)?;
            if let Some(case) = &ingest.known_case {
                check_client_id("known_case", case)?;
            }
            check_contents(ingest)?;
            for case in [&ingest.hints.our_message_case, &ingest.hints.subject_case]
                .into_iter()
                .flatten()
            {
                check_client_id("hints", case)?;
            }
            check_inbound(&ingest.email)
        }
        EmailOp::Reply(reply) => {
            check_client_id("client_id", &reply.client_id)?;
            check_client_id("reply_id", &reply.reply_id)?;
            check_message_id("message_id", &reply.message_id)?;
            check_text("subject_tag", &reply.subject_tag, 1, 128)?;
            check_text("text", &reply.text, 1, limits::MAIL_TEXT_BYTES_MAX)
        }
        EmailOp::RecordDelivery(record) => {
            check_lease_name(&record.fence.name)?;
            check_client_id("reply_id", &record.reply_id)?;
            match &record.result {
                DeliveryResult::Sent => Ok(()),
                DeliveryResult::Retry { reason, .. } | DeliveryResult::Failed { reason } => {
                    check_text("reason", reason, 1, limits::DELIVERY_REASON_BYTES_MAX)
                }
            }
        }
    }
}

impl State {
    /// Applies one email operation.
    pub(super) fn apply_email(
        &mut self,
        at_ms: u64,
        origin: NodeId,
        op: &EmailOp,
    ) -> Result<Outcome, Rejection> {
        match op {
            EmailOp::UpsertMailbox(spec) => self.upsert_mailbox(spec),
            EmailOp::RemoveMailbox { mailbox_id } => self.remove_mailbox(mailbox_id),
            EmailOp::AcquireLease(request) => self.acquire_lease(at_ms, origin, request),
            EmailOp::ReleaseLease { name, token } => {
                self.release_lease(at_ms, origin, name, *token)
            }
            EmailOp::Ingest(ingest) => self.ingest(at_ms, origin, ingest),
            EmailOp::Reply(reply) => self.queue_reply(at_ms, reply),
            EmailOp::RecordDelivery(record) => self.record_delivery(at_ms, origin, record),
        }
    }

    fn upsert_mailbox(&mut self, spec: &MailboxSpec) -> Result<Outcome, Rejection> {
        let queue = self
            .queues
            .get(&spec.queue_id)
            .ok_or_else(|| Rejection::UnknownQueue {
                queue_id: spec.queue_id.clone(),
            })?;
        if queue.spec.channel != Channel::Email {
            return Err(Rejection::invalid(
                "queue_id",
                format!("{} is not an email queue", spec.queue_id),
            ));
        }
        let mailboxes = &mut self.email.mailboxes;
        if !mailboxes.contains_key(&spec.id) && mailboxes.len() >= limits::MAILBOXES_MAX {
            return Err(Rejection::LimitReached {
                what: "mailboxes".to_owned(),
                limit: limits::MAILBOXES_MAX as u64,
            });
        }
        match mailboxes.get_mut(&spec.id) {
            Some(mailbox) => {
                // A different server or folder is a different sequence of UIDs.
                if mailbox.spec.imap.host != spec.imap.host
                    || mailbox.spec.imap.port != spec.imap.port
                    || mailbox.spec.imap.username != spec.imap.username
                    || mailbox.spec.folder != spec.folder
                {
                    mailbox.cursor = None;
                }
                mailbox.spec = spec.clone();
            }
            None => {
                mailboxes.insert(
                    spec.id.clone(),
                    Mailbox {
                        spec: spec.clone(),
                        cursor: None,
                    },
                );
            }
        }
        self.seeded.insert(format!("mailbox:{}", spec.id));
        Ok(Outcome::Done)
    }

    fn remove_mailbox(&mut self, mailbox_id: &str) -> Result<Outcome, Rejection> {
        if self.email.mailboxes.remove(mailbox_id).is_none() {
            return Err(Rejection::UnknownEntry {
                kind: "mailbox".to_owned(),
                id: mailbox_id.to_owned(),
            });
        }
        for name in [
            crate::command::email::fetch_lease(mailbox_id),
            crate::command::email::send_lease(mailbox_id),
        ] {
            self.email.leases.remove(&name);
        }
        Ok(Outcome::Done)
    }

    /// Whether a mailbox feeds `queue_id`.
    pub(super) fn queue_feeds_mailbox(&self, queue_id: &str) -> Option<&MailboxId> {
        self.email
            .mailboxes
            .values()
            .find(|m| m.spec.queue_id == queue_id)
            .map(|m| &m.spec.id)
    }

    /// The case an inbound mail threads to, by the rules of the module docs.
    fn thread(&self, ingest: &IngestEmail) -> Option<CaseId> {
        let live = |id: &CaseId| self.email.cases.contains_key(id).then(|| id.clone());
        if let Some(case) = ingest.hints.our_message_case.as_ref().and_then(live) {
            return Some(case);
        }
        let email = &ingest.email;
        // The newest reference first: In-Reply-To, then References from the end.
        let by_header = email
            .in_reply_to
            .iter()
            .chain(email.references.iter().rev())
            .find_map(|id| self.email.message_ids.get(id).and_then(live));
        by_header.or_else(|| ingest.hints.subject_case.as_ref().and_then(live))
    }

    fn ingest(
        &mut self,
        at_ms: u64,
        origin: NodeId,
        ingest: &IngestEmail,
    ) -> Result<Outcome, Rejection> {
        let fetch = crate::command::email::fetch_lease(&ingest.mailbox_id);
        if ingest.fence.name != fetch {
            return Err(Rejection::invalid("fence", format!("must name {fetch}")));
        }
        self.check_fence(at_ms, origin, &ingest.fence)?;
        let mailbox = self
            .email
            .mailboxes
            .get(&ingest.mailbox_id)
            .ok_or_else(|| Rejection::UnknownEntry {
                kind: "mailbox".to_owned(),
                id: ingest.mailbox_id.clone(),
            })?;
        let queue_id = mailbox.spec.queue_id.clone();
        let duplicate = Outcome::EmailIngested {
            case_id: None,
            activity_id: None,
            duplicate: true,
        };
        if let Some(cursor) = mailbox.cursor {
            if cursor.uid_validity == ingest.uid_validity && ingest.uid <= cursor.last_uid {
                return Ok(duplicate);
            }
        }
        let thread = self.thread(ingest);
        let email = &ingest.email;
        // A case in memory holding it, else the retired one the proposer found in the archive.
        let known = self
            .email
            .message_ids
            .get(&email.message_id)
            .cloned()
            .or_else(|| ingest.known_case.clone());
        let verified = if known.is_none() {
            verify_contents(ingest)?
        } else {
            BTreeMap::new()
        };
        let new_case = known.is_none()
            && email.kind == MailKind::Normal
            && thread.as_ref().is_none_or(|id| {
                self.email
                    .cases
                    .get(id)
                    .is_none_or(|c| c.messages.len() >= limits::CASE_MESSAGES_MAX)
            });
        if new_case {
            if self.email.cases.contains_key(&ingest.new_case_id) {
                return Err(Rejection::invalid("new_case_id", "already in use"));
            }
            if self.activities.contains_key(&ingest.new_activity_id) {
                return Err(Rejection::invalid("new_activity_id", "already in use"));
            }
        }
        // Every check passed: from here on the command applies.
        if let Some(mailbox) = self.email.mailboxes.get_mut(&ingest.mailbox_id) {
            mailbox.cursor = Some(Cursor {
                uid_validity: ingest.uid_validity,
                last_uid: ingest.uid,
            });
        }
        if let Some(case_id) = known {
            // The same mail again (delivered twice, or re-fetched under a new UIDVALIDITY),
            // its case in memory or retired.
            return Ok(Outcome::EmailIngested {
                case_id: Some(case_id),
                activity_id: None,
                duplicate: true,
            });
        }
        let message = |seq: u64, attachments: Vec<AttachmentMeta>| CaseMessage {
            seq,
            at_ms,
            direction: Direction::Inbound,
            kind: email.kind,
            message_id: email.message_id.clone(),
            from: email.from.clone(),
            subject: email.subject.clone(),
            text: email.text.clone(),
            html: email.html.clone(),
            attachments,
            agent_id: None,
            reply_id: None,
            delivery: None,
        };
        if new_case {
            let attachments = self.store_attachments(ingest, &verified);
            let case_id = ingest.new_case_id.clone();
            let activity_id = ingest.new_activity_id.clone();
            self.email.cases.insert(
                case_id.clone(),
                Arc::new(Case {
                    id: case_id.clone(),
                    mailbox_id: ingest.mailbox_id.clone(),
                    customer: email.from.clone(),
                    customer_name: email.from_name.clone(),
                    subject: email.subject.clone(),
                    created_at_ms: at_ms,
                    activity_id: activity_id.clone(),
                    messages: vec![message(1, attachments)],
                    replies: BTreeMap::new(),
                }),
            );
            self.email
                .message_ids
                .insert(email.message_id.clone(), case_id.clone());
            self.open_email_activity(at_ms, &case_id, &activity_id, &queue_id);
            return Ok(Outcome::EmailIngested {
                case_id: Some(case_id),
                activity_id: Some(activity_id),
                duplicate: false,
            });
        }
        let Some(case_id) = thread else {
            // An auto-reply or bounce about nothing we hold: dropped, never a new case (mail
            // from one of our own addresses is classified an auto-reply by the fetcher).
            return Ok(Outcome::EmailIngested {
                case_id: None,
                activity_id: None,
                duplicate: false,
            });
        };
        if !self.email.cases.contains_key(&case_id) {
            return Ok(duplicate);
        }
        let attachments = self.store_attachments(ingest, &verified);
        let Some(case) = self.email.cases.get_mut(&case_id).map(Arc::make_mut) else {
            return Ok(duplicate);
        };
        let seq = case.messages.len() as u64 + 1;
        case.messages.push(message(seq, attachments));
        let current = case.activity_id.clone();
        self.email
            .message_ids
            .insert(email.message_id.clone(), case_id.clone());
        let live = self
            .activities
            .get(&current)
            .is_some_and(|a| !a.status.is_terminal());
        let mut created = None;
        if live {
            self.tell_holder(at_ms, &current, &case_id, seq);
        } else if email.kind == MailKind::Normal
            && !self.activities.contains_key(&ingest.new_activity_id)
        {
            // The customer wrote again after the work was done: the case is worked again.
            let activity_id = ingest.new_activity_id.clone();
            if let Some(case) = self.email.cases.get_mut(&case_id).map(Arc::make_mut) {
                case.activity_id = activity_id.clone();
            }
            self.open_email_activity(at_ms, &case_id, &activity_id, &queue_id);
            created = Some(activity_id);
        }
        Ok(Outcome::EmailIngested {
            case_id: Some(case_id),
            activity_id: created,
            duplicate: false,
        })
    }

    /// The attachment list of a mail being recorded: each marked stored or not (with why), the
    /// bytes of those newly stored put in the archive, the index counting the message.
    fn store_attachments(
        &mut self,
        ingest: &IngestEmail,
        verified: &BTreeMap<&str, u64>,
    ) -> Vec<AttachmentMeta> {
        let mut list = Vec::with_capacity(ingest.email.attachments.len());
        for meta in &ingest.email.attachments {
            let mut meta = meta.clone();
            let hash = meta.blake3.clone();
            let not_stored = if let Some(stored) = self
                .email
                .attachments
                .get_mut(&hash)
                .filter(|stored| stored.size_bytes == meta.size_bytes)
            {
                // Stored before (this mail's bytes or another's): counted once more.
                if stored.in_memory == 0 {
                    self.archive_outbox.push(ArchiveOp::Expire {
                        key: attachment_key(&hash),
                        expires_at_ms: u64::MAX,
                    });
                }
                stored.in_memory = stored.in_memory.saturating_add(1);
                None
            } else if self.email.attachments.contains_key(&hash) {
                Some("its size is not that of the stored bytes of the same hash".to_owned())
            } else if meta.size_bytes > limits::MAIL_ATTACHMENT_STORED_BYTES_MAX {
                Some(format!(
                    "larger than the {} KiB an attachment may be to be stored",
                    kib(limits::MAIL_ATTACHMENT_STORED_BYTES_MAX)
                ))
            } else if !verified.contains_key(hash.as_str()) {
                Some(format!(
                    "the mail's attachments together are larger than the {} KiB stored per mail",
                    kib(limits::MAIL_ATTACHMENTS_STORED_BYTES_MAX)
                ))
            } else if self.email.attachments.len() >= limits::ATTACHMENTS_STORED_MAX
                || self.email.attachment_bytes.saturating_add(meta.size_bytes)
                    > limits::ATTACHMENT_STORE_BYTES_MAX
            {
                Some(format!(
                    "the attachment store is full ({} MiB or {} attachments)",
                    mib(limits::ATTACHMENT_STORE_BYTES_MAX),
                    limits::ATTACHMENTS_STORED_MAX
                ))
            } else {
                let base64 = ingest
                    .contents
                    .iter()
                    .find(|c| c.blake3 == hash)
                    .map(|c| c.base64.clone())
                    .unwrap_or_default();
                match serde_json::to_string(&AttachmentRecord { base64 }) {
                    Ok(value) => {
                        self.archive_outbox.push(ArchiveOp::Put {
                            key: attachment_key(&hash),
                            value,
                            expires_at_ms: u64::MAX,
                        });
                        self.email.attachments.insert(
                            hash.clone(),
                            StoredAttachment {
                                size_bytes: meta.size_bytes,
                                in_memory: 1,
                                expires_at_ms: 0,
                            },
                        );
                        self.email.attachment_bytes =
                            self.email.attachment_bytes.saturating_add(meta.size_bytes);
                        None
                    }
                    // Encoding a string cannot fail; if it did, the same on every replica.
                    Err(_) => Some("its bytes could not be encoded".to_owned()),
                }
            };
            meta.stored = not_stored.is_none();
            meta.not_stored = not_stored;
            list.push(meta);
        }
        list
    }

    /// When a case is retired (its current activity `activity_id` goes to the archive with it,
    /// expiring at `expires_at_ms`): its Message-IDs are archived to it, so the same mail is
    /// not taken in again while the case is in the archive, and its stored attachments are
    /// counted out of memory; one no message in memory lists any more expires with the latest
    /// case that listed it.
    pub(super) fn archive_case(&mut self, activity_id: &str, case: &Case, expires_at_ms: u64) {
        let record = ArchivedMessageId {
            case_id: case.id.clone(),
            activity_id: activity_id.to_owned(),
        };
        if let Ok(value) = serde_json::to_string(&record) {
            for message in &case.messages {
                self.archive_outbox.push(ArchiveOp::Put {
                    key: message_id_key(&message.message_id),
                    value: value.clone(),
                    expires_at_ms,
                });
            }
        }
        let mut released: Vec<String> = Vec::new();
        for meta in case.messages.iter().flat_map(|m| &m.attachments) {
            if !meta.stored {
                continue;
            }
            if let Some(stored) = self.email.attachments.get_mut(&meta.blake3) {
                stored.in_memory = stored.in_memory.saturating_sub(1);
                stored.expires_at_ms = stored.expires_at_ms.max(expires_at_ms);
                if stored.in_memory == 0 && !released.contains(&meta.blake3) {
                    released.push(meta.blake3.clone());
                }
            }
        }
        for hash in released {
            if let Some(stored) = self.email.attachments.get(&hash) {
                self.archive_outbox.push(ArchiveOp::Expire {
                    key: attachment_key(&hash),
                    expires_at_ms: stored.expires_at_ms,
                });
            }
        }
    }

    /// With a purge of the archive at `at_ms`: forgets the attachments whose records it
    /// deleted.
    pub(super) fn purge_attachments(&mut self, at_ms: u64) {
        let mut freed: u64 = 0;
        self.email.attachments.retain(|_, stored| {
            let expired = stored.in_memory == 0 && stored.expires_at_ms <= at_ms;
            if expired {
                freed = freed.saturating_add(stored.size_bytes);
            }
            !expired
        });
        self.email.attachment_bytes = self.email.attachment_bytes.saturating_sub(freed);
    }

    /// Creates a case's email activity in `queue_id` and routes.
    fn open_email_activity(
        &mut self,
        at_ms: u64,
        case_id: &str,
        activity_id: &str,
        queue_id: &str,
    ) {
        let Some(case) = self.email.cases.get(case_id) else {
            return;
        };
        let detail = ActivityDetail::Email {
            case_id: case_id.to_owned(),
            mailbox_id: case.mailbox_id.clone(),
            subject: case.subject.clone(),
            from: case.customer.clone(),
        };
        self.activities.insert(
            activity_id.to_owned(),
            Arc::new(Activity {
                id: activity_id.to_owned(),
                channel: Channel::Email,
                queue_id: queue_id.to_owned(),
                status: ActivityStatus::Queued,
                created_at_ms: at_ms,
                enqueued_at_ms: at_ms,
                assigned_at_ms: None,
                history: vec![Transition {
                    at_ms,
                    status: ActivityStatus::Queued,
                    queue_id: queue_id.to_owned(),
                    reason: "created".to_owned(),
                }],
                detail,
                request_key: None,
                island_conflicts: Vec::new(),
            }),
        );
        self.waiting.insert((at_ms, activity_id.to_owned()));
        self.route(at_ms);
    }

    /// Tells the agent holding `activity_id` that case message `seq` arrived or changed.
    fn tell_holder(&mut self, at_ms: u64, activity_id: &str, case_id: &str, seq: u64) {
        let Some(holder) = self
            .activities
            .get(activity_id)
            .and_then(|a| a.status.holder().cloned())
        else {
            return;
        };
        if let Some(agent) = self.agents.get_mut(&holder) {
            agent.push_feed(
                &mut self.touched,
                at_ms,
                AgentEventBody::CaseUpdated {
                    activity_id: activity_id.to_owned(),
                    case_id: case_id.to_owned(),
                    message_seq: seq,
                },
            );
        }
    }

    fn queue_reply(&mut self, at_ms: u64, reply: &QueueReply) -> Result<Outcome, Rejection> {
        self.check_session(&reply.session)?;
        let activity =
            self.activities
                .get(&reply.activity_id)
                .ok_or_else(|| Rejection::UnknownActivity {
                    activity_id: reply.activity_id.clone(),
                })?;
        let ActivityDetail::Email { case_id, .. } = &activity.detail else {
            return Err(Rejection::conflict(format!(
                "activity {} is not an email",
                reply.activity_id
            )));
        };
        let case_id = case_id.clone();
        let case = self
            .email
            .cases
            .get(&case_id)
            .ok_or_else(|| Rejection::conflict(format!("case {case_id} is no longer open")))?;
        if let Some(existing) = case.replies.get(&reply.client_id) {
            let same = case
                .messages
                .iter()
                .find(|m| m.reply_id.as_ref() == Some(existing))
                .is_some_and(|m| m.text == reply.text);
            if !same {
                return Err(Rejection::IdempotencyConflict {
                    what: "client_id".to_owned(),
                });
            }
            return Ok(Outcome::ReplyQueued {
                reply_id: existing.clone(),
                replayed: true,
            });
        }
        let me = &reply.session.agent_id;
        if activity.status
            != (ActivityStatus::Assigned {
                agent_id: me.clone(),
            })
        {
            return Err(Rejection::conflict(format!(
                "activity {} is not assigned to agent {me}",
                reply.activity_id
            )));
        }
        if self.email.outbox.len() >= limits::OUTBOX_PENDING_MAX {
            return Err(Rejection::LimitReached {
                what: "replies waiting to be sent".to_owned(),
                limit: limits::OUTBOX_PENDING_MAX as u64,
            });
        }
        if case.messages.len() >= limits::CASE_MESSAGES_MAX {
            return Err(Rejection::LimitReached {
                what: "messages in a case".to_owned(),
                limit: limits::CASE_MESSAGES_MAX as u64,
            });
        }
        if self.email.outbox.contains_key(&reply.reply_id)
            || self.email.message_ids.contains_key(&reply.message_id)
        {
            return Err(Rejection::invalid("reply_id", "already in use"));
        }
        let mailbox = self.email.mailboxes.get(&case.mailbox_id).ok_or_else(|| {
            Rejection::conflict(format!(
                "mailbox {} was removed; replies cannot be sent",
                case.mailbox_id
            ))
        })?;
        let from = mailbox.spec.address.clone();
        let base = case.subject.trim();
        let mut subject = if base.len() >= 3 && base[..3].eq_ignore_ascii_case("re:") {
            base.to_owned()
        } else {
            format!("Re: {base}")
        };
        if !subject.contains(&reply.subject_tag) {
            subject = format!("{subject} {}", reply.subject_tag);
        }
        let in_reply_to = case
            .messages
            .iter()
            .rev()
            .find(|m| m.direction == Direction::Inbound && m.kind == MailKind::Normal)
            .map(|m| m.message_id.clone());
        let mut references: Vec<String> = case
            .messages
            .iter()
            .rev()
            .filter(|m| m.kind == MailKind::Normal)
            .take(limits::MAIL_THREAD_IDS_MAX)
            .map(|m| m.message_id.clone())
            .collect();
        references.reverse();
        let seq = case.messages.len() as u64 + 1;
        let entry = OutboxEntry {
            reply_id: reply.reply_id.clone(),
            case_id: case_id.clone(),
            mailbox_id: case.mailbox_id.clone(),
            message_seq: seq,
            to: case.customer.clone(),
            subject: subject.clone(),
            text: reply.text.clone(),
            message_id: reply.message_id.clone(),
            in_reply_to,
            references,
            delivery: Delivery::Queued,
            queued_at_ms: at_ms,
        };
        if let Some(case) = self.email.cases.get_mut(&case_id).map(Arc::make_mut) {
            case.messages.push(CaseMessage {
                seq,
                at_ms,
                direction: Direction::Outbound,
                kind: MailKind::Normal,
                message_id: reply.message_id.clone(),
                from,
                subject,
                text: reply.text.clone(),
                html: String::new(),
                attachments: Vec::new(),
                agent_id: Some(me.clone()),
                reply_id: Some(reply.reply_id.clone()),
                delivery: Some(Delivery::Queued),
            });
            case.replies
                .insert(reply.client_id.clone(), reply.reply_id.clone());
        }
        self.email
            .message_ids
            .insert(reply.message_id.clone(), case_id.clone());
        self.email.outbox.insert(reply.reply_id.clone(), entry);
        let activity_id = reply.activity_id.clone();
        self.tell_holder(at_ms, &activity_id, &case_id, seq);
        Ok(Outcome::ReplyQueued {
            reply_id: reply.reply_id.clone(),
            replayed: false,
        })
    }

    fn record_delivery(
        &mut self,
        at_ms: u64,
        origin: NodeId,
        record: &RecordDelivery,
    ) -> Result<Outcome, Rejection> {
        let Some(entry) = self.email.outbox.get(&record.reply_id) else {
            // Recorded as sent or failed before: recorded once.
            return Ok(Outcome::Done);
        };
        let send = crate::command::email::send_lease(&entry.mailbox_id);
        if record.fence.name != send {
            return Err(Rejection::invalid("fence", format!("must name {send}")));
        }
        self.check_fence(at_ms, origin, &record.fence)?;
        let attempts = match &entry.delivery {
            Delivery::Retrying { attempts, .. } => *attempts,
            _ => 0,
        };
        let delivery = match &record.result {
            DeliveryResult::Sent => Delivery::Sent { at_ms },
            DeliveryResult::Failed { reason } => Delivery::Failed {
                reason: reason.clone(),
                at_ms,
            },
            DeliveryResult::Retry {
                reason,
                retry_at_ms,
            } => Delivery::Retrying {
                attempts: attempts.saturating_add(1),
                reason: reason.clone(),
                retry_at_ms: *retry_at_ms,
            },
        };
        let (case_id, seq) = (entry.case_id.clone(), entry.message_seq);
        if delivery.is_final() {
            self.email.outbox.remove(&record.reply_id);
        } else if let Some(entry) = self.email.outbox.get_mut(&record.reply_id) {
            entry.delivery = delivery.clone();
        }
        let mut activity = None;
        if let Some(case) = self.email.cases.get_mut(&case_id).map(Arc::make_mut) {
            if let Some(message) = usize::try_from(seq.saturating_sub(1))
                .ok()
                .and_then(|i| case.messages.get_mut(i))
            {
                message.delivery = Some(delivery);
            }
            activity = Some(case.activity_id.clone());
        }
        if let Some(activity_id) = activity {
            self.tell_holder(at_ms, &activity_id, &case_id, seq);
        }
        Ok(Outcome::Done)
    }

    /// When an email activity is retired: whether its case may leave memory with it (no reply
    /// of it waits in the outbox); the case is taken out if so. An activity that is not the
    /// case's current one takes nothing with it.
    pub(super) fn retire_case(&mut self, activity: &Activity) -> Result<Option<Case>, ()> {
        let ActivityDetail::Email { case_id, .. } = &activity.detail else {
            return Ok(None);
        };
        let Some(case) = self.email.cases.get(case_id) else {
            return Ok(None);
        };
        if case.activity_id != activity.id {
            return Ok(None);
        }
        if self.email.outbox.values().any(|e| e.case_id == *case_id) {
            return Err(());
        }
        let Some(case) = self.email.cases.remove(case_id) else {
            return Ok(None);
        };
        for message in &case.messages {
            if self.email.message_ids.get(&message.message_id) == Some(case_id) {
                self.email.message_ids.remove(&message.message_id);
            }
        }
        Ok(Some(Arc::unwrap_or_clone(case)))
    }

    /// Re-arms the retirement of an activity whose case still has replies in the outbox.
    pub(super) fn defer_retire(&mut self, at_ms: u64, activity_id: &str) {
        let due = at_ms.saturating_add(self.retention.hot_ms);
        self.timers
            .insert((due, Timer::Retire(activity_id.to_owned())));
    }

    /// The email channel's invariants (part of [`State::validate`]).
    pub(super) fn validate_email(&self) -> Result<(), InvariantViolation> {
        let fail = |what: String| Err(InvariantViolation(what));
        for (id, mailbox) in &self.email.mailboxes {
            if *id != mailbox.spec.id {
                return fail(format!("mailbox {id} stored under another id"));
            }
            let email_queue = self
                .queues
                .get(&mailbox.spec.queue_id)
                .is_some_and(|q| q.spec.channel == Channel::Email);
            if !email_queue {
                return fail(format!("mailbox {id} feeds no email queue"));
            }
        }
        for (name, lease) in &self.email.leases {
            if lease.token == 0 {
                return fail(format!("lease {name} has token 0"));
            }
        }
        for (id, case) in &self.email.cases {
            if *id != case.id {
                return fail(format!("case {id} stored under another id"));
            }
            let current = self.activities.get(&case.activity_id).is_some_and(
                |a| matches!(&a.detail, ActivityDetail::Email { case_id, .. } if case_id == id),
            );
            if !current {
                return fail(format!("case {id}: its activity is missing or not its own"));
            }
            for (index, message) in case.messages.iter().enumerate() {
                if message.seq != index as u64 + 1 {
                    return fail(format!(
                        "case {id}: message at {index} has seq {}",
                        message.seq
                    ));
                }
                if self.email.message_ids.get(&message.message_id) != Some(id) {
                    return fail(format!("case {id}: a message id is not indexed to it"));
                }
            }
        }
        for (message_id, case_id) in &self.email.message_ids {
            let held = self
                .email
                .cases
                .get(case_id)
                .is_some_and(|c| c.messages.iter().any(|m| m.message_id == *message_id));
            if !held {
                return fail(format!(
                    "message id indexed to case {case_id}, which lacks it"
                ));
            }
        }
        for (id, entry) in &self.email.outbox {
            if entry.delivery.is_final() {
                return fail(format!("reply {id} is final but still in the outbox"));
            }
            let recorded = self.email.cases.get(&entry.case_id).is_some_and(|c| {
                c.messages
                    .get(usize::try_from(entry.message_seq.saturating_sub(1)).unwrap_or(usize::MAX))
                    .is_some_and(|m| {
                        m.reply_id.as_ref() == Some(id)
                            && m.delivery.as_ref() == Some(&entry.delivery)
                    })
            });
            if !recorded {
                return fail(format!(
                    "reply {id} is not recorded in its case as it stands"
                ));
            }
        }
        for (id, activity) in &self.activities {
            if let ActivityDetail::Email { case_id, .. } = &activity.detail {
                if !activity.status.is_terminal() && !self.email.cases.contains_key(case_id) {
                    return fail(format!("live email activity {id} has no case"));
                }
            }
        }
        let mut listed: BTreeMap<&str, u32> = BTreeMap::new();
        for meta in self
            .email
            .cases
            .values()
            .flat_map(|c| &c.messages)
            .flat_map(|m| &m.attachments)
            .filter(|a| a.stored)
        {
            *listed.entry(meta.blake3.as_str()).or_default() += 1;
        }
        let mut bytes: u64 = 0;
        for (hash, stored) in &self.email.attachments {
            bytes = bytes.saturating_add(stored.size_bytes);
            let in_memory = listed.remove(hash.as_str()).unwrap_or(0);
            if in_memory != stored.in_memory {
                return fail(format!(
                    "attachment {hash} is counted in {} messages in memory, listed by {in_memory}",
                    stored.in_memory
                ));
            }
            if in_memory == 0 && stored.expires_at_ms == 0 {
                return fail(format!(
                    "attachment {hash} is listed nowhere and has no expiry"
                ));
            }
        }
        if let Some(hash) = listed.keys().next() {
            return fail(format!(
                "attachment {hash} is listed as stored but not indexed"
            ));
        }
        if bytes != self.email.attachment_bytes {
            return fail(format!(
                "stored attachments sum to {bytes} bytes, counted {}",
                self.email.attachment_bytes
            ));
        }
        Ok(())
    }
}
