//! A member of the cluster as the cluster view shows it.

use parley_raft::NodeInfo;
use serde::Serialize;
use utoipa::ToSchema;

/// One member in the cluster view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// The site (data center) the node runs in.
    pub site: String,
    /// `host:port` of the node's gRPC endpoint.
    pub grpc_addr: String,
    /// `host:port` of the node's HTTP endpoint.
    pub http_addr: String,
    /// `leader` or `follower` as far as the answering node knows.
    pub role: &'static str,
}

impl Member {
    /// The member `id` described by `info`, in `role`.
    pub fn new(id: u64, info: &NodeInfo, role: &'static str) -> Self {
        Self {
            id,
            site: info.site.clone(),
            grpc_addr: info.grpc_addr.clone(),
            http_addr: info.http_addr.clone(),
            role,
        }
    }
}
