//! openraft and Parley types to and from the protobuf envelopes of `parley-proto`.
//!
//! openraft's requests and replies travel as JSON inside protobuf `bytes`; see the comment at
//! the top of `parley.proto` for why.

use openraft::raft::InstallSnapshotRequest;
use parley_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CodecError;
use crate::types::TypeConfig;

/// Serializes `value` as JSON.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(value).map_err(|source| CodecError {
        action: "encode",
        what: std::any::type_name::<T>(),
        source,
    })
}

/// Deserializes JSON produced by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    serde_json::from_slice(bytes).map_err(|source| CodecError {
        action: "decode",
        what: std::any::type_name::<T>(),
        source,
    })
}

/// A snapshot chunk request as its protobuf message.
pub fn snapshot_chunk_to_proto(
    rpc: &InstallSnapshotRequest<TypeConfig>,
) -> Result<pb::SnapshotChunk, CodecError> {
    Ok(pb::SnapshotChunk {
        vote_json: encode(&rpc.vote)?,
        meta_json: encode(&rpc.meta)?,
        offset: rpc.offset,
        data: rpc.data.clone(),
        done: rpc.done,
    })
}

/// A protobuf snapshot chunk as openraft's request.
pub fn snapshot_chunk_from_proto(
    chunk: pb::SnapshotChunk,
) -> Result<InstallSnapshotRequest<TypeConfig>, CodecError> {
    Ok(InstallSnapshotRequest {
        vote: decode(&chunk.vote_json)?,
        meta: decode(&chunk.meta_json)?,
        offset: chunk.offset,
        data: chunk.data,
        done: chunk.done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{LogId, SnapshotMeta, StoredMembership, Vote};

    #[test]
    fn snapshot_chunk_round_trips() {
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 2),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 2), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-42-1".into(),
            },
            offset: 1024,
            data: vec![1, 2, 3],
            done: true,
        };
        let back = snapshot_chunk_from_proto(snapshot_chunk_to_proto(&rpc).unwrap()).unwrap();
        assert_eq!(back.vote, rpc.vote);
        assert_eq!(back.meta, rpc.meta);
        assert_eq!(back.offset, 1024);
        assert_eq!(back.data, vec![1, 2, 3]);
        assert!(back.done);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let chunk = pb::SnapshotChunk {
            vote_json: b"{not json".to_vec(),
            ..Default::default()
        };
        assert!(snapshot_chunk_from_proto(chunk).is_err());
        assert!(decode::<crate::command::Command>(b"[]").is_err());
    }
}
