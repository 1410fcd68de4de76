//! Membership changes: listing the members with their replication progress, adding a node as
//! a learner, promoting a caught-up learner to voter, removing a member.
//!
//! The replicated membership is the truth; a config's `peers` only forms a new cluster. Only
//! the leader knows how far behind each member is, so every request is answered by the leader:
//! a node that does not lead forwards it (`Cluster.Members`), following leader changes until
//! the caller's deadline. The leader checks the request with [`rules::plan`] against its own
//! view and proposes the change guarded by the membership it checked against, so two
//! concurrent changes cannot both pass checks made on the same view.
//!
//! - [`rules`]: the pure checks and the openraft change each request becomes.

pub mod rules;

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::Precondition;
use openraft::{Instant as _, ServerState};
use parley_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Classified, ErrorClass};
use crate::island::IslandServer;
use crate::network::Peers;
use crate::types::{NodeId, Raft, StateStore};
use crate::version;

/// A member's part in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The voter that leads.
    Leader,
    /// A voter that follows.
    Voter,
    /// Receives the log but does not vote; promoted once caught up.
    Learner,
}

/// One member as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub id: NodeId,
    /// Its site.
    pub site: String,
    /// Its gRPC address.
    pub grpc_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// Leader, voter or learner.
    pub role: Role,
    /// The last log index the leader knows this member to hold (`None`: nothing yet).
    pub matched_index: Option<u64>,
    /// How many entries it is behind the leader's last one (`None`: unknown, nothing matched
    /// yet).
    pub entries_behind: Option<u64>,
    /// Milliseconds since it last acknowledged the leader (`None`: never; 0 for the leader).
    pub last_ack_ms: Option<u64>,
}

/// The members as the leader sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// The leader that answered (after a leader removed itself: the leader it knows of, if
    /// any, and no progress figures).
    pub leader: Option<NodeId>,
    /// Its term.
    pub term: u64,
    /// Its last log index.
    pub last_log_index: Option<u64>,
    /// Log index of the membership shown.
    pub membership_index: Option<u64>,
    /// Every member, voters and learners, by id.
    pub members: Vec<MemberView>,
}

/// A requested membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum MemberChange {
    /// Add a node as a learner; the leader starts sending it the log. Adding a node that is
    /// already a member with the same site and addresses changes nothing.
    Add {
        /// Its node id, never used before in this cluster.
        id: NodeId,
        /// Its site.
        site: String,
        /// Its gRPC address as the members reach it.
        grpc_addr: String,
        /// Its HTTP address as clients reach it.
        http_addr: String,
    },
    /// Make a caught-up learner a voter; promoting a voter changes nothing.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Remove a member: only one that says it holds no island writes not merged yet, and a
    /// voter only where the voters left keep a healthy quorum and every site keeps a voter,
    /// unless `force`.
    Remove {
        /// The member.
        id: NodeId,
        /// Skip the island, quorum and site checks (never the last voter).
        #[serde(default)]
        force: bool,
    },
}

/// Why a membership change was refused; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// A field of the request is not valid.
    #[error("{field} {problem}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The id is a member already, with other addresses or site.
    #[error("node {id} is already a member with other addresses or site; remove it first")]
    AlreadyMember {
        /// The node.
        id: NodeId,
    },
    /// Another member has that address.
    #[error("{address} is the address of node {id}")]
    AddressInUse {
        /// The address.
        address: String,
        /// The member that has it.
        id: NodeId,
    },
    /// The id is not a member.
    #[error("node {id} is not a member")]
    NotMember {
        /// The node.
        id: NodeId,
    },
    /// The learner has not caught up with the leader.
    #[error(
        "node {id} is not caught up: {} entries behind (at most {entries_behind_max}), last \
         heard from {} ago (at most {ack_ms_max} ms); wait and retry",
        entries_behind.map_or("an unknown number of".to_owned(), |n| n.to_string()),
        last_ack_ms.map_or("never".to_owned(), |ms| format!("{ms} ms"))
    )]
    Behind {
        /// The learner.
        id: NodeId,
        /// How far behind.
        entries_behind: Option<u64>,
        /// Since when silent.
        last_ack_ms: Option<u64>,
        /// The bound on `entries_behind`.
        entries_behind_max: u64,
        /// The bound on `last_ack_ms`.
        ack_ms_max: u64,
    },
    /// The voters left would not keep a healthy quorum.
    #[error(
        "removing node {id} leaves {voters_left} voters of which {healthy} are healthy, and \
         {needed} are needed for a quorum; bring a voter back first, or force"
    )]
    Quorum {
        /// The voter to remove.
        id: NodeId,
        /// Voters after the removal.
        voters_left: usize,
        /// How many of them are healthy.
        healthy: usize,
        /// A quorum of them.
        needed: usize,
    },
    /// The voter is the last of its site.
    #[error("node {id} is the last voter of site {site}; add and promote another first, or force")]
    EmptiesSite {
        /// The voter to remove.
        id: NodeId,
        /// Its site.
        site: String,
    },
    /// The member serves as an island or holds island writes not merged into the cluster yet:
    /// removed now, they would never be merged.
    #[error(
        "node {id} {} ({entries} island writes in its journal not merged into the cluster \
         yet); wait until it hears the cluster again and its island_journal_entries is 0, or \
         force (its unmerged island writes are then lost)",
        if *island { "is serving as an island" } else { "is merging its island journal" }
    )]
    IslandWrites {
        /// The member.
        id: NodeId,
        /// Whether it is an island now.
        island: bool,
        /// Writes in its island journal.
        entries: u64,
    },
    /// The member did not say whether it holds island writes not merged yet: it may be cut
    /// off and serving as an island.
    #[error(
        "node {id} did not say whether it holds island writes not merged yet ({problem}); it \
         may be cut off and serving as an island: bring it back, or force if it is gone for \
         good (whatever it took as an island is then lost)"
    )]
    IslandUnknown {
        /// The member.
        id: NodeId,
        /// Why it did not say.
        problem: String,
    },
    /// The cluster's only voter.
    #[error("node {id} is the cluster's last voter")]
    LastVoter {
        /// The voter.
        id: NodeId,
    },
    /// The node's release cannot run in this cluster.
    #[error("node {id} cannot join: {problem}; upgrade it first")]
    Release {
        /// The node.
        id: NodeId,
        /// What its release lacks.
        problem: String,
    },
    /// Another membership change has not finished.
    #[error("another membership change is in progress; retry when it has committed")]
    InProgress,
    /// The membership changed between the check and the proposal.
    #[error("the membership changed while this change was checked; list the members and retry")]
    Changed,
}

impl Classified for Refusal {
    fn class(&self) -> ErrorClass {
        match self {
            Refusal::Invalid { .. } => ErrorClass::InvalidArgument,
            Refusal::NotMember { .. } => ErrorClass::NotFound,
            _ => ErrorClass::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Refusal::Invalid { .. } => "invalid_member",
            Refusal::AlreadyMember { .. } => "already_member",
            Refusal::AddressInUse { .. } => "address_in_use",
            Refusal::NotMember { .. } => "not_member",
            Refusal::Behind { .. } => "member_behind",
            Refusal::Quorum { .. } => "quorum_at_risk",
            Refusal::EmptiesSite { .. } => "site_emptied",
            Refusal::LastVoter { .. } => "last_voter",
            Refusal::IslandWrites { .. } => "island_writes_unmerged",
            Refusal::IslandUnknown { .. } => "island_unknown",
            Refusal::Release { .. } => "release_unsupported",
            Refusal::InProgress => "membership_change_in_progress",
            Refusal::Changed => "membership_changed",
        }
    }
}

/// Why a membership request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The leader refused the change; nothing was written.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// No leader answered within the deadline.
    #[error("no leader answered within {waited_ms} ms; the cluster may have lost its quorum")]
    NoLeader {
        /// How long the request waited.
        waited_ms: u64,
    },
    /// The leader could not make the change now (the change may or may not have committed:
    /// list the members before retrying).
    #[error("the leader could not complete the change: {0}")]
    Unavailable(String),
}

impl Classified for MembershipError {
    fn class(&self) -> ErrorClass {
        match self {
            MembershipError::Refused(refusal) => refusal.class(),
            MembershipError::NoLeader { .. } | MembershipError::Unavailable(_) => {
                ErrorClass::Unavailable
            }
        }
    }

    fn code(&self) -> &'static str {
        match self {
            MembershipError::Refused(refusal) => refusal.code(),
            MembershipError::NoLeader { .. } => "no_leader",
            MembershipError::Unavailable(_) => "membership_unavailable",
        }
    }
}

/// What the leader answers to one membership request.
#[derive(Debug)]
pub enum LeaderAnswer {
    /// The members after the change.
    Done(MemberList),
    /// This node does not lead; the leader it knows of.
    NotLeader(Option<NodeId>),
    /// Refused; nothing written.
    Refused(Refusal),
    /// Not possible now.
    Unavailable(String),
}

/// The longest one membership request may wait, in ms, whatever its caller asks.
pub const MEMBERSHIP_DEADLINE_MS_MAX: u32 = 60_000;

/// Membership requests on one node: answered here when it leads, forwarded otherwise.
#[derive(Clone)]
pub struct Members {
    id: NodeId,
    raft: Raft,
    peers: Peers,
    /// The applied state, for the cluster version a joining node's release must implement.
    store: StateStore,
    /// This node's island side, for the island writes it holds when it removes itself.
    island: IslandServer,
}

impl Members {
    /// Membership requests of node `id`, forwarded through `peers`.
    pub fn new(
        id: NodeId,
        raft: Raft,
        peers: Peers,
        store: StateStore,
        island: IslandServer,
    ) -> Self {
        Self {
            id,
            raft,
            peers,
            store,
            island,
        }
    }

    /// Asks member `id`, just before its removal, whether it holds island writes not merged
    /// yet (the leader asks its own island side).
    async fn island_answer(&self, list: &MemberList, id: NodeId) -> rules::JournalAnswer {
        if id == self.id {
            return rules::JournalAnswer::Answered {
                island: false,
                entries: Some(self.island.status().journal_entries),
            };
        }
        let Some(member) = list.members.iter().find(|m| m.id == id) else {
            return rules::JournalAnswer::Silent("not a member".to_owned());
        };
        match crate::probe::ask(&self.peers, id, &member.grpc_addr).await {
            Ok(heard) => rules::JournalAnswer::Answered {
                island: heard.island,
                entries: heard.journal_entries,
            },
            Err(problem) => rules::JournalAnswer::Silent(problem),
        }
    }

    /// Refuses adding or promoting a node whose release cannot run in this cluster (see
    /// [`version::unfit_to_join`]). A node added as a learner may not run yet: it is asked, and
    /// refused only if it answers with a release that does not fit. A learner to promote has
    /// been heard from lately and must answer.
    async fn check_release(
        &self,
        list: &MemberList,
        change: &MemberChange,
    ) -> Result<(), LeaderAnswer> {
        let (id, addr, must_answer) = match change {
            MemberChange::Add { id, grpc_addr, .. } => (*id, grpc_addr.clone(), false),
            MemberChange::Promote { id } => match list.members.iter().find(|m| m.id == *id) {
                Some(member) => (*id, member.grpc_addr.clone(), true),
                None => return Ok(()),
            },
            MemberChange::Remove { .. } => return Ok(()),
        };
        let cluster_version = self.store.read(|state, _| state.cluster_version.0);
        match crate::upgrade::ask(&self.peers, id, &addr).await {
            Ok(supported) => match version::unfit_to_join(&supported, cluster_version) {
                Some(problem) => Err(LeaderAnswer::Refused(Refusal::Release { id, problem })),
                None => Ok(()),
            },
            Err(problem) if must_answer => Err(LeaderAnswer::Unavailable(format!(
                "node {id} did not say what its release supports: {problem}"
            ))),
            Err(_) => Ok(()),
        }
    }

    /// Lists the members (`change` is `None`) or makes `change`, through whichever node leads,
    /// within `timeout`.
    pub async fn request(
        &self,
        change: Option<MemberChange>,
        timeout: Duration,
    ) -> Result<MemberList, MembershipError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut hint: Option<NodeId> = None;
        let mut last_problem: Option<String> = None;
        loop {
            let leader = hint
                .take()
                .or_else(|| self.raft.metrics().borrow_watched().current_leader);
            let answer = match leader {
                Some(leader) if leader == self.id => {
                    Some(self.on_leader(change.clone(), deadline).await)
                }
                Some(leader) => match self.forward(leader, &change, deadline).await {
                    Ok(answer) => Some(answer),
                    Err(problem) => {
                        tracing::debug!(leader, %problem, "forwarding a membership request");
                        last_problem = Some(problem);
                        None
                    }
                },
                None => None,
            };
            match answer {
                Some(LeaderAnswer::Done(list)) => return Ok(list),
                // Another change is finishing (or a new leader has not committed its first
                // entry yet): it passes within moments, so wait for it.
                Some(LeaderAnswer::Refused(Refusal::InProgress))
                    if Instant::now() + RETRY_PAUSE < deadline => {}
                Some(LeaderAnswer::Refused(refusal)) => return Err(refusal.into()),
                Some(LeaderAnswer::Unavailable(problem)) => {
                    return Err(MembershipError::Unavailable(problem))
                }
                Some(LeaderAnswer::NotLeader(next)) => hint = next.filter(|n| Some(*n) != leader),
                None => {}
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                return Err(match last_problem {
                    Some(problem) => MembershipError::Unavailable(problem),
                    None => MembershipError::NoLeader { waited_ms },
                });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Sends the request to `leader` and waits for its answer.
    async fn forward(
        &self,
        leader: NodeId,
        change: &Option<MemberChange>,
        deadline: Instant,
    ) -> Result<LeaderAnswer, String> {
        let addr = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.grpc_addr.clone())
            .ok_or_else(|| format!("leader {leader} has no known address"))?;
        let change_json = match change {
            Some(change) => serde_json::to_vec(change).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let mut request = tonic::Request::new(pb::MembersRequest {
            change_json,
            deadline_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX),
        });
        request.set_timeout(left);
        let mut client = self
            .peers
            .cluster_client(leader, &addr)
            .map_err(|e| e.to_string())?;
        let reply = tokio::time::timeout(left, client.members(request))
            .await
            .map_err(|_| "the leader did not answer in time".to_owned())?
            .map_err(|status| status.message().to_owned())?
            .into_inner();
        decode_reply(reply)
    }

    /// Answers a membership request on this node, which must lead: the list, or the change
    /// checked with [`rules::plan`] and proposed, guarded by the membership it was checked on.
    pub async fn on_leader(&self, change: Option<MemberChange>, deadline: Instant) -> LeaderAnswer {
        let (list, observed, committed) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            if m.state != ServerState::Leader || m.current_leader != Some(self.id) {
                return LeaderAnswer::NotLeader(m.current_leader.filter(|l| *l != self.id));
            }
            (
                view(self.id, &m),
                *m.membership_config.log_id(),
                *m.committed_membership_config.log_id(),
            )
        };
        let Some(change) = change else {
            return LeaderAnswer::Done(list);
        };
        let changes = match rules::plan(&list, &change) {
            Ok(Some(changes)) => changes,
            Ok(None) => return LeaderAnswer::Done(list),
            Err(refusal) => return LeaderAnswer::Refused(refusal),
        };
        if observed != committed {
            return LeaderAnswer::Refused(Refusal::InProgress);
        }
        if let Err(answer) = self.check_release(&list, &change).await {
            return answer;
        }
        if let MemberChange::Remove { id, force: false } = &change {
            let answer = self.island_answer(&list, *id).await;
            if let Err(refusal) = rules::island_writes_merged(*id, &answer) {
                return LeaderAnswer::Refused(refusal);
            }
        }
        tracing::info!(?change, "changing the membership");
        let proposal = self.raft.change_membership_if(
            changes,
            false,
            [Precondition::LastMembershipLogId {
                last_membership_log_id: observed,
            }],
        );
        match tokio::time::timeout_at(deadline, proposal).await {
            Err(_) => LeaderAnswer::Unavailable(
                "the change was not committed before the deadline; it may still commit: list \
                 the members before retrying"
                    .to_owned(),
            ),
            Ok(Ok(_)) => {
                let metrics = self.raft.metrics();
                let m = metrics.borrow_watched();
                // A leader that removed itself no longer leads; its view still shows the new
                // membership, without progress figures. Answering "not leader" here would
                // make the caller retry a change that is done.
                LeaderAnswer::Done(view(self.id, &m))
            }
            Ok(Err(RaftError::APIError(error))) => match error {
                ClientWriteError::ForwardToLeader(to) => LeaderAnswer::NotLeader(to.leader_id),
                ClientWriteError::PreconditionFailed(_) => LeaderAnswer::Refused(Refusal::Changed),
                ClientWriteError::ChangeMembershipError(change) => {
                    use openraft::error::ChangeMembershipError as E;
                    match change {
                        E::InProgress(_) | E::UncommittedLeaderLog(_) => {
                            LeaderAnswer::Refused(Refusal::InProgress)
                        }
                        other => LeaderAnswer::Unavailable(other.to_string()),
                    }
                }
                other => LeaderAnswer::Unavailable(other.to_string()),
            },
            Ok(Err(RaftError::Fatal(fatal))) => LeaderAnswer::Unavailable(fatal.to_string()),
        }
    }
}

/// Pause between two tries of a request that found no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The members as node `id` sees them in its metrics: with every member's progress if it
/// leads (only a leader tracks it).
fn view(id: NodeId, m: &openraft::RaftMetrics<crate::types::TypeConfig>) -> MemberList {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let last = m.last_log_index;
    let leading = m.current_leader == Some(id) && m.state == ServerState::Leader;
    let members = membership
        .nodes()
        .map(|(node, info)| {
            let leader = m.current_leader == Some(*node);
            let matched_index = if !leading {
                None
            } else if leader {
                last
            } else {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(node).cloned().flatten())
                    .map(|log_id| log_id.index)
            };
            let last_ack_ms = if !leading {
                None
            } else if leader {
                Some(0)
            } else {
                m.heartbeat
                    .as_ref()
                    .and_then(|h| h.get(node).cloned().flatten())
                    .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX))
            };
            MemberView {
                id: *node,
                site: info.site.clone(),
                grpc_addr: info.grpc_addr.clone(),
                http_addr: info.http_addr.clone(),
                role: if leader {
                    Role::Leader
                } else if voters.contains(node) {
                    Role::Voter
                } else {
                    Role::Learner
                },
                matched_index,
                entries_behind: matched_index
                    .map(|matched| last.unwrap_or(0).saturating_sub(matched)),
                last_ack_ms,
            }
        })
        .collect();
    MemberList {
        leader: m.current_leader,
        term: m.current_term,
        last_log_index: last,
        membership_index: m.membership_config.log_id().as_ref().map(|l| l.index),
        members,
    }
}

/// The leader's reply as this node's answer.
fn decode_reply(reply: pb::MembersReply) -> Result<LeaderAnswer, String> {
    use pb::members_reply::Outcome;
    match reply.outcome {
        Some(Outcome::ListJson(json)) => serde_json::from_slice(&json)
            .map(LeaderAnswer::Done)
            .map_err(|e| format!("an unreadable member list from the leader: {e}")),
        Some(Outcome::NotLeader(not)) => Ok(LeaderAnswer::NotLeader(
            Some(not.leader_id).filter(|id| *id != 0),
        )),
        Some(Outcome::RefusedJson(json)) => serde_json::from_slice(&json)
            .map(LeaderAnswer::Refused)
            .map_err(|e| format!("an unreadable refusal from the leader: {e}")),
        Some(Outcome::Unavailable(problem)) => Ok(LeaderAnswer::Unavailable(problem)),
        None => Err("the leader's reply carries no outcome".to_owned()),
    }
}

/// This node's answer as a reply to the node that forwarded the request.
pub fn encode_reply(answer: LeaderAnswer) -> pb::MembersReply {
    use pb::members_reply::Outcome;
    let outcome = match answer {
        LeaderAnswer::Done(list) => match serde_json::to_vec(&list) {
            Ok(json) => Outcome::ListJson(json),
            Err(e) => Outcome::Unavailable(format!("encoding the member list: {e}")),
        },
        LeaderAnswer::NotLeader(leader) => Outcome::NotLeader(pb::NotLeader {
            leader_id: leader.unwrap_or(0),
        }),
        LeaderAnswer::Refused(refusal) => match serde_json::to_vec(&refusal) {
            Ok(json) => Outcome::RefusedJson(json),
            Err(e) => Outcome::Unavailable(format!("encoding the refusal: {e}")),
        },
        LeaderAnswer::Unavailable(problem) => Outcome::Unavailable(problem),
    };
    pb::MembersReply {
        outcome: Some(outcome),
    }
}
