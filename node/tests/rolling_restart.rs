//! Rolling upgrades on real processes: a rolling restart of every node, one at a time, under
//! load, behind a load balancer that follows `/readyz` (each stopping node drains, hands its
//! leadership over and exits, so no write waits longer than the drain window, and nothing
//! acknowledged is lost); and the cluster version, raised only when every member answers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{post_at, Cluster};

const READY: Duration = Duration::from_secs(60);
/// The drain window every node runs with here.
const DRAIN: Duration = Duration::from_secs(2);
/// How often the load balancer probes `/readyz`.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The nodes the load balancer sends traffic to: those whose last probe answered 200.
type InRotation = Arc<Mutex<BTreeSet<u64>>>;

fn in_rotation(rotation: &InRotation) -> Vec<u64> {
    match rotation.lock() {
        Ok(nodes) => nodes.iter().copied().collect(),
        Err(poisoned) => poisoned.into_inner().iter().copied().collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_keeps_every_write_within_the_drain_window() {
    let mut cluster = Cluster::start_ready(3, "", READY).await;
    // Every node with a drain window (the test clusters have none): restart each with it.
    let drain = format!("{}s", DRAIN.as_secs());
    for id in 1..=3 {
        cluster.terminate(id);
        cluster.spawn_with_env(id, &[("PARLEY_TIMEOUTS__DRAIN_WAIT", &drain)]);
        cluster.wait_ready(id, READY).await;
    }

    // The balancer and the customer reach the nodes over HTTP only, so the test can stop and
    // start the processes meanwhile.
    let client = cluster.client.clone();
    let urls: Arc<BTreeMap<u64, String>> = Arc::new(
        (1..=3)
            .map(|id| (id, cluster.node(id).http.clone()))
            .collect(),
    );
    let rotation: InRotation = Arc::new(Mutex::new((1..=3).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let balancer = tokio::spawn({
        let (client, urls, rotation, stop) =
            (client.clone(), urls.clone(), rotation.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                for (&id, url) in urls.iter() {
                    let ready = client
                        .get(format!("{url}/readyz"))
                        .timeout(PROBE_INTERVAL * 5)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    let mut nodes = match rotation.lock() {
                        Ok(nodes) => nodes,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    if ready {
                        nodes.insert(id);
                    } else {
                        nodes.remove(&id);
                    }
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        }
    });
    // A customer posts through whichever node is in rotation, retrying each message until it
    // is acknowledged; how long each took from its first try is recorded.
    let chat = cluster.start_chat(1, "rolling").await;
    let load = tokio::spawn({
        let (client, urls, rotation, stop, chat) = (
            client.clone(),
            urls.clone(),
            rotation.clone(),
            stop.clone(),
            chat.clone(),
        );
        async move {
            let mut acked = BTreeMap::new();
            let mut slowest = (Duration::ZERO, String::new());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("m{n}");
                let first_try = Instant::now();
                let mut attempt = 0usize;
                let seq = loop {
                    let nodes = in_rotation(&rotation);
                    if let Some(url) = nodes
                        .get(attempt % nodes.len().max(1))
                        .and_then(|via| urls.get(via))
                    {
                        if let Some(seq) = post_at(&client, url, &chat, &id, "rolling").await {
                            break seq;
                        }
                    }
                    attempt += 1;
                    assert!(
                        first_try.elapsed() < Duration::from_secs(30),
                        "message {id} not acknowledged within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let took = first_try.elapsed();
                if took > slowest.0 {
                    slowest = (took, id.clone());
                }
                acked.insert(id, seq);
            }
            (acked, slowest)
        }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in 1..=3u64 {
        // SIGTERM: the node drains (out of rotation), hands its leadership over, exits.
        let exit = cluster.terminate(id);
        assert!(exit.success(), "node {id} exited with {exit}");
        cluster.spawn_with_env(id, &[("PARLEY_TIMEOUTS__DRAIN_WAIT", &drain)]);
        cluster.wait_ready(id, READY).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (acked, (slowest, slowest_id)) = load.await.expect("load task");
    balancer.await.expect("balancer task");
    assert!(acked.len() > 20, "too few writes: {}", acked.len());
    assert!(
        slowest < DRAIN,
        "message {slowest_id} waited {slowest:?}, longer than the {DRAIN:?} drain window"
    );
    for via in 1..=3 {
        cluster
            .assert_chat_complete(via, &chat, &acked, Duration::from_secs(15))
            .await;
    }
    cluster
        .assert_converged(&[1, 2, 3], Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_version_is_raised_only_with_every_member_answering() {
    let mut cluster = Cluster::start_ready(3, "", READY).await;
    let upgrade = |cluster: &Cluster, method, path: &'static str| {
        let request = cluster
            .client
            .request(method, cluster.url(1, path))
            .bearer_auth(support::ADMIN_TOKEN)
            .send();
        async move {
            let response = request.await.expect("an answer");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // A new cluster raises itself to the version its members all implement.
    let deadline = std::time::Instant::now() + READY;
    let (status, body) = loop {
        let (status, body) = upgrade(&cluster, reqwest::Method::GET, "/api/v1/admin/upgrade").await;
        if body["cluster_version"] == parley_raft::version::CLUSTER_VERSION_MAX {
            break (status, body);
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "{body}");
    let members = body["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 3, "{body}");
    for member in &members {
        assert_eq!(
            member["supported"]["cluster_version_max"],
            parley_raft::version::CLUSTER_VERSION_MAX,
            "{member}"
        );
        assert_eq!(
            member["supported"]["log_format"],
            parley_raft::version::LOG_FORMAT
        );
    }
    assert_eq!(
        body["common_version"],
        parley_raft::version::CLUSTER_VERSION_MAX
    );
    // Every member runs this release: finalizing leaves the version where it is.
    let (status, body) = upgrade(
        &cluster,
        reqwest::Method::POST,
        "/api/v1/admin/upgrade/finalize",
    )
    .await;
    assert_eq!(
        (status, body["cluster_version"].as_u64()),
        (
            200,
            Some(u64::from(parley_raft::version::CLUSTER_VERSION_MAX))
        ),
        "{body}"
    );

    // A member that does not answer blocks finalizing: it might run an older release.
    cluster.kill9(3);
    let (status, body) = upgrade(
        &cluster,
        reqwest::Method::POST,
        "/api/v1/admin/upgrade/finalize",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("member_silent")),
        "{body}"
    );
    let (_, body) = upgrade(&cluster, reqwest::Method::GET, "/api/v1/admin/upgrade").await;
    assert!(body["common_version"].is_null(), "{body}");
    let view = cluster.cluster_view(1).await.expect("node 1's view");
    assert_eq!(
        view["versions"]["snapshot_format"],
        parley_raft::version::SNAPSHOT_FORMAT
    );
}

/// The log format follows the cluster version: entries proposed before the cluster runs
/// `BINARY_LOG` are JSON (format 1, what an older release reads), those after it binary
/// (format 2), and a follower holds both kinds as the leader sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_binary_only_once_the_cluster_version_allows_it() {
    use openraft::storage::RaftLogReader;
    use openraft::EntryPayload;
    use parley_raft::command::Op;
    use parley_raft::version::{BINARY_LOG, CLUSTER_VERSION_MAX};

    let mut cluster = Cluster::start_ready(3, "", READY).await;
    let deadline = Instant::now() + READY;
    while cluster
        .cluster_view(1)
        .await
        .and_then(|view| view["cluster_version"].as_u64())
        < Some(u64::from(CLUSTER_VERSION_MAX))
    {
        assert!(
            Instant::now() < deadline,
            "the cluster version was not raised"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chat = cluster.start_chat(2, "binary-log").await;
    for i in 0..5 {
        cluster
            .post_until_committed(&[1, 2, 3], &chat, &format!("m{i}"), "after", READY)
            .await;
    }
    cluster.assert_converged(&[1, 2, 3], READY).await;
    let leader = cluster.wait_leader(1, None, READY).await;
    let follower = if leader == 3 { 2 } else { 3 };
    assert!(cluster.terminate(follower).success());

    let db = parley_storage::Db::open(
        &cluster.data_dir(follower),
        parley_storage::DbOptions::default(),
    )
    .expect("the follower's database");
    let mut log = parley_storage::LogStore::<parley_raft::types::TypeConfig>::new(db);
    let entries = log
        .try_get_log_entries(0..)
        .await
        .expect("the follower's log");
    let mut raised_at = None;
    let mut formats = Vec::new();
    for entry in &entries {
        let EntryPayload::Normal(request) = &entry.payload else {
            continue;
        };
        formats.push((entry.log_id.index, request.format));
        let raises = request.commands.iter().any(
            |command| matches!(command.op, Op::SetClusterVersion { version } if version >= BINARY_LOG),
        );
        if raises && raised_at.is_none() {
            raised_at = Some(entry.log_id.index);
            assert_eq!(
                request.format, 1,
                "the raise itself is written before it applies"
            );
        }
        let posts = request.commands.iter().any(
            |command| matches!(&command.op, Op::PostMessage(post) if post.chat_id == chat.chat_id),
        );
        if posts {
            assert_eq!(request.format, 2, "a message written at cluster version 5");
        }
    }
    let raised_at = raised_at.expect("the follower's log holds the raise");
    let before: Vec<_> = formats.iter().filter(|(i, _)| *i <= raised_at).collect();
    assert!(before.iter().all(|(_, format)| *format == 1), "{formats:?}");
    assert!(
        formats
            .iter()
            .any(|(i, format)| *i > raised_at && *format == 2),
        "{formats:?}"
    );
}
