//! The shared RocksDB handle: opening, column families, durability and I/O-scheduling policy.
//!
//! One [`Db`] is opened per node and shared (it is a cheap `Clone`) by the
//! [`LogStore`](crate::LogStore) and the [`StateMachineStore`](crate::StateMachineStore). Every
//! RocksDB call of the crate goes through [`Db::run`], so the choice between a blocking thread and
//! the calling task ([`IoMode`]) is made in exactly one place, and every write goes through
//! [`Db::write`] (or, for the log, [`Db::append`]), so the fsync choice ([`FsyncPolicy`]) is made
//! in exactly one place too.
//!
//! # Group commit of the log
//!
//! openraft asks a log append to return as soon as the entries are readable and to report
//! durability later, through a callback. [`Db::append`] does exactly that: the entries are
//! written to RocksDB without a sync (readable at once), and the callback goes to the
//! database's WAL syncer ([`crate::wal_sync`]), a thread that syncs RocksDB's WAL once for every
//! append waiting at that moment and then calls their callbacks in order. The Raft core is never
//! blocked on an fsync, replication to followers starts while the leader's own sync runs, and
//! appends arriving during a sync share the next one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{ColumnFamily, DBCompressionType, Options, WriteBatch, WriteOptions, DB};

use crate::close::{CloseWatch, OpenDb};
use crate::error::StoreError;
use crate::snapshot_file::SnapshotDir;
use crate::wal_sync::{Durable, WalSyncer};

/// Column family holding small metadata values: `vote`, `committed`, `last_purged` (JSON).
pub(crate) const CF_META: &str = "meta";
/// Column family holding the raft log: key = index as 8-byte big-endian, value = JSON entry.
pub(crate) const CF_LOGS: &str = "logs";
/// Column family holding the latest state-machine snapshot under the keys `meta` and `data`.
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
/// Column family holding the records the machine retired from memory (see [`crate::archive`]).
pub(crate) const CF_ARCHIVE: &str = "archive";
/// Column family holding the node's island journal (see [`crate::journal`]); node-local.
pub(crate) const CF_JOURNAL: &str = "island_journal";

/// Most bytes of WAL files kept before the column families pinning the oldest are flushed.
const WAL_TOTAL_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The directory, inside the database's, that holds the snapshot files
/// ([`crate::snapshot_file`]).
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";

/// Nice value of the threads snapshots are built on ([`Db::run_background`]). Under Linux's
/// scheduler a thread at nice 10 weighs 110 against 1,024 for the node's other threads: when
/// they want the cores it gets about a tenth of a core's share, when they do not it gets all
/// of it.
pub const BACKGROUND_THREAD_NICE: i32 = 10;

/// Whether writes are fsynced before they are reported durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every vote save, truncation, purge and snapshot write is a RocksDB `WriteBatch` written
    /// with `WriteOptions::set_sync(true)`. A log append is reported durable to openraft only
    /// after RocksDB's WAL was synced past it (group commit, see the module docs). This is what
    /// Raft's safety argument requires. The committed log id alone is written without a sync: it
    /// is a hint, and openraft recovers from an older one (see `LogStore::save_committed`).
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
    inner: Arc<OpenDb>,
    /// The policies chosen at open time.
    opts: DbOptions,
    /// Syncs the WAL for log appends; only with [`FsyncPolicy::Always`] and [`IoMode::Blocking`]
    /// (inline I/O syncs each append in place, so the simulator stays on one thread).
    syncer: Option<Arc<WalSyncer>>,
    /// Log appends so far (shared by clones), for metrics: with [`Db::wal_syncs`] it tells how
    /// many appends one fsync carried.
    appends: Arc<AtomicU64>,
    /// Bytes of encoded log entries appended so far (shared by clones): what a snapshot
    /// triggered by size measures.
    log_bytes: Arc<AtomicU64>,
    /// Where the snapshot files are kept.
    snapshots: SnapshotDir,
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
    /// `logs`, `snapshot`, `archive` and `island_journal`.
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
        // A WAL file is deleted only once every column family with writes in it was flushed;
        // `meta` takes a few small writes (the committed log id) and would otherwise hold
        // every WAL file forever. Past this total, RocksDB flushes the column families that
        // pin the oldest file.
        db_opts.set_max_total_wal_size(WAL_TOTAL_BYTES_MAX);

        let db = DB::open_cf(
            &db_opts,
            path,
            [CF_META, CF_LOGS, CF_SNAPSHOT, CF_ARCHIVE, CF_JOURNAL],
        )
        .map_err(|source| StoreError::Rocks { op: "open", source })?;
        let snapshots = SnapshotDir::open(path.join(SNAPSHOT_DIR_NAME), opts.io_mode)?;
        tracing::debug!(path = %path.display(), fsync = ?opts.fsync, io_mode = ?opts.io_mode, "opened rocksdb");
        let inner = Arc::new(OpenDb::new(db));
        let syncer = match (opts.fsync, opts.io_mode) {
            (FsyncPolicy::Always, IoMode::Blocking) => Some(Arc::new(WalSyncer::start(&inner)?)),
            _ => None,
        };
        Ok(Db {
            inner,
            opts,
            syncer,
            appends: Arc::new(AtomicU64::new(0)),
            log_bytes: Arc::new(AtomicU64::new(0)),
            snapshots,
        })
    }

    /// The directory of this database's snapshot files.
    pub fn snapshot_dir(&self) -> &SnapshotDir {
        &self.snapshots
    }

    /// A watch that tells when this database has closed (every handle dropped, RocksDB's close
    /// returned, the WAL syncer's thread ended): a process waits on it before it exits.
    pub fn close_watch(&self) -> CloseWatch {
        self.inner.watch()
    }

    /// The policies this database was opened with.
    pub fn options(&self) -> DbOptions {
        self.opts
    }

    /// The RocksDB handle itself, for tests of this crate.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &DB {
        &self.inner
    }

    /// The RocksDB handle, for blocking calls made once at start-up.
    pub(crate) fn inner(&self) -> &DB {
        &self.inner
    }

    /// How many WAL syncs log appends have waited for so far (0 unless appends are group
    /// committed: [`FsyncPolicy::Always`] with [`IoMode::Blocking`]).
    pub fn wal_syncs(&self) -> u64 {
        self.syncer.as_ref().map_or(0, |syncer| syncer.syncs())
    }

    /// How many log appends were written so far.
    pub fn log_appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// How many bytes of encoded log entries were appended so far.
    pub fn log_bytes_appended(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// Counts `bytes` more of appended log entries.
    pub(crate) fn count_log_bytes(&self, bytes: u64) {
        self.log_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The node-local value `name`: kept in `meta` beside the vote, never replicated, never in
    /// a snapshot or a backup (e.g. the island epoch). Blocking: call it off the async workers
    /// where that matters.
    pub fn local_u64(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let key = local_key(name);
        let value = self
            .inner
            .get_cf(cf(&self.inner, CF_META)?, &key)
            .map_err(|source| StoreError::Rocks {
                op: "read local value",
                source,
            })?;
        value
            .map(|bytes| {
                <[u8; 8]>::try_from(bytes.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::corrupt(format!("local value {name} is not 8 bytes")))
            })
            .transpose()
    }

    /// Writes the node-local value `name` (see [`Db::local_u64`]), synced before it returns.
    /// Blocking: call it off the async workers.
    pub fn put_local_u64(&self, name: &str, value: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf(&self.inner, CF_META)?,
            local_key(name),
            value.to_be_bytes(),
        );
        commit(&self.inner, batch, FsyncPolicy::Always, "write local value")
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

    /// Runs `f` against the database at a lower priority than the node's other work: on a
    /// thread of its own at nice [`BACKGROUND_THREAD_NICE`] in production (named
    /// `parley-{what}`), inline under the deterministic simulator. For long jobs that must not
    /// take the cores from the write path, such as building a snapshot.
    pub(crate) async fn run_background<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&DB) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
    {
        match self.opts.io_mode {
            IoMode::Inline => f(&self.inner),
            IoMode::Blocking => {
                let db = Arc::clone(&self.inner);
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name(format!("parley-{what}"))
                    .spawn(move || {
                        lower_priority(what);
                        let result = f(&db);
                        // Released before the answer: whoever hears it may close the database.
                        drop(db);
                        // The caller may have gone (openraft shutting down): nothing to tell.
                        let _ = tx.send(result);
                    })
                    .map_err(|source| StoreError::Thread { what, source })?;
                rx.await.map_err(|_| StoreError::ThreadStopped { what })?
            }
        }
    }

    /// Runs `f`, a blocking call on this database (or on state kept in it, such as a clock's
    /// persisted bound), according to the [`IoMode`]: on a blocking thread in production,
    /// inline under the deterministic simulator (where an extra thread's timing would make a
    /// run depend on the machine).
    pub async fn blocking<T>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, StoreError>
    where
        T: Send + 'static,
    {
        match self.opts.io_mode {
            IoMode::Inline => Ok(f()),
            IoMode::Blocking => Ok(tokio::task::spawn_blocking(f).await?),
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
        self.write_with(op, self.opts.fsync, fill).await
    }

    /// Builds one `WriteBatch` with `fill` and writes it without a sync, for values that are
    /// hints a crash may roll back (the committed log id). Readable once this returns.
    pub(crate) async fn write_unsynced(
        &self,
        op: &'static str,
        fill: impl FnOnce(&DB, &mut WriteBatch) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.write_with(op, FsyncPolicy::Never, fill).await
    }

    /// Builds one `WriteBatch` with `fill` and writes it atomically, synced by `fsync`.
    async fn write_with(
        &self,
        op: &'static str,
        fsync: FsyncPolicy,
        fill: impl FnOnce(&DB, &mut WriteBatch) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.run(move |db| {
            let mut batch = WriteBatch::default();
            fill(db, &mut batch)?;
            commit(db, batch, fsync, op)
        })
        .await
    }

    /// Writes one `WriteBatch` built by `fill` so that it is readable when this returns, and
    /// calls `durable` once it is on disk according to the [`FsyncPolicy`]: right away without
    /// fsync; after the WAL syncer's next sync when group committing; in place with inline I/O.
    /// If the write fails, `durable` is called with the error too, and the error is returned.
    pub(crate) async fn append(
        &self,
        op: &'static str,
        fill: impl FnOnce(&DB, &mut WriteBatch) -> Result<(), StoreError> + Send + 'static,
        durable: Durable,
    ) -> Result<(), StoreError> {
        let fsync = self.opts.fsync;
        let syncer = self.syncer.clone();
        let appends = Arc::clone(&self.appends);
        self.run(move |db| {
            let mut batch = WriteBatch::default();
            let written = fill(db, &mut batch).and_then(|()| match &syncer {
                Some(_) => commit(db, batch, FsyncPolicy::Never, op),
                None => commit(db, batch, fsync, op),
            });
            if let Err(error) = written {
                durable(Err(std::io::Error::other(error.to_string())));
                return Err(error);
            }
            appends.fetch_add(1, Ordering::Relaxed);
            match syncer {
                // Blocks this (blocking-pool) thread while the syncer's queue is full.
                Some(syncer) => syncer.enqueue(durable),
                None => {
                    durable(Ok(()));
                    Ok(())
                }
            }
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

/// Lowers the calling thread's priority to nice [`BACKGROUND_THREAD_NICE`] (never raises it:
/// a node started nicer stays so); logs and goes on where the system refuses.
#[cfg(target_os = "linux")]
fn lower_priority(what: &'static str) {
    // SAFETY: `getpriority` and `setpriority` take plain integers and touch no memory of ours.
    // Under Linux, `PRIO_PROCESS` with `who` 0 names the calling thread alone (nice values are
    // per thread). `getpriority` cannot fail for the calling thread.
    let rc = unsafe {
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, current.max(BACKGROUND_THREAD_NICE))
    };
    if rc != 0 {
        tracing::warn!(
            thread = what,
            error = %std::io::Error::last_os_error(),
            "could not lower the priority of a background thread"
        );
    }
}

/// Priorities are left as they are off Linux.
#[cfg(not(target_os = "linux"))]
fn lower_priority(_what: &'static str) {}

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

/// The `meta` key of the node-local value `name`.
fn local_key(name: &str) -> Vec<u8> {
    format!("local/{name}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's name and nice value, from `/proc/thread-self/stat`.
    fn thread_name_and_nice() -> (String, i64) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // `pid (comm) state ...`: the name may hold spaces, so split after its closing paren.
        let open = stat.find('(').unwrap();
        let close = stat.rfind(')').unwrap();
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Field 19 of the whole line (nice) is the 17th after the name.
        (name, fields[16].parse().unwrap())
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn background_work_runs_at_a_lower_priority_on_a_thread_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let (_, caller_nice) = thread_name_and_nice();
        let (name, nice) = db
            .run_background("snapshot", |_| Ok(thread_name_and_nice()))
            .await
            .unwrap();
        assert_eq!(name, "parley-snapshot");
        // Raising the nice value needs no privilege; a process already nicer stays so.
        assert_eq!(nice, caller_nice.max(i64::from(BACKGROUND_THREAD_NICE)));
        assert_eq!(
            thread_name_and_nice().1,
            caller_nice,
            "the caller is untouched"
        );

        let failed = db
            .run_background("snapshot", |_| -> Result<(), StoreError> {
                Err(StoreError::corrupt("a failure comes back"))
            })
            .await;
        assert!(
            matches!(failed, Err(StoreError::Corrupt { .. })),
            "{failed:?}"
        );

        let inline = Db::open(
            &dir.path().join("inline"),
            DbOptions {
                io_mode: IoMode::Inline,
                ..DbOptions::default()
            },
        )
        .unwrap();
        let here = std::thread::current().id();
        let ran_on = inline
            .run_background("snapshot", |_| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(ran_on, here, "inline under the simulator");
    }
}
