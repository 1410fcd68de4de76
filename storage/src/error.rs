//! The crate's error type, and its single conversion into the `std::io::Error` openraft's
//! storage traits return.
//!
//! Every fallible operation in this crate returns [`StoreError`], which says *what* was being done
//! when it failed. At the openraft trait boundary it becomes an `io::Error` through the one
//! `From` impl below; openraft adds its own subject (logs, vote, state machine, snapshot) and verb.

use std::path::PathBuf;

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

    /// A log entry could not be encoded, or its stored bytes not decoded
    /// ([`crate::EntryCodec`]).
    #[error("log entry codec failed ({action}): {source}")]
    Entry {
        /// `encode` or `decode`, with the index where known.
        action: String,
        /// What the type config's codec reported.
        source: crate::EntryCodecError,
    },

    /// Data written by a release this one cannot read: a snapshot or log entry of a newer
    /// format. Nothing is applied; the node must be upgraded.
    #[error(
        "{what} has format {format}, which this release does not read ({reads}): upgrade this node"
    )]
    Format {
        /// What was read.
        what: String,
        /// Its format.
        format: u32,
        /// The formats this release reads.
        reads: String,
    },

    /// A backup was asked of a store that holds nothing yet.
    #[error("the store is empty: {what}")]
    Empty {
        /// What is missing.
        what: String,
    },

    /// A restore was asked into a database that already holds data.
    #[error("the database is not empty: {what}")]
    NotEmpty {
        /// What it holds.
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

    /// A thread of the store stopped before it answered (it panicked).
    #[error("the {what} thread stopped before it answered")]
    ThreadStopped {
        /// Which thread.
        what: &'static str,
    },

    /// A snapshot file could not be written or read, or is damaged.
    #[error("snapshot file: {op} failed: {source}")]
    SnapshotFile {
        /// What was being done, e.g. `"write the machine"`.
        op: &'static str,
        /// The error; `InvalidData` for a damaged file (a checksum that fails, a file cut
        /// short).
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

    /// A mapper of an I/O error on a snapshot file into [`StoreError::SnapshotFile`].
    pub(crate) fn snapshot_file(op: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| StoreError::SnapshotFile { op, source }
    }
}

/// The one place the crate's errors cross into openraft, whose storage traits report
/// `std::io::Error`: the kind says what class of failure it was (data that fails to decode or
/// breaks an invariant is `InvalidData`, everything else `Other`), and the [`StoreError`] itself
/// is kept as the source, so its whole chain of causes reaches openraft's logs.
impl From<StoreError> for std::io::Error {
    fn from(error: StoreError) -> Self {
        let kind = match &error {
            StoreError::Corrupt { .. } | StoreError::Codec { .. } | StoreError::Entry { .. } => {
                std::io::ErrorKind::InvalidData
            }
            StoreError::SnapshotFile { source, .. }
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                std::io::ErrorKind::InvalidData
            }
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_the_kind_and_the_cause() {
        let io: std::io::Error = StoreError::corrupt("hole in log").into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
        assert!(io.to_string().contains("hole in log"), "{io}");
        let inner = io
            .get_ref()
            .and_then(|e| e.downcast_ref::<StoreError>())
            .map(|e| matches!(e, StoreError::Corrupt { .. }));
        assert_eq!(inner, Some(true));
        let io: std::io::Error = StoreError::SyncerStopped.into();
        assert_eq!(io.kind(), std::io::ErrorKind::Other);
    }
}
