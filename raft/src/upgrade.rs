//! Rolling upgrades: what every member's release supports, and raising the cluster version
//! once all of them support it (see [`crate::version`]).
//!
//! Every member is asked, learners too: a learner applies the same log, so an operation it
//! cannot apply would stop it.

use std::time::Duration;

use parley_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::command::{Op, Outcome};
use crate::error::{Classified, ErrorClass, ProposeError};
use crate::network::Peers;
use crate::replica::Replica;
use crate::types::NodeId;
use crate::version::{self, Supported};

/// How long one member may take to say what it supports.
pub const VERSIONS_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a newly formed cluster's leader tries to raise its version until it is raised.
const NEW_CLUSTER_RAISE_INTERVAL: Duration = Duration::from_secs(1);

/// One member's release, as it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberVersions {
    /// The member.
    pub id: NodeId,
    /// Whether it votes.
    pub voter: bool,
    /// What its release supports; `None` if it did not answer.
    pub supported: Option<Supported>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The cluster version and what each member supports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeStatus {
    /// The replicated cluster version, as applied on the answering node.
    pub cluster_version: u32,
    /// The highest cluster version every member supports (`None` while one does not answer).
    pub common_version: Option<u32>,
    /// Every member.
    pub members: Vec<MemberVersions>,
}

/// Why the cluster version was not raised.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// A member did not say what it supports; raising the version could stop it.
    #[error("node {id} did not say what it supports ({problem}); bring it back or remove it")]
    Silent {
        /// The member.
        id: NodeId,
        /// Why.
        problem: String,
    },
    /// The write failed.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// The cluster refused the write.
    #[error("refused: {0}")]
    Refused(crate::command::Rejection),
}

impl Classified for UpgradeError {
    fn class(&self) -> ErrorClass {
        match self {
            UpgradeError::Silent { .. } => ErrorClass::Conflict,
            UpgradeError::Propose(error) => error.class(),
            UpgradeError::Refused(rejection) => rejection.class(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            UpgradeError::Silent { .. } => "member_silent",
            UpgradeError::Propose(error) => error.code(),
            UpgradeError::Refused(rejection) => rejection.code(),
        }
    }
}

/// Asks every member of `replica`'s cluster what its release supports.
pub async fn status(replica: &Replica) -> UpgradeStatus {
    let members = replica.status();
    // Asked all at once: a member that does not answer costs one timeout, not one each.
    let answers: Vec<MemberVersions> =
        futures::future::join_all(members.members.iter().map(|(id, info)| {
            let voter = members.voters.contains(id);
            async move {
                let (supported, error) = if *id == replica.id() {
                    (Some(version::SUPPORTED), None)
                } else {
                    match ask(replica.peers(), *id, &info.grpc_addr).await {
                        Ok(supported) => (Some(supported), None),
                        Err(problem) => (None, Some(problem)),
                    }
                };
                MemberVersions {
                    id: *id,
                    voter,
                    supported,
                    error,
                }
            }
        }))
        .await;
    let common_version = if answers.iter().all(|m| m.supported.is_some()) {
        version::common_cluster_version(answers.iter().filter_map(|m| m.supported.as_ref()))
    } else {
        None
    };
    UpgradeStatus {
        cluster_version: replica.read(|state, _| state.cluster_version.0),
        common_version,
        members: answers,
    }
}

/// Raises the cluster version to the highest every member supports, if that is above the
/// current one; the status after.
pub async fn finalize(replica: &Replica) -> Result<UpgradeStatus, UpgradeError> {
    let before = status(replica).await;
    if let Some(silent) = before.members.iter().find(|m| m.supported.is_none()) {
        return Err(UpgradeError::Silent {
            id: silent.id,
            problem: silent.error.clone().unwrap_or_default(),
        });
    }
    let Some(target) = before.common_version else {
        return Ok(before);
    };
    if target <= before.cluster_version {
        return Ok(before);
    }
    tracing::info!(
        from = before.cluster_version,
        to = target,
        "raising the cluster version"
    );
    match replica
        .propose(Op::SetClusterVersion { version: target })
        .await?
    {
        Outcome::Rejected(rejection) => Err(UpgradeError::Refused(rejection)),
        _ => Ok(status(replica).await),
    }
}

/// Raises a newly formed cluster to [`version::CLUSTER_VERSION_MAX`]: run by every node that
/// formed it ([`Replica::form_cluster`]); the leader among them proposes, once every member
/// answers. Ends when the version is raised or the replica shuts down; until then an operator
/// can raise it too (`parley ctl upgrade finalize`).
pub async fn raise_new_cluster(replica: Replica) {
    loop {
        tokio::time::sleep(NEW_CLUSTER_RAISE_INTERVAL).await;
        let current = replica.store().read(|state, _| state.cluster_version.0);
        if current >= version::CLUSTER_VERSION_MAX {
            return;
        }
        let status = replica.status();
        if status.role == "shutdown" {
            return;
        }
        if status.leader != Some(replica.id()) {
            continue;
        }
        match finalize(&replica).await {
            Ok(status) => tracing::info!(
                cluster_version = status.cluster_version,
                "raised the new cluster's version"
            ),
            Err(UpgradeError::Propose(ProposeError::ShuttingDown)) => return,
            Err(error) => tracing::debug!(%error, "raising the new cluster's version; will retry"),
        }
    }
}

/// Asks node `id` at `addr` what its release supports.
pub async fn ask(peers: &Peers, id: NodeId, addr: &str) -> Result<Supported, String> {
    let mut client = peers.cluster_client(id, addr).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(pb::VersionsRequest {});
    request.set_timeout(VERSIONS_TIMEOUT);
    let reply = tokio::time::timeout(VERSIONS_TIMEOUT, client.versions(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|status| status.message().to_owned())?
        .into_inner();
    crate::codec::decode(&reply.supported_json).map_err(|e| e.to_string())
}
