//! Lease liveness: once the faults are healed, some node holds the lease and its fenced
//! commands are accepted again within a bound.
//!
//! Read from what the holders were answered ([`super::lease_acks::FencedAck`], true simulated
//! time): an accepted fenced command answered within `bound_ms` after the last heal. An
//! accepted fenced command is the holder of record's (checked by [`super::fencing`] against
//! the log, and [`super::lease_acks`] checks the answer is in it), so it also shows that some
//! node held the lease then.

use super::lease_acks::{FencedAck, FencedAnswer};
use super::Violation;

/// Checks that some fenced command of `acks` was answered accepted within `bound_ms` after
/// `healed_ms` (true time).
pub fn fenced_writes_resume(healed_ms: u64, bound_ms: u64, acks: &[FencedAck]) -> Vec<Violation> {
    let until = healed_ms.saturating_add(bound_ms);
    let resumed = acks.iter().any(|ack| {
        ack.answer == FencedAnswer::Applied
            && ack.answered_ms >= healed_ms
            && ack.answered_ms <= until
    });
    if resumed {
        return Vec::new();
    }
    let last = acks
        .iter()
        .filter(|ack| ack.answer == FencedAnswer::Applied)
        .map(|ack| ack.answered_ms)
        .max();
    vec![Violation(format!(
        "no fenced command was accepted within {bound_ms} ms after the heal at {healed_ms} ms \
         (the last accepted one was answered at {last:?} ms, of {} answered): no node held the \
         lease, or its holder could not use it",
        acks.len()
    ))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(answered_ms: u64, answer: FencedAnswer) -> FencedAck {
        FencedAck {
            id: format!("w{answered_ms}"),
            node: 2,
            token: 2,
            sent_ms: answered_ms.saturating_sub(20),
            answered_ms,
            answer,
        }
    }

    #[test]
    fn writes_accepted_after_the_heal_pass() {
        let acks = [
            ack(5_000, FencedAnswer::Applied),
            ack(12_000, FencedAnswer::Applied),
        ];
        assert_eq!(
            fenced_writes_resume(10_000, 5_000, &acks),
            Vec::<Violation>::new()
        );
    }

    #[test]
    fn no_write_accepted_after_the_heal_is_reported() {
        let acks = [
            ack(5_000, FencedAnswer::Applied),
            ack(12_000, FencedAnswer::LeaseLost),
            ack(13_000, FencedAnswer::NotCommitted("no leader".into())),
        ];
        assert_eq!(fenced_writes_resume(10_000, 5_000, &acks).len(), 1);
    }

    #[test]
    fn a_write_accepted_only_past_the_bound_is_reported() {
        let acks = [ack(16_000, FencedAnswer::Applied)];
        assert_eq!(fenced_writes_resume(10_000, 5_000, &acks).len(), 1);
    }
}
