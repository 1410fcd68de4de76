//! One island per site: which island node of a site keeps the site's island journal.
//!
//! Several nodes of one site cut off together must serve one view, so that a customer on one
//! of them and an agent on another see each other's writes. One of them, the site's
//! **keeper**, takes every island write of the site into its journal (each chat's sequence
//! numbers then come from one writer); the others forward their clients' island writes to it
//! (`Cluster.IslandTake`) and mirror its journal into their own view (`Cluster.IslandRecords`).
//! Only the keeper merges, from its own journal, once a leader is heard again.
//!
//! [`keeper`] is the rule, pure: from its probes a node knows which members of its site it
//! reaches, whether each is an island, and whom each named as its keeper. It keeps the journal
//! itself if it has unmerged writes of its current epoch (a keeper never hands its journal
//! over mid-island: two keepers are two islands, but nothing is lost); otherwise it forwards to
//! the lowest reachable island node of its site that keeps its own journal, if that node's id
//! is lower than its own. Since every node of a site applies the same rule to the same
//! answers, the site converges on its lowest island node. While a reachable lower node has not
//! answered since this node became an island (or is an island that named no keeper yet), the
//! keeper is **undecided** and island writes
//! wait (a probe round): nodes of a site cut off together become islands within moments of
//! each other, and the one that noticed first must not open a second journal.

use crate::types::NodeId;

/// What a node knows of another member of its site, from its last probe answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SitePeer {
    /// The member.
    pub id: NodeId,
    /// Whether it answered a probe recently.
    pub reachable: bool,
    /// Whether it was an island when it answered.
    pub island: bool,
    /// Whom it named as the keeper of its island journal (`None` while not an island).
    pub keeper: Option<NodeId>,
    /// Whether that answer came well after this node became an island (by
    /// [`crate::island::mirror::SITE_DECIDE_MARGIN`]).
    pub current: bool,
}

/// The node that keeps the island journal of island node `me`'s site: `me` or one of
/// `peers` (the other members of its site); `None` while undecided. `keeps_writes`: `me` has
/// unmerged island writes of its current epoch in its own journal.
pub fn keeper(me: NodeId, keeps_writes: bool, peers: &[SitePeer]) -> Option<NodeId> {
    if keeps_writes {
        return Some(me);
    }
    if peers.iter().any(|p| {
        p.id < me && p.reachable && (p.island && p.keeper.is_none() || !p.island && !p.current)
    }) {
        return None;
    }
    peers
        .iter()
        .filter(|p| p.reachable && p.island && p.keeper == Some(p.id))
        .map(|p| p.id)
        .chain(std::iter::once(me))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: NodeId, reachable: bool, island: bool, keeper: Option<NodeId>) -> SitePeer {
        SitePeer {
            id,
            reachable,
            island,
            keeper,
            current: true,
        }
    }

    #[test]
    fn the_lowest_reachable_island_node_that_keeps_its_journal_keeps_the_site() {
        // Node 5 defers to node 4, which keeps its own journal.
        assert_eq!(keeper(5, false, &[peer(4, true, true, Some(4))]), Some(4));
        // Node 4 keeps its own even when node 5 claims to keep one: 4 is lower.
        assert_eq!(keeper(4, false, &[peer(5, true, true, Some(5))]), Some(4));
        // Three nodes: the lowest keeper wins.
        assert_eq!(
            keeper(
                6,
                false,
                &[peer(4, true, true, Some(4)), peer(5, true, true, Some(4))]
            ),
            Some(4)
        );
    }

    #[test]
    fn a_reachable_lower_node_that_has_not_answered_since_leaves_the_keeper_undecided() {
        let stale = |island| SitePeer {
            current: false,
            ..peer(4, true, island, None)
        };
        assert_eq!(keeper(5, false, &[stale(false)]), None);
        // Once it answers (an island keeping its own journal, or connected), it is decided.
        assert_eq!(keeper(5, false, &[peer(4, true, true, Some(4))]), Some(4));
        assert_eq!(keeper(5, false, &[peer(4, true, false, None)]), Some(5));
        // An island that has named no keeper yet is undecided too; a higher node never waits.
        assert_eq!(keeper(5, false, &[stale(true)]), None);
        assert_eq!(keeper(5, false, &[peer(4, true, true, None)]), None);
        let higher = SitePeer {
            current: false,
            ..peer(6, true, false, None)
        };
        assert_eq!(keeper(5, false, &[higher]), Some(5));
        // Writes of its own epoch decide at once.
        assert_eq!(keeper(5, true, &[stale(false)]), Some(5));
    }

    #[test]
    fn a_node_forwards_only_to_a_reachable_island_that_keeps_its_own_journal() {
        // Unreachable, not an island, or itself forwarding: not a keeper to forward to.
        assert_eq!(keeper(5, false, &[peer(4, false, true, Some(4))]), Some(5));
        assert_eq!(keeper(5, false, &[peer(4, true, false, None)]), Some(5));
        assert_eq!(keeper(5, false, &[peer(4, true, true, Some(3))]), Some(5));
        assert_eq!(keeper(5, false, &[]), Some(5));
    }

    #[test]
    fn a_node_with_unmerged_writes_of_its_epoch_keeps_them() {
        assert_eq!(keeper(5, true, &[peer(4, true, true, Some(4))]), Some(5));
    }
}
