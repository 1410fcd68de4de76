//! openraft and Parley types to and from the protobuf envelopes of `parley-proto`, and log
//! entries to and from the bytes the log store keeps.
//!
//! openraft's requests and replies travel inside protobuf `bytes`; see the comment at the top
//! of `parley.proto` for why. A payload is in one of two encodings, told apart by its first
//! byte ([`Encoding`]): JSON (what every release reads; it starts with `{`, `[`, `"` or
//! whitespace), or Parley's binary encoding: the byte [`BINARY_FORMAT`] (the log format that
//! introduced it), then MessagePack with named fields, so a field added later with a default
//! decodes as in JSON. [`decode`] reads either; what is written is chosen by the log format the
//! cluster runs ([`crate::version::log_format_at`]), so during a rolling upgrade no node sends
//! or stores what an older one cannot read. Log entries ([`encode_entry`]) are encoded in the
//! format their batch was written in ([`crate::Request::format`]).
//!
//! Two things need more than one value:
//! - an AppendEntries request too large for one message is cut into pieces that each fit
//!   ([`encode_append_piece`]), encoded straight from the entries without copying them;
//! - a snapshot travels as a stream of chunks: [`SnapshotChunks`] reads one from its file on the
//!   sending side, [`SnapshotAssembly`] checks the stream and writes it to a file on the
//!   receiving side; neither holds more than a chunk in memory.

use openraft::entry::RaftEntry;
use openraft::raft::AppendEntriesRequest;
use openraft::EntryPayload;
use parley_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde::Serialize;

use parley_storage::{SnapshotDir, SnapshotFile};

use crate::error::{Classified, CodecError, CodecFault, ErrorClass};
use crate::types::{LogId, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// Largest snapshot a node accepts from a peer, in bytes (2 GiB). A stream growing beyond it
/// is refused before the excess is written.
pub const SNAPSHOT_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;

/// The first byte of a payload in the binary encoding: the log format that introduced it. No
/// JSON text starts with it (a control character).
pub const BINARY_FORMAT: u8 = 2;

/// How a payload is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// JSON: every release reads it.
    Json,
    /// [`BINARY_FORMAT`], then MessagePack with named fields: log format 2 and later.
    Binary,
}

impl Encoding {
    /// The encoding of data written in log format `format`.
    pub fn of_log_format(format: u32) -> Self {
        if format >= u32::from(BINARY_FORMAT) {
            Encoding::Binary
        } else {
            Encoding::Json
        }
    }
}

/// Serializes `value` as JSON.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_as(Encoding::Json, value)
}

/// Serializes `value` in `encoding`.
pub fn encode_as<T: Serialize>(encoding: Encoding, value: &T) -> Result<Vec<u8>, CodecError> {
    let fault = |source: CodecFault| CodecError {
        action: "encode",
        what: std::any::type_name::<T>(),
        source,
    };
    match encoding {
        Encoding::Json => serde_json::to_vec(value).map_err(|e| fault(e.into())),
        Encoding::Binary => {
            let mut bytes = vec![BINARY_FORMAT];
            rmp_serde::encode::write_named(&mut bytes, value).map_err(|e| fault(e.into()))?;
            Ok(bytes)
        }
    }
}

/// The encoding `bytes` are in, told by their first byte.
pub fn encoding_of(bytes: &[u8]) -> Result<Encoding, CodecFault> {
    match bytes.first() {
        None => Err(CodecFault::Empty),
        Some(&BINARY_FORMAT) => Ok(Encoding::Binary),
        // JSON whitespace is a control character too.
        Some(&byte) if byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r') => {
            Err(CodecFault::UnknownFormat(byte))
        }
        Some(_) => Ok(Encoding::Json),
    }
}

/// Deserializes a value [`encode_as`] produced, in either encoding. Never panics, whatever the
/// bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let fault = |source: CodecFault| CodecError {
        action: "decode",
        what: std::any::type_name::<T>(),
        source,
    };
    match encoding_of(bytes).map_err(fault)? {
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| fault(e.into())),
        Encoding::Binary => rmp_serde::from_slice(&bytes[1..])
            .map_err(|e: rmp_serde::decode::Error| fault(e.into())),
    }
}

/// The log format `entry` was written in: its batch's, or the first format for the entries
/// openraft writes itself (blank and membership entries, which every release reads as JSON).
pub fn entry_log_format(entry: &Entry) -> u32 {
    match &entry.payload {
        EntryPayload::Normal(request) => request.format,
        EntryPayload::Blank | EntryPayload::Membership(_) => crate::version::first_format(),
    }
}

/// The bytes the log store keeps for `entry`: the encoding of its log format.
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    encode_as(Encoding::of_log_format(entry_log_format(entry)), entry)
}

/// Parley's log entries in the store: JSON or binary by their log format ([`encode_entry`]);
/// both read back.
impl parley_storage::EntryCodec for TypeConfig {
    fn encode_entry(entry: &Entry) -> Result<Vec<u8>, parley_storage::EntryCodecError> {
        Ok(encode_entry(entry)?)
    }

    fn decode_entry(bytes: &[u8]) -> Result<Entry, parley_storage::EntryCodecError> {
        Ok(decode(bytes)?)
    }
}

/// openraft's log entry type for Parley.
type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;

/// The wire form of an [`AppendEntriesRequest`] over borrowed entries: the same field names and
/// order, so it encodes to exactly the bytes of the owned request and decodes as one.
#[derive(Serialize)]
struct AppendEntriesWire<'a> {
    vote: &'a Vote,
    prev_log_id: Option<&'a LogId>,
    entries: &'a [Entry],
    leader_commit: &'a Option<LogId>,
}

/// One encoded piece of an AppendEntries request: a prefix of the entries not sent yet.
#[derive(Debug)]
pub struct AppendPiece {
    /// The piece as an encoded [`AppendEntriesRequest`]: binary if it carries an entry of a
    /// binary log format (the cluster writes it, so every member reads it), else JSON.
    pub json: Vec<u8>,
    /// How many entries it carries.
    pub entries: usize,
    /// The log id of its last entry, or its `prev_log_id` when it carries none.
    pub last_log_id: Option<LogId>,
}

/// Encodes the entries of `rpc` from index `start` on (an index into `rpc.entries`) as one
/// AppendEntries request, keeping as many of them as fit in `bytes_max` encoded bytes, but at
/// least one: a single entry larger than the limit is sent alone. The piece's `prev_log_id` is
/// the entry before `start` (or `rpc.prev_log_id` for `start == 0`), so consecutive pieces
/// chain. With no entries left the piece is the heartbeat of `rpc` (no entries).
pub fn encode_append_piece(
    rpc: &AppendEntriesRequest<TypeConfig>,
    start: usize,
    bytes_max: usize,
) -> Result<AppendPiece, CodecError> {
    let start = start.min(rpc.entries.len());
    let prev_log_id = match start.checked_sub(1) {
        None => rpc.prev_log_id,
        Some(before) => Some(rpc.entries[before].log_id()),
    };
    let rest = &rpc.entries[start..];
    let encoding = if rest
        .iter()
        .any(|entry| Encoding::of_log_format(entry_log_format(entry)) == Encoding::Binary)
    {
        Encoding::Binary
    } else {
        Encoding::Json
    };
    let encode_prefix = |n: usize| {
        encode_as(
            encoding,
            &AppendEntriesWire {
                vote: &rpc.vote,
                prev_log_id: prev_log_id.as_ref(),
                entries: &rest[..n],
                leader_commit: &rpc.leader_commit,
            },
        )
    };
    let mut n = rest.len();
    let mut json = encode_prefix(n)?;
    while json.len() > bytes_max && n > 1 {
        // Keep the share of entries that fits at the average size seen, and at least one
        // fewer each round, so this ends after a few encodings.
        let estimate = n.saturating_mul(bytes_max) / json.len().max(1);
        n = estimate.clamp(1, n - 1);
        json = encode_prefix(n)?;
    }
    let last_log_id = match n.checked_sub(1) {
        None => prev_log_id,
        Some(last) => Some(rest[last].log_id()),
    };
    Ok(AppendPiece {
        json,
        entries: n,
        last_log_id,
    })
}

/// A snapshot file cut into the chunks of the `InstallSnapshot` stream, read from the file
/// one chunk at a time (off the async workers): the first carries the vote and metadata, the
/// last is marked `done`, and the offsets are contiguous. A read that fails ends the chunks
/// early, without a `done` chunk, so the peer refuses the stream as incomplete; the failure is
/// logged.
pub struct SnapshotChunks {
    /// The encoded vote and metadata, until the first chunk takes them.
    header: Option<(Vec<u8>, Vec<u8>)>,
    data: SnapshotFile,
    offset: u64,
    chunk_bytes: usize,
    finished: bool,
}

impl SnapshotChunks {
    /// The chunks of `data`, at most `chunk_bytes` (at least 1) bytes of it each, sent under
    /// the leader's `vote`.
    pub fn new(
        vote: &Vote,
        meta: &SnapshotMeta,
        data: SnapshotFile,
        chunk_bytes: usize,
    ) -> Result<Self, CodecError> {
        Ok(Self {
            header: Some((encode(vote)?, encode(meta)?)),
            data,
            offset: 0,
            chunk_bytes: chunk_bytes.max(1),
            finished: false,
        })
    }

    /// The snapshot's size in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.data.len()
    }

    /// The next chunk; `None` after the last one or after a read failed.
    pub async fn next_chunk(&mut self) -> Option<pb::SnapshotChunk> {
        if self.finished {
            return None;
        }
        let data = match self.data.read_chunk(self.offset, self.chunk_bytes).await {
            Ok(data) => data,
            Err(error) => {
                self.finished = true;
                tracing::error!(
                    offset = self.offset,
                    %error,
                    "reading the snapshot file being sent failed; the transfer ends incomplete"
                );
                return None;
            }
        };
        let end = self.offset + data.len() as u64;
        let (vote_json, meta_json) = self.header.take().unwrap_or_default();
        let chunk = pb::SnapshotChunk {
            vote_json,
            meta_json,
            offset: self.offset,
            data,
            done: end >= self.data.len(),
        };
        self.offset = end;
        self.finished = chunk.done;
        Some(chunk)
    }

    /// The chunks as a stream.
    pub fn into_stream(self) -> impl futures::Stream<Item = pb::SnapshotChunk> + Send + 'static {
        futures::stream::unfold(self, |mut chunks| async move {
            chunks.next_chunk().await.map(|chunk| (chunk, chunks))
        })
    }
}

/// A snapshot stream a node refuses.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotStreamError {
    /// The first chunk lacks the vote or the metadata.
    #[error("the first snapshot chunk carries no {missing}")]
    MissingHeader {
        /// `vote_json` or `meta_json`.
        missing: &'static str,
    },
    /// A chunk after the first carries a vote or metadata again.
    #[error("snapshot chunk at offset {offset} repeats the header")]
    RepeatedHeader {
        /// The chunk's offset.
        offset: u64,
    },
    /// The vote or the metadata is not readable.
    #[error("snapshot header: {0}")]
    Header(#[source] CodecError),
    /// A chunk does not start where the previous one ended.
    #[error("snapshot chunk at offset {got}, expected offset {expected}")]
    OutOfOrder {
        /// The bytes received so far.
        expected: u64,
        /// The chunk's offset.
        got: u64,
    },
    /// The snapshot grows beyond the limit.
    #[error("snapshot exceeds {limit} bytes (at least {got} sent)")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
        /// The bytes received with the offending chunk.
        got: u64,
    },
    /// A chunk follows the one marked done.
    #[error("snapshot chunk after the last one")]
    AfterDone,
    /// The stream ended before the chunk marked done.
    #[error("snapshot stream ended after {received} bytes, before its last chunk")]
    Incomplete {
        /// The bytes received.
        received: u64,
    },
    /// The file the snapshot is received into could not be created or written.
    #[error("snapshot spool file: {0}")]
    Spool(#[source] std::io::Error),
}

impl Classified for SnapshotStreamError {
    fn class(&self) -> ErrorClass {
        match self {
            SnapshotStreamError::TooLarge { .. } => ErrorClass::PayloadTooLarge,
            SnapshotStreamError::Spool(_) => ErrorClass::Unavailable,
            _ => ErrorClass::InvalidArgument,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            SnapshotStreamError::TooLarge { .. } => "snapshot_too_large",
            SnapshotStreamError::Spool(_) => "snapshot_spool",
            _ => "malformed_payload",
        }
    }
}

/// A snapshot received completely: the sender's vote and the snapshot.
#[derive(Debug)]
pub struct AssembledSnapshot {
    /// The sending leader's vote.
    pub vote: Vote,
    /// The snapshot: its metadata and its file.
    pub snapshot: Snapshot,
}

/// Reassembles a streamed snapshot chunk by chunk into a file, refusing anything but the
/// stream [`SnapshotChunks`] produces: a header on the first chunk only, contiguous offsets, at
/// most the byte limit in all, nothing after the chunk marked done. Never panics on any input.
/// Writes are blocking: call [`SnapshotAssembly::push`] off the async workers.
#[derive(Debug)]
pub struct SnapshotAssembly {
    header: Option<(Vote, SnapshotMeta)>,
    /// The node's snapshot directory.
    dir: SnapshotDir,
    /// The file the bytes go to: unnamed, in `dir`.
    spool: std::fs::File,
    received: u64,
    done: bool,
    bytes_max: u64,
}

impl SnapshotAssembly {
    /// An empty assembly taking at most [`SNAPSHOT_BYTES_MAX`] bytes into an unnamed file in
    /// `dir`.
    pub fn new(dir: &SnapshotDir) -> Result<Self, SnapshotStreamError> {
        Self::with_limit(dir, SNAPSHOT_BYTES_MAX)
    }

    /// An empty assembly taking at most `bytes_max` bytes into an unnamed file in `dir`.
    pub fn with_limit(dir: &SnapshotDir, bytes_max: u64) -> Result<Self, SnapshotStreamError> {
        let spool = dir.unnamed().map_err(SnapshotStreamError::Spool)?;
        Ok(Self {
            header: None,
            dir: dir.clone(),
            spool,
            received: 0,
            done: false,
            bytes_max,
        })
    }

    /// The bytes received so far.
    pub fn received_bytes(&self) -> u64 {
        self.received
    }

    /// Whether the chunk marked done has arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Adds the next chunk; answers whether it was the last.
    pub fn push(&mut self, chunk: pb::SnapshotChunk) -> Result<bool, SnapshotStreamError> {
        if self.done {
            return Err(SnapshotStreamError::AfterDone);
        }
        let has_header = !chunk.vote_json.is_empty() || !chunk.meta_json.is_empty();
        if self.header.is_none() {
            if chunk.vote_json.is_empty() {
                return Err(SnapshotStreamError::MissingHeader {
                    missing: "vote_json",
                });
            }
            if chunk.meta_json.is_empty() {
                return Err(SnapshotStreamError::MissingHeader {
                    missing: "meta_json",
                });
            }
            let vote: Vote = decode(&chunk.vote_json).map_err(SnapshotStreamError::Header)?;
            let meta: SnapshotMeta =
                decode(&chunk.meta_json).map_err(SnapshotStreamError::Header)?;
            self.header = Some((vote, meta));
        } else if has_header {
            return Err(SnapshotStreamError::RepeatedHeader {
                offset: chunk.offset,
            });
        }
        let expected = self.received;
        if chunk.offset != expected {
            return Err(SnapshotStreamError::OutOfOrder {
                expected,
                got: chunk.offset,
            });
        }
        let got = expected.saturating_add(chunk.data.len() as u64);
        if got > self.bytes_max {
            return Err(SnapshotStreamError::TooLarge {
                limit: self.bytes_max,
                got,
            });
        }
        std::io::Write::write_all(&mut self.spool, &chunk.data)
            .map_err(SnapshotStreamError::Spool)?;
        self.received = got;
        self.done = chunk.done;
        Ok(self.done)
    }

    /// The snapshot, once the chunk marked done has arrived. Its file is checked by the store
    /// when it is installed (frame by frame, each against its checksum).
    pub fn finish(self) -> Result<AssembledSnapshot, SnapshotStreamError> {
        match self.header {
            Some((vote, meta)) if self.done => Ok(AssembledSnapshot {
                vote,
                snapshot: Snapshot {
                    meta,
                    snapshot: self.dir.adopt(self.spool, self.received),
                },
            }),
            Some(_) => Err(SnapshotStreamError::Incomplete {
                received: self.received,
            }),
            None => Err(SnapshotStreamError::MissingHeader {
                missing: "vote_json",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use openraft::type_config::alias::CommittedLeaderIdOf;
    use openraft::StoredMembership;
    use parley_storage::IoMode;

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(
            CommittedLeaderIdOf::<TypeConfig> {
                term,
                node_id: node,
            },
            index,
        )
    }

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(log_id(3, 2, 42)),
            last_membership: StoredMembership::default(),
        }
    }

    /// A snapshot directory in a fresh temporary directory (kept alive by the guard).
    fn spool_dir() -> (tempfile::TempDir, SnapshotDir) {
        let root = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(root.path().join("snapshots"), IoMode::Inline).unwrap();
        (root, dir)
    }

    /// `data` as a snapshot file of `dir` (the chunks do not look inside it).
    fn file_of(dir: &SnapshotDir, data: &[u8]) -> SnapshotFile {
        let mut file = dir.unnamed().unwrap();
        std::io::Write::write_all(&mut file, data).unwrap();
        dir.adopt(file, data.len() as u64)
    }

    fn assemble(
        dir: &SnapshotDir,
        chunks: impl IntoIterator<Item = pb::SnapshotChunk>,
    ) -> AssembledSnapshot {
        let mut assembly = SnapshotAssembly::new(dir).unwrap();
        for chunk in chunks {
            assembly.push(chunk).unwrap();
        }
        assembly.finish().unwrap()
    }

    async fn chunks_from(
        dir: &SnapshotDir,
        vote: &Vote,
        data: &[u8],
        chunk_bytes: usize,
    ) -> Vec<pb::SnapshotChunk> {
        let file = file_of(dir, data);
        SnapshotChunks::new(vote, &meta(), file, chunk_bytes)
            .unwrap()
            .into_stream()
            .collect()
            .await
    }

    #[tokio::test]
    async fn snapshot_chunk_round_trips() {
        let (_root, dir) = spool_dir();
        let vote = Vote::new_committed(3, 2);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let chunks = chunks_from(&dir, &vote, &data, 1024).await;
        assert_eq!(chunks.len(), 10);
        assert!(!chunks[0].vote_json.is_empty() && !chunks[0].meta_json.is_empty());
        assert!(chunks[1..].iter().all(|c| c.vote_json.is_empty()));
        assert_eq!(chunks.iter().filter(|c| c.done).count(), 1);
        assert!(chunks.last().unwrap().done);
        let back = assemble(&dir, chunks);
        assert_eq!(back.vote, vote);
        assert_eq!(back.snapshot.meta, meta());
        assert_eq!(back.snapshot.snapshot.read_all().unwrap(), data);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a received snapshot has no name until the store keeps it"
        );
    }

    #[tokio::test]
    async fn an_empty_snapshot_is_one_chunk() {
        let (_root, dir) = spool_dir();
        let vote = Vote::new_committed(1, 1);
        let chunks = chunks_from(&dir, &vote, &[], 1024).await;
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].done);
        let back = assemble(&dir, chunks);
        assert!(back.snapshot.snapshot.is_empty());
        assert_eq!(back.snapshot.meta, meta());
    }

    fn chunks_of(dir: &SnapshotDir, data: &[u8], chunk_bytes: usize) -> Vec<pb::SnapshotChunk> {
        futures::executor::block_on(chunks_from(
            dir,
            &Vote::new_committed(3, 2),
            data,
            chunk_bytes,
        ))
    }

    #[test]
    fn out_of_order_offsets_are_rejected() {
        let (_root, dir) = spool_dir();
        let mut chunks = chunks_of(&dir, &[7; 300], 100);
        chunks.swap(1, 2);
        let mut assembly = SnapshotAssembly::new(&dir).unwrap();
        assembly.push(chunks[0].clone()).unwrap();
        let error = assembly.push(chunks[1].clone()).unwrap_err();
        assert!(matches!(
            error,
            SnapshotStreamError::OutOfOrder {
                expected: 100,
                got: 200
            }
        ));

        // A repeated chunk is out of order too.
        let chunks = chunks_of(&dir, &[7; 300], 100);
        let mut assembly = SnapshotAssembly::new(&dir).unwrap();
        assembly.push(chunks[0].clone()).unwrap();
        assembly.push(chunks[1].clone()).unwrap();
        assert!(matches!(
            assembly.push(chunks[1].clone()),
            Err(SnapshotStreamError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn a_missing_header_is_rejected() {
        let (_root, dir) = spool_dir();
        let mut chunks = chunks_of(&dir, &[7; 300], 100);
        chunks[0].meta_json.clear();
        let error = SnapshotAssembly::new(&dir)
            .unwrap()
            .push(chunks[0].clone())
            .unwrap_err();
        assert!(matches!(
            error,
            SnapshotStreamError::MissingHeader {
                missing: "meta_json"
            }
        ));
        // Starting with the second chunk: no header at all.
        let error = SnapshotAssembly::new(&dir)
            .unwrap()
            .push(chunks[1].clone())
            .unwrap_err();
        assert!(matches!(
            error,
            SnapshotStreamError::MissingHeader {
                missing: "vote_json"
            }
        ));
        // No chunk at all.
        assert!(SnapshotAssembly::new(&dir).unwrap().finish().is_err());
    }

    #[test]
    fn incomplete_and_trailing_chunks_are_rejected() {
        let (_root, dir) = spool_dir();
        let chunks = chunks_of(&dir, &[7; 300], 100);
        let mut assembly = SnapshotAssembly::new(&dir).unwrap();
        assembly.push(chunks[0].clone()).unwrap();
        assert!(matches!(
            assembly.finish(),
            Err(SnapshotStreamError::Incomplete { received: 100 })
        ));

        let mut assembly = SnapshotAssembly::new(&dir).unwrap();
        for chunk in chunks.iter().cloned() {
            assembly.push(chunk).unwrap();
        }
        let mut extra = chunks[2].clone();
        extra.offset = 300;
        assert!(matches!(
            assembly.push(extra),
            Err(SnapshotStreamError::AfterDone)
        ));
    }

    #[test]
    fn an_oversize_snapshot_is_rejected() {
        let (_root, dir) = spool_dir();
        let chunks = chunks_of(&dir, &[7; 300], 100);
        let mut assembly = SnapshotAssembly::with_limit(&dir, 250).unwrap();
        assembly.push(chunks[0].clone()).unwrap();
        assembly.push(chunks[1].clone()).unwrap();
        let error = assembly.push(chunks[2].clone()).unwrap_err();
        assert!(matches!(
            error,
            SnapshotStreamError::TooLarge {
                limit: 250,
                got: 300
            }
        ));
        assert_eq!(error.class(), ErrorClass::PayloadTooLarge);
        assert_eq!(assembly.received_bytes(), 200, "the excess was not written");
    }

    #[test]
    fn a_spool_that_cannot_be_made_is_unavailable_not_a_panic() {
        let (root, dir) = spool_dir();
        drop(root);
        let error = SnapshotAssembly::new(&dir).unwrap_err();
        assert!(matches!(error, SnapshotStreamError::Spool(_)), "{error}");
        assert_eq!(error.class(), ErrorClass::Unavailable);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (_root, dir) = spool_dir();
        let chunk = pb::SnapshotChunk {
            vote_json: b"{not json".to_vec(),
            meta_json: b"{}".to_vec(),
            ..Default::default()
        };
        let error = SnapshotAssembly::new(&dir)
            .unwrap()
            .push(chunk)
            .unwrap_err();
        assert!(matches!(error, SnapshotStreamError::Header(_)));
        assert_eq!(error.code(), "malformed_payload");

        let chunk = pb::SnapshotChunk {
            vote_json: encode(&Vote::new_committed(1, 1)).unwrap(),
            meta_json: b"[1, 2, 3]".to_vec(),
            offset: u64::MAX,
            ..Default::default()
        };
        assert!(SnapshotAssembly::new(&dir).unwrap().push(chunk).is_err());
        assert!(decode::<crate::command::Command>(b"[]").is_err());
        assert!(decode::<AppendEntriesRequest<TypeConfig>>(b"{\"vote\": 1}").is_err());
    }

    fn entries(n: u64) -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry::new_normal(log_id(2, 1, i), crate::command::Request::default()))
            .collect()
    }

    fn request(entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 1, 0)),
            entries,
            leader_commit: Some(log_id(1, 1, 0)),
        }
    }

    /// The borrowed wire form encodes exactly like openraft's own request.
    #[test]
    fn a_whole_append_piece_is_the_request() {
        let rpc = request(entries(5));
        let piece = encode_append_piece(&rpc, 0, usize::MAX).unwrap();
        assert_eq!(piece.json, encode(&rpc).unwrap());
        assert_eq!(piece.entries, 5);
        assert_eq!(piece.last_log_id, Some(log_id(2, 1, 5)));

        let heartbeat = request(Vec::new());
        let piece = encode_append_piece(&heartbeat, 0, 1).unwrap();
        assert_eq!(piece.json, encode(&heartbeat).unwrap());
        assert_eq!(
            (piece.entries, piece.last_log_id),
            (0, Some(log_id(1, 1, 0)))
        );
    }

    fn binary_entries(n: u64) -> Vec<Entry> {
        (1..=n)
            .map(|i| {
                let command = crate::command::Command {
                    at_ms: 1_000 + i,
                    origin: 1,
                    op: crate::command::Op::Tick,
                };
                Entry::new_normal(
                    log_id(2, 1, i),
                    crate::command::Request::in_format(2, vec![command]),
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_stored_in_the_encoding_of_their_log_format() {
        let json = &entries(1)[0];
        let binary = &binary_entries(1)[0];
        let json_bytes = encode_entry(json).unwrap();
        let binary_bytes = encode_entry(binary).unwrap();
        assert_eq!(json_bytes[0], b'{');
        assert_eq!(binary_bytes[0], BINARY_FORMAT);
        assert_eq!(&decode::<Entry>(&json_bytes).unwrap(), json);
        assert_eq!(&decode::<Entry>(&binary_bytes).unwrap(), binary);
        assert!(binary_bytes.len() < encode(binary).unwrap().len());

        // openraft's own entries stay JSON, which every release reads.
        let blank = Entry::new_blank(log_id(3, 2, 7));
        assert_eq!(encode_entry(&blank).unwrap()[0], b'{');
        // Both encodings carry every kind of entry.
        let membership = Entry::new_membership(
            log_id(3, 2, 8),
            openraft::Membership::new_with_defaults(vec![[1u64, 2, 3].into_iter().collect()], [4]),
        );
        for entry in [blank, membership] {
            let bytes = encode_as(Encoding::Binary, &entry).unwrap();
            assert_eq!(decode::<Entry>(&bytes).unwrap(), entry);
        }
    }

    #[test]
    fn a_payload_names_its_encoding_and_unknown_ones_are_refused() {
        assert!(matches!(encoding_of(b""), Err(CodecFault::Empty)));
        assert_eq!(encoding_of(b"{}").unwrap(), Encoding::Json);
        assert_eq!(encoding_of(b" \n{}").unwrap(), Encoding::Json);
        assert_eq!(
            encoding_of(&[BINARY_FORMAT, 0x80]).unwrap(),
            Encoding::Binary
        );
        assert!(matches!(
            encoding_of(&[3, 0x80]),
            Err(CodecFault::UnknownFormat(3))
        ));
        let error = decode::<Entry>(&[7, 1, 2, 3]).unwrap_err();
        assert!(error.to_string().contains("format 7"), "{error}");
        assert_eq!(error.code(), "malformed_payload");
        assert!(decode::<Entry>(&[]).is_err());
    }

    #[test]
    fn damaged_binary_is_an_error_not_a_panic() {
        let bytes = encode_entry(&binary_entries(1)[0]).unwrap();
        for cut in 1..bytes.len() {
            assert!(decode::<Entry>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        for i in 1..flipped.len() {
            flipped[i] ^= 0xff;
            // Decodes to something else or fails; never panics.
            let _ = decode::<Entry>(&flipped);
            flipped[i] ^= 0xff;
        }
        assert!(decode::<Entry>(&[BINARY_FORMAT]).is_err());
        assert!(decode::<crate::command::Command>(&[BINARY_FORMAT, 0xc1]).is_err());
    }

    /// A piece with an entry of a binary log format is binary; it decodes to the same request.
    #[test]
    fn append_pieces_of_binary_entries_are_binary() {
        let rpc = request(binary_entries(30));
        let whole = encode_append_piece(&rpc, 0, usize::MAX).unwrap();
        assert_eq!(whole.json[0], BINARY_FORMAT);
        let back: AppendEntriesRequest<TypeConfig> = decode(&whole.json).unwrap();
        assert_eq!(back.entries, rpc.entries);
        assert_eq!(
            (back.vote, back.prev_log_id, back.leader_commit),
            (rpc.vote, rpc.prev_log_id, rpc.leader_commit)
        );
        // Smaller than the same request in JSON, and cut into pieces the same way.
        assert!(whole.json.len() < encode(&rpc).unwrap().len());
        let piece = encode_append_piece(&rpc, 10, whole.json.len() / 4).unwrap();
        assert!(piece.entries >= 1 && piece.entries < 20);
        let back: AppendEntriesRequest<TypeConfig> = decode(&piece.json).unwrap();
        assert_eq!(back.prev_log_id, Some(log_id(2, 1, 10)));
        assert_eq!(back.entries[..], rpc.entries[10..10 + piece.entries]);
    }

    /// Pieces fit the limit (or carry one entry), chain through `prev_log_id` and together
    /// carry every entry once.
    #[test]
    fn append_pieces_fit_and_chain() {
        let rpc = request(entries(40));
        let whole = encode(&rpc).unwrap().len();
        let limit = whole / 5;
        let mut start = 0;
        let mut prev = rpc.prev_log_id;
        let mut indexes = Vec::new();
        while start < rpc.entries.len() {
            let piece = encode_append_piece(&rpc, start, limit).unwrap();
            assert!(piece.entries >= 1);
            assert!(piece.json.len() <= limit || piece.entries == 1);
            let back: AppendEntriesRequest<TypeConfig> = decode(&piece.json).unwrap();
            assert_eq!(back.prev_log_id, prev);
            assert_eq!(back.vote, rpc.vote);
            assert_eq!(back.leader_commit, rpc.leader_commit);
            assert_eq!(back.entries.len(), piece.entries);
            indexes.extend(back.entries.iter().map(|e| e.index()));
            prev = piece.last_log_id;
            start += piece.entries;
        }
        assert_eq!(indexes, (1..=40).collect::<Vec<_>>());
        assert_eq!(prev, Some(log_id(2, 1, 40)));
    }
}
