//! Delivery looks only at the feeds an applied entry touched: a message posted in one chat
//! makes the messaging actor compare that chat's feed, not those of every stream open on the
//! node.

mod support;

use std::time::Duration;

use support::{next_frame, Cluster, Frame};

/// The delivery counters of node `id`: (wake-ups, feeds compared, full scans).
async fn delivery_counters(cluster: &Cluster, id: u64) -> (u64, u64, u64) {
    (
        cluster.metric(id, "parley_delivery_wakeups_total").await,
        cluster
            .metric(id, "parley_delivery_feeds_checked_total")
            .await,
        cluster.metric(id, "parley_delivery_full_scans_total").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_wakes_only_the_streams_of_its_chat() {
    const CHATS: usize = 24;
    const POSTS: usize = 10;
    let cluster = Cluster::start_ready(1, "", Duration::from_secs(30)).await;
    let mut chats = Vec::new();
    let mut streams = Vec::new();
    for i in 0..CHATS {
        let chat = cluster.start_chat(1, &format!("delivery-{i}")).await;
        let path = format!("/api/v1/chats/{}/stream?after=0", chat.chat_id);
        let ws = cluster
            .connect(1, &path, &chat.token)
            .await
            .expect("stream opens");
        chats.push(chat);
        streams.push(ws);
    }
    // Each stream first replays its chat's start; drain until quiet.
    for ws in &mut streams {
        while let Frame::Json(_) = next_frame(ws, Duration::from_millis(300)).await {}
    }

    let before = delivery_counters(&cluster, 1).await;
    let target = &chats[0];
    for i in 0..POSTS {
        cluster
            .post(1, target, &format!("m{i}"), "hello")
            .await
            .expect("the post commits");
    }
    // The target's stream receives every post.
    let mut received = 0;
    while received < POSTS {
        match next_frame(&mut streams[0], Duration::from_secs(5)).await {
            Frame::Json(frame) if frame["type"] == "message" => received += 1,
            Frame::Json(_) => {}
            other => panic!("the target stream got {other:?} after {received} posts"),
        }
    }
    let after = delivery_counters(&cluster, 1).await;

    let wakeups = after.0 - before.0;
    let checked = after.1 - before.1;
    assert!(
        wakeups >= 1,
        "the posts were delivered by at least one wake-up"
    );
    assert_eq!(after.2, before.2, "no wake-up had to compare every feed");
    // One post touches its chat's feed only (no agent holds these chats); comparing every
    // followed feed would have checked CHATS per wake-up.
    assert!(
        checked <= wakeups,
        "{checked} feeds compared in {wakeups} wake-ups with {CHATS} streams open"
    );
    // The other streams got no message (they do get their own queue position updates).
    for (i, ws) in streams.iter_mut().enumerate().skip(1) {
        loop {
            match next_frame(ws, Duration::from_millis(50)).await {
                Frame::Timeout => break,
                Frame::Json(frame) if frame["type"] == "queue_status" => {}
                other => panic!("stream {i} got {other:?}"),
            }
        }
    }
}
