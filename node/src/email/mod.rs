//! The email channel's services on this node: for every mailbox of the replicated directory, a
//! fetcher (IMAP in) and a sender (SMTP out), each running only while this node holds the
//! mailbox's lease of that kind. Every node runs the same supervisor (active-active); the
//! leases make one node at a time do each job, and another take over within about one lease
//! duration when it dies.
//!
//! Layout:
//! - [`ids`]: our Message-IDs and subject tags, with the MAC that makes them unforgeable;
//! - [`parse`]: a fetched mail into what the cluster keeps of it;
//! - [`lease`]: taking, renewing and handing over a lease;
//! - [`fetch`]: the fetcher of one mailbox (IDLE, polling, UID-based, `BODY.PEEK`);
//! - [`starttls`]: IMAP STARTTLS, up to the point where TLS starts;
//! - [`send`]: the sender of one mailbox (lettre over SMTP submission, retries);
//! - [`secret`]: reading a mailbox's password where the directory says it is;
//! - [`status`]: the last failure of each mailbox's fetcher and sender on this node.
//!
//! TLS to mail servers (IMAP and SMTP alike) trusts the public roots (webpki-roots) and the CA
//! certificates of `email.ca_file`, with the *ring* provider.
//!
//! The supervisor ([`start`]) looks at the directory once a second: it seeds the mailboxes of
//! this node's config that were never created (once the cluster runs version 3), starts a
//! fetcher and a sender per mailbox, and stops those of a mailbox removed or changed. An
//! island runs none of it (leases need the quorum).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parley_raft::command::email::{EmailOp, MailboxSpec};
use parley_raft::command::Op;
use parley_raft::proposer::Clock;
use parley_raft::Replica;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::email::EmailConfig;

pub mod fetch;
pub mod ids;
pub mod lease;
pub mod parse;
pub mod secret;
pub mod send;
pub mod starttls;
pub mod status;

/// The cluster version the email channel needs.
pub const EMAIL_CLUSTER_VERSION: u32 = 3;
/// How often the supervisor looks at the directory.
const SUPERVISE_INTERVAL: Duration = Duration::from_secs(1);

/// A failure of a mail session (logged where handled; retried).
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// A password could not be read.
    #[error("mailbox password: {what}")]
    Secret {
        /// What was missing.
        what: String,
    },
    /// The IMAP server failed or refused a step.
    #[error("imap {step}: {problem}")]
    Imap {
        /// Which step.
        step: &'static str,
        /// What went wrong (without addresses).
        problem: String,
    },
    /// A network step took longer than `email.io_timeout`.
    #[error("{step}: no answer within the I/O timeout")]
    Timeout {
        /// Which step.
        step: &'static str,
    },
    /// A command could not be committed.
    #[error("proposing: {problem}")]
    Propose {
        /// Why.
        problem: String,
    },
    /// The cluster refused a command.
    #[error("refused: {what}")]
    Refused {
        /// The outcome.
        what: String,
    },
    /// This node's archive could not be read.
    #[error("reading the archive: {problem}")]
    Archive {
        /// What went wrong.
        problem: String,
    },
}

/// What every email task needs.
#[derive(Clone)]
pub struct Context {
    /// This node's replica.
    pub replica: Replica,
    /// The clock commands are stamped with.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub config: Arc<EmailConfig>,
    /// The last failures, shown in the mailbox view.
    pub status: status::Status,
    /// The one slot for a mail whose command carries attachment bytes, shared by this
    /// node's fetchers: a Raft entry then carries at most one such mail per node.
    pub attachment_slot: Arc<tokio::sync::Semaphore>,
}

/// Starts the supervisor; it ends on `shutdown`, handing its leases over. Failures are noted
/// in `status` (which the web edge shows).
pub fn start(
    replica: Replica,
    clock: Arc<dyn Clock>,
    config: EmailConfig,
    status: status::Status,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let ctx = Context {
        replica,
        clock,
        config: Arc::new(config),
        status,
        attachment_slot: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    tokio::spawn(supervise(ctx, shutdown))
}

struct Workers {
    spec: MailboxSpec,
    stop: CancellationToken,
    tasks: [JoinHandle<()>; 2],
}

async fn supervise(ctx: Context, shutdown: CancellationToken) {
    let mut workers: BTreeMap<String, Workers> = BTreeMap::new();
    let mut seeding = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(SUPERVISE_INTERVAL) => {}
            () = shutdown.cancelled() => break,
        }
        let (version, mailboxes, unseeded) = ctx.replica.read(|state, _| {
            let unseeded: Vec<MailboxSpec> = ctx
                .config
                .mailboxes
                .iter()
                .filter(|m| !state.seeded.contains(&format!("mailbox:{}", m.id)))
                .cloned()
                .collect();
            let mailboxes: BTreeMap<String, MailboxSpec> = state
                .email
                .mailboxes
                .iter()
                .map(|(id, m)| (id.clone(), m.spec.clone()))
                .collect();
            (state.cluster_version.0, mailboxes, unseeded)
        });
        let island = ctx.replica.island().island();
        if version < EMAIL_CLUSTER_VERSION || island {
            continue;
        }
        if !unseeded.is_empty() && !seeding {
            seeding = true;
            let replica = ctx.replica.clone();
            // Once: a mailbox the operator later removed is not created again by a restart.
            tokio::spawn(async move {
                for spec in unseeded {
                    let id = spec.id.clone();
                    match replica
                        .propose(Op::Email(EmailOp::UpsertMailbox(spec)))
                        .await
                    {
                        Ok(parley_raft::Outcome::Done) => {
                            tracing::info!(mailbox = %id, "mailbox seeded from config")
                        }
                        Ok(other) => {
                            tracing::warn!(mailbox = %id, ?other, "mailbox from config refused")
                        }
                        Err(error) => tracing::warn!(mailbox = %id, %error, "seeding a mailbox"),
                    }
                }
            });
        }
        // Stop workers of removed or changed mailboxes.
        let stale: Vec<String> = workers
            .iter()
            .filter(|(id, w)| mailboxes.get(*id) != Some(&w.spec))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(w) = workers.remove(&id) {
                w.stop.cancel();
            }
        }
        for (id, spec) in mailboxes {
            if workers.contains_key(&id) {
                continue;
            }
            let stop = shutdown.child_token();
            // A stopped worker's last failure goes with it (the mailbox was removed or changed).
            let worker = |job: status::Job| {
                let (ctx, spec, stop) = (ctx.clone(), spec.clone(), stop.clone());
                async move {
                    let id = spec.id.clone();
                    match job {
                        status::Job::Fetch => fetch::run(ctx.clone(), spec, stop).await,
                        status::Job::Send => send::run(ctx.clone(), spec, stop).await,
                    }
                    ctx.status.clear(&id, job);
                }
            };
            let tasks = [
                tokio::spawn(worker(status::Job::Fetch)),
                tokio::spawn(worker(status::Job::Send)),
            ];
            workers.insert(id, Workers { spec, stop, tasks });
        }
    }
    // Shutdown: every worker stops and hands its leases over (bounded).
    for w in workers.values() {
        w.stop.cancel();
    }
    let tasks = workers.into_values().flat_map(|w| w.tasks);
    let _ = tokio::time::timeout(Duration::from_secs(3), futures::future::join_all(tasks)).await;
}

/// `text` with every word that looks like an address replaced, for logs and recorded reasons
/// (servers quote the addresses they refuse).
pub fn without_addresses(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains('@') {
                "<address>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The TLS client configuration for IMAP servers: the webpki roots and `extra_roots` (from
/// `email.ca_file`), the ring provider.
fn tls_client_config(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, EmailError> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra_roots {
        // Each was checked when the config was loaded.
        roots.add(root.clone()).map_err(|e| EmailError::Imap {
            step: "tls",
            problem: format!("a certificate of email.ca_file: {e}"),
        })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| EmailError::Imap {
        step: "tls",
        problem: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_never_reach_a_reason() {
        let reason = super::without_addresses("550 5.1.1 <nobody@example.test> User unknown");
        assert_eq!(reason, "550 5.1.1 <address> User unknown");
    }
}
