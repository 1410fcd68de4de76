//! Knowing when the database has closed.
//!
//! RocksDB closes when the last [`Db`](crate::Db) handle is dropped, on whichever thread drops
//! it: a blocking-pool thread, an HTTP worker, the WAL syncer. A process that returns from
//! `main` while a close or a background flush is still running on another thread has its C++
//! statics destroyed under that thread, and aborts (`pthread lock: Invalid argument`) after a
//! clean stop. [`CloseWatch::wait`] lets the process wait for the close to finish first.
//!
//! The open database is an [`OpenDb`]: the RocksDB handle, then a notice. Rust drops fields in
//! declaration order, so the notice is given only once RocksDB's close (which waits for its
//! background work) has returned. Threads of this crate that call RocksDB and end with the
//! database (the WAL syncer) are joined by the wait too: RocksDB's thread-local data is torn
//! down when such a thread exits, under a lock that is itself a C++ static.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::DB;

/// How often a wait looks whether a thread that ends with the database has ended.
const THREAD_END_POLL: Duration = Duration::from_millis(5);

/// The open database and the notice its closing gives. Dereferences to the RocksDB handle.
pub(crate) struct OpenDb {
    /// Dropped first: closing RocksDB.
    db: DB,
    /// Dropped second: tells every [`CloseWatch`] the close has finished.
    notice: CloseNotice,
}

impl OpenDb {
    /// Wraps an opened database.
    pub(crate) fn new(db: DB) -> Self {
        Self {
            db,
            notice: CloseNotice(Arc::default()),
        }
    }

    /// A watch on this database's close.
    pub(crate) fn watch(&self) -> CloseWatch {
        CloseWatch(Arc::clone(&self.notice.0))
    }

    /// Counts `thread`, which calls this database and ends once it is closed, into the close:
    /// [`CloseWatch::wait`] joins it.
    pub(crate) fn ends_with_close(&self, thread: JoinHandle<()>) {
        self.notice
            .0
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(thread);
    }
}

impl std::ops::Deref for OpenDb {
    type Target = DB;

    fn deref(&self) -> &DB {
        &self.db
    }
}

/// Whether the database has closed, the condition its watchers wait on, and the threads that
/// end with it.
#[derive(Default)]
struct Closed {
    closed: Mutex<bool>,
    changed: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Sets [`Closed`] when dropped.
struct CloseNotice(Arc<Closed>);

impl Drop for CloseNotice {
    fn drop(&mut self) {
        *self.0.closed.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.0.changed.notify_all();
    }
}

/// Tells when the database has closed: every handle dropped and RocksDB's close returned.
/// Holding a watch does not keep the database open.
#[derive(Clone)]
pub struct CloseWatch(Arc<Closed>);

impl CloseWatch {
    /// Whether the database has closed.
    pub fn is_closed(&self) -> bool {
        *self.0.closed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until the database has closed and the threads that end with it have ended, or
    /// `within` has passed; true if they did.
    pub fn wait(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        {
            let mut closed = self.0.closed.lock().unwrap_or_else(PoisonError::into_inner);
            while !*closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                closed = self
                    .0
                    .changed
                    .wait_timeout(closed, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let threads = std::mem::take(
            &mut *self
                .0
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for thread in threads {
            while !thread.is_finished() {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(THREAD_END_POLL);
            }
            // Its function has returned; the join waits out its thread-local teardown.
            let _ = thread.join();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Db, DbOptions};

    #[test]
    fn the_watch_fires_only_once_the_last_handle_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), DbOptions::default()).unwrap();
        let watch = db.close_watch();
        let clone = db.clone();
        drop(db);
        assert!(!watch.is_closed(), "a clone still holds the database open");
        assert!(!watch.wait(Duration::from_millis(20)));
        let dropper = std::thread::spawn(move || drop(clone));
        assert!(
            watch.wait(Duration::from_secs(10)),
            "closed on another thread"
        );
        dropper.join().unwrap();
        // RocksDB's lock on the directory is released: the database opens again.
        let again = Db::open(dir.path(), DbOptions::default()).unwrap();
        drop(again);
    }
}
