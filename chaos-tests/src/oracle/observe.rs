//! What one node holds after healing, as the checks read it. The simulation fills every field
//! through the `SimNode` inspection RPC; the live runner fills what the HTTP API shows (chat
//! events, applied index, digest, `validate`), leaving activities and agents empty.

use std::collections::BTreeMap;

use parley_raft::state::{Activity, Agent, ChatEvent};

/// One node's applied state, or the parts of it the checks need.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// The node.
    pub node: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// Its state digest at that index.
    pub digest: String,
    /// What its `State::validate` reported (empty when every invariant holds).
    pub invariant_violations: Vec<String>,
    /// Chat id → events.
    pub chats: BTreeMap<String, Vec<ChatEvent>>,
    /// Activity id → activity with its transition history.
    pub activities: BTreeMap<String, Activity>,
    /// Agent id → agent (session, limits, work, feed).
    pub agents: BTreeMap<String, Agent>,
}
