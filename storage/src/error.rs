//! The crate's error type, and its single conversion into openraft's [`StorageError`].
//!
//! Every fallible operation in this crate returns [`StoreError`], which says *what* was being done
//! when it failed. At the openraft trait boundary the error is wrapped, together with openraft's
//! own notion of the subject (logs, vote, state machine, snapshot) and verb (read, write, ...), by
//! [`StoreError::into_storage_error`] — the only place that conversion is written.

use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, NodeId, StorageError, StorageIOError};

/// Everything that can go wrong inside the storage crate.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A RocksDB call failed.
    #[error("rocksdb {op} failed: {source}")]
    Rocks {
        /// The operation that was running, e.g. `"append logs"`, so operators can tell which
        /// path failed without a backtrace.
        op: &'static str,
        /// The error reported by RocksDB.
        source: rocksdb::Error,
    },

    /// A filesystem call outside RocksDB failed (creating the data directory, measuring it).
    #[error("filesystem {op} failed for {}: {source}", path.display())]
    Io {
        /// The operation that was running.
        op: &'static str,
        /// The path it was running on.
        path: PathBuf,
        /// The error reported by the operating system.
        source: std::io::Error,
    },

    /// Encoding or decoding a persisted value failed.
    #[error("json codec failed for {what}: {source}")]
    Codec {
        /// Which value was being encoded or decoded, e.g. `"log entry"`.
        what: &'static str,
        /// The error reported by `serde_json`.
        source: serde_json::Error,
    },

    /// Persisted data decoded fine but violates an invariant of the store (a hole in the log, a
    /// snapshot whose metadata disagrees with its contents, a malformed key, ...).
    #[error("corrupt storage: {what}")]
    Corrupt {
        /// A description of the violated invariant.
        what: String,
    },

    /// A column family the store relies on is absent from the opened database.
    #[error("column family {name:?} is missing")]
    MissingColumnFamily {
        /// The name of the missing column family.
        name: &'static str,
    },

    /// A snapshot older than the one already persisted was offered for installation; accepting it
    /// would move the state machine backwards behind already purged logs.
    #[error(
        "snapshot regression: persisted snapshot covers {persisted}, offered one covers {offered}"
    )]
    SnapshotRegression {
        /// The last log id covered by the persisted snapshot.
        persisted: String,
        /// The last log id covered by the offered snapshot.
        offered: String,
    },

    /// A lock protecting in-memory state was poisoned by a panic in another thread (most likely a
    /// panicking [`Machine::apply`](crate::Machine::apply)); the state it guards can no longer be
    /// trusted.
    #[error("lock poisoned: {what}")]
    Poisoned {
        /// Which lock was poisoned.
        what: &'static str,
    },

    /// A thread of the store could not be started.
    #[error("starting the {what} thread failed: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The error reported by the operating system.
        source: std::io::Error,
    },

    /// The WAL syncer thread is gone, so a log append cannot be made durable.
    #[error("the wal syncer has stopped")]
    SyncerStopped,

    /// A blocking RocksDB task panicked or was cancelled.
    #[error("blocking storage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// Shorthand for a [`StoreError::Corrupt`] with the given description.
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt { what: what.into() }
    }

    /// Converts into openraft's error type, tagging it with openraft's subject and verb.
    ///
    /// This is the one place the crate's errors cross into openraft; the full cause chain is
    /// kept through [`AnyError::new`].
    pub fn into_storage_error<NID: NodeId>(
        self,
        subject: ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> StorageError<NID> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// Attaches openraft's subject and verb to a `Result<T, StoreError>` at the trait boundary.
// openraft's storage traits return its `StorageError` by value; its size is openraft's choice.
#[allow(clippy::result_large_err)]
pub(crate) trait ResultExt<T> {
    /// Maps the error with [`StoreError::into_storage_error`].
    fn sto<NID: NodeId>(
        self,
        subject: ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<NID>>;
}

impl<T> ResultExt<T> for Result<T, StoreError> {
    fn sto<NID: NodeId>(
        self,
        subject: ErrorSubject<NID>,
        verb: ErrorVerb,
    ) -> Result<T, StorageError<NID>> {
        self.map_err(|e| e.into_storage_error(subject, verb))
    }
}
