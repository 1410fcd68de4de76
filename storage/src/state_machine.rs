//! The state-machine side of openraft's storage: an in-memory [`Machine`] persisted through
//! snapshots.
//!
//! The machine itself lives in memory behind a lock; applying entries does no disk I/O. Durability
//! comes from two places:
//!
//! - **Snapshots.** Every snapshot, whether built locally ([`SnapshotBuilder`]) or received from
//!   the leader ([`RaftStateMachine::install_snapshot`]), is a file of checksummed frames in the
//!   database's snapshot directory ([`crate::snapshot_file`]), encoded and decoded as a stream
//!   (never one buffer of the whole state). The file is synced and renamed into place, then the
//!   `snapshot` column family is pointed at it (keys `meta` = JSON `SnapshotMeta`, `file` = JSON
//!   [`FileRef`]) in one synced batch; the replaced file is removed after. Nothing of a snapshot
//!   goes through the log's WAL but that small batch. A snapshot is built on a thread of its
//!   own at a lower priority than the write path ([`Db`]'s `run_background`).
//!   [`StateMachineStore::open`] restores the machine from it.
//! - **The log.** The [`LogStore`](crate::LogStore) persists the committed log id; at start-up
//!   openraft re-applies the committed entries after the snapshot, bringing the machine back to
//!   where it was.
//!
//! A snapshot file's state section is JSON of `{ format, last_applied, last_membership, machine,
//! archive_pending }`; a snapshot sent to another node adds an archive section (every archived
//! record) after it.
//!
//! A persisted snapshot is never replaced by an older one: a snapshot build that raced with a
//! newer snapshot install is returned to openraft but not persisted, because after an install the
//! log may already be purged up to the newer snapshot, and restarting from the older one would
//! leave a hole.
//!
//! openraft hands snapshots around as a [`SnapshotFile`] (the store's `SnapshotData`): an open
//! file, which the network layer streams to a peer in chunks.
//!
//! openraft hands committed entries to [`RaftStateMachine::apply`] as a stream, each with the
//! responder of the client write that proposed it (on the leader). The store applies whatever
//! the stream has ready, up to [`APPLY_CHUNK_ENTRIES_MAX`] entries, under one lock, writes what
//! they retired to the archive, publishes the new [`AppliedState`], and only then answers their
//! writers: a writer that hears "committed" finds its change in the machine.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{
    CommittedLeaderIdOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf,
};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, RaftTypeConfig, StoredMembership};
use rocksdb::{WriteBatch, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::archive::{self, ArchiveOp, ArchivedRecord};
use crate::backup::SnapshotCut;
use crate::db::{cf, commit, get_json, to_json, Db, CF_SNAPSHOT};
use crate::error::StoreError;
use crate::snapshot_file::{
    FrameReader, FrameWriter, PendingFile, Section, SnapshotDir, SnapshotFile,
};

/// `snapshot` key of the JSON [`SnapshotMeta`].
pub(crate) const KEY_SNAPSHOT_META: &[u8] = b"meta";
/// `snapshot` key of the JSON [`FileRef`]: which file holds the snapshot.
pub(crate) const KEY_SNAPSHOT_FILE: &[u8] = b"file";
/// `snapshot` key of the snapshot bytes as releases before snapshot files stored them; read
/// at open if no file is named, removed by the next snapshot persisted.
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// Most entries applied under one lock and answered together.
pub const APPLY_CHUNK_ENTRIES_MAX: usize = 64;

/// The log entry type a store for machine `M` applies: openraft's default entry carrying `M`'s
/// requests.
pub type EntryOfMachine<C, M> = openraft::Entry<
    CommittedLeaderIdOf<C>,
    EntryPayload<
        <M as Machine>::Request,
        <C as RaftTypeConfig>::NodeId,
        <C as RaftTypeConfig>::Node,
    >,
>;

/// The deterministic application logic the store persists and snapshots. Implemented by the
/// contact-center state machine in another crate; tests here use a toy key-value machine.
pub trait Machine: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The application request carried by a normal log entry (openraft's `D`).
    type Request: openraft::AppData;
    /// The result of applying one request (openraft's `R`).
    type Response: openraft::AppDataResponse;
    /// Apply one committed application request at `log_index`. Pure: no I/O, clock or randomness.
    fn apply(&mut self, log_index: u64, request: &Self::Request) -> Self::Response;
    /// The response openraft requires for a blank or membership entry.
    fn empty_response() -> Self::Response;
    /// The format of the snapshots this release writes, stored in each one.
    const SNAPSHOT_FORMAT: u32 = 1;
    /// The snapshot formats this release reads: a snapshot of another format is refused
    /// ([`StoreError::Format`]) instead of being misread.
    fn reads_snapshot_format(format: u32) -> bool {
        format == Self::SNAPSHOT_FORMAT
    }
    /// Whether this release can apply `request` (its format): an entry it cannot apply stops
    /// the node with [`StoreError::Format`] before anything of it is applied.
    fn check_request(_request: &Self::Request) -> Result<(), (u32, String)> {
        Ok(())
    }
    /// Checks the machine's own invariants, naming the first one broken. Debug builds assert
    /// it around persistence: on the copy a snapshot is built from, and on every machine
    /// restored from a snapshot (at open and at install). It may walk the whole machine.
    fn check_invariants(&self) -> Result<(), String> {
        Ok(())
    }
    /// Takes what the applies since the last call retired from the machine, in order, for the
    /// archive (see [`crate::archive`]). Called after every apply batch.
    fn take_archive(&mut self) -> Vec<ArchiveOp> {
        Vec::new()
    }
}

/// Asserts (debug builds only) that `machine` holds its invariants at `point`.
fn debug_check<M: Machine>(machine: &M, point: &str) {
    if cfg!(debug_assertions) {
        if let Err(broken) = machine.check_invariants() {
            panic!("state machine invariant broken {point}: {broken}");
        }
    }
}

/// What has been applied: published through a tokio `watch` channel after every apply batch and
/// after a snapshot install, so readers (e.g. the delivery of chat events) can wake up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState<C: RaftTypeConfig> {
    /// The id of the last log entry reflected in the machine; `None` before anything was applied.
    pub last_applied: Option<LogIdOf<C>>,
}

/// The bytes of a snapshot, decoded.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "M: Serialize", deserialize = "M: DeserializeOwned"))]
pub(crate) struct SnapshotPayload<C: RaftTypeConfig, M> {
    /// The machine's snapshot format ([`Machine::SNAPSHOT_FORMAT`] of the release that wrote
    /// it; absent, format 1, in snapshots written before formats were recorded).
    #[serde(default = "first_format")]
    pub(crate) format: u32,
    /// The last log id the snapshot covers; must equal `SnapshotMeta::last_log_id`.
    pub(crate) last_applied: Option<LogIdOf<C>>,
    /// The last membership the snapshot covers; must equal `SnapshotMeta::last_membership`.
    pub(crate) last_membership: StoredMembershipOf<C>,
    /// The application state.
    pub(crate) machine: M,
    /// Archive operations of applied entries not yet written when the machine was copied;
    /// written again on restore (they are idempotent).
    #[serde(default)]
    pub(crate) archive_pending: Vec<ArchiveOp>,
    /// The whole archive, in a snapshot sent to another node or kept as a backup; absent in
    /// the persisted one, whose node keeps its archive in its own column family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) archive: Option<Vec<ArchivedRecord>>,
}

impl<C: RaftTypeConfig, M> SnapshotPayload<C, M> {
    /// Checks that the payload agrees with the metadata it was stored or sent with.
    pub(crate) fn check_against(&self, meta: &SnapshotMetaOf<C>) -> Result<(), StoreError> {
        if self.last_applied != meta.last_log_id {
            return Err(StoreError::corrupt(format!(
                "snapshot contents cover {:?} but its meta says {:?}",
                self.last_applied, meta.last_log_id
            )));
        }
        if self.last_membership != meta.last_membership {
            return Err(StoreError::corrupt(format!(
                "snapshot at {:?} carries a different membership than its meta",
                meta.last_log_id
            )));
        }
        if self.last_membership.log_id().as_ref() > self.last_applied.as_ref() {
            return Err(StoreError::corrupt(format!(
                "snapshot membership log id {:?} is past its last applied {:?}",
                self.last_membership.log_id(),
                self.last_applied
            )));
        }
        Ok(())
    }
}

/// The format of data written before formats were recorded.
fn first_format() -> u32 {
    1
}

/// Decodes snapshot bytes, refusing a format this release does not read (also where the
/// machine of a newer format does not decode: the error then names the format, not a field).
pub(crate) fn decode_payload<C: RaftTypeConfig, M: Machine>(
    bytes: &[u8],
) -> Result<SnapshotPayload<C, M>, StoreError> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(default = "first_format")]
        format: u32,
    }
    let refused = |format: u32| StoreError::Format {
        what: "a snapshot".to_owned(),
        format,
        reads: format!("this release writes format {}", M::SNAPSHOT_FORMAT),
    };
    match serde_json::from_slice::<SnapshotPayload<C, M>>(bytes) {
        Ok(payload) if M::reads_snapshot_format(payload.format) => Ok(payload),
        Ok(payload) => Err(refused(payload.format)),
        Err(source) => match serde_json::from_slice::<Header>(bytes) {
            Ok(header) if !M::reads_snapshot_format(header.format) => Err(refused(header.format)),
            _ => Err(StoreError::Codec {
                what: "snapshot data",
                source,
            }),
        },
    }
}

/// What a snapshot holds, decoded as this release reads it: its format, the last log id it
/// covers and the machine (for inspection and backups; the archive is left out). `bytes` are a
/// whole snapshot file, or the JSON of its state section alone.
pub fn decode_snapshot<C: RaftTypeConfig, M: Machine>(
    bytes: &[u8],
) -> Result<(u32, Option<LogIdOf<C>>, M), StoreError> {
    let payload: SnapshotPayload<C, M> = if bytes.starts_with(crate::snapshot_file::MAGIC) {
        decode_file_bytes(bytes)?.0
    } else {
        decode_payload(bytes)?
    };
    Ok((payload.format, payload.last_applied, payload.machine))
}

/// A decoded snapshot file: its state and, if it has an archive section, the archive.
pub(crate) type DecodedFile<C, M> = (SnapshotPayload<C, M>, Option<Vec<ArchivedRecord>>);

/// Decodes a snapshot file: the state section and, if the file has one, the archive section.
/// A file whose frames fail their checks is [`StoreError::SnapshotFile`] (`InvalidData`); a
/// state of a format this release does not read is [`StoreError::Format`].
pub(crate) fn decode_file<C: RaftTypeConfig, M: Machine>(
    file: &SnapshotFile,
) -> Result<DecodedFile<C, M>, StoreError> {
    decode_frames(|| file.frames())
}

/// [`decode_file`] of a snapshot file's bytes in memory.
pub(crate) fn decode_file_bytes<C: RaftTypeConfig, M: Machine>(
    bytes: &[u8],
) -> Result<DecodedFile<C, M>, StoreError> {
    decode_frames(|| FrameReader::new(bytes))
}

/// Decodes the snapshot file `open` reads from its start (it may be opened twice: the second
/// time to read the format of a state that did not decode).
fn decode_frames<C: RaftTypeConfig, M: Machine, R: Read>(
    open: impl Fn() -> io::Result<FrameReader<R>>,
) -> Result<DecodedFile<C, M>, StoreError> {
    let open = || open().map_err(StoreError::snapshot_file("open"));
    let mut frames = open()?;
    let payload = decode_state::<C, M, _>(&mut frames, || {
        // The state did not decode: its format, read again from the start, may say why.
        #[derive(Deserialize)]
        struct Header {
            #[serde(default = "first_format")]
            format: u32,
        }
        let mut again = open().ok()?;
        let section = again.section_reader().ok()?;
        serde_json::from_reader::<_, Header>(section)
            .ok()
            .map(|h| h.format)
    })?;
    let archive = match frames
        .next_section()
        .map_err(StoreError::snapshot_file("read"))?
    {
        Section::Archive => {
            let section = frames
                .section_reader()
                .map_err(StoreError::snapshot_file("read"))?;
            Some(serde_json::from_reader(section).map_err(json_or_file("archive section"))?)
        }
        _ => None,
    };
    frames
        .finish()
        .map_err(StoreError::snapshot_file("read the end"))?;
    Ok((payload, archive))
}

/// Decodes the state section of `frames`, refusing a format this release does not read;
/// `format_of` reads the format alone where the whole state does not decode.
fn decode_state<C: RaftTypeConfig, M: Machine, R: Read>(
    frames: &mut FrameReader<R>,
    format_of: impl FnOnce() -> Option<u32>,
) -> Result<SnapshotPayload<C, M>, StoreError> {
    let refused = |format: u32| StoreError::Format {
        what: "a snapshot".to_owned(),
        format,
        reads: format!("this release writes format {}", M::SNAPSHOT_FORMAT),
    };
    if frames
        .next_section()
        .map_err(StoreError::snapshot_file("read"))?
        != Section::State
    {
        return Err(StoreError::corrupt("snapshot file without a state section"));
    }
    let section = frames
        .section_reader()
        .map_err(StoreError::snapshot_file("read"))?;
    match serde_json::from_reader::<_, SnapshotPayload<C, M>>(section) {
        Ok(payload) if M::reads_snapshot_format(payload.format) => Ok(payload),
        Ok(payload) => Err(refused(payload.format)),
        Err(source) if source.is_io() => Err(json_or_file("state section")(source)),
        Err(source) => match format_of() {
            Some(format) if !M::reads_snapshot_format(format) => Err(refused(format)),
            _ => Err(StoreError::Codec {
                what: "snapshot data",
                source,
            }),
        },
    }
}

/// Maps a JSON error while decoding a snapshot file: a failed read of the frames under it (a
/// checksum, a file cut short) is the file's error, anything else the codec's.
fn json_or_file(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |source| match source.io_error_kind() {
        Some(kind) => StoreError::SnapshotFile {
            op: what,
            source: io::Error::new(kind, source.to_string()),
        },
        None => StoreError::Codec {
            what: "snapshot data",
            source,
        },
    }
}

/// Writes a snapshot file to `pending`: `state` as its state section and, if given, `archive`
/// as its archive section. Returns the file's length in bytes.
pub(crate) fn encode_file<S: Serialize>(
    pending: &mut PendingFile,
    state: &S,
    archive: Option<&[ArchivedRecord]>,
) -> Result<u64, StoreError> {
    let mut out = pending
        .writer()
        .map_err(StoreError::snapshot_file("start"))?;
    serde_json::to_writer(&mut out, state).map_err(json_or_file("write the state"))?;
    if let Some(records) = archive {
        out.start(Section::Archive)
            .map_err(StoreError::snapshot_file("start the archive"))?;
        serde_json::to_writer(&mut out, records).map_err(json_or_file("write the archive"))?;
    }
    let (_, bytes) = out.finish().map_err(StoreError::snapshot_file("finish"))?;
    Ok(bytes)
}

/// Which snapshot file holds the persisted snapshot: stored under `file` in the `snapshot`
/// column family, beside its metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct FileRef {
    /// The file's name in the snapshot directory.
    pub(crate) name: String,
    /// The file's length in bytes.
    pub(crate) bytes: u64,
}

/// What became of a snapshot offered for persistence.
enum Offered {
    /// It is the node's snapshot now.
    Kept(SnapshotFile),
    /// A snapshot covering more of the log was persisted meanwhile; this one is returned
    /// without a name and goes when dropped.
    Superseded {
        /// The file offered.
        file: SnapshotFile,
        /// The last log id of the persisted snapshot.
        persisted: String,
    },
}

/// Where the persisted snapshot is.
enum Persisted {
    /// In a snapshot file.
    File(FileRef),
    /// In the database, as releases before snapshot files kept it.
    Bytes(Vec<u8>),
}

/// Reads which snapshot is persisted: `None` if there is none, an error if only half of it
/// exists.
fn read_persisted<C: RaftTypeConfig>(
    db: &DB,
) -> Result<Option<(SnapshotMetaOf<C>, Persisted)>, StoreError> {
    let meta: Option<SnapshotMetaOf<C>> =
        get_json(db, CF_SNAPSHOT, KEY_SNAPSHOT_META, "snapshot meta")?;
    let file: Option<FileRef> = get_json(db, CF_SNAPSHOT, KEY_SNAPSHOT_FILE, "snapshot file")?;
    let where_ = match file {
        Some(file) => Some(Persisted::File(file)),
        None => db
            .get_cf(cf(db, CF_SNAPSHOT)?, KEY_SNAPSHOT_DATA)
            .map_err(|source| StoreError::Rocks {
                op: "read snapshot data",
                source,
            })?
            .map(Persisted::Bytes),
    };
    match (meta, where_) {
        (None, None) => Ok(None),
        (Some(meta), Some(where_)) => Ok(Some((meta, where_))),
        (Some(_), None) => Err(StoreError::corrupt(
            "snapshot meta present without its data",
        )),
        (None, Some(_)) => Err(StoreError::corrupt("snapshot data present without meta")),
    }
}

/// Opens the persisted snapshot's file and checks its length against the record.
fn open_persisted(dir: &SnapshotDir, file: &FileRef) -> Result<SnapshotFile, StoreError> {
    let opened = dir.open_file(&file.name)?;
    if opened.len() != file.bytes {
        return Err(StoreError::corrupt(format!(
            "snapshot file {} is {} bytes, {} were written",
            file.name,
            opened.len(),
            file.bytes
        )));
    }
    Ok(opened)
}

/// The mutable in-memory state, guarded by one lock so readers see whole apply batches.
struct Inner<C: RaftTypeConfig, M> {
    /// The application state.
    machine: M,
    /// The id of the last entry applied to `machine`.
    last_applied: Option<LogIdOf<C>>,
    /// The last membership config applied, which openraft asks for at start-up.
    last_membership: StoredMembershipOf<C>,
    /// Archive operations the machine produced that are not in the archive yet, oldest first;
    /// readers consult them before the column family, so a retired record is never missing.
    pending: Vec<ArchiveOp>,
}

/// State shared by all clones of a [`StateMachineStore`] and its snapshot builders.
struct Shared<C: RaftTypeConfig, M> {
    /// Where snapshots are persisted.
    db: Db,
    /// The machine and its log position.
    inner: RwLock<Inner<C, M>>,
    /// Publishes [`AppliedState`] to subscribers.
    applied_tx: watch::Sender<AppliedState<C>>,
    /// Bytes of the snapshot file persisted or built last (0 before the first).
    snapshot_bytes: AtomicU64,
    /// Snapshots received from a leader and installed here since start.
    snapshots_installed: AtomicU64,
    /// Serializes "compare with the persisted snapshot, then overwrite it" between concurrent
    /// snapshot builds and installs. Only taken inside [`Db::run`], never across an await.
    snapshot_write: Mutex<()>,
    /// Makes the names of the snapshot files this process writes unique: starts at the time
    /// the store opened, so names never repeat across restarts either.
    file_seq: AtomicU64,
}

impl<C: RaftTypeConfig, M> Shared<C, M> {
    /// Persists the snapshot `meta` written to `pending` (already synced), unless the
    /// persisted one covers more of the log: renames the file into place, points the
    /// `snapshot` column family at it, writes `archive` (the records and the pending operations
    /// of an installed snapshot) with it, and removes the file it replaced.
    fn persist_snapshot(
        &self,
        db: &DB,
        meta: &SnapshotMetaOf<C>,
        pending: PendingFile,
        bytes: u64,
        archive: Option<(&[ArchivedRecord], &[ArchiveOp])>,
    ) -> Result<Offered, StoreError> {
        let meta_bytes = to_json(meta, "snapshot meta")?;
        let dir = self.db.snapshot_dir();
        let _guard = self
            .snapshot_write
            .lock()
            .map_err(|_| StoreError::Poisoned {
                what: "snapshot write lock",
            })?;
        let current: Option<SnapshotMetaOf<C>> =
            get_json(db, CF_SNAPSHOT, KEY_SNAPSHOT_META, "snapshot meta")?;
        if let Some(current) = current {
            if current.last_log_id > meta.last_log_id {
                return Ok(Offered::Superseded {
                    file: pending.unnamed(bytes),
                    persisted: format!("{:?}", current.last_log_id),
                });
            }
        }
        let index = meta.last_log_id.as_ref().map_or(0, |l| l.index);
        let name = SnapshotDir::file_name(index, self.file_seq.fetch_add(1, Ordering::Relaxed));
        let file = pending.keep(dir, &name, bytes)?;
        let file_ref = to_json(
            &FileRef {
                name: name.clone(),
                bytes,
            },
            "snapshot file",
        )?;
        let snapshot_cf = cf(db, CF_SNAPSHOT)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(snapshot_cf, KEY_SNAPSHOT_META, meta_bytes);
        batch.put_cf(snapshot_cf, KEY_SNAPSHOT_FILE, file_ref);
        batch.delete_cf(snapshot_cf, KEY_SNAPSHOT_DATA);
        // The batch is synced, and a WAL sync covers every write before it: the archive's
        // unsynced writes this snapshot relies on are durable with it.
        match archive {
            Some((records, pending)) => {
                archive::replace_all(db, &mut batch, records)?;
                commit(db, batch, self.db.options().fsync, "persist snapshot")?;
                // A second batch: the reads a put makes must see the replaced archive.
                let mut batch = WriteBatch::default();
                archive::write_ops(db, &mut batch, pending)?;
                commit(
                    db,
                    batch,
                    self.db.options().fsync,
                    "write archive of snapshot",
                )?;
            }
            None => commit(db, batch, self.db.options().fsync, "persist snapshot")?,
        }
        let removed = dir.remove_others(Some(&name), false)?;
        tracing::debug!(index, file = %name, bytes, removed, "persisted snapshot");
        Ok(Offered::Kept(file))
    }
}

/// openraft's state-machine storage ([`RaftStateMachine`]) around an in-memory [`Machine`].
///
/// Cheap to clone: all state is shared behind an `Arc`, so the node can keep a clone for reads
/// ([`Self::read`], [`Self::subscribe`]) while openraft owns another.
pub struct StateMachineStore<C: RaftTypeConfig, M: Machine> {
    /// Everything, shared between clones and snapshot builders.
    shared: Arc<Shared<C, M>>,
}

// Manual impl: a derive would demand `C: Clone` and `M: Clone` for cloning an `Arc`.
impl<C: RaftTypeConfig, M: Machine> Clone for StateMachineStore<C, M> {
    fn clone(&self) -> Self {
        StateMachineStore {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: RaftTypeConfig, M: Machine> std::fmt::Debug for StateMachineStore<C, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore")
            .field("db", &self.shared.db)
            .field("applied", &*self.shared.applied_tx.borrow())
            .finish_non_exhaustive()
    }
}

impl<C, M> StateMachineStore<C, M>
where
    C: RaftTypeConfig<D = M::Request, R = M::Response, Entry = EntryOfMachine<C, M>>,
    M: Machine,
{
    /// Opens on `db`: loads the persisted snapshot (if any) and restores the machine, last applied
    /// log id and membership from it.
    ///
    /// A snapshot whose contents disagree with its metadata is reported as
    /// [`StoreError::Corrupt`] rather than asserted, so a damaged disk never panics the node.
    pub async fn open(db: Db) -> Result<Self, StoreError> {
        let dir = db.snapshot_dir().clone();
        let restored = db
            .run(move |raw| {
                let persisted = read_persisted::<C>(raw)?;
                // What a crash left: a file half-written, or written and never recorded.
                let keep = match &persisted {
                    Some((_, Persisted::File(file))) => Some(file.name.as_str()),
                    _ => None,
                };
                let removed = dir.remove_others(keep, true)?;
                if removed > 0 {
                    tracing::info!(removed, "removed snapshot files no snapshot record names");
                }
                let Some((meta, persisted)) = persisted else {
                    return Ok(None);
                };
                let (payload, bytes) = match persisted {
                    Persisted::File(file) => {
                        let opened = open_persisted(&dir, &file)?;
                        let (payload, _) = decode_file::<C, M>(&opened)?;
                        (payload, file.bytes)
                    }
                    Persisted::Bytes(data) => (decode_payload::<C, M>(&data)?, data.len() as u64),
                };
                payload.check_against(&meta)?;
                debug_check(&payload.machine, "in the snapshot restored at open");
                write_archive(raw, &payload.archive_pending)?;
                Ok(Some((payload, bytes)))
            })
            .await?;

        let snapshot_bytes = restored.as_ref().map_or(0, |(_, bytes)| *bytes);
        let inner = match restored {
            Some((payload, _)) => {
                tracing::info!(
                    index = payload.last_applied.as_ref().map(|l| l.index),
                    "restored state machine from snapshot"
                );
                Inner {
                    machine: payload.machine,
                    last_applied: payload.last_applied,
                    last_membership: payload.last_membership,
                    pending: Vec::new(),
                }
            }
            None => {
                tracing::info!("no snapshot persisted, starting with an empty state machine");
                Inner {
                    machine: M::default(),
                    last_applied: None,
                    last_membership: StoredMembership::default(),
                    pending: Vec::new(),
                }
            }
        };
        let (applied_tx, _) = watch::channel(AppliedState {
            last_applied: inner.last_applied.clone(),
        });
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                db,
                inner: RwLock::new(inner),
                applied_tx,
                snapshot_bytes: AtomicU64::new(snapshot_bytes),
                snapshots_installed: AtomicU64::new(0),
                snapshot_write: Mutex::new(()),
                file_seq: AtomicU64::new(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                ),
            }),
        })
    }

    /// Runs `f` with a shared borrow of the machine and the last applied log id. Never held across
    /// an await.
    ///
    /// The signature is infallible, so a lock poisoned by a panicking [`Machine::apply`] is read
    /// through (and logged); the trait methods openraft calls do report poisoning as an error,
    /// which stops the Raft node.
    pub fn read<T>(&self, f: impl FnOnce(&M, Option<&LogIdOf<C>>) -> T) -> T {
        let inner = self.shared.inner.read().unwrap_or_else(|poisoned| {
            tracing::error!("state machine lock poisoned, reading possibly partial state");
            PoisonError::into_inner(poisoned)
        });
        f(&inner.machine, inner.last_applied.as_ref())
    }

    /// The archived record under `key` (see [`crate::archive`]): what the machine retired and
    /// has not expired yet. Consistent with [`Self::read`]: a record leaves the machine and
    /// becomes readable here in the same step.
    pub async fn archived(&self, key: &str) -> Result<Option<String>, StoreError> {
        let pending = {
            let inner = self.shared.inner.read().map_err(poisoned)?;
            archive::pending_lookup(&inner.pending, key)
        };
        if let Some(found) = pending {
            return Ok(found);
        }
        let key = key.to_owned();
        self.shared.db.run(move |db| archive::get(db, &key)).await
    }

    /// A consistent cut of the store for a backup (see [`crate::backup`]): the machine, the
    /// last applied log id and membership, and the archive, all at one applied log id. The
    /// machine is copied and a RocksDB snapshot taken under the state's read lock, so no apply
    /// runs between them; the archive is then read through that RocksDB snapshot, outside the
    /// lock. What the machine retired and is not written yet goes along as pending operations.
    /// Refused ([`StoreError::Empty`]) before anything was applied.
    pub async fn cut(&self) -> Result<SnapshotCut<C, M>, StoreError> {
        let shared = Arc::clone(&self.shared);
        self.shared
            .db
            .run(move |db| {
                let inner = shared.inner.read().map_err(poisoned)?;
                let Some(last_applied) = inner.last_applied.clone() else {
                    return Err(StoreError::Empty {
                        what: "nothing was applied yet".to_owned(),
                    });
                };
                let machine = inner.machine.clone();
                let last_membership = inner.last_membership.clone();
                let archive_pending = inner.pending.clone();
                let at = db.snapshot();
                drop(inner);
                let archive = archive::dump_at(db, &at)?;
                Ok(SnapshotCut {
                    format: M::SNAPSHOT_FORMAT,
                    last_applied,
                    last_membership,
                    machine,
                    archive,
                    archive_pending,
                })
            })
            .await
    }

    /// Bytes of the snapshot file this node persisted or built last (0 before the first): the
    /// machine without the archive.
    pub fn snapshot_bytes(&self) -> u64 {
        self.shared.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// How many snapshots a leader sent were installed here since the process started (a
    /// node that fell behind the leader's compacted log catches up so).
    pub fn snapshots_installed(&self) -> u64 {
        self.shared.snapshots_installed.load(Ordering::Relaxed)
    }

    /// The directory of the snapshot files (where a snapshot sent by a leader is received).
    pub fn snapshot_dir(&self) -> &SnapshotDir {
        self.shared.db.snapshot_dir()
    }

    /// A receiver that changes whenever something is applied or a snapshot is installed.
    pub fn subscribe(&self) -> watch::Receiver<AppliedState<C>> {
        self.shared.applied_tx.subscribe()
    }

    /// Applies committed `entries` in order and returns one response per entry: the whole of
    /// what [`RaftStateMachine::apply`] does to the machine, the archive and the
    /// [`AppliedState`], without openraft's stream and responders (tests and tools call it).
    pub async fn apply_entries(
        &self,
        entries: Vec<EntryOfMachine<C, M>>,
    ) -> Result<Vec<M::Response>, StoreError> {
        let (last_applied, retired, responses) = {
            let mut inner = self.shared.inner.write().map_err(poisoned)?;
            let mut responses = Vec::with_capacity(entries.len());
            // Nothing of a batch is applied if this release cannot apply all of it.
            for entry in &entries {
                if let EntryPayload::Normal(request) = &entry.payload {
                    M::check_request(request).map_err(|(format, reads)| StoreError::Format {
                        what: format!("the log entry at index {}", entry.log_id.index),
                        format,
                        reads,
                    })?;
                }
            }
            for entry in entries {
                let log_id = entry.log_id;
                let response = match entry.payload {
                    EntryPayload::Blank => M::empty_response(),
                    EntryPayload::Normal(request) => inner.machine.apply(log_id.index, &request),
                    EntryPayload::Membership(membership) => {
                        inner.last_membership =
                            StoredMembership::new(Some(log_id.clone()), membership);
                        M::empty_response()
                    }
                };
                inner.last_applied = Some(log_id);
                responses.push(response);
            }
            let retired = inner.machine.take_archive();
            inner.pending.extend(retired.iter().cloned());
            (inner.last_applied.clone(), retired, responses)
        };
        if !retired.is_empty() {
            let written = retired.len();
            self.shared
                .db
                .run(move |db| write_archive(db, &retired))
                .await?;
            let mut inner = self.shared.inner.write().map_err(poisoned)?;
            let written = written.min(inner.pending.len());
            inner.pending.drain(..written);
        }
        tracing::debug!(
            count = responses.len(),
            last = last_applied.as_ref().map(|l| l.index),
            "applied entries"
        );
        self.shared
            .applied_tx
            .send_replace(AppliedState { last_applied });
        Ok(responses)
    }
}

/// Writes `ops` to the archive in one unsynced batch: a crash may lose its tail, which the
/// log's replay writes again.
pub(crate) fn write_archive(db: &DB, ops: &[ArchiveOp]) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut batch = WriteBatch::default();
    archive::write_ops(db, &mut batch, ops)?;
    commit(db, batch, crate::FsyncPolicy::Never, "write archive")
}

/// Maps a poisoned state-machine lock to a [`StoreError`].
fn poisoned<T>(_: PoisonError<T>) -> StoreError {
    StoreError::Poisoned {
        what: "state machine lock",
    }
}

/// Builds, persists and returns a snapshot of a [`StateMachineStore`] (openraft's
/// [`RaftSnapshotBuilder`]). openraft runs it concurrently with further applies: it copies the
/// machine under the read lock and does the expensive part outside it.
pub struct SnapshotBuilder<C: RaftTypeConfig, M: Machine> {
    /// The store being snapshotted.
    shared: Arc<Shared<C, M>>,
}

impl<C, M> RaftSnapshotBuilder<C> for SnapshotBuilder<C, M>
where
    C: RaftTypeConfig<D = M::Request, R = M::Response, Entry = EntryOfMachine<C, M>>,
    M: Machine,
{
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, SnapshotFile>, io::Error> {
        let payload = {
            let inner = self.shared.inner.read().map_err(poisoned)?;
            SnapshotPayload::<C, M> {
                format: M::SNAPSHOT_FORMAT,
                last_applied: inner.last_applied.clone(),
                last_membership: inner.last_membership.clone(),
                machine: inner.machine.clone(),
                archive_pending: inner.pending.clone(),
                archive: None,
            }
        };
        let index = payload.last_applied.as_ref().map(|l| l.index);
        let meta = SnapshotMetaOf::<C> {
            last_log_id: payload.last_applied.clone(),
            last_membership: payload.last_membership.clone(),
        };

        let shared = Arc::clone(&self.shared);
        let persist_meta = meta.clone();
        let (file, bytes) = self
            .shared
            .db
            .run_background("snapshot", move |db| {
                debug_check(&payload.machine, "in a snapshot about to be persisted");
                let mut pending = shared.db.snapshot_dir().create()?;
                let bytes = encode_file(&mut pending, &payload, None)?;
                drop(payload);
                pending.sync()?;
                let file = match shared.persist_snapshot(db, &persist_meta, pending, bytes, None)? {
                    Offered::Kept(file) => file,
                    Offered::Superseded { file, persisted } => {
                        tracing::info!(
                            index,
                            persisted,
                            "a newer snapshot is already persisted, not persisting the built one"
                        );
                        file
                    }
                };
                Ok((file, bytes))
            })
            .await?;
        tracing::debug!(index, bytes, "built snapshot");
        self.shared.snapshot_bytes.store(bytes, Ordering::Relaxed);
        Ok(SnapshotOf::<C, SnapshotFile> {
            meta,
            snapshot: file,
        })
    }
}

impl<C, M> RaftStateMachine<C> for StateMachineStore<C, M>
where
    C: RaftTypeConfig<D = M::Request, R = M::Response, Entry = EntryOfMachine<C, M>>,
    M: Machine,
{
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder<C, M>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = self.shared.inner.read().map_err(poisoned)?;
        Ok((inner.last_applied.clone(), inner.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let mut chunks = entries.ready_chunks(APPLY_CHUNK_ENTRIES_MAX);
        while let Some(chunk) = chunks.next().await {
            let mut batch = Vec::with_capacity(chunk.len());
            let mut responders = Vec::with_capacity(chunk.len());
            for item in chunk {
                let (entry, responder) = item?;
                batch.push(entry);
                responders.push(responder);
            }
            let responses = self.apply_entries(batch).await?;
            for (responder, response) in responders.into_iter().zip(responses) {
                if let Some(responder) = responder {
                    responder.send(response);
                }
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let shared = Arc::clone(&self.shared);
        let persist_meta = meta.clone();
        let (payload, size) = self
            .shared
            .db
            .run(move |db| {
                let (mut payload, records) = decode_file::<C, M>(&snapshot)?;
                payload.check_against(&persist_meta)?;
                debug_check(&payload.machine, "in a snapshot received for install");
                // The archive travels with the snapshot but is kept in its own column family:
                // the persisted copy is the state section alone, its frames checked again on
                // the way.
                let mut pending = shared.db.snapshot_dir().create()?;
                let size = copy_state(&snapshot, &mut pending)?;
                pending.sync()?;
                let archive_pending = std::mem::take(&mut payload.archive_pending);
                let with_archive = records
                    .as_deref()
                    .map(|records| (records, archive_pending.as_slice()));
                let offered =
                    shared.persist_snapshot(db, &persist_meta, pending, size, with_archive)?;
                if let Offered::Superseded { persisted, .. } = offered {
                    // Installing it would take the machine back behind a persisted snapshot.
                    return Err(StoreError::SnapshotRegression {
                        persisted,
                        offered: format!("{:?}", persist_meta.last_log_id),
                    });
                }
                if records.is_none() {
                    write_archive(db, &archive_pending)?;
                }
                Ok((payload, size))
            })
            .await?;

        let last_applied = payload.last_applied.clone();
        {
            let mut inner = self.shared.inner.write().map_err(poisoned)?;
            *inner = Inner {
                machine: payload.machine,
                last_applied: payload.last_applied,
                last_membership: payload.last_membership,
                pending: Vec::new(),
            };
        }
        tracing::info!(
            index = last_applied.as_ref().map(|l| l.index),
            size,
            "installed snapshot"
        );
        self.shared.snapshot_bytes.store(size, Ordering::Relaxed);
        self.shared
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .applied_tx
            .send_replace(AppliedState { last_applied });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, SnapshotFile>>, io::Error> {
        // The snapshot sent to a node carries the archive as it is now: newer than the machine
        // at the snapshot's index, which the entries replayed after it make consistent again.
        let shared = Arc::clone(&self.shared);
        let current = self
            .shared
            .db
            .run_background("snapshot-send", move |db| {
                let Some((meta, persisted)) = read_persisted::<C>(db)? else {
                    return Ok(None);
                };
                let dir = shared.db.snapshot_dir();
                let mut pending = dir.create()?;
                let records = archive::dump(db)?;
                let bytes = match persisted {
                    Persisted::File(file) => {
                        let persisted = open_persisted(dir, &file)?;
                        let mut frames = persisted
                            .frames()
                            .map_err(StoreError::snapshot_file("open"))?;
                        let mut out = pending
                            .writer()
                            .map_err(StoreError::snapshot_file("start"))?;
                        out.copy_section(&mut frames)
                            .map_err(StoreError::snapshot_file("copy the state"))?;
                        out.start(Section::Archive)
                            .map_err(StoreError::snapshot_file("start the archive"))?;
                        serde_json::to_writer(&mut out, &records)
                            .map_err(json_or_file("write the archive"))?;
                        out.finish().map_err(StoreError::snapshot_file("finish"))?.1
                    }
                    Persisted::Bytes(data) => {
                        let payload: SnapshotPayload<C, M> = decode_payload(&data)?;
                        encode_file(&mut pending, &payload, Some(&records))?
                    }
                };
                Ok(Some((meta, pending.unnamed(bytes))))
            })
            .await?;
        Ok(current.map(|(meta, snapshot)| SnapshotOf::<C, SnapshotFile> { meta, snapshot }))
    }
}

/// Copies the state section of `from` to `to` as a snapshot file of its own (no archive);
/// returns its length in bytes.
fn copy_state(from: &SnapshotFile, to: &mut PendingFile) -> Result<u64, StoreError> {
    let mut frames = from.frames().map_err(StoreError::snapshot_file("open"))?;
    let mut out: FrameWriter<_> = to.writer().map_err(StoreError::snapshot_file("start"))?;
    out.copy_section(&mut frames)
        .map_err(StoreError::snapshot_file("copy the state"))?;
    let (_, bytes) = out.finish().map_err(StoreError::snapshot_file("finish"))?;
    Ok(bytes)
}
