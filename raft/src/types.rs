//! The openraft type configuration.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{Request, Response};

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
    /// Parley's Raft types: one log entry carries a batch of commands ([`Request`]).
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle with Parley's types.
pub type Raft = openraft::Raft<TypeConfig>;
