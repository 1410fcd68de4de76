//! The archive: records the machine retired from its in-memory state, kept in RocksDB until they
//! expire.
//!
//! A [`Machine`](crate::Machine) keeps in memory only what is live or recent. What it lets go of
//! (an ended chat with its transcript, say) it hands to the store as [`ArchiveOp::Put`], with the
//! time the record expires; [`ArchiveOp::Expire`] moves a record's expiry without rewriting it
//! through the log (a record shared by several owners lives as long as the last of them); a
//! later [`ArchiveOp::PurgeBefore`] deletes every record that expired by then. Both come out of `apply`, so they are functions of the log: every replica writes the
//! same archive at the same log index.
//!
//! # Layout (column family `archive`)
//!
//! - `r<key>` → 8-byte big-endian expiry (ms since the Unix epoch), then the value's bytes;
//! - `x<expiry as 8-byte big-endian><key>` → empty: the expiry index a purge walks in time order.
//!
//! # Idempotence
//!
//! Every operation can be applied again on top of an archive that already holds it or later
//! operations: a put writes the same bytes, an expiry change sets the same expiry, a purge
//! deletes what is expired. Replaying a suffix
//! of the log after a restart (or after installing a snapshot that carried a newer archive) ends
//! in the same archive as applying the log once.

use std::borrow::Cow;
use std::collections::HashMap;

use rocksdb::{Direction, IteratorMode, ReadOptions, SnapshotWithThreadMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::db::{cf, CF_ARCHIVE};
use crate::error::StoreError;

/// Prefix of a record's key.
const RECORD: u8 = b'r';
/// Prefix of an expiry index key.
const EXPIRY: u8 = b'x';

/// One change to the archive, produced by `apply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ArchiveOp {
    /// Store `value` under `key` until `expires_at_ms`.
    Put {
        /// The record's key, unique among live records.
        key: String,
        /// The record (the machine's own encoding, JSON by convention).
        value: String,
        /// When the record expires (ms since the Unix epoch).
        expires_at_ms: u64,
    },
    /// Set the expiry of the record under `key` to `expires_at_ms`, keeping its value; nothing
    /// when there is no such record (never put, or purged).
    Expire {
        /// The record's key.
        key: String,
        /// Its new expiry (ms since the Unix epoch; `u64::MAX` for "not before it is moved
        /// again").
        expires_at_ms: u64,
    },
    /// Delete every record whose expiry is at or before `at_ms`.
    PurgeBefore {
        /// The cut-off (ms since the Unix epoch).
        at_ms: u64,
    },
}

/// One record of the archive, as a snapshot carries it to a node that installs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRecord {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// When it expires.
    pub expires_at_ms: u64,
}

fn record_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(RECORD);
    out.extend_from_slice(key.as_bytes());
    out
}

fn expiry_key(expires_at_ms: u64, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(EXPIRY);
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// Splits a stored record value into its expiry and its bytes.
fn split_record(bytes: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    let Some((expiry, value)) = bytes.split_first_chunk::<8>() else {
        return Err(StoreError::corrupt(
            "archive record shorter than its expiry",
        ));
    };
    Ok((u64::from_be_bytes(*expiry), value))
}

/// Adds a record and its expiry index entry to `batch`.
fn put_record(
    batch: &mut WriteBatch,
    handle: &rocksdb::ColumnFamily,
    key: &str,
    value: &[u8],
    expires_at_ms: u64,
) {
    let mut stored = Vec::with_capacity(8 + value.len());
    stored.extend_from_slice(&expires_at_ms.to_be_bytes());
    stored.extend_from_slice(value);
    batch.put_cf(handle, record_key(key), stored);
    batch.put_cf(handle, expiry_key(expires_at_ms, key), []);
}

/// What a batch did to a key: wrote it with this expiry and value, or deleted it (`None`).
type Written<'a> = Option<(u64, Cow<'a, [u8]>)>;

/// Adds `ops` to `batch`, in order. Reads the archive (for a put over an existing key, and for
/// a purge's walk), so the caller must not interleave another archive writer.
pub(crate) fn write_ops(
    db: &DB,
    batch: &mut WriteBatch,
    ops: &[ArchiveOp],
) -> Result<(), StoreError> {
    let handle = cf(db, CF_ARCHIVE)?;
    // What this batch did to each key it touched, which the reads below cannot see yet.
    let mut written: HashMap<String, Written<'_>> = HashMap::new();
    // The record under `key` as the archive stands before this batch.
    let stored = |key: &str| -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        db.get_pinned_cf(handle, record_key(key))
            .map_err(|source| StoreError::Rocks {
                op: "read archive record",
                source,
            })?
            .map(|old| split_record(&old).map(|(expiry, value)| (expiry, value.to_vec())))
            .transpose()
    };
    for op in ops {
        match op {
            ArchiveOp::Put {
                key,
                value,
                expires_at_ms,
            } => {
                let old_expiry = match written.get(key.as_str()) {
                    Some(this_batch) => this_batch.as_ref().map(|(expiry, _)| *expiry),
                    None => stored(key)?.map(|(expiry, _)| expiry),
                };
                if let Some(old_expiry) = old_expiry.filter(|e| e != expires_at_ms) {
                    batch.delete_cf(handle, expiry_key(old_expiry, key));
                }
                put_record(batch, handle, key, value.as_bytes(), *expires_at_ms);
                written.insert(
                    key.clone(),
                    Some((*expires_at_ms, Cow::Borrowed(value.as_bytes()))),
                );
            }
            ArchiveOp::Expire { key, expires_at_ms } => {
                let current = match written.remove(key.as_str()) {
                    Some(this_batch) => this_batch,
                    None => stored(key)?.map(|(expiry, value)| (expiry, Cow::Owned(value))),
                };
                // Absent: never put, or purged already (a replay after the purge).
                let Some((old_expiry, value)) = current else {
                    written.insert(key.clone(), None);
                    continue;
                };
                if old_expiry != *expires_at_ms {
                    batch.delete_cf(handle, expiry_key(old_expiry, key));
                    put_record(batch, handle, key, &value, *expires_at_ms);
                }
                written.insert(key.clone(), Some((*expires_at_ms, value)));
            }
            ArchiveOp::PurgeBefore { at_ms } => {
                for (key, this_batch) in written.iter_mut() {
                    let expired = this_batch
                        .as_ref()
                        .is_some_and(|(expiry, _)| *expiry <= *at_ms);
                    if let (true, Some((expiry, _))) = (expired, this_batch.as_ref()) {
                        batch.delete_cf(handle, record_key(key));
                        batch.delete_cf(handle, expiry_key(*expiry, key));
                        *this_batch = None;
                    }
                }
                let start = [EXPIRY];
                let iter = db.iterator_cf(handle, IteratorMode::From(&start, Direction::Forward));
                for item in iter {
                    let (ikey, _) = item.map_err(|source| StoreError::Rocks {
                        op: "walk archive expiries",
                        source,
                    })?;
                    if ikey.first() != Some(&EXPIRY) {
                        break;
                    }
                    let Some((expiry, key)) = ikey[1..].split_first_chunk::<8>() else {
                        return Err(StoreError::corrupt("archive expiry key too short"));
                    };
                    if u64::from_be_bytes(*expiry) > *at_ms {
                        break;
                    }
                    let key_text = std::str::from_utf8(key)
                        .map_err(|_| StoreError::corrupt("archive key is not UTF-8"))?;
                    batch.delete_cf(handle, &ikey);
                    // A record this batch wrote (again) keeps what the batch gave it: its
                    // entry under the old expiry is gone, the new one stays.
                    if written.contains_key(key_text) {
                        continue;
                    }
                    batch.delete_cf(handle, record_key(key_text));
                    written.insert(key_text.to_owned(), None);
                }
            }
        }
    }
    Ok(())
}

/// Reads the record under `key`: `None` if absent or expired by a purge.
pub(crate) fn get(db: &DB, key: &str) -> Result<Option<String>, StoreError> {
    let handle = cf(db, CF_ARCHIVE)?;
    let Some(bytes) = db
        .get_pinned_cf(handle, record_key(key))
        .map_err(|source| StoreError::Rocks {
            op: "read archive record",
            source,
        })?
    else {
        return Ok(None);
    };
    let (_, value) = split_record(&bytes)?;
    String::from_utf8(value.to_vec())
        .map(Some)
        .map_err(|_| StoreError::corrupt(format!("archive record {key} is not UTF-8")))
}

/// Every record, in key order, for a snapshot sent to another node.
pub(crate) fn dump(db: &DB) -> Result<Vec<ArchivedRecord>, StoreError> {
    dump_with(db, ReadOptions::default())
}

/// Every record as of the RocksDB snapshot `at`, in key order, for a backup.
pub(crate) fn dump_at(
    db: &DB,
    at: &SnapshotWithThreadMode<'_, DB>,
) -> Result<Vec<ArchivedRecord>, StoreError> {
    let mut read = ReadOptions::default();
    read.set_snapshot(at);
    dump_with(db, read)
}

/// Every record `read` sees, in key order.
fn dump_with(db: &DB, read: ReadOptions) -> Result<Vec<ArchivedRecord>, StoreError> {
    let handle = cf(db, CF_ARCHIVE)?;
    let start = [RECORD];
    let mut out = Vec::new();
    for item in db.iterator_cf_opt(handle, read, IteratorMode::From(&start, Direction::Forward)) {
        let (rkey, bytes) = item.map_err(|source| StoreError::Rocks {
            op: "walk archive records",
            source,
        })?;
        if rkey.first() != Some(&RECORD) {
            break;
        }
        let key = String::from_utf8(rkey[1..].to_vec())
            .map_err(|_| StoreError::corrupt("archive key is not UTF-8"))?;
        let (expires_at_ms, value) = split_record(&bytes)?;
        let value = String::from_utf8(value.to_vec())
            .map_err(|_| StoreError::corrupt(format!("archive record {key} is not UTF-8")))?;
        out.push(ArchivedRecord {
            key,
            value,
            expires_at_ms,
        });
    }
    Ok(out)
}

/// Adds to `batch` the replacement of the whole archive by `records`.
pub(crate) fn replace_all(
    db: &DB,
    batch: &mut WriteBatch,
    records: &[ArchivedRecord],
) -> Result<(), StoreError> {
    let handle = cf(db, CF_ARCHIVE)?;
    batch.delete_range_cf(handle, [RECORD], [RECORD + 1]);
    batch.delete_range_cf(handle, [EXPIRY], [EXPIRY + 1]);
    // Written after the range deletes in the same batch, so the new records survive them.
    for record in records {
        put_record(
            batch,
            handle,
            &record.key,
            record.value.as_bytes(),
            record.expires_at_ms,
        );
    }
    Ok(())
}

/// What `ops` (not yet written) say about `key`: `Some(Some(value))` if a put is the last word,
/// `Some(None)` if a purge after it (or after an expiry change of a record written before)
/// removed it, `None` if they do not decide it.
pub(crate) fn pending_lookup(ops: &[ArchiveOp], key: &str) -> Option<Option<String>> {
    let mut found: Option<Option<String>> = None;
    // The record's expiry as these ops leave it, when they set it.
    let mut expiry: Option<u64> = None;
    for op in ops {
        match op {
            ArchiveOp::Put {
                key: k,
                value,
                expires_at_ms,
            } if k == key => {
                found = Some(Some(value.clone()));
                expiry = Some(*expires_at_ms);
            }
            ArchiveOp::Expire {
                key: k,
                expires_at_ms,
            } if k == key && found != Some(None) => {
                expiry = Some(*expires_at_ms);
            }
            ArchiveOp::PurgeBefore { at_ms } if expiry.is_some_and(|e| e <= *at_ms) => {
                found = Some(None);
                expiry = None;
            }
            _ => {}
        }
    }
    found
}
