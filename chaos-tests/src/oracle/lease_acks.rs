//! What the holders were told about their fenced commands, against the applied history: a
//! fenced command its proposer was answered as accepted is in the log, accepted, from that
//! node under that token; one answered `lease_lost` is in the log, refused so.
//!
//! (A command may be in the log more than once: the proposer retries a forward whose answer
//! was lost, with the same stamp and ids. The answer is about one of its copies.)

use parley_raft::NodeId;

use super::lease_history::{FencedResult, LeaseEntry, LeaseOp};
use super::Violation;

/// What a holder's proposer answered for one fenced command, recorded by the simulated
/// node that proposed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FencedAck {
    /// The command's own id (see [`LeaseOp::Fenced`]).
    pub id: String,
    /// The proposing node.
    pub node: NodeId,
    /// The token it carried.
    pub token: u64,
    /// When it was proposed and answered, in ms of true (simulated) time.
    pub sent_ms: u64,
    /// See `sent_ms`.
    pub answered_ms: u64,
    /// The answer.
    pub answer: FencedAnswer,
}

/// A proposer's answer to a fenced command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FencedAnswer {
    /// Committed and accepted.
    Applied,
    /// Committed and refused `lease_lost`.
    LeaseLost,
    /// Refused otherwise (an island refuses every email command), or not committed (no
    /// leader, timeout): the reason.
    NotCommitted(String),
}

/// Checks every answered fenced command of `acks` against `history` (node `node`'s).
pub fn acknowledged_fenced(
    node: NodeId,
    acks: &[FencedAck],
    history: &[LeaseEntry],
) -> Vec<Violation> {
    let mut broken = Vec::new();
    for ack in acks {
        let wanted = match ack.answer {
            FencedAnswer::Applied => FencedResult::Applied,
            FencedAnswer::LeaseLost => FencedResult::LeaseLost,
            FencedAnswer::NotCommitted(_) => continue,
        };
        let found = history.iter().any(|entry| {
            entry.origin == ack.node
                && matches!(&entry.op, LeaseOp::Fenced { id, token, result }
                    if *id == ack.id && *token == ack.token && *result == wanted)
        });
        if !found {
            broken.push(Violation(format!(
                "node {}'s fenced command {} (token {}) was answered {:?} at {} ms, but node \
                 {node}'s log holds no such copy of it",
                ack.node, ack.id, ack.token, ack.answer, ack.answered_ms
            )));
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: &str, node: NodeId, token: u64, answer: FencedAnswer) -> FencedAck {
        FencedAck {
            id: id.to_owned(),
            node,
            token,
            sent_ms: 1_000,
            answered_ms: 1_050,
            answer,
        }
    }

    fn history() -> Vec<LeaseEntry> {
        let fenced = |index, origin, id: &str, token, result| LeaseEntry {
            index,
            at_ms: 1_000,
            origin,
            op: LeaseOp::Fenced {
                id: id.to_owned(),
                token,
                result,
            },
        };
        vec![
            fenced(5, 1, "w1", 1, FencedResult::Applied),
            fenced(9, 1, "w2", 1, FencedResult::LeaseLost),
        ]
    }

    #[test]
    fn answers_found_in_the_log_pass() {
        let acks = [
            ack("w1", 1, 1, FencedAnswer::Applied),
            ack("w2", 1, 1, FencedAnswer::LeaseLost),
            ack("w3", 1, 1, FencedAnswer::NotCommitted("island".into())),
        ];
        assert_eq!(
            acknowledged_fenced(1, &acks, &history()),
            Vec::<Violation>::new()
        );
    }

    #[test]
    fn an_accepted_write_missing_from_the_log_is_reported() {
        let acks = [ack("w4", 1, 1, FencedAnswer::Applied)];
        assert_eq!(acknowledged_fenced(1, &acks, &history()).len(), 1);
    }

    #[test]
    fn an_accepted_write_the_log_refused_is_reported() {
        let acks = [ack("w2", 1, 1, FencedAnswer::Applied)];
        assert_eq!(acknowledged_fenced(1, &acks, &history()).len(), 1);
    }

    #[test]
    fn an_accepted_write_under_another_token_or_node_is_reported() {
        let acks = [
            ack("w1", 1, 2, FencedAnswer::Applied),
            ack("w1", 2, 1, FencedAnswer::Applied),
        ];
        assert_eq!(acknowledged_fenced(1, &acks, &history()).len(), 2);
    }
}
