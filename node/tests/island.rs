//! Island detection on real processes: a node that hears from no leader for `island_after`
//! reports itself an island (cluster view, metrics) with a new island epoch, stops being one
//! when the quorum is back, and never reuses an epoch across its own restart.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::Cluster;

const READY: Duration = Duration::from_secs(60);

/// Waits until node `id`'s cluster view satisfies `want`; the view.
async fn view_until(
    cluster: &Cluster,
    id: u64,
    within: Duration,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(view) = cluster.cluster_view(id).await {
            if want(&view) {
                return view;
            }
            assert!(Instant::now() < deadline, "node {id}: {view}");
        } else {
            assert!(Instant::now() < deadline, "node {id} gives no view");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_quorum_is_an_island_with_a_new_epoch() {
    let mut cluster = Cluster::configure(3, "", "island_after = \"1500ms\"");
    for id in 1..=3 {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        cluster.wait_ready(id, READY).await;
    }
    let leader = cluster.wait_leader(1, None, READY).await;
    let view = view_until(&cluster, leader, READY, |v| {
        v["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().all(|m| m["reachable"] == true))
    })
    .await;
    assert_eq!(view["island"], false, "{view}");
    assert_eq!(view["island_epoch"], 0, "{view}");
    assert_eq!(view["island_for_ms"], Value::Null, "{view}");
    // A follower knows every member too, from its probes, and that none is an island.
    let follower = if leader == 1 { 2 } else { 1 };
    view_until(&cluster, follower, READY, |v| {
        v["members"].as_array().is_some_and(|ms| {
            ms.iter()
                .all(|m| m["reachable"] == true && m["island"] == false)
        })
    })
    .await;

    // Node 3 loses both others: whether it led or followed, it hears from no quorum.
    cluster.kill9(1);
    cluster.kill9(2);
    let view = view_until(&cluster, 3, Duration::from_secs(15), |v| {
        v["island"] == true
    })
    .await;
    assert_eq!(view["island_epoch"], 1, "{view}");
    assert!(view["island_for_ms"].as_u64().is_some(), "{view}");
    // It reaches nobody, and says of itself that it is an island.
    view_until(&cluster, 3, Duration::from_secs(5), |v| {
        v["members"].as_array().is_some_and(|ms| {
            ms.iter().all(|m| {
                if m["id"] == 3 {
                    m["reachable"] == true && m["island"] == true
                } else {
                    m["reachable"] == false
                }
            })
        })
    })
    .await;
    assert_eq!(cluster.metric(3, "parley_island").await, 1);
    assert_eq!(cluster.metric(3, "parley_island_epoch").await, 1);

    // The quorum comes back: the island ends, the epoch stays.
    cluster.spawn(1);
    cluster.spawn(2);
    let view = view_until(&cluster, 3, READY, |v| v["island"] == false).await;
    assert_eq!(view["island_epoch"], 1, "{view}");
    assert_eq!(cluster.metric(3, "parley_island").await, 0);
    for id in 1..=3 {
        cluster.wait_ready(id, READY).await;
    }

    // Node 3 restarts: its epoch is kept, so its next island is epoch 2, never 1 again.
    cluster.kill9(3);
    cluster.spawn(3);
    cluster.wait_ready(3, READY).await;
    let view = view_until(&cluster, 3, READY, |v| v["island"] == false).await;
    assert_eq!(view["island_epoch"], 1, "{view}");
    cluster.kill9(1);
    cluster.kill9(2);
    let view = view_until(&cluster, 3, Duration::from_secs(15), |v| {
        v["island"] == true
    })
    .await;
    assert_eq!(view["island_epoch"], 2, "{view}");
}
