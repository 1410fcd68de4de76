//! Stopping a node under write load, over and over: every SIGTERM ends in a clean exit
//! (status 0), never in an abort while the database closes, and nothing acknowledged is lost.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{post_at, Cluster};

const READY: Duration = Duration::from_secs(60);
/// Stops in all, spread over the three nodes.
const STOPS: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stop_under_write_load_exits_cleanly() {
    let mut cluster = Cluster::start_ready(3, "", READY).await;
    let chat = cluster.start_chat(1, "stops").await;
    let client = cluster.client.clone();
    let urls: Vec<String> = (1..=3).map(|id| cluster.node(id).http.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Writers on every node, the stopping one included, so RocksDB is busy writing when the
    // signal comes; a write that fails is tried again through the next node.
    let load = tokio::spawn({
        let (stop, chat) = (stop.clone(), chat.clone());
        async move {
            let mut acked = BTreeMap::new();
            let mut n = 0u64;
            let mut via = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("m{n}");
                loop {
                    via += 1;
                    if let Some(seq) =
                        post_at(&client, &urls[via % urls.len()], &chat, &id, "stop").await
                    {
                        acked.insert(id, seq);
                        break;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            acked
        }
    });
    for round in 0..STOPS {
        let id = round % 3 + 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let exit = cluster.terminate(id);
        if !exit.success() {
            cluster.dump_logs();
        }
        assert!(
            exit.success(),
            "stop {}: node {id} exited with {exit}",
            round + 1
        );
        cluster.spawn(id);
        cluster.wait_ready(id, READY).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acked = load.await.expect("load task");
    assert!(
        acked.len() as u64 > STOPS,
        "too few writes: {}",
        acked.len()
    );
    for via in 1..=3 {
        cluster
            .assert_chat_complete(via, &chat, &acked, Duration::from_secs(15))
            .await;
    }
}
