//! The openraft type configuration.

use std::fmt;

use parley_storage::StateMachineStore;
use serde::{Deserialize, Serialize};

use crate::command::{Request, Response};
use crate::state::State;

/// A node's id in the cluster; unique and stable for the node's life.
pub type NodeId = u64;

/// What the cluster membership records about each node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The site (data center) the node runs in; used for island mode and reporting.
    pub site: String,
    /// `host:port` of the node's gRPC endpoint (Raft and forwarded writes).
    pub grpc_addr: String,
    /// `host:port` of the node's HTTP endpoint, so clients can be pointed at it.
    pub http_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.grpc_addr, self.site)
    }
}

openraft::declare_raft_types!(
    /// Parley's Raft types: one log entry carries a batch of commands ([`Request`]). Everything
    /// not named here is openraft's default: `u64` terms, the advanced leader id (one leader per
    /// term, so a term's log ids are `(term, leader, index)`), the default entry, the progress
    /// responder for client writes and the tokio runtime.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
);

/// The state-machine store openraft drives: the contact-center [`State`] in memory, persisted
/// through snapshots in RocksDB.
pub type StateStore = StateMachineStore<TypeConfig, State>;

/// The Raft handle with Parley's types.
pub type Raft = openraft::Raft<TypeConfig, StateStore>;

/// A log id: the leader that proposed the entry and its index.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;

/// A vote: the leader a node voted for and whether a quorum granted it.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;

/// A whole snapshot as openraft hands it over: its metadata and its file.
pub type Snapshot =
    openraft::type_config::alias::SnapshotOf<TypeConfig, parley_storage::SnapshotFile>;

/// A snapshot's metadata: the last log id and membership it covers.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
