//! A backup written into an empty data directory as one node of a new cluster.
//!
//! Every node of the new cluster is restored from the same file with its own configuration:
//! the same members (the configuration's `peers`, all voters) and the same cluster id, which
//! must differ from the source's. Each then holds the same snapshot at the source's log id with
//! the new membership, a vote at that log id's term (so the first election runs at a later
//! term and the new leader's entries follow the snapshot's) and an empty log. Started, they
//! elect a leader among themselves and go on from the next index; a node started with
//! `cluster_state = "new"` finds its store formed and does not form another.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use openraft::{Membership, StoredMembership};
use parley_storage::{Db, DbOptions, FsyncPolicy, IoMode, Machine};

use crate::backup::file::{self, BackupHeader};
use crate::backup::Cut;
use crate::error::BackupError;
use crate::types::{NodeId, NodeInfo, Vote};

/// Where and as what a backup is restored.
#[derive(Clone, Debug)]
pub struct RestoreTarget {
    /// The node's data directory: absent or empty.
    pub data_dir: PathBuf,
    /// The node being restored.
    pub node_id: NodeId,
    /// The new cluster's id: not the source's.
    pub cluster_id: String,
    /// The new cluster's members, all voters; `node_id` among them.
    pub members: BTreeMap<NodeId, NodeInfo>,
}

/// What a restore wrote.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The backup's header.
    pub header: BackupHeader,
    /// The state digest of the restored state (equal to the header's).
    pub state_digest: String,
}

/// Whether `dir` is absent or an empty directory.
fn is_fresh(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(BackupError::Io {
            what: format!("reading {}", dir.display()),
            source,
        }),
    }
}

/// Checks `backup` and writes it into `target.data_dir` as one node of a new cluster (see the
/// module docs). Nothing is written unless the file is whole (length and checksum), decodes as
/// a snapshot this release reads, and its state has the digest its header records.
pub async fn restore(backup: &Path, target: &RestoreTarget) -> Result<Restored, BackupError> {
    if !target.members.contains_key(&target.node_id) {
        return Err(BackupError::Refused(format!(
            "node {} is not among the new cluster's members {:?}",
            target.node_id,
            target.members.keys().collect::<Vec<_>>()
        )));
    }
    if !is_fresh(&target.data_dir)? {
        return Err(BackupError::Refused(format!(
            "{} is not empty: a backup is restored into a fresh data directory only",
            target.data_dir.display()
        )));
    }
    let opened = std::fs::File::open(backup).map_err(|source| BackupError::Io {
        what: format!("opening {}", backup.display()),
        source,
    })?;
    let mut input = BufReader::new(opened);
    let header = file::read_header(&mut input)?;
    if header.cluster_id == target.cluster_id {
        return Err(BackupError::Refused(format!(
            "the backup comes from cluster {:?}: the restored cluster needs a cluster_id of its \
             own, so that nodes of the source never take it for theirs",
            header.cluster_id
        )));
    }
    let (header, mut cut, state_digest) = tokio::task::spawn_blocking(move || {
        let payload = file::read_payload(&mut input, &header)?;
        let cut = Cut::from_bytes(&payload)?;
        cut.machine.check_invariants().map_err(|broken| {
            BackupError::Refused(format!("the backup's state is broken: {broken}"))
        })?;
        let state_digest = cut.machine.digest().map_err(BackupError::Header)?;
        if state_digest != header.state_digest {
            return Err(BackupError::Digest {
                expected: header.state_digest.clone(),
                found: state_digest,
            });
        }
        Ok::<_, BackupError>((header, cut, state_digest))
    })
    .await
    .map_err(|e| BackupError::NotReady(format!("the restore task stopped: {e}")))??;
    let voters: BTreeSet<NodeId> = target.members.keys().copied().collect();
    let membership = Membership::new(vec![voters], target.members.clone())
        .map_err(|e| BackupError::Refused(format!("the new members: {e}")))?;
    cut.last_membership = StoredMembership::new(Some(cut.last_applied), membership);
    let term = cut.last_applied.leader_id.term;
    let vote = Vote::new(term, cut.last_applied.leader_id.node_id);

    std::fs::create_dir_all(&target.data_dir).map_err(|source| BackupError::Io {
        what: format!("creating {}", target.data_dir.display()),
        source,
    })?;
    let db = Db::open(
        &target.data_dir,
        DbOptions {
            fsync: FsyncPolicy::Always,
            io_mode: IoMode::Blocking,
        },
    )?;
    parley_storage::backup::restore(&db, cut, vote).await?;
    Ok(Restored {
        header,
        state_digest,
    })
}
