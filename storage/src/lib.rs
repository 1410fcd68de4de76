//! Durable storage for Parley's Raft group: the replicated log, the vote, and snapshots of the
//! contact-center state machine, all in one RocksDB database.
//!
//! # Layout
//!
//! - [`db`] — [`Db`], the shared RocksDB handle. Opens the column families `meta`, `logs`,
//!   `snapshot`, `archive` and `island_journal`, and owns the two policies every other module
//!   goes through: [`FsyncPolicy`] (whether writes are fsynced before they are reported durable)
//!   and [`IoMode`] (whether RocksDB calls run on a blocking thread or inline on the calling
//!   task).
//! - [`error`] — [`StoreError`], the crate's structured error, and its single conversion into
//!   the `std::io::Error` openraft's storage traits return.
//! - [`log_store`] — [`LogStore`], openraft's `RaftLogStorage` + `RaftLogReader`: log entries in
//!   `logs`, vote / committed / last-purged pointers in `meta`. One append = one batch, written
//!   at once and reported durable after the next WAL sync. The newest entries are kept decoded
//!   in memory for the reads that follow an append (replication, apply). How an entry is
//!   encoded is the type config's [`EntryCodec`] ([`entry_codec`]).
//! - `wal_sync` — the WAL syncer thread behind [`Db`]'s group commit: one fsync for every log
//!   append waiting when it starts.
//! - [`state_machine`] — [`StateMachineStore`], openraft's `RaftStateMachine` around an in-memory
//!   [`Machine`] (the application logic, implemented elsewhere), its [`SnapshotBuilder`], and the
//!   [`AppliedState`] watch channel readers subscribe to. Entries arrive as openraft's stream of
//!   entries with their writers' responders, applied a ready chunk at a time. Snapshots are
//!   persisted as files, which `snapshot` names.
//! - [`snapshot_file`] — [`SnapshotFile`] and [`SnapshotDir`]: a snapshot as a file of
//!   checksummed frames, written and read as a stream, kept in the database's snapshot
//!   directory; what openraft hands around as a snapshot's data.
//! - [`archive`] — what the machine retires from memory ([`ArchiveOp`]), kept in `archive`
//!   with an expiry and read back by key; the same on every replica, carried by the snapshots
//!   sent to other nodes.
//!
//! - [`journal`] — [`Journal`], the node-local island journal in `island_journal`: writes taken
//!   while cut off from the quorum, synced before they are answered, at positions never reused,
//!   truncated only once merged.
//! - [`backup`] — [`SnapshotCut`], a consistent cut of the store (machine, log position,
//!   membership and archive at one applied log id) and its bytes, and [`backup::restore`],
//!   which writes a cut into an empty database as a new cluster's starting state.
//!
//! # Recovery
//!
//! On restart the node opens the same [`Db`], creates a [`LogStore`] and calls
//! [`StateMachineStore::open`], which restores the machine from the last persisted snapshot.
//! openraft then reads the committed log id saved by the log store and re-applies the committed
//! entries after the snapshot, so the machine ends up exactly where it was.
//!
//! # Usage
//!
//! ```text
//! let db = Db::open(path, DbOptions::default())?;
//! let log_store = LogStore::<TypeConfig>::new(db.clone());
//! let state_machine = StateMachineStore::<TypeConfig, MyMachine>::open(db).await?;
//! let raft = openraft::Raft::<TypeConfig, _>::new(id, config, network, log_store, state_machine.clone()).await?;
//! ```

#![warn(missing_docs)]

pub mod archive;
pub mod backup;
pub mod close;
pub mod db;
pub mod entry_codec;
pub mod error;
pub mod journal;
pub mod log_store;
pub mod snapshot_file;
pub mod state_machine;
mod wal_sync;

pub use archive::{ArchiveOp, ArchivedRecord};
pub use backup::SnapshotCut;
pub use close::CloseWatch;
pub use db::{Db, DbOptions, FsyncPolicy, IoMode};
pub use entry_codec::{EntryCodec, EntryCodecError};
pub use error::StoreError;
pub use journal::{Journal, JournalBounds, JournalEntry};
pub use log_store::LogStore;
pub use snapshot_file::{SnapshotDir, SnapshotFile};
pub use state_machine::{
    decode_snapshot, AppliedState, EntryOfMachine, Machine, SnapshotBuilder, StateMachineStore,
};
