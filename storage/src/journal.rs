//! The island journal: writes a node took while it was cut off from the quorum, kept until they
//! were merged into the replicated log.
//!
//! The journal is node-local: never replicated, never in a snapshot or a backup. Each entry is
//! opaque bytes (the island's own encoding) at a **position** that counts every entry the node
//! ever journaled, so a position is never reused, not after a truncation, not after a restart.
//! An append is synced before it returns (with [`FsyncPolicy::Always`](crate::FsyncPolicy)): a
//! client is answered only once its write survives a crash.
//!
//! # Layout (column family `island_journal`)
//!
//! - `e<position as 8-byte big-endian>` → the entry's bytes;
//! - `t` → 8-byte big-endian: the first position not truncated (entries before it are gone).
//!
//! Truncation deletes a prefix and moves `t` in one batch, so after a crash either both or
//! neither happened.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::db::{cf, commit, Db, CF_JOURNAL};
use crate::error::StoreError;

/// Prefix of an entry's key.
const ENTRY: u8 = b'e';
/// The key of the first position kept.
const TRUNCATED: &[u8] = b"t";

fn entry_key(position: u64) -> [u8; 9] {
    let mut key = [ENTRY; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

fn position_of(key: &[u8]) -> Result<u64, StoreError> {
    match key {
        [ENTRY, rest @ ..] => <[u8; 8]>::try_from(rest)
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::corrupt("journal key is not 9 bytes")),
        _ => Err(StoreError::corrupt("journal key without the entry prefix")),
    }
}

fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::corrupt(format!("{what} is not 8 bytes")))
}

/// The positions the journal holds: `first..next`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalBounds {
    /// The first position kept (everything before it was truncated).
    pub first: u64,
    /// The position the next entry gets.
    pub next: u64,
}

impl JournalBounds {
    /// How many entries the journal holds.
    pub fn len(&self) -> u64 {
        self.next.saturating_sub(self.first)
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One entry read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// Its position.
    pub position: u64,
    /// Its bytes, as appended.
    pub bytes: Vec<u8>,
}

/// A node's island journal. Cheap to clone; clones share the bounds.
#[derive(Clone, Debug)]
pub struct Journal {
    db: Db,
    /// Held across every append and truncation (they run one at a time), read by
    /// [`Journal::bounds`].
    bounds: Arc<Mutex<JournalBounds>>,
}

impl Journal {
    /// The journal of `db`, its bounds read from disk. Blocking: it runs once at start-up.
    pub fn open(db: Db) -> Result<Self, StoreError> {
        let bounds = read_bounds(db.inner())?;
        Ok(Self {
            db,
            bounds: Arc::new(Mutex::new(bounds)),
        })
    }

    /// The positions held now.
    pub fn bounds(&self) -> JournalBounds {
        *self.bounds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `entries` in order, synced according to the database's fsync policy before it
    /// returns; their positions.
    pub async fn append(&self, entries: Vec<Vec<u8>>) -> Result<Range<u64>, StoreError> {
        let bounds = Arc::clone(&self.bounds);
        let fsync = self.db.options().fsync;
        self.db
            .run(move |db| {
                let mut held = bounds.lock().unwrap_or_else(PoisonError::into_inner);
                let start = held.next;
                let handle = cf(db, CF_JOURNAL)?;
                let mut batch = WriteBatch::default();
                for (offset, bytes) in entries.iter().enumerate() {
                    batch.put_cf(handle, entry_key(start + offset as u64), bytes);
                }
                commit(db, batch, fsync, "append to the island journal")?;
                held.next = start + entries.len() as u64;
                Ok(start..held.next)
            })
            .await
    }

    /// Up to `entries_max` entries from position `from` on, stopping before the one that would
    /// take the total past `bytes_max` (at least one entry is returned if any is there).
    pub async fn read(
        &self,
        from: u64,
        entries_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.db
            .run(move |db| {
                let mut out = Vec::new();
                let mut bytes = 0usize;
                let start = entry_key(from);
                let iter = db.iterator_cf(
                    cf(db, CF_JOURNAL)?,
                    IteratorMode::From(&start, Direction::Forward),
                );
                for item in iter {
                    let (key, value) = item.map_err(|source| StoreError::Rocks {
                        op: "read the island journal",
                        source,
                    })?;
                    if key.first() != Some(&ENTRY) || out.len() >= entries_max {
                        break;
                    }
                    if !out.is_empty() && bytes.saturating_add(value.len()) > bytes_max {
                        break;
                    }
                    bytes = bytes.saturating_add(value.len());
                    out.push(JournalEntry {
                        position: position_of(&key)?,
                        bytes: value.into_vec(),
                    });
                }
                Ok(out)
            })
            .await
    }

    /// Deletes every entry before position `until` (they were merged), synced. Positions are
    /// never reused: the next append continues where it would have.
    pub async fn truncate_before(&self, until: u64) -> Result<(), StoreError> {
        let bounds = Arc::clone(&self.bounds);
        let fsync = self.db.options().fsync;
        self.db
            .run(move |db| {
                let mut held = bounds.lock().unwrap_or_else(PoisonError::into_inner);
                let until = until.min(held.next);
                if until <= held.first {
                    return Ok(());
                }
                let handle = cf(db, CF_JOURNAL)?;
                let mut batch = WriteBatch::default();
                batch.delete_range_cf(handle, entry_key(held.first), entry_key(until));
                batch.put_cf(handle, TRUNCATED, until.to_be_bytes());
                commit(db, batch, fsync, "truncate the island journal")?;
                held.first = until;
                Ok(())
            })
            .await
    }
}

/// Reads the bounds: the truncation mark, and one past the last entry.
fn read_bounds(db: &DB) -> Result<JournalBounds, StoreError> {
    let handle = cf(db, CF_JOURNAL)?;
    let first = db
        .get_cf(handle, TRUNCATED)
        .map_err(|source| StoreError::Rocks {
            op: "read the island journal's truncation mark",
            source,
        })?
        .map(|bytes| decode_u64(&bytes, "the island journal's truncation mark"))
        .transpose()?
        .unwrap_or(0);
    let last = entry_key(u64::MAX);
    let mut iter = db.iterator_cf(handle, IteratorMode::From(&last, Direction::Reverse));
    let next = match iter.next() {
        Some(item) => {
            let (key, _) = item.map_err(|source| StoreError::Rocks {
                op: "read the island journal",
                source,
            })?;
            if key.first() == Some(&ENTRY) {
                position_of(&key)?.saturating_add(1)
            } else {
                first
            }
        }
        None => first,
    };
    Ok(JournalBounds {
        first,
        next: next.max(first),
    })
}
