//! The cluster's members: as the cluster view shows them, and with their replication progress
//! as the membership API shows them.

use parley_raft::NodeInfo;
use parley_raft::{membership, upgrade, version};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One member in the cluster view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// The site (data center) the node runs in.
    pub site: String,
    /// `host:port` of the node's gRPC endpoint.
    pub grpc_addr: String,
    /// `host:port` of the node's HTTP endpoint.
    pub http_addr: String,
    /// `leader`, `follower` (a voter) or `learner` as far as the answering node knows.
    pub role: &'static str,
    /// Whether the answering node reaches it: it answered the answering node's probe (one a
    /// second) within `island_after`; `null` until the answering node has probed that long.
    pub reachable: Option<bool>,
    /// Whether it was an island when it last answered a probe; `null` if it never did.
    pub island: Option<bool>,
}

impl Member {
    /// The member `id` described by `info`, in `role`, with what the answering node's probes
    /// say of it.
    pub fn new(
        id: u64,
        info: &NodeInfo,
        role: &'static str,
        reachable: Option<bool>,
        island: Option<bool>,
    ) -> Self {
        Self {
            id,
            site: info.site.clone(),
            grpc_addr: info.grpc_addr.clone(),
            http_addr: info.http_addr.clone(),
            role,
            reachable,
            island,
        }
    }
}

/// A member's part in the cluster, as the membership API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// The voter that leads.
    Leader,
    /// A voter that follows.
    Voter,
    /// Receives the log, does not vote.
    Learner,
}

impl MemberRole {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        }
    }
}

impl From<membership::Role> for MemberRole {
    fn from(role: membership::Role) -> Self {
        match role {
            membership::Role::Leader => MemberRole::Leader,
            membership::Role::Voter => MemberRole::Voter,
            membership::Role::Learner => MemberRole::Learner,
        }
    }
}

/// One member with its replication progress, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberProgress {
    /// Node id.
    pub id: u64,
    /// Its site.
    pub site: String,
    /// `host:port` of its gRPC endpoint.
    pub grpc_addr: String,
    /// `host:port` of its HTTP endpoint.
    pub http_addr: String,
    /// Leader, voter or learner.
    pub role: MemberRole,
    /// The last log index the leader knows it holds (absent: nothing yet).
    pub matched_index: Option<u64>,
    /// How many entries it is behind the leader (absent: unknown).
    pub entries_behind: Option<u64>,
    /// Milliseconds since it last acknowledged the leader (absent: never).
    pub last_ack_ms: Option<u64>,
}

/// The members, as the leader sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Members {
    /// The leader that answered (absent: right after the leader removed itself, which shows
    /// the new membership without progress figures).
    pub leader: Option<u64>,
    /// Its term.
    pub term: u64,
    /// Its last log index.
    pub last_log_index: Option<u64>,
    /// Log index of the membership shown.
    pub membership_index: Option<u64>,
    /// Every member by id.
    pub members: Vec<MemberProgress>,
}

impl From<membership::MemberList> for Members {
    fn from(list: membership::MemberList) -> Self {
        Self {
            leader: list.leader,
            term: list.term,
            last_log_index: list.last_log_index,
            membership_index: list.membership_index,
            members: list
                .members
                .into_iter()
                .map(|m| MemberProgress {
                    id: m.id,
                    site: m.site,
                    grpc_addr: m.grpc_addr,
                    http_addr: m.http_addr,
                    role: m.role.into(),
                    matched_index: m.matched_index,
                    entries_behind: m.entries_behind,
                    last_ack_ms: m.last_ack_ms,
                })
                .collect(),
        }
    }
}

/// What one node's release reads, writes and implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Supported {
    /// Log format it writes.
    pub log_format: u32,
    /// Oldest log format it reads.
    pub log_format_min: u32,
    /// Snapshot format it writes.
    pub snapshot_format: u32,
    /// Oldest snapshot format it reads.
    pub snapshot_format_min: u32,
    /// Highest cluster version it implements.
    pub cluster_version_max: u32,
}

impl From<version::Supported> for Supported {
    fn from(s: version::Supported) -> Self {
        Self {
            log_format: s.log_format,
            log_format_min: s.log_format_min,
            snapshot_format: s.snapshot_format,
            snapshot_format_min: s.snapshot_format_min,
            cluster_version_max: s.cluster_version_max,
        }
    }
}

/// One member's release, as it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberVersions {
    /// Node id.
    pub id: u64,
    /// Whether it votes.
    pub voter: bool,
    /// What its release supports (absent: it did not answer).
    pub supported: Option<Supported>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The cluster version and what every member supports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Upgrade {
    /// The replicated cluster version.
    pub cluster_version: u32,
    /// The highest cluster version every member supports (absent while one does not answer):
    /// what `finalize` raises the cluster version to.
    pub common_version: Option<u32>,
    /// Every member.
    pub members: Vec<MemberVersions>,
}

impl From<upgrade::UpgradeStatus> for Upgrade {
    fn from(status: upgrade::UpgradeStatus) -> Self {
        Self {
            cluster_version: status.cluster_version,
            common_version: status.common_version,
            members: status
                .members
                .into_iter()
                .map(|m| MemberVersions {
                    id: m.id,
                    voter: m.voter,
                    supported: m.supported.map(Supported::from),
                    error: m.error,
                })
                .collect(),
        }
    }
}
