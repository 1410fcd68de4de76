//! A node's packet filter as `iptables-restore` text. The lab writes a node's whole filter
//! table at once (without `--noflush`, `iptables-restore` replaces the table in one
//! transaction), so every change, a partition or a cut and both their directions, takes effect
//! at one instant, and healing a partition leaves a cut in place (and restoring a cut leaves a
//! partition).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The interface of a node's namespace that leads to the switch.
pub(crate) const NODE_IF: &str = "eth0";

/// Node `id`'s whole filter table: when `cut` (its host lost), every packet in or out of its
/// interface dropped; and packets from and to each of `blocked` (the far side of a partition)
/// dropped. With neither, an empty table: nothing filtered.
pub(crate) fn filter_rules(cut: bool, blocked: &[Ipv4Addr]) -> String {
    let mut rules = String::from("*filter\n");
    if cut {
        // Writing to a String cannot fail.
        let _ = write!(
            rules,
            "-A INPUT -i {NODE_IF} -j DROP\n-A OUTPUT -o {NODE_IF} -j DROP\n"
        );
    }
    for peer in blocked {
        let _ = write!(
            rules,
            "-A INPUT -s {peer} -j DROP\n-A OUTPUT -d {peer} -j DROP\n"
        );
    }
    rules.push_str("COMMIT\n");
    rules
}

/// For each node on a side of `sides`, the nodes on the other sides: the peers it no longer
/// hears nor reaches. Nodes on no side are not partitioned (they are absent).
pub(crate) fn partition_blocks(sides: &[Vec<u64>]) -> BTreeMap<u64, BTreeSet<u64>> {
    let mut blocks: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (i, side) in sides.iter().enumerate() {
        let others: BTreeSet<u64> = sides
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, other)| other.iter().copied())
            .collect();
        for &id in side {
            let entry = blocks.entry(id).or_default();
            entry.extend(others.iter().copied().filter(|&other| other != id));
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_drops_both_directions_in_one_transaction() {
        assert_eq!(
            filter_rules(true, &[]),
            "*filter\n-A INPUT -i eth0 -j DROP\n-A OUTPUT -o eth0 -j DROP\nCOMMIT\n"
        );
    }

    #[test]
    fn no_fault_is_an_empty_table() {
        assert_eq!(filter_rules(false, &[]), "*filter\nCOMMIT\n");
    }

    #[test]
    fn a_partition_drops_each_peer_across_both_ways_and_keeps_a_cut() {
        let peer = Ipv4Addr::new(10, 213, 7, 3);
        assert_eq!(
            filter_rules(false, &[peer]),
            "*filter\n-A INPUT -s 10.213.7.3 -j DROP\n-A OUTPUT -d 10.213.7.3 -j DROP\nCOMMIT\n"
        );
        assert_eq!(
            filter_rules(true, &[peer]),
            "*filter\n-A INPUT -i eth0 -j DROP\n-A OUTPUT -o eth0 -j DROP\n\
             -A INPUT -s 10.213.7.3 -j DROP\n-A OUTPUT -d 10.213.7.3 -j DROP\nCOMMIT\n"
        );
    }

    #[test]
    fn each_side_blocks_every_node_of_the_others() {
        let blocks = partition_blocks(&[vec![1], vec![2, 3], vec![4]]);
        assert_eq!(
            blocks,
            BTreeMap::from([
                (1, BTreeSet::from([2, 3, 4])),
                (2, BTreeSet::from([1, 4])),
                (3, BTreeSet::from([1, 4])),
                (4, BTreeSet::from([1, 2, 3])),
            ])
        );
        // A node on no side hears everyone.
        assert!(!partition_blocks(&[vec![1], vec![2]]).contains_key(&3));
        assert!(partition_blocks(&[]).is_empty());
    }
}
