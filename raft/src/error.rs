//! Errors of the replicated core. Fatal errors (the replica cannot run) are kept apart from the
//! errors a single write can meet.

use crate::types::NodeId;

/// The replica could not start or stopped working.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Opening or using the RocksDB store failed.
    #[error("storage: {0}")]
    Storage(#[from] parley_storage::StoreError),
    /// openraft refused the configuration.
    #[error("raft config: {0}")]
    Config(#[from] openraft::ConfigError),
    /// openraft stopped.
    #[error("raft stopped: {0}")]
    Fatal(#[from] openraft::error::Fatal<NodeId>),
    /// The static membership is unusable.
    #[error("membership: {0}")]
    Membership(String),
}

/// A write could not be committed. Every command is idempotent, so the client may retry the
/// same command (same client ids) after any of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// No leader became known within the write timeout (e.g. no quorum).
    #[error("no leader is known after {waited_ms} ms; the cluster may have lost its quorum")]
    NoLeader {
        /// How long the proposer waited.
        waited_ms: u64,
    },
    /// The write was sent but its commit was not confirmed in time; it may still commit.
    #[error("the write was not confirmed within {waited_ms} ms; retry with the same ids")]
    Timeout {
        /// How long the proposer waited.
        waited_ms: u64,
    },
    /// The proposer's queue is full: the node is overloaded.
    #[error("too many writes are waiting on this node")]
    Overloaded,
    /// This node is shutting down.
    #[error("this node is shutting down")]
    ShuttingDown,
    /// A command could not be encoded or a reply decoded.
    #[error("codec: {0}")]
    Codec(String),
}

/// Encoding or decoding a network payload failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {what}: {source}")]
pub struct CodecError {
    /// `encode` or `decode`.
    pub action: &'static str,
    /// The payload's type.
    pub what: &'static str,
    /// The underlying error.
    #[source]
    pub source: serde_json::Error,
}
