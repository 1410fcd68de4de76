//! Backups: a consistent cut of a store at one applied log id
//! ([`StateMachineStore::cut`](crate::StateMachineStore::cut)), its bytes, and its restore into
//! an empty database as the starting state of a new cluster.
//!
//! A cut's bytes are a snapshot file as nodes send each other ([`crate::snapshot_file`]): the
//! machine, its log position and membership, and the whole archive, in checksummed frames. Restoring writes what a node holds after
//! installing such a snapshot and purging its log up to it: the persisted snapshot (its file
//! and the record naming it), the archive, a vote at the snapshot's term and the committed log
//! id. openraft then starts from the snapshot with an
//! empty log whose next index follows the snapshot's, so the new cluster's log ids continue the
//! old one's and the machine sees the same indexes it would have seen there.

use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, StoredMembershipOf, VoteOf};
use openraft::RaftTypeConfig;
use rocksdb::{IteratorMode, WriteBatch, DB};

use crate::archive::{self, ArchiveOp, ArchivedRecord};
use crate::db::{cf, commit, to_json, Db, CF_ARCHIVE, CF_LOGS, CF_META, CF_SNAPSHOT};
use crate::error::StoreError;
use crate::log_store::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};
use crate::snapshot_file::{FrameWriter, Section, SnapshotDir, MAGIC};
use crate::state_machine::{
    decode_file_bytes, decode_payload, encode_file, FileRef, SnapshotPayload, KEY_SNAPSHOT_FILE,
    KEY_SNAPSHOT_META,
};
use crate::{FsyncPolicy, Machine};

/// A store's machine, log position, membership and archive at one applied log id.
#[derive(Clone, Debug)]
pub struct SnapshotCut<C: RaftTypeConfig, M> {
    /// The machine's snapshot format.
    pub format: u32,
    /// The last log id the cut covers.
    pub last_applied: LogIdOf<C>,
    /// The membership in effect at `last_applied`.
    pub last_membership: StoredMembershipOf<C>,
    /// The application state.
    pub machine: M,
    /// Every archived record (what the machine retired and has not expired).
    pub archive: Vec<ArchivedRecord>,
    /// What the machine retired that was not in the archive yet when the cut was taken; applied
    /// over `archive` (the operations are idempotent).
    pub archive_pending: Vec<ArchiveOp>,
}

impl<C: RaftTypeConfig, M: Machine> SnapshotCut<C, M> {
    /// The cut's bytes: a snapshot file carrying its archive, as nodes send each other
    /// ([`crate::snapshot_file`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        let payload = SnapshotPayload::<C, &M> {
            format: self.format,
            last_applied: Some(self.last_applied.clone()),
            last_membership: self.last_membership.clone(),
            machine: &self.machine,
            archive_pending: self.archive_pending.clone(),
            archive: None,
        };
        let file = StoreError::snapshot_file;
        let mut out = FrameWriter::new(Vec::new()).map_err(file("start"))?;
        serde_json::to_writer(&mut out, &payload).map_err(|source| StoreError::Codec {
            what: "snapshot data",
            source,
        })?;
        out.start(Section::Archive)
            .map_err(file("start the archive"))?;
        serde_json::to_writer(&mut out, &self.archive).map_err(|source| StoreError::Codec {
            what: "snapshot archive",
            source,
        })?;
        let (bytes, _) = out.finish().map_err(file("finish"))?;
        Ok(bytes)
    }

    /// Decodes a cut's bytes (a snapshot file, or the JSON cuts were before snapshot files),
    /// refusing a snapshot format this release does not read, a damaged file, a snapshot
    /// without a log position (an empty store) and one without its archive (a node's
    /// persisted snapshot, which is not a whole backup).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        let (payload, archive): (SnapshotPayload<C, M>, _) = if bytes.starts_with(MAGIC) {
            decode_file_bytes(bytes)?
        } else {
            let mut payload: SnapshotPayload<C, M> = decode_payload(bytes)?;
            let archive = payload.archive.take();
            (payload, archive)
        };
        let Some(last_applied) = payload.last_applied else {
            return Err(StoreError::corrupt("the snapshot covers no log entry"));
        };
        let Some(archive) = archive else {
            return Err(StoreError::corrupt(
                "the snapshot carries no archive: it is a node's own snapshot, not a backup",
            ));
        };
        if payload.last_membership.log_id().as_ref() > Some(&last_applied) {
            return Err(StoreError::corrupt(format!(
                "snapshot membership log id {:?} is past its last applied {last_applied:?}",
                payload.last_membership.log_id()
            )));
        }
        Ok(Self {
            format: payload.format,
            last_applied,
            last_membership: payload.last_membership,
            machine: payload.machine,
            archive,
            archive_pending: payload.archive_pending,
        })
    }
}

/// Writes `cut` into `db`, which must never have held anything, as a node's state after it
/// installed the cut as a snapshot: the persisted snapshot, the archive, `vote` and the
/// committed log id, each synced whatever the database's [`FsyncPolicy`]. The log stays empty;
/// openraft purges it up to the snapshot when it opens the store. Refused
/// ([`StoreError::NotEmpty`]) on a database that holds a vote, a log entry, a snapshot or an
/// archived record, and ([`StoreError::Corrupt`]) where the membership is newer than the cut.
pub async fn restore<C, M>(
    db: &Db,
    cut: SnapshotCut<C, M>,
    vote: VoteOf<C>,
) -> Result<(), StoreError>
where
    C: RaftTypeConfig,
    M: Machine,
{
    if cut.last_membership.log_id().as_ref() > Some(&cut.last_applied) {
        return Err(StoreError::corrupt(format!(
            "the membership's log id {:?} is past the snapshot's {:?}",
            cut.last_membership.log_id(),
            cut.last_applied
        )));
    }
    let dir = db.snapshot_dir().clone();
    db.run(move |raw| {
        refuse_unless_empty(raw)?;
        let meta = SnapshotMetaOf::<C> {
            last_log_id: Some(cut.last_applied.clone()),
            last_membership: cut.last_membership.clone(),
        };
        let committed = Some(cut.last_applied.clone());
        let local = SnapshotPayload::<C, &M> {
            format: cut.format,
            last_applied: Some(cut.last_applied.clone()),
            last_membership: cut.last_membership.clone(),
            machine: &cut.machine,
            archive_pending: Vec::new(),
            archive: None,
        };
        let mut pending = dir.create()?;
        let bytes = encode_file(&mut pending, &local, None)?;
        pending.sync()?;
        let name = SnapshotDir::file_name(cut.last_applied.index, 0);
        pending.keep(&dir, &name, bytes)?;

        let mut batch = WriteBatch::default();
        let snapshot_cf = cf(raw, CF_SNAPSHOT)?;
        batch.put_cf(
            snapshot_cf,
            KEY_SNAPSHOT_META,
            to_json(&meta, "snapshot meta")?,
        );
        batch.put_cf(
            snapshot_cf,
            KEY_SNAPSHOT_FILE,
            to_json(&FileRef { name, bytes }, "snapshot file")?,
        );
        let committed = to_json(&committed, "committed log id")?;
        let meta_cf = cf(raw, CF_META)?;
        batch.put_cf(meta_cf, KEY_VOTE, to_json(&vote, "vote")?);
        batch.put_cf(meta_cf, KEY_COMMITTED, &committed);
        batch.put_cf(meta_cf, KEY_LAST_PURGED, committed);
        archive::replace_all(raw, &mut batch, &cut.archive)?;
        commit(raw, batch, FsyncPolicy::Always, "restore snapshot")?;
        // A second batch: the reads a put makes must see the records above.
        let mut batch = WriteBatch::default();
        archive::write_ops(raw, &mut batch, &cut.archive_pending)?;
        commit(raw, batch, FsyncPolicy::Always, "restore pending archive")
    })
    .await
}

/// [`StoreError::NotEmpty`] unless `db` holds nothing in any column family.
fn refuse_unless_empty(db: &DB) -> Result<(), StoreError> {
    for name in [CF_META, CF_LOGS, CF_SNAPSHOT, CF_ARCHIVE] {
        if db
            .iterator_cf(cf(db, name)?, IteratorMode::Start)
            .next()
            .is_some()
        {
            return Err(StoreError::NotEmpty {
                what: format!("its {name} column family holds data"),
            });
        }
    }
    Ok(())
}
