//! The island nodes of one site as one island: choosing the site's keeper ([`site_loop`]),
//! forwarding island writes to it ([`forward_take`]) and mirroring its journal into this node's
//! view (see [`crate::island::site`] for the rule).

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use parley_proto::v1 as pb;
use parley_storage::JournalEntry;
use tokio::sync::watch;

use super::serve::{IslandServer, Taken};
use super::site::{self, SitePeer};
use super::{IslandStatus, ISLAND_CHECK_INTERVAL};
use crate::codec;
use crate::command::{Op, Outcome};
use crate::error::ProposeError;
use crate::network::Peers;
use crate::probe::{Probes, PROBE_INTERVAL};
use crate::types::{NodeId, Raft};

/// How recent a probe answer must be for a site peer to count as reachable (two rounds).
pub const SITE_PEER_FRESH: Duration = Duration::from_secs(2 * PROBE_INTERVAL.as_secs());

/// How long an island write waits for its site's keeper to be decided before this node takes
/// it itself.
pub const KEEPER_DECIDE_WAIT: Duration = Duration::from_secs(3);

/// How long after this node became an island a site peer's answer must come to count as
/// current (see [`site::keeper`]): the nodes of a site cut off together lost their leader at
/// the same moment and become islands within a heartbeat or two of each other, so a lower
/// node that still says it is connected a second later is connected.
pub const SITE_DECIDE_MARGIN: Duration = Duration::from_secs(1);

/// How long a keeper holds a mirror's request for records when it has none new, in ms.
pub const RECORDS_WAIT_MS: u32 = 1_000;

/// The longest `Cluster.IslandRecords` wait a keeper grants, in ms.
pub const RECORDS_WAIT_MS_MAX: u32 = 2_000;

/// How long a mirror's request for records may take in all.
const RECORDS_TIMEOUT: Duration = Duration::from_millis(RECORDS_WAIT_MS as u64 + 1_000);

/// How long a node that forwarded a write waits for its view to hold it before answering
/// (the write is durable at the keeper already).
const MIRRORED_WAIT: Duration = Duration::from_secs(2);

/// The other members of `me`'s site as its probes see them (an answer is current if it came
/// after `since`), and their gRPC addresses.
fn site_peers(
    me: NodeId,
    raft: &Raft,
    probes: &Probes,
    since: Option<tokio::time::Instant>,
) -> Vec<(SitePeer, String)> {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    let membership = m.membership_config.membership();
    let Some(mine) = membership
        .nodes()
        .find(|(id, _)| **id == me)
        .map(|(_, n)| n)
    else {
        return Vec::new();
    };
    membership
        .nodes()
        .filter(|(id, node)| **id != me && node.site == mine.site)
        .map(|(id, node)| {
            let heard = probes.fresh(*id, SITE_PEER_FRESH);
            (
                SitePeer {
                    id: *id,
                    reachable: heard.is_some(),
                    island: heard.is_some_and(|h| h.island),
                    keeper: heard.and_then(|h| h.keeper),
                    current: heard.is_some_and(|h| {
                        since.is_some_and(|since| h.at >= since + SITE_DECIDE_MARGIN)
                    }),
                },
                node.grpc_addr.clone(),
            )
        })
        .collect()
}

/// The gRPC address of member `id`, if it is one.
pub fn address(raft: &Raft, id: NodeId) -> Option<String> {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    let addr = m
        .membership_config
        .membership()
        .nodes()
        .find(|(node, _)| **node == id)
        .map(|(_, node)| node.grpc_addr.clone());
    addr
}

/// Every [`ISLAND_CHECK_INTERVAL`] while this node is an island: applies the keeper rule and
/// publishes the keeper, `None` while undecided (see [`IslandServer::keeper`]); while the keeper is another node,
/// mirrors its journal into this node's view. Runs until Raft stops.
pub async fn site_loop(
    me: NodeId,
    raft: Raft,
    peers: Peers,
    probes: Probes,
    server: IslandServer,
    island: watch::Receiver<IslandStatus>,
) {
    let mut ticks = tokio::time::interval(ISLAND_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if raft.metrics().borrow_watched().running_state.is_err() {
            return;
        }
        let status = *island.borrow();
        if !status.island() {
            server.set_keeper(None);
            continue;
        }
        let site = site_peers(me, &raft, &probes, status.since);
        let known: Vec<SitePeer> = site.iter().map(|(peer, _)| *peer).collect();
        let Some(keeper) = site::keeper(me, server.keeps_writes(status.epoch), &known) else {
            server.set_keeper(None);
            continue;
        };
        if server.keeper() != Some(keeper) {
            tracing::info!(
                epoch = status.epoch,
                keeper,
                "this site's island journal keeper"
            );
        }
        server.set_keeper(Some(keeper));
        if keeper == me {
            continue;
        }
        let Some(addr) = site
            .iter()
            .find(|(peer, _)| peer.id == keeper)
            .map(|(_, addr)| addr.clone())
        else {
            continue;
        };
        let from = match server.mirror_from(status.epoch, keeper).await {
            Ok(from) => from,
            Err(error) => {
                tracing::warn!(%error, "building the island view to mirror the keeper into");
                continue;
            }
        };
        match pull(&peers, keeper, &addr, from).await {
            Ok(Some((first, records, next))) => {
                if let Err(error) = server
                    .apply_mirrored(status.epoch, keeper, first, records, next)
                    .await
                {
                    tracing::warn!(%error, keeper, "applying the keeper's island records");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, keeper, "asking the keeper for island records"),
        }
    }
}

/// Asks `keeper` for its records from `from`: `None` when it no longer keeps its site's
/// journal.
async fn pull(
    peers: &Peers,
    keeper: NodeId,
    addr: &str,
    from: u64,
) -> Result<Option<(u64, Vec<JournalEntry>, u64)>, String> {
    let mut client = peers
        .cluster_client(keeper, addr)
        .map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(pb::IslandRecordsRequest {
        from,
        wait_ms: RECORDS_WAIT_MS,
    });
    request.set_timeout(RECORDS_TIMEOUT);
    let reply = tokio::time::timeout(RECORDS_TIMEOUT, client.island_records(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|status| status.message().to_owned())?
        .into_inner();
    if !reply.keeper {
        return Ok(None);
    }
    let count = reply.records_json.len() as u64;
    let Some(start) = reply.next.checked_sub(count) else {
        return Err(format!(
            "the keeper sent {count} records ending before position {}",
            reply.next
        ));
    };
    let records = reply
        .records_json
        .into_iter()
        .zip(start..)
        .map(|(bytes, position)| JournalEntry { position, bytes })
        .collect();
    Ok(Some((reply.first, records, reply.next)))
}

/// Sends island write `op` to `keeper` at `addr` and waits (briefly) until this node's view
/// holds it, so its client reads its own write here.
pub async fn forward_take(
    peers: &Peers,
    server: &IslandServer,
    keeper: NodeId,
    addr: &str,
    op: &Op,
    timeout: Duration,
) -> Result<Outcome, ProposeError> {
    let failed = |problem: String| ProposeError::IslandKeeper { keeper, problem };
    let op_json = codec::encode(op).map_err(|e| ProposeError::Codec(e.to_string()))?;
    let mut client = peers
        .cluster_client(keeper, addr)
        .map_err(|e| failed(e.to_string()))?;
    let deadline_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let mut request = tonic::Request::new(pb::IslandTakeRequest {
        op_json,
        deadline_ms,
    });
    request.set_timeout(timeout);
    let reply = tokio::time::timeout(timeout, client.island_take(request))
        .await
        .map_err(|_| failed(format!("no answer within {} ms", timeout.as_millis())))?
        .map_err(|status| failed(status.message().to_owned()))?
        .into_inner();
    let taken = match reply.outcome {
        Some(pb::island_take_reply::Outcome::OutcomeJson(json)) => Taken {
            outcome: codec::decode(&json).map_err(|e| ProposeError::Codec(e.to_string()))?,
            journal_next: reply.journal_next,
        },
        Some(pb::island_take_reply::Outcome::RefusedJson(json)) => {
            return Err(codec::decode::<ProposeError>(&json)
                .unwrap_or_else(|e| failed(format!("an unreadable refusal: {e}"))))
        }
        None => return Err(failed("an empty answer".to_owned())),
    };
    if !server
        .wait_mirrored(keeper, taken.journal_next, MIRRORED_WAIT)
        .await
    {
        tracing::debug!(keeper, "a forwarded island write is not mirrored here yet");
    }
    Ok(taken.outcome)
}
