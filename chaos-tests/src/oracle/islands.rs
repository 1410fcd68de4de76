//! Island checks: every node's island history (whether it was cut off from the quorum, and its
//! island epoch, as it changed across the run and its restarts).

use std::collections::{BTreeMap, BTreeSet};

use parley_raft::NodeId;

use super::Violation;

/// Checks every node's island history: an island epoch never goes back, across restarts too;
/// each island starts the next epoch; no node of the final `members` is still an island once
/// the cluster settled (a removed node hears from no leader again). Returns how many islands
/// each node entered, and what broke.
pub fn check_islands(
    histories: &BTreeMap<NodeId, Vec<(bool, u64)>>,
    members: &BTreeSet<NodeId>,
) -> (BTreeMap<NodeId, u64>, Vec<Violation>) {
    let mut entered = BTreeMap::new();
    let mut broken = Vec::new();
    for (id, history) in histories {
        let mut count = 0;
        for pair in history.windows(2) {
            let ((was, before), (is, after)) = (pair[0], pair[1]);
            if after < before {
                broken.push(Violation(format!(
                    "node {id}'s island epoch went back from {before} to {after}"
                )));
            }
            if !was && is {
                count += 1;
                if after != before + 1 {
                    broken.push(Violation(format!(
                        "node {id} became an island with epoch {after} after epoch {before}"
                    )));
                }
            }
        }
        if history.first().is_some_and(|(island, _)| *island) {
            count += 1;
        }
        if members.contains(id) && history.last().is_some_and(|(island, _)| *island) {
            broken.push(Violation(format!(
                "node {id} is still an island after the cluster settled"
            )));
        }
        entered.insert(*id, count);
    }
    (entered, broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_that_go_back_repeat_or_stay_islands_are_caught() {
        let members: BTreeSet<NodeId> = [1, 2].into();
        let good = BTreeMap::from([
            (
                1,
                vec![(false, 0), (true, 1), (false, 1), (true, 2), (false, 2)],
            ),
            (2, vec![(false, 0)]),
        ]);
        let (entered, broken) = check_islands(&good, &members);
        assert!(broken.is_empty(), "{broken:?}");
        assert_eq!(entered, BTreeMap::from([(1, 2), (2, 0)]));

        // A restart that forgot the epoch: the next island reuses epoch 1.
        let reused = BTreeMap::from([(
            1,
            vec![(false, 0), (true, 1), (false, 1), (false, 0), (true, 1)],
        )]);
        let (_, broken) = check_islands(&reused, &members);
        assert!(
            broken.iter().any(|v| v.0.contains("went back")),
            "{broken:?}"
        );

        // An island that skipped an epoch, and a member still cut off at the end.
        let skipped = BTreeMap::from([(2, vec![(false, 3), (true, 5)])]);
        let (_, broken) = check_islands(&skipped, &members);
        assert!(
            broken.iter().any(|v| v.0.contains("epoch 5 after epoch 3")),
            "{broken:?}"
        );
        assert!(
            broken.iter().any(|v| v.0.contains("still an island")),
            "{broken:?}"
        );

        // A removed node may stay cut off.
        let removed = BTreeMap::from([(3, vec![(false, 0), (true, 1)])]);
        let (_, broken) = check_islands(&removed, &members);
        assert!(broken.is_empty(), "{broken:?}");
    }
}
