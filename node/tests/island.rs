//! Island mode on real processes: a node that hears from no leader for `island_after`
//! reports itself an island (cluster view, metrics) with a new island epoch, stops being one
//! when the quorum is back, and never reuses an epoch across its own restart; while it is an
//! island it takes the customer's side of chats into its journal, durably across its own
//! restart, and merges it into the cluster once the quorum is back, losing nothing.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Chat, Cluster};

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

/// Three nodes that become islands after 1.5 s without a leader, ready and at the cluster
/// version island mode needs (a new cluster raises itself to it).
async fn island_cluster() -> Cluster {
    let mut cluster = Cluster::configure(3, "", "island_after = \"1500ms\"");
    for id in 1..=3 {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        cluster.wait_ready(id, READY).await;
    }
    for id in 1..=3 {
        view_until(&cluster, id, READY, |v| {
            v["cluster_version"].as_u64() >= Some(2)
        })
        .await;
    }
    cluster
}

/// Posts a message through node `via`: the answer's status and body.
async fn post_message(cluster: &Cluster, via: u64, chat: &Chat, id: &str) -> (StatusCode, Value) {
    let path = format!("/api/v1/chats/{}/messages", chat.chat_id);
    let body = json!({"client_msg_id": id, "text": format!("text of {id}")});
    cluster
        .api(via, Method::POST, &path, Some(&chat.token), Some(body))
        .await
}

/// One page of `chat`'s events on node `via` after cursor `after`.
async fn events_page(cluster: &Cluster, via: u64, chat: &Chat, after: &str) -> Value {
    let path = format!("/api/v1/chats/{}/events?after={after}", chat.chat_id);
    let (status, page) = cluster
        .api(via, Method::GET, &path, Some(&chat.token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

/// The client message ids of `chat`'s messages on node `via`, in sequence order, with the
/// island node each was taken on (if any).
async fn messages(cluster: &Cluster, via: u64, chat: &Chat) -> Vec<(String, Option<u64>)> {
    let events = cluster.events(via, chat).await.unwrap_or_default();
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| {
            (
                e["client_msg_id"].as_str().unwrap_or_default().to_owned(),
                e["island"]["node_id"].as_u64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_island_takes_customer_writes_and_merges_them_when_the_quorum_returns() {
    let mut cluster = island_cluster().await;
    let before = cluster.start_chat(3, "island-before").await;
    let seq = cluster
        .post_until_committed(&[3], &before, "m-before", "hello", READY)
        .await;
    assert!(seq > 1, "{seq}");

    cluster.kill9(1);
    cluster.kill9(2);
    view_until(&cluster, 3, Duration::from_secs(15), |v| {
        v["island"] == true
    })
    .await;
    cluster.wait_ready(3, Duration::from_secs(5)).await;

    // The customer's writes are taken, and say so.
    let (status, body) = post_message(&cluster, 3, &before, "m-island-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["island"], true, "{body}");
    let (status, body) = post_message(&cluster, 3, &before, "m-island-1").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a retry is the same message: {body}"
    );
    assert_eq!(body["replayed"], true, "{body}");
    let (status, started) = cluster
        .api(
            3,
            Method::POST,
            "/api/v1/chats",
            None,
            Some(json!({
                "request_id": "island-new",
                "queue_id": "sales",
                "customer": {"name": "Island Customer", "email": "island@example.com"},
                "question": "started while cut off"
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["island"], true, "{started}");
    let new_chat: Chat = serde_json::from_value(started.clone()).expect("chat started");
    let (status, body) = post_message(&cluster, 3, &new_chat, "n-island-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // What an island does not take is refused, saying why: a directory change.
    let (status, body) = cluster
        .api(
            3,
            Method::PUT,
            "/api/v1/admin/skills/island-skill",
            Some(support::ADMIN_TOKEN),
            Some(json!({"name": "Island skill"})),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "island", "{body}");
    // The island's own reads show its writes, marked.
    assert_eq!(
        messages(&cluster, 3, &before).await,
        vec![
            ("m-before".to_owned(), None),
            ("m-island-1".to_owned(), Some(3))
        ]
    );
    assert_eq!(cluster.metric(3, "parley_island_journal_entries").await, 3);
    // The island's page hands out an island cursor: the numbers after the fork are its own.
    let page = events_page(&cluster, 3, &before, "0").await;
    let island_cursor = page["next_after"].as_str().unwrap_or_default().to_owned();
    assert!(island_cursor.starts_with("i.3.1."), "{page}");

    // The island node restarts while still cut off: its journal keeps every write.
    cluster.kill9(3);
    cluster.spawn(3);
    view_until(&cluster, 3, READY, |v| v["island_journal_entries"] == 3).await;
    let view = view_until(&cluster, 3, Duration::from_secs(15), |v| {
        v["island"] == true
    })
    .await;
    assert_eq!(view["island_epoch"], 2, "{view}");
    assert_eq!(
        messages(&cluster, 3, &new_chat).await,
        vec![("n-island-1".to_owned(), Some(3))]
    );
    let (status, body) = post_message(&cluster, 3, &new_chat, "n-island-2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["island"], true, "{body}");
    let (status, body) = post_message(&cluster, 3, &before, "m-island-2").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // An agent signs in on the island and gets ready: the island routes the chat it started
    // to her; she accepts it and answers, each write taken into the journal.
    let alice = cluster.login_ready(3, "alice").await;
    let (status, console) = cluster
        .api_until(
            3,
            Method::GET,
            "/api/v1/agents/me/activities",
            Some(&alice.token),
            |_, view| {
                view["activities"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["id"] == new_chat.chat_id.as_str()))
            },
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{console}");
    let (status, body) = cluster
        .act(3, &alice.token, &new_chat.chat_id, "accept", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["agent_id"], "alice", "{body}");
    let path = format!("/api/v1/chats/{}/messages", new_chat.chat_id);
    let (status, body) = cluster
        .api(
            3,
            Method::POST,
            &path,
            Some(&alice.token),
            Some(json!({"client_msg_id": "a-island-1", "text": "alice, on the island"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["island"], true, "{body}");
    // Work from before the split stays the cluster's: no directory change, no routing of it.
    assert_eq!(cluster.metric(3, "parley_island_journal_entries").await, 9);

    // The quorum returns: the journal is merged and emptied, and every node has every write.
    cluster.spawn(1);
    cluster.spawn(2);
    let view = view_until(&cluster, 3, READY, |v| {
        v["island"] == false && v["island_journal_entries"] == 0
    })
    .await;
    assert_eq!(
        view["island_merge_conflicts"], 0,
        "nothing alice did lost: {view}"
    );
    assert_eq!(
        cluster.metric(3, "parley_island_merged_writes_total").await,
        9
    );
    assert_eq!(
        cluster.metric(3, "parley_island_merge_refused_total").await,
        0
    );
    for id in 1..=3 {
        cluster.wait_ready(id, READY).await;
    }
    for id in 1..=3 {
        let deadline = Instant::now() + READY;
        loop {
            let old = messages(&cluster, id, &before).await;
            let new = messages(&cluster, id, &new_chat).await;
            let want_old = vec![
                ("m-before".to_owned(), None),
                ("m-island-1".to_owned(), Some(3)),
                ("m-island-2".to_owned(), Some(3)),
            ];
            let want_new = vec![
                ("n-island-1".to_owned(), Some(3)),
                ("n-island-2".to_owned(), Some(3)),
                ("a-island-1".to_owned(), Some(3)),
            ];
            if old == want_old && new == want_new {
                break;
            }
            assert!(Instant::now() < deadline, "node {id}: {old:?} {new:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.assert_converged(&[1, 2, 3], READY).await;
    // Alice's island work is the cluster's now: the chat is hers, accepted on the island at
    // the island's time, with no conflict kept.
    let path = format!("/api/v1/supervisor/activities/{}", new_chat.chat_id);
    let (status, activity) = cluster
        .api(1, Method::GET, &path, Some(support::ADMIN_TOKEN), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{activity}");
    assert_eq!(activity["status"]["state"], "assigned", "{activity}");
    assert_eq!(activity["status"]["agent_id"], "alice", "{activity}");
    assert!(activity.get("island_conflicts").is_none(), "{activity}");
    // The client that read the island resumes on another node with exactly what it missed,
    // and holds a plain cursor again.
    let page = events_page(&cluster, 1, &before, &island_cursor).await;
    let ids: Vec<&str> = page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["client_msg_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["m-island-2"], "{page}");
    assert_eq!(
        page["next_after"].as_str(),
        page["last_seq"].as_u64().map(|s| s.to_string()).as_deref(),
        "{page}"
    );
    // Writes after the merge are committed as usual, unmarked.
    let (status, body) = post_message(&cluster, 1, &new_chat, "n-after").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body.get("island").is_none(), "{body}");
}

/// The ids of the activities `agent` holds, from node `via`'s supervisor view, and whether the
/// view says the agent is reachable.
fn agent_entry(agents: &Value, agent: &str) -> Option<(Vec<String>, bool)> {
    let entry = agents.as_array()?.iter().find(|a| a["agent_id"] == agent)?;
    let held = entry["activities"]
        .as_array()?
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect();
    Some((held, entry["reachable"] == true))
}

/// A member cut off from the leader serves as an island and takes writes only it can merge:
/// the leader refuses to remove it (it does not answer whether it holds island writes) unless
/// forced, and removes it once it is back and its journal is merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_not_removed_while_it_may_hold_unmerged_island_writes() {
    let cluster = island_cluster().await;
    let leader = cluster.wait_leader(1, None, READY).await;
    let target = (1..=3).find(|id| *id != leader).unwrap_or(3);
    let chat = cluster.start_chat(target, "removal-before").await;
    cluster
        .post_until_committed(&[target], &chat, "r-0", "hello", READY)
        .await;
    let members = |list: &Value| -> Vec<u64> {
        list["members"]
            .as_array()
            .map(|ms| ms.iter().filter_map(|m| m["id"].as_u64()).collect())
            .unwrap_or_default()
    };

    // Every packet to and from the target's gRPC port is dropped: the leader's appends and
    // probes go unanswered (no reset), so the target hears no leader and becomes an island.
    let grpc_port = cluster
        .node(target)
        .grpc
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {}", cluster.node(target).grpc));
    let silenced = support::Silenced::port(grpc_port);
    view_until(&cluster, target, Duration::from_secs(15), |v| {
        v["island"] == true
    })
    .await;
    let (status, body) = post_message(&cluster, target, &chat, "r-island").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["island"], true, "{body}");

    let remove = format!("/api/v1/admin/members/{target}");
    let (status, body) = cluster
        .api(
            leader,
            Method::DELETE,
            &remove,
            Some(support::ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "island_unknown", "{body}");
    let (status, list) = cluster
        .api(
            leader,
            Method::GET,
            "/api/v1/admin/members",
            Some(support::ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        members(&list),
        vec![1, 2, 3],
        "a refused removal changed the members"
    );

    // Back: the island merges its journal, and then it may go.
    drop(silenced);
    view_until(&cluster, target, READY, |v| {
        v["island"] == false && v["island_journal_entries"] == 0
    })
    .await;
    let deadline = Instant::now() + READY;
    let list = loop {
        let (status, body) = cluster
            .api(
                leader,
                Method::DELETE,
                &remove,
                Some(support::ADMIN_TOKEN),
                None,
            )
            .await;
        if status == StatusCode::OK {
            break body;
        }
        // The leader may have changed while the target came back: the request is answered
        // by whichever node leads, so only a refusal about the target itself is a failure.
        assert!(
            Instant::now() < deadline && body["error"]["code"] != "island_writes_unmerged",
            "{status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let left: Vec<u64> = (1..=3).filter(|id| *id != target).collect();
    assert_eq!(members(&list), left, "{list}");
    // The island write is in the cluster, on the nodes left.
    for id in left {
        let deadline = Instant::now() + READY;
        while !messages(&cluster, id, &chat)
            .await
            .contains(&("r-island".to_owned(), Some(target)))
        {
            assert!(
                Instant::now() < deadline,
                "node {id} lacks the island write"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_side_routes_no_new_work_to_agents_it_cannot_reach() {
    let mut cluster = island_cluster().await;
    // Bob, connected through node 3, has been ready longest: he is first in line.
    cluster.login_ready(3, "bob").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    cluster.login_ready(1, "alice").await;

    cluster.kill9(3);
    let admin = Some(support::ADMIN_TOKEN);
    let path = "/api/v1/supervisor/agents";
    cluster
        .api_until(1, Method::GET, path, admin, |status, agents| {
            status == StatusCode::OK
                && agent_entry(agents, "bob").is_some_and(|(_, reachable)| !reachable)
        })
        .await;
    let first = cluster.start_chat(1, "reach-1").await;
    let (_, agents) = cluster
        .api_until(1, Method::GET, path, admin, |_, agents| {
            agent_entry(agents, "alice").is_some_and(|(held, _)| held.contains(&first.chat_id))
        })
        .await;
    assert_eq!(
        agent_entry(&agents, "bob").map(|(held, _)| held),
        Some(vec![]),
        "{agents}"
    );

    // Node 3 is back: bob is reachable and first in line again.
    cluster.spawn(3);
    cluster
        .api_until(1, Method::GET, path, admin, |_, agents| {
            agent_entry(agents, "bob").is_some_and(|(_, reachable)| reachable)
        })
        .await;
    let second = cluster.start_chat(1, "reach-2").await;
    cluster
        .api_until(1, Method::GET, path, admin, |_, agents| {
            agent_entry(agents, "bob").is_some_and(|(held, _)| held.contains(&second.chat_id))
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_is_its_own_quorum_and_never_an_island() {
    let mut cluster = Cluster::configure(1, "", "island_after = \"1500ms\"");
    cluster.spawn(1);
    cluster.wait_ready(1, READY).await;
    view_until(&cluster, 1, READY, |v| {
        v["cluster_version"].as_u64() >= Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view = cluster.cluster_view(1).await.expect("a view");
    assert_eq!(view["island"], false, "{view}");
    assert_eq!(view["island_epoch"], 0, "{view}");
    let chat = cluster.start_chat(1, "alone").await;
    let (status, body) = post_message(&cluster, 1, &chat, "m1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body.get("island").is_none(), "{body}");
}

/// The nodes of one site cut off together serve one island: the lowest of them keeps the
/// site's island journal, the other forwards its clients' writes to it and mirrors it, so a
/// client of either node reads what a client of the other wrote, in one order; only the keeper
/// merges, and the merged chats hold every write once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_island_nodes_of_one_site_serve_one_view_and_merge_once() {
    let mut cluster = Cluster::configure(5, "", "island_after = \"1500ms\"");
    for id in 1..=5 {
        cluster.spawn(id);
    }
    for id in 1..=5 {
        cluster.wait_ready(id, READY).await;
    }
    for id in 1..=5 {
        view_until(&cluster, id, READY, |v| {
            v["cluster_version"].as_u64() >= Some(2)
        })
        .await;
    }
    let before = cluster.start_chat(5, "site-before").await;
    cluster
        .post_until_committed(&[5], &before, "b-0", "hello", READY)
        .await;

    // Nodes 4 and 5 lose the other three (the quorum) and still reach each other.
    for id in 1..=3 {
        cluster.kill9(id);
    }
    for id in [4, 5] {
        view_until(&cluster, id, Duration::from_secs(20), |v| {
            v["island"] == true && v["island_keeper"] == 4
        })
        .await;
    }
    // Writes through either node go to node 4's journal and say so.
    let (status, body) = post_message(&cluster, 5, &before, "b-5").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["island"], true, "{body}");
    assert_eq!(body["island_node"], 4, "{body}");
    let (status, body) = post_message(&cluster, 4, &before, "b-4").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["island_node"], 4, "{body}");
    // A retry through the other node is the same message.
    let (status, body) = post_message(&cluster, 4, &before, "b-5").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], true, "{body}");
    let (status, started) = cluster
        .api(
            5,
            Method::POST,
            "/api/v1/chats",
            None,
            Some(json!({
                "request_id": "site-new",
                "queue_id": "sales",
                "customer": {"name": "Site Customer", "email": "site@example.com"},
                "question": "started on the island"
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let new_chat: Chat = serde_json::from_value(started.clone()).expect("chat started");
    // The chat started through node 5 takes a message through node 4.
    let (status, body) = post_message(&cluster, 4, &new_chat, "n-4").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let want_before = vec![
        ("b-0".to_owned(), None),
        ("b-5".to_owned(), Some(4)),
        ("b-4".to_owned(), Some(4)),
    ];
    let want_new = vec![("n-4".to_owned(), Some(4))];
    // A node's own write is in its view when it answers; the other node's within moments.
    for id in [4, 5] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let old = messages(&cluster, id, &before).await;
            let new = messages(&cluster, id, &new_chat).await;
            if old == want_before && new == want_new {
                break;
            }
            assert!(Instant::now() < deadline, "node {id}: {old:?} {new:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(cluster.metric(4, "parley_island_journal_entries").await, 4);
    assert_eq!(cluster.metric(5, "parley_island_journal_entries").await, 0);

    // The quorum returns: node 4 merges its journal, and every node has each write once.
    for id in 1..=3 {
        cluster.spawn(id);
    }
    view_until(&cluster, 4, READY, |v| {
        v["island"] == false && v["island_journal_entries"] == 0
    })
    .await;
    assert_eq!(
        cluster.metric(4, "parley_island_merged_writes_total").await,
        4
    );
    assert_eq!(
        cluster.metric(5, "parley_island_merged_writes_total").await,
        0
    );
    for id in 1..=5 {
        cluster.wait_ready(id, READY).await;
    }
    for id in 1..=5 {
        let deadline = Instant::now() + READY;
        loop {
            let old = messages(&cluster, id, &before).await;
            let new = messages(&cluster, id, &new_chat).await;
            if old == want_before && new == want_new {
                break;
            }
            assert!(Instant::now() < deadline, "node {id}: {old:?} {new:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.assert_converged(&[1, 2, 3, 4, 5], READY).await;
}
