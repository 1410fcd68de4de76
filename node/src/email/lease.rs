//! Holding a lease (see `parley_raft::state::lease`): one task per lease this node wants,
//! which takes it when it is free, renews it every third of its duration while held, and
//! publishes what this node holds on a `watch` channel the worker follows.
//!
//! The worker treats the lease as lost as soon as a renewal is refused, or when renewals
//! could not be committed and the lease's expiry (less a margin) passed on this node's clock.
//! That is a courtesy; safety does not depend on it: every command a worker proposes as holder
//! carries the token, and `apply` refuses it once another node took the lease.

use std::sync::Arc;
use std::time::Duration;

use parley_raft::command::email::{AcquireLease, EmailOp, Fence};
use parley_raft::command::Op;
use parley_raft::proposer::Clock;
use parley_raft::{Outcome, Replica};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long before its expiry a held lease is no longer used, in ms.
const EXPIRY_MARGIN_MS: u64 = 500;
/// How often a node that does not hold a lease asks for it.
const TAKE_RETRY: Duration = Duration::from_millis(1000);

/// A lease this node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The lease.
    pub name: String,
    /// Its token, carried by every command proposed as holder.
    pub token: u64,
    /// When it expires unless renewed, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

impl Held {
    /// The fence commands carry.
    pub fn fence(&self) -> Fence {
        Fence {
            name: self.name.clone(),
            token: self.token,
        }
    }

    /// Whether it may still be used at `now_ms`.
    pub fn usable(&self, now_ms: u64) -> bool {
        now_ms.saturating_add(EXPIRY_MARGIN_MS) < self.expires_at_ms
    }
}

/// Keeps lease `name` for this node until `stop`; the receiver says what is held.
pub fn keep(
    replica: Replica,
    clock: Arc<dyn Clock>,
    name: String,
    duration: Duration,
    stop: CancellationToken,
) -> watch::Receiver<Option<Held>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let renew_every = duration / 3;
        loop {
            let held: Option<Held> = tx.borrow().clone();
            let op = Op::Email(EmailOp::AcquireLease(AcquireLease {
                name: name.clone(),
                duration_ms,
                renew: held.as_ref().map(|h: &Held| h.token),
            }));
            // A proposal waits at most a third of the lease: a renewal that takes longer is
            // of no use.
            let answer = tokio::select! {
                answer = tokio::time::timeout(renew_every, replica.propose(op)) => answer,
                () = stop.cancelled() => break,
            };
            let now = clock.now_ms();
            let next = match answer {
                Ok(Ok(Outcome::Lease {
                    granted: true,
                    token,
                    expires_at_ms,
                    ..
                })) => {
                    if held.as_ref().map(|h| h.token) != Some(token) {
                        tracing::info!(lease = %name, token, "lease taken");
                    }
                    Some(Held {
                        name: name.clone(),
                        token,
                        expires_at_ms,
                    })
                }
                Ok(Ok(Outcome::Lease { holder, .. })) => {
                    if held.is_some() {
                        tracing::warn!(lease = %name, holder, "lease lost to another node");
                    }
                    None
                }
                Ok(Ok(other)) => {
                    tracing::debug!(lease = %name, ?other, "lease not granted");
                    None
                }
                Ok(Err(error)) => {
                    tracing::debug!(lease = %name, %error, "renewing a lease; will retry");
                    held.filter(|h| h.usable(now))
                }
                Err(_) => held.filter(|h| h.usable(now)),
            };
            let holding = next.is_some();
            // Workers are woken only when what is held changes (taken, lost, a new token), not
            // on every renewal; they read the renewed expiry when they use the lease.
            tx.send_if_modified(|current| {
                let changed = current.as_ref().map(|h| h.token) != next.as_ref().map(|h| h.token);
                *current = next;
                changed
            });
            let pause = if holding { renew_every } else { TAKE_RETRY };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => break,
            }
        }
        // Handing over: the next node need not wait for the expiry.
        if let Some(held) = tx.send_replace(None) {
            let release = Op::Email(EmailOp::ReleaseLease {
                name: held.name.clone(),
                token: held.token,
            });
            let _ = tokio::time::timeout(Duration::from_secs(1), replica.propose(release)).await;
        }
    });
    rx
}
