//! Island checks: every node's island history (whether it was cut off from the quorum, and its
//! island epoch, as it changed across the run and its restarts).

use std::collections::BTreeMap;

use parley_raft::state::IslandMark;
use parley_raft::NodeId;

use super::observe::Observation;
use super::Violation;

/// Checks every node's island history: an island epoch never goes back, across restarts too;
/// each island starts the next epoch. Returns how many islands each node entered, and what
/// broke. (Whether every member stops being an island once the cluster settled is not
/// checked yet: see the open finding in docs/CHAOS.md.)
pub fn check_islands(
    histories: &BTreeMap<NodeId, Vec<(bool, u64)>>,
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
        entered.insert(*id, count);
    }
    (entered, broken)
}

/// The island clock never goes back (ISLAND.md, "HLC"): in every chat, the events one island
/// node took carry clock stamps that grow with the order they were taken in (island epoch,
/// then the island sequence number their clients saw), across the node's restarts and
/// whatever its wall clock did (skewed, stepped back).
pub fn island_clocks(observation: &Observation) -> Vec<Violation> {
    let mut broken = Vec::new();
    for (chat_id, events) in &observation.chats {
        let mut by_origin: BTreeMap<NodeId, Vec<IslandMark>> = BTreeMap::new();
        for mark in events.iter().filter_map(|event| event.island) {
            by_origin.entry(mark.origin).or_default().push(mark);
        }
        for (origin, mut marks) in by_origin {
            marks.sort_by_key(|mark| (mark.epoch, mark.seq));
            for pair in marks.windows(2) {
                let (earlier, later) = (pair[0], pair[1]);
                if (earlier.epoch, earlier.seq) < (later.epoch, later.seq)
                    && earlier.hlc >= later.hlc
                {
                    broken.push(Violation(format!(
                        "HLC: node {}: in chat {chat_id}, island node {origin} stamped island \
                         seq {} of epoch {} at {}, not after seq {} of epoch {} at {}",
                        observation.node,
                        later.seq,
                        later.epoch,
                        later.hlc,
                        earlier.seq,
                        earlier.epoch,
                        earlier.hlc
                    )));
                }
            }
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_raft::command::Participant;
    use parley_raft::island::Stamp;
    use parley_raft::state::{ChatEvent, EventBody};

    fn marked(seq: u64, origin: NodeId, epoch: u64, island_seq: u64, wall_ms: u64) -> ChatEvent {
        ChatEvent {
            seq,
            at_ms: wall_ms,
            body: EventBody::Message {
                from: Participant::Customer,
                client_msg_id: format!("m{seq}"),
                text: "hello".to_owned(),
            },
            island: Some(IslandMark {
                origin,
                epoch,
                seq: island_seq,
                hlc: Stamp {
                    wall_ms,
                    logical: 0,
                },
            }),
        }
    }

    #[test]
    fn an_island_clock_that_went_back_is_caught() {
        let observe = |events: Vec<ChatEvent>| Observation {
            node: 1,
            chats: BTreeMap::from([("c1".to_owned(), events)]),
            ..Observation::default()
        };
        // Two islands of node 4 (epochs 1 and 2) and one of node 5 whose clock is behind.
        let good = observe(vec![
            marked(4, 4, 1, 4, 1_000),
            marked(5, 5, 1, 4, 400),
            marked(6, 4, 1, 5, 1_001),
            marked(7, 4, 2, 2, 5_000),
        ]);
        assert!(
            island_clocks(&good).is_empty(),
            "{:?}",
            island_clocks(&good)
        );

        // Node 4's clock stepped back between two writes of one island.
        let stepped_back = observe(vec![marked(4, 4, 1, 4, 1_000), marked(5, 4, 1, 5, 900)]);
        let broken = island_clocks(&stepped_back);
        assert!(
            broken.iter().any(|v| v.0.contains("island node 4")),
            "{broken:?}"
        );

        // A restart that forgot its clock: the next island stamps below the last one.
        let forgot = observe(vec![marked(4, 4, 1, 4, 1_000), marked(5, 4, 2, 1, 999)]);
        assert_eq!(island_clocks(&forgot).len(), 1);
    }

    #[test]
    fn epochs_that_go_back_or_skip_are_caught() {
        let good = BTreeMap::from([
            (
                1,
                vec![(false, 0), (true, 1), (false, 1), (true, 2), (false, 2)],
            ),
            (2, vec![(false, 0)]),
        ]);
        let (entered, broken) = check_islands(&good);
        assert!(broken.is_empty(), "{broken:?}");
        assert_eq!(entered, BTreeMap::from([(1, 2), (2, 0)]));

        // A restart that forgot the epoch: the next island reuses epoch 1.
        let reused = BTreeMap::from([(
            1,
            vec![(false, 0), (true, 1), (false, 1), (false, 0), (true, 1)],
        )]);
        let (_, broken) = check_islands(&reused);
        assert!(
            broken.iter().any(|v| v.0.contains("went back")),
            "{broken:?}"
        );

        // An island that skipped an epoch.
        let skipped = BTreeMap::from([(2, vec![(false, 3), (true, 5)])]);
        let (_, broken) = check_islands(&skipped);
        assert!(
            broken.iter().any(|v| v.0.contains("epoch 5 after epoch 3")),
            "{broken:?}"
        );
    }
}
