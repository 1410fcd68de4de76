//! Probes: every node asks every other member once a second (`Cluster.Probe`, bounded by a
//! timeout) whether it is an island, and keeps what it last heard from each, so any node can say
//! which members it reaches and which of them are islands (the cluster view's `reachable` and
//! `island` per member).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use parley_proto::v1 as pb;
use tokio::time::Instant;

use crate::network::Peers;
use crate::types::{NodeId, Raft};

/// How often every member is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a member last answered to a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// When it answered.
    pub at: Instant,
    /// Whether it was an island then.
    pub island: bool,
    /// Its island epoch then.
    pub epoch: u64,
    /// Whom it named as the keeper of its site's island journal then (`None` while it was not
    /// an island).
    pub keeper: Option<NodeId>,
    /// Island writes in its journal not merged yet (`None`: its release does not say).
    pub journal_entries: Option<u64>,
}

/// What every member last answered; cheap to clone.
#[derive(Clone, Debug)]
pub struct Probes {
    heard: Arc<Mutex<BTreeMap<NodeId, Heard>>>,
    /// When probing started.
    started: Instant,
}

/// What a node can say of a member from its probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Whether it answered within the bound; `None` while this node has probed for less than
    /// the bound and never heard from it.
    pub reachable: Option<bool>,
    /// Whether it was an island when it last answered; `None` if it never did.
    pub island: Option<bool>,
}

impl Probes {
    /// What member `id` last answered, if it ever did.
    pub fn heard(&self, id: NodeId) -> Option<Heard> {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// What member `id` answered within `within`, if it did.
    pub fn fresh(&self, id: NodeId, within: Duration) -> Option<Heard> {
        self.heard(id)
            .filter(|heard| Instant::now().saturating_duration_since(heard.at) <= within)
    }

    /// What can be said of member `id` with answers counting as recent for `within`.
    pub fn seen(&self, id: NodeId, within: Duration) -> Seen {
        let now = Instant::now();
        match self.heard(id) {
            Some(heard) => Seen {
                reachable: Some(now.saturating_duration_since(heard.at) < within),
                island: Some(heard.island),
            },
            None => Seen {
                reachable: (now.saturating_duration_since(self.started) >= within).then_some(false),
                island: None,
            },
        }
    }

    fn record(&self, id: NodeId, heard: Heard) {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, heard);
    }

    /// Forgets the nodes that are no longer members.
    fn retain(&self, members: &[NodeId]) {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| members.contains(id));
    }
}

/// Asks member `id` at `addr` whether it is an island, within [`PROBE_TIMEOUT`]; why not if it
/// did not answer.
pub(crate) async fn ask(peers: &Peers, id: NodeId, addr: &str) -> Result<Heard, String> {
    let mut client = peers
        .cluster_client(id, addr)
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let mut request = tonic::Request::new(pb::ProbeRequest {});
    request.set_timeout(PROBE_TIMEOUT);
    let reply = tokio::time::timeout(PROBE_TIMEOUT, client.probe(request))
        .await
        .map_err(|_| format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()))?
        .map_err(|status| status.message().to_owned())?
        .into_inner();
    Ok(Heard {
        at: Instant::now(),
        island: reply.island,
        epoch: reply.island_epoch,
        keeper: (reply.island_keeper != 0).then_some(reply.island_keeper),
        journal_entries: reply.island_journal_entries,
    })
}

/// Probes every member but `me` every [`PROBE_INTERVAL`] until Raft stops, recording the
/// answers in the returned [`Probes`].
pub fn start(me: NodeId, raft: Raft, peers: Peers) -> Probes {
    let probes = Probes {
        heard: Arc::default(),
        started: Instant::now(),
    };
    let recorded = probes.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PROBE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let members: Vec<(NodeId, String)> = {
                let metrics = raft.metrics();
                let m = metrics.borrow_watched();
                if m.running_state.is_err() {
                    return;
                }
                m.membership_config
                    .membership()
                    .nodes()
                    .map(|(id, info)| (*id, info.grpc_addr.clone()))
                    .collect()
            };
            let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
            recorded.retain(&ids);
            let answers = futures::future::join_all(
                members
                    .iter()
                    .filter(|(id, _)| *id != me)
                    .map(|(id, addr)| async { (*id, ask(&peers, *id, addr).await) }),
            )
            .await;
            for (id, heard) in answers {
                if let Ok(heard) = heard {
                    recorded.record(id, heard);
                }
            }
        }
    });
    probes
}
