//! The sender of one mailbox: while this node holds the mailbox's send lease, it sends every
//! reply of the outbox that is due through the mailbox's SMTP submission server, and records
//! each attempt in the cluster (`EmailOp::RecordDelivery`, fenced by the lease).
//!
//! - At least once: a reply leaves the outbox only once the SMTP server accepted it and that
//!   was committed. A sender that dies between the two leaves it in the outbox and the next
//!   holder sends it again; the record is applied once either way.
//! - A temporary failure (connection refused, timeout, 4xx) is tried again after a pause that
//!   doubles from 1 s up to `email.retry_backoff_max`; a permanent one (5xx, an address the
//!   message cannot carry) is recorded as failed and shown on the case.
//! - Reasons are recorded without addresses (see [`super::without_addresses`]).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use parley_raft::command::email::{
    send_lease, DeliveryResult, EmailOp, MailboxSpec, RecordDelivery, TlsMode,
};
use parley_raft::command::Op;
use parley_raft::state::email::{Delivery, OutboxEntry};
use parley_raft::{Outcome, Rejection};
use tokio_util::sync::CancellationToken;

use super::lease::{self, Held};
use super::status::Job;
use super::{secret, without_addresses, Context};

/// Most replies sent per look at the outbox.
const BATCH_REPLIES_MAX: usize = 20;
/// How often the outbox is looked at when nothing is due.
const IDLE_LOOK: Duration = Duration::from_millis(500);

/// Runs the sender of `spec` until `stop`.
pub async fn run(ctx: Context, spec: MailboxSpec, stop: CancellationToken) {
    let mut lease_rx = lease::keep(
        ctx.replica.clone(),
        ctx.clock.clone(),
        send_lease(&spec.id),
        ctx.config.lease,
        stop.child_token(),
    );
    let mut applied = ctx.replica.subscribe_applied();
    loop {
        let held = lease_rx.borrow().clone();
        let sent_some = match held {
            Some(held) => send_due(&ctx, &spec, &held, &lease_rx).await,
            None => {
                // A failure seen while this node held the lease is no longer its to report.
                ctx.status.clear(&spec.id, Job::Send);
                false
            }
        };
        if sent_some {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(IDLE_LOOK) => {}
            _ = applied.changed() => {}
            _ = lease_rx.changed() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Sends what is due; whether anything was.
async fn send_due(
    ctx: &Context,
    spec: &MailboxSpec,
    held: &Held,
    lease_rx: &tokio::sync::watch::Receiver<Option<Held>>,
) -> bool {
    let now = ctx.clock.now_ms();
    let due: Vec<OutboxEntry> = ctx.replica.read(|state, _| {
        state
            .email
            .outbox
            .values()
            .filter(|e| e.mailbox_id == spec.id && e.due_at_ms() <= now)
            .take(BATCH_REPLIES_MAX)
            .cloned()
            .collect()
    });
    if due.is_empty() {
        return false;
    }
    let transport = match transport(ctx, spec) {
        Ok(transport) => transport,
        Err(reason) => {
            tracing::warn!(mailbox = %spec.id, %reason, "cannot send replies");
            ctx.status
                .failed(&spec.id, Job::Send, ctx.clock.now_ms(), &reason);
            return false;
        }
    };
    for entry in due {
        let current = lease_rx.borrow().clone();
        let still = current.is_some_and(|h| h.token == held.token && h.usable(ctx.clock.now_ms()));
        if !still {
            return false;
        }
        let result = match message(spec, &entry) {
            Err(reason) => DeliveryResult::Failed { reason },
            Ok(message) => {
                let sent = tokio::time::timeout(
                    ctx.config.io_timeout + Duration::from_secs(1),
                    transport.send(message),
                )
                .await;
                match sent {
                    Ok(Ok(_)) => DeliveryResult::Sent,
                    Ok(Err(error)) if error.is_permanent() => DeliveryResult::Failed {
                        reason: reason_of(&error.to_string()),
                    },
                    Ok(Err(error)) => retry(ctx, &entry, reason_of(&error.to_string())),
                    Err(_) => retry(ctx, &entry, "the SMTP server did not answer in time".into()),
                }
            }
        };
        let outcome = match &result {
            DeliveryResult::Sent => "sent",
            DeliveryResult::Retry { .. } => "retrying",
            DeliveryResult::Failed { .. } => "failed",
        };
        // A temporary failure is the server's or the connection's; a permanent one is this
        // reply's (shown on its case).
        match &result {
            DeliveryResult::Sent => ctx.status.clear(&spec.id, Job::Send),
            DeliveryResult::Retry { reason, .. } => {
                ctx.status
                    .failed(&spec.id, Job::Send, ctx.clock.now_ms(), reason)
            }
            DeliveryResult::Failed { .. } => {}
        }
        tracing::info!(mailbox = %spec.id, reply = %entry.reply_id, outcome, "reply delivery");
        let op = Op::Email(EmailOp::RecordDelivery(RecordDelivery {
            fence: held.fence(),
            reply_id: entry.reply_id.clone(),
            result,
        }));
        match ctx.replica.propose(op).await {
            Ok(Outcome::Done) => {}
            Ok(Outcome::Rejected(Rejection::LeaseLost { .. })) => return false,
            Ok(other) => {
                tracing::warn!(mailbox = %spec.id, ?other, "recording a delivery was refused");
                return false;
            }
            // Not recorded: the reply stays in the outbox and is sent again (at least once).
            Err(error) => {
                tracing::warn!(mailbox = %spec.id, %error, "recording a delivery; will retry");
                return false;
            }
        }
    }
    true
}

fn retry(ctx: &Context, entry: &OutboxEntry, reason: String) -> DeliveryResult {
    let attempts = match &entry.delivery {
        Delivery::Retrying { attempts, .. } => *attempts,
        _ => 0,
    };
    let pause = Duration::from_secs(1)
        .saturating_mul(1u32 << attempts.min(20))
        .min(ctx.config.retry_backoff_max);
    DeliveryResult::Retry {
        reason,
        retry_at_ms: ctx
            .clock
            .now_ms()
            .saturating_add(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// A failure reason as recorded: without addresses, each part once (lettre nests errors of
/// one kind: `Connection error: Connection error: invalid peer certificate: UnknownIssuer`),
/// bounded.
fn reason_of(error: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in error.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    let mut reason = without_addresses(&parts.join(": "));
    if reason.trim().is_empty() {
        reason = "the SMTP server refused the reply".to_owned();
    }
    let mut end = reason
        .len()
        .min(parley_raft::limits::DELIVERY_REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason
}

fn transport(
    ctx: &Context,
    spec: &MailboxSpec,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let server = &spec.smtp;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host.clone())
        .port(server.port)
        .timeout(Some(ctx.config.io_timeout));
    // The public roots (lettre's default, webpki-roots) and those of `email.ca_file`.
    let parameters = || {
        ctx.config
            .extra_roots
            .iter()
            .try_fold(
                TlsParameters::builder(server.host.clone()),
                |builder, root| {
                    Ok(builder.add_root_certificate(Certificate::from_der(root.to_vec())?))
                },
            )
            .and_then(|builder| builder.build_rustls())
            .map_err(|e: lettre::transport::smtp::Error| format!("TLS parameters: {e}"))
    };
    builder = match server.tls {
        TlsMode::Plain => builder.tls(Tls::None),
        TlsMode::Starttls => builder.tls(Tls::Required(parameters()?)),
        TlsMode::Tls => builder.tls(Tls::Wrapper(parameters()?)),
    };
    if !server.username.is_empty() {
        let password = secret::resolve(server.password.as_ref()).map_err(|e| e.to_string())?;
        builder = builder.credentials(Credentials::new(server.username.clone(), password));
    }
    Ok(builder.build())
}

/// The reply as a mail; `Err` (a permanent failure) when an address cannot be used.
fn message(spec: &MailboxSpec, entry: &OutboxEntry) -> Result<Message, String> {
    let from = Mailbox::new(
        Some(spec.display_name.clone()),
        spec.address
            .parse()
            .map_err(|_| "the mailbox address is not usable".to_owned())?,
    );
    let to: Mailbox = entry
        .to
        .parse()
        .map_err(|_| "the customer's address is not usable".to_owned())?;
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(entry.subject.clone())
        .message_id(Some(format!("<{}>", entry.message_id)))
        .header(ContentType::TEXT_PLAIN);
    if let Some(in_reply_to) = &entry.in_reply_to {
        builder = builder.in_reply_to(format!("<{in_reply_to}>"));
    }
    if !entry.references.is_empty() {
        let references: Vec<String> = entry.references.iter().map(|r| format!("<{r}>")).collect();
        builder = builder.references(references.join(" "));
    }
    builder
        .body(entry.text.clone())
        .map_err(|e| format!("the reply could not be built: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_names_each_part_once_without_addresses_within_its_bound() {
        assert_eq!(
            reason_of(
                "Connection error: Connection error: invalid peer certificate: UnknownIssuer"
            ),
            "Connection error: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(
            reason_of("permanent error (550): 5.1.1 <a@b.example>: Recipient address rejected"),
            "permanent error (550): 5.1.1 <address> Recipient address rejected"
        );
        assert_eq!(reason_of("  "), "the SMTP server refused the reply");
        let long = reason_of(&"é".repeat(parley_raft::limits::DELIVERY_REASON_BYTES_MAX));
        assert!(long.len() <= parley_raft::limits::DELIVERY_REASON_BYTES_MAX);
    }
}
