//! Best-effort relay of ephemeral events (typing) to every other member, following the
//! replicated membership: a member added later gets a queue, a removed member's queue and task
//! go away.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use parley_proto::v1::Ephemeral;
use tokio::sync::mpsc;

use crate::network::Peers;
use crate::types::{NodeId, Raft};

/// How long a relayed ephemeral event may take to reach a peer.
pub const RELAY_TIMEOUT: Duration = Duration::from_millis(500);

/// Ephemeral events waiting for one peer; more are dropped (they are best effort).
pub const RELAY_QUEUE_PER_PEER: usize = 64;

/// One bounded queue per peer, each drained by one task that has at most one relay RPC in
/// flight: a slow or lost peer costs a full queue, not a task per event.
#[derive(Clone)]
pub struct Relays {
    id: NodeId,
    peers: Peers,
    queues: Arc<Mutex<Queues>>,
}

/// Each other member's gRPC address and the queue of events waiting for it.
type Queues = BTreeMap<NodeId, (String, mpsc::Sender<Ephemeral>)>;

impl Relays {
    /// Relays of node `id` through `peers`, kept in step with `raft`'s membership until Raft
    /// stops.
    pub fn start(id: NodeId, peers: Peers, raft: &Raft) -> Self {
        let relays = Self {
            id,
            peers,
            queues: Arc::new(Mutex::new(BTreeMap::new())),
        };
        // Server metrics change with the membership, not with every entry.
        let mut metrics = raft.server_metrics();
        let follower = relays.clone();
        tokio::spawn(async move {
            let mut seen = None;
            loop {
                let members: Option<BTreeMap<NodeId, String>> = {
                    let m = metrics.borrow_watched();
                    let log_id = *m.membership_config.log_id();
                    if seen.as_ref() == Some(&log_id) {
                        None
                    } else {
                        seen = Some(log_id);
                        Some(
                            m.membership_config
                                .membership()
                                .nodes()
                                .map(|(id, info)| (*id, info.grpc_addr.clone()))
                                .collect(),
                        )
                    }
                };
                if let Some(members) = members {
                    follower.follow(&members);
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        relays
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        match self.queues.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Makes the queues match `members` (id to gRPC address): a new member or address gets a
    /// queue and a task, a departed member's queue is dropped, which ends its task.
    fn follow(&self, members: &BTreeMap<NodeId, String>) {
        let mut queues = self.queues();
        queues.retain(|id, (addr, _)| members.get(id) == Some(addr));
        for (id, addr) in members {
            if *id == self.id || queues.contains_key(id) {
                continue;
            }
            let (sender, queue) = mpsc::channel(RELAY_QUEUE_PER_PEER);
            tokio::spawn(relay_to_peer(self.peers.clone(), *id, addr.clone(), queue));
            queues.insert(*id, (addr.clone(), sender));
        }
    }

    /// Queues `event` for every other member, best effort: dropped for a peer whose queue is
    /// full.
    pub fn send(&self, event: &Ephemeral) {
        for (_, queue) in self.queues().values() {
            // Best effort by design: a full queue (a slow or lost peer) drops the event.
            let _ = queue.try_send(event.clone());
        }
    }
}

/// Sends the ephemeral events queued for the peer at `addr`, one at a time, each bounded by
/// [`RELAY_TIMEOUT`]; ends when its queue is dropped.
async fn relay_to_peer(
    peers: Peers,
    peer: NodeId,
    addr: String,
    mut queue: mpsc::Receiver<Ephemeral>,
) {
    while let Some(event) = queue.recv().await {
        let Ok(mut client) = peers.cluster_client(peer, &addr) else {
            continue;
        };
        let mut request = tonic::Request::new(event);
        request.set_timeout(RELAY_TIMEOUT);
        let _ = tokio::time::timeout(RELAY_TIMEOUT, client.relay(request)).await;
    }
}
