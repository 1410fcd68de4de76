//! A toy key-value type config and machine shared by the integration tests.

#![allow(dead_code)]

use openraft::type_config::alias::{EntryOf, LogIdOf};
use openraft::{BasicNode, EntryPayload};
use parley_storage::{ArchiveOp, Db, DbOptions, LogStore, Machine, StateMachineStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tempfile::TempDir;

/// A toy application request: set `key` to `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    pub key: String,
    pub value: String,
}

impl std::fmt::Display for KvRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

openraft::declare_raft_types!(
    /// The toy type config.
    pub KvConfig:
        D = KvRequest,
        R = Option<String>,
        NodeId = u64,
        Node = BasicNode,
);

/// The toy config's log entry.
pub type Entry = EntryOf<KvConfig>;

/// The toy config stores its entries as JSON.
impl parley_storage::EntryCodec for KvConfig {
    fn encode_entry(entry: &Entry) -> Result<Vec<u8>, parley_storage::EntryCodecError> {
        parley_storage::entry_codec::json::encode(entry)
    }

    fn decode_entry(bytes: &[u8]) -> Result<Entry, parley_storage::EntryCodecError> {
        parley_storage::entry_codec::json::decode(bytes)
    }
}

/// The toy config's vote.
pub type Vote = openraft::type_config::alias::VoteOf<KvConfig>;

/// The toy config's snapshot metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<KvConfig>;

/// The toy config's stored membership.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<KvConfig>;

/// A toy machine: a sorted map; `apply` returns the previous value.
///
/// Two keys are commands for the archive: `retire:<key>` with value `<expiry ms>` moves
/// `<key>` out of the map into the archive; `expire:<key>` with value `<expiry ms>` moves an
/// archived record's expiry; `purge` with value `<ms>` purges the archive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvMachine {
    pub data: BTreeMap<String, String>,
    /// Index of the last request applied, to check `log_index` is passed through.
    pub last_index: u64,
    /// Archive operations not yet taken by the store.
    #[serde(skip)]
    pub outbox: Vec<ArchiveOp>,
}

impl Machine for KvMachine {
    type Request = KvRequest;
    type Response = Option<String>;

    fn apply(&mut self, log_index: u64, request: &KvRequest) -> Option<String> {
        self.last_index = log_index;
        if let Some(key) = request.key.strip_prefix("retire:") {
            let value = self.data.remove(key)?;
            self.outbox.push(ArchiveOp::Put {
                key: key.to_owned(),
                value: value.clone(),
                expires_at_ms: request.value.parse().unwrap_or(0),
            });
            return Some(value);
        }
        if let Some(key) = request.key.strip_prefix("expire:") {
            self.outbox.push(ArchiveOp::Expire {
                key: key.to_owned(),
                expires_at_ms: request.value.parse().unwrap_or(0),
            });
            return None;
        }
        if request.key == "purge" {
            self.outbox.push(ArchiveOp::PurgeBefore {
                at_ms: request.value.parse().unwrap_or(0),
            });
            return None;
        }
        self.data.insert(request.key.clone(), request.value.clone())
    }

    fn take_archive(&mut self) -> Vec<ArchiveOp> {
        std::mem::take(&mut self.outbox)
    }

    fn empty_response() -> Option<String> {
        None
    }
}

pub type Log = LogStore<KvConfig>;
pub type Sm = StateMachineStore<KvConfig, KvMachine>;

/// A log id with leader node 1.
pub fn lid(term: u64, index: u64) -> LogIdOf<KvConfig> {
    openraft::testing::log_id::<KvConfig>(term, 1, index)
}

/// A blank entry.
pub fn blank(term: u64, index: u64) -> Entry {
    openraft::testing::blank_ent::<KvConfig>(term, 1, index)
}

/// A membership entry with voters `voters`.
pub fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    openraft::testing::membership_ent::<KvConfig>(
        term,
        1,
        index,
        vec![voters.iter().copied().collect()],
    )
}

/// A normal entry setting `key` to `value`.
pub fn put(term: u64, index: u64, key: &str, value: &str) -> Entry {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(KvRequest {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

/// Opens a database in a fresh temporary directory.
pub fn fresh(opts: DbOptions) -> (TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), opts).expect("open db");
    (dir, db)
}

/// `bytes` as a snapshot file of `sm`'s store (e.g. damaged bytes offered for install).
#[allow(dead_code)]
pub fn snapshot_file(sm: &Sm, bytes: &[u8]) -> parley_storage::SnapshotFile {
    let mut file = sm.snapshot_dir().unnamed().unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    sm.snapshot_dir().adopt(file, bytes.len() as u64)
}
