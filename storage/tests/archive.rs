//! The archive: records a machine retires are readable by key until purged, survive a
//! restart, and travel with the snapshot sent to a node that installs it.

mod common;

use common::{fresh, put, Sm};
use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use parley_storage::{Db, DbOptions};

/// Retires `key` with `expires_at_ms` at `index`.
fn retire(index: u64, key: &str, expires_at_ms: u64) -> common::Entry {
    put(
        1,
        index,
        &format!("retire:{key}"),
        &expires_at_ms.to_string(),
    )
}

/// Moves the expiry of archived `key` to `expires_at_ms`, at `index`.
fn expire(index: u64, key: &str, expires_at_ms: u64) -> common::Entry {
    put(
        1,
        index,
        &format!("expire:{key}"),
        &expires_at_ms.to_string(),
    )
}

/// Purges what expired by `at_ms`, at `index`.
fn purge(index: u64, at_ms: u64) -> common::Entry {
    put(1, index, "purge", &at_ms.to_string())
}

#[tokio::test]
async fn a_retired_record_is_read_from_the_archive_until_it_expires() {
    let (dir, db) = fresh(DbOptions::default());
    let sm = Sm::open(db).await.unwrap();
    sm.apply_entries(vec![
        put(1, 1, "a", "1"),
        put(1, 2, "b", "2"),
        retire(3, "a", 100),
        retire(4, "b", 200),
    ])
    .await
    .unwrap();
    assert!(sm.read(|m, _| !m.data.contains_key("a")), "left memory");
    assert_eq!(sm.archived("a").await.unwrap().as_deref(), Some("1"));
    assert_eq!(sm.archived("b").await.unwrap().as_deref(), Some("2"));
    assert_eq!(sm.archived("never").await.unwrap(), None);

    // Purging at 100 removes what expired by then, nothing else.
    sm.apply_entries(vec![purge(5, 100)]).await.unwrap();
    assert_eq!(sm.archived("a").await.unwrap(), None);
    assert_eq!(sm.archived("b").await.unwrap().as_deref(), Some("2"));
    drop(sm);

    // The archive is on disk: a restart reads it.
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let sm = Sm::open(db).await.unwrap();
    assert_eq!(sm.archived("b").await.unwrap().as_deref(), Some("2"));
    assert_eq!(sm.archived("a").await.unwrap(), None);
}

#[tokio::test]
async fn a_purge_in_the_same_batch_as_the_put_sees_it_and_a_later_expiry_survives() {
    let (_dir, db) = fresh(DbOptions::default());
    let sm = Sm::open(db).await.unwrap();
    sm.apply_entries(vec![put(1, 1, "a", "1"), put(1, 2, "b", "2")])
        .await
        .unwrap();
    // One apply batch: both puts and the purge reach the archive in one write.
    sm.apply_entries(vec![retire(3, "a", 50), retire(4, "b", 500), purge(5, 100)])
        .await
        .unwrap();
    assert_eq!(
        sm.archived("a").await.unwrap(),
        None,
        "expired in the batch"
    );
    assert_eq!(sm.archived("b").await.unwrap().as_deref(), Some("2"));

    // A record put again with a later expiry is not deleted by its old expiry's purge.
    sm.apply_entries(vec![
        put(1, 6, "b", "3"),
        retire(7, "b", 1_000),
        purge(8, 600),
    ])
    .await
    .unwrap();
    assert_eq!(sm.archived("b").await.unwrap().as_deref(), Some("3"));
    sm.apply_entries(vec![purge(9, 1_000)]).await.unwrap();
    assert_eq!(sm.archived("b").await.unwrap(), None);
}

#[tokio::test]
async fn the_snapshot_sent_to_a_node_carries_the_archive_and_replaces_its_own() {
    let (_dir_l, db_l) = fresh(DbOptions::default());
    let (dir_f, db_f) = fresh(DbOptions::default());
    let mut leader = Sm::open(db_l).await.unwrap();
    let mut follower = Sm::open(db_f).await.unwrap();

    // The follower holds a record the leader's history never had: the install drops it.
    follower
        .apply_entries(vec![put(1, 1, "stale", "x"), retire(2, "stale", 10_000)])
        .await
        .unwrap();
    assert!(follower.archived("stale").await.unwrap().is_some());

    leader
        .apply_entries(vec![
            put(1, 1, "k1", "v1"),
            put(1, 2, "k2", "v2"),
            retire(3, "k1", 10_000),
        ])
        .await
        .unwrap();
    leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    // Retired after the snapshot was built: the archive sent is the current one.
    leader
        .apply_entries(vec![retire(4, "k2", 10_000)])
        .await
        .unwrap();
    let sent = leader
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot");
    follower
        .install_snapshot(&sent.meta, sent.snapshot)
        .await
        .unwrap();
    assert_eq!(
        follower.archived("k1").await.unwrap().as_deref(),
        Some("v1")
    );
    assert_eq!(
        follower.archived("k2").await.unwrap().as_deref(),
        Some("v2")
    );
    assert_eq!(follower.archived("stale").await.unwrap(), None);
    // Replaying the entry after the snapshot (as openraft does) changes nothing.
    follower
        .apply_entries(vec![retire(4, "k2", 10_000)])
        .await
        .unwrap();
    assert_eq!(
        follower.archived("k2").await.unwrap().as_deref(),
        Some("v2")
    );
    drop(follower);

    // The installed archive is on disk.
    let db_f = Db::open(dir_f.path(), DbOptions::default()).unwrap();
    let follower = Sm::open(db_f).await.unwrap();
    assert_eq!(
        follower.archived("k1").await.unwrap().as_deref(),
        Some("v1")
    );
}

#[tokio::test]
async fn an_expiry_change_keeps_the_value_and_decides_which_purge_deletes_it() {
    let (dir, db) = fresh(DbOptions::default());
    let sm = Sm::open(db).await.unwrap();
    sm.apply_entries(vec![put(1, 1, "a", "1"), put(1, 2, "b", "2")])
        .await
        .unwrap();
    // Archived "until moved again", then moved within the same batch and read before it is
    // written (pending) and after.
    sm.apply_entries(vec![retire(3, "a", u64::MAX), expire(4, "a", 500)])
        .await
        .unwrap();
    assert_eq!(sm.archived("a").await.unwrap().as_deref(), Some("1"));
    // Its old expiry's purge leaves it; only a purge past the new one deletes it.
    sm.apply_entries(vec![retire(5, "b", 100), purge(6, 400)])
        .await
        .unwrap();
    assert_eq!(sm.archived("b").await.unwrap(), None);
    assert_eq!(sm.archived("a").await.unwrap().as_deref(), Some("1"));
    // Moved later in one batch and earlier in the next: the last expiry decides.
    sm.apply_entries(vec![expire(7, "a", 2_000)]).await.unwrap();
    sm.apply_entries(vec![expire(8, "a", 900), purge(9, 1_000)])
        .await
        .unwrap();
    assert_eq!(
        sm.archived("a").await.unwrap(),
        None,
        "purged at its last expiry"
    );
    // Moving the expiry of a purged record brings nothing back, also after a restart.
    sm.apply_entries(vec![expire(10, "a", 5_000)])
        .await
        .unwrap();
    assert_eq!(sm.archived("a").await.unwrap(), None);
    drop(sm);
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let sm = Sm::open(db).await.unwrap();
    assert_eq!(sm.archived("a").await.unwrap(), None);
}

#[tokio::test]
async fn an_expiry_change_survives_a_restart_and_a_purge_walks_the_new_expiry_only() {
    let (dir, db) = fresh(DbOptions::default());
    let sm = Sm::open(db).await.unwrap();
    sm.apply_entries(vec![put(1, 1, "a", "kept")])
        .await
        .unwrap();
    sm.apply_entries(vec![retire(2, "a", 100)]).await.unwrap();
    sm.apply_entries(vec![expire(3, "a", 10_000)])
        .await
        .unwrap();
    drop(sm);
    let db = Db::open(dir.path(), DbOptions::default()).unwrap();
    let sm = Sm::open(db).await.unwrap();
    sm.apply_entries(vec![purge(4, 9_999)]).await.unwrap();
    assert_eq!(sm.archived("a").await.unwrap().as_deref(), Some("kept"));
    sm.apply_entries(vec![purge(5, 10_000)]).await.unwrap();
    assert_eq!(sm.archived("a").await.unwrap(), None);
}
