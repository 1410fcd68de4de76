//! Backup and restore: a consistent snapshot of a live cluster saved to a file, checked and
//! described offline, and restored into fresh data directories as a new cluster.
//!
//! - [`file`]: the file format (a first line, a JSON header, the snapshot bytes) and its checks.
//! - [`take`]: a backup from a running replica, once it has applied what it knows committed.
//! - [`restore`](mod@restore): a backup written into an empty data directory as one node of a
//!   new cluster.
//!
//! The snapshot is a cut of one node's store at one applied log id (see
//! [`parley_storage::SnapshotCut`]): the machine, the membership and the whole archive, as one
//! node sends another. A restored cluster continues the source's log ids, has the members its
//! own configuration names and a cluster id of its own, so nodes of the source cluster can never
//! take it for theirs.

pub mod file;
pub mod restore;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parley_storage::SnapshotCut;

use crate::error::BackupError;
use crate::replica::Replica;
use crate::state::State;
use crate::types::TypeConfig;

pub use file::{BackupHeader, BackupLogId, BackupMember};
pub use restore::{restore, RestoreTarget, Restored};

/// A cut of the replicated state with the store's types.
pub type Cut = SnapshotCut<TypeConfig, State>;

/// A backup in memory: its header and its payload.
#[derive(Debug)]
pub struct Backup {
    /// What it holds.
    pub header: BackupHeader,
    /// The snapshot bytes.
    pub payload: Vec<u8>,
}

/// The header describing `cut` and its `payload`, taken by `node` of `cluster_id`.
pub fn describe(
    cut: &Cut,
    payload: &[u8],
    cluster_id: &str,
    node: crate::types::NodeId,
) -> Result<BackupHeader, BackupError> {
    let membership = cut.last_membership.membership();
    let voters: std::collections::BTreeSet<_> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, info)| BackupMember {
            id: *id,
            voter: voters.contains(id),
            site: info.site.clone(),
            grpc_addr: info.grpc_addr.clone(),
            http_addr: info.http_addr.clone(),
        })
        .collect();
    let state_digest = cut.machine.digest().map_err(BackupError::Header)?;
    Ok(BackupHeader {
        cluster_id: cluster_id.to_owned(),
        taken_by: node,
        taken_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        release: env!("CARGO_PKG_VERSION").to_owned(),
        snapshot_format: cut.format,
        log_id: BackupLogId {
            term: cut.last_applied.leader_id.term,
            leader: cut.last_applied.leader_id.node_id,
            index: cut.last_applied.index,
        },
        members,
        state_digest,
        chats: cut.machine.chats.len() as u64,
        activities: cut.machine.activities.len() as u64,
        archived_records: cut.archive.len() as u64,
        payload_bytes: payload.len() as u64,
        payload_blake3: blake3::hash(payload).to_hex().to_string(),
    })
}

/// Takes a backup of `replica`: asks the leader (through any node) for its last log index,
/// waits up to `catch_up` until this node has applied that far, then cuts its store and
/// encodes the cut off the async workers. Every write acknowledged before the call was committed
/// at or below that index, so the backup holds it, whichever node takes it.
pub async fn take(replica: &Replica, catch_up: Duration) -> Result<Backup, BackupError> {
    let leader = replica
        .members()
        .request(None, catch_up)
        .await
        .map_err(|e| BackupError::NotReady(format!("the leader's log index: {e}")))?;
    let target = leader.last_log_index;
    if !replica.wait_applied(target, catch_up).await {
        return Err(BackupError::NotReady(format!(
            "this node has not applied up to the leader's log index {target:?} within {} ms",
            catch_up.as_millis()
        )));
    }
    let cut = replica.store().cut().await?;
    let cluster_id = replica.cluster_id().to_owned();
    let node = replica.id();
    tokio::task::spawn_blocking(move || {
        let payload = cut.to_bytes()?;
        let header = describe(&cut, &payload, &cluster_id, node)?;
        Ok(Backup { header, payload })
    })
    .await
    .map_err(|e| BackupError::NotReady(format!("the backup task stopped: {e}")))?
}
