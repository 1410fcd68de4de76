//! The shared RocksDB handle: opening, column families, durability and I/O-scheduling policy.
//!
//! One [`Db`] is opened per node and shared (it is a cheap `Clone`) by the
//! [`LogStore`](crate::LogStore) and the [`StateMachineStore`](crate::StateMachineStore). Every
//! RocksDB call of the crate goes through [`Db::run`], so the choice between a blocking thread and
//! the calling task ([`IoMode`]) is made in exactly one place, and every write goes through
//! [`Db::write`], so the fsync choice ([`FsyncPolicy`]) is made in exactly one place too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, DBCompressionType, Options, WriteBatch, WriteOptions, DB};

use crate::error::StoreError;

/// Column family holding small metadata values: `vote`, `committed`, `last_purged` (JSON).
pub(crate) const CF_META: &str = "meta";
/// Column family holding the raft log: key = index as 8-byte big-endian, value = JSON entry.
pub(crate) const CF_LOGS: &str = "logs";
/// Column family holding the latest state-machine snapshot under the keys `meta` and `data`.
pub(crate) const CF_SNAPSHOT: &str = "snapshot";

/// Whether writes are fsynced before they are reported durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every log append batch, vote save, committed save and snapshot write is a RocksDB
    /// `WriteBatch` written with `WriteOptions::set_sync(true)`, and openraft is told it is durable
    /// only after that synced write returned. This is what Raft's safety argument requires.
    #[default]
    Always,
    /// No fsync. Only for throwaway tests and benchmarks: writes still reach the operating
    /// system (RocksDB hands each WAL record to the kernel), but an OS crash or power loss — or
    /// a kill of a VM/container without a clean page-cache flush — can lose the tail of the log,
    /// a vote, or a snapshot, which breaks Raft's guarantees.
    Never,
}

/// Where RocksDB calls run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoMode {
    /// Every RocksDB call runs in `tokio::task::spawn_blocking`, so async worker threads are never
    /// blocked by disk I/O. The production setting.
    #[default]
    Blocking,
    /// RocksDB calls run directly on the calling task. Used by the deterministic single-threaded
    /// simulator, where extra threads would break reproducibility.
    Inline,
}

/// How a [`Db`] behaves; fixed when it is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbOptions {
    /// Durability of writes; see [`FsyncPolicy`].
    pub fsync: FsyncPolicy,
    /// Scheduling of RocksDB calls; see [`IoMode`].
    pub io_mode: IoMode,
}

/// A shared handle to the node's RocksDB database with its column families and policies.
#[derive(Clone)]
pub struct Db {
    /// The database; shared by the log store, the state-machine store and their clones.
    inner: Arc<DB>,
    /// The policies chosen at open time.
    opts: DbOptions,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path())
            .field("opts", &self.opts)
            .finish()
    }
}

impl Db {
    /// Opens (creating if missing) the database at `path` with the column families `meta`,
    /// `logs` and `snapshot`.
    ///
    /// This is a synchronous call: it runs once at node start-up, before any async work.
    pub fn open(path: &Path, opts: DbOptions) -> Result<Db, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
            op: "create data directory",
            path: path.to_path_buf(),
            source,
        })?;

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_compression_type(DBCompressionType::Lz4);

        let db = DB::open_cf(&db_opts, path, [CF_META, CF_LOGS, CF_SNAPSHOT])
            .map_err(|source| StoreError::Rocks { op: "open", source })?;
        tracing::debug!(path = %path.display(), fsync = ?opts.fsync, io_mode = ?opts.io_mode, "opened rocksdb");
        Ok(Db {
            inner: Arc::new(db),
            opts,
        })
    }

    /// The policies this database was opened with.
    pub fn options(&self) -> DbOptions {
        self.opts
    }

    /// Total size in bytes of all files in the database directory (SST files, WAL, manifest,
    /// ...). Used by benchmarks to measure storage amplification. Synchronous: it walks the
    /// directory.
    pub fn size_on_disk_bytes(&self) -> Result<u64, StoreError> {
        dir_size(self.inner.path())
    }

    /// Runs `f` against the database according to the [`IoMode`]: on a blocking thread, or
    /// inline on the calling task.
    pub(crate) async fn run<T>(
        &self,
        f: impl FnOnce(&DB) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
    {
        match self.opts.io_mode {
            IoMode::Inline => f(&self.inner),
            IoMode::Blocking => {
                let db = Arc::clone(&self.inner);
                tokio::task::spawn_blocking(move || f(&db)).await?
            }
        }
    }

    /// Builds one `WriteBatch` with `fill` and writes it atomically, synced according to the
    /// [`FsyncPolicy`]. Returns only after RocksDB acknowledged the write (and, with
    /// [`FsyncPolicy::Always`], after it was fsynced).
    pub(crate) async fn write(
        &self,
        op: &'static str,
        fill: impl FnOnce(&DB, &mut WriteBatch) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let fsync = self.opts.fsync;
        self.run(move |db| {
            let mut batch = WriteBatch::default();
            fill(db, &mut batch)?;
            commit(db, batch, fsync, op)
        })
        .await
    }
}

/// Writes `batch` atomically, synced according to `fsync`. The one place the sync flag is set;
/// callers that must do reads and the write under one lock call it from inside [`Db::run`].
pub(crate) fn commit(
    db: &DB,
    batch: WriteBatch,
    fsync: FsyncPolicy,
    op: &'static str,
) -> Result<(), StoreError> {
    let mut write_opts = WriteOptions::default();
    write_opts.set_sync(fsync == FsyncPolicy::Always);
    db.write_opt(batch, &write_opts)
        .map_err(|source| StoreError::Rocks { op, source })
}

/// Looks up a column family handle, failing with a typed error if it is absent.
pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or(StoreError::MissingColumnFamily { name })
}

/// Reads and JSON-decodes one value; `Ok(None)` if the key is absent.
pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    db: &DB,
    cf_name: &'static str,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, StoreError> {
    let handle = cf(db, cf_name)?;
    let Some(bytes) = db
        .get_pinned_cf(handle, key)
        .map_err(|source| StoreError::Rocks { op: what, source })?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StoreError::Codec { what, source })
}

/// JSON-encodes a value for storage.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Codec { what, source })
}

/// Recursively sums the sizes of the regular files under `path`.
fn dir_size(path: &Path) -> Result<u64, StoreError> {
    let io_err = |op: &'static str, path: PathBuf| {
        move |source: std::io::Error| StoreError::Io { op, path, source }
    };
    let mut total = 0u64;
    let entries = std::fs::read_dir(path).map_err(io_err("read data directory", path.into()))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read data directory entry", path.into()))?;
        let entry_path = entry.path();
        let meta = entry
            .metadata()
            .map_err(io_err("stat data file", entry_path.clone()))?;
        if meta.is_dir() {
            total = total.saturating_add(dir_size(&entry_path)?);
        } else {
            total = total.saturating_add(meta.len());
        }
    }
    Ok(total)
}
