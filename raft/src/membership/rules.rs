//! What a membership change may do: the pure checks the leader runs against its own view of
//! the members before it proposes a change, and the openraft change each request becomes.
//!
//! Nothing here talks to Raft; [`plan`] takes a [`MemberList`] (the leader's view) and a
//! [`MemberChange`] and answers the openraft [`ChangeMembers`] to propose or a [`Refusal`].

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;

use super::{MemberChange, MemberList, MemberView, Refusal};
use crate::limits::{
    ADDRESS_BYTES_MAX, MEMBER_ACK_MS_MAX, MEMBER_ENTRIES_BEHIND_MAX, NAME_BYTES_MAX,
};
use crate::types::{NodeId, NodeInfo};

/// What is wrong with `value` as a `host:port` address, `None` if nothing.
pub fn address_problem(value: &str) -> Option<&'static str> {
    if value.len() > ADDRESS_BYTES_MAX {
        return Some("is too long");
    }
    match value.rsplit_once(':') {
        None => Some("must be host:port"),
        Some((host, port)) => {
            if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                Some("has an invalid host")
            } else if port.parse::<u16>().map_or(true, |p| p == 0) {
                Some("has an invalid port")
            } else {
                None
            }
        }
    }
}

/// Whether `member` is caught up with the leader and heard from recently: the leader itself,
/// or a member at most [`MEMBER_ENTRIES_BEHIND_MAX`] entries behind that acknowledged the leader
/// within [`MEMBER_ACK_MS_MAX`].
pub fn healthy(member: &MemberView) -> bool {
    member.role == super::Role::Leader
        || (member
            .entries_behind
            .is_some_and(|behind| behind <= MEMBER_ENTRIES_BEHIND_MAX)
            && member.last_ack_ms.is_some_and(|ms| ms <= MEMBER_ACK_MS_MAX))
}

fn invalid(field: &str, problem: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// The openraft change that carries out `change` on the members `list` (`None`: the members
/// are already as asked, so a retried request changes nothing), or why it may not.
pub fn plan(
    list: &MemberList,
    change: &MemberChange,
) -> Result<Option<ChangeMembers<NodeId, NodeInfo>>, Refusal> {
    let member = |id: NodeId| list.members.iter().find(|m| m.id == id);
    match change {
        MemberChange::Add {
            id,
            site,
            grpc_addr,
            http_addr,
        } => {
            if *id == 0 {
                return Err(invalid("id", "must be a positive integer"));
            }
            if site.trim().is_empty() || site.len() > NAME_BYTES_MAX {
                return Err(invalid(
                    "site",
                    format!("must be 1 to {NAME_BYTES_MAX} bytes"),
                ));
            }
            for (field, addr) in [("grpc_addr", grpc_addr), ("http_addr", http_addr)] {
                if let Some(problem) = address_problem(addr) {
                    return Err(invalid(field, format!("{addr:?} {problem}")));
                }
            }
            if let Some(existing) = member(*id) {
                let same = existing.site == *site
                    && existing.grpc_addr == *grpc_addr
                    && existing.http_addr == *http_addr;
                return if same {
                    Ok(None)
                } else {
                    Err(Refusal::AlreadyMember { id: *id })
                };
            }
            for addr in [grpc_addr, http_addr] {
                if let Some(other) = list
                    .members
                    .iter()
                    .find(|m| m.grpc_addr == *addr || m.http_addr == *addr)
                {
                    return Err(Refusal::AddressInUse {
                        address: addr.clone(),
                        id: other.id,
                    });
                }
            }
            let info = NodeInfo {
                site: site.clone(),
                grpc_addr: grpc_addr.clone(),
                http_addr: http_addr.clone(),
            };
            Ok(Some(ChangeMembers::AddNodes(BTreeMap::from([(*id, info)]))))
        }
        MemberChange::Promote { id } => {
            let Some(learner) = member(*id) else {
                return Err(Refusal::NotMember { id: *id });
            };
            if learner.role != super::Role::Learner {
                // Already a voter: a retried promotion.
                return Ok(None);
            }
            if !healthy(learner) {
                return Err(Refusal::Behind {
                    id: *id,
                    entries_behind: learner.entries_behind,
                    last_ack_ms: learner.last_ack_ms,
                    entries_behind_max: MEMBER_ENTRIES_BEHIND_MAX,
                    ack_ms_max: MEMBER_ACK_MS_MAX,
                });
            }
            Ok(Some(ChangeMembers::AddVoterIds(BTreeSet::from([*id]))))
        }
        MemberChange::Remove { id, force } => {
            let Some(target) = member(*id) else {
                return Err(Refusal::NotMember { id: *id });
            };
            if target.role == super::Role::Learner {
                return Ok(Some(ChangeMembers::RemoveNodes(BTreeSet::from([*id]))));
            }
            let remaining: Vec<&MemberView> = list
                .members
                .iter()
                .filter(|m| m.id != *id && m.role != super::Role::Learner)
                .collect();
            if remaining.is_empty() {
                return Err(Refusal::LastVoter { id: *id });
            }
            if !force {
                let needed = remaining.len() / 2 + 1;
                let healthy_voters = remaining.iter().filter(|m| healthy(m)).count();
                if healthy_voters < needed {
                    return Err(Refusal::Quorum {
                        id: *id,
                        voters_left: remaining.len(),
                        healthy: healthy_voters,
                        needed,
                    });
                }
                if !remaining.iter().any(|m| m.site == target.site) {
                    return Err(Refusal::EmptiesSite {
                        id: *id,
                        site: target.site.clone(),
                    });
                }
            }
            Ok(Some(ChangeMembers::RemoveVoters(BTreeSet::from([*id]))))
        }
    }
}

/// What a member said, asked just before its removal, of the island writes it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalAnswer {
    /// It answered: whether it is an island now, and how many writes its island journal holds
    /// that are not merged yet (`None`: its release does not say).
    Answered {
        /// Whether it is an island.
        island: bool,
        /// Unmerged island writes.
        entries: Option<u64>,
    },
    /// It did not answer, and why.
    Silent(String),
}

/// Whether member `id` may be removed as far as island writes go: only when it answered that
/// it is not an island and holds no unmerged island write. A removed member's island writes
/// would never be merged (only the node that took them merges them), and a member that does
/// not answer may be cut off and serving as an island. `force` skips this check.
pub fn island_writes_merged(id: NodeId, answer: &JournalAnswer) -> Result<(), Refusal> {
    match answer {
        JournalAnswer::Silent(problem) => Err(Refusal::IslandUnknown {
            id,
            problem: problem.clone(),
        }),
        JournalAnswer::Answered { entries: None, .. } => Err(Refusal::IslandUnknown {
            id,
            problem: "its release does not report its island journal".to_owned(),
        }),
        JournalAnswer::Answered {
            island: false,
            entries: Some(0),
        } => Ok(()),
        JournalAnswer::Answered {
            island,
            entries: Some(entries),
        } => Err(Refusal::IslandWrites {
            id,
            island: *island,
            entries: *entries,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Role;

    fn member(id: NodeId, site: &str, role: Role, behind: Option<u64>) -> MemberView {
        MemberView {
            id,
            site: site.to_owned(),
            grpc_addr: format!("10.0.0.{id}:7100"),
            http_addr: format!("10.0.0.{id}:8080"),
            role,
            matched_index: behind.map(|b| 500 - b),
            entries_behind: behind,
            last_ack_ms: behind.map(|_| 50),
        }
    }

    /// Three voters on two sites (1 and 2 on "a", 3 on "b"), node 1 leading, and a learner 4.
    fn list(learner_behind: Option<u64>) -> MemberList {
        MemberList {
            leader: Some(1),
            term: 3,
            last_log_index: Some(500),
            membership_index: Some(10),
            members: vec![
                member(1, "a", Role::Leader, Some(0)),
                member(2, "a", Role::Voter, Some(0)),
                member(3, "b", Role::Voter, Some(2)),
                member(4, "b", Role::Learner, learner_behind),
            ],
        }
    }

    fn add(id: NodeId, grpc: &str) -> MemberChange {
        MemberChange::Add {
            id,
            site: "b".to_owned(),
            grpc_addr: grpc.to_owned(),
            http_addr: grpc.replace(":7100", ":8080"),
        }
    }

    #[test]
    fn adding_a_node_makes_it_a_learner_unless_its_id_or_addresses_are_taken() {
        let list = list(Some(0));
        assert!(matches!(
            plan(&list, &add(5, "10.0.0.5:7100")),
            Ok(Some(ChangeMembers::AddNodes(nodes))) if nodes.contains_key(&5)
        ));
        assert_eq!(
            plan(&list, &add(4, "10.0.0.9:7100")),
            Err(Refusal::AlreadyMember { id: 4 })
        );
        // The same node again, as a retried request sends it: nothing to do.
        let again = MemberChange::Add {
            id: 4,
            site: "b".to_owned(),
            grpc_addr: "10.0.0.4:7100".to_owned(),
            http_addr: "10.0.0.4:8080".to_owned(),
        };
        assert_eq!(plan(&list, &again), Ok(None));
        assert!(matches!(
            plan(&list, &add(5, "10.0.0.2:7100")),
            Err(Refusal::AddressInUse { id: 2, .. })
        ));
        assert!(matches!(
            plan(&list, &add(5, "no-port")),
            Err(Refusal::Invalid { field, .. }) if field == "grpc_addr"
        ));
        assert!(matches!(
            plan(&list, &add(0, "10.0.0.5:7100")),
            Err(Refusal::Invalid { field, .. }) if field == "id"
        ));
        let no_site = MemberChange::Add {
            id: 5,
            site: " ".to_owned(),
            grpc_addr: "10.0.0.5:7100".to_owned(),
            http_addr: "10.0.0.5:8080".to_owned(),
        };
        assert!(matches!(
            plan(&list, &no_site),
            Err(Refusal::Invalid { field, .. }) if field == "site"
        ));
    }

    #[test]
    fn a_learner_is_promoted_only_once_it_has_caught_up() {
        let promote = MemberChange::Promote { id: 4 };
        assert!(matches!(
            plan(&list(Some(3)), &promote),
            Ok(Some(ChangeMembers::AddVoterIds(ids))) if ids.contains(&4)
        ));
        assert!(matches!(
            plan(&list(Some(MEMBER_ENTRIES_BEHIND_MAX + 1)), &promote),
            Err(Refusal::Behind { id: 4, .. })
        ));
        assert!(matches!(
            plan(&list(None), &promote),
            Err(Refusal::Behind {
                id: 4,
                entries_behind: None,
                ..
            })
        ));
        let mut silent = list(Some(0));
        silent.members[3].last_ack_ms = Some(MEMBER_ACK_MS_MAX + 1);
        assert!(matches!(
            plan(&silent, &promote),
            Err(Refusal::Behind { id: 4, .. })
        ));
        // A voter already: a retried promotion changes nothing.
        assert_eq!(
            plan(&list(Some(0)), &MemberChange::Promote { id: 2 }),
            Ok(None)
        );
        assert_eq!(
            plan(&list(Some(0)), &MemberChange::Promote { id: 9 }),
            Err(Refusal::NotMember { id: 9 })
        );
    }

    #[test]
    fn removing_a_voter_keeps_a_healthy_quorum_and_a_voter_on_every_site_unless_forced() {
        let list = list(Some(0));
        let remove = |id, force| MemberChange::Remove { id, force };
        assert!(matches!(
            plan(&list, &remove(2, false)),
            Ok(Some(ChangeMembers::RemoveVoters(ids))) if ids.contains(&2)
        ));
        // Node 3 is the only voter of site "b".
        assert_eq!(
            plan(&list, &remove(3, false)),
            Err(Refusal::EmptiesSite {
                id: 3,
                site: "b".to_owned()
            })
        );
        assert!(plan(&list, &remove(3, true)).is_ok());
        // With node 3 silent, removing node 2 would leave the leader and a silent voter: one
        // healthy voter where two are needed.
        let mut silent = list.clone();
        silent.members[2].last_ack_ms = Some(MEMBER_ACK_MS_MAX + 1);
        assert_eq!(
            plan(&silent, &remove(2, false)),
            Err(Refusal::Quorum {
                id: 2,
                voters_left: 2,
                healthy: 1,
                needed: 2
            })
        );
        assert!(plan(&silent, &remove(2, true)).is_ok());
        // A learner goes without any check.
        assert!(matches!(
            plan(&list, &remove(4, false)),
            Ok(Some(ChangeMembers::RemoveNodes(ids))) if ids.contains(&4)
        ));
        assert_eq!(
            plan(&list, &remove(7, true)),
            Err(Refusal::NotMember { id: 7 })
        );
    }

    #[test]
    fn a_member_is_removed_only_once_it_says_its_island_writes_are_merged() {
        let answered = |island, entries| JournalAnswer::Answered { island, entries };
        assert_eq!(island_writes_merged(3, &answered(false, Some(0))), Ok(()));
        // Merging after a heal: not an island any more, but writes still to merge.
        assert_eq!(
            island_writes_merged(3, &answered(false, Some(12))),
            Err(Refusal::IslandWrites {
                id: 3,
                island: false,
                entries: 12
            })
        );
        // An island takes writes at any moment, even with an empty journal now.
        assert_eq!(
            island_writes_merged(3, &answered(true, Some(0))),
            Err(Refusal::IslandWrites {
                id: 3,
                island: true,
                entries: 0
            })
        );
        // Cut off (maybe serving as an island), or a release that does not say: unknown.
        assert!(matches!(
            island_writes_merged(3, &JournalAnswer::Silent("no answer within 1000 ms".to_owned())),
            Err(Refusal::IslandUnknown { id: 3, problem }) if problem.contains("1000 ms")
        ));
        assert!(matches!(
            island_writes_merged(3, &answered(false, None)),
            Err(Refusal::IslandUnknown { id: 3, .. })
        ));
        // The refusal tells the operator what to wait for and what forcing costs.
        let text = Refusal::IslandWrites {
            id: 3,
            island: true,
            entries: 4,
        }
        .to_string();
        assert!(
            text.contains("serving as an island") && text.contains("4 island writes"),
            "{text}"
        );
    }

    #[test]
    fn the_last_voter_cannot_be_removed_even_by_force() {
        let list = MemberList {
            leader: Some(1),
            term: 1,
            last_log_index: Some(5),
            membership_index: Some(1),
            members: vec![member(1, "a", Role::Leader, Some(0))],
        };
        assert_eq!(
            plan(&list, &MemberChange::Remove { id: 1, force: true }),
            Err(Refusal::LastVoter { id: 1 })
        );
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(address_problem("node-1.example:7100"), None);
        assert_eq!(address_problem("[::1]:7100"), None);
        assert!(address_problem("host").is_some());
        assert!(address_problem(":7100").is_some());
        assert!(address_problem("host:0").is_some());
        assert!(address_problem("host:99999").is_some());
        assert!(address_problem("a b:1").is_some());
        assert!(address_problem(&format!("{}:1", "h".repeat(ADDRESS_BYTES_MAX))).is_some());
    }
}
