//! Backup and restore on real processes: `parley ctl snapshot save` under load, every node of
//! the source destroyed, `parley snapshot restore` into three fresh nodes of a new cluster:
//! every acknowledged message (and a chat already moved to the archive) is readable there, the
//! restored nodes agree on their digest and take new writes; damaged files and unsafe restores
//! are refused.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use support::{Chat, Cluster, ADMIN_TOKEN};

/// A short hot retention, so one chat is in the archive when the backup is taken.
const EXTRA: &str = "snapshot_every_entries = 50\n[retention]\nhot = \"2s\"\narchive = \"1h\"";
const READY: Duration = Duration::from_secs(60);

/// Runs `parley ARGS` (with the admin credential in the environment); (succeeded, stdout,
/// stderr).
async fn parley(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(&args)
            .env("PARLEY_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .expect("running parley");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("the parley task")
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A chat that was ended and left memory on every node of `cluster`.
async fn archived_chat(cluster: &Cluster) -> Chat {
    let chat = cluster.start_chat(1, "archived-1").await;
    cluster
        .post(2, &chat, "kept", "from the archive")
        .await
        .expect("a message in the chat to archive");
    let (status, body) = cluster
        .api(
            1,
            Method::POST,
            &format!("/api/v1/chats/{}/end", chat.chat_id),
            Some(&chat.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in 1..=3 {
        while cluster.chats_in_memory(id).await != Some(0) {
            assert!(
                Instant::now() < deadline,
                "node {id} kept the chat in memory"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    chat
}

/// Messages posted by the load, acknowledged (client id → seq), per chat.
type Acked = Arc<Mutex<Vec<BTreeMap<String, u64>>>>;

/// Posts messages round-robin to `chats` through every node until `stop`.
async fn load(cluster: Arc<Cluster>, chats: Vec<Chat>, acked: Acked, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let c = (n as usize) % chats.len();
        let via = 1 + n % 3;
        let id = format!("load-{n}");
        if let Ok(seq) = cluster.post(via, &chats[c], &id, "under load").await {
            acked.lock().unwrap()[c].insert(id, seq);
        }
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_a_new_cluster_with_every_acknowledged_chat() {
    let source = Cluster::start_ready(3, EXTRA, READY).await;
    let archived = archived_chat(&source).await;
    let mut chats = Vec::new();
    for i in 0..4 {
        chats.push(source.start_chat((i % 3) + 1, &format!("live-{i}")).await);
    }
    let source = Arc::new(source);
    let acked: Acked = Arc::new(Mutex::new(vec![BTreeMap::new(); chats.len()]));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(load(
        Arc::clone(&source),
        chats.clone(),
        Arc::clone(&acked),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Saved from a node that may not lead, with writes going on.
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("cluster.snapshot");
    let before_save = acked.lock().unwrap().clone();
    let (ok, stdout, stderr) = parley(args(&[
        "ctl",
        "--url",
        &source.node(2).http,
        "--json",
        "snapshot",
        "save",
        &path(&file),
    ]))
    .await;
    assert!(ok, "snapshot save failed: {stderr}");
    let header: Value = serde_json::from_str(&stdout).expect("the saved backup's header");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let index = header["log_id"]["index"].as_u64().expect("a log index");
    assert!(header["archived_records"].as_u64() >= Some(1), "{header}");
    assert_eq!(header["chats"], 4, "{header}");
    assert!(
        before_save.iter().map(BTreeMap::len).sum::<usize>() > 10,
        "the load wrote before the save: {before_save:?}"
    );
    assert!(!backups.path().join("cluster.snapshot.partial").exists());

    // Saving over the file again is refused unless forced.
    let (ok, _, stderr) = parley(args(&[
        "ctl",
        "--url",
        &source.node(1).http,
        "snapshot",
        "save",
        &path(&file),
    ]))
    .await;
    assert!(!ok && stderr.contains("--force"), "{stderr}");

    // inspect agrees with the header save printed.
    let (ok, stdout, stderr) = parley(args(&["snapshot", "inspect", "--json", &path(&file)])).await;
    assert!(ok, "inspect failed: {stderr}");
    let inspected: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(inspected, header);
    let (ok, stdout, _) = parley(args(&["snapshot", "inspect", &path(&file)])).await;
    assert!(
        ok && stdout.contains("checksum (blake3) verified"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("at log index {index}")),
        "{stdout}"
    );

    // A damaged copy is refused by inspect and by restore.
    let damaged = backups.path().join("damaged.snapshot");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x20;
    std::fs::write(&damaged, &bytes).unwrap();
    let (ok, _, stderr) = parley(args(&["snapshot", "inspect", &path(&damaged)])).await;
    assert!(!ok && stderr.contains("checksum"), "{stderr}");

    // With the writes stopped, a backup's digest is the one the source's cluster view reports
    // at the same log index (the view computes it on its own path).
    let mut compared = false;
    for attempt in 0..5 {
        let quiet = backups.path().join(format!("quiet-{attempt}.snapshot"));
        let before = source.cluster_view(3).await.expect("a view");
        let (ok, stdout, stderr) = parley(args(&[
            "ctl",
            "--url",
            &source.node(3).http,
            "--json",
            "snapshot",
            "save",
            &path(&quiet),
        ]))
        .await;
        assert!(ok, "snapshot save failed: {stderr}");
        let after = source.cluster_view(3).await.expect("a view");
        let quiet: Value = serde_json::from_str(&stdout).unwrap();
        if before["applied_index"] == after["applied_index"]
            && after["applied_index"] == quiet["log_id"]["index"]
        {
            assert_eq!(
                after["state_digest"], quiet["state_digest"],
                "{after} {quiet}"
            );
            compared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(compared, "the source never stood still for a backup");

    // Every node of the source is destroyed.
    let mut source = Arc::try_unwrap(source).unwrap_or_else(|_| panic!("the load still runs"));
    for id in 1..=3 {
        source.kill9(id);
        std::fs::remove_dir_all(source.data_dir(id)).unwrap();
    }

    // Restoring as the source cluster (its own config, same cluster id) is refused.
    let (ok, _, stderr) = parley(args(&[
        "snapshot",
        "restore",
        &path(&file),
        "--config",
        &path(&source.node(1).config),
    ]))
    .await;
    assert!(!ok && stderr.contains("cluster_id of its own"), "{stderr}");
    assert!(!source.data_dir(1).exists(), "nothing written on refusal");

    // Three fresh nodes of a new cluster, each restored from the file.
    let mut restored = Cluster::configure(3, EXTRA, "cluster_id = \"restored\"");
    let (ok, _, stderr) = parley(args(&[
        "snapshot",
        "restore",
        &path(&damaged),
        "--config",
        &path(&restored.node(1).config),
    ]))
    .await;
    assert!(!ok && stderr.contains("checksum"), "{stderr}");
    for id in 1..=3 {
        let (ok, stdout, stderr) = parley(args(&[
            "snapshot",
            "restore",
            &path(&file),
            "--config",
            &path(&restored.node(id).config),
        ]))
        .await;
        assert!(ok, "restore of node {id} failed: {stderr}");
        let digest = header["state_digest"].as_str().unwrap();
        assert!(
            stdout.contains(&format!("state digest {digest}")),
            "node {id}: {stdout}"
        );
    }
    // A data directory is restored into once.
    let (ok, _, stderr) = parley(args(&[
        "snapshot",
        "restore",
        &path(&file),
        "--config",
        &path(&restored.node(1).config),
    ]))
    .await;
    assert!(!ok && stderr.contains("not empty"), "{stderr}");

    for id in 1..=3 {
        restored.spawn(id);
    }
    for id in 1..=3 {
        restored.wait_ready(id, READY).await;
    }
    let view = restored.cluster_view(1).await.expect("a cluster view");
    let members: Vec<u64> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert_eq!(members, [1, 2, 3], "{view}");
    for m in view["members"].as_array().unwrap() {
        let http = m["http_addr"].as_str().unwrap();
        let id = m["id"].as_u64().unwrap();
        assert_eq!(
            format!("http://{http}"),
            restored.node(id).http,
            "the restored cluster's own addresses: {view}"
        );
    }
    assert!(
        view["applied_index"].as_u64() > Some(index),
        "the new cluster continues the log after {index}: {view}"
    );

    // Every message acknowledged before the save is there, in order, each once.
    for (c, chat) in chats.iter().enumerate() {
        for id in 1..=3 {
            restored
                .assert_chat_complete(id, chat, &before_save[c], Duration::from_secs(20))
                .await;
        }
    }
    // The archived chat is read from the restored archive.
    for id in 1..=3 {
        let events = restored.events(id, &archived).await.unwrap();
        let texts: Vec<&str> = events.iter().filter_map(|e| e["text"].as_str()).collect();
        assert_eq!(texts, ["from the archive"], "node {id}: {events:?}");
    }
    // The new cluster takes writes, with the customers' tokens of before.
    let seq = restored
        .post_until_committed(&[1, 2, 3], &chats[0], "after-restore", "hello again", READY)
        .await;
    // Each node reads what it has applied: wait for every node to hold the new message after
    // the restored ones.
    let mut after_restore = before_save[0].clone();
    after_restore.insert("after-restore".to_owned(), seq);
    for id in 1..=3 {
        restored
            .assert_chat_complete(id, &chats[0], &after_restore, Duration::from_secs(20))
            .await;
    }
    restored.assert_converged(&[1, 2, 3], READY).await;
}
