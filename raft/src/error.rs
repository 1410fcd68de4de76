//! Errors of the replicated core. Fatal errors (the replica cannot run) are kept apart from the
//! errors a single write can meet.

use crate::types::TypeConfig;

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
    Fatal(#[from] openraft::error::Fatal<TypeConfig>),
    /// The static membership is unusable.
    #[error("membership: {0}")]
    Membership(String),
    /// The island clock could not be opened.
    #[error("island clock: {0}")]
    Clock(#[from] crate::island::HlcError),
}

/// A backup could not be taken, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file or stream could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The file is not a Parley backup.
    #[error("not a Parley backup: {0}")]
    NotABackup(String),
    /// The file is of a format this release does not read.
    #[error(
        "the backup has file format {format}; this release reads format {}: use a newer release",
        crate::backup::file::FILE_FORMAT
    )]
    FileFormat {
        /// Its format.
        format: u32,
    },
    /// The header is not the JSON it should be.
    #[error("the backup's header: {0}")]
    Header(serde_json::Error),
    /// The payload is shorter or longer than the header says: a truncated or appended file.
    #[error("the backup's payload should be {expected} bytes but is {found}: the file is damaged or incomplete")]
    Length {
        /// What the header says.
        expected: u64,
        /// What the file holds.
        found: String,
    },
    /// The payload's checksum is not the header's.
    #[error("the backup's payload has checksum {found}, its header says {expected}: the file is damaged")]
    Checksum {
        /// What the header says.
        expected: String,
        /// What the payload hashes to.
        found: String,
    },
    /// The state decoded from the payload has another digest than the header records.
    #[error("the backup's state has digest {found}, its header says {expected}")]
    Digest {
        /// What the header says.
        expected: String,
        /// What the decoded state hashes to.
        found: String,
    },
    /// The snapshot could not be cut, decoded or written.
    #[error("storage: {0}")]
    Store(#[from] parley_storage::StoreError),
    /// The node cannot give a backup now.
    #[error("no backup now: {0}")]
    NotReady(String),
    /// The restore would be unsafe or cannot fit its target.
    #[error("refused: {0}")]
    Refused(String),
}

/// Peer TLS material could not be loaded or does not fit this node.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {}: {source}", .path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{}: {problem}", .path.display())]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The files parse but cannot be used together: a key that does not match, a certificate
    /// that does not name this node, has expired or is not from the CA bundle.
    #[error("{}: {problem}", .path.display())]
    Material {
        /// The file at fault.
        path: std::path::PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// No certificate name can be made for a node id.
    #[error("node {node} has no certificate name: {problem}")]
    Identity {
        /// The node.
        node: crate::types::NodeId,
        /// What is wrong.
        problem: String,
    },
}

/// A write could not be committed. Every command is idempotent, so the client may retry the
/// same command (same client ids) after any of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// This node is an island and does not take this write until it is connected again.
    #[error("this node is cut off from its cluster (island mode) and does not take {what}; retry once the site is connected again")]
    Island {
        /// What kind of write was refused.
        what: String,
    },
    /// This node's island writes are still being merged into the cluster; the write waited
    /// for the merge as long as a write may wait.
    #[error("this node's island writes are still being merged into the cluster; retry shortly")]
    Merging,
    /// The island journal could not be written: the write was not taken.
    #[error("the island journal: {0}")]
    Journal(String),
    /// The island node that keeps this site's island journal (see [`crate::island::site`])
    /// did not confirm the write; it may still have taken it.
    #[error("node {keeper}, which keeps this site's island journal, did not confirm the write ({problem}); retry with the same ids")]
    IslandKeeper {
        /// The keeper.
        keeper: crate::types::NodeId,
        /// What went wrong.
        problem: String,
    },
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
    pub source: CodecFault,
}

/// What went wrong inside a [`CodecError`].
#[derive(Debug, thiserror::Error)]
pub enum CodecFault {
    /// The JSON encoding failed.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// The binary encoding (MessagePack) failed to encode.
    #[error("{0}")]
    BinaryEncode(#[from] rmp_serde::encode::Error),
    /// The binary encoding (MessagePack) failed to decode.
    #[error("{0}")]
    BinaryDecode(#[from] rmp_serde::decode::Error),
    /// The payload is empty.
    #[error("the payload is empty")]
    Empty,
    /// The payload's first byte names a binary format this release does not read.
    #[error("the payload is in format {0}, which this release does not read")]
    UnknownFormat(u8),
}

/// What kind of failure an error is, with its stable code: the one table from which both the
/// HTTP status (the node's web edge) and the gRPC code (the node-to-node services) are taken,
/// so the two can never disagree about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request is malformed or out of bounds; retrying it unchanged fails again.
    InvalidArgument,
    /// No valid credential.
    Unauthenticated,
    /// A valid credential that does not allow this.
    PermissionDenied,
    /// What the request names does not exist.
    NotFound,
    /// The request does not fit the current state.
    Conflict,
    /// What the request asks for is no longer kept.
    Gone,
    /// The request is larger than this node takes.
    PayloadTooLarge,
    /// The request's body is not in a format this endpoint takes.
    UnsupportedMediaType,
    /// The caller sends too much; retry after the time the answer names.
    TooManyRequests,
    /// Retry later, maybe on another node.
    Unavailable,
    /// A bug or an internal failure.
    Internal,
}

impl ErrorClass {
    /// The HTTP status of this class.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorClass::InvalidArgument => 400,
            ErrorClass::Unauthenticated => 401,
            ErrorClass::PermissionDenied => 403,
            ErrorClass::NotFound => 404,
            ErrorClass::Conflict => 409,
            ErrorClass::Gone => 410,
            ErrorClass::PayloadTooLarge => 413,
            ErrorClass::UnsupportedMediaType => 415,
            ErrorClass::TooManyRequests => 429,
            ErrorClass::Unavailable => 503,
            ErrorClass::Internal => 500,
        }
    }

    /// The gRPC status code of this class.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorClass::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorClass::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorClass::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorClass::NotFound => tonic::Code::NotFound,
            ErrorClass::Conflict => tonic::Code::FailedPrecondition,
            ErrorClass::Gone => tonic::Code::OutOfRange,
            ErrorClass::PayloadTooLarge => tonic::Code::ResourceExhausted,
            ErrorClass::UnsupportedMediaType => tonic::Code::InvalidArgument,
            ErrorClass::TooManyRequests => tonic::Code::ResourceExhausted,
            ErrorClass::Unavailable => tonic::Code::Unavailable,
            ErrorClass::Internal => tonic::Code::Internal,
        }
    }

    /// A gRPC status of this class saying `message`.
    pub fn grpc_status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), message)
    }
}

/// An error that knows its [`ErrorClass`] and its stable, documented code.
pub trait Classified: std::fmt::Display {
    /// Its class.
    fn class(&self) -> ErrorClass;
    /// Its stable machine-readable code (`unknown_chat`, `no_leader`, ...).
    fn code(&self) -> &'static str;
}

impl Classified for ProposeError {
    fn class(&self) -> ErrorClass {
        match self {
            ProposeError::NoLeader { .. }
            | ProposeError::Timeout { .. }
            | ProposeError::Overloaded
            | ProposeError::ShuttingDown
            | ProposeError::Island { .. }
            | ProposeError::IslandKeeper { .. }
            | ProposeError::Merging => ErrorClass::Unavailable,
            ProposeError::Codec(_) | ProposeError::Journal(_) => ErrorClass::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ProposeError::NoLeader { .. } => "no_leader",
            ProposeError::Timeout { .. } => "write_timeout",
            ProposeError::Overloaded => "overloaded",
            ProposeError::ShuttingDown => "shutting_down",
            ProposeError::Codec(_) => "internal",
            ProposeError::Island { .. } => "island",
            ProposeError::Merging => "island_merging",
            ProposeError::Journal(_) => "island_journal",
            ProposeError::IslandKeeper { .. } => "island_keeper",
        }
    }
}

impl Classified for CodecError {
    fn class(&self) -> ErrorClass {
        match self.action {
            // A peer sent something this node cannot read.
            "decode" => ErrorClass::InvalidArgument,
            _ => ErrorClass::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self.action {
            "decode" => "malformed_payload",
            _ => "internal",
        }
    }
}

impl Classified for crate::command::Rejection {
    fn class(&self) -> ErrorClass {
        use crate::command::Rejection as R;
        match self {
            R::UnknownQueue { .. }
            | R::UnknownChat { .. }
            | R::UnknownAgent { .. }
            | R::UnknownActivity { .. }
            | R::UnknownEntry { .. } => ErrorClass::NotFound,
            R::ChatEnded { .. }
            | R::OffHours { .. }
            | R::Conflict { .. }
            | R::LimitReached { .. }
            | R::IdempotencyConflict { .. }
            | R::NotEnabled { .. }
            | R::LeaseLost { .. } => ErrorClass::Conflict,
            R::SessionEnded => ErrorClass::Unauthenticated,
            R::Invalid { .. } => ErrorClass::InvalidArgument,
            // Retry later, or on a node of a connected site.
            R::Island { .. } => ErrorClass::Unavailable,
        }
    }

    fn code(&self) -> &'static str {
        use crate::command::Rejection as R;
        match self {
            R::UnknownQueue { .. } => "unknown_queue",
            R::UnknownChat { .. } => "unknown_chat",
            R::UnknownAgent { .. } => "unknown_agent",
            R::UnknownActivity { .. } => "unknown_activity",
            R::UnknownEntry { .. } => "unknown_entry",
            R::ChatEnded { .. } => "chat_ended",
            R::OffHours { .. } => "off_hours",
            R::SessionEnded => "session_ended",
            R::Conflict { .. } => "conflict",
            R::LimitReached { .. } => "limit_reached",
            R::Invalid { .. } => "invalid_field",
            R::IdempotencyConflict { .. } => "idempotency_conflict",
            R::NotEnabled { .. } => "not_enabled",
            R::Island { .. } => "island",
            R::LeaseLost { .. } => "lease_lost",
        }
    }
}

/// The gRPC status for `error`: its class's code, its code and message as the text.
pub fn grpc_status(error: &impl Classified) -> tonic::Status {
    error
        .class()
        .grpc_status(format!("{}: {error}", error.code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every class maps to a distinct HTTP status, and classes a client may retry (503) are
    /// exactly those gRPC calls Unavailable, which the peers' client retries.
    #[test]
    fn the_status_table_is_consistent() {
        let all = [
            ErrorClass::InvalidArgument,
            ErrorClass::Unauthenticated,
            ErrorClass::PermissionDenied,
            ErrorClass::NotFound,
            ErrorClass::Conflict,
            ErrorClass::Gone,
            ErrorClass::PayloadTooLarge,
            ErrorClass::UnsupportedMediaType,
            ErrorClass::TooManyRequests,
            ErrorClass::Unavailable,
            ErrorClass::Internal,
        ];
        let statuses: std::collections::BTreeSet<u16> =
            all.iter().map(|c| c.http_status()).collect();
        assert_eq!(statuses.len(), all.len());
        for class in all {
            assert_eq!(
                class.http_status() == 503,
                class.grpc_code() == tonic::Code::Unavailable,
                "{class:?}"
            );
        }
    }
}
