//! The WAL syncer: group commit of log appends.
//!
//! One thread per database. Log appends write their entries without a sync and hand the syncer
//! a [`Durable`] callback; the syncer takes every callback waiting at that moment (at most
//! [`SYNC_CALLBACKS_MAX`]), syncs RocksDB's write-ahead log once, and calls them in the order
//! they came. RocksDB's WAL is one sequential file, so a sync covers every write made before
//! it started, and a callback is only enqueued after its write returned: a callback is never
//! called before its entries are on disk.
//!
//! The thread holds the database weakly: it never keeps a closed database open. It stops when
//! the last [`Db`](crate::Db) handle (the only sender) is dropped, after answering what was
//! queued; callbacks that find the database gone are answered with an error, never dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};

use crate::close::OpenDb;
use crate::error::StoreError;

/// Called once the write it follows is durable (or could not be made durable).
pub(crate) type Durable = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

/// Most callbacks waiting for a sync; an append finding the queue full waits for room (on its
/// blocking-pool thread), which slows appends down to the disk instead of queuing without end.
pub(crate) const SYNC_QUEUE_MAX: usize = 4096;

/// Most callbacks answered by one sync.
pub(crate) const SYNC_CALLBACKS_MAX: usize = 1024;

/// The sending half of the syncer thread, owned by the database handle.
pub(crate) struct WalSyncer {
    /// Where appends queue their callbacks.
    queue: SyncSender<Durable>,
    /// Successful WAL syncs so far, for metrics and tests.
    syncs: Arc<AtomicU64>,
}

impl WalSyncer {
    /// Starts the syncer thread for `db`; the database's close waits for it to end.
    pub(crate) fn start(db: &Arc<OpenDb>) -> Result<Self, StoreError> {
        let (queue, rx) = mpsc::sync_channel(SYNC_QUEUE_MAX);
        let syncs = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&syncs);
        let weak = Arc::downgrade(db);
        let thread = std::thread::Builder::new()
            .name("parley-wal-sync".to_owned())
            .spawn(move || run(&weak, &rx, &counter))
            .map_err(|source| StoreError::Thread {
                what: "wal syncer",
                source,
            })?;
        db.ends_with_close(thread);
        Ok(Self { queue, syncs })
    }

    /// Queues `durable` for the next sync. Blocks while the queue is full, so call it from a
    /// blocking thread only. Fails (after answering `durable` with the error) if the thread is
    /// gone.
    pub(crate) fn enqueue(&self, durable: Durable) -> Result<(), StoreError> {
        let durable = match self.queue.try_send(durable) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(durable)) => match self.queue.send(durable) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(durable)) => durable,
            },
            Err(TrySendError::Disconnected(durable)) => durable,
        };
        durable(Err(std::io::Error::other("the wal syncer has stopped")));
        Err(StoreError::SyncerStopped)
    }

    /// Successful WAL syncs so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// The thread: one sync per batch of waiting callbacks, until every sender is gone.
fn run(db: &Weak<OpenDb>, rx: &Receiver<Durable>, syncs: &AtomicU64) {
    let mut batch: Vec<Durable> = Vec::with_capacity(64);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < SYNC_CALLBACKS_MAX {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let result = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the database was closed before its log was synced".to_owned()),
        };
        match &result {
            Ok(()) => {
                syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => tracing::error!(%error, appends = batch.len(), "syncing the log failed"),
        }
        for durable in batch.drain(..) {
            durable(result.clone().map_err(std::io::Error::other));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rocksdb::DB;

    use super::*;
    use crate::{Db, DbOptions, FsyncPolicy, IoMode};

    /// A callback that records its position and result in `log`.
    fn recorder(log: &Arc<Mutex<Vec<(usize, bool)>>>, position: usize) -> Durable {
        let log = Arc::clone(log);
        Box::new(move |result| {
            if let Ok(mut log) = log.lock() {
                log.push((position, result.is_ok()));
            }
        })
    }

    #[test]
    fn one_sync_answers_every_waiting_callback_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(OpenDb::new(DB::open_default(dir.path()).unwrap()));
        let (tx, rx) = mpsc::sync_channel(SYNC_QUEUE_MAX);
        let log = Arc::new(Mutex::new(Vec::new()));
        for position in 0..10 {
            tx.send(recorder(&log, position)).unwrap();
        }
        drop(tx);
        let syncs = AtomicU64::new(0);
        run(&Arc::downgrade(&db), &rx, &syncs);
        assert_eq!(
            syncs.load(Ordering::Relaxed),
            1,
            "ten waiting appends, one fsync"
        );
        let expected: Vec<(usize, bool)> = (0..10).map(|p| (p, true)).collect();
        assert_eq!(*log.lock().unwrap(), expected);
    }

    #[test]
    fn a_sync_answers_at_most_its_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(OpenDb::new(DB::open_default(dir.path()).unwrap()));
        let waiting = SYNC_CALLBACKS_MAX + 5;
        let (tx, rx) = mpsc::sync_channel(waiting);
        let log = Arc::new(Mutex::new(Vec::new()));
        for position in 0..waiting {
            tx.send(recorder(&log, position)).unwrap();
        }
        drop(tx);
        let syncs = AtomicU64::new(0);
        run(&Arc::downgrade(&db), &rx, &syncs);
        assert_eq!(syncs.load(Ordering::Relaxed), 2);
        assert_eq!(log.lock().unwrap().len(), waiting);
    }

    #[test]
    fn callbacks_of_a_closed_database_get_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(OpenDb::new(DB::open_default(dir.path()).unwrap()));
        let weak = Arc::downgrade(&db);
        drop(db);
        let (tx, rx) = mpsc::sync_channel(4);
        let log = Arc::new(Mutex::new(Vec::new()));
        tx.send(recorder(&log, 0)).unwrap();
        tx.send(recorder(&log, 1)).unwrap();
        drop(tx);
        let syncs = AtomicU64::new(0);
        run(&weak, &rx, &syncs);
        assert_eq!(syncs.load(Ordering::Relaxed), 0);
        assert_eq!(*log.lock().unwrap(), vec![(0, false), (1, false)]);
    }

    /// Appends `key` through `db` and returns once `append` returned, with a receiver of the
    /// durability result.
    async fn append_key(
        db: &Db,
        key: &'static [u8],
    ) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let durable: Durable = Box::new(move |result| {
            let _ = tx.send(result.map_err(|e| e.to_string()));
        });
        db.append(
            "test append",
            move |raw, batch| {
                batch.put_cf(crate::db::cf(raw, crate::db::CF_LOGS)?, key, b"v");
                Ok(())
            },
            durable,
        )
        .await
        .unwrap();
        rx
    }

    fn read_key(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
        let raw = db.raw();
        raw.get_cf(crate::db::cf(raw, crate::db::CF_LOGS).unwrap(), key)
            .unwrap()
    }

    #[tokio::test]
    async fn group_committed_appends_are_readable_at_once_and_durable_after_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        assert_eq!(db.wal_syncs(), 0);
        let mut pending = Vec::new();
        for key in [b"k1".as_slice(), b"k2", b"k3", b"k4"] {
            let rx = append_key(&db, key).await;
            assert_eq!(read_key(&db, key).as_deref(), Some(b"v".as_slice()));
            pending.push(rx);
        }
        for rx in pending {
            assert_eq!(rx.await.unwrap(), Ok(()));
        }
        let syncs = db.wal_syncs();
        assert!((1..=4).contains(&syncs), "{syncs} syncs for 4 appends");
        assert_eq!(db.log_appends(), 4);
    }

    #[tokio::test]
    async fn without_group_commit_an_append_is_durable_when_it_returns() {
        for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::open(
                dir.path(),
                DbOptions {
                    fsync,
                    io_mode: IoMode::Inline,
                },
            )
            .unwrap();
            let mut rx = append_key(&db, b"k").await;
            assert_eq!(rx.try_recv().unwrap(), Ok(()), "{fsync:?}");
            assert_eq!(db.wal_syncs(), 0);
            assert_eq!(db.log_appends(), 1);
        }
    }
}
