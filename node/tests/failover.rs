//! Real processes: kill -9 the leader mid-traffic, restart it, and check that every
//! acknowledged message is on every node exactly once, in order, with identical digests.
//! Then restart the whole cluster and find everything again. And a leader that stops
//! answering without a reset (its host lost): a write a follower forwarded to it is sent to the
//! leader elected in its place, within the write timeout.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::{Chat, Cluster};

const READY: Duration = Duration::from_secs(60);
const CONVERGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_message() {
    let mut cluster = Cluster::start_ready(3, "", READY).await;
    let chats: Vec<Chat> = open_chats(&cluster, 3).await;
    let mut acked: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); chats.len()];

    // Traffic through every node.
    for n in 0..30u64 {
        let via = n % 3 + 1;
        let c = (n % 3) as usize;
        let id = format!("before-{n}");
        let seq = cluster
            .post_until_committed(
                &[via],
                &chats[c],
                &id,
                &format!("message {n}"),
                Duration::from_secs(10),
            )
            .await;
        acked[c].insert(id, seq);
    }

    let leader = cluster.wait_leader(1, None, Duration::from_secs(10)).await;
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster.kill9(leader);
    let killed_at = Instant::now();

    // Keep posting through the survivors; writes must succeed again within a bounded wait.
    let mut first_success = None;
    for n in 0..30u64 {
        let c = (n % 3) as usize;
        let id = format!("during-{n}");
        let seq = cluster
            .post_until_committed(
                &survivors,
                &chats[c],
                &id,
                &format!("after kill {n}"),
                Duration::from_secs(20),
            )
            .await;
        first_success.get_or_insert_with(|| killed_at.elapsed());
        acked[c].insert(id, seq);
    }
    eprintln!(
        "first write after killing leader {leader} succeeded after {:?}",
        first_success
    );

    cluster.spawn(leader);
    cluster.wait_ready(leader, READY).await;
    for n in 0..15u64 {
        let via = n % 3 + 1;
        let c = (n % 3) as usize;
        let id = format!("after-{n}");
        let seq = cluster
            .post_until_committed(
                &[via],
                &chats[c],
                &id,
                &format!("restored {n}"),
                Duration::from_secs(10),
            )
            .await;
        acked[c].insert(id, seq);
    }

    for node in 1..=3 {
        for (chat, acked) in chats.iter().zip(&acked) {
            cluster
                .assert_chat_complete(node, chat, acked, CONVERGE)
                .await;
        }
    }
    let applied = cluster.assert_converged(&[1, 2, 3], CONVERGE).await;
    eprintln!("converged at applied index {applied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_finds_all_data() {
    let mut cluster = Cluster::start_ready(3, "", READY).await;
    let chats: Vec<Chat> = open_chats(&cluster, 2).await;
    let mut acked: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); chats.len()];
    // Enough writes to cross the snapshot threshold (200 entries), so recovery uses a snapshot
    // plus the log after it.
    for n in 0..260u64 {
        let via = n % 3 + 1;
        let c = (n % 2) as usize;
        let id = format!("m-{n}");
        let seq = cluster
            .post_until_committed(
                &[via],
                &chats[c],
                &id,
                &format!("message {n}"),
                Duration::from_secs(10),
            )
            .await;
        acked[c].insert(id, seq);
    }
    let before = cluster.assert_converged(&[1, 2, 3], CONVERGE).await;

    // One graceful stop, two kill -9s.
    let status = cluster.terminate(1);
    assert!(status.success(), "node 1 exited with {status} on SIGTERM");
    cluster.kill9(2);
    cluster.kill9(3);

    for id in [3, 1, 2] {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        cluster.wait_ready(id, READY).await;
    }
    for node in 1..=3 {
        for (chat, acked) in chats.iter().zip(&acked) {
            cluster
                .assert_chat_complete(node, chat, acked, CONVERGE)
                .await;
        }
    }
    // Sequences continue after the restart without gaps or reuse.
    let seq = cluster
        .post_until_committed(
            &[2],
            &chats[0],
            "after-restart",
            "hello again",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        seq,
        acked[0].len() as u64 + 2,
        "the next message follows the last one"
    );
    acked[0].insert("after-restart".into(), seq);
    for node in 1..=3 {
        cluster
            .assert_chat_complete(node, &chats[0], &acked[0], CONVERGE)
            .await;
    }
    let after = cluster.assert_converged(&[1, 2, 3], CONVERGE).await;
    assert!(
        after > before,
        "applied index went from {before} to {after}"
    );
}

async fn open_chats(cluster: &Cluster, n: u64) -> Vec<Chat> {
    let mut chats = Vec::new();
    for i in 0..n {
        chats.push(cluster.start_chat(i % 3 + 1, &format!("chat-{i}")).await);
    }
    chats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_compacted_log_catches_up_by_snapshot() {
    // Snapshots every 50 entries, only 5 entries kept after one, 1 KiB chunks: a follower that
    // misses a few hundred writes can only catch up by a snapshot streamed in many chunks.
    let mut cluster = Cluster::start_ready(
        3,
        "snapshot_every_entries = 50\nlog_entries_kept_after_snapshot = 5\nsnapshot_chunk_bytes = 1024",
        READY,
    )
    .await;
    let leader = cluster.wait_leader(1, None, Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let others: Vec<u64> = (1..=3).filter(|id| *id != follower).collect();
    let chats = open_chats(&cluster, 2).await;
    cluster.kill9(follower);

    let mut acked: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); chats.len()];
    for n in 0..300u64 {
        let c = (n % 2) as usize;
        let id = format!("while-down-{n}");
        let seq = cluster
            .post_until_committed(
                &others,
                &chats[c],
                &id,
                &format!("message {n} {}", "x".repeat(200)),
                Duration::from_secs(10),
            )
            .await;
        acked[c].insert(id, seq);
    }
    cluster.spawn(follower);
    cluster.wait_ready(follower, READY).await;
    for (chat, acked) in chats.iter().zip(&acked) {
        cluster
            .assert_chat_complete(follower, chat, acked, CONVERGE)
            .await;
    }
    cluster.assert_converged(&[1, 2, 3], CONVERGE).await;
    let log = std::fs::read_to_string(&cluster.node(follower).log).expect("reading the node log");
    assert!(
        log.contains("installed snapshot"),
        "follower {follower} caught up without installing a snapshot"
    );
}

/// Regression: under concurrent load the leader packs many commands into each entry; after a
/// leader kill, the new leader's first catch-up AppendEntries could exceed the heartbeat-long
/// deadline, time out and be resent forever, so writes never resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_after_batched_load_recovers() {
    let mut cluster = Cluster::start_ready(3, "", READY).await;
    let chats = open_chats(&cluster, 32).await;
    let mut acked: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); chats.len()];
    let text = "y".repeat(400);
    let vias: Vec<[u64; 1]> = (0..chats.len() as u64).map(|c| [c % 3 + 1]).collect();
    for round in 0..30 {
        let id = format!("load-{round}");
        let posts = chats.iter().zip(&vias).map(|(chat, via)| {
            cluster.post_until_committed(via, chat, &id, &text, Duration::from_secs(10))
        });
        let seqs = futures::future::join_all(posts).await;
        for (c, seq) in seqs.into_iter().enumerate() {
            acked[c].insert(id.clone(), seq);
        }
    }
    let leader = cluster.wait_leader(1, None, Duration::from_secs(10)).await;
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster.kill9(leader);
    for (c, chat) in chats.iter().enumerate() {
        let seq = cluster
            .post_until_committed(
                &survivors,
                chat,
                "after-kill",
                "still here",
                Duration::from_secs(20),
            )
            .await;
        acked[c].insert("after-kill".into(), seq);
    }
    cluster.spawn(leader);
    cluster.wait_ready(leader, READY).await;
    for node in 1..=3 {
        for (chat, acked) in chats.iter().zip(&acked) {
            cluster
                .assert_chat_complete(node, chat, acked, CONVERGE)
                .await;
        }
    }
    cluster.assert_converged(&[1, 2, 3], CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_drains_before_it_closes_anything() {
    let mut cluster = Cluster::start_ready(3, "", READY).await;
    // Node 1 again, with a drain window (the test clusters have none).
    cluster.terminate(1);
    cluster.spawn_with_env(1, &[("PARLEY_TIMEOUTS__DRAIN_WAIT", "5s")]);
    cluster.wait_ready(1, READY).await;
    let chat = cluster.start_chat(1, "drain").await;

    cluster.signal(1, "TERM");
    let (status, body) = cluster
        .api_until(1, reqwest::Method::GET, "/readyz", None, |status, _| {
            status == reqwest::StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
    assert!(body.to_string().contains("draining"), "{status} {body}");
    // Draining takes the node out of rotation and nothing else: it still takes writes.
    let (live, _) = cluster
        .api(1, reqwest::Method::GET, "/livez", None, None)
        .await;
    assert!(live.is_success(), "livez during the drain: {live}");
    let seq = cluster
        .post(1, &chat, "during-drain", "still served")
        .await
        .expect("a write through a draining node commits");

    let exit = cluster.wait_exit(1, Duration::from_secs(30));
    assert!(exit.success(), "node 1 exited with {exit}");
    let events = cluster.events(2, &chat).await.expect("events from node 2");
    assert!(
        events
            .iter()
            .any(|e| e["seq"].as_u64() == Some(seq) && e["client_msg_id"] == "during-drain"),
        "the write taken during the drain is not on node 2: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_lost_leader_is_sent_to_its_successor() {
    // Peer keepalives far longer than the write timeout (3 s): the follower can learn that its
    // leader is gone only from the election, as when a host is lost and nothing resets. One
    // forward RPC in flight at most: the forward stuck on the lost leader must give its place
    // back when the successor is known, or the retry waits behind it until the deadline.
    let mut cluster = Cluster::configure(3, "", "");
    let slow_keepalives = [
        ("PARLEY_TIMEOUTS__KEEPALIVE_INTERVAL", "60s"),
        ("PARLEY_TIMEOUTS__KEEPALIVE_TIMEOUT", "60s"),
        ("PARLEY_RAFT__FORWARD_INFLIGHT_MAX", "1"),
    ];
    for id in 1..=3 {
        cluster.spawn_with_env(id, &slow_keepalives);
    }
    for id in 1..=3 {
        cluster.wait_ready(id, READY).await;
    }
    let leader = cluster.wait_leader(1, None, READY).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let chat = cluster.start_chat(follower, "lost-leader").await;
    cluster
        .post(follower, &chat, "before", "before the loss")
        .await
        .expect("a write before the loss");
    // A stopped process answers nothing and resets nothing: the forward of the next write
    // waits on it until the follower hears of the leader elected in its place.
    cluster.signal(leader, "STOP");
    let after = cluster
        .post(follower, &chat, "after", "sent as the leader is lost")
        .await;
    cluster.signal(leader, "CONT");
    let seq = after.unwrap_or_else(|error| {
        cluster.dump_logs();
        panic!("the write forwarded to the lost leader was not committed by its successor: {error}")
    });
    let successor = cluster.wait_leader(follower, Some(leader), READY).await;
    let events = cluster
        .events(successor, &chat)
        .await
        .expect("events from the new leader");
    assert!(
        events
            .iter()
            .any(|e| e["seq"].as_u64() == Some(seq) && e["client_msg_id"] == "after"),
        "the write is not on the new leader: {events:?}"
    );
}
