//! openraft's own storage conformance suite, run against the RocksDB stores in both I/O modes.

mod common;

use common::{KvConfig, Log, Sm};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use parley_storage::{Db, DbOptions, FsyncPolicy, IoMode};
use tempfile::TempDir;

/// Builds a fresh store pair in a new temporary directory for every suite case.
struct Builder {
    opts: DbOptions,
}

impl StoreBuilder<KvConfig, Log, Sm, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, Log, Sm), StorageError<u64>> {
        let to_storage = |e: parley_storage::StoreError| {
            e.into_storage_error(ErrorSubject::Store, ErrorVerb::Write)
        };
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let db = Db::open(dir.path(), self.opts).map_err(to_storage)?;
        let log = Log::new(db.clone());
        let sm = Sm::open(db).await.map_err(to_storage)?;
        Ok((dir, log, sm))
    }
}

fn run_suite(opts: DbOptions) {
    Suite::<KvConfig, Log, Sm, Builder, TempDir>::test_all(Builder { opts })
        .expect("openraft storage suite");
}

#[test]
fn openraft_suite_fsync_always_blocking_io() {
    run_suite(DbOptions {
        fsync: FsyncPolicy::Always,
        io_mode: IoMode::Blocking,
    });
}

#[test]
fn openraft_suite_fsync_always_inline_io() {
    run_suite(DbOptions {
        fsync: FsyncPolicy::Always,
        io_mode: IoMode::Inline,
    });
}
