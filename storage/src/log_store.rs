//! The Raft log, vote and committed pointer, persisted in RocksDB.
//!
//! Layout:
//!
//! | column family | key                         | value                              |
//! |---------------|-----------------------------|------------------------------------|
//! | `logs`        | log index, 8 bytes big-endian | the entry, as `C`'s [`EntryCodec`] encodes it |
//! | `meta`        | `vote`                      | JSON `VoteOf<C>`                   |
//! | `meta`        | `committed`                 | JSON `Option<LogIdOf<C>>`          |
//! | `meta`        | `last_purged`               | JSON `LogIdOf<C>`                  |
//!
//! Big-endian keys make RocksDB's byte order equal to index order, so range scans and "last
//! entry" lookups are plain iterator seeks.
//!
//! Every write is one RocksDB `WriteBatch`, synced according to the
//! [`FsyncPolicy`](crate::FsyncPolicy) of the [`Db`]. An [`append`](RaftLogStorage::append) of the
//! entries openraft hands over is a single batch, written at once (readable when `append`
//! returns) and reported durable through openraft's callback after the next WAL sync, which
//! covers every append that arrived meanwhile: that is the group commit ([`Db`]'s module docs).
//! openraft serializes all calls on the store (`&mut self`), so writes are applied in the order
//! they were issued. The committed log id is the one value written without a sync (see
//! `save_committed`).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};

use std::io;

use crate::db::{cf, get_json, to_json, Db, CF_LOGS, CF_META};
use crate::entry_codec::EntryCodec;
use crate::error::StoreError;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::vote::RaftVote;
use openraft::{OptionalSend, RaftTypeConfig};
use rocksdb::{Direction, IteratorMode, DB};

/// `meta` key of the persisted vote.
pub(crate) const KEY_VOTE: &[u8] = b"vote";
/// `meta` key of the persisted committed log id.
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
/// `meta` key of the id of the last purged log entry.
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Most recently appended entries kept decoded in memory.
pub const RECENT_ENTRIES_MAX: usize = 128;
/// Most bytes (of encoded entries) the recent entries may stand for.
pub const RECENT_ENTRIES_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The newest log entries, decoded, in index order without gaps: what openraft reads back right
/// after appending (to replicate to each follower and to apply), served without a RocksDB
/// iterator and a decode per entry per reader. Kept equal to the log's tail: an append adds to
/// it after its write, a truncation or purge takes from it before its write; any read it
/// cannot answer whole goes to RocksDB.
struct RecentEntries<E> {
    /// The entries, oldest first, each with its encoded size.
    entries: VecDeque<(E, usize)>,
    /// Index of the oldest entry held.
    first_index: u64,
    /// Sum of the encoded sizes held.
    bytes: usize,
}

impl<E> RecentEntries<E> {
    fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            first_index: 0,
            bytes: 0,
        }
    }

    /// The index after the newest entry held (appends ending at `u64::MAX` are never held, so
    /// this does not overflow).
    fn end_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64
    }

    /// Adds entries that were just written, starting at `first`; entries held from `first` on are
    /// replaced, and a gap before `first` starts over.
    fn append(&mut self, first: u64, added: Vec<(E, usize)>) {
        if self.entries.is_empty() || first < self.first_index || first > self.end_index() {
            self.entries.clear();
            self.bytes = 0;
            self.first_index = first;
        } else {
            self.remove_from(first);
        }
        for (entry, size) in added {
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > RECENT_ENTRIES_MAX
            || (self.bytes > RECENT_ENTRIES_BYTES_MAX && self.entries.len() > 1)
        {
            self.pop_oldest();
        }
    }

    /// Forgets every entry with index `>= from` (a truncation).
    fn remove_from(&mut self, from: u64) {
        while self.end_index() > from.max(self.first_index) {
            match self.entries.pop_back() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    /// Forgets every entry with index `<= upto` (a purge).
    fn remove_upto(&mut self, upto: u64) {
        while !self.entries.is_empty() && self.first_index <= upto {
            self.pop_oldest();
        }
        if self.entries.is_empty() {
            self.first_index = 0;
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
            self.first_index += 1;
        }
    }
}

impl<E: Clone> RecentEntries<E> {
    /// Clones of the entries `[start, end]` if every one of them is held.
    fn get(&self, start: u64, end: u64) -> Option<Vec<E>> {
        if self.entries.is_empty() || start < self.first_index || end >= self.end_index() {
            return None;
        }
        let from = usize::try_from(start - self.first_index).ok()?;
        let to = usize::try_from(end - self.first_index).ok()?;
        Some(
            self.entries
                .range(from..=to)
                .map(|(entry, _)| entry.clone())
                .collect(),
        )
    }
}

/// openraft's log storage ([`RaftLogStorage`] + [`RaftLogReader`]) on top of a [`Db`].
///
/// Cheap to clone: clones share the database and the recent entries. A clone is also the log
/// reader handed to openraft's replication tasks.
pub struct LogStore<C: RaftTypeConfig> {
    /// The shared database holding the `logs` and `meta` column families.
    db: Db,
    /// The log's newest entries, decoded, shared by every clone.
    recent: Arc<Mutex<RecentEntries<C::Entry>>>,
    /// Ties the store to its type config without storing any value of it.
    _p: PhantomData<C>,
}

// Manual impl: a derive would demand `C: Clone` although nothing of type `C` is stored.
impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            recent: Arc::clone(&self.recent),
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
            recent: Arc::new(Mutex::new(RecentEntries::new())),
            _p: PhantomData,
        }
    }

    /// Runs `f` on the recent entries. A panic while the lock was held leaves them possibly
    /// inconsistent with the log, so a poisoned lock is cleared and the reads go to RocksDB.
    fn with_recent<T>(&self, f: impl FnOnce(&mut RecentEntries<C::Entry>) -> T) -> T {
        let mut recent = self.recent.lock().unwrap_or_else(|poisoned| {
            let mut recent = PoisonError::into_inner(poisoned);
            *recent = RecentEntries::new();
            self.recent.clear_poison();
            recent
        });
        f(&mut recent)
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
fn decode_entry<C: EntryCodec>(index: u64, value: &[u8]) -> Result<C::Entry, StoreError> {
    let entry = C::decode_entry(value).map_err(|source| StoreError::Entry {
        action: format!("decode the entry under key {index}"),
        source,
    })?;
    let stored = entry.index();
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
fn read_entries<C: EntryCodec>(
    db: &DB,
    start: u64,
    end: Option<u64>,
) -> Result<Vec<C::Entry>, StoreError> {
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
fn last_log_id<C: EntryCodec>(db: &DB) -> Result<Option<LogIdOf<C>>, StoreError> {
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
    Ok(Some(entry.log_id()))
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: EntryCodec,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let Some((start, end)) = inclusive_range(&range) else {
            return Ok(Vec::new());
        };
        // Unbounded reads go to RocksDB: between an append's write and its update of the recent
        // entries, the log's tail is newer than what they hold.
        if let Some(end) = end {
            if let Some(entries) = self.with_recent(|recent| recent.get(start, end)) {
                return Ok(entries);
            }
        }
        Ok(self
            .db
            .run(move |db| read_entries::<C>(db, start, end))
            .await?)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self
            .db
            .run(|db| get_json(db, CF_META, KEY_VOTE, "vote"))
            .await?)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: EntryCodec,
    C::Entry: Clone,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let (last_purged, last_present) = self
            .db
            .run(|db| {
                let last_purged: Option<LogIdOf<C>> =
                    get_json(db, CF_META, KEY_LAST_PURGED, "last purged log id")?;
                let last_present = last_log_id::<C>(db)?;
                Ok((last_purged, last_present))
            })
            .await?;
        Ok(LogState {
            last_log_id: last_present.or_else(|| last_purged.clone()),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let bytes = to_json(vote, "vote")?;
        self.db
            .write("save vote", move |db, batch| {
                batch.put_cf(cf(db, CF_META)?, KEY_VOTE, bytes);
                Ok(())
            })
            .await?;
        tracing::debug!(%vote, committed = vote.is_committed(), "saved vote");
        Ok(())
    }

    /// Written without a sync, even with `FsyncPolicy::Always`: the committed log id is a hint
    /// for restarts (how far to re-apply the log at once), not part of Raft's safety. A crash may
    /// roll it back to an older value; openraft then re-applies less at start and learns the rest
    /// from the leader. It can never get ahead of the log: RocksDB replays its WAL as a prefix,
    /// and the entries it points to were written before it. Syncing it would put one more fsync
    /// on every commit of every node, inside openraft's core loop.
    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let bytes = to_json(&committed, "committed log id")?;
        self.db
            .write_unsynced("save committed", move |db, batch| {
                batch.put_cf(cf(db, CF_META)?, KEY_COMMITTED, bytes);
                Ok(())
            })
            .await?;
        tracing::trace!(
            index = committed.as_ref().map(|c| c.index),
            "saved committed"
        );
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        let stored: Option<Option<LogIdOf<C>>> = self
            .db
            .run(|db| get_json(db, CF_META, KEY_COMMITTED, "committed log id"))
            .await?;
        Ok(stored.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let encoded: Result<Vec<(u64, Vec<u8>)>, StoreError> = entries
            .iter()
            .map(|entry| -> Result<(u64, Vec<u8>), StoreError> {
                let bytes = C::encode_entry(entry).map_err(|source| StoreError::Entry {
                    action: format!("encode the entry with index {}", entry.index()),
                    source,
                })?;
                Ok((entry.index(), bytes))
            })
            .collect();
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::error!(error = %e, "log append failed");
                callback.io_completed(Err(io::Error::other(e.to_string())));
                return Err(e.into());
            }
        };
        let count = encoded.len();
        let first = encoded.first().map(|(i, _)| *i);
        let last = encoded.last().map(|(i, _)| *i);
        // What the recent entries can hold: no gap, and an index after the last one (so the log
        // ending at `u64::MAX` is only ever read from RocksDB).
        let cacheable = encoded
            .windows(2)
            .all(|pair| pair[0].0.checked_add(1) == Some(pair[1].0))
            && last.is_some_and(|last| last < u64::MAX);
        let sizes: Vec<usize> = encoded.iter().map(|(_, bytes)| bytes.len()).collect();
        let bytes: usize = sizes.iter().sum();
        // Readable when `append` returns, as openraft requires; `callback` is called once the
        // WAL is synced past these entries (the database's group commit).
        let durable = Box::new(move |result: Result<(), io::Error>| {
            callback.io_completed(result);
        });
        self.db
            .append(
                "append logs",
                move |db, batch| {
                    let logs = cf(db, CF_LOGS)?;
                    for (index, bytes) in encoded {
                        batch.put_cf(logs, index_key(index), bytes);
                    }
                    Ok(())
                },
                durable,
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "log append failed");
                io::Error::from(e)
            })?;
        self.db
            .count_log_bytes(u64::try_from(bytes).unwrap_or(u64::MAX));
        self.with_recent(|recent| match first {
            Some(first) if cacheable => {
                recent.append(first, entries.into_iter().zip(sizes).collect());
            }
            // openraft appends without gaps; should it not, keep nothing rather than a hole.
            _ => *recent = RecentEntries::new(),
        });
        tracing::debug!(count, first, last, "appended log entries");
        Ok(())
    }

    /// Deletes every entry after `last_log_id` (all of them if it is `None`).
    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = match &last_log_id {
            None => 0,
            Some(last) => match last.index.checked_add(1) {
                Some(from) => from,
                // Nothing can follow the largest index.
                None => return Ok(()),
            },
        };
        // Before the write: no reader may get a truncated entry from memory once it is gone
        // from disk.
        self.with_recent(|recent| recent.remove_from(from));
        self.db
            .write("truncate logs", move |db, batch| {
                delete_logs_from(db, batch, from)
            })
            .await?;
        tracing::debug!(index = from, "truncated log from index");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let upto = log_id.index;
        let bytes = to_json(&log_id, "last purged log id")?;
        self.with_recent(|recent| recent.remove_upto(upto));
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
            .await?;
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

    /// Recent entries holding `indexes` (as their own values), one byte each.
    fn recent(first: u64, count: u64) -> RecentEntries<u64> {
        let mut recent = RecentEntries::new();
        recent.append(first, (first..first + count).map(|i| (i, 1)).collect());
        recent
    }

    #[test]
    fn recent_entries_answer_only_ranges_they_hold_whole() {
        let recent = recent(10, 5);
        assert_eq!(recent.get(10, 14), Some(vec![10, 11, 12, 13, 14]));
        assert_eq!(recent.get(12, 12), Some(vec![12]));
        assert_eq!(recent.get(9, 12), None, "starts before the oldest held");
        assert_eq!(recent.get(12, 15), None, "ends after the newest held");
        assert_eq!(RecentEntries::<u64>::new().get(0, 0), None);
    }

    #[test]
    fn recent_entries_follow_appends_truncations_and_purges() {
        let mut recent = recent(1, 5);
        // A truncation forgets the tail; the next append continues from there.
        recent.remove_from(4);
        assert_eq!(recent.get(1, 3), Some(vec![1, 2, 3]));
        assert_eq!(recent.get(1, 4), None);
        recent.append(4, vec![(40, 1), (50, 1)]);
        assert_eq!(recent.get(3, 5), Some(vec![3, 40, 50]));
        // Overwriting from inside replaces what follows.
        recent.append(2, vec![(200, 1)]);
        assert_eq!(recent.get(1, 2), Some(vec![1, 200]));
        assert_eq!(recent.get(1, 3), None);
        // A purge forgets the head.
        recent.remove_upto(1);
        assert_eq!(recent.get(1, 2), None);
        assert_eq!(recent.get(2, 2), Some(vec![200]));
        recent.remove_upto(9);
        assert_eq!(recent.get(2, 2), None);
        assert_eq!(recent.bytes, 0);
        // A gap (after a snapshot install, say) starts over.
        recent.append(100, vec![(100, 1)]);
        recent.append(102, vec![(102, 1)]);
        assert_eq!(recent.get(100, 100), None);
        assert_eq!(recent.get(102, 102), Some(vec![102]));
        // Truncating before the oldest held forgets everything.
        recent.remove_from(50);
        assert_eq!(recent.get(102, 102), None);
        assert_eq!(recent.bytes, 0);
    }

    #[test]
    fn recent_entries_are_bounded_by_count_and_bytes() {
        let recent = recent(1, RECENT_ENTRIES_MAX as u64 + 10);
        assert_eq!(recent.entries.len(), RECENT_ENTRIES_MAX);
        assert_eq!(recent.first_index, 11);
        assert_eq!(recent.end_index(), RECENT_ENTRIES_MAX as u64 + 11);

        let mut recent = RecentEntries::new();
        let big = RECENT_ENTRIES_BYTES_MAX / 2 + 1;
        recent.append(1, vec![(1u64, big), (2, big), (3, big)]);
        assert_eq!(
            recent.get(2, 3),
            None,
            "two big entries exceed the byte bound"
        );
        assert_eq!(recent.get(3, 3), Some(vec![3]));
        assert_eq!(recent.bytes, big);
        // One entry above the bound is still held: the newest is what readers want.
        recent.append(4, vec![(4, RECENT_ENTRIES_BYTES_MAX * 2)]);
        assert_eq!(recent.get(4, 4), Some(vec![4]));
    }

    #[test]
    fn keys_sort_in_index_order() {
        assert!(index_key(255) < index_key(256));
        assert_eq!(key_index(&index_key(u64::MAX)).ok(), Some(u64::MAX));
        assert!(key_index(b"short").is_err());
    }
}
