//! Membership changes in a simulation: an operator's request (add a spare node as a learner,
//! promote it, remove a member) sent through a live node's membership API and retried until the
//! leader accepts it, as `parley ctl` is retried by an operator; and the members a run must end
//! with.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use parley_raft::membership::{MemberChange, MemberList};
use parley_raft::NodeId;

use crate::net::GRPC_PORT;
use crate::node::host_name;
use crate::proto::MembersRequest;

/// How long an operator keeps retrying one change (faults heal well within it).
pub const CHANGE_PATIENCE: Duration = Duration::from_secs(60);

/// Pause between two tries of a change.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The deadline of one try, over the simulated network.
const TRY_TIMEOUT: Duration = Duration::from_secs(12);

/// What the run's membership changes did.
#[derive(Debug, Default)]
pub struct Changes {
    /// Changes asked for and not yet answered.
    pub pending: usize,
    /// The members the run must end with: the first members, plus every node added, minus
    /// every node removed (as the leader confirmed them).
    pub expected: BTreeSet<NodeId>,
    /// Changes that never went through, with the last answer.
    pub failed: Vec<String>,
}

/// Shared by the fault injector, the operator tasks and the checker (one thread).
pub type SharedChanges = Rc<RefCell<Changes>>;

/// The change that adds node `id` of the simulation, in `site`, as a learner.
pub fn add(id: NodeId, site: String) -> MemberChange {
    MemberChange::Add {
        id,
        site,
        grpc_addr: format!("{}:{GRPC_PORT}", host_name(id)),
        http_addr: format!("{}:8080", host_name(id)),
    }
}

/// Sends `change` through the nodes of `through` in turn until one answers with the members
/// after it, for at most [`CHANGE_PATIENCE`]; records the outcome in `changes`.
pub async fn operate(change: MemberChange, through: Vec<NodeId>, changes: SharedChanges) {
    let started = tokio::time::Instant::now();
    let mut last = String::from("never tried");
    let mut attempt = 0usize;
    if let MemberChange::Remove { id, .. } = &change {
        // The runbook: out of the load balancer first, so no new write reaches it.
        crate::sim::drain(*id);
    }
    let done = loop {
        if started.elapsed() > CHANGE_PATIENCE {
            break None;
        }
        // The operator does not wait for the member's island writes to be merged: the
        // leader refuses the removal (`island_writes_unmerged`, `island_unknown`) until they
        // are, and the oracle finds every acknowledged island write in the end.
        let via = through[attempt % through.len().max(1)];
        attempt += 1;
        match request(via, Some(&change)).await {
            Ok(_) => break Some(()),
            // A removal retried after a try whose answer was lost: the member is gone.
            Err(error)
                if error.starts_with("not_member")
                    && matches!(change, MemberChange::Remove { .. }) =>
            {
                break Some(())
            }
            Err(error) => last = format!("via node {via}: {error}"),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    let mut changes = changes.borrow_mut();
    changes.pending = changes.pending.saturating_sub(1);
    match done {
        Some(_) => match &change {
            MemberChange::Add { id, .. } => {
                changes.expected.insert(*id);
            }
            MemberChange::Promote { .. } => {}
            MemberChange::Remove { id, .. } => {
                changes.expected.remove(id);
            }
        },
        None => changes
            .failed
            .push(format!("{change:?} within {CHANGE_PATIENCE:?}: {last}")),
    }
}

/// One membership request through node `via`: the members after it, or why not.
pub async fn request(via: NodeId, change: Option<&MemberChange>) -> Result<MemberList, String> {
    let change_json = match change {
        Some(change) => serde_json::to_vec(change).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let mut client = crate::sim::sim_client(via).map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(TRY_TIMEOUT, client.members(MembersRequest { change_json }))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|status| status.message().to_owned())?
        .into_inner();
    if !reply.error.is_empty() {
        return Err(reply.error);
    }
    serde_json::from_slice(&reply.list_json).map_err(|e| e.to_string())
}
