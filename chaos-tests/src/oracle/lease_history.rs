//! The applied history of one lease, as the lease checks read it: every command of the log
//! that takes, renews or releases the lease, or that a holder proposed as holder (fenced by
//! it), in log order, with what `apply` answered.
//!
//! A simulated node builds it by reading its own Raft log from the first entry up to its
//! applied index and replaying every command through a fresh `State` (the same `apply` the
//! node ran; the replay's digest must equal the node's, so the history is the one applied):
//! [`lease_history`] picks the lease's commands out of that replay. The checks
//! ([`super::lease_tokens`], [`super::fencing`], [`super::lease_liveness`]) are plain
//! functions of it, so the planted-bug tests feed them histories built by hand.

use parley_raft::command::email::EmailOp;
use parley_raft::{Command, NodeId, Op, Outcome, Rejection};
use serde::{Deserialize, Serialize};

/// One command of the lease's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEntry {
    /// Its log index.
    pub index: u64,
    /// Its stamp: the proposing node's clock (skewed as that node's clock was).
    pub at_ms: u64,
    /// The proposing node.
    pub origin: NodeId,
    /// What it was and what `apply` answered.
    pub op: LeaseOp,
}

/// What a command of the history did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOp {
    /// `AcquireLease`: a take (`renew: None`) or a renewal with a token; `apply` granted it or
    /// not, and named the lease as it then stood.
    Acquire {
        /// The duration asked for.
        duration_ms: u64,
        /// The token renewed, if a renewal.
        renew: Option<u64>,
        /// Whether it was granted.
        granted: bool,
        /// The holder after it.
        holder: NodeId,
        /// The token after it.
        token: u64,
        /// The expiry after it.
        expires_at_ms: u64,
    },
    /// `ReleaseLease` with this token.
    Release {
        /// The token given up.
        token: u64,
    },
    /// A command fenced by the lease (a mail taken in, a delivery recorded).
    Fenced {
        /// The command's own id (the new case id of a mail taken in, the reply of a delivery).
        id: String,
        /// The token it carries.
        token: u64,
        /// What `apply` did with it.
        result: FencedResult,
    },
}

/// What `apply` did with a fenced command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FencedResult {
    /// Accepted: it took effect as the holder's.
    Applied,
    /// Refused `lease_lost`: not the current holder under that token at its time.
    LeaseLost,
    /// Refused for another reason (named).
    Refused(String),
}

/// The commands of lease `name` among `applied` (log index, command, outcome), in order.
pub fn lease_history<'a>(
    name: &str,
    applied: impl IntoIterator<Item = (u64, &'a Command, &'a Outcome)>,
) -> Vec<LeaseEntry> {
    applied
        .into_iter()
        .filter_map(|(index, command, outcome)| {
            let Op::Email(op) = &command.op else {
                return None;
            };
            let op = match op {
                EmailOp::AcquireLease(request) if request.name == name => {
                    let (granted, holder, token, expires_at_ms) = match outcome {
                        Outcome::Lease {
                            granted,
                            holder,
                            token,
                            expires_at_ms,
                        } => (*granted, *holder, *token, *expires_at_ms),
                        // Refused before the lease was looked at (bounds, version): nothing
                        // changed; recorded as not granted, naming no holder.
                        _ => (false, 0, 0, 0),
                    };
                    LeaseOp::Acquire {
                        duration_ms: request.duration_ms,
                        renew: request.renew,
                        granted,
                        holder,
                        token,
                        expires_at_ms,
                    }
                }
                EmailOp::ReleaseLease {
                    name: released,
                    token,
                } if released == name => LeaseOp::Release { token: *token },
                EmailOp::Ingest(ingest) if ingest.fence.name == name => LeaseOp::Fenced {
                    id: ingest.new_case_id.clone(),
                    token: ingest.fence.token,
                    result: fenced_result(outcome),
                },
                EmailOp::RecordDelivery(record) if record.fence.name == name => LeaseOp::Fenced {
                    id: record.reply_id.clone(),
                    token: record.fence.token,
                    result: fenced_result(outcome),
                },
                _ => return None,
            };
            Some(LeaseEntry {
                index,
                at_ms: command.at_ms,
                origin: command.origin,
                op,
            })
        })
        .collect()
}

fn fenced_result(outcome: &Outcome) -> FencedResult {
    match outcome {
        Outcome::Rejected(Rejection::LeaseLost { .. }) => FencedResult::LeaseLost,
        Outcome::Rejected(other) => FencedResult::Refused(other.to_string()),
        _ => FencedResult::Applied,
    }
}

/// What a lease's history shows, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseFigures {
    /// Grants of a new token (the lease taken, or taken again after it lapsed).
    pub takes: u64,
    /// Of them, grants to another node than the previous holder: hand-overs.
    pub hand_overs: u64,
    /// Renewals granted.
    pub renewals: u64,
    /// Takes and renewals refused (held by another, or a stale token).
    pub acquisitions_refused: u64,
    /// Releases.
    pub releases: u64,
    /// Fenced commands `apply` accepted.
    pub fenced_applied: u64,
    /// Fenced commands `apply` refused `lease_lost`.
    pub fenced_lease_lost: u64,
    /// Of them, those stamped while their token was still the current one and unexpired, that
    /// reached the log only after another take: writes of a holder that lost its lease while
    /// they were on their way.
    pub fenced_superseded: u64,
    /// Fenced commands refused for another reason.
    pub fenced_refused_other: u64,
}

/// Counts what `history` shows.
pub fn figures(history: &[LeaseEntry]) -> LeaseFigures {
    let mut figures = LeaseFigures::default();
    // The expiry each token was last granted with.
    let mut expiry_of: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    let mut last: Option<(NodeId, u64)> = None;
    for entry in history {
        match &entry.op {
            LeaseOp::Acquire {
                granted: true,
                holder,
                token,
                expires_at_ms,
                ..
            } => {
                if last.map(|(_, t)| t) == Some(*token) {
                    figures.renewals += 1;
                } else {
                    figures.takes += 1;
                    if last.is_some_and(|(h, _)| h != *holder) {
                        figures.hand_overs += 1;
                    }
                }
                expiry_of.insert(*token, *expires_at_ms);
                last = Some((*holder, *token));
            }
            LeaseOp::Acquire { granted: false, .. } => figures.acquisitions_refused += 1,
            LeaseOp::Release { .. } => figures.releases += 1,
            LeaseOp::Fenced { token, result, .. } => match result {
                FencedResult::Applied => figures.fenced_applied += 1,
                FencedResult::LeaseLost => {
                    figures.fenced_lease_lost += 1;
                    let current = last.map(|(_, t)| t).unwrap_or(0);
                    if current > *token
                        && expiry_of
                            .get(token)
                            .is_some_and(|expiry| entry.at_ms < *expiry)
                    {
                        figures.fenced_superseded += 1;
                    }
                }
                FencedResult::Refused(_) => figures.fenced_refused_other += 1,
            },
        }
    }
    figures
}
