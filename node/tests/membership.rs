//! Membership changes on real processes, through `parley ctl` and the admin API: a node is
//! replaced under load (add 4, promote it, remove 1) with nothing acknowledged lost, and the
//! changes that would hurt the cluster are refused.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, ADMIN_TOKEN};

const READY: Duration = Duration::from_secs(30);

/// Runs `parley ctl --url <node via> --json ARGS`; (succeeded, stdout, stderr).
async fn ctl(cluster: &Cluster, via: u64, args: &[&str]) -> (bool, String, String) {
    let url = cluster.node(via).http.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
            .arg("ctl")
            .arg("--url")
            .arg(url)
            .arg("--json")
            .args(&args)
            .env("PARLEY_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("running parley ctl");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("the ctl task")
}

/// `parley ctl member ...` that must succeed; the member list it printed.
async fn ctl_ok(cluster: &Cluster, via: u64, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = ctl(cluster, via, args).await;
    assert!(ok, "parley ctl {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).expect("a member list as JSON")
}

/// The role of member `id` in a member list, `None` if it is not a member.
fn role(list: &Value, id: u64) -> Option<String> {
    list["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["role"].as_str().map(str::to_owned))
}

fn ids(list: &Value) -> Vec<u64> {
    list["members"]
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// Waits (15 s at most) until the member list of node `leader` shows node `id`'s milliseconds
/// since its last acknowledgement (never acknowledged: `u64::MAX`) passing `check`; `what`
/// names the awaited condition in the failure.
async fn wait_member_ack(
    cluster: &Cluster,
    leader: u64,
    id: u64,
    what: &str,
    check: impl Fn(u64) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, list) = admin(
            cluster,
            leader,
            reqwest::Method::GET,
            "/api/v1/admin/members",
            None,
        )
        .await;
        let ack_ms = list["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == id))
            .map(|m| m["last_ack_ms"].as_u64().unwrap_or(u64::MAX));
        if ack_ms.is_some_and(&check) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} does not count as {what}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The admin API's answer to a membership request: (status, body).
async fn admin(
    cluster: &Cluster,
    via: u64,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = cluster
        .client
        .request(method, cluster.url(via, path))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(20));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_replaced_under_load_and_nothing_acknowledged_is_lost() {
    let mut cluster = Cluster::start_ready(3, "", READY).await;
    let (http4, grpc4) = cluster.add_joining_node(4, true);

    // Node 4 is not a member: it forms no cluster of its own and is not ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready4 = cluster
        .client
        .get(cluster.url(4, "/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(ready4, 503, "a node waiting to be added is not ready");
    let view4 = cluster.cluster_view(4).await.expect("node 4's view");
    assert!(
        view4["leader"].is_null(),
        "node 4 found a leader before it was added: {view4}"
    );

    // Customers post through nodes 2 and 3 throughout, each message retried until it is
    // acknowledged; every acknowledged one is checked at the end.
    let cluster = Arc::new(cluster);
    let chat = cluster.start_chat(2, "replace").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (cluster, stop, chat) = (cluster.clone(), stop.clone(), chat.clone());
        async move {
            let mut acked = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("m{n}");
                let seq = cluster
                    .post_until_committed(&[2, 3], &chat, &id, "replacing", Duration::from_secs(15))
                    .await;
                acked.insert(id, seq);
            }
            acked
        }
    });

    // Add node 4 through node 3 (a follower or the leader: either forwards or answers).
    let list = ctl_ok(
        &cluster,
        3,
        &[
            "member", "add", "4", "--site", "local", "--grpc", &grpc4, "--http", &http4,
        ],
    )
    .await;
    assert_eq!(role(&list, 4).as_deref(), Some("learner"), "{list}");
    // Adding it again is a no-op, as a retried request would be.
    let again = ctl_ok(
        &cluster,
        2,
        &[
            "member", "add", "4", "--site", "local", "--grpc", &grpc4, "--http", &http4,
        ],
    )
    .await;
    assert_eq!(role(&again, 4).as_deref(), Some("learner"), "{again}");
    cluster.wait_ready(4, READY).await;

    // Promote once caught up.
    let list = ctl_ok(&cluster, 2, &["member", "promote", "4", "--wait", "30s"]).await;
    assert!(
        matches!(role(&list, 4).as_deref(), Some("voter" | "leader")),
        "node 4 is not a voter: {list}"
    );

    // Remove node 1 (whatever its role) through node 4.
    let list = ctl_ok(&cluster, 4, &["member", "remove", "1"]).await;
    assert_eq!(role(&list, 1), None, "node 1 is still a member: {list}");
    assert_eq!(ids(&list), vec![2, 3, 4]);

    // Writes go on through the new member too.
    let chat4 = cluster.start_chat(4, "on-node-4").await;
    cluster
        .post_until_committed(&[4], &chat4, "n4", "via node 4", Duration::from_secs(15))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("load task");
    assert!(
        acked.len() > 10,
        "too few writes to show anything: {}",
        acked.len()
    );

    let mut cluster = Arc::try_unwrap(cluster).unwrap_or_else(|_| panic!("cluster shared"));
    // Node 1 is out: stopping it costs the cluster nothing.
    cluster.kill9(1);
    let leader = cluster.wait_leader(2, Some(1), READY).await;
    assert_ne!(leader, 1);
    for via in [2, 3, 4] {
        cluster
            .assert_chat_complete(via, &chat, &acked, Duration::from_secs(15))
            .await;
    }
    cluster
        .assert_converged(&[2, 3, 4], Duration::from_secs(15))
        .await;
    let list = ctl_ok(&cluster, 2, &["member", "list"]).await;
    assert_eq!(ids(&list), vec![2, 3, 4], "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_would_hurt_the_cluster_are_refused() {
    let mut cluster = Cluster::start_ready(3, "", READY).await;
    // Node 4 is configured but never started: it stays a learner that acknowledges nothing.
    let (http4, grpc4) = cluster.add_joining_node(4, false);
    let add = serde_json::json!({"id": 4, "site": "local", "grpc_addr": grpc4, "http_addr": http4});
    let (status, list) = admin(
        &cluster,
        1,
        reqwest::Method::POST,
        "/api/v1/admin/members",
        Some(add),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(role(&list, 4).as_deref(), Some("learner"));

    // A learner that has not caught up is not promoted.
    let (status, body) = admin(
        &cluster,
        2,
        reqwest::Method::POST,
        "/api/v1/admin/members/4/promote",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("member_behind")),
        "{body}"
    );
    // Through ctl the refusal is a failure with the node's explanation.
    let (ok, _, stderr) = ctl(&cluster, 3, &["member", "promote", "4"]).await;
    assert!(!ok && stderr.contains("member_behind"), "{stderr}");

    // Another node's address, a malformed one, an unknown member.
    let taken = serde_json::json!({"id": 5, "site": "local", "grpc_addr": cluster.node(2).grpc, "http_addr": "127.0.0.1:1"});
    let (status, body) = admin(
        &cluster,
        1,
        reqwest::Method::POST,
        "/api/v1/admin/members",
        Some(taken),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("address_in_use")),
        "{body}"
    );
    let malformed = serde_json::json!({"id": 5, "site": "local", "grpc_addr": "nowhere", "http_addr": "127.0.0.1:1"});
    let (status, _) = admin(
        &cluster,
        1,
        reqwest::Method::POST,
        "/api/v1/admin/members",
        Some(malformed),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = admin(
        &cluster,
        1,
        reqwest::Method::DELETE,
        "/api/v1/admin/members/9",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_member")),
        "{body}"
    );
    let (status, _) = admin(
        &cluster,
        1,
        reqwest::Method::POST,
        "/api/v1/admin/members/x/promote",
        None,
    )
    .await;
    assert_eq!(status, 400);
    // Without the admin credential nothing is shown or changed.
    let anonymous = cluster
        .client
        .get(cluster.url(1, "/api/v1/admin/members"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status().as_u16(), 401);

    // With node 3 down, removing another voter would leave one healthy voter of two.
    cluster.kill9(3);
    let leader = cluster.wait_leader(1, Some(3), READY).await;
    let other = if leader == 1 { 2 } else { 1 };
    // The leader counts node 3 out once it has been silent past the acknowledgement bound.
    wait_member_ack(&cluster, leader, 3, "silent", |ms| {
        ms > parley_raft::limits::MEMBER_ACK_MS_MAX
    })
    .await;
    let (status, body) = admin(
        &cluster,
        leader,
        reqwest::Method::DELETE,
        &format!("/api/v1/admin/members/{other}"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"]["code"].as_str(),
        Some("quorum_at_risk"),
        "{body}"
    );
    let (_, list) = admin(
        &cluster,
        leader,
        reqwest::Method::GET,
        "/api/v1/admin/members",
        None,
    )
    .await;
    assert_eq!(
        ids(&list),
        vec![1, 2, 3, 4],
        "a refused removal changed the membership"
    );

    // The silent voter itself: the voters left would keep a healthy quorum, but it does not
    // answer whether it holds island writes (it may be cut off and serving as an island).
    // First the precondition: the leader has heard from the other voter within the bound (on
    // a loaded machine an acknowledgement can come late; then the refusal is quorum_at_risk).
    wait_member_ack(&cluster, leader, other, "healthy", |ms| {
        ms <= parley_raft::limits::MEMBER_ACK_MS_MAX
    })
    .await;
    let (status, body) = admin(
        &cluster,
        leader,
        reqwest::Method::DELETE,
        "/api/v1/admin/members/3",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("island_unknown")),
        "{body}"
    );

    // The silent learner neither: it goes only when forced, as a node gone for good.
    let (status, body) = admin(
        &cluster,
        other,
        reqwest::Method::DELETE,
        "/api/v1/admin/members/4",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("island_unknown")),
        "{body}"
    );
    let (status, list) = admin(
        &cluster,
        other,
        reqwest::Method::DELETE,
        "/api/v1/admin/members/4?force=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), vec![1, 2, 3]);

    // Node 3 back: the cluster is whole again and a write commits.
    cluster.spawn(3);
    cluster.wait_ready(3, READY).await;
    let chat = cluster.start_chat(3, "after").await;
    cluster
        .post_until_committed(&[3], &chat, "a", "whole again", Duration::from_secs(10))
        .await;
}
