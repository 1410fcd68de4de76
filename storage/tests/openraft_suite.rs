//! openraft's own storage conformance suite, run against the RocksDB stores in both I/O modes.

mod common;

use common::{KvConfig, Log, Sm};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use parley_storage::{Db, DbOptions, FsyncPolicy, IoMode};
use tempfile::TempDir;

/// Builds a fresh store pair in a new temporary directory for every suite case.
struct Builder {
    opts: DbOptions,
}

impl StoreBuilder<KvConfig, Log, Sm, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, Log, Sm), StorageError<KvConfig>> {
        let to_storage = |e: std::io::Error| {
            StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e)
        };
        let dir = tempfile::tempdir().map_err(to_storage)?;
        let db = Db::open(dir.path(), self.opts).map_err(|e| to_storage(e.into()))?;
        let log = Log::new(db.clone());
        let sm = Sm::open(db).await.map_err(|e| to_storage(e.into()))?;
        Ok((dir, log, sm))
    }
}

async fn run_suite(opts: DbOptions) {
    if let Err(e) = Suite::<KvConfig, Log, Sm, Builder, TempDir>::test_all(Builder { opts }).await {
        panic!("openraft storage suite failed: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_fsync_always_blocking_io() {
    run_suite(DbOptions {
        fsync: FsyncPolicy::Always,
        io_mode: IoMode::Blocking,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_fsync_always_inline_io() {
    run_suite(DbOptions {
        fsync: FsyncPolicy::Always,
        io_mode: IoMode::Inline,
    })
    .await;
}
