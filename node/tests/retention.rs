//! Retention against real processes: an ended chat leaves every node's memory after the hot
//! retention and stays readable (status, events, transcript) from the archive on every node,
//! across a node restart.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use support::Cluster;

/// A short hot retention, so the test sees chats leave memory; snapshots are built often, so
/// the restarted node recovers from one taken after the retirement.
const EXTRA: &str = "snapshot_every_entries = 20\n[retention]\nhot = \"2s\"\narchive = \"1h\"";

/// Node `id` answers the retired chat's events, status and transcript, and refuses a new
/// message into it.
async fn check(cluster: &Cluster, chat: &support::Chat, id: u64) {
    let events = cluster.events(id, chat).await.unwrap();
    let texts: Vec<&str> = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(texts, ["please keep this"], "node {id}: {events:?}");
    assert_eq!(events.last().unwrap()["type"], "ended", "node {id}");
    let path = format!("/api/v1/chats/{}", chat.chat_id);
    let (status, view) = cluster
        .api(id, Method::GET, &path, Some(&chat.token), None)
        .await;
    assert_eq!(status, 200, "node {id}: {view}");
    assert_eq!(view["status"], "ended");
    assert_eq!(view["last_seq"], 3);
    let path = format!("/api/v1/chats/{}/transcript?format=text", chat.chat_id);
    let text = cluster
        .client
        .get(cluster.url(id, &path))
        .bearer_auth(&chat.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("please keep this"), "node {id}: {text}");
    // A message into a retired chat is refused, not taken.
    let refused = cluster.post(id, chat, "m2", "late").await;
    assert!(refused.is_err(), "node {id}: {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_chat_leaves_memory_and_stays_readable_from_the_archive() {
    let mut cluster = Cluster::start_ready(3, EXTRA, Duration::from_secs(60)).await;
    let chat = cluster.start_chat(1, "kept-1").await;
    let seq = cluster
        .post(2, &chat, "m1", "please keep this")
        .await
        .unwrap();
    assert_eq!(seq, 2);
    let (status, body) = cluster
        .api(
            3,
            Method::POST,
            &format!("/api/v1/chats/{}/end", chat.chat_id),
            Some(&chat.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Out of every node's memory within the retention plus a few ticks.
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in 1..=3 {
        loop {
            if cluster.chats_in_memory(id).await == Some(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} still holds the chat in memory"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    for id in 1..=3 {
        check(&cluster, &chat, id).await;
    }

    // A restarted node reads the archive from its disk.
    cluster.kill9(2);
    cluster.spawn(2);
    cluster.wait_ready(2, Duration::from_secs(30)).await;
    check(&cluster, &chat, 2).await;
}
