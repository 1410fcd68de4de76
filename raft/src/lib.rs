//! Parley's replicated core: the Raft type configuration, the contact-center state machine and
//! the gRPC network between nodes.
//!
//! # Layout
//! - [`types`]: the openraft type configuration ([`TypeConfig`]) and node identity ([`NodeInfo`]).
//! - [`command`]: what can be proposed ([`Command`], [`Op`]) and what `apply` answers ([`Outcome`]).
//! - [`state`]: the replicated contact-center [`State`], its pure `apply`, `validate` and digest.
//! - [`limits`]: bounds on every input, shared by `apply` and the HTTP edge.
//! - [`codec`]: openraft messages to and from the protobuf envelopes of `parley-proto`.
//! - [`dial`]: a doubling pause between dials to a peer that could not be reached.
//! - [`network`]: the tonic client side of Raft behind the [`network::Connector`] seam, so the
//!   same code runs over real TCP or a simulated network.
//! - [`server`]: the tonic server side (Raft RPCs and forwarded writes).
//! - [`route`]: the cluster, caller and callee every node-to-node call names, and the server's
//!   check of them.
//! - [`tls`]: mutual TLS between nodes: certificate material, its reload, the TLS connector and
//!   the TLS accept loop.
//! - [`membership`]: listing and changing the members (learners, promotion, removal) through
//!   the leader, and the checks a change must pass.
//! - [`island`]: whether this node is cut off from the quorum (an island), its island epoch, and
//!   the hybrid logical clock that names island writes.
//! - [`probe`]: every member asked once a second whether it is an island: which members a node
//!   reaches.
//! - [`relay`]: best-effort relay of ephemeral events to the current members.
//! - [`proposer`]: group commit (many commands in one Raft entry) and forwarding to the leader.
//! - [`replica`]: one node's replica: storage, Raft, proposer, wired together.
//! - [`backup`]: a consistent snapshot of a live cluster in a checked file, and its restore
//!   into fresh data directories as a new cluster.
//! - [`upgrade`]: what each member's release supports, and raising the cluster version.
//! - [`version`]: log and snapshot formats and the replicated cluster version, for rolling
//!   upgrades.
//! - [`error`]: this crate's error types.
//!
//! Nothing here reads a clock or draws randomness inside `apply`: the proposing node stamps
//! time and ids into each [`Command`] (see [`proposer::Clock`]).

pub mod backup;
pub mod codec;
pub mod command;
pub mod dial;
pub mod error;
pub mod island;
pub mod limits;
pub mod membership;
pub mod network;
pub mod probe;
pub mod proposer;
pub mod relay;
pub mod replica;
pub mod route;
pub mod server;
pub mod state;
pub mod tls;
pub mod types;
pub mod upgrade;
pub mod version;

pub use command::{Command, Op, Outcome, Rejection, Request, Response};
pub use error::{BackupError, Classified, ErrorClass, ProposeError, ReplicaError, TlsError};
pub use replica::{Replica, ReplicaOptions};
pub use state::State;
pub use types::{NodeId, NodeInfo, TypeConfig};
