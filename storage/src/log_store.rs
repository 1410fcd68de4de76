//! The Raft log, vote and committed pointer, persisted in RocksDB.
//!
//! Layout:
//!
//! | column family | key                         | value                              |
//! |---------------|-----------------------------|------------------------------------|
//! | `logs`        | log index, 8 bytes big-endian | JSON of the entry (`C::Entry`)   |
//! | `meta`        | `vote`                      | JSON `Vote<NodeId>`                |
//! | `meta`        | `committed`                 | JSON `Option<LogId<NodeId>>`       |
//! | `meta`        | `last_purged`               | JSON `LogId<NodeId>`               |
//!
//! Big-endian keys make RocksDB's byte order equal to index order, so range scans and "last
//! entry" lookups are plain iterator seeks.
//!
//! Every write is one RocksDB `WriteBatch`, synced according to the [`FsyncPolicy`]
//! (crate::FsyncPolicy) of the [`Db`]. An [`append`](RaftLogStorage::append) of a batch of entries
//! that openraft hands over is a single batch and therefore a single fsync: that is the group
//! commit. openraft serializes all calls on the store (`&mut self`), so writes are applied in the
//! order they were issued.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageError, Vote,
};
use rocksdb::{Direction, IteratorMode, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::{cf, get_json, to_json, Db, CF_LOGS, CF_META};
use crate::error::{ResultExt, StoreError};

/// `meta` key of the persisted vote.
const KEY_VOTE: &[u8] = b"vote";
/// `meta` key of the persisted committed log id.
const KEY_COMMITTED: &[u8] = b"committed";
/// `meta` key of the id of the last purged log entry.
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// openraft's log storage ([`RaftLogStorage`] + [`RaftLogReader`]) on top of a [`Db`].
///
/// Cheap to clone: clones share the database. A clone is also the log reader handed to
/// openraft's replication tasks.
pub struct LogStore<C: RaftTypeConfig> {
    /// The shared database holding the `logs` and `meta` column families.
    db: Db,
    /// Ties the store to its type config without storing any value of it.
    _p: PhantomData<C>,
}

// Manual impl: a derive would demand `C: Clone` although nothing of type `C` is stored.
impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            _p: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("db", &self.db).finish()
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Creates a log store on an opened database. Nothing is read until openraft asks.
    pub fn new(db: Db) -> Self {
        LogStore {
            db,
            _p: PhantomData,
        }
    }
}

/// Encodes a log index as its RocksDB key.
fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Decodes a RocksDB key of the `logs` column family.
fn key_index(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::corrupt(format!("log key has {} bytes, expected 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Decodes an entry stored under `index`, checking that it really is the entry for `index`.
fn decode_entry<C: RaftTypeConfig>(index: u64, value: &[u8]) -> Result<C::Entry, StoreError>
where
    C::Entry: DeserializeOwned,
{
    let entry: C::Entry = serde_json::from_slice(value).map_err(|source| StoreError::Codec {
        what: "log entry",
        source,
    })?;
    let stored = entry.get_log_id().index;
    if stored != index {
        return Err(StoreError::corrupt(format!(
            "log entry under key {index} carries index {stored}"
        )));
    }
    Ok(entry)
}

/// Adds deletion of every log key in `[from, ∞)` to `batch`.
fn delete_logs_from(db: &DB, batch: &mut rocksdb::WriteBatch, from: u64) -> Result<(), StoreError> {
    let logs = cf(db, CF_LOGS)?;
    // `delete_range` excludes its end key, so the largest possible key is deleted separately.
    batch.delete_range_cf(logs, index_key(from), index_key(u64::MAX));
    batch.delete_cf(logs, index_key(u64::MAX));
    Ok(())
}

/// The inclusive index range `[start, end]` a `RangeBounds` describes, or `None` if it is empty.
fn inclusive_range(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Some(*e),
        Bound::Excluded(e) => Some(e.checked_sub(1)?),
        Bound::Unbounded => None,
    };
    match end {
        Some(e) if e < start => None,
        _ => Some((start, end)),
    }
}

/// Reads entries with indexes in `[start, end]` (`end` = `None`: to the last entry).
///
/// Entries missing at the front (purged) are allowed; a gap after the first returned entry is a
/// hole in the log and reported as corruption.
fn read_entries<C: RaftTypeConfig>(
    db: &DB,
    start: u64,
    end: Option<u64>,
) -> Result<Vec<C::Entry>, StoreError>
where
    C::Entry: DeserializeOwned,
{
    let logs = cf(db, CF_LOGS)?;
    let start_key = index_key(start);
    let mut out = Vec::new();
    let mut expected: Option<u64> = None;
    for item in db.iterator_cf(logs, IteratorMode::From(&start_key, Direction::Forward)) {
        let (key, value) = item.map_err(|source| StoreError::Rocks {
            op: "scan logs",
            source,
        })?;
        let index = key_index(&key)?;
        if end.is_some_and(|e| index > e) {
            break;
        }
        if let Some(want) = expected {
            if index != want {
                return Err(StoreError::corrupt(format!(
                    "hole in log: expected index {want}, found {index}"
                )));
            }
        }
        out.push(decode_entry::<C>(index, &value)?);
        if index == u64::MAX {
            break;
        }
        expected = Some(index + 1);
    }
    Ok(out)
}

/// Reads the log id of the last stored entry, if any.
fn last_log_id<C: RaftTypeConfig>(db: &DB) -> Result<Option<LogId<C::NodeId>>, StoreError>
where
    C::Entry: DeserializeOwned,
{
    let logs = cf(db, CF_LOGS)?;
    let Some(item) = db.iterator_cf(logs, IteratorMode::End).next() else {
        return Ok(None);
    };
    let (key, value) = item.map_err(|source| StoreError::Rocks {
        op: "seek last log",
        source,
    })?;
    let index = key_index(&key)?;
    let entry = decode_entry::<C>(index, &value)?;
    Ok(Some(entry.get_log_id().clone()))
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let Some((start, end)) = inclusive_range(&range) else {
            return Ok(Vec::new());
        };
        self.db
            .run(move |db| read_entries::<C>(db, start, end))
            .await
            .sto(ErrorSubject::Logs, ErrorVerb::Read)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let (last_purged, last_present) = self
            .db
            .run(|db| {
                let last_purged: Option<LogId<C::NodeId>> =
                    get_json(db, CF_META, KEY_LAST_PURGED, "last purged log id")?;
                let last_present = last_log_id::<C>(db)?;
                Ok((last_purged, last_present))
            })
            .await
            .sto(ErrorSubject::Logs, ErrorVerb::Read)?;
        Ok(LogState {
            last_log_id: last_present.or_else(|| last_purged.clone()),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let bytes = to_json(vote, "vote").sto(ErrorSubject::Vote, ErrorVerb::Write)?;
        self.db
            .write("save vote", move |db, batch| {
                batch.put_cf(cf(db, CF_META)?, KEY_VOTE, bytes);
                Ok(())
            })
            .await
            .sto(ErrorSubject::Vote, ErrorVerb::Write)?;
        tracing::debug!(
            term = vote.leader_id().term,
            committed = vote.is_committed(),
            "saved vote"
        );
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.db
            .run(|db| get_json(db, CF_META, KEY_VOTE, "vote"))
            .await
            .sto(ErrorSubject::Vote, ErrorVerb::Read)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        let bytes =
            to_json(&committed, "committed log id").sto(ErrorSubject::Store, ErrorVerb::Write)?;
        self.db
            .write("save committed", move |db, batch| {
                batch.put_cf(cf(db, CF_META)?, KEY_COMMITTED, bytes);
                Ok(())
            })
            .await
            .sto(ErrorSubject::Store, ErrorVerb::Write)?;
        tracing::trace!(
            index = committed.as_ref().map(|c| c.index),
            "saved committed"
        );
        Ok(())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        let stored: Option<Option<LogId<C::NodeId>>> = self
            .db
            .run(|db| get_json(db, CF_META, KEY_COMMITTED, "committed log id"))
            .await
            .sto(ErrorSubject::Store, ErrorVerb::Read)?;
        Ok(stored.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded: Result<Vec<(u64, Vec<u8>)>, StoreError> = entries
            .into_iter()
            .map(|entry| -> Result<(u64, Vec<u8>), StoreError> {
                Ok((entry.get_log_id().index, to_json(&entry, "log entry")?))
            })
            .collect();
        let result = match encoded {
            Ok(encoded) => {
                let count = encoded.len();
                let first = encoded.first().map(|(i, _)| *i);
                let last = encoded.last().map(|(i, _)| *i);
                let written = self
                    .db
                    .write("append logs", move |db, batch| {
                        let logs = cf(db, CF_LOGS)?;
                        for (index, bytes) in encoded {
                            batch.put_cf(logs, index_key(index), bytes);
                        }
                        Ok(())
                    })
                    .await;
                if written.is_ok() {
                    tracing::debug!(count, first, last, "appended log entries");
                }
                written
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "log append failed");
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_storage_error(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let from = log_id.index;
        self.db
            .write("truncate logs", move |db, batch| {
                delete_logs_from(db, batch, from)
            })
            .await
            .sto(ErrorSubject::Logs, ErrorVerb::Delete)?;
        tracing::debug!(index = from, "truncated log from index");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let upto = log_id.index;
        let bytes =
            to_json(&log_id, "last purged log id").sto(ErrorSubject::Logs, ErrorVerb::Delete)?;
        self.db
            .write("purge logs", move |db, batch| {
                batch.put_cf(cf(db, CF_META)?, KEY_LAST_PURGED, bytes);
                match upto.checked_add(1) {
                    Some(end) => {
                        batch.delete_range_cf(cf(db, CF_LOGS)?, index_key(0), index_key(end))
                    }
                    None => delete_logs_from(db, batch, 0)?,
                }
                Ok(())
            })
            .await
            .sto(ErrorSubject::Logs, ErrorVerb::Delete)?;
        tracing::debug!(index = upto, "purged log up to index");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusive_range_bounds() {
        assert_eq!(inclusive_range(&(3..3)), None);
        assert_eq!(inclusive_range(&(3..4)), Some((3, Some(3))));
        assert_eq!(inclusive_range(&(3..=3)), Some((3, Some(3))));
        assert_eq!(inclusive_range(&(5..)), Some((5, None)));
        assert_eq!(inclusive_range(&(..)), Some((0, None)));
        assert_eq!(inclusive_range(&(..0)), None);
        assert_eq!(
            inclusive_range(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
            None
        );
        assert_eq!(inclusive_range(&std::ops::Range { start: 7, end: 2 }), None);
    }

    #[test]
    fn keys_sort_in_index_order() {
        assert!(index_key(255) < index_key(256));
        assert_eq!(key_index(&index_key(u64::MAX)).ok(), Some(u64::MAX));
        assert!(key_index(b"short").is_err());
    }
}
