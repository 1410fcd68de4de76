//! Lease grants: one holder at a time, and the fencing token goes up with each change of hands.
//!
//! Walking a lease's applied history ([`super::lease_history`]) in log order, with the lease as
//! the grants before each command left it (a release by its holder, with its token, before its
//! expiry ends it at the release's time):
//!
//! - a grant goes to the node that asked (the command's origin);
//! - tokens never go back; a grant under the token in force is a renewal by its holder, asked
//!   with that token, before the expiry at the renewal's time; a grant under another token is a
//!   take, under the next token (one more), only of a lease free or expired at the take's time
//!   (otherwise two nodes held it at once);
//! - an acquisition of a lease free or expired at its time is granted (a refusal would leave
//!   the lease without a holder although someone asked).

use std::collections::BTreeSet;

use parley_raft::NodeId;

use super::lease_history::{LeaseEntry, LeaseOp};
use super::Violation;

/// The lease as the grants left it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Granted {
    pub holder: NodeId,
    pub token: u64,
    pub expires_at_ms: u64,
    /// The log index of the take that granted this token.
    pub taken_at_index: u64,
}

impl Granted {
    /// Applies a release: by the holder, with its token, before the expiry, it ends the lease
    /// at the release's time.
    pub(super) fn release(&mut self, entry: &LeaseEntry, token: u64) {
        if entry.origin == self.holder && token == self.token && entry.at_ms < self.expires_at_ms {
            self.expires_at_ms = entry.at_ms;
        }
    }
}

/// Checks the grants of lease `name` in `history`, as the node `node` applied them.
pub fn lease_grants(node: NodeId, name: &str, history: &[LeaseEntry]) -> Vec<Violation> {
    let mut broken = Vec::new();
    let mut report = |entry: &LeaseEntry, what: String| {
        broken.push(Violation(format!(
            "lease {name} on node {node}: the acquisition at index {} by node {} (stamped {}) \
             {what}",
            entry.index, entry.origin, entry.at_ms
        )));
    };
    let mut lease: Option<Granted> = None;
    let mut tokens_taken = BTreeSet::new();
    for entry in history {
        match &entry.op {
            LeaseOp::Release { token } => {
                if let Some(lease) = lease.as_mut() {
                    lease.release(entry, *token);
                }
            }
            LeaseOp::Fenced { .. } => {}
            LeaseOp::Acquire {
                granted: false,
                holder,
                ..
            } => {
                // `holder` 0: refused before the lease was looked at (input bounds, version).
                let free = lease.is_none_or(|l| entry.at_ms >= l.expires_at_ms);
                if *holder != 0 && free {
                    report(
                        entry,
                        format!(
                            "was refused although the lease was free at its time ({})",
                            describe(lease)
                        ),
                    );
                }
            }
            LeaseOp::Acquire {
                granted: true,
                renew,
                holder,
                token,
                expires_at_ms,
                ..
            } => {
                if *holder != entry.origin {
                    report(entry, format!("granted the lease to node {holder}"));
                }
                let renewal = lease.is_some_and(|l| l.token == *token);
                match lease {
                    Some(previous) if *token < previous.token => report(
                        entry,
                        format!(
                            "was granted token {token}, below token {} in force",
                            previous.token
                        ),
                    ),
                    Some(previous) if renewal => {
                        if previous.holder != *holder {
                            report(
                                entry,
                                format!(
                                    "handed the lease from node {} to node {holder} under the \
                                     same token {token}",
                                    previous.holder
                                ),
                            );
                        }
                        if *renew != Some(*token) {
                            report(
                                entry,
                                format!("renewed token {token} without asking with it"),
                            );
                        }
                        if entry.at_ms >= previous.expires_at_ms {
                            report(
                                entry,
                                format!(
                                    "renewed token {token} after it expired at {} (it must be \
                                     taken anew under the next token)",
                                    previous.expires_at_ms
                                ),
                            );
                        }
                    }
                    Some(previous) => {
                        if *token != previous.token + 1 {
                            report(
                                entry,
                                format!(
                                    "took the lease under token {token}, not the next after {}",
                                    previous.token
                                ),
                            );
                        }
                        if entry.at_ms < previous.expires_at_ms {
                            report(
                                entry,
                                format!(
                                    "took the lease under token {token} while node {} held it \
                                     under token {} until {}: two holders at once",
                                    previous.holder, previous.token, previous.expires_at_ms
                                ),
                            );
                        }
                    }
                    None if *token == 0 => report(entry, "took the lease under token 0".into()),
                    None => {}
                }
                if !renewal && !tokens_taken.insert(*token) {
                    report(entry, format!("took token {token} a second time"));
                }
                let taken_at_index = match lease {
                    Some(previous) if renewal => previous.taken_at_index,
                    _ => entry.index,
                };
                lease = Some(Granted {
                    holder: *holder,
                    token: *token,
                    expires_at_ms: *expires_at_ms,
                    taken_at_index,
                });
            }
        }
    }
    broken
}

pub(super) fn describe(lease: Option<Granted>) -> String {
    match lease {
        None => "never taken".to_owned(),
        Some(l) => format!(
            "node {} under token {} until {}",
            l.holder, l.token, l.expires_at_ms
        ),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::oracle::lease_history::FencedResult;

    /// An acquisition at `index`, stamped `at_ms` by `origin`, renewing `renew`, answered
    /// `(granted, holder, token, expires_at_ms)`.
    pub(crate) fn acquire(
        index: u64,
        at_ms: u64,
        origin: NodeId,
        renew: Option<u64>,
        (granted, holder, token, expires_at_ms): (bool, NodeId, u64, u64),
    ) -> LeaseEntry {
        LeaseEntry {
            index,
            at_ms,
            origin,
            op: LeaseOp::Acquire {
                duration_ms: 3_000,
                renew,
                granted,
                holder,
                token,
                expires_at_ms,
            },
        }
    }

    /// Node 1 takes token 1 at 1,000, renews at 2,000; its lease lapses at 5,000; node 2 takes
    /// token 2 at 6,000; node 1's renewal at 6,500 is refused; node 2 releases at 7,000 and
    /// node 3 takes token 3 at 7,100.
    fn healthy() -> Vec<LeaseEntry> {
        vec![
            acquire(1, 1_000, 1, None, (true, 1, 1, 4_000)),
            acquire(2, 1_500, 2, None, (false, 1, 1, 4_000)),
            acquire(3, 2_000, 1, Some(1), (true, 1, 1, 5_000)),
            LeaseEntry {
                index: 4,
                at_ms: 2_100,
                origin: 1,
                op: LeaseOp::Fenced {
                    id: "w1".into(),
                    token: 1,
                    result: FencedResult::Applied,
                },
            },
            acquire(5, 6_000, 2, None, (true, 2, 2, 9_000)),
            acquire(6, 6_500, 1, Some(1), (false, 2, 2, 9_000)),
            LeaseEntry {
                index: 7,
                at_ms: 7_000,
                origin: 2,
                op: LeaseOp::Release { token: 2 },
            },
            acquire(8, 7_100, 3, None, (true, 3, 3, 10_100)),
        ]
    }

    #[test]
    fn healthy_grants_pass() {
        assert_eq!(
            lease_grants(1, "fetch:m", &healthy()),
            Vec::<Violation>::new()
        );
    }

    fn reports(history: &[LeaseEntry], what: &str) {
        let broken = lease_grants(1, "fetch:m", history);
        assert!(
            broken.iter().any(|v| v.0.contains(what)),
            "expected a report containing {what:?}, got {broken:?}"
        );
    }

    #[test]
    fn a_take_while_another_holds_is_reported() {
        let mut history = healthy();
        // Node 2 takes token 2 at 4,500, before node 1's expiry at 5,000.
        history[4] = acquire(5, 4_500, 2, None, (true, 2, 2, 7_500));
        reports(&history, "two holders at once");
    }

    #[test]
    fn a_change_of_hands_under_the_same_token_is_reported() {
        let mut history = healthy();
        history[4] = acquire(5, 6_000, 2, None, (true, 2, 1, 9_000));
        reports(&history, "under the same token 1");
    }

    #[test]
    fn a_token_going_back_is_reported() {
        let mut history = healthy();
        history[7] = acquire(8, 7_100, 3, None, (true, 3, 1, 10_100));
        reports(&history, "below token 2 in force");
    }

    #[test]
    fn a_skipped_token_is_reported() {
        let mut history = healthy();
        history[4] = acquire(5, 6_000, 2, None, (true, 2, 4, 9_000));
        reports(&history, "not the next after 1");
    }

    #[test]
    fn a_renewal_after_expiry_is_reported() {
        let mut history = healthy();
        // Node 1 renews token 1 at 5,200, after its expiry at 5,000.
        history[4] = acquire(5, 5_200, 1, Some(1), (true, 1, 1, 8_200));
        reports(&history, "after it expired at 5000");
    }

    #[test]
    fn a_grant_to_another_node_than_the_asker_is_reported() {
        let mut history = healthy();
        history[4] = acquire(5, 6_000, 2, None, (true, 3, 2, 9_000));
        reports(&history, "granted the lease to node 3");
    }

    #[test]
    fn a_refusal_of_a_free_lease_is_reported() {
        let mut history = healthy();
        // After node 2's release at 7,000 the lease is free: node 3 must get it.
        history[7] = acquire(8, 7_100, 3, None, (false, 2, 2, 7_000));
        reports(&history, "refused although the lease was free");
    }

    #[test]
    fn a_take_during_a_release_it_ignores_is_reported() {
        // A release with a stale token ends nothing: a take before the expiry is two holders.
        let mut history = healthy();
        history[6] = LeaseEntry {
            index: 7,
            at_ms: 7_000,
            origin: 2,
            op: LeaseOp::Release { token: 1 },
        };
        reports(&history, "two holders at once");
    }
}
